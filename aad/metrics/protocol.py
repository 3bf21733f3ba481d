"""Evaluation of named anomaly maps: the MVTec AD protocol (METHOD.md 6.1).

A scorer is a name and a map (N, H, W) over the test images. `evaluate`
takes a dict of them and returns metrics for each, whatever the scorers are,
so a new scorer plugs in without changing this module. Per scorer:

- image level, for every reduction of a map to one score (l1, l2, linf,
  smooth_max): AUROC, AP, F1-max and the threshold reaching it;
- pixel level, every pixel of every test image pooled: AUROC, AP, F1-max
  and its threshold, and AU-PRO up to an FPR of 0.3, all from one sort
  (`metrics.pixel_metrics`);
- the same per defect type: each type's images against all good images;
- with validation maps (good images only, so no defect labels): a
  deployment threshold on the headline score, a quantile or the max of the
  validation scores, and the test precision, recall and F1 at it.

Metric keys, once flattened with '/': '<scorer>/<reduction>/image_auroc',
'<scorer>/pixel_au_pro', '<scorer>/<headline>/threshold_f1' and, per type,
'<scorer>/by_type/<type>/...' with the same suffixes.

Host-side NumPy/SciPy only (no JAX), so it also serves benchmarks and tools
that never touch a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np
from scipy import ndimage

from aad.metrics import curves as metrics_lib

REDUCTIONS = ('l1', 'l2', 'linf', 'smooth_max', 'top_k')
# Those reported by default (config.eval.norms).
DEFAULT_REDUCTIONS = ('l1', 'l2', 'linf', 'smooth_max')
# The 'top_k' reduction: mean of this fraction of each map's largest values
# (at least one), e.g. 164 px of a 640 x 256 map: a defect a few hundred
# px large decides the score, not the error level of the whole image.
TOP_K = 0.001
RESOLUTIONS = ('model', 'original')
THRESHOLD_MODES = ('quantile', 'max')
BY_TYPE = 'by_type'  # Key level that holds the per-defect-type metrics.
OWN = 'own'  # Reduction name of a scorer's own image score.
GOOD = 'good'  # Defect type of defect-free images.


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How maps become metrics; the fields mirror `config.eval`.

  Attributes:
    reductions: map -> image-score reductions reported side by side.
    headline: the reduction fixed beforehand as the image score (used for
      the deployment threshold); one of `reductions`.
    sigma: Gaussian sigma of 'smooth_max', in pixels of the evaluated maps.
    fpr_limit: upper FPR bound of AU-PRO.
    threshold_mode: 'quantile' or 'max' of the validation scores.
    threshold_quantile: the quantile, for threshold_mode 'quantile'.
    pixel_tau: > 0 also reports the pixel precision, recall and F1 of
      map >= pixel_tau (a threshold fixed beforehand, as seed 002's tau),
      over all test images and per defect type; 0 = off.
  """
  reductions: tuple[str, ...] = DEFAULT_REDUCTIONS
  headline: str = 'l2'
  sigma: float = 4.0
  fpr_limit: float = 0.3
  threshold_mode: str = 'quantile'
  threshold_quantile: float = 0.99
  pixel_tau: float = 0.0

  def __post_init__(self):
    unknown = set(self.reductions) - set(REDUCTIONS)
    if unknown or not self.reductions:
      raise ValueError(f'reductions must be a non-empty subset of '
                       f'{REDUCTIONS}; got {tuple(self.reductions)}.')
    if self.headline not in self.reductions:
      raise ValueError(f'The headline reduction {self.headline!r} must be '
                       f'one of the reported ones {tuple(self.reductions)}.')
    if not self.sigma > 0:
      raise ValueError(f'sigma must be positive; got {self.sigma}.')
    if self.threshold_mode not in THRESHOLD_MODES:
      raise ValueError(f'threshold_mode must be one of {THRESHOLD_MODES}; '
                       f'got {self.threshold_mode!r}.')
    if not 0 <= self.threshold_quantile <= 1:
      raise ValueError('threshold_quantile must lie in [0, 1]; got '
                       f'{self.threshold_quantile}.')
    if self.pixel_tau < 0:
      raise ValueError(f'pixel_tau must be >= 0; got {self.pixel_tau}.')

  @classmethod
  def from_config(cls, eval_config) -> Protocol:
    """The protocol of a `config.eval` block (configs/default.py)."""
    return cls(reductions=tuple(eval_config.norms),
               headline=eval_config.norm,
               sigma=float(eval_config.smooth_sigma),
               fpr_limit=float(eval_config.pro_fpr_limit),
               threshold_mode=eval_config.threshold_mode,
               threshold_quantile=float(eval_config.threshold_quantile),
               pixel_tau=float(eval_config.get('pixel_tau', 0.0)))


