"""|x - Den(AE(x))| summed over channels (seed 000's score ii; the
'smooth' output of aad/models/dae_denoiser.py)."""

import jax.numpy as jnp

from aad.scoring import Scorer


def smooth_residual(x, outputs, fitted, cfg):
  del fitted, cfg
  return jnp.sum(jnp.abs(x - outputs['smooth']), axis=-1)


SCORER = Scorer(name='smooth_residual', map=smooth_residual,
                needs=('smooth',), label='smooth residual')
