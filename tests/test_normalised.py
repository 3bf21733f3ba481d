"""The normalised scorer (aad/scoring/normalisation.py) and the Perlin corruption:
fitted on known data, their values checked by hand and against scipy."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import ndimage

from aad.models import corruptions
from aad.metrics import protocol
from aad import models  # noqa: F401  (registers the scorers)
from aad.scoring import normalisation
from aad import scoring


def _cfg(**kwargs):
  block = dict(normalisation.DEFAULTS, **kwargs)
  return ml_collections.ConfigDict({'normalised': block})


def test_gaussian_blur_matches_scipy():
  maps = np.random.default_rng(0).random((2, 13, 29)).astype(np.float32)
  for sigma in (0.7, 2.0):
    np.testing.assert_allclose(
        normalisation.gaussian_blur(jnp.asarray(maps), sigma),
        ndimage.gaussian_filter(maps, (0, sigma, sigma), mode='reflect',
                                truncate=4.0), atol=1e-5)
  np.testing.assert_array_equal(normalisation.gaussian_blur(maps, 0), maps)


def test_top_k_mean_by_hand():
  maps = jnp.asarray([[[1., 5.], [3., 2.]], [[0., 0.], [0., 7.]]])
  np.testing.assert_allclose(normalisation.top_k_mean(maps, 0.5), [4.0, 3.5])
  np.testing.assert_allclose(normalisation.top_k_mean(maps, 0.01), [5.0, 7.0])


def test_top_k_reduction_by_hand():
  maps = np.zeros((2, 50, 40))   # 2000 values: the top 0.1% are 2
  maps[0, 0, :2] = [4.0, 2.0]
  maps[1, 3, 3] = 9.0
  np.testing.assert_allclose(protocol.reduce(maps, 'top_k'), [3.0, 4.5])


def test_position_mode_standardises_each_pixel():
  rng = np.random.default_rng(1)
  # Error maps of 200 good images: pixel (i, j) ~ N(mu_ij, sd_ij).
  mu = rng.random((4, 6)).astype(np.float32)
  sd = (0.1 + rng.random((4, 6))).astype(np.float32)
  maps = mu + sd * rng.standard_normal((200, 4, 6)).astype(np.float32)
  x = np.zeros((200, 4, 6, 1), np.float32)
  s = normalisation.settings(_cfg(mode='position'))
  fitted = normalisation.fit_maps(x, maps, s)
  np.testing.assert_allclose(fitted['position_mean'], maps.mean(0),
                             rtol=1e-5)
  np.testing.assert_allclose(fitted['position_std'], maps.std(0), rtol=1e-5)
  # A new map at mean + 3 std everywhere normalises to 3.
  new = fitted['position_mean'] + 3 * fitted['position_std']
  z = normalisation.normalise(jnp.zeros((1, 4, 6, 1)), jnp.asarray(new[None]),
                           fitted, s)
  np.testing.assert_allclose(z, 3.0, rtol=1e-4)


def test_local_mode_conditions_on_intensity():
  # Left half dark (0.2), right half bright (0.8), flat; the error is 1
  # +- 0.1 on the dark side and 5 +- 1 on the bright one. With 2 bins the
  # two sides get their own mean and std.
  rng = np.random.default_rng(2)
  x = np.zeros((50, 8, 64, 1), np.float32)
  x[:, :, :32] = 0.2
  x[:, :, 32:] = 0.8
  dark = 1 + 0.1 * rng.choice([-1.0, 1.0], (50, 8, 32))
  bright = 5 + 1.0 * rng.choice([-1.0, 1.0], (50, 8, 32))
  maps = np.concatenate([dark, bright], -1).astype(np.float32)
  s = normalisation.settings(_cfg(mode='local', bins=2, local_sigma=1.0))
  fitted = normalisation.fit_maps(x, maps, s)
  # Pixels near the seam see both sides; away from it each side is pure.
  new = np.concatenate([np.full((1, 8, 32), 1.2), np.full((1, 8, 32), 7.0)],
                       -1).astype(np.float32)
  z = np.asarray(normalisation.normalise(jnp.asarray(x[:1]), jnp.asarray(new),
                                      fitted, s))
  np.testing.assert_allclose(z[0, :, :20], 2.0, rtol=0.05)
  np.testing.assert_allclose(z[0, :, 44:], 2.0, rtol=0.05)


def test_scorer_fits_on_validation_images_and_scores():
  s = scoring.get('normalised')
  assert s.fit_split == 'val' and s.fit_needs == ('reconstruction',)
  rng = np.random.default_rng(3)
  val = rng.integers(0, 256, (20, 16, 16, 1), np.uint8)
  recon = np.full((20, 16, 16, 1), 0.5, np.float32)
  cfg = _cfg(mode='position', smooth_sigma=0.0, top_k=1 / 256)
  fitted = scoring.fit([s], val, {'reconstruction': recon}, cfg)['normalised']
  residual = np.abs(val / 255.0 - 0.5)[..., 0]
  np.testing.assert_allclose(fitted['residual']['position_mean'],
                             residual.mean(0), atol=1e-6)
  test = val[:2].copy()
  amap, own = s.compute(jnp.asarray(test / 255.0, jnp.float32),
                        {'reconstruction': jnp.asarray(recon[:2])},
                        fitted, cfg)
  expected = (residual[:2] - residual.mean(0)) / (residual.std(0) + 1e-6)
  np.testing.assert_allclose(amap, expected, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(own, expected.reshape(2, -1).max(1), rtol=1e-3)


def test_two_sided_map_counts_less_error_than_usual():
  # Good images: residual 0.5 +- 0.1 at every pixel (inputs 0.5 +- 0.1
  # against a reconstruction of 0). A test image with a patch of residual
  # 0.1 (z = -4, texture lost) and a pixel of 0.8 (z = +3).
  s = scoring.get('normalised')
  val = np.full((2, 8, 8, 1), 0.5, np.float32)
  val[0] += 0.1
  val[1] -= 0.1
  recon = np.zeros_like(val)
  test = np.full((1, 8, 8, 1), 0.5, np.float32)
  test[0, 2:5, 2:5] = 0.1
  test[0, 6, 6] = 0.8
  outputs = {'reconstruction': jnp.zeros((1, 8, 8, 1))}
  expected = ((test - 0.5) / (0.1 + 1e-6))[0, ..., 0]
  for sides, want in ((1, np.minimum(expected, 3.5)),
                      (2, np.minimum(np.abs(expected), 3.5))):
    cfg = _cfg(mode='position', smooth_sigma=0.0, clip=3.5, sides=sides)
    fitted = normalisation.fit(
        np.round(val * 255).astype(np.uint8),
        {'reconstruction': recon}, cfg)
    amap = s.map(jnp.asarray(np.round(test * 255) / 255, jnp.float32),
                 outputs, fitted, cfg)
    np.testing.assert_allclose(amap[0], want, atol=0.05)
  with pytest.raises(ValueError, match='normalised.sides=3'):
    normalisation.settings(_cfg(sides=3))


def test_settings_name_bad_values():
  with pytest.raises(ValueError, match='normalised.mode'):
    normalisation.settings(_cfg(mode='everywhere'))
  with pytest.raises(ValueError, match="normalised.base: 'baseline_mean'"):
    normalisation.settings(_cfg(base=('baseline_mean',)))
  with pytest.raises(ValueError, match='top_k'):
    normalisation.settings(_cfg(top_k=0.0))
  with pytest.raises(ValueError, match='unknown key'):
    normalisation.settings(ml_collections.ConfigDict(
        {'normalised': dict(normalisation.DEFAULTS, sigma=1.0)}))
  assert normalisation.settings(types.SimpleNamespace(get=lambda k: None))[
      'base'] == ('residual',)


def test_perlin_mask_and_corruption():
  keys = jax.random.split(jax.random.key(0), 32)
  noise = jax.vmap(lambda k: corruptions.perlin_noise(
      k, (64, 96), jnp.array([4.0, 6.0])))(keys)
  assert noise.shape == (32, 64, 96)
  assert float(jnp.abs(noise).max()) <= 1.5
  # Zero at the lattice points (rows 0, 16, 32, ..., cols 0, 16, ...).
  np.testing.assert_allclose(noise[:, ::16, ::16], 0.0, atol=1e-5)
  image = jax.random.uniform(jax.random.key(1), (64, 96, 1))
  fn = jax.jit(jax.vmap(corruptions.make('perlin', dict(opacity=(1.0, 1.0))),
                        in_axes=(0, None)))
  out = np.asarray(fn(keys, image))
  assert out.shape == (32, 64, 96, 1)
  assert out.min() >= 0 and out.max() <= 1
  masks = jax.vmap(lambda k: corruptions.perlin_mask(
      jax.random.split(k)[0], (64, 96)))(keys)
  changed = np.abs(out - np.asarray(image))[..., 0] > 0
  # Only masked pixels change (a fill may equal the image by chance).
  assert not np.any(changed & (np.asarray(masks) == 0))
  coverage = np.asarray(masks).mean((1, 2))
  # Thresholding noise in about [-1, 1] at 0.5 covers a few % on average;
  # some masks are empty, none is full.
  assert 0.01 < coverage.mean() < 0.2 and coverage.max() < 0.6
  assert (changed.mean((1, 2)) > 0).sum() >= 16
  none = jax.jit(jax.vmap(corruptions.make('perlin', dict(p_clean=1.0)),
                          in_axes=(0, None)))(keys[:4], image)
  np.testing.assert_array_equal(none, np.broadcast_to(image, none.shape))
  with pytest.raises(ValueError, match='perlin scale'):
    corruptions.perlin_mask(keys[0], (8, 8), scale=(0.5, 2))
