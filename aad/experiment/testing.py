"""Scoring a split with a trained model; the per-category and run reports.

Scoring has two parts, both on device: the family's `outputs` (a
reconstruction, MC-dropout maps, ...; aad/models/base.py), then the
configured scorers' maps from the input and those outputs
(aad/scoring). Both are aad/scoring/batch.py's, the functions the Detector
and the exported detector run; here they run in batches, outputs gathered
on the host. aad/metrics/protocol.py turns the maps into metrics, whatever
they are (METHOD.md 6.1). The good validation images are scored the same
way, to set each scorer's deployment threshold without defect labels.
"""

import dataclasses
import json
import os
import time
from typing import Any

# Before TensorFlow (clu, tfds) is imported: its C++ start-up chatter.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import logging
import jax
import ml_collections
import numpy as np

from aad import data as data_lib
from aad.runtime import errors
from aad.runtime import logs
from aad.metrics import protocol as evaluation
from aad import models
from aad.runtime import parallel
from aad import report
from aad.report import tables
from aad.runtime import atomic
from aad.report import figures
from aad.scoring import batch
from aad import scoring
from aad.data import folder
from aad.data import tiling
from aad.experiment import workdir as workdir_lib

# Heat-map grid: at most this many scorer columns (the first listed).
MAX_MAP_COLUMNS = 6


def family_outputs(config: ml_collections.ConfigDict, family, variables: Any,
                   images: np.ndarray, devices: list[jax.Device],
                   wanted: frozenset[str]) -> dict:
  """The family's outputs of `images` (uint8 NHWC), on the host, with
  `variables` from `family.prepare` (as every function here but
  `evaluate_category`, which prepares them).

  In patch mode (config.dataset.patch_size > 0) the images are scored as
  overlapping tiles, cut and brought back per image on the host
  (`tiling.untile`: maps stitched, other outputs grouped per image).
  """
  indices = np.arange(len(images))
  patch, stride = batch.patch_stride(config.dataset)
  if not patch:
    return _outputs(config, family, variables, images, indices, devices,
                    wanted, unit='images')
  tiles = tiling.extract(images, patch, stride)
  logging.info('patch mode: %d images -> %d tiles of %dx%d', len(images),
               len(tiles), patch, patch)
  indices = batch.tile_indices(
      indices, tiling.tile_count(images.shape[1:3], patch, stride))
  out = _outputs(config, family, variables, tiles, indices, devices, wanted,
                 unit='tiles', of=f' of {len(images)} images')
  return tiling.untile(out, images.shape[1:3], patch, stride,
                       config.eval.tile_margin)


