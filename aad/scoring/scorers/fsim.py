"""1 - FSIM (Zhang et al. 2011), as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('fsim')
