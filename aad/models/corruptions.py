"""Synthetic corruptions: Stain, Gaussian, Scratch, Drops, their mixtures, and
DRAEM-like Perlin blobs.

JAX versions of the noise models of AESc + Stain noise (Collin & De
Vleeschouwer, ICPR 2020), specified in METHOD.md section 2. Each corruption is
a pure function `f(key, image, **params) -> image` on a float32 image in
[0, 1] of shape (H, W, C), C = 1 or 3. The parameters are static Python
numbers (colours in 0..255 grey levels, as in the reference), all randomness
comes from `key`, and no shape depends on a draw, so every function jits and
vmaps. `make` builds one from a config and `corrupt_batch` applies it to a
batch with one key per image.

The differences from the Keras reference are those listed in METHOD.md 2.1
(a)-(f), plus the few explained where they occur (stain_mask, _uniform_int).
"""

import functools
import inspect
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

Corruption = Callable[[jax.Array, jax.Array], jax.Array]

# Variance of the stain / drop texture noise in [0, 1] units: 0.05/255, i.e.
# about 3.6 grey levels of standard deviation (METHOD.md 2.1, step 11).
STAIN_NOISE_VAR = 0.05 / 255
# Standard deviation of each scratch pixel, in grey levels (METHOD.md 2.3).
_SCRATCH_STD = 20.0
# Perlin lattice cells per axis at most (the lattice is static in shape).
MAX_PERLIN_SCALE = 64


def _uniform_int(u, lo, hi):
  """Maps u ~ U[0, 1) to a uniform integer in [lo, hi], ends included.

  All scalar draws of a corruption come from one `jax.random.uniform` vector
  rather than one `jax.random.randint` each: every PRNG call is a threefry
  block that XLA compiles separately, and 20 scalar randint calls compile
  about ten times slower than one vector draw. An empty range gives lo, as
  randint does.
  """
  hi = jnp.maximum(hi, lo)
  return jnp.minimum(lo + jnp.floor(u * (hi - lo + 1)).astype(jnp.int32), hi)


def _texture(key, shape, color, noise_var):
  """Grey level `color` (0..255) plus i.i.d. noise per pixel and channel."""
  noise = math.sqrt(noise_var) * jax.random.normal(key, shape)
  return jnp.clip(color.astype(jnp.float32) / 255 + noise, 0, 1)


def _composite(image, texture, mask):
  """`image (1 - m) + texture m`; pixels with m = 0 stay bit-identical."""
  m = mask[..., None]
  return jnp.clip(image * (1 - m) + texture * m, 0, 1).astype(image.dtype)


@functools.lru_cache(maxsize=None)
def _spline_matrix(k):
  """Maps knot values y to second derivatives M of their periodic spline.

  With unit knot spacing, M[i-1] + 4 M[i] + M[i+1] = 6 (y[i-1] - 2 y[i] +
  y[i+1]), indices mod k. The system depends only on the static k, so it is
  solved once here, in numpy, rather than in every traced call.
  """
  eye = np.eye(k)
  shift = np.roll(eye, 1, axis=1) + np.roll(eye, -1, axis=1)
  return (np.linalg.inv(4 * eye + shift) @ (6 * (shift - 2 * eye))).astype(
      np.float32)


def _periodic_spline(y, t):
  """Periodic cubic spline through (i, y[i]), i = 0..k-1, evaluated at t."""
  k = y.shape[0]
  # Elementwise product and sum rather than a matmul: exact on accelerators
  # whose default float32 matmul precision is reduced.
  m = (jnp.asarray(_spline_matrix(k)) * y[None, :]).sum(axis=1)
  t = jnp.mod(t, k)
  i = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, k - 1)
  j = (i + 1) % k
  u = t - i
  v = 1 - u
  return v * y[i] + u * y[j] + ((v**3 - v) * m[i] + (u**3 - u) * m[j]) / 6


def _blur_matrix(weights, n, radius):
  """(n, n) matrix of a 1-D blur with scipy's 'reflect' border.

  Row i holds the weights of taps i - radius .. i + radius, each folded back
  into the image like scipy's (d c b a | a b c d | d c b a) padding.
  """
  src = np.arange(n)[:, None] + np.arange(-radius, radius + 1)[None, :]
  src %= 2 * n
  src = np.where(src < n, src, 2 * n - 1 - src)
  rows = np.broadcast_to(np.arange(n)[:, None], src.shape)
  return jnp.zeros((n, n), weights.dtype).at[rows, src].add(
      jnp.broadcast_to(weights, src.shape))


