"""Gradient magnitude similarity deviation (Xue et al. 2014), as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('gmsd')
