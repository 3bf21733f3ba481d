"""Shared pieces of the similarity measures: results, colour, filters.

Filters are sums of shifted slices over the last two axes of planes
(..., H, W), not convolutions of NHWC arrays. On XLA:CPU (2 cores), a
separable 11-tap Gaussian over a (16, 256, 256, 15) batch took about 100 ms
as slices against 2-3 s as a depthwise `lax.conv_general_dilated` (either
convolution library); and SSIM's five filtered quantities stacked as planes
(5, N, C, H, W), W the minor axis, took 85-110 ms against 140-190 ms stacked
along C and 600-700 ms for dm-pix's five separate (N, H, W, 3) filterings.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# ITU-R BT.601 luma, the weights of the FSIM and GMSD reference code.
LUMA = (0.299, 0.587, 0.114)
# NTSC YIQ chrominance, as in FSIMc (Zhang et al. 2011, section III.C).
CHROMA_I = (0.596, -0.274, -0.322)
CHROMA_Q = (0.211, -0.523, 0.312)


class Result(NamedTuple):
  """What every measure returns; larger always means more anomalous."""
  score: jax.Array  # (N,) one value per image.
  map: jax.Array | None  # (N, H, W), or None where there is no local form.


def check_pair(x: jax.Array, y: jax.Array) -> None:
  if x.ndim != 4 or x.shape != y.shape:
    raise ValueError(f'expected two NHWC batches of one shape, got '
                     f'{x.shape} and {y.shape}')


def mix(x: jax.Array, weights) -> jax.Array:
  """Weighted sum of the channels of (..., C) with C == len(weights)."""
  return sum(w * x[..., i] for i, w in enumerate(weights))


def luminance(x: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (N, H, W): the image itself for C=1, luma for C=3."""
  channels = x.shape[-1]
  if channels == 1:
    return x[..., 0]
  if channels == 3:
    return mix(x, LUMA)
  raise ValueError(f'luminance needs 1 or 3 channels, not {channels}')


# Cephes' atanf on [0, tan(pi / 8)]: atan(u) ~ u + u^3 P(u^2), within
# 2 float32 ulp.
_ATAN_POLY = (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1,
              -3.33329491539e-1)


def atan2(y: jax.Array, x: jax.Array) -> jax.Array:
  """jnp.arctan2(y, x) for finite inputs, as selects and a polynomial.

  XLA:CPU calls libm's scalar atan2f per element: 1 ms for SAM's 16 x 64 x
  64 angles against 0.14 ms here, with the same error against float64
  (2.6e-7 rad). The ratio min / max of |y| and |x| in [0, 1] is reduced to
  [0, tan(pi / 8)] by atan(t) = pi / 4 + atan((t - 1) / (t + 1)), then
  mapped to its octant; atan2(0, 0) = 0 and the sign of y (as its sign
  bit, so -0 as numpy's) is kept.
  """
  ay, ax = jnp.abs(y), jnp.abs(x)
  hi, lo = jnp.maximum(ay, ax), jnp.minimum(ay, ax)
  t = lo / jnp.where(hi > 0, hi, 1.0)
  reduced = t > math.tan(math.pi / 8)
  u = jnp.where(reduced, (t - 1.0) / (t + 1.0), t)
  z = u * u
  p = 0.0
  for c in _ATAN_POLY:
    p = (p + c) * z
  r = p * u + u
  r = jnp.where(reduced, math.pi / 4 + r, r)
  r = jnp.where(ay > ax, math.pi / 2 - r, r)
  r = jnp.where(x < 0, math.pi - r, r)
  return jnp.where(jnp.signbit(y), -r, r)


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
  """A normalised 1-D Gaussian window of `size` taps (dm-pix's centring)."""
  half = size // 2
  shift = (2 * half - size + 1) / 2
  taps = np.exp(-0.5 * ((np.arange(size) - half + shift) / sigma) ** 2)
  return taps / taps.sum()


