"""Activation-Gaussian detector (seed 001): the Gaussian fit, the sampled
activations of AESc, and the scorer's fit on a family's outputs."""

import jax
import numpy as np
import pytest

from aad.scoring import gaussian as ag
from aad import models
from aad import scoring
from configs import test as test_config


def _known(n, seed=0):
  rng = np.random.default_rng(seed)
  size, layers = 5, 2
  mean = rng.normal(size=(layers, size))
  a = rng.normal(size=(layers, size, size))
  cov = a @ a.transpose(0, 2, 1) + 0.5 * np.eye(size)
  v = np.stack([rng.multivariate_normal(mean[l], cov[l], n)
                for l in range(layers)], axis=1)
  return v, mean, cov


def _mahalanobis(v, mean, cov):
  d = v - mean
  return np.sqrt(np.einsum('nli,lij,nlj->nl', d, np.linalg.inv(cov), d))


def test_fit_on_a_known_gaussian_recovers_its_mahalanobis_distances():
  train, mean, cov = _known(40000)
  test, _, _ = _known(200, seed=1)
  fitted = ag.fit_gaussian(train, reg=0.0)
  got = np.asarray(ag.layer_distances(test, fitted))
  want = _mahalanobis(test, mean, cov)
  np.testing.assert_allclose(got, want, rtol=0.03, atol=0.03)
  # The score is the distance of the concatenated vector under the
  # block-diagonal covariance.
  score = ag.score(None, {'activations': test}, fitted, None)
  np.testing.assert_allclose(score, np.sqrt((got**2).sum(1)), rtol=1e-5)


def test_regularised_fit_matches_the_numpy_formula():
  train, _, _ = _known(30, seed=2)
  test, _, _ = _known(7, seed=3)
  fitted = ag.fit_gaussian(train, reg=1e-3)
  want = []
  for l in range(train.shape[1]):
    cov = np.cov(train[:, l], rowvar=False)
    cov += 1e-3 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    d = test[:, l] - train[:, l].mean(0)
    want.append(np.sqrt(np.einsum('ni,ij,nj->n', d, np.linalg.inv(cov), d)))
  np.testing.assert_allclose(ag.layer_distances(test, fitted),
                             np.stack(want, 1), rtol=1e-3)
  # Training images sit closer than shifted ones.
  shifted = ag.layer_distances(train + 3.0, fitted)
  assert np.all(shifted.mean(0) > ag.layer_distances(train, fitted).mean(0))
  with pytest.raises(ValueError, match='at least 2'):
    ag.fit_gaussian(train[:1])


def test_aesc_samples_fixed_positions_of_the_chosen_layers():
  config = test_config.get_config()
  config.eval.activation_gaussian.layers = ('enc1', 'dec0')
  config.eval.activation_gaussian.vector_size = 16
  family = models.create(config)
  variables = family.prepare(family.init(jax.random.key(0), (32, 32, 1)),
                             (32, 32, 1))
  x = np.random.default_rng(0).uniform(size=(3, 32, 32, 1)).astype(
      np.float32)
  out = family.outputs(variables, x, None, frozenset({'activations'}))
  assert out['activations'].shape == (3, 2, 16)
  plain = family.outputs(variables, x, None, frozenset())
  np.testing.assert_allclose(out['reconstruction'], plain['reconstruction'],
                             atol=1e-6)
  # Image i's vector depends on image i only (one mask for all images).
  one = family.outputs(variables, x[1:2], None, frozenset({'activations'}))
  np.testing.assert_allclose(one['activations'][0], out['activations'][1],
                             rtol=1e-5, atol=1e-6)
  config.eval.activation_gaussian.layers = ('enc9',)
  with pytest.raises(ValueError, match='activation_gaussian.layers'):
    models.create(config).outputs(variables, x, None,
                                  frozenset({'activations'}))
  config.eval.activation_gaussian.layers = ('enc2',)
  config.eval.activation_gaussian.vector_size = 10**6
  with pytest.raises(ValueError, match='vector_size'):
    models.create(config).outputs(variables, x, None,
                                  frozenset({'activations'}))


def test_scorer_is_fitted_on_the_outputs_it_declares():
  s = scoring.get('activation_gaussian')
  assert s.fit_needs == ('activations',) and not s.has_map
  assert scoring.fit_outputs([s, scoring.get('baseline_mean')]) == {
      'activations'}
  train, _, _ = _known(50)
  cfg = test_config.get_config().eval
  fitted = scoring.fit([s], np.zeros((50, 2, 2, 1), np.uint8),
                       {'activations': train}, cfg)
  np.testing.assert_allclose(fitted['activation_gaussian']['mean'],
                             train.mean(0), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='fitted on the outputs activations'):
    scoring.fit([s], np.zeros((50, 2, 2, 1), np.uint8))


def test_patch_mode_fits_every_tile_and_scores_an_image_by_its_worst():
  tiles, _, _ = _known(60, seed=4)              # (60, L, V): 12 images x 5
  fitted = ag.fit({}, {'activations': tiles.reshape(12, 5, 2, 5)},
                  test_config.get_config().eval)
  flat = ag.fit_gaussian(tiles, reg=1e-3)
  for k in flat:
    np.testing.assert_allclose(fitted[k], flat[k], rtol=1e-5)
  test, _, _ = _known(12, seed=5)
  test[7] += 4.0                                  # one far tile of image 2
  per_tile = ag.score(None, {'activations': test}, flat, None)
  per_image = ag.score(None, {'activations': test.reshape(4, 3, 2, 5)},
                       flat, None)
  np.testing.assert_allclose(per_image,
                             np.asarray(per_tile).reshape(4, 3).max(1),
                             rtol=1e-6)
  assert int(np.argmax(per_image)) == 2
