"""Spectral angle between the pixel vectors, as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('sam')
