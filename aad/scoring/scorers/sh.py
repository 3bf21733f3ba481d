"""1 - histogram intersection (global: no map), as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('sh')
