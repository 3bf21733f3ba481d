"""Scorer plug-ins: the registry, the maps they compute, own image scores."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from aad.metrics import protocol
from aad import scoring

_PLAIN = types.SimpleNamespace(name='plain', scorers=('residual',),
                               output_names=('reconstruction',))


def test_resolve_defaults_to_the_family_list_and_names_bad_entries():
  assert [s.name for s in scoring.resolve((), _PLAIN)] == ['residual']
  assert [s.name for s in scoring.resolve(
      ('baseline_mean', 'residual'), _PLAIN)] == ['baseline_mean', 'residual']
  with pytest.raises(ValueError, match="config.eval.scorers: unknown scorer "
                     "'residul'; model 'plain' can use .*residual"):
    scoring.resolve(('residul',), _PLAIN)
  with pytest.raises(ValueError, match="'mc_variance' needs the output"):
    scoring.resolve(('mc_variance',), _PLAIN)
  with pytest.raises(ValueError, match='twice'):
    scoring.resolve(('residual', 'residual'), _PLAIN)


def test_maps_and_fit_by_hand():
  images = np.array([[[[0], [255]]], [[[51], [102]]]], np.uint8)  # (2,1,2,1)
  x = images / 255.0
  recon = np.full_like(x, 0.5)
  chosen = scoring.resolve(('residual', 'mc_variance', 'baseline_mean'),
                           types.SimpleNamespace(
                               name='f', scorers=(),
                               output_names=('reconstruction',
                                             'mc_variance')))
  fitted = scoring.fit(chosen, images)
  assert set(fitted) == {'baseline_mean'}
  np.testing.assert_allclose(fitted['baseline_mean'], x.mean(0), atol=1e-7)
  variance = np.arange(4, dtype=np.float32).reshape(2, 1, 2)
  out = scoring.make_maps_fn(chosen, None)(
      fitted, (images, {'reconstruction': jnp.asarray(recon),
                        'mc_variance': jnp.asarray(variance)}))
  assert out['image'] == {}
  np.testing.assert_allclose(out['maps']['residual'],
                             np.abs(x - 0.5)[..., 0], atol=1e-6)
  np.testing.assert_array_equal(out['maps']['mc_variance'], variance)
  np.testing.assert_allclose(out['maps']['baseline_mean'],
                             np.abs(x - x.mean(0))[..., 0], atol=1e-6)


def test_a_scorer_s_own_image_score_is_computed_and_evaluated():
  own = scoring.Scorer(
      name='peak', map=lambda x, o, f, c: x[..., 0],
      needs=('reconstruction',), label='peak', fit=None, baseline=False,
      image=lambda x, o, f, c: -jnp.mean(x, axis=(1, 2, 3)))
  images = np.array([[[[10], [20]]], [[[200], [250]]]], np.uint8)
  out = scoring.make_maps_fn([own], None)(
      {}, (images, {'reconstruction': jnp.zeros((2, 1, 2, 1))}))
  np.testing.assert_allclose(out['image']['peak'],
                             [-15 / 255, -225 / 255], atol=1e-6)
  # The map ranks image 1 first, its own score image 0: both are reported.
  entry = protocol.evaluate_scorer(
      np.asarray(out['maps']['peak']), [1, 0], np.zeros((2, 1, 2), bool) |
      np.array([[[True, False]], [[False, False]]]), ['cut', 'good'],
      protocol.Protocol(), own_scores=np.asarray(out['image']['peak']))
  assert entry['l2']['image_auroc'] == 0.0
  assert entry['own']['image_auroc'] == 1.0
  assert entry['by_type']['cut']['own']['image_auroc'] == 1.0