def _gaussian_blur(x, sigma, radius):
  """Separable Gaussian blur of a 2-D array with a traced sigma.

  The support is fixed at 2 * radius + 1 taps so that shapes stay static;
  taps beyond scipy's own truncation, int(4 sigma + 0.5), get zero weight.
  Two small matmuls do the blur: on CPU they beat a sum of shifted slices
  several times over.
  """
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  sigma = jnp.maximum(sigma, 1e-3)  # sigma = 0 would divide 0 by 0.
  weights = jnp.exp(-0.5 * (taps / sigma)**2)
  weights = jnp.where(jnp.abs(taps) <= jnp.floor(4 * sigma + 0.5), weights, 0)
  weights = weights / weights.sum()
  blur_rows = _blur_matrix(weights, x.shape[0], radius)
  blur_cols = _blur_matrix(weights, x.shape[1], radius)
  # Full float32 precision: accelerators may default to a reduced one.
  highest = jax.lax.Precision.HIGHEST
  return jnp.matmul(jnp.matmul(blur_rows, x, precision=highest), blur_cols.T,
                    precision=highest)


def _stain_keys(key):
  """(shape key, texture key): `stain_mask` uses the first, `stain` both."""
  return jax.random.split(key)


def stain_mask(key, shape_hw, *, size=(0.01, 0.12), irregularity=0.1,
               blur=0.0, n_points=20, color=(10, 220)):
  """Draws the shape of one stain (METHOD.md 2.1, vectorisable form).

  The stain is the star-shaped region r <= R(phi) around (cx, cy), where
  R = R_ellipse(phi) + S(phi): the exact rotated ellipse plus a periodic
  cubic spline S through n_points radial jitters drawn at equally spaced
  angles. The knots (phi_k, R_ellipse(phi_k) + eps_k) are those of METHOD.md;
  interpolating only the jitter keeps eccentric ellipses exact, which a
  spline through 20 equal-angle knots of the ellipse itself would not.

  Args:
    key: PRNG key (typed or raw); `stain(key, ...)` draws the same mask.
    shape_hw: (H, W) of the image.
    size: semi-axis range as fractions: a (the row radius) is drawn in
      [floor(lo W), floor(hi W)] and b (the column radius) in
      [floor(lo H), floor(hi H)], the reference's convention.
    irregularity: radial jitter U(-d, d) with d = floor(irregularity (a+b)/2).
    blur: Gaussian blur sigma as a fraction of max(a, b); 0 keeps a hard edge.
    n_points: number of control radii K.
    color: inclusive grey-level range (0..255) of the stain colour.

  Returns:
    (mask, params): the float32 (H, W) mask in [0, 1] and a dict of the draws
    'a', 'b', 'cx' (column), 'cy' (row), 'theta0', 'color' (grey level) and
    'sigma' (blur, pixels).
  """
  draws = _stain_draws(key, shape_hw, size, color, n_points)
  mask = _stain_region(draws, (0, 0), shape_hw, irregularity, n_points)
  sigma = blur * jnp.maximum(draws['a'], draws['b'])
  if blur > 0:
    h, w = shape_hw
    max_axis = max(math.floor(size[1] * w), math.floor(size[1] * h))
    mask = _gaussian_blur(mask, sigma, math.ceil(4 * blur * max_axis))
  params = {k: v for k, v in draws.items() if k != 'jitter'}
  params['sigma'] = jnp.asarray(sigma, jnp.float32)
  return mask, params


def _stain_draws(key, shape_hw, size, color, n_points):
  """The random draws of one stain (see `stain_mask`), and its n_points
  jitter uniforms as 'jitter'."""
  h, w = shape_hw
  u = jax.random.uniform(_stain_keys(key)[0], (6 + n_points,))
  a = _uniform_int(u[1], math.floor(size[0] * w), math.floor(size[1] * w))
  b = _uniform_int(u[2], math.floor(size[0] * h), math.floor(size[1] * h))
  r_max = jnp.maximum(a, b)
  return dict(a=a, b=b, cx=_uniform_int(u[4], r_max, w - r_max),
              cy=_uniform_int(u[5], r_max, h - r_max),
              theta0=2 * np.pi * u[3], color=_uniform_int(u[0], *color),
              jitter=u[6:])


def _stain_window(shape_hw, size, irregularity):
  """(rows, cols) of a window centred on the stain that holds all of it.

  The radius is at most max(a, b) plus the spline through jitters in
  [-delta, delta], delta <= irregularity max(a, b); a periodic cubic
  spline through uniform knots stays within 1.55 times its largest knot
  value (its Lebesgue constant), 2 is used.
  """
  h, w = shape_hw
  axis = max(math.floor(size[1] * w), math.floor(size[1] * h), 1)
  reach = axis + math.ceil(2 * irregularity * axis) + 1
  return min(h, 2 * reach + 2), min(w, 2 * reach + 2)


