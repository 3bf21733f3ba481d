"""FSIM (Zhang, Zhang, Mou and Zhang 2011) and its phase congruency.

Follows the authors' FeatureSIM.m and the phasecong2.m shipped with it
(Kovesi's phase congruency without the frequency-spread weighting): 4
scales x 4 orientations of log-Gabor filters built in the Fourier domain,
minimum wavelength 6, scale factor 2, sigma_f/f0 = 0.55, angular sigma
pi / 4 / 1.2, noise threshold k = 2 (divided by 1.7), epsilon 1e-4.

Colour: phase congruency (PC) and the gradient magnitude (GM) use the
BT.601 luminance; for C=3 the score is FSIMc, which multiplies the local
similarity by (S_I S_Q)^0.03 of the YIQ chrominance (`chroma=False` gives
the luminance-only FSIM). Everything runs on the 0-255 scale the paper's
constants were set for (T2 = 160, T3 = T4 = 200, epsilon): inputs in [0, 1]
are multiplied by `scale` = 255.

Cost: the filter bank is built once per image size (NumPy, cached) and
enters the traced function as constants; per image it takes one fft2 and 16
complex ifft2 (the responses are complex, so rfft2 only fits the forward
transform, and the full spectrum is cheaper to get by fft2). The median
that estimates the noise is found by radix selection on the float bits,
three histogram passes instead of a sort (XLA:CPU sorts 65536 floats in
~13 ms) or a 31-pass bisection (`_median`).
On the 2-core test CPU the 512 ifft2 of a (16, 256, 256) pair of batches
take ~0.25 s run one image pair at a time (~0.4-0.5 s as one batch), the
floor of FSIM's cost at that size. XLA:CPU's FFT thunk gives DUCC no
thread pool, so each transform runs on one core; the 16 inverse
transforms of a chunk run side by side only because they sit in a
conditional's branch (`phase_congruency`), which keeps buffer assignment
from chaining them. The median's scatters are single-threaded (README
"Comparing scorers").
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from aad.scoring.similarity import common
from aad.scoring.similarity.common import Result


def _frequency_grid(n: int) -> np.ndarray:
  """phasecong2's normalised frequencies along an axis of n samples."""
  if n % 2:
    return (np.arange(n) - (n - 1) / 2) / max(n - 1, 1)
  return (np.arange(n) - n // 2) / n


@functools.lru_cache(maxsize=32)
def log_gabor_bank(rows: int, cols: int, *, nscale: int = 4,
                   norient: int = 4, min_wavelength: float = 6.0,
                   mult: float = 2.0, sigma_onf: float = 0.55,
                   d_theta_on_sigma: float = 1.2, k: float = 2.0):
  """The filters (norient, nscale, rows, cols) float32, 0 frequency at [0, 0],
  and per orientation the factor c_o with noise threshold T_o = c_o
  sqrt(median |EO_{scale 1, o}|^2) (phasecong2's noise model, whose terms
  other than the median depend on the filters only)."""
  x, y = np.meshgrid(_frequency_grid(cols), _frequency_grid(rows))
  radius = np.sqrt(x**2 + y**2)
  # Low-pass of radius 0.45 and order 15 against the corners of the FFT.
  lowpass = np.fft.ifftshift(1.0 / (1.0 + (radius / 0.45) ** 30))
  theta = np.fft.ifftshift(np.arctan2(-y, x))
  radius = np.fft.ifftshift(radius)
  radius[0, 0] = 1.0  # log(0) guard; the filters are set to 0 there below.
  log_gabor = []
  for s in range(nscale):
    f0 = 1.0 / (min_wavelength * mult**s)
    g = np.exp(-np.log(radius / f0) ** 2 / (2 * np.log(sigma_onf) ** 2))
    g = g * lowpass
    g[0, 0] = 0.0
    log_gabor.append(g)
  theta_sigma = math.pi / norient / d_theta_on_sigma
  filters = np.empty((norient, nscale, rows, cols))
  factors = np.empty(norient)
  for o in range(norient):
    angle = o * math.pi / norient
    ds = np.sin(theta) * math.cos(angle) - np.cos(theta) * math.sin(angle)
    dc = np.cos(theta) * math.cos(angle) + np.sin(theta) * math.sin(angle)
    spread = np.exp(-np.arctan2(ds, dc) ** 2 / (2 * theta_sigma**2))
    filters[o] = np.stack(log_gabor) * spread
    em_n = np.sum(filters[o, 0] ** 2)
    spatial = np.real(np.fft.ifft2(filters[o])) * math.sqrt(rows * cols)
    sum_an2 = np.sum(spatial**2)
    sum_aiaj = sum(np.sum(spatial[i] * spatial[j])
                   for i in range(nscale) for j in range(i + 1, nscale))
    # T = tau (sqrt(pi/2) + k sqrt(2 - pi/2)) / 1.7 with tau^2 =
    # (median / ln 2 / em_n) (2 sum_an2 + 4 sum_aiaj) / 2.
    tau_per_root_median = math.sqrt(
        (2 * sum_an2 + 4 * sum_aiaj) / (2 * math.log(2) * em_n))
    factors[o] = tau_per_root_median * (
        math.sqrt(math.pi / 2) + k * math.sqrt(2 - math.pi / 2)) / 1.7
  return filters.astype(np.float32), factors


# Radix selection of the median: 11 + 10 + 10 bits of the 31 that a
# non-negative float32 has (the sign is 0), each digit's histogram cut into
# blocks of 32 bins for the search.
_DIGITS = (11, 10, 10)
_BLOCK = 32


def _first_over(counts: jax.Array, remaining: jax.Array):
  """For counts (R, B) and remaining (R,): per row the index of the first
  bin whose running total exceeds `remaining`, the total before that bin
  and the count in it."""
  running = jnp.cumsum(counts, axis=-1)
  index = jnp.sum(running <= remaining[:, None], axis=-1)
  before = jnp.sum(jnp.where(jnp.arange(counts.shape[-1]) < index[:, None],
                             counts, 0), axis=-1)
  at = jnp.take_along_axis(counts, index[:, None], axis=-1)[:, 0]
  return index, before, at


def _median(v: jax.Array) -> jax.Array:
  """Median over the last axis of v >= 0 (the mean of the two middle values
  for an even count, as MATLAB's), exact.

  For non-negative floats the int32 bit patterns are ordered as the values,
  so the order statistic is found digit by digit, most significant first
  (radix selection): a histogram of the next digit over the values that
  share the digits found so far (one scatter-add pass), and the bin where
  the running count passes the wanted rank (searched in blocks of 32 bins:
  XLA:CPU's cumsum over 2048 bins cost more than the pass). Three passes
  replace the 31 counting passes of a bisection on the bits: on the 2-core
  CPU, the medians of 32 images' 4 noise rows took ~2.0 against ~3.6 ms at
  64 x 64 and ~20 against ~81 ms at 256 x 256 (one image pair per step, as
  FSIM runs); XLA's sort of those rows at 64 x 64 took 77 ms.
  """
  n = v.shape[-1]
  lead = v.shape[:-1]
  rows = math.prod(lead)
  v = v.reshape(rows, n)
  bits = jax.lax.bitcast_convert_type(v, jnp.int32)
  remaining = jnp.full((rows,), (n - 1) // 2, jnp.int32)  # The rank sought.
  prefix = jnp.zeros((rows,), jnp.int32)
  row_start = jnp.arange(rows, dtype=jnp.int32)[:, None]
  shift = 31
  for i, width in enumerate(_DIGITS):
    shift -= width
    bins = 1 << width
    flat = ((bits >> shift) & (bins - 1)) + bins * row_start
    if i:
      # Values off the prefix get an index past the end, which the scatter
      # skips ('drop'), cheaper than counting them in a second set of
      # bins, which cost a write each.
      flat = jnp.where((bits >> (shift + width)) == prefix[:, None], flat,
                       rows * bins)
    hist = jnp.zeros(rows * bins, jnp.int32).at[flat.ravel()].add(
        1, mode='drop')
    blocks = hist.reshape(rows, bins // _BLOCK, _BLOCK)
    block, before, _ = _first_over(jnp.sum(blocks, axis=-1), remaining)
    inner = jnp.take_along_axis(blocks, block[:, None, None], axis=1)[:, 0]
    j, before_j, at = _first_over(inner, remaining - before)
    remaining = remaining - before - before_j
    prefix = (prefix << width) | (block * _BLOCK + j)
  lower = jax.lax.bitcast_convert_type(prefix, jnp.float32)
  if n % 2:
    return lower.reshape(lead)
  # The next order statistic: `lower` again if it is repeated (the last
  # bin holds copies of it past the rank), else the smallest value above.
  repeated = at > remaining + 1
  above = jnp.min(jnp.where(bits > prefix[:, None], v, jnp.inf), axis=-1)
  return (0.5 * (lower + jnp.where(repeated, lower, above))).reshape(lead)


def phase_congruency(images: jax.Array, *, nscale: int = 4, norient: int = 4,
                     min_wavelength: float = 6.0, mult: float = 2.0,
                     sigma_onf: float = 0.55, d_theta_on_sigma: float = 1.2,
                     k: float = 2.0, epsilon: float = 1e-4,
                     noise_stride: int = 1) -> jax.Array:
  """phasecong2's phase congruency of each (H, W) image of (B, H, W).

  Args:
    images: (B, H, W) float; FSIM passes luminance on the 0-255 scale.
    nscale, norient, min_wavelength, mult, sigma_onf, d_theta_on_sigma, k:
      the filter bank and noise threshold of phasecong2 (module doc).
    epsilon: phasecong2's guard against division by zero; here it also
      guards the final division (the reference has none there), which only
      matters where there is no signal at all.
    noise_stride: the noise median is taken over every noise_stride-th row
      and column. 1 is the reference. When the median was a 31-pass
      bisection it cost about a third of FSIM on CPU at 256 x 256 (~175 of
      ~525 ms per batch of 16), and 2 (a quarter of the pixels) brought
      FSIM to ~350 ms; the radix selection of `_median` leaves much less
      to save. 2 changed 1 - FSIM by under 0.1 % on smooth random
      128 x 128 images.

  Returns:
    (B, H, W) phase congruency in [0, 1].
  """
  b, rows, cols = images.shape
  filters, factors = log_gabor_bank(
      rows, cols, nscale=nscale, norient=norient,
      min_wavelength=min_wavelength, mult=mult, sigma_onf=sigma_onf,
      d_theta_on_sigma=d_theta_on_sigma, k=k)
  products = _filtered_spectra(images, filters)
  congruency = functools.partial(
      _congruency, factors=factors, nscale=nscale, epsilon=epsilon,
      noise_stride=noise_stride)
  if not common.cpu_layout(b):
    return congruency(products)
  # On XLA:CPU the 16 inverse transforms run in a conditional's branch.
  # Its operands (the filtered spectra) are buffers of the enclosing
  # computation, live until the branch ends, so buffer assignment cannot
  # give one transform's output the buffer of another's input. Outside a
  # branch it did, and that write-after-read chained the transforms one
  # after another on one thread; independent, they are ready together and
  # XLA's thunk executor hands half of them to a second thread, with the
  # same values (docs/performance.md). The other branch is exact, not a
  # shortcut: the filters are 0 at frequency 0, so constant images have
  # zero filtered spectra, and every response, threshold and PC is then 0.
  corner = images[:, :1, :1]
  flat = jnp.all(images == corner) & jnp.all(jnp.isfinite(corner))
  return jax.lax.cond(
      flat, lambda p: jnp.zeros((b, rows, cols), jnp.float32), congruency,
      products)


def _filtered_spectra(images: jax.Array, filters: np.ndarray) -> tuple:
  """fft2 of the (B, H, W) images times each (orientation, scale) filter,
  orientation-major: the operands of the inverse transforms."""
  spectrum = jnp.fft.fft2(images.astype(jnp.float32))
  return tuple(spectrum * f for f in filters.reshape(-1, *filters.shape[2:]))


def _congruency(products, *, factors, nscale: int, epsilon: float,
                noise_stride: int) -> jax.Array:
  """Phase congruency from the filtered spectra (orientation-major, as
  `phase_congruency` builds them)."""
  b = products[0].shape[0]
  energies, noise, amplitude = [], [], 0.0
  for o in range(len(products) // nscale):  # A few large steps: a loop.
    # One transform per scale, each response its own (B, H, W) array:
    # cheaper on XLA:CPU than one transform of (B, S, H, W) read back
    # through strided slices, same values; the scales are then added
    # elementwise (XLA:CPU reduces slowly over a non-minor scale axis).
    eo = [jnp.fft.ifft2(p) for p in products[o * nscale:(o + 1) * nscale]]
    even = [jnp.real(r) for r in eo]
    odd = [jnp.imag(r) for r in eo]
    sum_e, sum_o = sum(even), sum(odd)
    amplitude = amplitude + sum(jnp.sqrt(e * e + d * d)
                                for e, d in zip(even, odd))
    # phasecong2's sum over scales of E MeanE + O MeanO - |E MeanO - O
    # MeanE|, with (MeanE, MeanO) = (sum_e, sum_o) / x_energy taken out of
    # the sum: its first two terms add up to sum_e^2 + sum_o^2, and one
    # division is left instead of two maps of means (XLA:CPU materialised
    # both), values within 2e-7.
    power = sum_e**2 + sum_o**2
    x_energy = jnp.sqrt(power) + epsilon
    energies.append((power - sum(jnp.abs(e * sum_o - d * sum_e)
                                 for e, d in zip(even, odd))) / x_energy)
    sample = (even[0] ** 2 + odd[0] ** 2)[:, ::noise_stride, ::noise_stride]
    noise.append(sample.reshape(b, -1))
  median = _median(jnp.stack(noise, axis=1))  # (B, O)
  threshold = jnp.asarray(factors, jnp.float32) * jnp.sqrt(median)
  energy = sum(jnp.maximum(e - threshold[:, o, None, None], 0.0)
               for o, e in enumerate(energies))
  return energy / (amplitude + epsilon)


def _scharr_magnitude(z: jax.Array) -> jax.Array:
  """|grad z| with FSIM's Scharr kernels / 16, zero outside (conv2 'same')."""
  h, w = z.shape[1:]
  p = common.pad_hw(z, 1, 1, 'constant')
  s = lambda dy, dx: p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  weights = {-1: 3.0, 0: 10.0, 1: 3.0}
  gx = sum(wt * (s(r, 1) - s(r, -1)) for r, wt in weights.items()) / 16.0
  gy = sum(wt * (s(1, c) - s(-1, c)) for c, wt in weights.items()) / 16.0
  return jnp.sqrt(gx * gx + gy * gy)


def _similarity(a, b, t):
  return (2.0 * a * b + t) / (a * a + b * b + t)


def fsim(x, y, *, chroma: bool = True, scale: float = 255.0,
         t1: float = 0.85, t2: float = 160.0, t3: float = 200.0,
         t4: float = 200.0, lam: float = 0.03, **pc_kwargs) -> Result:
  """Score 1 - FSIM (1 - FSIMc for colour with chroma=True).

  FSIM = sum S_L PC_m / sum PC_m with S_L = S_PC S_G (x (S_I S_Q)^lam for
  FSIMc; a negative S_I S_Q is raised as MATLAB's real(z.^lam) does),
  PC_m = max(PC_x, PC_y). Images of min(H, W) >= 384 are first averaged and
  subsampled by round(min(H, W) / 256), as in FeatureSIM.m.

  Args:
    x: inputs (N, H, W, C), C in {1, 3}, values in [0, 1].
    y: reconstructions, same shape.
    chroma: for C=3, FSIMc (True) or the luminance-only FSIM.
    scale: multiplies the inputs to reach the 0-255 range of the constants.
    t1, t2, t3, t4, lam: the paper's T1 (PC), T2 (GM), T3, T4 (I, Q), lambda.
    **pc_kwargs: passed to phase_congruency.

  Returns:
    the score in [0, 1] (0 for identical images, and for images without
    any phase congruency) and the map (1 - S_L) PC_m, whose sum divided by
    sum PC_m is the score; a subsampled map is repeated back to (H, W).
  """
  common.check_pair(x, y)
  n, h, w, channels = x.shape
  factor = max(1, math.floor(min(h, w) / 256 + 0.5))  # MATLAB round.
  both = jnp.concatenate([x, y]) * scale
  down = lambda z: common.matlab_downsample(z, factor)
  lum = down(common.luminance(both))
  pc = phase_congruency(lum, **pc_kwargs)
  gm = _scharr_magnitude(lum)
  local = (_similarity(pc[:n], pc[n:], t1)
           * _similarity(gm[:n], gm[n:], t2))
  if chroma and channels == 3:
    i = down(common.mix(both, common.CHROMA_I))
    q = down(common.mix(both, common.CHROMA_Q))
    p = _similarity(i[:n], i[n:], t3) * _similarity(q[:n], q[n:], t4)
    local = local * jnp.abs(p) ** lam * jnp.where(
        p >= 0, 1.0, math.cos(lam * math.pi))
  pcm = jnp.maximum(pc[:n], pc[n:])
  total = jnp.sum(pcm, axis=(1, 2))
  value = jnp.where(total > 0, jnp.sum(local * pcm, axis=(1, 2))
                    / jnp.where(total > 0, total, 1.0), 1.0)
  amap = common.upsample((1.0 - local) * pcm, factor, h, w)
  return Result(1.0 - value, amap)
