"""Seed 002's map (aad/models/bergmann.py): the max over channels of
|x - x_hat|, in [0, 1]."""

import jax.numpy as jnp

from aad.scoring import ops
from aad.scoring import Scorer


def residual_max(x, outputs, fitted, cfg):
  del fitted, cfg
  return ops.over_channels(jnp.abs(x - outputs['reconstruction']),
                           jnp.maximum)


SCORER = Scorer(name='residual_max', map=residual_max,
                label='max-channel residual')
