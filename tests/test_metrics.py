"""Tests of aad.metrics: against scikit-learn, brute force and hand values."""

import numpy as np
import pytest
from sklearn import metrics as skm

from aad.metrics import curves

TINY_LABELS = [0, 0, 1, 1]
TINY_SCORES = [0.1, 0.4, 0.35, 0.8]


def _random_case(seed, tied):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(10, 400))
  labels = rng.random(n) < rng.uniform(0.05, 0.9)
  labels[:2] = [True, False]  # Both classes present.
  scores = rng.integers(0, 6, n) if tied else rng.normal(size=n) + labels
  return labels, scores


CASES = [(seed, tied) for seed in range(5) for tied in (False, True)]


@pytest.mark.parametrize('seed,tied', CASES)
def test_against_sklearn(seed, tied):
  labels, scores = _random_case(seed, tied)
  np.testing.assert_allclose(curves.auroc(labels, scores),
                             skm.roc_auc_score(labels, scores), rtol=1e-12)
  np.testing.assert_allclose(
      curves.average_precision(labels, scores),
      skm.average_precision_score(labels, scores), rtol=1e-12)


@pytest.mark.parametrize('seed,tied', CASES)
def test_curves_are_points_of_sklearn_curves(seed, tied):
  labels, scores = _random_case(seed, tied)
  fpr, tpr, thr = curves.roc_curve(labels, scores)
  assert (fpr[0], tpr[0], thr[0]) == (0, 0, np.inf)
  assert (fpr[-1], tpr[-1]) == (1, 1) and np.all(np.diff(thr) < 0)
  ref = skm.roc_curve(labels, scores, drop_intermediate=False)
  ref = {t: (f, p) for f, p, t in zip(*ref)}
  for f, p, t in zip(fpr, tpr, thr):
    np.testing.assert_allclose((f, p), ref[t], rtol=1e-12)
  precision, recall, thr = curves.pr_curve(labels, scores)
  assert (precision[-1], recall[-1]) == (1, 0)
  ref = skm.precision_recall_curve(labels, scores, drop_intermediate=False)
  ref = {t: (p, r) for p, r, t in zip(*ref)}
  for p, r, t in zip(precision, recall, thr):
    np.testing.assert_allclose((p, r), ref[t], rtol=1e-12)


@pytest.mark.parametrize('tied', [False, True])
def test_pixel_auroc_pools_all_pixels(tied):
  rng = np.random.default_rng(7)
  masks = rng.random((4, 9, 11)) < 0.2
  maps = rng.integers(0, 4, masks.shape) if tied else rng.random(masks.shape)
  maps = maps + masks
  np.testing.assert_allclose(curves.pixel_auroc(masks.astype(np.uint8), maps),
                             skm.roc_auc_score(masks.ravel(), maps.ravel()),
                             rtol=1e-12)


def test_hand_computed():
  assert curves.auroc(TINY_LABELS, TINY_SCORES) == pytest.approx(0.75)
  assert curves.auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
  # Descending: 0.8 (P=1, R=1/2), 0.4 neg, 0.35 (P=2/3, R=1).
  assert curves.average_precision(TINY_LABELS, TINY_SCORES) == (
      pytest.approx(0.5 + 0.5 * 2 / 3))
  # Best F1 at 0.35: P = 2/3, R = 1, F1 = 0.8.
  f1, thr = curves.f1_max(TINY_LABELS, TINY_SCORES)
  assert (f1, thr) == (pytest.approx(0.8), 0.35)
  np.testing.assert_allclose(
      curves.precision_recall_f1_at(TINY_LABELS, TINY_SCORES, 0.35),
      (2 / 3, 1, 0.8), rtol=1e-9)
  np.testing.assert_allclose(
      curves.precision_recall_f1_at(TINY_LABELS, TINY_SCORES, 0.5),
      (1, 0.5, 2 / 3), rtol=1e-9)


@pytest.mark.parametrize('seed,tied', CASES)
def test_f1_max_brute_force(seed, tied):
  labels, scores = _random_case(seed, tied)
  best = max(curves.precision_recall_f1_at(labels, scores, t)[2]
             for t in np.unique(scores))
  f1, thr = curves.f1_max(labels, scores)
  assert f1 == pytest.approx(best, rel=1e-12)
  assert curves.precision_recall_f1_at(labels, scores, thr)[2] == (
      pytest.approx(f1, rel=1e-12))


def test_one_class_and_bad_input_raise():
  for fn in (curves.auroc, curves.average_precision, curves.f1_max):
    with pytest.raises(ValueError, match='one class'):
      fn([1, 1, 1], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match='one class'):
    curves.pixel_auroc(np.zeros((2, 3, 3)), np.ones((2, 3, 3)))
  with pytest.raises(ValueError, match='No anomalous'):
    curves.au_pro(np.zeros((2, 3, 3)), np.ones((2, 3, 3)))
  with pytest.raises(ValueError, match='0/1'):
    curves.auroc([0, 255], [0.1, 0.2])
  with pytest.raises(ValueError, match='finite'):
    curves.auroc([0, 1], [0.1, np.nan])
  with pytest.raises(ValueError, match='shape'):
    curves.pixel_auroc(np.zeros((2, 3, 3)), np.ones((2, 3, 4)))


