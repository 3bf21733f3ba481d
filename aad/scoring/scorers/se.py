"""Squared error of x and its reconstruction, as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('se')
