"""Negative PSNR, capped at 200 dB (global: no map), as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('psnr')
