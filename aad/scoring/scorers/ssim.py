"""1 - SSIM (Wang et al. 2004), as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('ssim')