def _check_stack(maps) -> np.ndarray:
  maps = np.asarray(maps)
  if maps.ndim != 3:
    raise ValueError(f'Expected maps (N, H, W); got shape {maps.shape}.')
  return maps


def reduce(maps, reduction: str, sigma: float = 4.0) -> np.ndarray:
  """Image scores (N,) float64 from maps (N, H, W).

  l1 = mean, l2 = root mean square, linf = max (METHOD.md 4.1, as
  `scoring.reduce_map`); smooth_max = max after a Gaussian filter of
  standard deviation `sigma` px (scipy's default 'reflect' border), the
  usual image score of reconstruction methods (METHOD.md 6.1); top_k =
  mean of the largest TOP_K fraction of the values (at least one).
  """
  maps = _check_stack(maps)
  if reduction == 'l1':
    return maps.mean(axis=(1, 2), dtype=np.float64)
  if reduction == 'l2':
    return np.sqrt(np.mean(np.square(maps), axis=(1, 2), dtype=np.float64))
  if reduction == 'linf':
    return maps.max(axis=(1, 2)).astype(np.float64)
  if reduction == 'smooth_max':
    # Sigma 0 on the image axis: scipy skips it, so each image is filtered
    # on its own, in one call over the stack.
    smooth = ndimage.gaussian_filter(maps, (0, sigma, sigma),
                                     output=np.float64)
    return smooth.max(axis=(1, 2))
  if reduction == 'top_k':
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(round(TOP_K * flat.shape[1])))
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1, dtype=np.float64)
  raise ValueError(f'Unknown reduction {reduction!r}; choose one of '
                   f'{REDUCTIONS}.')


def _reductions(anomaly_map, protocol: Protocol) -> dict[str, np.ndarray]:
  """{reduction: (N,) image scores} of one map stack, every reduction of
  `protocol.reductions`."""
  return {r: reduce(anomaly_map, r, protocol.sigma)
          for r in protocol.reductions}


def image_scores(maps: Mapping[str, np.ndarray], protocol: Protocol,
                 own_scores: Mapping[str, np.ndarray] | None = None
                 ) -> dict[str, np.ndarray]:
  """{'<scorer>/<reduction>': (N,) image scores}: every reduction of every
  map in `protocol.reductions`, then each scorer's own score as
  '<scorer>/own'; the scores the metrics are computed from."""
  out = {}
  for name, m in maps.items():
    out.update({f'{name}/{r}': s for r, s in _reductions(m, protocol).items()})
  for name, scores in (own_scores or {}).items():
    out[f'{name}/{OWN}'] = np.asarray(scores, np.float64)
  return out


def image_metrics(labels, scores) -> dict[str, float]:
  """Image AUROC, AP, F1-max and the F1-max threshold (score >= t)."""
  f1, threshold = metrics_lib.f1_max(labels, scores)
  return {'image_auroc': metrics_lib.auroc(labels, scores),
          'image_ap': metrics_lib.average_precision(labels, scores),
          'image_f1_max': f1, 'image_f1_threshold': threshold}


def pixel_metrics(masks, maps, fpr_limit: float = 0.3) -> dict[str, float]:
  """Pixel AUROC, AP, F1-max (+ threshold) and AU-PRO, from one sort."""
  return metrics_lib.pixel_metrics(masks, maps, fpr_limit)


