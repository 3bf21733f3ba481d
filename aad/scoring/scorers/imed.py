"""Image Euclidean distance, as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('imed')
