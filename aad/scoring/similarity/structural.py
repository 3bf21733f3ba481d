"""Windowed structural measures: SSIM, UIQ and GMSD.

SSIM and UIQ are computed per channel and averaged over channels (as
dm-pix, scikit-image with channel_axis and Wang and Bovik's code do for
colour); GMSD uses the BT.601 luminance of colour images. Their scores are
the means (SSIM, UIQ) or the deviation (GMSD) over the windows that lie
inside the image, as in the papers; the maps are those window values, with
the border pixels, whose windows stick out of the frame, given the value of
the nearest window inside it.

SSIM is written here rather than taken from dm-pix: dm-pix filters its five
local moments one NHWC array at a time, which ran 6-7 times slower on CPU
than filtering them as one stack of planes (aad.scoring.similarity.common); the
tests check it against both dm-pix and scikit-image.
"""

import jax
import jax.numpy as jnp
import numpy as np

from aad.scoring import ops
from aad.scoring.similarity import common
from aad.scoring.similarity.common import Result


def _moments(x, y, taps):
  """Windowed means of x, y, x^2, y^2, xy on planes (N, C, H, W), 'valid'.

  Returns (mean_x, mean_y, var_x, var_y, cov), each (N, C, H', W'). The
  moments are taken of each image less its mean (the same variances, with
  less cancellation in E[z^2] - E[z]^2 in float32). The barrier asks XLA
  not to fuse the filter into each of its many consumers (which recomputes
  it); XLA:CPU drops it before fusing (the same compiled program without
  it, jaxlib 0.10), so on CPU the fusions are steered by how the consumers
  are written (`uiq`, `scoring.image_mean`).
  """
  px, py = common.planes(x), common.planes(y)
  ox = jnp.mean(px, axis=(2, 3), keepdims=True)
  oy = jnp.mean(py, axis=(2, 3), keepdims=True)
  px, py = px - ox, py - oy
  stack = jnp.stack([px, py, px * px, py * py, px * py])
  mx, my, xx, yy, xy = jax.lax.optimization_barrier(
      common.separable_valid(stack, taps))
  return mx + ox, my + oy, xx - mx * mx, yy - my * my, xy - mx * my


def _map_and_score(local: jax.Array, size: int) -> Result:
  """Score 1 - mean of the local values (N, C, H', W'); map 1 - their
  channel mean, edge-padded back to (N, H, W)."""
  before, after = common.window_pad(size)
  mean = ops.over_channels(local, axis=1) / local.shape[1]
  amap = common.pad_hw(1.0 - mean, before, after, 'edge')
  # The mean of all local values, from the channel means already at hand.
  return Result(1.0 - ops.image_mean(mean), amap)


def ssim(x, y, *, max_val: float = 1.0, filter_size: int = 11,
         filter_sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03) -> Result:
  """Score 1 - SSIM (Wang et al. 2004); map 1 - the local SSIM.

  Local SSIM ((2 m_x m_y + C1)(2 s_xy + C2)) / ((m_x^2 + m_y^2 + C1)(s_x^2
  + s_y^2 + C2)) with the paper's defaults: an 11 x 11 Gaussian window of
  sigma 1.5 (population moments) and C1 = (k1 L)^2, C2 = (k2 L)^2 with L =
  max_val. SSIM is its mean over the windows inside the image, as dm-pix's
  and scikit-image's (gaussian_weights=True, use_sample_covariance=False).
  The score lies in [0, 2], 0 for identical images.
  """
  common.check_pair(x, y)
  taps = common.gaussian_taps(filter_size, filter_sigma)
  mx, my, var_x, var_y, cov = _moments(x, y, taps)
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  local = ((2 * mx * my + c1) * (2 * cov + c2)) / (
      (mx * mx + my * my + c1) * (var_x + var_y + c2))
  return _map_and_score(local, filter_size)


