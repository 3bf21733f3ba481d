"""Tests of aad.scoring.similarity against independent NumPy/SciPy/scikit-image
computations, identity cases and hand-computed values, for C=1 and C=3."""

import functools
import math

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from scipy import signal
from skimage import metrics as skm

from aad.scoring import similarity
from aad.scoring.similarity import feature
from aad.scoring.similarity import statistical

LUMA = np.array([0.299, 0.587, 0.114])
CHANNELS = [1, 3]
NAMES = list(similarity.MEASURES)


@functools.lru_cache(maxsize=None)
def _jit(name, kwargs):
  # One jitted function per measure and options, so that XLA compiles each
  # once per shape (a new lambda per call would recompile every time).
  return jax.jit(functools.partial(similarity.MEASURES[name].fn,
                                   **dict(kwargs)))


def _run(name, x, y, **kwargs):
  r = _jit(name, tuple(sorted(kwargs.items())))(
      jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
  return np.asarray(r.score), None if r.map is None else np.asarray(r.map)


def _pair(channels, size=32, seed=0, n=2):
  """Smooth random images in [0.1, 0.9] and noisy reconstructions."""
  rng = np.random.default_rng(seed)
  x = ndimage.gaussian_filter(rng.random((n, size, size, channels)),
                              (0, 1.5, 1.5, 0))
  x = 0.1 + 0.8 * (x - x.min()) / (x.max() - x.min())
  y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
  return x.astype(np.float32), y.astype(np.float32)


def _blocks(channels, seed=0, n=2):
  """Piecewise-constant 32 x 32 images (sharp edges) and noisy copies."""
  rng = np.random.default_rng(seed)
  x = np.kron(rng.random((n, 8, 8, channels)), np.ones((1, 4, 4, 1)))
  y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
  return x.astype(np.float32), y.astype(np.float32)


def _lum(x):
  x = np.asarray(x, np.float64)
  return x[..., 0] if x.shape[-1] == 1 else x @ LUMA


# ---------------------------------------------------------------- registry


def test_registry_lists_the_thirteen_measures():
  assert NAMES == ['se', 'rmse', 'psnr', 'imed', 'ssim', 'zncc', 'gmsd',
                   'fsim', 'issm', 'sre', 'sam', 'uiq', 'sh']
  with_maps = {n for n, m in similarity.MEASURES.items() if m.has_map}
  assert with_maps == {'se', 'imed', 'ssim', 'gmsd', 'fsim', 'sam', 'uiq'}


@pytest.mark.parametrize('channels', CHANNELS)
def test_shapes_and_wrappers(channels):
  x, y = _pair(channels)
  for name, m in similarity.MEASURES.items():
    out = jax.eval_shape(m.fn, x, y)
    assert out.score.shape == (2,), name
    if m.has_map:
      assert out.map.shape == (2, 32, 32), name
    else:
      assert m.map_fn is None and out.map is None, name
  if channels == 1:
    return  # One compilation of the thirteen together is enough.
  # The wrappers, all measures in one jitted function.
  every = jax.jit(lambda a, b: {
      n: (m.score_fn(a, b), m.map_fn(a, b) if m.has_map else None)
      for n, m in similarity.MEASURES.items()})(x, y)
  for name, (score, amap) in every.items():
    np.testing.assert_allclose(score, _run(name, x, y)[0], rtol=1e-5,
                               atol=1e-6, err_msg=name)
    assert np.all(np.isfinite(score)), name
    if amap is not None:
      assert np.all(np.isfinite(amap)), name


@pytest.mark.parametrize('channels', CHANNELS)
def test_more_noise_scores_higher(channels):
  x, _ = _blocks(channels, seed=3)
  rng = np.random.default_rng(4)
  noise = rng.standard_normal(x.shape).astype(np.float32)
  small, large = np.clip(x + 0.02 * noise, 0, 1), np.clip(x + 0.2 * noise, 0, 1)
  for name in NAMES:
    if name == 'sam' and channels == 1:
      continue  # Always 0 for grey images >= 0 (see test_sam_hand_values).
    assert np.all(_run(name, x, small)[0] < _run(name, x, large)[0]), name


def test_mismatched_shapes_raise():
  with pytest.raises(ValueError):
    similarity.se(jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 4, 4, 3)))


# ---------------------------------------------------------------- identity

BEST = {'se': 0, 'rmse': 0, 'psnr': -200, 'imed': 0, 'ssim': 0, 'zncc': 0,
        'gmsd': 0, 'fsim': 0, 'sre': -200, 'sam': 0, 'uiq': 0, 'sh': 0}


@pytest.mark.parametrize('channels', CHANNELS)
@pytest.mark.parametrize('name', NAMES)
def test_identity_gives_the_best_value(name, channels):
  x, _ = _blocks(channels, seed=1)
  score, amap = _run(name, x, x)
  if name == 'issm':
    # rho = 1, SSIM = 1: (0.8 EHS + e) / (0.8 EHS + 0.7 + e), EHS of the
    # diagonal joint histogram.
    lum = _lum(x).reshape(len(x), -1)
    expected = []
    for v in lum:
      counts = np.histogram2d(v, v)[0]
      counts = counts[counts > 0]
      ehs = -np.sum(counts * np.log2(counts))
      expected.append(1 - (0.8 * ehs + math.e) / (0.8 * ehs + 0.7 + math.e))
    np.testing.assert_allclose(score, expected, rtol=1e-5)
    assert np.all(score < 0)  # ISSM(x, x) is slightly above 1.
    return
  np.testing.assert_allclose(score, BEST[name], atol=1e-5)
  if amap is not None:
    np.testing.assert_allclose(amap, 0, atol=1e-5)


