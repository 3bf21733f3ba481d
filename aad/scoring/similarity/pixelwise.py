"""Measures of per-pixel differences: SE, RMSE, PSNR, SRE, SAM, ZNCC, IMED.

All take (x, y) = (input, reconstruction) NHWC batches and return a
`Result` whose score grows with dissimilarity. Colour: SE, RMSE, PSNR, ZNCC
and IMED treat every channel value alike (sums or means over H, W and C);
SRE is per channel, averaged (as image-similarity-measures); SAM is the angle
between the channel vectors of a pixel.
"""

import math

import jax.numpy as jnp
import numpy as np

from aad.scoring import ops
from aad.scoring.similarity import common
from aad.scoring.similarity.common import Result

_AXES = (1, 2, 3)


def se(x, y) -> Result:
  """Squared error: score sum (x - y)^2; map its per-pixel sum over C."""
  common.check_pair(x, y)
  terms = ops.over_channels((x - y) ** 2)
  return Result(jnp.sum(terms, axis=(1, 2)), terms)


def rmse(x, y) -> Result:
  """Root mean squared error over all H W C values; no map (its per-pixel
  form ranks pixels exactly as the SE map does)."""
  common.check_pair(x, y)
  return Result(jnp.sqrt(jnp.mean((x - y) ** 2, axis=_AXES)), None)


def psnr(x, y, *, max_val: float = 1.0, max_db: float = 200.0) -> Result:
  """Score -PSNR, PSNR = 10 log10(max_val^2 / MSE) in dB.

  Args:
    x: inputs (N, H, W, C).
    y: reconstructions, same shape.
    max_val: the peak value MAX (1 for [0, 1] images).
    max_db: PSNR is capped here, so identical images score -max_db rather
      than -inf (the image metrics reject infinite scores). 200 dB is far
      above any float32 difference of [0, 1] images that is not zero.
  """
  common.check_pair(x, y)
  mse = jnp.mean((x - y) ** 2, axis=_AXES)
  db = 10.0 * jnp.log10(max_val**2 / mse)  # +inf where mse == 0.
  return Result(-jnp.minimum(db, max_db), None)


def sre(x, y, *, max_db: float = 200.0) -> Result:
  """Score -SRE, the signal to reconstruction error ratio in dB.

  SRE = 10 log10(mean_c [mean(x_c)^2 / (||x_c - y_c||_2 / (H W))]), the
  form of image-similarity-measures (METHOD.md 5.3; the norm is not
  squared). A channel reconstructed exactly makes its ratio infinite; SRE is
  clipped to [-max_db, max_db] so that the score stays finite.
  """
  common.check_pair(x, y)
  pixels = x.shape[1] * x.shape[2]
  # Over H, then W: on XLA:CPU one reduction over (H, W) that keeps the
  # minor C axis costs about twice the two.
  signal = jnp.mean(jnp.mean(x, axis=1), axis=1) ** 2
  error = jnp.sqrt(jnp.sum(jnp.sum((x - y) ** 2, axis=1), axis=1))
  exact = error == 0
  ratio = jnp.where(exact, jnp.inf,
                    signal * pixels / jnp.where(exact, 1.0, error))
  db = 10.0 * jnp.log10(jnp.mean(ratio, axis=-1))
  return Result(-jnp.clip(db, -max_db, max_db), None)


def sam(x, y) -> Result:
  """Spectral angle mapper, in degrees: map the angle between the channel
  vectors of x and y at each pixel, score its mean.

  The angle is atan2(|x ^ y|, x . y), with |x ^ y|^2 = sum_{i<j}
  (x_i y_j - x_j y_i)^2 (Lagrange's identity), which equals arccos of the
  normalised dot product but is exact for parallel vectors (arccos near 1
  loses half the digits; common.atan2, a polynomial, since XLA:CPU's is a
  scalar call per pixel). A zero vector gives angle 0. For C=1 the angle is
  0 or 180 degrees only (METHOD.md 5.3): 0 throughout for images >= 0.
  """
  common.check_pair(x, y)
  channels = x.shape[-1]
  dot = ops.over_channels(x * y)
  cross = jnp.zeros_like(dot)
  for i in range(channels):
    for j in range(i + 1, channels):
      cross = cross + (x[..., i] * y[..., j] - x[..., j] * y[..., i]) ** 2
  angle = jnp.degrees(common.atan2(jnp.sqrt(cross), dot))
  return Result(jnp.mean(angle, axis=(1, 2)), angle)


def zncc(x, y) -> Result:
  """Score 1 - ZNCC, ZNCC = mean((x - mu_x)(y - mu_y)) / (sigma_x sigma_y)
  over all H W C values; in [0, 2], 0 for y = a x + b with a > 0.

  A constant image has no defined ZNCC; here two constant images correlate
  1 and a constant against a varying one 0 (constancy is tested exactly,
  as max == min, since float32 variances of a flat image are not 0).
  """
  common.check_pair(x, y)
  xc = x - jnp.mean(x, axis=_AXES, keepdims=True)
  yc = y - jnp.mean(y, axis=_AXES, keepdims=True)
  flat_x = jnp.max(x, axis=_AXES) == jnp.min(x, axis=_AXES)
  flat_y = jnp.max(y, axis=_AXES) == jnp.min(y, axis=_AXES)
  var_x = jnp.where(flat_x, 0.0, jnp.mean(xc**2, axis=_AXES))
  var_y = jnp.where(flat_y, 0.0, jnp.mean(yc**2, axis=_AXES))
  cov = jnp.mean(xc * yc, axis=_AXES)
  den = jnp.sqrt(var_x * var_y)
  r = jnp.where(den > 0, cov / jnp.where(den > 0, den, 1.0),
                jnp.where(flat_x & flat_y, 1.0, 0.0))
  return Result(1.0 - jnp.clip(r, -1.0, 1.0), None)


def imed(x, y, *, sigma: float = 1.0, truncate: float = 4.0) -> Result:
  """Squared IMage Euclidean Distance (Wang, Zhang and Feng 2005).

  d^2 = sum_{i,j} g_ij u_i u_j with u = x - y and g_ij = exp(-|p_i -
  p_j|^2 / (2 sigma^2)) / (2 pi sigma^2), summed over channels. Computed
  exactly (up to the kernel cut at `truncate` sigma, whose weights are below
  exp(-8) of the centre's) as sum_i u_i (g * u)_i with g separable and the
  image zero outside its frame. Unlike the standardising-transform shortcut
  ||G_{sigma/sqrt2} * u||^2 this carries no sampling error.

  Returns:
    score d^2 (squared, like SE; d^2 = SE for sigma -> 0 up to the factor
    g(0)), and the map of its per-pixel terms u_i (g * u)_i summed over C,
    which add up to the score but can be negative where residuals of
    opposite sign are neighbours.
  """
  common.check_pair(x, y)
  radius = int(math.ceil(truncate * sigma))
  d = np.arange(-radius, radius + 1)
  taps = np.exp(-d**2 / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
  u = common.planes(x - y)
  smoothed = common.separable_valid(
      common.pad_hw(u, radius, radius, 'constant'), taps)
  terms = ops.over_channels(u * smoothed, axis=1)
  return Result(jnp.sum(terms, axis=(1, 2)), terms)
