"""Oriented line smoothing of anomaly maps: the largest mean along a line.

Thin defects (cracks, scratches) raise the error map only a little per
pixel, by about as much as the texture's grain, but along a long line;
grain does not line up. Averaging the map along a line of the defect's
direction keeps the defect's level and shrinks the grain's by about
sqrt(length / width), so a faint crack stands out where an isotropic blur
of the same area would mix it with its surroundings. The direction is not
known, so `line_filter` takes the maximum over `count` directions evenly
spread over 180 degrees.

Each direction's kernel is an anisotropic Gaussian, sigma `length` px
along the line and `width` px across, truncated at 3 * length px and
normalised to sum 1. The convolution runs through the FFT on device (the
kernel is far too large for a direct convolution at these sizes), with
zeros outside the map, as scipy.signal.fftconvolve(mode='same'): the maps
filtered here are z-maps, where 0 is what good images show, so a line
running off the image counts its missing part as normal. (Reflecting the
map instead doubles the weight of the border pixels; on kolektorsdd it
ranked more good images above defective ones by their borders.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def radius(length: float) -> int:
  """The kernels' half side, px."""
  return max(1, int(math.ceil(3 * length)))


def line_kernels(length: float, width: float, count: int) -> np.ndarray:
  """(count, 2r+1, 2r+1) kernels; kernel k lies along the direction
  k * 180 / count degrees from the column axis (x) towards the row axis
  (y, downwards); each sums to 1."""
  r = radius(length)
  rows, cols = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
  kernels = []
  for k in range(count):
    theta = math.pi * k / count
    along = cols * math.cos(theta) + rows * math.sin(theta)
    across = -cols * math.sin(theta) + rows * math.cos(theta)
    g = np.exp(-0.5 * (along / length) ** 2 - 0.5 * (across / width) ** 2)
    kernels.append(g / g.sum())
  return np.stack(kernels).astype(np.float32)


def line_filter(maps: jax.Array, length: float, width: float,
                count: int) -> jax.Array:
  """Per pixel of (N, H, W) maps, the largest of the `count` line means
  (module doc), zero outside the maps; jit-compatible."""
  kernels = line_kernels(length, width, count)
  r = radius(length)
  _, h, w = maps.shape
  padded = jnp.pad(maps.astype(jnp.float32), ((0, 0), (r, r), (r, r)),
                   mode='constant')
  size = padded.shape[1:]
  spectrum = jnp.fft.rfft2(padded)
  best = None
  # One direction at a time: a running maximum keeps one (N, H+2r, W+2r)
  # product in memory instead of `count` of them.
  for kernel in kernels:
    # The kernel at the top-left corner: circular convolution shifts the
    # output by r, and the r-px zero border on each side keeps the
    # wrap-around out of the kept window (kernels are symmetric under a half turn, so
    # convolution and correlation agree).
    response = jnp.fft.irfft2(spectrum * jnp.fft.rfft2(jnp.asarray(kernel),
                                                       s=size), s=size)
    response = response[:, 2 * r:2 * r + h, 2 * r:2 * r + w]
    best = response if best is None else jnp.maximum(best, response)
  return best.astype(maps.dtype)