def _stain_region(draws, origin, window, irregularity, n_points):
  """The hard-edged (0/1) mask of the stain of `draws` on the `window`
  (rows, cols) pixels whose top-left pixel is `origin` (traced ints); each
  pixel's value is the same whatever the window."""
  a, b, cx, cy = draws['a'], draws['b'], draws['cx'], draws['cy']
  rows = (origin[0] + jnp.arange(window[0])).astype(jnp.float32)
  cols = (origin[1] + jnp.arange(window[1])).astype(jnp.float32)
  dy = rows[:, None] - cy
  dx = cols[None, :] - cx
  r = jnp.hypot(dx, dy)
  # Angle from the ellipse's column axis; the row radius a lies at pi/2.
  phi = jnp.arctan2(dy, dx) - draws['theta0']
  # A zero radius (images under 100 px) is drawn as a 1-px-wide line, like the
  # reference's degenerate perimeter, instead of an empty mask.
  ra, rb = jnp.maximum(a, 0.5), jnp.maximum(b, 0.5)
  r_ellipse = ra * rb / jnp.hypot(ra * jnp.cos(phi), rb * jnp.sin(phi))
  delta = jnp.floor(irregularity * (a + b) / 2)
  eps = delta * (2 * draws['jitter'] - 1)
  radius = r_ellipse + _periodic_spline(eps, phi * n_points / (2 * np.pi))
  return (r <= jnp.maximum(radius, 0)).astype(jnp.float32)


