"""Spectral angle between the pixel vectors, as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('sam')
