"""1 - histogram intersection (global: no map), as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('sh')
