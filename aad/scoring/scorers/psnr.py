"""Negative PSNR, capped at 200 dB (global: no map), as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('psnr')
