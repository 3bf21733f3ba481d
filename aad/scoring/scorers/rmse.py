"""Root mean squared error (global: no map), as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('rmse')
