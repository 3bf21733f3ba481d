"""Image Euclidean distance, as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('imed')
