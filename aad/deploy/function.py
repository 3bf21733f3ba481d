"""The whole detector as one pure JAX function, for `jax.export`.

`detector_fn` turns a trained run into fn(images, seed, indices) ->
{'maps', 'model_maps', 'scores', 'decisions', 'normalised_scores'}:
uint8 images of any size in
one batch (one size per call), resized to the model's size and converted
to its channels exactly as `aad.data.prepare_image` does on the host
(scikit-image's anti-aliased bilinear resize, Rec.601 luma), the family's
outputs, the configured scorers' maps and own image scores, the maps
brought back to the input size as `preprocess.paste_map` does, the image
scores as `evaluation.reduce` (the run's headline norm) and the decisions
at the calibrated thresholds, and the scores normalised to [0, 1] (0.5 at
the thresholds, `protocol.normalise`). The input size may be symbolic, so one
export serves every size.

Resizing is a linear map per axis (a Gaussian filter with scipy's 'mirror'
border, then linear interpolation at half-pixel centres), built here as an
(out, in) matrix. It runs in float64 like scikit-image: in float32 the
round-off (about 1e-4 grey levels) would move pixels near a half level to
the other side of uint8 rounding. The network and scorers run in float32
with x64 off, so their random draws (MC dropout) are the in-process ones.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from aad import data
from aad.metrics import protocol
from aad.data import preprocess
from aad.scoring import batch
from aad.scoring import ops

# scipy.ndimage.gaussian_filter's default kernel extent, in sigmas.
TRUNCATE = 4.0


def _as_float(size, dtype) -> jax.Array:
  """A (possibly symbolic) dimension as a float scalar."""
  return jnp.asarray(size, dtype=dtype)


def gaussian_matrix(n, sigma, mode: str, dtype=jnp.float64) -> jax.Array:
  """(n, n) matrix of scipy.ndimage.gaussian_filter1d along an axis.

  Args:
    n: the axis length (an int or a symbolic dimension).
    sigma: standard deviation in pixels, a scalar (traced or not); 0 gives
      the identity, as scipy skips the axis.
    mode: scipy's border, 'mirror' (d c b | a b c d, scikit-image's
      'reflect') or 'reflect' (c b a | a b c d, scipy's default). One
      reflection: the kernel radius must be below n.
  """
  sigma = jnp.asarray(sigma, dtype)
  safe = jnp.where(sigma > 0, sigma, 1)
  radius = jnp.floor(TRUNCATE * safe + 0.5)
  i = jnp.arange(n, dtype=dtype)[:, None]
  j = jnp.arange(n, dtype=dtype)[None, :]
  last = _as_float(n, dtype) - 1

  def weight(d):
    return jnp.where(jnp.abs(d) <= radius,
                     jnp.exp(-0.5 / (safe * safe) * d * d), 0)

  if mode == 'mirror':
    low = jnp.where(j >= 1, weight(-j - i), 0)
    high = jnp.where(j <= last - 1, weight(2 * last - j - i), 0)
  elif mode == 'reflect':
    low = weight(-(j + 1) - i)
    high = weight(2 * last + 1 - j - i)
  else:
    raise ValueError(f'unknown border mode {mode!r}')
  # The kernel's normaliser: the sum of its 2 radius + 1 taps.
  d = jnp.arange(n, dtype=dtype)
  total = 1 + 2 * jnp.sum(jnp.where(d >= 1, weight(d), 0))
  matrix = (weight(j - i) + low + high) / total
  return jnp.where(sigma > 0, matrix, jnp.eye(n, dtype=dtype))


def resize_matrix(n, m, dtype=jnp.float64) -> jax.Array:
  """(m, n) matrix of scikit-image's resize (order 1, anti-aliasing where
  the axis shrinks, mode 'reflect') along one axis of length n -> m."""
  ratio = _as_float(n, dtype) / _as_float(m, dtype)
  gauss = gaussian_matrix(n, jnp.maximum(0, (ratio - 1) / 2), 'mirror',
                          dtype)
  # scipy.ndimage.zoom(grid_mode=True): output pixel o samples the input at
  # (o + 1/2) n / m - 1/2, linearly between its neighbours, 'mirror' border.
  where = (jnp.arange(m, dtype=dtype) + 0.5) * ratio - 0.5
  lo = jnp.floor(where)
  frac = (where - lo)[:, None]
  last = _as_float(n, dtype) - 1

  def mirror(k):
    k = jnp.abs(k)
    return jnp.where(k > last, 2 * last - k, k)

  j = jnp.arange(n, dtype=dtype)[None, :]
  zoom = ((1 - frac) * (mirror(lo)[:, None] == j) +
          frac * (mirror(lo + 1)[:, None] == j))
  return zoom @ gauss


def resize(images: jax.Array, size: tuple[Any, Any]) -> jax.Array:
  """(N, h, w, ...) float -> (N, *size, ...), as skimage's resize per image
  (bilinear, anti-aliased when shrinking); an identity when sizes match."""
  dtype = images.dtype
  rows = resize_matrix(images.shape[1], size[0], dtype)
  cols = resize_matrix(images.shape[2], size[1], dtype)
  return jnp.einsum('ah,nhw...,bw->nab...', rows, images, cols,
                    precision=jax.lax.Precision.HIGHEST)


def prepare(images: jax.Array, size: tuple[int, int],
            channels: int) -> jax.Array:
  """uint8 (N, h, w, 1 or 3) -> uint8 (N, *size, channels), as
  `data.prepare_image` without an ROI. Call with x64 enabled."""
  x = images.astype(jnp.float64)
  if images.shape[1:3] != tuple(size):
    x = jnp.clip(jnp.round(resize(x, size)), 0, 255)
  have = images.shape[-1]
  if have == 3 and channels == 1:
    luma = jnp.asarray(preprocess.REC601_LUMA, jnp.float64)
    x = jnp.clip(jnp.round(x @ luma), 0, 255)[..., None]
  elif have == 1 and channels == 3:
    x = jnp.repeat(x, 3, axis=-1)
  elif have != channels:
    raise ValueError(f'cannot convert {have} channel(s) to {channels}')
  return x.astype(jnp.uint8)


def reduce(maps: jax.Array, norm: str, sigma: float) -> jax.Array:
  """Image scores (N,) from maps (N, H, W), as `evaluation.reduce`."""
  if norm == 'smooth_max':
    dtype = maps.dtype
    rows = gaussian_matrix(maps.shape[1], sigma, 'reflect', dtype)
    cols = gaussian_matrix(maps.shape[2], sigma, 'reflect', dtype)
    smooth = jnp.einsum('ah,nhw,bw->nab', rows, maps, cols,
                        precision=jax.lax.Precision.HIGHEST)
    return jnp.max(smooth, axis=(1, 2))
  if norm == 'top_k':
    # The mean of the largest evaluation.TOP_K fraction (at least one).
    flat = maps.reshape(maps.shape[0], -1)
    k = max(1, int(round(protocol.TOP_K * flat.shape[1])))
    return jnp.mean(jax.lax.top_k(flat, k)[0], axis=1)
  if norm in ops.NORMS:
    return ops.reduce_map(maps, norm)
  raise ValueError(f'unknown norm {norm!r}; choose one of '
                   f'{protocol.REDUCTIONS}')


def check_exportable(config) -> None:
  """Raises ValueError naming the config key for what the detector
  function does not cover."""
  if config.dataset.roi != 'none':
    raise ValueError(
        f"config.dataset.roi={config.dataset.roi!r}: ROI peeling (Otsu "
        'threshold, connected components, hole filling, an exact Euclidean '
        'erosion and a crop of data-dependent size) is not in the exported '
        "detector; use aad.Detector, or train with config.dataset.roi='none'.")


def model_fn(config, family, scorers, random: bool = True):
  """fn(variables, fitted, prepared uint8 (N, H, W, C), seed, indices) ->
  (maps, own scores) at the model size: evaluation's computation
  (`aad.scoring.batch.image_fn`, tiles included); variables from
  `family.prepare`.

  MC-dropout keys are fold_in(key(seed), index) per image (per tile in patch
  mode, index * tiles + tile), as evaluation with seed
  `batch.seed(config)` and each image's position in the scored list.
  random=False passes no keys (for scorers without random draws; seed and
  indices are ignored).
  """
  patch, stride = batch.patch_stride(config.dataset)
  score = batch.image_fn(family, scorers, config.eval, patch=patch,
                         stride=stride, margin=config.eval.tile_margin)

  def fn(variables, fitted, images, seed, indices):
    key = jax.random.key(seed) if random else None
    _, result = score(variables, fitted, images, key, indices)
    return result['maps'], result['image']

  return fn


def detector_fn(config, family, scorers, variables, fitted,
                thresholds: dict):
  """The exported function: fn(images uint8 (N, h, w, 1 or 3), seed int32,
  indices int32 (N,)) -> {'maps': {scorer: (N, h, w)} at the input size,
  'model_maps': {scorer: (N, H, W)}, 'scores': {scorer: (N,)},
  'decisions': {scorer: (N,) bool}, 'normalised_scores': {scorer: (N,)}}.
  Trace it with x64 enabled; the model part switches it off. `variables`
  come from `family.prepare` (the fast convolutions' kernels built once):
  the export holds them as constants.

  Scores: the config's eval.norm of each map (at the model size, or at the
  input size with eval.resolution='original', as aad.predict), a map-less
  scorer's own score; decisions: score >= its image threshold;
  normalised scores: `protocol.normalise` at the scorers' thresholds and
  spans (`protocol.normalisation`), baked in as constants.
  """
  check_exportable(config)
  size = data.image_size(config.dataset)
  channels = config.dataset.channels
  norm, sigma = config.eval.norm, float(config.eval.smooth_sigma)
  full = config.eval.resolution == 'original'
  model = functools.partial(model_fn(config, family, scorers), variables,
                            fitted)
  names = [s.name for s in scorers]
  scales = protocol.normalisation(thresholds)

  def fn(images, seed, indices):
    ready = prepare(images, size, channels)
    with jax.enable_x64(False):
      model_maps, own = model(ready, seed.astype(jnp.int32),
                              indices.astype(jnp.int32))
    shape = images.shape[1:3]
    maps = {k: resize(v[..., None].astype(jnp.float64), shape)[..., 0]
            for k, v in model_maps.items()}
    scores = {}
    for name in names:
      if name in model_maps:
        source = maps[name] if full else model_maps[name]
        scores[name] = reduce(source.astype(jnp.float64), norm, sigma)
      else:
        scores[name] = own[name].astype(jnp.float64)
    # Compared in float64, as the host compares evaluation.reduce's scores.
    return {
        'maps': {k: v.astype(jnp.float32) for k, v in maps.items()},
        'model_maps': model_maps,
        'scores': {k: v.astype(jnp.float32) for k, v in scores.items()},
        'decisions': {k: scores[k] >= thresholds['image'][k]
                      for k in names if k in thresholds['image']},
        'normalised_scores': {
            k: protocol.normalise(scores[k], *scales[k], clip=jnp.clip
                                  ).astype(jnp.float32)
            for k in names if k in scales},
    }

  return fn
