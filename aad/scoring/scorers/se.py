"""Squared error of x and its reconstruction, as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('se')