def calibrate_threshold(val_scores, mode: str = 'quantile',
                        quantile: float = 0.99) -> float:
  """A decision threshold from the scores of good images only.

  Args:
    val_scores: image scores of defect-free validation images.
    mode: 'quantile' (linear interpolation, numpy's default) or 'max'.
    quantile: the quantile in [0, 1], for mode 'quantile'.

  Returns:
    The threshold; an image is flagged when its score >= threshold.
  """
  val_scores = np.asarray(val_scores, np.float64)
  if not val_scores.size:
    raise ValueError('No validation scores to calibrate a threshold on.')
  if mode == 'max':
    return float(val_scores.max())
  if mode == 'quantile':
    return float(np.quantile(val_scores, quantile))
  raise ValueError(f'Unknown threshold mode {mode!r}; choose one of '
                   f'{THRESHOLD_MODES}.')


def score_range(val_scores) -> list[float]:
  """[min, max] of the good validation images' image scores: saved beside
  the image threshold (thresholds.json 'image_range'), the scale of the
  normalised scores."""
  val_scores = np.asarray(val_scores, np.float64)
  return [float(val_scores.min()), float(val_scores.max())]


def normalisation(thresholds: Mapping) -> dict[str, tuple[float, float]]:
  """{scorer: (threshold, span)} of each scorer with an image threshold,
  for `normalise`.

  span is max - min of the good validation scores recorded at calibration
  (thresholds['image_range']). Runs evaluated before it was recorded (or
  whose validation scores are all equal) use span = 2 |threshold| (1 for a
  threshold of 0): a non-negative score s then normalises to s / (2
  threshold), twice the threshold at 1, as the maps' colour scale.
  """
  ranges = thresholds.get('image_range') or {}
  out = {}
  for name, t in thresholds.get('image', {}).items():
    low, high = ranges.get(name, (0.0, 0.0))
    span = float(high) - float(low)
    if not span > 0:
      span = 2 * abs(float(t)) or 1.0
    out[name] = (float(t), span)
  return out


def normalise(scores, threshold: float, span: float, clip=np.clip):
  """Image scores on [0, 1], exactly 0.5 at the threshold: anomalib's
  min-max normalisation, clip((score - threshold) / span + 0.5, 0, 1).
  Monotone (non-decreasing) in the score; `clip` is np.clip or jnp.clip."""
  return clip((scores - threshold) / span + 0.5, 0.0, 1.0)


def threshold_metrics(labels, scores, threshold: float) -> dict[str, float]:
  """Precision, recall and F1 of `score >= threshold`, and the threshold."""
  precision, recall, f1 = metrics_lib.precision_recall_f1_at(
      labels, scores, threshold)
  return {'threshold': float(threshold), 'threshold_precision': precision,
          'threshold_recall': recall, 'threshold_f1': f1}


def pixel_tau_metrics(masks, maps, tau: float) -> dict[str, float]:
  """Pixel precision, recall and F1 of `map >= tau` over pooled pixels."""
  precision, recall, f1 = metrics_lib.precision_recall_f1_at(
      np.asarray(masks).ravel(), np.asarray(maps).ravel(), tau)
  return {'pixel_tau': float(tau), 'pixel_tau_precision': precision,
          'pixel_tau_recall': recall, 'pixel_tau_f1': f1}


def type_subsets(labels, defect_types: Sequence[str]) -> dict[str, np.ndarray]:
  """Per defect type, the indices of its images and of all good images.

  Types are sorted by name; good images are those with label 0.
  """
  labels = np.asarray(labels)
  types = np.asarray(defect_types, dtype=object)
  if types.shape != labels.shape:
    raise ValueError(f'{types.size} defect types for {labels.size} labels.')
  good = labels == 0
  return {t: np.flatnonzero(good | ((labels != 0) & (types == t)))
          for t in sorted(set(types[~good]))}


def _image_entry(labels, scores: Mapping[str, np.ndarray]) -> dict:
  return {r: image_metrics(labels, s) for r, s in scores.items()}


def _pixel_images(pixel_images, n: int) -> np.ndarray:
  if pixel_images is None:
    return np.ones(n, bool)
  pixel_images = np.asarray(pixel_images, bool)
  if pixel_images.shape != (n,):
    raise ValueError(f'pixel_images has shape {pixel_images.shape}, not '
                     f'({n},).')
  return pixel_images


