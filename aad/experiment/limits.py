"""Sizes a run cannot fit, refused before any work (aad/experiment/validate.py).

Two checks, each naming the key to lower:

Upper bounds (`BOUNDS`) on the counts and sizes of a config, far above
any useful value, so that a typo (an extra zero, 1e20) is refused at once
rather than running for days or failing deep in an allocator.

Memory. A first-order estimate of the peak memory of training and of
scoring, compared with what the machine has: the device's bytes_limit
(jax memory_stats) on an accelerator, the host's memory on the CPU. The
per-image bytes are counted, not guessed: the training step (loss and
gradient of each stage) and the scoring outputs (MC-dropout passes
included) are traced once at batch 1 and batch 2 with `jax.make_jaxpr`,
which costs no compilation and no memory; every intermediate array of
the trace is counted as if it were held at once, over OVERCOUNT (XLA
fuses and frees most of them; see OVERCOUNT). The estimate stays at or
above the real peak: a config it refuses would not have fitted; one it
passes may still be tight.

  training = batch_size x (per-image bytes of the step)
             + fixed bytes (parameters, gradients, Adam's moments)
  scoring  = eval.batch_size x (per-image bytes of the outputs)
  needed   = max(training, scoring) + train images as uint8 (once known)

The number of training images is known only once the dataset is scanned
(aad/experiment/run.py checks again with it, before the first training
step).
"""

from __future__ import annotations

import os

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import ml_collections

from aad.runtime import errors

# Upper bounds, far above any useful value (default in brackets):
#  train.num_steps 1e8 [2000]: 1e8 steps at 1000 steps/s is more than a day.
#  train.batch_size, eval.batch_size 1e6 [16]: beyond any machine's memory
#    for an image model; the memory check below catches smaller ones.
#  dataset.image_size / image_width / patch_size 16384 [128]: 16384^2 is
#    268 Mpixel; larger images do not fit a uint8 array per image of any
#    dataset worth training on (use patch mode below that).
#  eval.mc_samples 10000 [30]: the variance estimate stops changing long
#    before; every sample is a full network pass per image.
#  train.steps_per_call 10000 [1], train.log_every / eval_every 1e8.
BOUNDS = {
    'train.num_steps': 10**8,
    'train.batch_size': 10**6,
    'eval.batch_size': 10**6,
    'dataset.image_size': 16384,
    'dataset.image_width': 16384,
    'dataset.patch_size': 16384,
    'eval.mc_samples': 10000,
    'train.steps_per_call': 10000,
    'train.log_every': 10**8,
    'train.eval_every': 10**8,
}

GIB = 2**30


def _get(config, key):
  value = config
  for part in key.split('.'):
    value = value[part]
  return value


def check_bounds(config: ml_collections.ConfigDict):
  """Raises UserError for the first value above its bound."""
  for key, high in BOUNDS.items():
    value = _get(config, key)
    if isinstance(value, (int, float)) and value > high:
      raise errors.UserError(
          f'config.{key}={value!r}: must be at most {high:,} (an upper '
          'bound far above any useful value; see aad/experiment/limits.py).')


def host_bytes() -> int | None:
  """The host's physical memory (not MemAvailable: the check must not
  depend on what other processes hold at the moment)."""
  try:
    return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (OSError, ValueError, AttributeError):
    return None


def device_bytes() -> tuple[int | None, str]:
  """(bytes one device can hold, its kind): bytes_limit of memory_stats
  on an accelerator, the host's memory on the CPU."""
  device = jax.local_devices()[0]
  if device.platform != 'cpu':
    try:
      stats = device.memory_stats() or {}
    except Exception:  # pylint: disable=broad-except
      stats = {}
    if stats.get('bytes_limit'):
      return int(stats['bytes_limit']), 'device'
  return host_bytes(), 'host'


def _array_bytes(aval) -> int:
  shape = getattr(aval, 'shape', None)
  dtype = getattr(aval, 'dtype', None)
  if shape is None or dtype is None:
    return 0
  size = 1
  for d in shape:
    size *= int(d)
  return size * jnp.dtype(dtype).itemsize if hasattr(
      jnp.dtype(dtype), 'itemsize') else 0


def _jaxpr_bytes(jaxpr) -> int:
  """Bytes of every intermediate array of `jaxpr` and its sub-jaxprs (a
  loop's body counted once)."""
  total = 0
  for eqn in jaxpr.eqns:
    subs = list(jax_core.jaxprs_in_params(eqn.params))
    for sub in subs:
      total += _jaxpr_bytes(sub)
    if subs:  # made by the sub-jaxpr's equations, counted there
      continue
    for var in eqn.outvars:
      try:
        total += _array_bytes(var.aval)
      except TypeError:  # key arrays and other extended dtypes
        pass
  return total


# Every intermediate of a trace, over the peak XLA keeps, measured with the
# compiled steps' memory_analysis() on the CPU at batch 16: training 16x
# (configs/default.py), 11x (mvtec_ad.py), 2.1x (dae_denoiser.py, full-
# resolution features XLA keeps for the gradient); scoring 9x, 25x, 9x.
# Dividing by the smallest ratio keeps the estimate at or above the real
# peak (1-10x): a refused config would not have fitted.
OVERCOUNT = 2


def _traced_bytes(fn, *args) -> int:
  return _jaxpr_bytes(jax.make_jaxpr(fn)(*args).jaxpr) // OVERCOUNT


def _per_image(fn, variables, shape,
               extra=lambda n: ()) -> tuple[int, int]:
  """(bytes per image, fixed bytes) of `fn(variables, x, *extra)`, from
  traces at batch 1 and batch 2."""
  one, two = (_traced_bytes(
      fn, variables, jax.ShapeDtypeStruct((n, *shape), jnp.float32),
      *extra(n)) for n in (1, 2))
  per = max(two - one, 0)
  return per, max(one - per, 0)


