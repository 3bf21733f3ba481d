"""Config values checked before any data is prepared or anything written.

One `UserError` names the first bad key, its value and the accepted range,
so a nonsensical value (a negative learning rate, a zero batch, an image
size the network cannot take) stops the run at once instead of training
silently, or failing after minutes of work.
"""

from __future__ import annotations

import math

import ml_collections

from aad.models import corruptions
from aad.runtime import errors
from aad.metrics import protocol
from aad import models
from aad.experiment import limits
from aad.experiment import recommend
from aad import scoring
from aad.training import loop

# Adam learning rates above this diverge for every model here (1e6 trained
# to 6.8 dB validation PSNR without a word): refused, not warned about.
MAX_LEARNING_RATE = 1.0


def _fail(key: str, value, rule: str):
  raise errors.UserError(f'config.{key}={value!r}: {rule}.')


def _int_at_least(config, key: str, low: int):
  value = config
  for part in key.split('.'):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    _fail(key, value, f'must be an integer >= {low}')


def _in_range(config, key: str, low: float, high: float, *,
              low_open: bool = False, high_open: bool = False):
  value = config
  for part in key.split('.'):
    value = value[part]
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high))
  if not ok:
    lo = '(' if low_open else '['
    hi = ')' if high_open else ']'
    _fail(key, value, f'must be a number in {lo}{low:g}, {high:g}{hi}')


def check_config(config: ml_collections.ConfigDict, *, memory: bool = True):
  """Raises UserError for the first config value a run cannot use.

  Covers what training and evaluation would otherwise find late or never:
  step counts and batch sizes, the learning rate, the image size against
  the family's size rule, the corruption, the scorers and the evaluation
  protocol.

  With config.auto on (configs/folder.py), the fields the rules of
  aad/experiment/recommend.py will choose from the training images are not checked
  while they still ask for a choice; aad.experiment.run checks them once chosen.

  memory=False leaves out the memory check (aad/experiment/limits.py),
  which asks the devices for their memory: a multi-host run must start
  jax.distributed before anything touches the devices.
  """
  config = recommend.with_placeholders(config)
  for key in ('train.batch_size', 'train.num_steps', 'train.steps_per_call',
              'train.log_every', 'train.eval_every', 'eval.mc_samples',
              'eval.batch_size', 'dataset.image_size', 'train.auto_pixels'):
    _int_at_least(config, key, 1)
  for key in ('eval.mc_chunk', 'dataset.image_width', 'dataset.patch_size',
              'dataset.patch_stride', 'dataset.roi_margin',
              'eval.heatmap_rows', 'num_devices'):
    _int_at_least(config, key, 0)
  limits.check_bounds(config)
  _in_range(config, 'train.learning_rate', 0, MAX_LEARNING_RATE,
            low_open=True)
  _in_range(config, 'train.adam_eps', 0, 1, low_open=True)
  _in_range(config, 'dataset.val_fraction', 0, 1, low_open=True,
            high_open=True)
  if config.eval.tile_margin < 0:
    _fail('eval.tile_margin', config.eval.tile_margin, 'must be >= 0 (px)')
  if config.train.plateau:
    _in_range(config, 'train.plateau_factor', 0, 1, low_open=True,
              high_open=True)
    _int_at_least(config, 'train.plateau_patience', 1)
  if config.dataset.channels not in (1, 3):
    _fail('dataset.channels', config.dataset.channels, 'must be 1 or 3')
  if config.eval.resolution not in ('model', 'original'):
    _fail('eval.resolution', config.eval.resolution,
          "must be 'model' or 'original'")
  built = {}  # the family, built once by its check
  checks = (('config.corruption', lambda: corruptions.from_config(
                config.corruption)),
            ('config.model', lambda: built.setdefault(
                'family', models.create(config))),
            ('config.eval.scorers', lambda: scoring.resolve(
                config.eval.scorers, built['family'])),
            ('config.eval', lambda: protocol.Protocol.from_config(
                config.eval)))
  for block, check in checks:
    try:
      check()
    except (ValueError, KeyError, TypeError) as e:
      message = str(e).strip("'\"")
      raise errors.UserError(message if 'config.' in message else
                             f'{block}: {message}') from None
  family = built['family']
  h = config.dataset.image_size
  w = config.dataset.image_width or h
  loop.input_shape(config, family, (h, w, config.dataset.channels))
  # Last: sizes the machine cannot hold (aad/experiment/limits.py).
  if memory:
    limits.check_memory(config)