def by_type_metrics(anomaly_map, labels, masks, defect_types,
                    scores: Mapping[str, np.ndarray],
                    fpr_limit: float = 0.3,
                    pixel_images=None, pixel_tau: float = 0.0
                    ) -> dict[str, dict]:
  """Image and pixel metrics per defect type, against all good images.

  Args:
    anomaly_map: (N, H, W) map over the test images.
    labels: (N,) 0 for good, 1 for defective.
    masks: (N, H, W) 0/1 ground truth.
    defect_types: per image, 'good' or its defect type.
    scores: reduction -> (N,) image scores of `anomaly_map`.
    fpr_limit: AU-PRO's FPR bound.
    pixel_images: optional bool (N,): the images whose masks are drawn,
      the only ones pixel metrics use; None = all.
    pixel_tau: > 0 adds `pixel_tau_metrics` at that threshold.

  Returns:
    {type: {reduction: {image_*}, pixel_*: ...}}, types sorted by name.
  """
  labels, masks = np.asarray(labels), np.asarray(masks)
  drawn = _pixel_images(pixel_images, len(labels))
  out = {}
  for name, idx in type_subsets(labels, defect_types).items():
    entry = _image_entry(labels[idx], {r: s[idx] for r, s in scores.items()})
    idx = idx[drawn[idx]]
    sub_masks = masks[idx]
    # A type whose defects have no pixels drawn (possible in MVTec-style
    # folders) gets image metrics only: pixel metrics need positives.
    if sub_masks.any():
      entry.update(pixel_metrics(sub_masks, anomaly_map[idx], fpr_limit))
      if pixel_tau:
        entry.update(pixel_tau_metrics(sub_masks, anomaly_map[idx],
                                       pixel_tau))
    out[name] = entry
  return out


def deployment_threshold(labels, scores, val_map,
                         protocol: Protocol) -> dict[str, float]:
  """The threshold from good validation maps, and the test P/R/F1 at it.

  Args:
    labels: (N,) test labels.
    scores: (N,) test scores of the headline reduction.
    val_map: (M, H, W) maps of good validation images.
    protocol: the headline reduction and the threshold rule.

  Returns:
    {'threshold', 'threshold_precision', 'threshold_recall',
    'threshold_f1'}.
  """
  threshold = calibrate_threshold(
      reduce(val_map, protocol.headline, protocol.sigma),
      protocol.threshold_mode, protocol.threshold_quantile)
  return threshold_metrics(labels, scores, threshold)


def evaluate_scorer(anomaly_map, labels, masks, defect_types, protocol:
                    Protocol, val_map=None, by_type: bool = True,
                    pixel_images=None, own_scores=None) -> dict:
  """Every metric of one scorer; nested, see the module docstring.

  Args:
    anomaly_map: (N, H, W) map over the test images.
    labels: (N,) 0 for good, 1 for defective.
    masks: (N, H, W) 0/1 ground truth at the map's resolution.
    defect_types: per image, 'good' or its defect type.
    protocol: reductions, smoothing, AU-PRO limit, threshold rule.
    val_map: optional (M, H', W') map of good validation images; gives the
      deployment threshold and the test P/R/F1 at it.
    by_type: also evaluate each defect type against the good images.
    pixel_images: optional bool (N,): the images whose masks are drawn,
      the only ones pixel metrics use (MVTec-layout folders may lack some
      masks); None = all.
    own_scores: optional (N,) image scores the scorer computes itself,
      evaluated as one more reduction, 'own'.

  Returns:
    {reduction: {image_*[, threshold*]}, pixel_*: ..., 'by_type': {type:
    {reduction: {image_*}, pixel_*: ...}}}.
  """
  anomaly_map, labels = _check_stack(anomaly_map), np.asarray(labels)
  masks = np.asarray(masks)
  if masks.shape != anomaly_map.shape:
    raise ValueError(f'Map {anomaly_map.shape} and masks {masks.shape} '
                     'differ in shape.')
  scores = _reductions(anomaly_map, protocol)
  if own_scores is not None:
    scores[OWN] = np.asarray(own_scores, np.float64)
  entry = _image_entry(labels, scores)
  drawn = _pixel_images(pixel_images, len(labels))
  entry.update(pixel_metrics(masks[drawn], anomaly_map[drawn],
                             protocol.fpr_limit))
  if protocol.pixel_tau:
    entry.update(pixel_tau_metrics(masks[drawn], anomaly_map[drawn],
                                   protocol.pixel_tau))
  if val_map is not None:
    entry[protocol.headline].update(deployment_threshold(
        labels, scores[protocol.headline], val_map, protocol))
  if by_type:
    entry[BY_TYPE] = by_type_metrics(anomaly_map, labels, masks,
                                     defect_types, scores, protocol.fpr_limit,
                                     drawn, protocol.pixel_tau)
  return entry


