"""Detection metrics on the host: ROC/AUROC, PR/AP, F1-max and AU-PRO.

Everything here is exact (no score binning) and plain NumPy; rates and areas
are float64. Scores keep their floating dtype while sorting, so float32 maps
are neither copied nor merged into coarser ties.

All curves come from one helper, `_curve`, that counts (weighted) positives
and negatives with `score >= threshold`. It only sorts the negatives and the
positives separately and evaluates the counts at the vertices of the
piecewise-linear curve: every distinct positive score `v` and the next
distinct score above it. The thresholds it leaves out only add negatives, so
their points lie on straight segments between the kept ones (horizontal in
ROC/PRO space, vertical in PR space). Areas, AP and F1-max are therefore the
same as over all distinct thresholds (sklearn), at about half the cost of an
argsort of all pixels. `pixel_metrics` shares that one sort between all the
pixel-level metrics.

AU-PRO follows Bergmann et al. (MVTec AD, IJCV 2021): the per-region overlap
averaged over all GT regions equals a true-positive rate in which each
anomalous pixel weighs 1 / (num_regions * region_size), so the PRO curve is
computed exactly by the same helper. Like AUROC with tied scores, points are
joined linearly (the expectation under random tie-breaking): a constant map
gives PRO = FPR and AU-PRO = fpr_limit / 2 / fpr_limit = 0.5 * fpr_limit.
"""

from typing import NamedTuple

import numpy as np
from scipy import ndimage

# anomalib's guard against 0/0 in the F1 score.
_F1_EPS = 1e-10


class _Curve(NamedTuple):
  fps: np.ndarray  # Negatives with score >= threshold (float64 counts).
  tps: np.ndarray  # (Weighted) positives with score >= threshold.
  thresholds: np.ndarray  # Strictly decreasing; inf first, for (0, 0).
  num_neg: int
  pos_total: float  # Number (or total weight) of positives.


def _as_labels(labels) -> np.ndarray:
  """Returns `labels` as booleans; they must be boolean or 0/1."""
  labels = np.asarray(labels)
  if labels.dtype != bool:
    if np.any((labels != 0) & (labels != 1)):
      raise ValueError('labels/masks must be boolean or 0/1; binarise '
                       'masks (e.g. mask > 0.5) before scoring.')
    labels = labels == 1
  return labels


def _as_scores(scores) -> np.ndarray:
  scores = np.asarray(scores)
  if not np.issubdtype(scores.dtype, np.floating):
    scores = scores.astype(np.float64)
  if not np.all(np.isfinite(scores)):
    raise ValueError('scores must be finite (no NaN or inf).')
  return scores


def _split(labels, scores) -> tuple[np.ndarray, np.ndarray]:
  """Validates; returns (sorted negative scores, positive scores)."""
  labels, scores = _as_labels(labels), _as_scores(scores)
  if labels.shape != scores.shape:
    raise ValueError(f'labels {labels.shape} and scores {scores.shape} '
                     'differ in shape.')
  labels, scores = labels.ravel(), scores.ravel()
  neg, pos = np.sort(scores[~labels]), scores[labels]
  if not neg.size or not pos.size:
    raise ValueError(f'Only one class present ({pos.size} positives, '
                     f'{neg.size} negatives): the metric is undefined.')
  return neg, pos


def _curve(neg, pos, pos_weights=None) -> _Curve:
  """Counts at the vertices of the ROC curve, highest threshold first.

  Args:
    neg: sorted scores of the negatives, from `_split`.
    pos: scores of the positives (any order), from `_split`.
    pos_weights: optional float weights of the positives, aligned with
      `pos`; default 1 each.

  Returns:
    A `_Curve` with (0, 0) at threshold inf first and (num_neg, pos_total) at
    the lowest score last.
  """
  weights = (np.ones(pos.size) if pos_weights is None
             else np.asarray(pos_weights, np.float64))
  order = np.argsort(pos, kind='stable')
  pos = pos[order]
  cum = np.concatenate([[0.0], np.cumsum(weights[order])])
  new = np.ones(pos.size, bool)
  new[1:] = pos[1:] != pos[:-1]
  first = np.flatnonzero(new)  # First index of each distinct positive.
  end = np.append(first[1:], pos.size)
  values = pos[first]  # Distinct positive scores, ascending.
  total, num_neg = cum[-1], neg.size
  above = np.searchsorted(neg, values, 'right')
  # Smallest score strictly above each value: its threshold counts exactly
  # the samples > value. inf means none, i.e. the origin.
  next_neg = np.where(above < num_neg, neg[np.minimum(above, num_neg - 1)],
                      np.inf)
  next_score = np.minimum(next_neg, np.append(values[1:], np.inf))
  thresholds = np.concatenate([values, next_score, [min(neg[0], pos[0])]])
  fps = np.concatenate([num_neg - np.searchsorted(neg, values, 'left'),
                        num_neg - above, [num_neg]]).astype(np.float64)
  tps = np.concatenate([total - cum[first], total - cum[end], [total]])
  keep = np.isfinite(thresholds)
  # Equal thresholds carry equal counts, so any duplicate may be kept.
  thresholds, index = np.unique(thresholds[keep], return_index=True)
  index = index[::-1]
  return _Curve(np.concatenate([[0.0], fps[keep][index]]),
                np.concatenate([[0.0], tps[keep][index]]),
                np.concatenate([[np.inf], thresholds[::-1]]),
                num_neg, float(total))