def _outputs(config, family, variables, images, indices, devices,
             wanted, unit: str = 'images', of: str = '') -> dict:
  """`batch.outputs` of `images` (image i keyed by indices[i]), in batches
  of config.eval.batch_size per device, gathered on the host; progress
  lines (`logs.Counter`) count them as `unit` (tiles in patch mode)."""
  key = jax.random.key(batch.seed(config))

  def fn(variables, part):
    images, indices = part
    return batch.outputs(family, variables, images,
                         batch.image_keys(key, indices), wanted)

  call = parallel.batched_call(fn, devices)
  variables = parallel.replicate(variables, devices)
  step = config.eval.batch_size * len(devices)
  outputs = []
  logging.info('scoring %d %s%s (the first batch compiles the model)...',
               len(images), unit, of)
  progress = logs.Counter('scored', len(images), unit, of)
  for start in range(0, len(images), step):
    part = slice(start, start + step)
    outputs.append(jax.device_get(
        call(variables, (images[part], indices[part]))))
    progress.update(min(start + step, len(images)))
  return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def scorer_maps(config: ml_collections.ConfigDict, scorers, fitted: dict,
                images: np.ndarray, outputs: dict, devices: list[jax.Device]
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """The scorers' maps {scorer: (N, H, W)} of `images` from the family's
  `outputs`, and the image scores {scorer: (N,)} of those with their own
  (`batch.maps_fn`, in batches of config.eval.batch_size per device)."""
  maps = batch.maps_fn(scorers, config.eval)
  call = parallel.batched_call(lambda fitted, part: maps(fitted, *part),
                               devices)
  fitted = parallel.replicate(fitted, devices)
  # Only what the scorers read goes to the devices.
  outputs = batch.scorer_inputs(scorers, outputs)
  step = config.eval.batch_size * len(devices)
  parts = []
  logging.info('computing the maps of %d scorer(s) on %d images (the first '
               'batch compiles them)...', len(scorers), len(images))
  progress = logs.Counter('computed the maps of', len(images))
  for start in range(0, len(images), step):
    part = slice(start, start + step)
    parts.append(jax.device_get(call(
        fitted, (images[part], {k: v[part] for k, v in outputs.items()}))))
    progress.update(min(start + step, len(images)))
  return tuple({k: np.concatenate([p[kind][k] for p in parts])
                for k in parts[0][kind]} for kind in ('maps', 'image'))


def score(config: ml_collections.ConfigDict, family, variables: Any,
          images: np.ndarray, devices: list[jax.Device], scorers,
          fitted: dict) -> tuple[dict, dict, dict]:
  """(family outputs, scorer maps, scorers' own image scores) of `images`
  with the run's model: `batch.image_fn`'s computation, in batches."""
  outputs = family_outputs(config, family, variables, images, devices,
                           scoring.needed_outputs(scorers))
  maps, image_scores = scorer_maps(config, scorers, fitted, images, outputs,
                                   devices)
  return outputs, maps, image_scores


def fit_scorers(config: ml_collections.ConfigDict, family, variables: Any,
                scorers, images: np.ndarray, devices: list[jax.Device],
                val_images: np.ndarray | None = None) -> dict:
  """`scorers_lib.fit` on the training `images` (on the good `val_images`
  for the scorers with fit_split 'val'), with the family's outputs of them
  where a scorer is fitted on those (its `fit_needs`)."""
  fitted = {}
  for split, data in (('train', images), ('val', val_images)):
    chosen = [s for s in scorers if s.fit and s.fit_split == split]
    if not chosen:
      continue
    if data is None:
      raise ValueError(f'scorer(s) {", ".join(s.name for s in chosen)} are '
                       'fitted on the validation images; none were given')
    logging.info('fitting scorer%s %s on %d %s images...',
                 's' if len(chosen) > 1 else '',
                 ', '.join(s.name for s in chosen), len(data),
                 'training' if split == 'train' else 'validation')
    wanted = scoring.fit_outputs(chosen)
    outputs = family_outputs(config, family, variables, data, devices,
                             wanted) if wanted else None
    fitted.update(scoring.fit(chosen, data, outputs, config.eval))
  return fitted


def configured_scorers(config: ml_collections.ConfigDict, family):
  """The run's scorers: config.eval.scorers, or its family's default list;
  the first is the headline scorer."""
  return scoring.resolve(config.eval.scorers, family)


def type_table_columns(norm: str, scorers) -> list[str]:
  """Keys of the per-defect-type table: the headline metrics (image AUROC,
  pixel AUROC, AU-PRO) of the scorers that are not baselines; a scorer
  without a map has its own image AUROC only."""
  return [f'{s.name}/{m}' for s in scorers if not s.baseline
          for m in ((f'{norm}/image_auroc', 'pixel_auroc', 'pixel_au_pro')
                    if s.has_map else (f'{evaluation.OWN}/image_auroc',))]


def headline_keys(norm: str, scorers) -> list[str]:
  """Summary table keys: image AUROC (headline reduction, 'own' without a
  map), then pixel AUROC and AU-PRO of the scorers with maps."""
  image = [f'{s.name}/{norm if s.has_map else evaluation.OWN}/image_auroc'
           for s in scorers]
  mapped = [s for s in scorers if s.has_map]
  return (image + [f'{s.name}/pixel_auroc' for s in mapped] +
          [f'{s.name}/pixel_au_pro' for s in mapped])


RANKING_NOTE = (
    'Ranking: scorers sorted by image AUROC, of their own image score '
    "('own') where they have one (the similarity measures), else of the "
    'headline {norm} reduction of the map; the pixel rank is by pixel AUROC '
    'among the scorers with maps. Ties share a rank.')


def ranking_keys(norm: str, scorers) -> dict[str, tuple[str, str | None]]:
  """{scorer: (its image AUROC key, its pixel AUROC key or None)}, by the
  rule of RANKING_NOTE."""
  return {s.name: (f'{s.name}/{evaluation.OWN if s.image else norm}/'
                   'image_auroc',
                   f'{s.name}/pixel_auroc' if s.has_map else None)
          for s in scorers}


def _example_rows(split, outputs, maps, scores, count, scorers):
  """Heat-map rows, picked by `scores` (the headline scorer's).

  The highest- and lowest-scored defective test images (2/5 of `count`
  each) show what the model finds and misses; the highest-scored good
  images (the rest) show its false alarms.
  """
  labels = np.asarray(split.labels)
  by_score = np.argsort(-scores, kind='stable')
  defective = [i for i in by_score if labels[i]]
  good = [i for i in by_score if not labels[i]]
  per_end = (2 * count) // 5
  high = defective[:per_end]
  low = [i for i in defective[::-1][:per_end] if i not in high][::-1]
  picked = ([('high', i) for i in high] + [('low', i) for i in low] +
            [('good', i) for i in good[:count - len(high) - len(low)]])
  rows = []
  for kind, i in picked:
    rows.append({
        figures.ROW_LABEL: f'{kind}: {split.names[i]}\n'
                          f'{split.defect_types[i]}, score {scores[i]:.3g}',
        'input': split.images[i],
        'reconstruction': outputs['reconstruction'][i],
        **{s.label: maps[s.name][i] for s in map_columns(scorers)},
        'ground truth': split.masks[i],
    })
  return rows


def map_columns(scorers) -> list:
  """The scorers drawn in the heat-map grid: the first with maps."""
  return [s for s in scorers if s.has_map][:MAX_MAP_COLUMNS]


def _summary_line(metrics: dict, norm: str, scorers) -> str:
  def cell(key):
    return f'{metrics[key]:.3f}' if key in metrics else '-'
  return ', '.join(
      f'{s.name} {cell(f"{s.name}/{norm}/image_auroc")} / '
      f'{cell(f"{s.name}/pixel_auroc")} / '
      f'{cell(f"{s.name}/pixel_au_pro")}' if s.has_map else
      f'{s.name} {cell(f"{s.name}/{evaluation.OWN}/image_auroc")} (own, '
      'no map)' for s in scorers)


@dataclasses.dataclass
class Scored:
  """A category's scores at the model size: the test images' family
  outputs, maps and own image scores; the good validation images' maps and
  own scores; the scorers' fitted state."""
  fitted: dict
  outputs: dict
  maps: dict
  own: dict
  val_maps: dict
  val_own: dict


def score_category(config: ml_collections.ConfigDict, family, variables: Any,
                   dataset: data_lib.Dataset, devices: list[jax.Device],
                   scorers) -> Scored:
  """Fits the scorers and scores the test and validation images."""
  split, val = dataset.test, dataset.val
  fitted = fit_scorers(config, family, variables, scorers,
                       dataset.train.images, devices, val.images)
  # Validation images are all good: scoring them like the test images gives
  # a threshold without looking at a single defect. One call for both
  # splits compiles the score function once; test images keep indices
  # 0..N-1, hence the same MC-dropout keys as when scored alone.
  outputs, maps, own = score(
      config, family, variables,
      np.concatenate([split.images, val.images]), devices, scorers, fitted)
  n = len(split.images)
  head = lambda d: {k: v[:n] for k, v in d.items()}
  tail = lambda d: {k: v[n:] for k, v in d.items()}
  return Scored(fitted=fitted, outputs=head(outputs), maps=head(maps),
                own=head(own), val_maps=tail(maps), val_own=tail(own))


def category_metrics(config: ml_collections.ConfigDict, split, scored: Scored,
                     scorers, protocol: evaluation.Protocol):
  """(results {scorer: ...} in config order, curves, and the test maps,
  masks and good validation maps at the evaluation resolution) of a
  category's test split."""
  logging.info('computing metrics of %d scorer(s) on %d maps...',
               len(scorers), len(split.labels))
  eval_maps, masks = evaluation.at_resolution(
      config.eval.resolution, scored.maps, split.masks, split.native_masks)
  val_maps = {k: evaluation.resize_maps(v, masks.shape[1:])
              for k, v in scored.val_maps.items()}
  results = evaluation.evaluate(eval_maps, split.labels, masks,
                                split.defect_types, protocol,
                                val_maps=val_maps,
                                pixel_images=split.has_masks,
                                own_scores=scored.own,
                                val_own_scores=scored.val_own)
  # Report order = config order (map-less scorers come last otherwise).
  results = {s.name: results[s.name] for s in scorers}
  curves = evaluation.curves(eval_maps, split.labels, masks, protocol,
                             pixel_images=split.has_masks)
  return results, curves, eval_maps, masks, val_maps


def split_timings(metrics: dict, extra: dict | None) -> dict:
  """Adds the training summary `extra` to `metrics` as 'train/...'; returns
  its timings, which go to timings.json instead: identical runs must give
  identical metrics files."""
  timings = {}
  for key, value in (extra or {}).items():
    if key.split('/')[-1].endswith('seconds'):
      timings[f'train/{key}'] = value
    else:
      metrics[f'train/{key}'] = value
  return timings


def category_notes(config: ml_collections.ConfigDict, family, scorers,
                   protocol: evaluation.Protocol, eval_shape, model_shape,
                   val_count: int) -> list[str]:
  """The report's notes on how a category was scored and evaluated."""
  norm = protocol.headline
  size = 'x'.join(map(str, eval_shape))
  model_size = 'x'.join(map(str, model_shape))
  if config.eval.resolution == 'original':
    resolution = (
        f'at the native mask resolution ({size}): maps computed at '
        f'{model_size} are upsampled bilinearly (half-pixel centres, as '
        'torch interpolate(align_corners=False)) to the masks that '
        'aad.data.load keeps before resizing (Split.native_masks), '
        "MVTec's convention")
  else:
    resolution = (f'at the model resolution ({size}), masks resized with '
                  'nearest neighbour')
  quantile = (f'the {protocol.threshold_quantile:g} quantile'
              if protocol.threshold_mode == 'quantile' else 'the maximum')
  notes = [
      f'Model: {config.model.name}; scorers: '
      f'{", ".join(s.name for s in scorers)} (the first is the headline).',
      f'Headline image score: the {norm} reduction of the map, fixed in '
      'the config before evaluation; l1 = mean, l2 = root mean square, '
      f'linf = max, smooth_max = max after a Gaussian filter of sigma '
      f'{protocol.sigma:g} px (at the evaluation resolution).',
      f'Maps and masks are evaluated {resolution}.',
      'Pixel metrics pool every pixel of every test image (good ones '
      'included). AU-PRO: per-region overlap of the 8-connected GT '
      'regions against the FPR over all normal pixels, integrated up to '
      f'FPR {protocol.fpr_limit:g} and divided by {protocol.fpr_limit:g}.',
      'F1-max is the best F1 over all thresholds (score >= threshold); its '
      'threshold is chosen on the test labels, so it is optimistic.',
      f'Deployment threshold: {quantile} of the {norm} scores of the '
      f'{val_count} good validation images (no defect labels); '
      'precision, recall and F1 are those of the test images at it.',
      'Per defect type: the images of that type against all good test '
      'images; the table shows headline metrics, metrics.json has them all.',
  ]
  if protocol.pixel_tau:
    notes.append(
        f'pixel_tau_*: pixel precision, recall and F1 of map >= '
        f'{protocol.pixel_tau:g} (a fixed threshold, seed 002), over all '
        'test images and per defect type.')
  mapless = [s.name for s in scorers if not s.has_map]
  if mapless:
    notes.append(
        f'{", ".join(mapless)}: global measures without a local map; they '
        "have image metrics of their own score ('own') only, a deployment "
        'threshold on the own scores of the good validation images, and no '
        'pixel metrics, curves or heat maps.')
  notes.append(RANKING_NOTE.format(norm=norm))
  notes += family.notes(scoring.needed_outputs(scorers))
  return notes


def write_category(out_dir: str, config: ml_collections.ConfigDict,
                   dataset: data_lib.Dataset, scorers, scored: Scored,
                   metrics: dict, curves: dict, eval_maps: dict,
                   masks: np.ndarray, thresholds: dict,
                   protocol: evaluation.Protocol, notes: list[str]):
  """The category's report.md and figures (`report.write_category_report`)."""
  logging.info('writing the report and figures to %s...', out_dir)
  split = dataset.test
  norm = protocol.headline
  headline = scorers[0]
  reduction = norm if headline.has_map else evaluation.OWN
  scores = (evaluation.reduce(eval_maps[headline.name], norm, protocol.sigma)
            if headline.has_map else scored.own[headline.name])
  labels = np.asarray(split.labels)
  report.write_category_report(
      out_dir, category=dataset.category, metrics=metrics,
      roc_curves={'image': curves['roc_image'], 'pixel': curves['roc_pixel']},
      pr_curves={'image': curves['pr_image'], 'pixel': curves['pr_pixel']},
      pr_chance={'image': float(labels.mean()),
                 'pixel': float(np.mean(masks))},
      pro_curves=curves['pro'], pro_fpr_limit=protocol.fpr_limit,
      score_histograms=curves['scores'], thresholds=thresholds,
      image_score=norm,
      heatmap_rows=_example_rows(split, scored.outputs, scored.maps, scores,
                                 config.eval.heatmap_rows, scorers),
      heatmap_title=('highest- and lowest-scored defective and '
                     'highest-scored good test images\n'
                     f'(by the {headline.name} {reduction} score)'),
      columns=['input', 'reconstruction',
               *(s.label for s in map_columns(scorers)), 'ground truth'],
      notes=notes, grouped=True,
      type_columns=type_table_columns(norm, scorers),
      ranking=ranking_keys(norm, scorers),
      roi_previews=split.roi_previews)


SCORES_FILE = 'scores.csv'


def write_scores(out_dir: str, dataset: data_lib.Dataset, scorers,
                 scored: Scored, eval_maps: dict, val_maps: dict,
                 protocol: evaluation.Protocol) -> str:
  """out_dir/scores.csv: one row per test image, then per good validation
  image (split 'val', the images the thresholds come from), with its
  label, defect type and every image score ('<scorer>/<reduction>'), at
  the evaluation resolution the metrics use."""
  test = evaluation.image_scores(eval_maps, protocol, scored.own)
  val = evaluation.image_scores(val_maps, protocol, scored.val_own)
  # Config order, as in the report.
  order = {s.name: i for i, s in enumerate(scorers)}
  columns = sorted(test, key=lambda c: order.get(c.split('/')[0], len(order)))
  rows = [('test', name, int(label), kind, *(f'{test[c][i]:.6g}'
                                             for c in columns))
          for i, (name, label, kind) in enumerate(zip(
              dataset.test.names, dataset.test.labels,
              dataset.test.defect_types))]
  rows += [('val', name, 0, evaluation.GOOD, *(f'{val[c][i]:.6g}'
                                               for c in columns))
           for i, name in enumerate(dataset.val.names)]
  path = os.path.join(out_dir, SCORES_FILE)
  report.write_csv(path, ['split', 'name', 'label', 'type', *columns], rows)
  return path


def evaluate_category(config: ml_collections.ConfigDict, family,
                      variables: Any, dataset: data_lib.Dataset,
                      out_dir: str, devices: list[jax.Device],
                      extra: dict | None = None,
                      unfinished: str = '') -> dict[str, float]:
  """Scores `dataset.test` (and `.val` for thresholds) with the plain
  `variables` (training's or a checkpoint's); writes the report.

  Writes out_dir/{metrics.json, report.md, scores.csv, thresholds.json,
  scorers.msgpack, roc_*.png, pr_*.png, pro.png, score_histograms.png,
  heatmaps.png}.

  Every process of a multi-host run calls this and takes part in the
  scoring; only process 0 computes the metrics and writes the report.
  `unfinished`, if given, is the report's first note: the model's training
  did not end.

  Returns:
    The category's flattened metrics ('residual/l2/image_auroc', ...) on
    process 0; {} on the others.
  """
  t_start = time.time()
  scorers = configured_scorers(config, family)
  # Once per category: what depends on the weights alone (the fast
  # convolutions' kernels) is not rebuilt in every scoring call.
  variables = family.prepare(variables,
                             workdir_lib.model_input_shape(config, family))
  scored = score_category(config, family, variables, dataset, devices,
                          scorers)
  if not parallel.is_primary():
    return {}
  protocol = evaluation.Protocol.from_config(config.eval)
  if dataset.good_only:
    return _good_only_category(config, family, dataset, out_dir, scorers,
                               scored, protocol, extra, unfinished, t_start)
  split = dataset.test
  norm = protocol.headline
  results, curves, eval_maps, masks, val_maps = category_metrics(
      config, split, scored, scorers, protocol)
  ranges = validation_ranges(val_maps, scored.val_own, protocol)
  thresholds = {
      s: r[evaluation.threshold_reduction(r, norm)]['threshold']
      for s, r in results.items()}
  write_thresholds(out_dir, config, thresholds, scored.val_maps, ranges)
  workdir_lib.save_fitted(out_dir, scored.fitted)
  metrics = tables.flatten(results)
  timings = split_timings(metrics, extra)
  notes = category_notes(config, family, scorers, protocol, masks.shape[1:],
                         split.masks.shape[1:], len(dataset.val.images))
  if unfinished:
    notes.insert(0, unfinished)
  write_category(out_dir, config, dataset, scorers, scored, metrics, curves,
                 eval_maps, masks, thresholds, protocol, notes)
  write_scores(out_dir, dataset, scorers, scored, eval_maps, val_maps,
               protocol)
  timings['eval/seconds'] = time.time() - t_start
  atomic.write_json(os.path.join(out_dir, workdir_lib.TIMINGS_FILE), timings)
  headline = scorers[0]
  reduction = norm if headline.has_map else evaluation.OWN
  logging.info('%s: image AUROC (%s) / pixel AUROC / AU-PRO: %s; F1 at the '
               'val threshold (%s) %.3f', dataset.category, norm,
               _summary_line(metrics, norm, scorers), headline.name,
               metrics[f'{headline.name}/{reduction}/threshold_f1'])
  return metrics


def validation_ranges(val_maps: dict, val_own: dict,
                      protocol: evaluation.Protocol) -> dict[str, list[float]]:
  """{scorer: [min, max]} of the good validation images' image scores, as
  the image thresholds are calibrated on: the headline reduction of their
  maps `val_maps` (at the evaluation resolution), or a map-less scorer's
  own score (`val_own`)."""
  scores = {k: evaluation.reduce(v, protocol.headline, protocol.sigma)
            for k, v in val_maps.items()}
  scores.update({k: v for k, v in val_own.items() if k not in scores})
  return {k: evaluation.score_range(v) for k, v in scores.items()}


# metrics.json of a category without test images: 0, its only test key.
GOOD_ONLY_KEY = 'test/images'


def good_only_message(dataset: data_lib.Dataset, path: str = '') -> str:
  """The log line and report note of a category without test images."""
  where = path or dataset.category
  return (f'no defective test images in {where}: trained and calibrated the '
          f'threshold on {len(dataset.val)} good validation images; test '
          'metrics need test/<defect>/ folders with masks (and test/good/).')


def val_thresholds(config: ml_collections.ConfigDict, dataset, scored: Scored,
                   scorers, protocol: evaluation.Protocol
                   ) -> tuple[dict[str, float], dict[str, list[float]]]:
  """({scorer: deployment threshold}, {scorer: [min, max] of the image
  scores}) from the good validation images alone
  (the rule of the report's thresholds: `protocol`'s headline reduction,
  or a map-less scorer's own score), at the resolution aad.predict scores
  new images at: each image's native size with eval.resolution
  'original', else the model's."""
  val = dataset.val
  out, ranges = {}, {}
  for s in scorers:
    if not s.has_map:
      values = scored.val_own[s.name]
    elif config.eval.resolution == 'original':
      values = [evaluation.reduce(evaluation.resize_maps(
          m[None], np.asarray(val.native_masks[i]).shape), protocol.headline,
                                  protocol.sigma)[0]
                for i, m in enumerate(scored.val_maps[s.name])]
    else:
      values = evaluation.reduce(scored.val_maps[s.name], protocol.headline,
                                 protocol.sigma)
    out[s.name] = evaluation.calibrate_threshold(
        values, protocol.threshold_mode, protocol.threshold_quantile)
    ranges[s.name] = evaluation.score_range(np.asarray(values))
  return out, ranges


def _good_only_category(config, family, dataset, out_dir, scorers, scored,
                        protocol, extra, unfinished, t_start) -> dict:
  """`evaluate_category` without test images: thresholds, fitted scorers
  and a report that says why it has no test metrics."""
  thresholds, ranges = val_thresholds(config, dataset, scored, scorers,
                                      protocol)
  written = write_thresholds(out_dir, config, thresholds, scored.val_maps,
                             ranges)
  workdir_lib.save_fitted(out_dir, scored.fitted)
  where = (folder.category_dir(config.dataset.path, dataset.category)
           if config.dataset.name == 'folder' else '')
  message = good_only_message(dataset, where)
  # Counts and the training summary only: nothing that reads as a test
  # metric.
  metrics = {'val/good_images': len(dataset.val), GOOD_ONLY_KEY: 0}
  timings = split_timings(metrics, extra)
  reduction = lambda s: protocol.headline if s.has_map else evaluation.OWN
  notes = [message,
           f'Model: {config.model.name}; scorers: '
           f'{", ".join(s.name for s in scorers)} (the first is the '
           'headline).',
           f'Deployment thresholds (thresholds.json, what aad.predict '
           f'uses): {written["image_rule"]}, on each scorer\'s image score; '
           f'pixel thresholds: the {written["pixel_quantile"]:g} quantile '
           'of their map values.']
  if unfinished:
    notes.insert(0, unfinished)
  lines = [f'# {dataset.category}', '', f'**{message}**', '',
           '## Deployment thresholds', '',
           *tables.markdown_table(
               ['scorer', 'image score', 'image threshold',
                'pixel threshold'],
               [[s.name, reduction(s), f'{thresholds[s.name]:.4g}',
                 f'{written["pixel"][s.name]:.4g}'
                 if s.name in written['pixel'] else '—']
                for s in scorers]), '',
           '## Training', '',
           *tables.markdown_table(['key', 'value'], [
               [k, f'{v:.6g}'] for k, v in metrics.items()]), '',
           *tables.notes_section(notes)]
  os.makedirs(out_dir, exist_ok=True)
  atomic.write_text(os.path.join(out_dir, 'report.md'),
                    '\n'.join(lines) + '\n')
  atomic.write_json(os.path.join(out_dir, 'metrics.json'), metrics)
  timings['eval/seconds'] = time.time() - t_start
  atomic.write_json(os.path.join(out_dir, workdir_lib.TIMINGS_FILE), timings)
  logging.warning('%s', message)
  return metrics


def write_thresholds(out_dir: str, config: ml_collections.ConfigDict,
                     image_thresholds: dict[str, float],
                     val_maps: dict[str, np.ndarray],
                     image_ranges: dict[str, list[float]] | None = None
                     ) -> dict:
  """Saves the deployment thresholds `aad.predict` uses by default.

  Image thresholds are those of the report (on the headline reduction of
  the good validation maps); pixel thresholds, for predicted masks, are the
  eval.pixel_threshold_quantile of the good validation map values;
  image_range, [min, max] of the good validation image scores, scales the
  normalised scores (`evaluation.normalisation`).
  """
  q = config.eval.pixel_threshold_quantile
  out = {
      'norm': config.eval.norm,
      'image_rule': (f'{config.eval.threshold_mode} '
                     f'{config.eval.threshold_quantile:g}'
                     if config.eval.threshold_mode == 'quantile'
                     else config.eval.threshold_mode) +
                    f' of {len(next(iter(val_maps.values())))} good '
                    'validation images',
      'pixel_quantile': q,
      'image': {k: float(v) for k, v in image_thresholds.items()},
      'pixel': {k: float(np.quantile(v, q)) for k, v in val_maps.items()},
  }
  if image_ranges:
    out['image_range'] = {k: image_ranges[k] for k in image_thresholds
                          if k in image_ranges}
  atomic.write_json(os.path.join(out_dir, workdir_lib.THRESHOLDS_FILE), out)
  return out


def write_summary(config: ml_collections.ConfigDict, family, workdir: str,
                  per_category: dict[str, dict[str, float]],
                  unfinished: list[str] = ()) -> dict:
  """Writes workdir/metrics.json and report.md averaged over categories;
  `unfinished` notes (`unfinished_note`) come first in the report.

  Returns:
    The means over categories; {} on processes other than 0, which write
    nothing.
  """
  if not parallel.is_primary():
    return {}
  norm = config.eval.norm
  scorers = configured_scorers(config, family)
  headline = headline_keys(norm, scorers)
  baselines = [s.name for s in scorers if s.baseline]
  good_only = [c for c, m in per_category.items()
               if m.get(GOOD_ONLY_KEY) == 0]
  if good_only:
    unfinished = [
        *unfinished,
        f'No test metrics for {", ".join(good_only)}: no defective test '
        'images (a folder of good images only); their models and '
        'deployment thresholds come from the good training and validation '
        'images (see their reports).']
  noise = (f' + {family.corruption} noise'
           if family.corruption not in ('', 'none') else '')
  means = report.write_summary_report(
      workdir, per_category=per_category,
      title=f'{config.name}: {config.model.name}{noise} on '
      f'{config.dataset.name}',
      notes=[*unfinished,
             f'One model per category; image score = {norm} reduction of '
             'the map (fixed beforehand); scorers '
             f'{", ".join(s.name for s in scorers)}, the first the headline.'
             + (f' {", ".join(baselines)}: no-learning baseline(s).'
                if baselines else ''),
             f'Evaluation resolution: {config.eval.resolution}; deployment '
             f'thresholds: {config.eval.threshold_mode} of the good '
             'validation scores (see the category reports).',
             'Per-defect-type means exist only for types every category '
             'has; each category\'s metrics.json has all of them.',
             RANKING_NOTE.format(norm=norm) + ' Ranked on the means over '
             'categories.'],
      headline_keys=headline, grouped=True,
      type_columns=type_table_columns(norm, scorers),
      ranking=ranking_keys(norm, scorers))
  write_timings(workdir, per_category)
  if len(good_only) == len(per_category):
    logging.info('No test metrics (no defective test images). Report: '
                 '%s/report.md', workdir)
    return means
  logging.info('Mean over %d categories, image AUROC (%s) / pixel AUROC / '
               'AU-PRO: %s. Report: %s/report.md', len(per_category), norm,
               _summary_line(means, norm, scorers), workdir)
  return means


def write_timings(workdir: str, categories) -> dict:
  """workdir/timings.json: each category's timings.json and their means
  (wall-clock seconds; they differ between identical runs)."""
  per = {}
  for category in categories:
    path = os.path.join(workdir, category, workdir_lib.TIMINGS_FILE)
    if os.path.isfile(path):
      with open(path) as f:
        per[category] = json.load(f)
  out = {f'{c}/{k}': v for c, t in per.items() for k, v in t.items()}
  for key in sorted({k for t in per.values() for k in t}):
    values = [t[key] for t in per.values() if key in t]
    out[f'mean/{key}'] = float(np.mean(values))
  atomic.write_json(os.path.join(workdir, workdir_lib.TIMINGS_FILE), out)
  return out


def evaluate_workdir(workdir: str, *, output: str = '', dataset: str = '',
                     path: str = '', categories=(), model_category: str = '',
                     num_devices: int = 0,
                     allow_unfinished: bool = False) -> dict:
  """Scores a trained run again, without training; writes its report.

  Args:
    workdir: the run (config.json and <category>/checkpoints).
    output: where to write; '' = the workdir itself (what training wrote,
      rewritten with the same figures) or, for another dataset,
      workdir/eval/<dataset or folder name>.
    dataset, path: score this dataset (config.dataset.name / .path) instead
      of the one trained on.
    categories: categories to score; () = all of the dataset's (trained
      ones only, for the run's own dataset).
    model_category: the trained category whose model scores every
      category (for another dataset); '' = the one of the same name, or
      the run's only one.
    num_devices: local devices to use; 0 = the run's config.num_devices
      if this machine has that many, else all.
    allow_unfinished: score the checkpoints of a run whose training did
      not end (refused otherwise, before anything is written); its reports
      say so and its metrics get 'train/unfinished' = 1.

  Returns:
    The means over categories (as `write_summary`).
  """
  config = workdir_lib.load_config(workdir)
  trained = workdir_lib.trained_categories(workdir)
  if not trained:
    raise data_lib.DataError(f'{workdir}: no <category>/checkpoints folder; '
                             'train first with python -m aad.main.')
  other = bool(dataset or path)
  if dataset or path:
    config.dataset.name = dataset or 'folder'
  if path:
    config.dataset.path = path
  if categories:
    config.dataset.categories = tuple(categories)
  elif not other:
    config.dataset.categories = trained
  else:
    config.dataset.categories = ()
  family = models.create(config)
  sources = {}
  for category in data_lib.config_categories(config.dataset):
    source = model_category or (category if category in trained else
                                trained[0] if len(trained) == 1 else '')
    if source not in trained:
      raise data_lib.DataError(
          f'No model for category {category!r} in {workdir} (trained: '
          f'{", ".join(trained)}); choose one with --model_category.')
    sources[category] = source
  unfinished = workdir_lib.check_finished(
      workdir, sorted(set(sources.values())), config=config, family=family,
      allow=allow_unfinished, allow_flag='--allow_unfinished')
  if not output:
    output = workdir if not other else os.path.join(
        workdir, 'eval', os.path.basename(os.path.normpath(path)) if path
        else dataset)
  errors.writable_dir(output, '--output')
  # The run's own device count where possible: batch splits change float
  # round-off, so the same count reproduces the figures to the last digit.
  if not num_devices and config.num_devices <= len(jax.local_devices()):
    num_devices = config.num_devices
  devices = parallel.select_devices(num_devices)
  results = {}
  for category, source in sources.items():
    variables, summary = workdir_lib.restore_best(config, family, workdir,
                                                   source)
    note = ''
    if unfinished:  # in every category, so that the summary has its mean
      summary['unfinished'] = int(source in unfinished)
    if source in unfinished:
      note = unfinished_note(source, unfinished[source])
      logging.warning('%s', note)
    logging.info('%s: scoring with the model of %s (best step %d)',
                 category, source, summary['best_step'])
    ds = data_lib.from_config(config.dataset, category)
    out_dir = os.path.join(output, category)
    os.makedirs(out_dir, exist_ok=True)
    results[category] = evaluate_category(config, family, variables, ds,
                                          out_dir, devices, extra=summary,
                                          unfinished=note)
  notes = [unfinished_note(c, u) for c, u in sorted(unfinished.items())]
  return write_summary(config, family, output, results, unfinished=notes)


def unfinished_note(category: str, where: str) -> str:
  """The report's line for a model evaluated with --allow_unfinished."""
  return (f'UNFINISHED TRAINING: the model of {category!r} was evaluated '
          f'with --allow_unfinished; its {where}. These figures are not '
          'those of the trained model (metrics: train/unfinished = 1).')
