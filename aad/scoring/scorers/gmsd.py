"""Gradient magnitude similarity deviation (Xue et al. 2014), as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('gmsd')
