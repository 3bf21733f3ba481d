"""Tests of aad.metrics.protocol (protocol, thresholds, resolution) and its report."""

import json

import numpy as np
import pytest
from scipy import ndimage
import skimage.transform

from aad import data
from aad.metrics import protocol as evaluation
from aad.metrics import curves as metrics
from aad import report
from aad.report import tables
from aad.scoring import ops
from aad.data import preprocess

TYPES = ('good',) * 6 + ('crack',) * 3 + ('hole',) * 4


def _case(seed=0, size=12):
  """13 test images: 6 good, 3 cracks, 4 holes, each defect >= 1 pixel."""
  rng = np.random.default_rng(seed)
  labels = np.array([t != 'good' for t in TYPES], np.int32)
  masks = np.zeros((len(TYPES), size, size), np.uint8)
  for i in np.flatnonzero(labels):
    y, x = rng.integers(0, size - 4, 2)
    masks[i, y:y + int(rng.integers(1, 5)), x:x + int(rng.integers(1, 5))] = 1
  maps = (rng.random(masks.shape) + 0.7 * masks).astype(np.float32)
  return maps, masks, labels


def test_per_type_metrics_equal_the_metrics_of_the_subset():
  maps, masks, labels = _case()
  protocol = evaluation.Protocol(reductions=evaluation.REDUCTIONS,
                                 sigma=1.5)
  results = evaluation.evaluate({'res': maps}, labels, masks, TYPES,
                                protocol)
  flat = tables.flatten(results)
  good = np.arange(6)
  for name, defects in (('crack', np.arange(6, 9)),
                        ('hole', np.arange(9, 13))):
    idx = np.concatenate([good, defects])
    for r in evaluation.REDUCTIONS:
      scores = evaluation.reduce(maps[idx], r, sigma=1.5)
      prefix = f'res/by_type/{name}/{r}/'
      assert flat[prefix + 'image_auroc'] == metrics.auroc(labels[idx],
                                                           scores)
      assert flat[prefix + 'image_ap'] == metrics.average_precision(
          labels[idx], scores)
      f1, threshold = metrics.f1_max(labels[idx], scores)
      assert flat[prefix + 'image_f1_max'] == f1
      assert flat[prefix + 'image_f1_threshold'] == threshold
    prefix = f'res/by_type/{name}/'
    assert flat[prefix + 'pixel_auroc'] == metrics.pixel_auroc(masks[idx],
                                                               maps[idx])
    assert flat[prefix + 'pixel_ap'] == metrics.average_precision(
        masks[idx], maps[idx])
    assert flat[prefix + 'pixel_f1_max'] == metrics.f1_max(masks[idx],
                                                           maps[idx])[0]
    assert flat[prefix + 'pixel_au_pro'] == metrics.au_pro(masks[idx],
                                                           maps[idx])
  # The overall metrics pool every image.
  assert flat['res/l2/image_auroc'] == metrics.auroc(
      labels, evaluation.reduce(maps, 'l2'))
  assert flat['res/pixel_au_pro'] == metrics.au_pro(masks, maps)
  assert not any('threshold_f1' in k for k in flat)  # No val maps given.


def test_a_type_without_mask_pixels_gets_image_metrics_only():
  maps, masks, labels = _case()
  masks[6:9] = 0  # The cracks are not drawn.
  results = evaluation.evaluate_scorer(maps, labels, masks, TYPES,
                                       evaluation.Protocol())
  assert 'pixel_auroc' not in results['by_type']['crack']
  assert 'image_auroc' in results['by_type']['crack']['l2']
  assert 'pixel_auroc' in results['by_type']['hole']


