"""Root mean squared error (global: no map), as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('rmse')
