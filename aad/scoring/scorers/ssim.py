"""1 - SSIM (Wang et al. 2004), as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('ssim')