def evaluate_image_only(scores, labels, defect_types, protocol: Protocol,
                        val_scores=None, by_type: bool = True) -> dict:
  """Metrics of a scorer with its own image score and no map.

  Args:
    scores: (N,) the scorer's image scores of the test images.
    labels, defect_types, protocol, by_type: as `evaluate_scorer`.
    val_scores: optional (M,) its scores of the good validation images;
      they give the deployment threshold, as the headline reduction's do
      for a map.

  Returns:
    {'own': {image_*[, threshold*]}[, 'by_type': {type: {'own': ...}}]}.
  """
  labels = np.asarray(labels)
  scores = np.asarray(scores, np.float64)
  entry = _image_entry(labels, {OWN: scores})
  if val_scores is not None:
    entry[OWN].update(threshold_metrics(labels, scores, calibrate_threshold(
        val_scores, protocol.threshold_mode, protocol.threshold_quantile)))
  if by_type:
    entry[BY_TYPE] = {
        t: _image_entry(labels[idx], {OWN: scores[idx]})
        for t, idx in type_subsets(labels, defect_types).items()}
  return entry


def threshold_reduction(entry: Mapping, headline: str) -> str:
  """The reduction a scorer's deployment threshold is on: the headline one,
  or 'own' for a scorer without a map."""
  return headline if headline in entry else OWN


def evaluate(maps: Mapping[str, np.ndarray], labels, masks, defect_types,
             protocol: Protocol,
             val_maps: Mapping[str, np.ndarray] | None = None,
             by_type: bool = True, pixel_images=None,
             own_scores: Mapping[str, np.ndarray] | None = None,
             val_own_scores: Mapping[str, np.ndarray] | None = None
             ) -> dict[str, dict]:
  """`evaluate_scorer` for every named map; {scorer: nested metrics}.

  Scorers without a validation map get no deployment threshold; those in
  `own_scores` get their own image score as the reduction 'own'. A scorer
  in `own_scores` and not in `maps` has no map: `evaluate_image_only`,
  its threshold from `val_own_scores`.
  """
  val_maps, own_scores = val_maps or {}, own_scores or {}
  val_own_scores = val_own_scores or {}
  out = {}
  for i, (name, m) in enumerate(maps.items()):
    logging.info('metrics of %s (%d/%d)...', name, i + 1, len(maps))
    out[name] = evaluate_scorer(m, labels, masks, defect_types, protocol,
                                val_maps.get(name), by_type, pixel_images,
                                own_scores.get(name))
  for name, scores in own_scores.items():
    if name not in maps:
      out[name] = evaluate_image_only(scores, labels, defect_types, protocol,
                                      val_own_scores.get(name), by_type)
  return out