def _precision_recall(curve: _Curve) -> tuple[np.ndarray, np.ndarray]:
  predicted = curve.tps + curve.fps
  # Only the origin predicts nothing; sklearn gives it precision 1.
  precision = np.divide(curve.tps, predicted, out=np.ones_like(curve.tps),
                        where=predicted > 0)
  return precision, curve.tps / curve.pos_total


def _rates(curve: _Curve):
  return curve.fps / curve.num_neg, curve.tps / curve.pos_total, (
      curve.thresholds)


def _f1_max(curve: _Curve) -> tuple[float, float]:
  precision, recall = _precision_recall(curve)
  f1 = 2 * precision * recall / (precision + recall + _F1_EPS)
  best = 1 + int(np.argmax(f1[1:]))  # Skip the origin (threshold inf).
  return float(f1[best]), float(curve.thresholds[best])


def _average_precision(curve: _Curve) -> float:
  precision, recall = _precision_recall(curve)
  return float(np.sum(np.diff(recall) * precision[1:]))


def _auroc(curve: _Curve) -> float:
  fpr, tpr, _ = _rates(curve)
  return float(np.trapezoid(tpr, fpr))


def roc_curve(labels, scores):
  """Exact ROC curve with `pred = score >= threshold`.

  Args:
    labels: boolean or 0/1 array (1 = anomalous), any shape.
    scores: array of the same shape.

  Returns:
    (fpr, tpr, thresholds): thresholds strictly decreasing, inf first for the
    prepended (0, 0); the last point is (1, 1). Thresholds at which only
    negatives change are omitted (their points are collinear).
  """
  return _rates(_curve(*_split(labels, scores)))


def auroc(labels, scores) -> float:
  """Area under the exact ROC curve (= sklearn `roc_auc_score`, ties too)."""
  return _auroc(_curve(*_split(labels, scores)))


def _check_maps(masks, maps) -> tuple[np.ndarray, np.ndarray]:
  masks, maps = _as_labels(masks), np.asarray(maps)
  if masks.ndim == 2:
    masks, maps = masks[None], maps[None]
  if masks.ndim != 3 or masks.shape != maps.shape:
    raise ValueError(f'Expected masks and maps of equal shape (N, H, W); '
                     f'got {masks.shape} and {maps.shape}.')
  return masks, maps


def pixel_auroc(masks, maps) -> float:
  """AUROC over all pixels of all images pooled (masks and maps (N, H, W))."""
  return auroc(*_check_maps(masks, maps))


def pr_curve(labels, scores):
  """Precision-recall curve in sklearn's `precision_recall_curve` layout.

  Returns:
    (precision, recall, thresholds): thresholds increasing; precision and
    recall have one more entry, the final (1, 0) point.
  """
  curve = _curve(*_split(labels, scores))
  precision, recall = _precision_recall(curve)
  return precision[::-1], recall[::-1], curve.thresholds[:0:-1]


def average_precision(labels, scores) -> float:
  """sklearn's average precision: sum over thresholds of dRecall * P."""
  return _average_precision(_curve(*_split(labels, scores)))


def f1_max(labels, scores) -> tuple[float, float]:
  """Best F1 = 2PR / (P + R + 1e-10) over all thresholds (anomalib F1Max).

  Returns:
    (f1, threshold) with predictions `score >= threshold`.
  """
  return _f1_max(_curve(*_split(labels, scores)))