_CACHE: dict[str, dict[str, int]] = {}


def _estimate(config) -> dict[str, int]:
  """{'train_per_image', 'train_fixed', 'eval_per_image', 'eval_fixed'}
  in bytes."""
  from aad import models  # pylint: disable=g-import-not-at-top
  from aad.training import loop  # pylint: disable=g-import-not-at-top
  family = models.create(config)
  h = config.dataset.image_size
  w = config.dataset.image_width or h
  shape = loop.input_shape(config, family, (h, w, config.dataset.channels))
  variables = jax.eval_shape(lambda: family.init(jax.random.key(0), shape))
  # Scoring reads the prepared variables (e.g. fast-form kernels too).
  prepared = jax.eval_shape(lambda v: family.prepare(v, shape), variables)
  key = jax.random.key(0)
  train_per, train_fixed = 0, 0
  for stage in family.stages:
    # Channels a corruption adds (e.g. the mask of a simulated anomaly).
    extra = jax.eval_shape(stage.corrupt, key, jax.ShapeDtypeStruct(
        shape, jnp.float32)).shape[-1] - shape[-1]

    def loss(v, x, stage=stage, extra=extra):
      inputs, clean = x, x
      if extra:
        inputs = jnp.concatenate(
            [x, jnp.zeros(x.shape[:-1] + (extra,), x.dtype)], -1)
      if stage.prepare is not None:
        inputs = jax.lax.stop_gradient(stage.prepare(v, inputs))
      if stage.crop:
        inputs = inputs[:, :stage.crop, :stage.crop]
        clean = clean[:, :stage.crop, :stage.crop]
      y, _ = stage.forward(v, inputs, train=True, rngs={'dropout': key})
      return stage.loss(y, clean)
    grad = jax.grad(loss)
    per, fixed = _per_image(grad, variables, shape)
    if per > train_per:
      train_per, train_fixed = per, fixed
  params = sum(_array_bytes(a) for a in jax.tree.leaves(variables))
  train_fixed = max(train_fixed, 4 * params)  # params, grads, Adam m and v
  wanted = frozenset(family.output_names)
  per, fixed = _per_image(
      lambda v, x, keys: family.outputs(v, x, keys, wanted), prepared, shape,
      lambda n: (jax.ShapeDtypeStruct((n,), jax.random.key(0).dtype),))
  prepared_bytes = sum(_array_bytes(a) for a in jax.tree.leaves(prepared))
  return {'train_per_image': train_per, 'train_fixed': train_fixed,
          'eval_per_image': per, 'eval_fixed': max(fixed, prepared_bytes)}


def estimate(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Bytes per image and fixed bytes of training and scoring, cached per
  config but for the batch sizes, which they do not depend on (so that
  check_memory's batch-1 question traces nothing again)."""
  key = config.copy_and_resolve_references()
  key.train.batch_size = key.eval.batch_size = 0
  key = key.to_json(sort_keys=True, default=repr)
  if key not in _CACHE:
    _CACHE[key] = _estimate(config)
  return _CACHE[key]


def _gib(n: float) -> str:
  return f'{n / GIB:.1f} GiB' if n >= GIB else f'{n / 2**20:.0f} MiB'


def needed(config: ml_collections.ConfigDict,
           num_train_images: int = 0) -> dict[str, int]:
  """Peak bytes of training and scoring on one device (train images
  included once their number is known)."""
  est = estimate(config)
  devices = 1
  if jax.local_devices()[0].platform != 'cpu':
    # The global batch is split over the devices; each holds the train
    # images (replicated).
    devices = max(1, min(len(jax.local_devices()),
                         config.num_devices or len(jax.local_devices())))
  h = config.dataset.image_size
  w = config.dataset.image_width or h
  images = num_train_images * h * w * config.dataset.channels
  train_batch = -(-config.train.batch_size // devices)
  eval_batch = config.eval.batch_size
  return {
      'train': (train_batch * est['train_per_image'] + est['train_fixed']
                + images),
      'eval': eval_batch * est['eval_per_image'] + est['eval_fixed'],
  }


def check_memory(config: ml_collections.ConfigDict,
                 num_train_images: int = 0):
  """Raises UserError when training or scoring needs more memory than
  the machine has, naming the key to lower."""
  available, kind = device_bytes()
  if not available:
    return
  need = needed(config, num_train_images)
  images = (f' with {num_train_images} training images'
            if num_train_images else '')
  for part, what, batch_key, also in (
      ('train', 'training', 'train.batch_size', 'or train on patches with '
       'config.dataset.patch_size'),
      ('eval', 'scoring', 'eval.batch_size', 'or config.eval.mc_samples')):
    if need[part] <= available:
      continue
    # Not even one image fits: the size is the key to lower.
    one = config.copy_and_resolve_references()
    one.train.batch_size, one.eval.batch_size = 1, 1
    key = batch_key
    if needed(one, num_train_images)[part] > available:
      key = ('dataset.patch_size' if config.dataset.patch_size else
             'dataset.image_size')
    others = ', '.join(o for o in ('config.dataset.image_size', also)
                       if f'config.{key}' not in o)
    raise errors.UserError(
        f'config.{key}={_get(config, key)} needs about {_gib(need[part])} '
        f'of {kind} memory for {what}{images} (batch {_get(config, batch_key)}'
        f', image size {_size(config)}); this machine has {_gib(available)}:'
        f' lower config.{key} (or {others}).')


def _size(config) -> str:
  h = config.dataset.image_size
  w = config.dataset.image_width or h
  size = f'{h}x{w}x{config.dataset.channels}'
  if config.dataset.patch_size:
    size += f' (patches {config.dataset.patch_size})'
  return size
