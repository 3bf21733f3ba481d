"""Seed 000's score iii (aad/models/dae_denoiser.py): the smooth residual
|x - Den(AE(x))| weighted by what the denoiser had to correct,
|Den(AE(x)) - AE(x)| (both summed over channels), to the power
config.eval.feature_mask_power."""

import jax.numpy as jnp
import ml_collections

from aad.scoring import Scorer


def defaults() -> ml_collections.ConfigDict:
  """The scorer's fields of config.eval."""
  c = ml_collections.ConfigDict()
  # |x - Den(AE(x))| times |Den(AE(x)) - AE(x)| to this power (0: the
  # smooth residual alone).
  c.feature_mask_power = 1.0
  return c


def feature_mask(x, outputs, fitted, cfg):
  del fitted
  smooth = jnp.sum(jnp.abs(x - outputs['smooth']), axis=-1)
  correction = jnp.sum(jnp.abs(outputs['smooth'] -
                               outputs['reconstruction']), axis=-1)
  return smooth * correction ** cfg.feature_mask_power


SCORER = Scorer(name='feature_mask', map=feature_mask,
                needs=('smooth', 'reconstruction'), label='feature mask')