def test_reductions():
  rng = np.random.default_rng(1)
  maps = rng.random((3, 20, 17)).astype(np.float32)
  for norm in ('l1', 'l2', 'linf'):
    np.testing.assert_allclose(evaluation.reduce(maps, norm),
                               ops.reduce_map(maps, norm), rtol=1e-6)
  expected = [ndimage.gaussian_filter(m.astype(np.float64), 2.5).max()
              for m in maps]
  np.testing.assert_allclose(evaluation.reduce(maps, 'smooth_max', 2.5),
                             expected, rtol=1e-12)
  # Smoothing pulls a lone hot pixel down, a broad plateau much less.
  spike, plateau = np.zeros((2, 32, 32))
  spike[16, 16], plateau[8:24, 8:24] = 1, 1
  smooth = evaluation.reduce(np.stack([spike, plateau]), 'smooth_max', 2)
  assert smooth[0] < 0.1 < 0.9 < smooth[1]
  with pytest.raises(ValueError, match='l3'):
    evaluation.reduce(maps, 'l3')


def test_threshold_calibration_by_hand():
  val = [0.1, 0.2, 0.3, 0.4, 0.5]
  assert evaluation.calibrate_threshold(val, 'max') == 0.5
  assert evaluation.calibrate_threshold(val, 'quantile', 0.5) == 0.3
  assert evaluation.calibrate_threshold(val, 'quantile', 0.9) == (
      pytest.approx(0.46))
  with pytest.raises(ValueError, match='median'):
    evaluation.calibrate_threshold(val, 'median')
  # Constant maps: every reduction of a map equals its constant.
  test_scores = np.array([0.1, 0.47, 0.6, 0.3, 0.5, 0.9])
  labels = np.array([0, 0, 0, 1, 1, 1])
  maps = np.broadcast_to(test_scores[:, None, None], (6, 4, 4)).copy()
  masks = np.zeros((6, 4, 4), np.uint8)
  masks[3:, 0, 0] = 1
  val_map = np.broadcast_to(np.array(val)[:, None, None], (5, 4, 4))
  for mode, quantile, expected in (
      # >= 0.46: 0.47, 0.6 (good) and 0.5, 0.9 (defective) are flagged.
      ('quantile', 0.9, (0.46, 2 / 4, 2 / 3)),
      # >= 0.5: 0.6, 0.5 and 0.9; a score equal to the threshold counts.
      ('max', 0.99, (0.5, 2 / 3, 2 / 3))):
    protocol = evaluation.Protocol(threshold_mode=mode,
                                   threshold_quantile=quantile)
    results = evaluation.evaluate_scorer(maps, labels, masks, ('x',) * 6,
                                         protocol, val_map=val_map)
    entry = results['l2']
    threshold, precision, recall = expected
    assert entry['threshold'] == pytest.approx(threshold)
    assert entry['threshold_precision'] == pytest.approx(precision)
    assert entry['threshold_recall'] == pytest.approx(recall)
    assert entry['threshold_f1'] == pytest.approx(
        2 * precision * recall / (precision + recall))
    assert 'threshold' not in results['l1']  # The headline only.


def test_protocol_validation_and_config():
  from configs import default  # pylint: disable=g-import-not-at-top
  protocol = evaluation.Protocol.from_config(default.get_config().eval)
  assert protocol == evaluation.Protocol()
  with pytest.raises(ValueError, match='headline'):
    evaluation.Protocol(reductions=('l1',), headline='l2')
  with pytest.raises(ValueError, match='threshold_mode'):
    evaluation.Protocol(threshold_mode='mean')


def test_resize_maps_bilinear_by_hand():
  maps = np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32)
  row0, row1 = [0, 0.25, 0.75, 1], [2, 2.25, 2.75, 3]
  expected = [row0, [0.5, 0.75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5], row1]
  np.testing.assert_allclose(evaluation.resize_maps(maps, (4, 4))[0],
                             expected)
  rng = np.random.default_rng(2)
  maps = rng.random((2, 8, 6))
  np.testing.assert_allclose(
      evaluation.resize_maps(maps, (16, 15)),
      # 'edge' (not the default 'reflect', a mirror) repeats the border
      # pixels as torch's align_corners=False does.
      [skimage.transform.resize(m, (16, 15), order=1, mode='edge',
                                anti_aliasing=False) for m in maps],
      atol=1e-9)


