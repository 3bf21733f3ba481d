"""Histogram and edge statistics: ISSM and SH.

Both work on intensities as a whole: ISSM on the BT.601 luminance of colour
images, SH on each channel's histogram (averaged over channels).
"""

import math

import jax
import jax.numpy as jnp

from aad.scoring.similarity import common
from aad.scoring.similarity import structural
from aad.scoring.similarity.common import Result

# OpenCV's tan(22.5 deg) in 15-bit fixed point (canny.cpp, CANNY_SHIFT).
_SHIFT = 15
_TG22 = int(0.4142135623730950488 * (1 << _SHIFT) + 0.5)


def _grow(edges: jax.Array, candidates: jax.Array) -> jax.Array:
  """One step of 8-connected growth of `edges` inside `candidates`."""
  h, w = edges.shape[1:]
  p = common.pad_hw(edges, 1, 1, 'constant')
  rows = p[:, :-2] | p[:, 1:-1] | p[:, 2:]
  return (rows[:, :, :w] | rows[:, :, 1:w + 1] | rows[:, :, 2:]) & candidates


def hysteresis(seeds: jax.Array, candidates: jax.Array,
               steps_per_check: int = 8) -> jax.Array:
  """The candidates (N, H, W) 8-connected to a seed (a seed is a
  candidate), grown a step at a time until nothing changes.

  Bool maps, one step a fusion: bit-packed rows (32 columns to a uint32)
  made ISSM's Canny slower on XLA:CPU (1.3 against 0.85 ms for 32 images
  of 64 x 64).

  Args:
    seeds, candidates: bool (N, H, W).
    steps_per_check: growth steps between the convergence tests (fewer
      tests; extra steps change nothing).
  """
  def body(state):
    edges, _ = state
    grown = edges
    for _ in range(steps_per_check):
      grown = _grow(grown, candidates)
    return grown, jnp.any(grown != edges)

  start = seeds & candidates
  edges, _ = jax.lax.while_loop(lambda s: s[1], body, (start, jnp.any(start)))
  return edges


