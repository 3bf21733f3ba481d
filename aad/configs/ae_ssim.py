"""Bergmann-style AE with an SSIM loss (seed 002), the embedded benchmark.

  python -m aad.main --config=configs/ae_ssim.py

configs/ae_l2.py with the loss 1 - SSIM (11x11 Gaussian window, sigma 1.5,
as Bergmann et al.); everything else, the residual_max headline and tau =
0.2 included, is the same, so the two runs compare the losses alone.
"""

from aad.configs import ae_l2


def get_config():
  c = ae_l2.get_config()
  c.name = 'ae_ssim'
  c.model.bergmann.loss = 'ssim'
  return c
