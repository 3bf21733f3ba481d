"""Every model family of aad on the embedded benchmark, in one table.

  python -m aad.sweep --config=configs/compare_families.py
  python -m aad.summary --workdir=runs/compare_families

A sweep over config.model.name: AESc, the plain AE, the Bergmann AE (seed
002), the DAE + denoiser (seed 000) and the reconstruct-and-discriminate
family (DRAEM-style), trained the same way (64 px, grayscale, 1000 steps
per category, stain noise as training corruption; the DAE's first stage
uses its own Gaussian noise and DRAEM its simulated anomalies, their
methods) and each scored by its family's default scorers, DRAEM's image
score its map's smoothed maximum (as configs/draem.py). The summary has a
row per family and scorer. For the CPU budget the DAE takes the reduced
widths and the 200 denoiser steps of configs/dae_denoiser.py.
"""

import ml_collections

from aad.configs import aesc_stain
from aad.configs import dae_denoiser


def get_config():
  c = aesc_stain.get_config()
  c.name = 'compare_families'
  c.model.dae_denoiser = dae_denoiser.get_config().model.dae_denoiser
  c.sweep = ml_collections.ConfigDict({'cases': (
      {'model.name': 'aesc'}, {'model.name': 'ae'},
      {'model.name': 'bergmann'}, {'model.name': 'dae_denoiser'},
      {'model.name': 'draem', 'eval.norm': 'smooth_max'})})
  return c
