"""1 - zero-normalised cross-correlation (global: no map), as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('zncc')