def canny(gray: jax.Array, *, low: int = 100, high: int = 200,
          steps_per_check: int = 8) -> jax.Array:
  """OpenCV's cv2.Canny(gray, low, high) on integer images (N, H, W).

  3 x 3 Sobel gradients (border replicated), L1 magnitude |gx| + |gy|,
  non-maximum suppression along the gradient quantised to 0/45/90/135
  degrees with OpenCV's fixed-point tangents and tie rules (> before, >=
  after; > both on diagonals; 0 outside the image), candidates above `low`,
  seeds above `high`, and hysteresis: candidates 8-connected to a seed.

  Args:
    gray: integer-valued intensities, e.g. round(255 * luminance).
    low, high: the hysteresis thresholds on the L1 magnitude.
    steps_per_check: growth steps between the convergence tests of the
      hysteresis loop (fewer tests; extra steps change nothing).

  Returns:
    bool edge maps (N, H, W).
  """
  g = gray.astype(jnp.int32)
  h, w = g.shape[1:]
  p = common.pad_hw(g, 1, 1, 'edge')
  s = lambda dy, dx: p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  weights = {-1: 1, 0: 2, 1: 1}
  gx = sum(wt * (s(r, 1) - s(r, -1)) for r, wt in weights.items())
  gy = sum(wt * (s(1, c) - s(-1, c)) for c, wt in weights.items())
  mag = jnp.abs(gx) + jnp.abs(gy)
  m = common.pad_hw(mag, 1, 1, 'constant')
  nb = lambda dy, dx: m[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  ax, ay = jnp.abs(gx), jnp.abs(gy) << _SHIFT
  tg22x = ax * _TG22
  tg67x = tg22x + (ax << (_SHIFT + 1))
  same_sign = (gx ^ gy) >= 0
  peak = jnp.where(
      ay < tg22x, (mag > nb(0, -1)) & (mag >= nb(0, 1)),
      jnp.where(ay > tg67x, (mag > nb(-1, 0)) & (mag >= nb(1, 0)),
                jnp.where(same_sign,
                          (mag > nb(-1, -1)) & (mag > nb(1, 1)),
                          (mag > nb(-1, 1)) & (mag > nb(1, -1)))))
  candidates = peak & (mag > low)
  return hysteresis(candidates & (mag > high), candidates, steps_per_check)


def edge_correlation(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pearson correlation of two bool maps (N, H, W) -> (N,).

  From the exact fractions p_a, p_b, p_ab of set pixels (float32 sums of
  products drifted to 1 + 3e-6 for equal maps under jit): rho = (p_ab -
  p_a p_b) / sqrt(p_a (1 - p_a) p_b (1 - p_b)), 1 for equal maps. Undefined
  when a map is constant: then 1 if the maps are equal, else 0.
  """
  frac = lambda z: jnp.mean(z.astype(jnp.float32), axis=(1, 2))
  pa, pb, pab = frac(a), frac(b), frac(a & b)
  var_a, var_b = pa - pa * pa, pb - pb * pb
  den = jnp.sqrt(var_a * var_b)
  equal = jnp.all(a == b, axis=(1, 2))
  rho = jnp.where(den > 0, (pab - pa * pb) / jnp.where(den > 0, den, 1.0),
                  jnp.where(equal, 1.0, 0.0))
  return jnp.clip(rho, -1.0, 1.0)


def _bin(v: jax.Array, bins: int) -> jax.Array:
  """numpy.histogram2d's bins over [min, max] of each row (N, P).

  A constant row falls in one bin (numpy's middle one, here the first; the
  entropy does not depend on which).
  """
  lo = jnp.min(v, axis=1, keepdims=True)
  span = jnp.max(v, axis=1, keepdims=True) - lo
  index = jnp.floor((v - lo) / jnp.where(span > 0, span, 1.0) * bins)
  return jnp.clip(index.astype(jnp.int32), 0, bins - 1)


def _count(index: jax.Array, length: int) -> jax.Array:
  """Per-row counts of index values in [0, length): (N, P) -> (N, length)."""
  rows = index.shape[0]
  flat = index + length * jnp.arange(rows, dtype=jnp.int32)[:, None]
  counts = jnp.zeros(rows * length, jnp.float32).at[flat.ravel()].add(1.0)
  return counts.reshape(rows, length)


def joint_entropy(a: jax.Array, b: jax.Array, *, bins: int = 10) -> jax.Array:
  """EHS = -sum H log2 H of the raw counts H of numpy.histogram2d(a, b,
  bins) per image; a, b (N, P). Raw counts, not probabilities, as in
  image-similarity-measures, so EHS is negative and grows with P."""
  counts = _count(_bin(a, bins) * bins + _bin(b, bins), bins * bins)
  return -jnp.sum(jnp.where(counts > 0, counts * jnp.log2(
      jnp.where(counts > 0, counts, 1.0)), 0.0), axis=1)


def issm(x, y, *, a: float = 0.3, b: float = 0.5, c: float = 0.7,
         bins: int = 10, low: int = 100, high: int = 200) -> Result:
  """Score 1 - ISSM (Aljanabi et al. 2019, as image-similarity-measures).

  ISSM = (rho EHS (A + B) + e) / (A rho EHS + B EHS + C SSIM + e) with EHS
  the joint-histogram entropy (`joint_entropy`), rho the correlation of
  the Canny edge maps (`canny` of round(255 luminance), thresholds 100 and
  200) and SSIM this module's (Gaussian 11 x 11; image-similarity-measures
  used scikit-image's default 7 x 7 box), all on the luminance; e is
  Euler's number. ISSM is near 1 for identical images (exactly (0.8 EHS +
  e) / (0.8 EHS + 0.7 + e), slightly above 1) and near 0 for images with
  uncorrelated edges, so the score is near 0 and near 1 respectively.
  """
  common.check_pair(x, y)
  n = x.shape[0]
  lx, ly = common.luminance(x), common.luminance(y)
  ehs = joint_entropy(lx.reshape(n, -1), ly.reshape(n, -1), bins=bins)
  # Both images through one Canny: one hysteresis loop, and XLA:CPU ran
  # two computations of the same kind in one program markedly slower.
  gray = jnp.round(jnp.concatenate([lx, ly]) * 255.0).astype(jnp.int32)
  edges = canny(gray, low=low, high=high)
  rho = edge_correlation(edges[:n], edges[n:])
  s = 1.0 - structural.ssim(lx[..., None], ly[..., None]).score
  den = a * rho * ehs + b * ehs + c * s + math.e
  # 1 - num / den as (den - num) / den: ISSM is near 1 for similar images,
  # and float32 1 - ISSM lost a few percent of its value to cancellation.
  return Result((b * ehs * (1.0 - rho) + c * s) / den, None)


def sh(x, y, *, bins: int = 256) -> Result:
  """Score 1 - histogram intersection (Swain and Ballard 1991).

  Each channel's histogram of `bins` equal bins over [0, 1] (values
  outside go to the end bins; bin k holds grey level k of 8-bit data), as
  fractions of the pixels; the intersection sum_b min(h_x(b), h_y(b)) is
  averaged over channels. The score lies in [0, 1], 0 for equal histograms.
  """
  common.check_pair(x, y)
  n, h, w, channels = x.shape
  both = jnp.moveaxis(jnp.concatenate([x, y]), -1, 1).reshape(
      2 * n * channels, h * w)
  index = jnp.clip(jnp.floor(both * bins), 0, bins - 1).astype(jnp.int32)
  hist = _count(index, bins).reshape(2, n, channels, bins) / (h * w)
  inter = jnp.sum(jnp.minimum(hist[0], hist[1]), axis=-1)
  return Result(1.0 - jnp.mean(inter, axis=-1), None)