def curves(maps: Mapping[str, np.ndarray], labels, masks,
           protocol: Protocol, pixel_images=None) -> dict[str, Any]:
  """Figure data of every scorer, image curves from the headline score.

  Pixel curves use the images of `pixel_images` (bool (N,), None = all).

  Returns:
    {'roc_image'|'roc_pixel': {scorer: (fpr, tpr)},
     'pr_image'|'pr_pixel': {scorer: (recall, precision)} (sklearn layout,
       recall decreasing),
     'pro': {scorer: (fpr, pro)},
     'scores': {scorer: (good image scores, defective image scores)}}.
  """
  labels = np.asarray(labels)
  drawn = _pixel_images(pixel_images, len(labels))
  masks = np.asarray(masks)[drawn]
  out = {k: {} for k in ('roc_image', 'roc_pixel', 'pr_image', 'pr_pixel',
                         'pro', 'scores')}
  for i, (name, m) in enumerate(maps.items()):
    logging.info('curves (ROC, PR, PRO) of %s (%d/%d)...', name, i + 1,
                 len(maps))
    scores = reduce(m, protocol.headline, protocol.sigma)
    m = np.asarray(m)[drawn]
    out['roc_image'][name] = metrics_lib.roc_curve(labels, scores)[:2]
    out['roc_pixel'][name] = metrics_lib.roc_curve(masks, m)[:2]
    for level, (y, s) in (('image', (labels, scores)), ('pixel', (masks, m))):
      precision, recall, _ = metrics_lib.pr_curve(y, s)
      out[f'pr_{level}'][name] = (recall, precision)
    out['pro'][name] = metrics_lib.pro_curve(masks, m)[:2]
    out['scores'][name] = (scores[labels == 0], scores[labels != 0])
  return out


def _interpolation(n_in: int, n_out: int):
  """Source indices and weights of linear resampling, half-pixel centres."""
  x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
  # Clamping at the borders repeats the edge pixels, as torch's
  # interpolate(align_corners=False) and skimage's resize do.
  x = np.clip(x, 0, n_in - 1)
  lo = np.floor(x).astype(np.intp)
  hi = np.minimum(lo + 1, n_in - 1)
  return lo, hi, (x - lo).astype(np.float32)


def resize_maps(maps, size: tuple[int, int]) -> np.ndarray:
  """Resizes maps (N, h, w) to (N, *size) bilinearly (half-pixel centres).

  The MVTec convention for upsampling maps to the mask resolution (torch
  `interpolate(mode='bilinear', align_corners=False)`); no anti-aliasing,
  so it is meant for upsampling. Float32 or float64 in, the same out.
  """
  maps = _check_stack(maps)
  if not np.issubdtype(maps.dtype, np.floating):
    maps = maps.astype(np.float32)
  if maps.shape[1:] == tuple(size):
    return maps
  lo, hi, w = _interpolation(maps.shape[1], size[0])
  w = w.astype(maps.dtype)[:, None]
  rows = maps[:, lo] * (1 - w) + maps[:, hi] * w
  lo, hi, w = _interpolation(maps.shape[2], size[1])
  w = w.astype(maps.dtype)
  return rows[:, :, lo] * (1 - w) + rows[:, :, hi] * w


def at_resolution(resolution: str, maps: Mapping[str, np.ndarray], masks,
                  native_masks=None) -> tuple[dict[str, np.ndarray],
                                              np.ndarray]:
  """The maps and masks to evaluate, at `resolution`.

  Args:
    resolution: 'model' (maps and masks as the model sees them) or
      'original' (maps upsampled to the masks' native size, MVTec's
      convention).
    maps: scorer -> (N, h, w) maps at the model resolution.
    masks: (N, h, w) masks at the model resolution.
    native_masks: (N, H, W) masks at the dataset's native resolution
      (`aad.data.Split.native_masks`); needed for 'original'.

  Returns:
    (maps, masks) at the evaluation resolution.
  """
  if resolution == 'model':
    return dict(maps), np.asarray(masks)
  if resolution == 'original':
    if native_masks is None:
      raise ValueError('eval.resolution="original" needs the masks at '
                       'their native size, and this dataset has none '
                       '(Split.native_masks is None); use "model".')
    if isinstance(native_masks, (list, tuple)):
      sizes = sorted({m.shape for m in native_masks})
      if len(sizes) > 1:
        raise ValueError(
            'eval.resolution="original" needs test masks of one size, and '
            f'these have {len(sizes)} ({sizes[0]} ... {sizes[-1]}: mixed '
            'image sizes, or an ROI crop); use "model".')
      native_masks = np.stack(native_masks)
    native_masks = np.asarray(native_masks)
    size = native_masks.shape[1:]
    return {k: resize_maps(v, size) for k, v in maps.items()}, native_masks
  raise ValueError(f'Unknown resolution {resolution!r}; choose one of '
                   f'{RESOLUTIONS}.')
