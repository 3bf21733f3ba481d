"""1 - information-theoretic similarity (global: no map), as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('issm')