def uiq(x, y, *, block_size: int = 8) -> Result:
  """Score 1 - Q, the universal image quality index (Wang and Bovik 2002).

  Q is the mean over block_size^2 sliding windows (step 1) of
  4 s_xy m_x m_y / ((s_x^2 + s_y^2)(m_x^2 + m_y^2)), SSIM with C1 = C2 = 0.
  As in the authors' img_qi.m, a window where both images are flat gets
  2 m_x m_y / (m_x^2 + m_y^2) (1 if both are also 0). Flatness is tested
  exactly (common.flat_windows): in float32 the variance of a flat window
  is not 0.
  The map is 1 - Q per window, averaged over channels.
  """
  common.check_pair(x, y)
  taps = np.full(block_size, 1.0 / block_size)
  mx, my, var_x, var_y, cov = _moments(x, y, taps)

  # Both images in one stack: as two separate computations in one program
  # XLA:CPU ran UIQ several times slower.
  flat_x, flat_y = common.flat_windows(
      jnp.stack([common.planes(x), common.planes(y)]), block_size)
  var_x = jnp.where(flat_x, 0.0, jnp.maximum(var_x, 0.0))
  var_y = jnp.where(flat_y, 0.0, jnp.maximum(var_y, 0.0))
  cov = jnp.where(flat_x | flat_y, 0.0, cov)
  den_var, den_mean = var_x + var_y, mx * mx + my * my
  # Three cases: both denominators non-zero, 4 s_xy m_x m_y / (den_var
  # den_mean); flat, 2 m_x m_y / den_mean; a zero denominator left, 1. As
  # one division whose operands pick the case: with the selects after the
  # division, XLA:CPU fused them, and the box filters before them, into
  # each consumer of Q, recomputing them (the same values).
  varies = den_var != 0
  num = jnp.where(varies, 4.0 * cov, 2.0) * mx * my
  den = jnp.where(varies, den_var * den_mean, den_mean)
  zero = den == 0
  q = jnp.where(zero, 1.0, num) / jnp.where(zero, 1.0, den)
  return _map_and_score(q, block_size)


def _prewitt_magnitude(z: jax.Array) -> jax.Array:
  """|grad z| with the Prewitt kernels / 3, zero outside (conv2 'same')."""
  h, w = z.shape[1:]
  p = common.pad_hw(z, 1, 1, 'constant')
  s = lambda dy, dx: p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  gx = sum(s(r, 1) - s(r, -1) for r in (-1, 0, 1)) / 3.0
  gy = sum(s(1, c) - s(-1, c) for c in (-1, 0, 1)) / 3.0
  return jnp.sqrt(gx * gx + gy * gy)


def gmsd(x, y, *, c: float = 170.0 / 255.0**2) -> Result:
  """Gradient magnitude similarity deviation (Xue et al. 2014).

  Both luminances are averaged 2 x 2 and subsampled (the reference's
  conv2 'same' + (1:2:end), zero-padding an odd last row), their Prewitt
  gradient magnitudes m compared as GMS = (2 m_x m_y + c) / (m_x^2 + m_y^2
  + c), and GMSD is the standard deviation of GMS (the paper's 1/N form; the
  reference's std2 divides by N - 1). c = 170 for 0-255 data is 170/255^2
  for [0, 1] data.

  Returns:
    score GMSD (>= 0, 0 for identical images) and map 1 - GMS, each pixel of
    the half-resolution map repeated 2 x 2.
  """
  common.check_pair(x, y)
  n, h, w, _ = x.shape
  lum = common.luminance(jnp.concatenate([x, y]))
  mag = _prewitt_magnitude(common.matlab_downsample(lum, 2))
  mx, my = mag[:n], mag[n:]
  gms = (2.0 * mx * my + c) / (mx * mx + my * my + c)
  return Result(jnp.std(gms, axis=(1, 2)),
                common.upsample(1.0 - gms, 2, h, w))