# --------------------------------------------------- pixel-wise measures


@pytest.mark.parametrize('channels', CHANNELS)
def test_pixelwise_against_numpy(channels):
  x, y = _pair(channels)
  d = x.astype(np.float64) - y
  score, amap = _run('se', x, y)
  np.testing.assert_allclose(score, np.sum(d**2, axis=(1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(amap, np.sum(d**2, axis=-1), rtol=1e-5)
  np.testing.assert_allclose(_run('rmse', x, y)[0],
                             np.sqrt(np.mean(d**2, axis=(1, 2, 3))), rtol=1e-5)
  psnr = [skm.peak_signal_noise_ratio(a, b, data_range=1.0)
          for a, b in zip(x, y)]
  np.testing.assert_allclose(_run('psnr', x, y)[0], -np.array(psnr),
                             rtol=1e-5)
  zncc = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(x, y)]
  np.testing.assert_allclose(_run('zncc', x, y)[0], 1 - np.array(zncc),
                             atol=1e-5)


@pytest.mark.parametrize('channels', CHANNELS)
def test_sre_against_image_similarity_measures_formula(channels):
  x, y = _pair(channels)
  expected = []
  for a, b in zip(x.astype(np.float64), y):
    pixels = a.shape[0] * a.shape[1]
    ratios = [np.mean(a[..., c]) ** 2
              / (np.linalg.norm(a[..., c] - b[..., c]) / pixels)
              for c in range(channels)]
    expected.append(-10 * np.log10(np.mean(ratios)))
  np.testing.assert_allclose(_run('sre', x, y)[0], expected, rtol=1e-5)


@pytest.mark.parametrize('channels', CHANNELS)
def test_sam_against_arccos(channels):
  x, y = _pair(channels)
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  cos = np.sum(x64 * y64, -1) / (np.linalg.norm(x64, axis=-1)
                                 * np.linalg.norm(y64, axis=-1))
  angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
  score, amap = _run('sam', x, y)
  np.testing.assert_allclose(amap, angle, atol=2e-3)
  np.testing.assert_allclose(score, angle.mean(axis=(1, 2)), atol=2e-4)
  if channels == 3:
    assert score.min() > 1  # Not the degenerate grey case.


def _imed_brute(x, y, sigma=1.0):
  """sum_ij g_ij u_i u_j over all pixel pairs, channels summed."""
  n, h, w, _ = x.shape
  rows, cols = np.mgrid[:h, :w]
  p = np.stack([rows.ravel(), cols.ravel()], 1)
  dist2 = np.sum((p[:, None] - p[None]) ** 2, -1)
  g = np.exp(-dist2 / (2 * sigma**2)) / (2 * np.pi * sigma**2)
  u = (x.astype(np.float64) - y).reshape(n, h * w, -1)
  return np.einsum('nic,ij,njc->n', u, g, u)


@pytest.mark.parametrize('channels', CHANNELS)
def test_imed_against_the_double_sum(channels):
  x, y = _pair(channels, size=16)
  score, amap = _run('imed', x, y)
  np.testing.assert_allclose(score, _imed_brute(x, y), rtol=1e-4)
  np.testing.assert_allclose(amap.sum(axis=(1, 2)), score, rtol=1e-5)
  score, _ = _run('imed', x, y, sigma=2.0)
  np.testing.assert_allclose(score, _imed_brute(x, y, 2.0), rtol=1e-4)


@pytest.mark.parametrize('channels', CHANNELS)
def test_pixelwise_hand_values(channels):
  # Constant 0.5 against constant 0.2 on 20 x 20: |d| = 0.3 everywhere.
  x = np.full((1, 20, 20, channels), 0.5, np.float32)
  y = np.full_like(x, 0.2)
  score, amap = _run('se', x, y)
  # A float32 sum of 1200 values: 1e-4 covers a sequential summation
  # (the tests compile without most optimisations).
  np.testing.assert_allclose(score, 0.09 * 400 * channels, rtol=1e-4)
  np.testing.assert_allclose(amap, 0.09 * channels, rtol=1e-5)
  np.testing.assert_allclose(_run('rmse', x, y)[0], 0.3, rtol=1e-5)
  np.testing.assert_allclose(_run('psnr', x, y)[0], -20 * np.log10(1 / 0.3),
                             rtol=1e-5)
  # SRE: mean^2 / (||e|| / HW) = 0.25 / (0.3 * 20 / 400) = 16.67.
  np.testing.assert_allclose(_run('sre', x, y)[0],
                             -10 * np.log10(0.25 * 400 / (0.3 * 20)),
                             rtol=1e-5)
  # ZNCC: y = 0.5 x + 0.1 correlates 1, y = 1 - x correlates -1.
  x, _ = _pair(channels)
  np.testing.assert_allclose(_run('zncc', x, 0.5 * x + 0.1)[0], 0, atol=1e-5)
  np.testing.assert_allclose(_run('zncc', x, 1 - x)[0], 2, atol=1e-5)
  # Two constant images: a defined convention, not NaN.
  flat = np.full((1, 8, 8, channels), 0.3, np.float32)
  np.testing.assert_allclose(_run('zncc', flat, flat + 0.1)[0], 0)
  np.testing.assert_allclose(_run('zncc', flat, x[:1, :8, :8])[0], 1)


@pytest.mark.parametrize('channels', CHANNELS)
def test_imed_hand_values(channels):
  # One pixel off by delta: d^2 = delta^2 g(0) per channel, g(0) = 1/(2 pi).
  x = np.zeros((1, 15, 15, channels), np.float32)
  y = x.copy()
  y[0, 7, 7] = 0.5
  score, amap = _run('imed', x, y)
  np.testing.assert_allclose(score, channels * 0.25 / (2 * np.pi), rtol=1e-5)
  assert amap[0, 7, 7] == pytest.approx(score[0], rel=1e-5)
  assert np.count_nonzero(amap) == 1
  # Two neighbours: 2 delta^2 (g(0) + g(1)), g(1) = exp(-1/2) / (2 pi).
  y[0, 7, 8] = 0.5
  np.testing.assert_allclose(
      _run('imed', x, y)[0],
      channels * 2 * 0.25 * (1 + np.exp(-0.5)) / (2 * np.pi), rtol=1e-5)


def test_sam_hand_values():
  x = np.zeros((1, 2, 2, 3), np.float32)
  y = np.zeros_like(x)
  x[0, :, :, 0] = 1.0
  y[0, 0, 0] = [0, 1, 0]  # 90 degrees
  y[0, 0, 1] = [1, 1, 0]  # 45 degrees
  y[0, 1, 0] = [2, 0, 0]  # 0: the angle ignores intensity
  y[0, 1, 1] = [1, 0, 1]  # 45 degrees
  score, amap = _run('sam', x, y)
  np.testing.assert_allclose(amap[0], [[90, 45], [0, 45]], atol=1e-5)
  np.testing.assert_allclose(score, 45, atol=1e-5)
  # Grey: 0 for values of one sign, 180 for opposite signs.
  g = np.full((1, 2, 2, 1), 0.5, np.float32)
  np.testing.assert_allclose(_run('sam', g, 0.2 * g)[0], 0)
  np.testing.assert_allclose(_run('sam', g, -g)[0], 180, atol=1e-5)


def test_atan2_against_numpy():
  """SAM's polynomial atan2 against float64 numpy, over every octant, the
  axes, zeros of either sign and ratios near the reduction's cut."""
  rng = np.random.default_rng(4)
  y = rng.standard_normal(20000) * 10.0 ** rng.integers(-6, 6, 20000)
  x = rng.standard_normal(20000) * 10.0 ** rng.integers(-6, 6, 20000)
  cut = math.tan(math.pi / 8)
  edges = [(0.0, 0.0), (-0.0, 0.0), (0.0, -1.0), (-0.0, -1.0), (1.0, 0.0),
           (-1.0, 0.0), (1.0, 1.0), (-1.0, -1.0), (2.0, -2.0), (cut, 1.0),
           (1.0, cut), (-cut, -1.0), (3e-38, 1.0), (1.0, 3e-38)]
  y = np.concatenate([y, [e[0] for e in edges]]).astype(np.float32)
  x = np.concatenate([x, [e[1] for e in edges]]).astype(np.float32)
  got = np.asarray(jax.jit(similarity.common.atan2)(y, x), np.float64)
  want = np.arctan2(y.astype(np.float64), x.astype(np.float64))
  np.testing.assert_allclose(got, want, rtol=0, atol=4e-7)
  # The sign of a zero y decides between pi and -pi, as numpy's.
  np.testing.assert_array_equal(np.signbit(got[-14:]), np.signbit(want[-14:]))


# ---------------------------------------------------- structural measures


@pytest.mark.parametrize('channels', CHANNELS)
def test_ssim_against_scikit_image_and_dm_pix(channels):
  x, y = _pair(channels)
  score, amap = _run('ssim', x, y)
  for i in range(len(x)):
    mssim, full = skm.structural_similarity(
        x[i], y[i], channel_axis=-1, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0, full=True)
    assert score[i] == pytest.approx(1 - mssim, abs=1e-5)
    np.testing.assert_allclose(amap[i, 5:-5, 5:-5],
                               1 - full.mean(-1)[5:-5, 5:-5], atol=1e-4)
    # Border pixels take the nearest window inside the frame.
    np.testing.assert_allclose(amap[i, :5, 5], amap[i, 5, 5], atol=0)
  np.testing.assert_allclose(score, 1 - np.asarray(dm_pix.ssim(x, y)),
                             atol=1e-5)


@pytest.mark.parametrize('channels', CHANNELS)
def test_ssim_and_uiq_of_constant_images(channels):
  # Flat windows: SSIM = (2ab + C1) / (a^2 + b^2 + C1); UIQ (img_qi.m's
  # rule for flat windows) = 2ab / (a^2 + b^2); 1 where both are 0.
  a, b = 0.5, 0.2
  x = np.full((2, 32, 32, channels), a, np.float32)  # (Shapes shared with
  y = np.full_like(x, b)  # other tests compile once.)
  c1 = 1e-4
  score, amap = _run('ssim', x, y)
  expected = 1 - (2 * a * b + c1) / (a * a + b * b + c1)
  np.testing.assert_allclose(score, expected, rtol=1e-5)
  np.testing.assert_allclose(amap, expected, rtol=1e-5)
  score, amap = _run('uiq', x, y)
  np.testing.assert_allclose(score, 1 - 2 * a * b / (a * a + b * b),
                             rtol=1e-5)
  np.testing.assert_allclose(_run('uiq', 0 * x, 0 * y)[0], 0, atol=1e-6)
  # One flat image against a textured one: s_xy = 0, so Q = 0 there.
  t, _ = _pair(channels)
  np.testing.assert_allclose(_run('uiq', x, t)[0], 1, atol=1e-6)


def _uiq_reference(x, y, block=8):
  """Wang and Bovik's img_qi.m per channel (float64), averaged."""
  n = block * block
  ones = np.ones((block, block))
  out = []
  for a, b in zip(x.astype(np.float64), y.astype(np.float64)):
    qs = []
    for c in range(a.shape[-1]):
      i1, i2 = a[..., c], b[..., c]
      f = lambda z: signal.correlate2d(z, ones, 'valid')  # window sums
      s1, s2 = f(i1), f(i2)
      s11, s22, s12 = f(i1 * i1), f(i2 * i2), f(i1 * i2)
      mul, sq = s1 * s2, s1 * s1 + s2 * s2
      num = 4 * (n * s12 - mul) * mul
      den1 = n * (s11 + s22) - sq
      den = den1 * sq
      q = np.ones_like(den)
      idx = (np.abs(den1) < 1e-9) & (sq != 0)
      q[idx] = 2 * mul[idx] / sq[idx]
      idx = np.abs(den) >= 1e-9
      q[idx] = num[idx] / den[idx]
      qs.append(q.mean())
    out.append(1 - np.mean(qs))
  return np.array(out)


@pytest.mark.parametrize('channels', CHANNELS)
def test_uiq_against_img_qi(channels):
  for x, y in (_pair(channels), _blocks(channels)):
    score, amap = _run('uiq', x, y)
    np.testing.assert_allclose(score, _uiq_reference(x, y), atol=2e-5)
    # The interior of the map is 1 - Q of the window starting 3 px earlier.
    assert amap.shape == x.shape[:3]


def _gmsd_reference(x, y, c=170 / 255**2):
  def gm(z):
    z = _lum(z)
    z = (z[:, 0::2, 0::2] + z[:, 1::2, 0::2] + z[:, 0::2, 1::2]
         + z[:, 1::2, 1::2]) / 4
    k = np.array([[1, 0, -1]] * 3) / 3
    gx = np.stack([ndimage.correlate(i, k, mode='constant') for i in z])
    gy = np.stack([ndimage.correlate(i, k.T, mode='constant') for i in z])
    return np.hypot(gx, gy)
  mx, my = gm(x), gm(y)
  gms = (2 * mx * my + c) / (mx**2 + my**2 + c)
  return gms.std(axis=(1, 2)), gms


@pytest.mark.parametrize('channels', CHANNELS)
def test_gmsd_against_numpy(channels):
  x, y = _pair(channels)
  score, amap = _run('gmsd', x, y)
  expected, gms = _gmsd_reference(x, y)
  np.testing.assert_allclose(score, expected, rtol=1e-4)
  np.testing.assert_allclose(amap[:, ::2, ::2], 1 - gms, atol=1e-5)
  np.testing.assert_allclose(amap[:, 1::2, 1::2], 1 - gms, atol=1e-5)


@pytest.mark.parametrize('channels', CHANNELS)
def test_gmsd_of_constant_images(channels):
  # 8 x 8 constants a, b pool to 4 x 4. Zero padding gives gradient
  # magnitude a at edge pixels and 2 sqrt(2) a / 3 at corners, 0 inside.
  a, b, c = 0.6, 0.3, 170 / 255**2
  x = np.full((1, 8, 8, channels), a, np.float32)
  y = np.full_like(x, b)
  sim = lambda p, q: (2 * p * q + c) / (p * p + q * q + c)
  k = 2 * np.sqrt(2) / 3
  gms = np.ones((4, 4))
  gms[0, :] = gms[-1, :] = gms[:, 0] = gms[:, -1] = sim(a, b)
  gms[0, 0] = gms[0, -1] = gms[-1, 0] = gms[-1, -1] = sim(k * a, k * b)
  score, amap = _run('gmsd', x, y)
  np.testing.assert_allclose(score, gms.std(), rtol=1e-5)
  np.testing.assert_allclose(amap[0], np.kron(1 - gms, np.ones((2, 2))),
                             atol=1e-6)
  # Odd sizes: the last row and column pool with zeros, as conv2 'same'.
  odd = _run('gmsd', x[:, :7, :7], y[:, :7, :7])[1]
  assert odd.shape == (1, 7, 7)


# ------------------------------------------------------------------ FSIM


def _phasecong2(im):
  """FSIM's phasecong2.m in NumPy float64 (loops as in the MATLAB)."""
  nscale, norient, minwl, mult, sigma_onf = 4, 4, 6, 2, 0.55
  d_theta_on_sigma, k, eps = 1.2, 2.0, 1e-4
  rows, cols = im.shape
  imagefft = np.fft.fft2(im)
  def axis(n):
    return (np.arange(n) - (n - 1) / 2) / (n - 1) if n % 2 else (
        np.arange(-n // 2, n // 2) / n)
  x, y = np.meshgrid(axis(cols), axis(rows))
  radius = np.sqrt(x**2 + y**2)
  theta = np.arctan2(-y, x)
  lp = np.fft.ifftshift(1 / (1 + (radius / 0.45) ** (2 * 15)))
  radius, theta = np.fft.ifftshift(radius), np.fft.ifftshift(theta)
  radius[0, 0] = 1
  log_gabor = []
  for s in range(nscale):
    fo = 1 / (minwl * mult**s)
    lg = np.exp(-np.log(radius / fo) ** 2 / (2 * np.log(sigma_onf) ** 2)) * lp
    lg[0, 0] = 0
    log_gabor.append(lg)
  theta_sigma = np.pi / norient / d_theta_on_sigma
  energy_all, an_all = np.zeros_like(im), np.zeros_like(im)
  for o in range(norient):
    angl = o * np.pi / norient
    ds = np.sin(theta) * np.cos(angl) - np.cos(theta) * np.sin(angl)
    dc = np.cos(theta) * np.cos(angl) + np.sin(theta) * np.sin(angl)
    spread = np.exp(-np.abs(np.arctan2(ds, dc)) ** 2 / (2 * theta_sigma**2))
    sum_e = sum_o = sum_an = energy = 0
    eo, ifft_filters = [], []
    for s in range(nscale):
      filt = log_gabor[s] * spread
      ifft_filters.append(np.real(np.fft.ifft2(filt)) * np.sqrt(rows * cols))
      eo.append(np.fft.ifft2(imagefft * filt))
      sum_an = sum_an + np.abs(eo[s])
      sum_e, sum_o = sum_e + eo[s].real, sum_o + eo[s].imag
      if s == 0:
        em_n = np.sum(filt**2)
    x_energy = np.sqrt(sum_e**2 + sum_o**2) + eps
    mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
    for s in range(nscale):
      e, d = eo[s].real, eo[s].imag
      energy = energy + (e * mean_e + d * mean_o
                         - np.abs(e * mean_o - d * mean_e))
    mean_e2n = -np.median(np.abs(eo[0]) ** 2) / np.log(0.5)
    noise_power = mean_e2n / em_n
    est_sum_an2 = sum(f**2 for f in ifft_filters).sum()
    est_sum_aiaj = sum((ifft_filters[i] * ifft_filters[j]).sum()
                       for i in range(nscale) for j in range(i + 1, nscale))
    est_noise_energy2 = 2 * noise_power * est_sum_an2 + (
        4 * noise_power * est_sum_aiaj)
    tau = np.sqrt(est_noise_energy2 / 2)
    t = (tau * np.sqrt(np.pi / 2) + k * np.sqrt((2 - np.pi / 2) * tau**2))
    energy_all += np.maximum(energy - t / 1.7, 0)
    an_all += sum_an
  return energy_all / an_all


def _fsim_reference(a, b):
  """FeatureSIM.m on one pair of [0, 1] images (H, W, C): (FSIM or FSIMc,
  the map (1 - S_L) PC_m)."""
  a, b = 255 * a.astype(np.float64), 255 * b.astype(np.float64)
  y1, y2 = _lum(a[None])[0], _lum(b[None])[0]
  pc1, pc2 = _phasecong2(y1), _phasecong2(y2)
  dx = np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]]) / 16
  g = lambda z: np.hypot(ndimage.correlate(z, dx, mode='constant'),
                         ndimage.correlate(z, dx.T, mode='constant'))
  g1, g2 = g(y1), g(y2)
  s = ((2 * pc1 * pc2 + 0.85) / (pc1**2 + pc2**2 + 0.85)
       * (2 * g1 * g2 + 160) / (g1**2 + g2**2 + 160))
  if a.shape[-1] == 3:
    iq = np.array([[0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    (i1, q1), (i2, q2) = np.moveaxis(a @ iq.T, -1, 0), np.moveaxis(
        b @ iq.T, -1, 0)
    p = ((2 * i1 * i2 + 200) / (i1**2 + i2**2 + 200)
         * (2 * q1 * q2 + 200) / (q1**2 + q2**2 + 200))
    s = s * np.real(p.astype(complex) ** 0.03)
  pcm = np.maximum(pc1, pc2)
  return np.sum(s * pcm) / np.sum(pcm), (1 - s) * pcm


@pytest.mark.parametrize('channels', CHANNELS)
@pytest.mark.parametrize('shape', [(32, 32), (33, 30)])
def test_fsim_against_feature_sim_m(channels, shape):
  x, y = _pair(channels, size=40)
  x, y = x[:, :shape[0], :shape[1]], y[:, :shape[0], :shape[1]]
  score, amap = _run('fsim', x, y)
  for i in range(len(x)):
    value, ref_map = _fsim_reference(x[i], y[i])
    assert score[i] == pytest.approx(1 - value, abs=2e-5)
    np.testing.assert_allclose(amap[i], ref_map, atol=2e-4)


def test_phase_congruency_against_phasecong2():
  x, _ = _blocks(1)
  ours = np.asarray(jax.jit(similarity.phase_congruency)(255 * x[..., 0]))
  for i in range(len(x)):
    np.testing.assert_allclose(ours[i], _phasecong2(255.0 * x[i, ..., 0]),
                               atol=1e-4)


def test_phase_congruency_peaks_at_a_step_edge():
  step = np.full((1, 48, 48), 50.0, np.float32)
  step[:, :, 24:] = 200.0
  pc = np.asarray(jax.jit(similarity.phase_congruency)(step))[0]
  # Columns 23 and 24 hold the edge. The FFT sees the image as periodic,
  # with a second edge at columns 47 | 0 (so a square wave, whose plateau
  # centres have PC ~0.68 too); look at the columns 4-43 of each row.
  middle = pc[:, 4:44]
  assert np.all(np.isin(np.argmax(middle, axis=1) + 4, [23, 24]))
  edge = pc[:, 23:25].min()
  assert edge > 0.7
  away = np.concatenate([pc[:, 4:21], pc[:, 27:44]], axis=1)
  assert away.max() < edge - 0.05
  assert np.abs(pc - pc[:1]).max() < 1e-5  # The same on every row.


def test_phase_congruency_of_constant_images_is_zero_on_both_paths():
  # A batch of constant images takes the conditional's zero branch on CPU
  # (phase_congruency's comment); the transforms give exactly 0 as well.
  flat = jnp.asarray(np.stack([np.full((32, 40), v, np.float32)
                               for v in (0.0, 7.0, 255.0)]))
  pc = np.asarray(jax.jit(similarity.phase_congruency)(flat))
  np.testing.assert_array_equal(pc, 0.0)
  filters, factors = feature.log_gabor_bank(32, 40)
  computed = jax.jit(lambda z: feature._congruency(
      feature._filtered_spectra(z, filters), factors=factors, nscale=4,
      epsilon=1e-4, noise_stride=1))(flat)
  np.testing.assert_array_equal(np.asarray(computed), 0.0)
  # One varying image sends the batch down the transforms, whose PC of
  # the constant images is 0 too; non-finite constants are not skipped.
  mixed = flat.at[1, 5:20, 10:30].set(200.0)
  pc = np.asarray(jax.jit(similarity.phase_congruency)(mixed))
  np.testing.assert_array_equal(pc[[0, 2]], 0.0)
  assert pc[1].max() > 0.5
  inf = jnp.full((2, 16, 16), jnp.inf)
  assert np.isnan(np.asarray(jax.jit(similarity.phase_congruency)(inf))).all()


def test_median_is_exact():
  rng = np.random.default_rng(5)
  for n in (1, 2, 7, 8, 1000, 1001, 4096):
    v = rng.random((2, 3, n)).astype(np.float32) ** 3
    v[0, 1, : n // 2] = v[0, 1, 0]  # Many repeats.
    v[0, 2] = 0.0
    v[1, 0] = rng.exponential(size=n) ** 6  # Values over many octaves.
    # Tiny (not subnormal: XLA:CPU flushes those in the even-count mean).
    v[1, 1] = 1e-30 * rng.random(n)
    v[1, 2] = rng.integers(0, 3, n)  # Few distinct values.
    np.testing.assert_array_equal(
        np.asarray(jax.jit(feature._median)(jnp.asarray(v))),
        np.median(v, axis=-1).astype(np.float32))


def test_fsim_hand_values():
  # Grey: x framed in 0.5 against its negative 1 - x. PC ignores the sign
  # of the signal, and the frame gives equal gradients at the zero-padded
  # border, so FSIM = 1 exactly, while SSIM sees a large difference.
  rng = np.random.default_rng(6)
  x = np.full((2, 32, 32, 1), 0.5, np.float32)
  x[:, 4:-4, 4:-4] = np.kron(rng.random((2, 6, 6, 1)), np.ones((1, 4, 4, 1)))
  score, amap = _run('fsim', x, 1 - x)
  np.testing.assert_allclose(score, 0, atol=1e-5)
  np.testing.assert_allclose(amap, 0, atol=1e-5)
  assert np.all(_run('ssim', x, 1 - x)[0] > 0.5)
  # Colour: a grey image (I = Q = 0) against itself plus a constant colour
  # of zero luma: PC and GM are equal, so FSIMc = (S_I S_Q)^0.03 with the
  # constant S_I = T3 / (I^2 + T3), S_Q = T4 / (Q^2 + T4).
  grey = np.repeat(0.2 + 0.6 * x, 3, axis=-1)
  v = np.array([0.1, -0.05, 0.0])
  v[2] = -(LUMA[0] * v[0] + LUMA[1] * v[1]) / LUMA[2]
  i = 255 * (0.596 * v[0] - 0.274 * v[1] - 0.322 * v[2])
  q = 255 * (0.211 * v[0] - 0.523 * v[1] + 0.312 * v[2])
  expected = 1 - (200 / (i * i + 200) * 200 / (q * q + 200)) ** 0.03
  assert expected > 1e-3
  score, _ = _run('fsim', grey, (grey + v).astype(np.float32))
  np.testing.assert_allclose(score, expected, rtol=1e-3)
  np.testing.assert_allclose(
      _run('fsim', grey, (grey + v).astype(np.float32), chroma=False)[0], 0,
      atol=1e-5)


def test_fsim_noise_stride_changes_little():
  x, y = _pair(3)
  exact, _ = _run('fsim', x, y)
  fast, _ = _run('fsim', x, y, noise_stride=2)
  np.testing.assert_allclose(fast, exact, rtol=0.01)
  assert np.all(fast != exact)  # It does take another sample.


# ------------------------------------------------------- ISSM, Canny, SH


def _canny_reference(img, low=100, high=200):
  """cv2.Canny's rules in NumPy loops; hysteresis by connected components."""
  img = img.astype(np.int64)
  p = np.pad(img, 1, mode='edge')
  kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
  h, w = img.shape
  gx = np.zeros((h, w), np.int64)
  gy = np.zeros((h, w), np.int64)
  for i in range(h):
    for j in range(w):
      win = p[i:i + 3, j:j + 3]
      gx[i, j], gy[i, j] = np.sum(win * kx), np.sum(win * kx.T)
  mag = np.abs(gx) + np.abs(gy)
  m = np.pad(mag, 1)
  cand = np.zeros((h, w), bool)
  tg22 = int(0.4142135623730950488 * (1 << 15) + 0.5)
  for i in range(h):
    for j in range(w):
      v, xs, ys = mag[i, j], gx[i, j], gy[i, j]
      if v <= low:
        continue
      a, b = abs(xs) * tg22, abs(ys) << 15
      nb = lambda di, dj: m[i + 1 + di, j + 1 + dj]
      if b < a:
        cand[i, j] = v > nb(0, -1) and v >= nb(0, 1)
      elif b > a + (abs(xs) << 16):
        cand[i, j] = v > nb(-1, 0) and v >= nb(1, 0)
      else:
        s = -1 if (xs < 0) != (ys < 0) else 1
        cand[i, j] = v > nb(-1, -s) and v > nb(1, s)
  return _connected_to_seeds(cand, cand & (mag > high))


def _connected_to_seeds(candidates, seeds):
  """The candidates 8-connected to a seed, by scipy's labelling (H, W)."""
  labels, _ = ndimage.label(candidates, structure=np.ones((3, 3)))
  seeded = np.unique(labels[seeds])
  return np.isin(labels, seeded[seeded > 0])


def test_hysteresis_against_connected_components():
  # Random masks of several widths against scipy's 8-connected labelling.
  rng = np.random.default_rng(11)
  for w in (5, 31, 32, 33, 70):
    candidates = rng.random((3, 9, w)) < 0.55
    seeds = candidates & (rng.random((3, 9, w)) < 0.04)
    got = np.asarray(jax.jit(statistical.hysteresis)(seeds, candidates))
    for g, c, s in zip(got, candidates, seeds):
      np.testing.assert_array_equal(g, _connected_to_seeds(c, s))
  # One row-long chain seeded at its right end reaches the left end.
  chain = np.ones((1, 1, 70), bool)
  seed = np.zeros_like(chain)
  seed[..., -1] = True
  assert np.asarray(statistical.hysteresis(seed, chain)).all()


def test_canny_against_reference():
  x, y = _blocks(1, seed=2)
  gray = np.round(255 * np.concatenate([x, y])[..., 0]).astype(np.int32)
  edges = np.asarray(jax.jit(similarity.canny)(gray))
  for e, g in zip(edges, gray):
    ref = _canny_reference(g)
    assert ref.sum() > 20
    np.testing.assert_array_equal(e, ref)
  # Weak edges survive only when connected to a strong one: a long ramp
  # edge of L1 magnitude 4 * 40 = 160 (weak) with one strong end.
  img = np.zeros((1, 16, 40), np.int32)
  img[:, :, 20:] = 40
  img[:, 0:2, 20:] = 100  # Strong at the top.
  edges = np.asarray(similarity.canny(img))[0]
  np.testing.assert_array_equal(edges, _canny_reference(img[0]))
  # Below the 100 | 40 corner, column 19 is weak (magnitude 160) and
  # reached from the seeds above it.
  assert edges[3:, 19].all()
  img[:, 0:2, 20:] = 40  # No strong seed left: no edge at all.
  assert not np.asarray(similarity.canny(img)).any()


def _issm_reference(x, y):
  out = []
  for a, b in zip(_lum(x), _lum(y)):
    counts = np.histogram2d(a.ravel(), b.ravel())[0]
    counts = counts[counts > 0]
    ehs = -np.sum(counts * np.log2(counts))
    g = _canny_reference(np.round(255 * a)).astype(float)
    h = _canny_reference(np.round(255 * b)).astype(float)
    rho = np.corrcoef(g.ravel(), h.ravel())[0, 1]
    s = skm.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=1.0)
    value = (rho * ehs * 0.8 + math.e) / (
        0.3 * rho * ehs + 0.5 * ehs + 0.7 * s + math.e)
    out.append(1 - value)
  return np.array(out)


@pytest.mark.parametrize('channels', CHANNELS)
def test_issm_against_numpy(channels):
  x, y = _blocks(channels, seed=7)
  np.testing.assert_allclose(_run('issm', x, y)[0], _issm_reference(x, y),
                             rtol=1e-4)


@pytest.mark.parametrize('channels', CHANNELS)
def test_issm_hand_value(channels):
  # A vertical against a horizontal step 0 | 1: Canny marks column 15 and
  # row 15, whose correlation is exactly 0 (one shared pixel = 1024 * mean
  # product); the joint histogram has four cells of 256: EHS = -8192.
  x = np.zeros((2, 32, 32, channels), np.float32)
  y = np.zeros_like(x)
  x[:, :, 16:], y[:, 16:] = 1.0, 1.0
  lx = x[..., 0].astype(np.int32) * 255
  edges = np.asarray(similarity.canny(lx))[0]
  assert edges[:, 15].all() and edges.sum() == 32
  s = skm.structural_similarity(x[0, ..., 0], y[0, ..., 0],
                                gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0)
  expected = 1 - math.e / (0.5 * -8192 + 0.7 * s + math.e)
  np.testing.assert_allclose(_run('issm', x, y)[0], expected, rtol=1e-5)
  # Constant images: one histogram cell of 1024, no edges in either (rho
  # 1 by convention), SSIM (2ab + C1) / (a^2 + b^2 + C1).
  a, b = np.full_like(x, 0.25), np.full_like(x, 0.75)
  ehs = -1024 * 10
  s = (2 * 0.25 * 0.75 + 1e-4) / (0.25**2 + 0.75**2 + 1e-4)
  np.testing.assert_allclose(_run('issm', a, b)[0],
                             0.7 * s / (0.8 * ehs + 0.7 * s + math.e),
                             rtol=1e-5)


@pytest.mark.parametrize('channels', CHANNELS)
def test_sh_against_numpy(channels):
  x, y = _pair(channels)
  expected = []
  for a, b in zip(x, y):
    inter = [np.minimum(np.histogram(a[..., c], 256, (0, 1))[0],
                        np.histogram(b[..., c], 256, (0, 1))[0]).sum()
             for c in range(channels)]
    expected.append(1 - np.mean(inter) / (a.shape[0] * a.shape[1]))
  np.testing.assert_allclose(_run('sh', x, y)[0], expected, atol=1e-6)


@pytest.mark.parametrize('channels', CHANNELS)
def test_sh_hand_values(channels):
  # Half black, half white against black: half of the pixels match.
  x = np.zeros((1, 8, 8, channels), np.float32)
  x[:, :, 4:] = 1.0
  np.testing.assert_allclose(_run('sh', x, np.zeros_like(x))[0], 0.5)
  # Position does not matter: a mirrored image has the same histogram.
  x, _ = _pair(channels)
  np.testing.assert_allclose(_run('sh', x, x[:, :, ::-1])[0], 0, atol=1e-6)
  assert np.all(_run('sh', x, 0.5 * x)[0] > 0.3)


def test_in_chunks_matches_the_whole_batch():
  fn = lambda x, y: similarity.Result(jnp.sum(x * y, axis=(1, 2, 3)),
                                      x[..., 0] - y[..., 0])
  nomap = lambda x, y: similarity.Result(jnp.sum(x, axis=(1, 2, 3)), None)
  x, y = _pair(3, size=8, n=5)
  whole = fn(x, y)
  for size in (1, 2, 4, 5, 8):
    part = jax.jit(similarity.common.in_chunks(fn, size))(x, y)
    np.testing.assert_allclose(part.score, whole.score, rtol=1e-6)
    np.testing.assert_allclose(part.map, whole.map, rtol=1e-6)
    assert similarity.common.in_chunks(nomap, size)(x, y).map is None
  # Chunks tuned at 2 images of 8 x 8 x 3 values: 6 of 4 x 4 x 4, so 5
  # images go whole; 1 (never 0) of 16 x 16 x 3.
  tuned = 8 * 8 * 3
  assert similarity.common.chunk_images(2, tuned, 4 * 4 * 4) == 6
  assert similarity.common.chunk_images(2, tuned, 16 * 16 * 3) == 1
  assert similarity.common.chunk_images(2, None, 4 * 4 * 2) == 2
  assert similarity.common.chunk_images(None, tuned, 4 * 4 * 2) is None
  for values in (tuned // 2, tuned, 2 * tuned, 3 * tuned):  # 1, 2, 4, 6
    part = jax.jit(similarity.common.in_chunks(fn, 2, values))(x, y)
    np.testing.assert_allclose(part.score, whole.score, rtol=1e-6)
    np.testing.assert_allclose(part.map, whole.map, rtol=1e-6)
  # Counted per pixel (FSIM's), 8 x 8 x 3 images are 64 values: chunks of
  # 2 images tuned at 8 x 8 x 1 stay 2, not 2 * 64 // 192 = 0 -> 1.
  seen = []

  def recorded(x, y):
    seen.append(x.shape[0])
    return fn(x, y)

  for per_pixel, chunk in ((True, 2), (False, 1)):
    seen.clear()
    part = similarity.common.in_chunks(recorded, 2, 8 * 8, per_pixel)(x, y)
    np.testing.assert_allclose(part.score, whole.score, rtol=1e-6)
    assert seen[0] == chunk, (per_pixel, seen)


def test_flat_windows_and_uiq_on_partly_flat_images():
  # 8 x 8 blocks: windows aligned with a block are flat, the others not.
  rng = np.random.default_rng(8)
  x = np.kron(rng.random((2, 4, 4, 1)), np.ones((1, 8, 8, 1))).astype(
      np.float32)
  planes = np.moveaxis(x, -1, 1)
  flat = np.asarray(similarity.common.flat_windows(jnp.asarray(planes), 8))
  view = np.lib.stride_tricks.sliding_window_view(planes, (8, 8), (2, 3))
  np.testing.assert_array_equal(flat, view.max((-2, -1)) == view.min((-2, -1)))
  assert 0 < flat.sum() < flat.size
  y = (0.5 * x + 0.2).astype(np.float32)
  y[:, 8:16] = np.clip(y[:, 8:16] + 0.1 * rng.standard_normal(
      y[:, 8:16].shape), 0, 1)
  np.testing.assert_allclose(_run('uiq', x, y)[0], _uiq_reference(x, y),
                             atol=2e-5)


def _matlab_downsample(z, f):
  """conv2(z, ones(f)/f^2, 'same') then z(1:f:end, 1:f:end), per image."""
  out = []
  for img in z:
    full = signal.convolve2d(img, np.ones((f, f)) / f**2, 'full')
    same = full[f // 2:f // 2 + img.shape[0], f // 2:f // 2 + img.shape[1]]
    out.append(same[::f, ::f])
  return np.stack(out)


@pytest.mark.parametrize('factor', [2, 3])
@pytest.mark.parametrize('size', [9, 12])
def test_matlab_downsample(factor, size):
  z = np.random.default_rng(9).random((2, size, size + 1))
  np.testing.assert_allclose(
      similarity.common.matlab_downsample(jnp.asarray(z, jnp.float32),
                                          factor),
      _matlab_downsample(z, factor), rtol=1e-5)


def test_fsim_downsamples_large_images():
  # min(H, W) = 384 rounds to factor 2: FeatureSIM.m's average + subsample.
  rng = np.random.default_rng(10)
  x = ndimage.gaussian_filter(rng.random((1, 384, 384, 1)), (0, 3, 3, 0))
  x = (x - x.min()) / (x.max() - x.min())
  y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
  score, amap = _run('fsim', x, y)
  small = [_matlab_downsample(z[..., 0], 2)[..., None] for z in (x, y)]
  value, ref_map = _fsim_reference(small[0][0], small[1][0])
  assert score[0] == pytest.approx(1 - value, abs=2e-5)
  np.testing.assert_allclose(amap[0, ::2, ::2], ref_map, atol=2e-4)
  np.testing.assert_allclose(amap[0, 1::2, 1::2], ref_map, atol=2e-4)
