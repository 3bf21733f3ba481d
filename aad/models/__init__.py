"""Model registry: models are chosen from the config by name."""

import jax.numpy as jnp
import ml_collections

from aad.models import aesc

_DEFAULT_RATES = {'aesc': aesc.AESC_DROPOUT, 'ae': aesc.AE_DROPOUT}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def create(config: ml_collections.ConfigDict, axis_name: str | None = None):
  """Builds the Linen module named by `config.name`.

  Args:
    config: the `model` block of an experiment config.
    axis_name: pmap axis over which BatchNorm averages its batch statistics,
      so N devices normalise exactly like one device with the global batch.

  Returns:
    An unbound Flax module.
  """
  if config.name not in _DEFAULT_RATES:
    raise ValueError(f'config.model.name={config.name!r} is unknown; '
                     f'choose one of {sorted(_DEFAULT_RATES)}')
  rates = tuple(config.dropout_rates) or _DEFAULT_RATES[config.name]
  if len(rates) < config.depth:
    raise ValueError(f'config.model.dropout_rates has {len(rates)} entries, '
                     f'need one per level (depth={config.depth})')
  dtype = config.get('dtype', 'float32')
  if dtype not in DTYPES:
    raise ValueError(f'config.model.dtype={dtype!r}: choose one of '
                     f'{sorted(DTYPES)}')
  # The paper's lists are for depth 6; a shallower model keeps the finest.
  return aesc.AutoEncoder(
      depth=config.depth, features=config.features, kernel=config.kernel,
      skips=config.name == 'aesc', dropout_rates=rates[:config.depth],
      train_dropout=config.train_dropout, bn_axis_name=axis_name,
      conv_impl=config.conv_impl, dtype=DTYPES[dtype])
