"""1 - information-theoretic similarity (global: no map), as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('issm')