def stain(key, image, *, size=(0.01, 0.12), color=(10, 220),
          irregularity=0.1, blur=0.0, noise_var=STAIN_NOISE_VAR, n_points=20):
  """Pastes one grey, slightly noisy elliptic stain (METHOD.md 2.1).

  Args:
    key: PRNG key.
    image: float32 (H, W, C) in [0, 1].
    size, color, irregularity, blur, n_points: see `stain_mask`.
    noise_var: variance, in [0, 1] units, of the texture noise drawn
      independently per pixel and channel.

  Returns:
    `image (1 - m) + s m` with s = clip(color/255 + N(0, noise_var)).
  """
  if blur > 0:  # The blurred edge reaches further: the whole image.
    mask, params = stain_mask(key, image.shape[:2], size=size,
                              irregularity=irregularity, blur=blur,
                              n_points=n_points, color=color)
    texture = _texture(_stain_keys(key)[1], image.shape, params['color'],
                       noise_var)
    return _composite(image, texture, mask)
  # Only a window around the stain is computed and pasted back: the mask,
  # the noise and the blend of the rest of the image would be 0 / unchanged
  # (about a tenth of a 256 px training step went to the whole image).
  h, w = image.shape[:2]
  draws = _stain_draws(key, (h, w), size, color, n_points)
  win = _stain_window((h, w), size, irregularity)
  origin = (jnp.clip(draws['cy'] - win[0] // 2, 0, h - win[0]),
            jnp.clip(draws['cx'] - win[1] // 2, 0, w - win[1]))
  mask = _stain_region(draws, origin, win, irregularity, n_points)
  start = origin + (0,)
  patch = jax.lax.dynamic_slice(image, start, win + image.shape[2:])
  texture = _texture(_stain_keys(key)[1], patch.shape, draws['color'],
                     noise_var)
  return jax.lax.dynamic_update_slice(
      image, _composite(patch, texture, mask), start)


def gaussian(key, image, *, var=0.01):
  """Adds i.i.d. N(0, var) noise and clips to [0, 1] (METHOD.md 2.2).

  This is the intended, paper-era behaviour, not the wrap-around of the
  reference's HEAD.
  """
  noise = math.sqrt(var) * jax.random.normal(key, image.shape, image.dtype)
  return jnp.clip(image + noise, 0, 1)


def _dilate3(mask):
  """3x3 binary dilation with zero padding."""
  h, w = mask.shape
  p = jnp.pad(mask, 1)
  return functools.reduce(jnp.logical_or, [
      p[i:i + h, j:j + w] for i in range(3) for j in range(3)])


def scratch(key, image, *, color=(150, 150)):
  """Draws one line, sine or square-root scratch (METHOD.md 2.3).

  The curve is sampled at every 0.1 of its parameter up to the largest
  possible length, max(H, W)/4, with the samples past the drawn length or
  outside the image masked out; each kept point paints its 3x3 neighbourhood
  with N(color, 20^2) grey levels, equal across channels.

  Args:
    key: PRNG key.
    image: float32 (H, W, C) in [0, 1].
    color: inclusive grey-level range (0..255) of the scratch colour.

  Returns:
    The scratched image.
  """
  h, w, _ = image.shape
  k_draw, k_noise = jax.random.split(key)
  u = jax.random.uniform(k_draw, (7,))
  color = _uniform_int(u[0], *color)
  x0 = _uniform_int(u[1], w // 6, math.floor(w - w / 6 + 1))
  y0 = _uniform_int(u[2], h // 6, math.floor(h - h / 6 + 1))
  shape = _uniform_int(u[3], 0, 2)  # line, sine, root.
  direction = _uniform_int(u[4], 0, 3)  # up, down, right, left.
  # 'up' and 'down' advance along columns over Lx, the others along rows.
  along_cols = direction < 2
  length = jnp.where(along_cols, _uniform_int(u[5], x0, w),
                     _uniform_int(u[6], y0, h)) / 4
  j = jnp.arange(math.ceil(10 * max(h, w) / 4) + 1)
  valid = j < 10 * length  # t = 0, 0.1, ... < length, as np.arange.
  t = jnp.where(direction % 2 == 0, 1.0, -1.0) * j / 10
  f = jnp.stack([2 * t, 16 * jnp.sin(jnp.deg2rad(4 * t)),
                 10 * jnp.sqrt(jnp.abs(t))])[shape]
  along = jnp.trunc(t).astype(jnp.int32)
  across = jnp.trunc(f).astype(jnp.int32)
  col = x0 + jnp.where(along_cols, along, across)
  row = y0 + jnp.where(along_cols, across, along)
  inside = valid & (row >= 0) & (row < h) & (col >= 0) & (col < w)
  # Dropped points are sent out of range, where the scatter ignores them.
  row = jnp.where(inside, row, h)
  mask = jnp.zeros((h, w), bool).at[row, col].set(True, mode='drop')
  value = color + _SCRATCH_STD * jax.random.normal(k_noise, (h, w, 1))
  value = jnp.clip(value / 255, 0, 1)
  return jnp.where(_dilate3(mask)[..., None], value, image).astype(image.dtype)


def drops(key, image, *, size=(0.01, 0.02), color=(220, 220), nb=10,
          spacing=0.1):
  """Pastes a cluster of nb disks of one radius (METHOD.md 2.4).

  Args:
    key: PRNG key.
    image: float32 (H, W, C) in [0, 1].
    size: radius range as fractions of W; r = U_int[lo W, hi W] + 1.
    color: inclusive grey-level range (0..255) of the drop colour.
    nb: number of disks.
    spacing: disk centres scatter around the cluster centre with standard
      deviation spacing r / 10 (so the defaults give one disk).

  Returns:
    The image with the drops, textured like a stain, composited in.
  """
  h, w, _ = image.shape
  k_draw, k_centres, k_noise = jax.random.split(key, 3)
  u = jax.random.uniform(k_draw, (4,))
  color = _uniform_int(u[0], *color)
  r = _uniform_int(u[1], math.floor(size[0] * w), math.floor(size[1] * w)) + 1
  margin = (math.log(nb) + 5) * r
  lo = jnp.floor(margin).astype(jnp.int32)
  cx = _uniform_int(u[2], lo, jnp.floor(w - margin).astype(jnp.int32))
  cy = _uniform_int(u[3], lo, jnp.floor(h - margin).astype(jnp.int32))
  centres = jnp.stack([cy, cx]).astype(jnp.float32) + (
      spacing * r / 10 * jax.random.normal(k_centres, (nb, 2)))
  rows = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  cols = jnp.arange(w, dtype=jnp.float32)[None, None, :]
  d2 = ((rows - centres[:, 0, None, None])**2 +
        (cols - centres[:, 1, None, None])**2)
  mask = (d2 < r**2).any(axis=0).astype(jnp.float32)
  texture = _texture(k_noise, image.shape, color, STAIN_NOISE_VAR)
  return _composite(image, texture, mask)


def branch_index(key, probs: Sequence[float]):
  """Draws a mixture component: i with probability probs[i].

  Args:
    key: PRNG key.
    probs: probabilities of all components but the last, which takes the
      remainder.

  Returns:
    int32 index in [0, len(probs)].
  """
  if min(probs) < 0 or sum(probs) > 1 + 1e-9:
    raise ValueError(f'mixture probabilities {tuple(probs)} are not valid')
  u = jax.random.uniform(key, ())
  return jnp.sum(u >= np.cumsum(probs)).astype(jnp.int32)


def structural(key, image, *, p_stain=0.6, p_scratch=0.2, color=(10, 220),
               stain_blur=0.15):
  """Stain, scratch or drops with probabilities p_stain, p_scratch, rest.

  The paper-era mix of METHOD.md 2.5 (0.6 / 0.2 / 0.2), not HEAD's swapped
  one. The component is `branch_index(k0, (p_stain, p_scratch))` and it is
  applied with k1, where k0, k1 = jax.random.split(key).
  """
  k_branch, k_apply = jax.random.split(key)
  branches = (functools.partial(stain, color=color, blur=stain_blur),
              functools.partial(scratch, color=color),
              functools.partial(drops, color=color))
  # Under vmap the switch becomes a select over all branches; under jit alone
  # only the drawn branch runs.
  index = branch_index(k_branch, (p_stain, p_scratch))
  return jax.lax.switch(index, branches, k_apply, image)


def stain_or_gaussian(key, image, *, p_stain=0.6, gaussian_var=0.1,
                      stain_blur=0.15):
  """Blurred stain with probability p_stain, else Gaussian (METHOD.md 2.5).

  Keys are split as in `structural`; the components are 0 = stain and
  1 = gaussian.
  """
  k_branch, k_apply = jax.random.split(key)
  branches = (functools.partial(stain, blur=stain_blur),
              functools.partial(gaussian, var=gaussian_var))
  index = branch_index(k_branch, (p_stain,))
  return jax.lax.switch(index, branches, k_apply, image)


def perlin_noise(key, shape_hw, scale):
  """2-D Perlin gradient noise of shape (H, W), values in about [-1, 1].

  `scale` (traced, >= 1) is the number of lattice cells along each axis
  (rows, cols); the lattice has a fixed MAX_PERLIN_SCALE + 1 points per
  axis so that shapes stay static whatever scale is drawn.
  """
  h, w = shape_hw
  n = MAX_PERLIN_SCALE + 1
  angles = 2 * np.pi * jax.random.uniform(key, (n, n))
  grads = jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
  y = jnp.arange(h, dtype=jnp.float32) * scale[0] / h
  x = jnp.arange(w, dtype=jnp.float32) * scale[1] / w
  yi = jnp.clip(jnp.floor(y).astype(jnp.int32), 0, n - 2)
  xi = jnp.clip(jnp.floor(x).astype(jnp.int32), 0, n - 2)
  yf, xf = (y - yi)[:, None], (x - xi)[None, :]

  def corner(dy, dx):
    g = grads[(yi + dy)[:, None], (xi + dx)[None, :]]
    return g[..., 0] * (yf - dy) + g[..., 1] * (xf - dx)

  def fade(t):
    return t * t * t * (t * (t * 6 - 15) + 10)

  u, v = fade(yf), fade(xf)
  top = corner(0, 0) * (1 - v) + corner(0, 1) * v
  bottom = corner(1, 0) * (1 - v) + corner(1, 1) * v
  return np.sqrt(2) * (top * (1 - u) + bottom * u)


def perlin_mask(key, shape_hw, *, scale=(1, 32), threshold=0.5):
  """An irregular blob mask (DRAEM's anomaly shape): Perlin noise of a scale
  drawn log-uniformly in `scale` per axis, thresholded at `threshold`.

  Returns:
    float32 (H, W) mask of 0s and 1s.
  """
  if not 1 <= scale[0] <= scale[1] <= MAX_PERLIN_SCALE:
    raise ValueError(f'perlin scale {tuple(scale)} must satisfy 1 <= lo <= '
                     f'hi <= {MAX_PERLIN_SCALE}')
  k_scale, k_noise = jax.random.split(key)
  lo, hi = np.log(scale[0]), np.log(scale[1])
  s = jnp.exp(lo + (hi - lo) * jax.random.uniform(k_scale, (2,)))
  return (perlin_noise(k_noise, shape_hw, s) > threshold).astype(jnp.float32)


def band(shape_hw, centre, angle, length, width, bend=0.0, period=1.0,
         phase=0.0):
  """A thin band around a curve (a crack or scratch shape), as a mask.

  Pixel centres (y, x) are taken to the frame of the curve: `along` from
  `centre` in the direction `angle` (radians, from the x axis towards y),
  `across` perpendicular to it. A pixel is in the band where |along| <
  length / 2 and |across - bend * sin(2 pi along / period + phase)| <
  width / 2: with bend 0, a rectangle of `length` x `width` px.

  Returns:
    float32 (H, W) mask of 0s and 1s.
  """
  h, w = shape_hw
  y = jnp.arange(h, dtype=jnp.float32)[:, None] - centre[0]
  x = jnp.arange(w, dtype=jnp.float32)[None, :] - centre[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  along = x * cos + y * sin
  across = -x * sin + y * cos
  offset = bend * jnp.sin(2 * jnp.pi * along / period + phase)
  inside = ((jnp.abs(along) < length / 2)
            & (jnp.abs(across - offset) < width / 2))
  return inside.astype(jnp.float32)


def line_mask(key, shape_hw, *, length=(0.25, 1.0), width=(1.0, 4.0),
              bend=(0.0, 0.1)):
  """A random crack- or scratch-like mask (`band`): centre uniform in the
  image, direction uniform, length a fraction drawn in `length` of the
  image's shorter side, width drawn in `width` px, bent by a sine of
  amplitude a fraction drawn in `bend` of the length, over one or two
  periods of it.

  Returns:
    float32 (H, W) mask of 0s and 1s.
  """
  h, w = shape_hw
  u = jax.random.uniform(key, (7,))
  side = min(h, w)
  size = (length[0] + (length[1] - length[0]) * u[3]) * side
  return band(
      shape_hw, (u[0] * h, u[1] * w), u[2] * jnp.pi, size,
      width[0] + (width[1] - width[0]) * u[4],
      bend=(bend[0] + (bend[1] - bend[0]) * u[5]) * size,
      period=size / (1 + u[6]), phase=2 * jnp.pi * u[6])


def perlin(key, image, *, scale=(1, 32), threshold=0.5, opacity=(0.2, 1.0),
           gain=(0.5, 1.5), shift=(-0.25, 0.25), p_clean=0.0, p_smooth=0.0,
           smooth_sigma=(1, 3)):
  """DRAEM-like corruption: a Perlin-noise blob mask filled with the same
  image's own texture from elsewhere, changed in contrast and level.

  The fill is the image rolled by a random offset (and flipped at random),
  times `gain` plus `shift`, both drawn uniformly, blended over the image
  with an opacity drawn in `opacity`. DRAEM fills its masks with external
  texture photographs; a corruption sees one image at a time, so the
  texture comes from elsewhere in it: irregular regions that are out of
  place in contrast, level and structure, whatever the material.

  Args:
    key: PRNG key.
    image: float32 (H, W, C) in [0, 1].
    scale: Perlin lattice cells per axis, drawn log-uniformly in this
      range (small = large blobs, large = small ones).
    threshold: noise level above which a pixel is in the mask (the noise
      lies in about [-1, 1]; DRAEM uses 0.5).
    opacity: range of the fill's opacity (1 = replaced).
    gain, shift: ranges of the fill's contrast factor and level shift
      ([0, 1] units).
    p_clean: probability of returning the image unchanged.
    p_smooth: probability that the fill is the image itself smoothed by a
      Gaussian of sigma drawn in `smooth_sigma` px (texture lost, as under
      a smudge or wear) instead of its displaced texture.

  Returns:
    The corrupted image, float32 (H, W, C) in [0, 1].
  """
  h, w = image.shape[:2]
  k_mask, k_draw = jax.random.split(key)
  mask = perlin_mask(k_mask, (h, w), scale=scale, threshold=threshold)
  u = jax.random.uniform(k_draw, (7,))
  fill = _displaced(image, u[:5], gain, shift)
  if p_smooth > 0:
    # Draws of their own: with p_smooth 0 the images stay those of before.
    v = jax.random.uniform(jax.random.fold_in(k_draw, 1), (2,))
    fill = jnp.where(v[0] < p_smooth,
                     _smoothed(image, v[1], smooth_sigma), fill)
  alpha = opacity[0] + (opacity[1] - opacity[0]) * u[5]
  mask = mask * alpha * (u[6] >= p_clean)
  return _composite(image, jnp.clip(fill, 0, 1), mask)


def _smoothed(image, u, smooth_sigma):
  """The image blurred per channel by a Gaussian whose sigma (px) is drawn
  in the range `smooth_sigma` by the uniform draw `u`."""
  sigma = smooth_sigma[0] + (smooth_sigma[1] - smooth_sigma[0]) * u
  radius = int(math.floor(4 * smooth_sigma[1] + 0.5))
  return jnp.stack([_gaussian_blur(image[..., i], sigma, radius)
                    for i in range(image.shape[-1])], axis=-1)


def _displaced(image, u, gain, shift):
  """The image rolled by a random offset, flipped at random, times a gain
  plus a shift drawn in their ranges; `u` holds five uniform draws."""
  h, w = image.shape[:2]
  fill = jnp.roll(image, (jnp.floor(u[0] * h).astype(jnp.int32),
                          jnp.floor(u[1] * w).astype(jnp.int32)), (0, 1))
  fill = jnp.where(u[2] < 0.5, fill, fill[::-1, ::-1])
  return (gain[0] + (gain[1] - gain[0]) * u[3]) * fill + (
      shift[0] + (shift[1] - shift[0]) * u[4])


def procedural_texture(key, shape_hw, channels, *, scale=(2, 64)):
  """A foreign texture: Perlin noise of a scale drawn log-uniformly in
  `scale` per axis, mapped per channel onto a random range of levels, with
  a finer octave on top. Nothing is read from disk, so any material gets
  fills unlike its own.

  Returns:
    float32 (H, W, channels) in [0, 1].
  """
  k_scale, k_coarse, k_fine, k_levels = jax.random.split(key, 4)
  lo, hi = np.log(scale[0]), np.log(scale[1])
  s = jnp.exp(lo + (hi - lo) * jax.random.uniform(k_scale, (2,)))
  noise = (perlin_noise(k_coarse, shape_hw, s) + 0.5 * perlin_noise(
      k_fine, shape_hw, jnp.minimum(2 * s, MAX_PERLIN_SCALE)))
  t = jnp.clip(0.5 + noise / 3, 0, 1)[..., None]
  levels = jax.random.uniform(k_levels, (2, channels))
  return levels[0] + (levels[1] - levels[0]) * t


def perlin_anomaly(key, image, *, scale=(1, 32), threshold=0.5,
                   opacity=(0.2, 1.0), gain=(0.5, 1.5),
                   shift=(-0.25, 0.25), p_anomaly=0.5, p_foreign=0.5,
                   p_smooth=0.0, texture_scale=(2, 64), smooth_sigma=(1, 3),
                   p_line=0.0, line_length=(0.25, 1.0),
                   line_width=(1.0, 4.0), line_bend=(0.0, 0.1)):
  """DRAEM's simulated anomaly, with its mask: a Perlin blob mask (as
  `perlin`), or with probability `p_line` a thin bent band (`line_mask`
  with `line_length`, `line_width`, `line_bend`: a crack or scratch, which
  blobs do not resemble), filled, with an opacity drawn in `opacity`, by
  a foreign procedural texture (probability `p_foreign`), by the image itself
  smoothed with a Gaussian of sigma drawn in `smooth_sigma` px (probability
  `p_smooth`: texture lost, as under a smudge or wear) or else by the
  image's own texture displaced and changed in contrast and level (as
  `perlin`).

  Returns:
    float32 (H, W, C + 1): the corrupted image, then the binary mask of
    where it was changed (all 0 with probability 1 - p_anomaly), the target
    of a segmentation network.
  """
  h, w, c = image.shape
  k_mask, k_draw, k_texture = jax.random.split(key, 3)
  mask = perlin_mask(k_mask, (h, w), scale=scale, threshold=threshold)
  if p_line > 0:
    # Draws of their own: with p_line 0 the images stay those of before.
    k_line, k_which = jax.random.split(jax.random.fold_in(k_mask, 1))
    mask = jnp.where(jax.random.uniform(k_which) < p_line, line_mask(
        k_line, (h, w), length=line_length, width=line_width,
        bend=line_bend), mask)
  u = jax.random.uniform(k_draw, (9,))
  mask = mask * (u[6] < p_anomaly)
  # Fills whose probability is 0 are not computed (the draws stay the
  # same): each costs a pass over the image at every training step.
  fill = _displaced(image, u[:5], gain, shift)
  if p_smooth > 0:
    fill = jnp.where(u[7] < p_foreign + p_smooth,
                     _smoothed(image, u[8], smooth_sigma), fill)
  if p_foreign > 0:
    fill = jnp.where(u[7] < p_foreign, procedural_texture(
        k_texture, (h, w), c, scale=texture_scale), fill)
  alpha = opacity[0] + (opacity[1] - opacity[0]) * u[5]
  out = _composite(image, jnp.clip(fill, 0, 1), mask * alpha)
  return jnp.concatenate([out, mask[..., None].astype(out.dtype)], axis=-1)


def none(key, image):
  """The identity: no corruption."""
  del key
  return image


CORRUPTIONS: dict[str, Callable[..., jax.Array]] = {
    'stain': stain,
    'gaussian': gaussian,
    'scratch': scratch,
    'drops': drops,
    'structural': structural,
    'stain_or_gaussian': stain_or_gaussian,
    'perlin': perlin,
    'none': none,
}


def make(name: str, params: Mapping[str, Any] | None = None) -> Corruption:
  """Binds a registered corruption to its parameters.

  Args:
    name: a key of `CORRUPTIONS`.
    params: keyword parameters of that corruption (static Python values).

  Returns:
    `fn(key, image) -> image`.

  Raises:
    ValueError: for an unknown name or parameter.
  """
  if name not in CORRUPTIONS:
    raise ValueError(f'unknown corruption {name!r}; valid names: '
                     f'{", ".join(sorted(CORRUPTIONS))}')
  fn = CORRUPTIONS[name]
  params = dict(params or {})
  valid = [p.name for p in inspect.signature(fn).parameters.values()
           if p.kind == inspect.Parameter.KEYWORD_ONLY]
  unknown = sorted(set(params) - set(valid))
  if unknown:
    raise ValueError(f'unknown parameter(s) {", ".join(unknown)} for '
                     f'corruption {name!r}; valid keys: '
                     f'{", ".join(valid) or "(none)"}')
  return functools.partial(fn, **params)


def from_config(config) -> Corruption:
  """The corruption of a `config.corruption` block, with the parameters of
  its sub-block of the same name."""
  params = config.get(config.name)
  return make(config.name, params.to_dict() if params else {})


def corrupt_batch(fn: Corruption, key: jax.Array, images: jax.Array,
                  global_indices: jax.Array) -> jax.Array:
  """Corrupts each image with its own key, fold_in(key, global index).

  Keying on the global index makes each image's corruption independent of
  how the batch is split across devices or hosts.

  Args:
    fn: `fn(key, image) -> image`, e.g. from `make`.
    key: step key, typed (jax.random.key) or raw uint32.
    images: (B, H, W, C) float32 in [0, 1].
    global_indices: (B,) integer index of each image in the global batch.

  Returns:
    The corrupted (B, H, W, C) images.
  """
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      key, jnp.asarray(global_indices))
  return jax.vmap(fn)(keys, images)


def defaults() -> ml_collections.ConfigDict:
  """config.corruption: the training-input noise and every corruption's
  parameters (the block of the same name; grey levels 0..255)."""
  c = ml_collections.ConfigDict()
  # Training-input noise: stain, gaussian, scratch, drops, structural,
  # stain_or_gaussian or none (aad/models/corruptions.py, METHOD.md 2). The block
  # of the same name holds its parameters; grey levels are 0..255.
  c.name = 'stain'
  c.stain = ml_collections.ConfigDict(dict(
      size=(0.01, 0.12),     # semi-axes, fraction of width / height
      color=(10, 220),       # grey level range (inclusive)
      irregularity=0.1,      # contour jitter, fraction of mean semi-axis
      # Edge blur sigma, fraction of the larger semi-axis: 0 is the
      # reference's "Stain" default (METHOD.md Q2), 0.15 its "StainBlur".
      blur=0.0,
      noise_var=0.05 / 255,  # texture noise variance, [0, 1] units
      n_points=20))          # contour control points
  c.gaussian = ml_collections.ConfigDict(dict(
      var=0.01))             # noise variance, [0, 1] units
  c.scratch = ml_collections.ConfigDict(dict(
      color=(150, 150)))     # grey level range
  c.drops = ml_collections.ConfigDict(dict(
      size=(0.01, 0.02),     # radius range, fraction of width
      color=(220, 220),      # grey level range
      nb=10,                 # disks per cluster
      spacing=0.1))          # disk centre spread, fraction of radius / 10
  c.structural = ml_collections.ConfigDict(dict(
      p_stain=0.6, p_scratch=0.2,  # the rest is drops
      color=(10, 220), stain_blur=0.15))
  c.stain_or_gaussian = ml_collections.ConfigDict(dict(
      p_stain=0.6, gaussian_var=0.1, stain_blur=0.15))

  # DRAEM-like Perlin blobs filled with the image's own texture from
  # elsewhere, changed in contrast (gain) and level (shift, [0, 1] units).
  c.perlin = ml_collections.ConfigDict(dict(
      scale=(1, 32),         # Perlin lattice cells per axis, log-uniform
      threshold=0.5,         # noise level above which a pixel is masked
      opacity=(0.2, 1.0),    # fill opacity range
      gain=(0.5, 1.5), shift=(-0.25, 0.25),
      p_clean=0.0,           # probability of no corruption
      # Share of fills by the image smoothed (texture lost: smudges, wear)
      # and the range of that Gaussian's sigma, px.
      p_smooth=0.0, smooth_sigma=(1, 3)))
  return c