def test_original_resolution_upsamples_maps_to_the_native_masks():
  native = np.zeros((2, 16, 16), np.uint8)
  native[1, 4:8, 4:8] = 1
  masks = preprocess.resize_masks(native, 8)
  maps = {'a': np.ones((2, 8, 8), np.float32),
          'b': np.arange(128, dtype=np.float32).reshape(2, 8, 8)}
  out, out_masks = evaluation.at_resolution('original', maps, masks, native)
  assert out_masks is native or np.array_equal(out_masks, native)
  assert {k: v.shape for k, v in out.items()} == {'a': (2, 16, 16),
                                                  'b': (2, 16, 16)}
  np.testing.assert_array_equal(out['a'], 1)
  same, same_masks = evaluation.at_resolution('model', maps, masks, native)
  assert same['b'] is maps['b'] and same_masks.shape == (2, 8, 8)
  with pytest.raises(ValueError, match='native_masks'):
    evaluation.at_resolution('original', maps, masks, None)
  with pytest.raises(ValueError, match='pixels'):
    evaluation.at_resolution('pixels', maps, masks, native)


def test_load_keeps_the_native_masks(textures_dir):
  dataset = data.load('textures', 'brick', image_size=32, channels=1,
                      data_dir=textures_dir)
  test = dataset.test
  assert test.native_masks.shape == (len(test), 128, 128)
  assert test.native_masks.dtype == np.uint8 and test.native_masks.any()
  np.testing.assert_array_equal(
      preprocess.resize_masks(test.native_masks, 32), test.masks)


def test_category_and_summary_reports(tmp_path):
  maps, masks, labels = _case(size=16)
  val = np.random.default_rng(3).random((5, 16, 16))
  scorer_maps = {'residual': maps, 'mc_variance': maps ** 2}
  protocol = evaluation.Protocol(sigma=1.0)
  results = evaluation.evaluate(scorer_maps, labels, masks, TYPES, protocol,
                                val_maps={'residual': val})
  curves = evaluation.curves(scorer_maps, labels, masks, protocol)
  fpr, tpr = curves['roc_pixel']['residual']
  assert np.trapezoid(tpr, fpr) == pytest.approx(
      results['residual']['pixel_auroc'])
  columns = ['residual/l2/image_auroc', 'residual/pixel_au_pro']
  out = tmp_path / 'cat'
  flat = report.write_category_report(
      str(out), category='cat', metrics=results,
      roc_curves={'image': curves['roc_image'],
                  'pixel': curves['roc_pixel']},
      pr_curves={'image': curves['pr_image'], 'pixel': curves['pr_pixel']},
      pr_chance={'image': 7 / 13, 'pixel': float(masks.mean())},
      pro_curves=curves['pro'], score_histograms=curves['scores'],
      thresholds={'residual': results['residual']['l2']['threshold']},
      image_score='l2', heatmap_rows=[], columns=[], notes=['n'],
      grouped=True, type_columns=columns)
  assert sorted(p.name for p in out.iterdir()) == [
      'metrics.json', 'pr_image.png', 'pr_pixel.png', 'pro.png',
      'report.md', 'roc_image.png', 'roc_pixel.png', 'score_histograms.png']
  assert json.loads((out / 'metrics.json').read_text()) == flat
  md = (out / 'report.md').read_text()
  assert ('| scorer | reduction | image_auroc | image_ap | image_f1_max | '
          'image_f1_threshold |') in md
  assert '| residual | smooth_max | ' in md
  assert '| scorer | pixel_auroc | pixel_ap |' in md
  assert ('| scorer | reduction | threshold | threshold_precision | '
          'threshold_recall | threshold_f1 |') in md
  assert ('| defect type | residual/l2/image_auroc | '
          'residual/pixel_au_pro |') in md
  assert f"| hole | {flat['residual/by_type/hole/l2/image_auroc']:.4f} |" in md
  mean = report.write_summary_report(
      str(tmp_path), per_category={'cat': flat, 'dog': flat}, title='t',
      notes=[], headline_keys=columns, grouped=True, type_columns=columns)
  assert mean == pytest.approx(flat)
  summary = (tmp_path / 'report.md').read_text()
  assert '| **mean** |' in summary and '### Per defect type' in summary
  assert summary.index('### Image level') < summary.index('### Pixel level')
