"""The similarity measures as scorers: registry, config, map-less scorers,
their evaluation and the ranking table (a run using them end to end is in
tests/test_predict.py)."""

import inspect

import jax.numpy as jnp
import numpy as np
import pytest

from aad.metrics import protocol as evaluation
from aad.report import tables
from aad import scoring
from aad.scoring.similarity import MEASURES
from aad.scoring import similarity
from configs import default

MAPLESS = {'rmse', 'psnr', 'zncc', 'issm', 'sre', 'sh'}


def _pair(n=3, size=24, channels=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (n, size, size, channels)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
  return x, y


def test_every_measure_is_a_scorer_with_a_map_only_where_it_has_one():
  assert set(similarity.NAMES) == set(MEASURES)
  for name in MEASURES:
    s = scoring.get(name)
    assert s.has_map == (name not in MAPLESS), name
    assert s.image is not None and s.needs == ('reconstruction',)


def test_config_defaults_are_the_measures_defaults():
  block = default.get_config().eval.similarity
  assert set(block) == set(MEASURES)
  from aad.scoring.similarity import feature  # the functions behind in_chunks
  from aad.scoring.similarity import pixelwise, statistical, structural
  plain = {n: getattr(m, n) for m in (feature, pixelwise, statistical,
                                      structural) for n in MEASURES
           if hasattr(m, n)}
  plain_pc = inspect.signature(feature.phase_congruency).parameters
  for name, kwargs in block.items():
    params = dict(inspect.signature(plain[name]).parameters)
    if name == 'fsim':
      params.update(plain_pc)
    for key, value in kwargs.items():
      assert params[key].default == value, (name, key)


def test_scorer_values_are_the_measure_s_and_follow_the_config():
  x, y = _pair()
  cfg = default.get_config().eval
  # A map measure, a global one and the two with the most parameters
  # (each is compiled op by op here, so all thirteen would be slow).
  for name in ('se', 'psnr', 'ssim', 'sh'):
    measure = MEASURES[name]
    amap, own = scoring.get(name).compute(
        jnp.asarray(x), {'reconstruction': jnp.asarray(y)}, None, cfg)
    want = measure.fn(x, y)
    np.testing.assert_allclose(own, want.score, rtol=1e-5, atol=1e-6)
    if measure.has_map:
      np.testing.assert_allclose(amap, want.map, rtol=1e-5, atol=1e-6)
    else:
      assert amap is None
  cfg.similarity.ssim.filter_size = 5
  _, own = scoring.get('ssim').compute(
      jnp.asarray(x), {'reconstruction': jnp.asarray(y)}, None, cfg)
  np.testing.assert_allclose(
      own, MEASURES['ssim'].fn(x, y, filter_size=5).score, rtol=1e-5)
  assert not np.allclose(own, MEASURES['ssim'].fn(x, y).score)


def test_maps_fn_leaves_map_less_scorers_out_of_the_maps():
  x, y = _pair(n=2)
  chosen = [scoring.get(n) for n in ('residual', 'psnr', 'ssim')]
  out = scoring.make_maps_fn(chosen, default.get_config().eval)(
      {}, (np.round(x * 255).astype(np.uint8),
           {'reconstruction': jnp.asarray(y)}))
  assert set(out['maps']) == {'residual', 'ssim'}
  assert set(out['image']) == {'psnr', 'ssim'}
  with pytest.raises(ValueError, match='neither a map nor an image'):
    scoring.Scorer('nothing', None, (), 'n', None, False)


def test_image_only_evaluation_by_hand():
  labels = np.array([0, 0, 1, 1, 1])
  types = ['good', 'good', 'a', 'a', 'b']
  scores = np.array([0.1, 0.4, 0.3, 0.9, 0.5])
  protocol = evaluation.Protocol(threshold_mode='max')
  out = evaluation.evaluate(
      {}, labels, None, types, protocol, own_scores={'g': scores},
      val_own_scores={'g': np.array([0.2, 0.45])})['g']
  assert set(out) == {'own', 'by_type'}
  # 5 of the 6 (defective, good) pairs are ordered right.
  assert out['own']['image_auroc'] == pytest.approx(5 / 6)
  assert out['own']['threshold'] == pytest.approx(0.45)
  assert out['own']['threshold_recall'] == pytest.approx(2 / 3)
  assert out['by_type']['a']['own']['image_auroc'] == pytest.approx(3 / 4)
  assert out['by_type']['b']['own']['image_auroc'] == pytest.approx(1.0)
  assert evaluation.threshold_reduction(out, 'l2') == 'own'


def test_ranking_table_by_hand():
  flat = {'a/own/image_auroc': 0.7, 'a/pixel_auroc': 0.9,
          'b/l2/image_auroc': 0.8, 'b/pixel_auroc': 0.6,
          'c/own/image_auroc': 0.7}
  lines = tables.ranking_section(flat, {
      'a': ('a/own/image_auroc', 'a/pixel_auroc'),
      'b': ('b/l2/image_auroc', 'b/pixel_auroc'),
      'c': ('c/own/image_auroc', None),
      'gone': ('gone/l2/image_auroc', None)})
  rows = [[c.strip() for c in line.strip('|').split('|')]
          for line in lines[4:] if line.startswith('|')]
  assert lines[0] == '## Ranking'
  assert rows == [['b', 'l2', '0.8000', '1', '0.6000', '2'],
                  ['a', 'own', '0.7000', '2', '0.9000', '1'],
                  ['c', 'own', '0.7000', '2', '—', '—']]
