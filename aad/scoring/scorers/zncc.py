"""1 - zero-normalised cross-correlation (global: no map), as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('zncc')
