"""Rules that choose a config from the training data (configs/folder.py).

With `config.auto` on, `resolve` reads the training images of the
configured categories (never a test image or label; aad.data.properties)
and sets, before anything is trained or saved, each of these fields that
still holds its AUTO value (a value given on the command line is kept):

- dataset.channels: 3 if any training image has colour, else 1.
- dataset.image_size / image_width: the median native size, aspect ratio
  kept, scaled down (never up) until it holds at most MAX_PIXELS pixels,
  each side rounded to the nearest multiple of the model's 2**depth.
- dataset.patch_size / patch_stride: patch mode with PATCH px patches
  (stride half a patch) when the model's image has a side of at least
  2 * PATCH px or an aspect ratio of at least 2 (large or elongated images,
  where squashing to a small square loses thin defects); else whole images.
- train.num_steps: config.train.auto_pixels / (batch x input pixels)
  steps, within [MIN_STEPS, MAX_STEPS]: the same number of pixels seen
  whatever the size (a budget per family: its cost per pixel differs).
- eval.normalised.line_length (and smooth_sigma): in patch mode, the line
  filter of LINE px (aad/scoring/lines.py) with no Gaussian: in large images
  thin defects (cracks, scratches) span many pixels, faint per pixel;
  whole (small) images get no line filter and a Gaussian of SMOOTH px (a
  LINE-px line would cross much of the image and dilute small defects).

Every decision is logged and written to the run's config.json, so
aad.evaluate and aad.predict use the same values.
"""

from __future__ import annotations

import math

from absl import logging
import ml_collections

from aad import data

MAX_PIXELS = 640 * 256   # the model's image area, px
PATCH = 128              # patch side in patch mode, px
STEP_PIXELS = 16 * 128 * 128 * 3000   # default pixels seen in training
MIN_STEPS, MAX_STEPS = 500, 3000
LINE = 32.0              # line filter sigma along the line, px (patch mode)
SMOOTH = 2.0             # Gaussian sigma of whole-image maps, px


def _side(length: float, multiple: int) -> int:
  # The nearest multiple, ties down (400 px -> 384, not 416).
  return max(multiple, int(math.ceil(length / multiple - 0.5)) * multiple)


# Fields the rules choose, each with the value that asks for a choice (what
# configs/folder.py sets); any other value, e.g. from the command line, is
# kept, and the later rules build on it.
AUTO = {'dataset.channels': 0, 'dataset.image_size': 0,
        'dataset.patch_size': -1, 'train.num_steps': 0,
        'eval.normalised.line_length': -1.0}


def rules(props: data.Properties, multiple: int, batch_size: int,
          fixed: dict | None = None, step_pixels: int = STEP_PIXELS,
          normalised: bool = True) -> tuple[dict[str, object], list[str]]:
  """({config field: value}, one reason per decision) for data `props` and
  a model whose image sides must be multiples of `multiple`.

  fixed: values the user chose for some AUTO fields (image_size with
  image_width, patch_size with patch_stride); those are not returned and
  the other rules use them.
  step_pixels: pixels the training steps should see in all.
  normalised: whether the `normalised` scorer is listed; without it its
    two fields are still set (a later aad.evaluate may list it) but give
    no reason.
  """
  fixed = dict(fixed or {})
  fields, why = {}, []

  def choose(field, value, reason, *also):
    if field in fixed:
      why.append(f'{field} {fixed[field]} as given')
      return fixed[field]
    fields[field] = value
    for extra_field, extra_value in also:
      fields[extra_field] = extra_value
    if reason:
      why.append(reason)
    return value

  colour = 3 if props.colour else 1
  choose('dataset.channels', colour, f'channels {colour}: the training '
         f'images are {"in colour" if props.colour else "grey"}')
  scale = min(1.0, math.sqrt(MAX_PIXELS / (props.height * props.width)))
  height = _side(props.height * scale, multiple)
  width = _side(props.width * scale, multiple)
  height = choose('dataset.image_size', height,
                  f'image {height}x{width}: median native size '
                  f'{props.height}x{props.width} scaled by {scale:.3g} (at '
                  f'most {MAX_PIXELS} px, aspect ratio kept)',
                  ('dataset.image_width', width))
  if 'dataset.image_size' in fixed:
    width = fixed.get('dataset.image_width') or height
  aspect = max(height, width) / min(height, width)
  patch = 0
  if max(height, width) >= 2 * PATCH or aspect >= 2:
    patch = min(PATCH, (min(height, width) // multiple) * multiple)
  patch = choose('dataset.patch_size', patch,
                 f'patch mode, {patch} px patches, stride {patch // 2}'
                 if patch else 'whole images (small and not elongated)',
                 ('dataset.patch_stride', patch // 2))
  pixels = batch_size * (patch * patch if patch else height * width)
  steps = min(MAX_STEPS, max(MIN_STEPS, step_pixels // pixels))
  choose('train.num_steps', steps,
         f'{steps} training steps ({step_pixels:.3g} px seen)',
         ('train.eval_every', max(1, steps // 6)))
  line = LINE if patch else 0.0
  choose('eval.normalised.line_length', line, normalised and (
      f'line filter of {line:g} px, no Gaussian (patch mode: thin '
      'defects span many pixels)' if line else
      f'no line filter, Gaussian of {SMOOTH:g} px (whole images)'),
         ('eval.normalised.smooth_sigma', 0.0 if line else SMOOTH))
  return fields, why


def _get(config, field):
  for part in field.split('.'):
    config = config[part]
  return config


def _set(config, field, value):
  block, key = field.rsplit('.', 1)
  _get(config, block)[key] = value


# Values a still-unresolved AUTO field takes while the rest of the config
# is checked (aad/experiment/validate.py), before the rules have read any image.
_PLACEHOLDERS = {'dataset.channels': 1, 'dataset.image_size': 256,
                 'dataset.patch_size': 0, 'train.num_steps': 1,
                 'eval.normalised.line_length': 0.0}


def with_placeholders(config: ml_collections.ConfigDict
                      ) -> ml_collections.ConfigDict:
  """`config` with each AUTO field that still asks for a choice set to a
  valid stand-in, when config.auto is on, so that every other value can be
  checked before the training images are read; unchanged otherwise."""
  if not config.get('auto', False):
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  for field, ask in AUTO.items():
    if _get(config, field) == ask:
      _set(config, field, _PLACEHOLDERS[field])
      if field == 'dataset.image_size':
        config.dataset.image_width = 0
  return config


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with its AUTO fields that still ask for a choice set by
  `rules` from its training data, when config.auto is on; unchanged
  otherwise."""
  if not config.get('auto', False):
    return config
  fixed = {f: _get(config, f) for f, ask in AUTO.items()
           if _get(config, f) != ask}
  if 'dataset.image_size' in fixed:
    fixed['dataset.image_width'] = config.dataset.image_width
  logging.info('config.auto: reading the training images of %s to choose '
               'the config (prepared on first use)...',
               config.dataset.path or config.dataset.name)
  props = data.properties(config.dataset)
  from aad import models  # pylint: disable=g-import-not-at-top
  fields, why = rules(props, models.create(config).size_multiple,
                      config.train.batch_size, fixed,
                      config.train.get('auto_pixels', STEP_PIXELS),
                      'normalised' in config.eval.scorers)
  logging.info('config.auto: %d training images, median %dx%d, %s; %s.',
               props.count, props.height, props.width,
               'colour' if props.colour else 'grey', '; '.join(why))
  config = ml_collections.ConfigDict(config.to_dict())
  for field, value in fields.items():
    _set(config, field, value)
  config.auto = False  # resolved: evaluate / predict must not redo it
  return config