def planes(x: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (N, C, H, W), the layout the filters run fast in."""
  return jnp.moveaxis(x, -1, 1)


def correlate_valid(z: jax.Array, taps, axis: int) -> jax.Array:
  """'valid' correlation of z with 1-D taps along one axis."""
  taps = np.asarray(taps, np.float64)
  length = z.shape[axis] - len(taps) + 1
  out = 0.0
  for i, t in enumerate(taps):
    if t != 0:
      out = out + float(t) * jax.lax.slice_in_dim(z, i, i + length, axis=axis)
  return out


def separable_valid(z: jax.Array, taps) -> jax.Array:
  """'valid' 2-D correlation over the last two axes with taps (x) taps."""
  return correlate_valid(correlate_valid(z, taps, -2), taps, -1)


def flat_windows(z: jax.Array, size: int) -> jax.Array:
  """True where the 'valid' size x size window over the last two axes of z
  is constant: no two neighbours in it differ (exact, unlike a float32
  variance, and 5x faster on CPU than sliding max == min)."""
  h = (z[..., :, 1:] != z[..., :, :-1]).astype(jnp.float32)
  v = (z[..., 1:, :] != z[..., :-1, :]).astype(jnp.float32)
  h = correlate_valid(correlate_valid(h, np.ones(size), -2),
                      np.ones(size - 1), -1)
  v = correlate_valid(correlate_valid(v, np.ones(size - 1), -2),
                      np.ones(size), -1)
  return h + v == 0


def pad_hw(z: jax.Array, before: int, after: int, mode: str) -> jax.Array:
  """Pads the last two axes (H and W) of z."""
  widths = [(0, 0)] * (z.ndim - 2) + [(before, after)] * 2
  return jnp.pad(z, widths, mode=mode)


def window_pad(size: int) -> tuple[int, int]:
  """Map pixels before and after a 'valid' window output, for 'same' size."""
  before = (size - 1) // 2
  return before, size - 1 - before


def matlab_downsample(z: jax.Array, factor: int) -> jax.Array:
  """MATLAB's conv2(z, ones(f)/f^2, 'same') then z(1:f:end, 1:f:end).

  The average-then-subsample step of the GMSD and FSIM reference code, on
  (N, H, W). 'same' zero-pads, so for an even f the window of output j
  covers rows j f - (f - 1 - f // 2) ... j f + f // 2. The blocks are
  summed as f strided slices per axis: on XLA:CPU reduce_window (or a
  reshape and sum) took about 1 ms for GMSD's 2 x 2 means of the 32
  luminances of a 16 x 64 x 64 x 3 pair of batches, the slices 0.1 ms.
  """
  if factor == 1:
    return z
  _, h, w = z.shape
  top = factor - 1 - factor // 2
  out_h, out_w = -(-h // factor), -(-w // factor)
  # A negative high pad crops the rows that no output window reaches.
  z = jax.lax.pad(z, jnp.array(0, z.dtype),
                  [(0, 0, 0), (top, out_h * factor - top - h, 0),
                   (top, out_w * factor - top - w, 0)])
  rows = sum(z[:, i::factor] for i in range(factor))
  return sum(rows[:, :, j::factor] for j in range(factor)) / factor**2


def upsample(m: jax.Array, factor: int, h: int, w: int) -> jax.Array:
  """Repeats each pixel of (N, h', w') factor times and crops to (N, h, w)."""
  if factor == 1:
    return m
  m = jnp.repeat(jnp.repeat(m, factor, axis=1), factor, axis=2)
  return m[:, :h, :w]


def cpu_layout(batch) -> bool:
  """Whether XLA:CPU-specific program shapes apply to a batch of `batch`
  images: on the CPU backend and with a concrete batch (jax.export's
  symbolic batch, which also lowers for accelerators, gets the plain
  program)."""
  return isinstance(batch, int) and jax.default_backend() == 'cpu'


def chunk_images(size: int | None, values: int | None,
                 image_values: int) -> int | None:
  """Images per chunk: `size`, or with `values` (H W C of the image size
  `size` was tuned at) as many images as hold size x values values, at
  least 1; None (the whole batch) stays None."""
  if size is None or values is None:
    return size
  return max(1, size * values // image_values)


def in_chunks(fn, size: int | None, values: int | None = None,
              per_pixel: bool = False):
  """fn(x, y, **kw) run over the batch `size` images at a time (lax.map).

  On XLA:CPU the whole-batch arrays of the heavier measures (tens of MB at
  16 x 256 x 256 x 3) stream through memory once per pass; a few images at
  a time stay in cache, which cut FSIM from ~1.3 s to ~0.45 s and SSIM from
  ~120 to ~50 ms per batch on the 2-core test machine. Accelerators get the
  whole batch (size is ignored off CPU), as does size None.

  values: the H W C the size was tuned at; smaller images then go in
  proportionally more images per chunk (`chunk_images`). At 64 x 64 x 1,
  SSIM, GMSD, ISSM, UIQ and SH on whole batches of 16 instead of their
  256 x 256 x 3 chunks cut what all scorers add to the residual's scoring
  call from 21.7 to 19.1 ms (side by side, busy machine; ISSM alone 3.3
  against 3.7 ms): on arrays that small the loop costs more than the
  cache saves.

  per_pixel: count an image's values over H x W only (a measure whose
  heavy part works on the luminance, FSIM's phase congruency).
  """
  def run(x, y, **kwargs):
    n = x.shape[0]
    # A symbolic batch (jax.export's) cannot be split into chunks: whole.
    if not cpu_layout(n):
      return fn(x, y, **kwargs)
    per = chunk_images(size, values,
                       math.prod(x.shape[1:3] if per_pixel else x.shape[1:]))
    if per is None or n <= per:
      return fn(x, y, **kwargs)
    m = n - n % per
    split = lambda z: z[:m].reshape(m // per, per, *z.shape[1:])
    head = jax.lax.map(lambda pair: fn(*pair, **kwargs), (split(x), split(y)))
    head = jax.tree.map(lambda z: z.reshape(m, *z.shape[2:]), head)
    if m == n:
      return head
    tail = fn(x[m:], y[m:], **kwargs)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), head, tail)
  return run