def precision_recall_f1_at(labels, scores, threshold):
  """(precision, recall, f1) of `pred = score >= threshold`, F1 as f1_max."""
  labels, scores = _as_labels(labels), _as_scores(scores)
  pred = scores >= threshold
  tp = float(np.count_nonzero(pred & labels))
  num_pred, num_pos = np.count_nonzero(pred), np.count_nonzero(labels)
  precision = tp / num_pred if num_pred else 0.0
  recall = tp / num_pos if num_pos else 0.0
  return precision, recall, 2 * precision * recall / (
      precision + recall + _F1_EPS)


def _pro_weights(masks: np.ndarray) -> np.ndarray:
  """1 / (num_regions * region size) per anomalous pixel, row-major."""
  # 8-connected within each image, never across the image axis.
  structure = np.zeros((3, 3, 3), bool)
  structure[1] = True
  regions, num_regions = ndimage.label(masks, structure=structure)
  if not num_regions:
    raise ValueError('No anomalous pixels: PRO is undefined.')
  region_ids = regions[masks]  # Same order as the positives of `_split`.
  return 1.0 / (num_regions * np.bincount(region_ids)[region_ids])


def pro_curve(masks, maps):
  """Per-region-overlap curve against the global false-positive rate.

  GT regions are the 8-connected components of each image's mask; PRO is
  the overlap averaged over all regions of all images, FPR is over all
  normal pixels (good images and defect backgrounds).

  Args:
    masks: (N, H, W) boolean or 0/1 ground truth (or one (H, W) mask).
    maps: anomaly maps of the same shape.

  Returns:
    (fpr, pro, thresholds) as `roc_curve`: from (0, 0) to (1, 1).
  """
  masks, maps = _check_maps(masks, maps)
  weights = _pro_weights(masks)
  return _rates(_curve(*_split(masks, maps), weights))


def _area_up_to(x, y, limit) -> float:
  """Trapezoid area under (x, y) for x in [0, limit], x non-decreasing."""
  stop = np.searchsorted(x, limit, 'right')
  xs, ys = x[:stop], y[:stop]
  if stop < x.size and xs[-1] < limit:
    # Exact linear interpolation at the limit (x[stop] > limit > xs[-1]).
    frac = (limit - xs[-1]) / (x[stop] - xs[-1])
    xs = np.append(xs, limit)
    ys = np.append(ys, ys[-1] + frac * (y[stop] - ys[-1]))
  return float(np.trapezoid(ys, xs))


def _au_pro(curve: _Curve, fpr_limit: float) -> float:
  if not 0 < fpr_limit <= 1:
    raise ValueError(f'fpr_limit must lie in (0, 1]; got {fpr_limit}.')
  fpr, pro, _ = _rates(curve)
  return _area_up_to(fpr, pro, fpr_limit) / fpr_limit


def au_pro(masks, maps, fpr_limit: float = 0.3) -> float:
  """Area under PRO(FPR) on [0, fpr_limit], divided by fpr_limit.

  Args:
    masks: (N, H, W) boolean or 0/1 ground truth.
    maps: anomaly maps of the same shape.
    fpr_limit: upper FPR integration bound in (0, 1].

  Returns:
    The normalised area: 1.0 for a perfect map.
  """
  masks, maps = _check_maps(masks, maps)
  weights = _pro_weights(masks)
  return _au_pro(_curve(*_split(masks, maps), weights), fpr_limit)


def pixel_metrics(masks, maps, fpr_limit: float = 0.3) -> dict[str, float]:
  """All pixel-level metrics at once, sorting the normal pixels only once.

  Args:
    masks: (N, H, W) boolean or 0/1 ground truth.
    maps: anomaly maps of the same shape.
    fpr_limit: FPR bound of AU-PRO.

  Returns:
    {'pixel_auroc', 'pixel_ap', 'pixel_f1_max', 'pixel_f1_threshold',
    'pixel_au_pro'}, each equal to the corresponding single metric.
  """
  masks, maps = _check_maps(masks, maps)
  neg, pos = _split(masks, maps)
  roc = _curve(neg, pos)
  f1, threshold = _f1_max(roc)
  return {'pixel_auroc': _auroc(roc), 'pixel_ap': _average_precision(roc),
          'pixel_f1_max': f1, 'pixel_f1_threshold': threshold,
          'pixel_au_pro': _au_pro(_curve(neg, pos, _pro_weights(masks)),
                                  fpr_limit)}