def _two_images(mask_pixels, mask_scores, normal_score=5.0):
  """A good 4x4 image and a 4x4 image with the given anomalous pixels."""
  masks, maps = np.zeros((2, 4, 4), bool), np.full((2, 4, 4), normal_score)
  for (y, x), s in zip(mask_pixels, mask_scores):
    masks[1, y, x], maps[1, y, x] = True, s
  return masks, maps


def test_au_pro_closed_forms():
  masks = np.zeros((3, 8, 8), bool)
  masks[1, 1:3, 1:4] = masks[2, 5:8, 0:2] = masks[2, 0, 7] = True
  assert curves.au_pro(masks, masks.astype(float)) == pytest.approx(1.0)
  # Constant map: one threshold, the curve is the segment (0,0)-(1,1) and
  # the area on [0, a] / a is a / 2 (the AUROC = 0.5 tie convention).
  assert curves.au_pro(masks, np.ones(masks.shape)) == pytest.approx(0.15)
  # Region A (2 px) found before any normal pixel, region B (1 px) only
  # after all of them: PRO = 0.5 for 0 <= FPR < 1.
  masks, maps = _two_images([(0, 0), (0, 1), (3, 3)], [9, 9, 1])
  assert curves.au_pro(masks, maps) == pytest.approx(0.5)
  # 8-connectivity: the diagonal pair (0,0),(1,1) is one region, half found;
  # the lone pixel (3,3) is found: PRO = (1/2 + 1) / 2 = 0.75 (4-connected
  # regions would give 2/3, pooling pixels would also give 2/3).
  masks, maps = _two_images([(0, 0), (1, 1), (3, 3)], [9, 1, 9])
  assert curves.au_pro(masks, maps) == pytest.approx(0.75)


def test_au_pro_linear_curve():
  # 100 normal pixels scored 0..99 and one 100-pixel region scored 50..99
  # twice each: PRO = 2 FPR at every threshold, so the area on [0, a] is
  # a^2 and the result is a (also when a falls between curve points).
  masks = np.zeros((2, 10, 10), bool)
  masks[1] = True
  maps = np.stack([np.arange(100.0).reshape(10, 10),
                   np.repeat(np.arange(50.0, 100.0), 2).reshape(10, 10)])
  for limit in (0.3, 0.255, 0.1):
    assert curves.au_pro(masks, maps, fpr_limit=limit) == (
        pytest.approx(limit, rel=1e-12))
  with pytest.raises(ValueError, match='fpr_limit'):
    curves.au_pro(masks, maps, fpr_limit=0)


def _brute_force_au_pro(masks, maps, limit):
  """Loops over thresholds and regions (4 or 8 pixels apart = connected)."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  regions = [r for mask, smap in zip(masks, maps)
             for labelled, n in [ndimage.label(mask, np.ones((3, 3)))]
             for r in (smap[labelled == i] for i in range(1, n + 1))]
  normal = maps[~masks]
  points = [(0.0, 0.0)] + [
      (np.mean(normal >= t), np.mean([np.mean(r >= t) for r in regions]))
      for t in np.unique(maps)[::-1]]
  x, y = np.array(points).T
  keep = x <= limit
  stop = np.argmax(~keep) if not keep.all() else x.size
  xs, ys = list(x[keep]), list(y[keep])
  if stop < x.size and xs[-1] < limit:
    ys.append(np.interp(limit, x[stop - 1:stop + 1], y[stop - 1:stop + 1]))
    xs.append(limit)
  return np.trapezoid(ys, xs) / limit


@pytest.mark.parametrize('seed,tied', CASES[:6])
def test_au_pro_brute_force(seed, tied):
  rng = np.random.default_rng(seed)
  masks = np.zeros((4, 12, 12), bool)
  for i in range(1, 4):
    for _ in range(2):
      y, x, h, w = rng.integers(0, 10, 4)
      masks[i, y:y + h // 3 + 1, x:x + w // 3 + 1] = True
  maps = rng.integers(0, 8, masks.shape) if tied else rng.random(masks.shape)
  maps = maps + 2.0 * masks * rng.random(masks.shape)
  for limit in (0.3, 1.0):
    assert curves.au_pro(masks, maps, limit) == pytest.approx(
        _brute_force_au_pro(masks, maps, limit), rel=1e-10)
  together = curves.pixel_metrics(masks, maps)
  assert together == {
      'pixel_auroc': curves.pixel_auroc(masks, maps),
      'pixel_ap': curves.average_precision(masks, maps),
      'pixel_f1_max': curves.f1_max(masks, maps)[0],
      'pixel_f1_threshold': curves.f1_max(masks, maps)[1],
      'pixel_au_pro': curves.au_pro(masks, maps)}
  fpr, pro, _ = curves.pro_curve(masks, maps)
  assert (fpr[0], pro[0], fpr[-1]) == (0, 0, 1)
  assert pro[-1] == pytest.approx(1) and np.all(np.diff(fpr) >= 0)
