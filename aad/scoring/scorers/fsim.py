"""1 - FSIM (Zhang et al. 2011), as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('fsim')
