"""Scoring a test split with a trained model, and the per-run summary.

Scorers are named maps over the test images; each is reduced to image
scores by every configured norm and evaluated by image and pixel AUROC:
- residual: |x - AE(x)| summed over channels (METHOD.md 4.1);
- mc_variance: Monte-Carlo-dropout variance (METHOD.md 4.2);
- baseline_mean: |x - mean training image|, a no-learning baseline that
  shows how hard the benchmark is.
"""

import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from aad import data as data_lib
from aad import metrics as metrics_lib
from aad import models
from aad import parallel
from aad import report
from aad import scoring

SCORERS = ('residual', 'mc_variance', 'baseline_mean')


def score_split(config: ml_collections.ConfigDict, variables: Any,
                images: np.ndarray, devices: list[jax.Device]) -> dict:
  """Runs the model over `images` (uint8 NHWC); returns host maps."""
  model = models.create(config.model)
  per_device = config.eval.batch_size
  chunk = config.eval.mc_chunk or scoring.mc_chunk_size(
      config.eval.mc_samples, per_device, images.shape[1:],
      config.model.features)
  fn = parallel.batched_call(
      scoring.make_score_fn(model.apply, samples=config.eval.mc_samples,
                            chunk=chunk,
                            key=jax.random.key(config.seed + 2)),
      devices)
  variables = parallel.replicate(variables, devices)
  step = per_device * len(devices)
  outputs, t0 = [], time.time()
  for start in range(0, len(images), step):
    batch = images[start:start + step]
    outputs.append(jax.device_get(
        fn(variables, (batch, np.arange(start, start + len(batch))))))
    done = start + len(batch)
    logging.info('scored %d/%d images (%.1f img/s with %d MC passes)', done,
                 len(images), done / (time.time() - t0),
                 config.eval.mc_samples)
  return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def evaluate_maps(maps: dict[str, np.ndarray], split: data_lib.Split,
                  norms) -> tuple[dict, dict]:
  """Image and pixel AUROC of every scorer; returns (metrics, roc curves)."""
  results, curves = {}, {'image': {}, 'pixel': {}}
  labels, masks = split.labels, split.masks
  for name, m in maps.items():
    entry = {}
    for norm in norms:
      scores = np.asarray(scoring.reduce_map(m, norm))
      entry[norm] = {'image_auroc': metrics_lib.auroc(labels, scores)}
      curves['image'][f'{name} ({norm})'] = metrics_lib.roc_curve(
          labels, scores)[:2]
    entry['pixel_auroc'] = metrics_lib.pixel_auroc(masks, m)
    curves['pixel'][name] = metrics_lib.roc_curve(masks.ravel(),
                                                  m.ravel())[:2]
    results[name] = entry
  return results, curves


def _heatmap_rows(split, outputs, maps, count):
  """Picks up to `count` test images: defects of every type, then goods."""
  order = sorted(range(len(split.labels)),
                 key=lambda i: (split.labels[i] == 0, split.defect_types[i],
                                i))
  types, picked = {}, []
  for i in order:  # round-robin over defect types so each is shown
    types.setdefault(split.defect_types[i], []).append(i)
  while len(picked) < min(count, len(order)):
    for idxs in types.values():
      if idxs and len(picked) < count:
        picked.append(idxs.pop(0))
  rows = []
  for i in picked:
    rows.append({
        'label': f'{split.names[i]} ({split.defect_types[i]})',
        'input': split.images[i],
        'reconstruction': outputs['reconstruction'][i],
        'residual': maps['residual'][i],
        'MC variance': maps['mc_variance'][i],
        'ground truth': split.masks[i],
    })
  return rows


def evaluate_category(config: ml_collections.ConfigDict, state: Any,
                      dataset: data_lib.Dataset, out_dir: str,
                      devices: list[jax.Device],
                      extra: dict | None = None) -> dict[str, float]:
  """Scores `dataset.test`, writes out_dir/{metrics.json,report.md,*.png}.

  Returns:
    The category's flattened metrics ('residual/l2/image_auroc', ...).
  """
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  split = dataset.test
  outputs = score_split(config, variables, split.images, devices)
  mean_train = dataset.train.images.astype(np.float32).mean(0) / 255.0
  maps = {
      'residual': outputs['residual'],
      'mc_variance': outputs['mc_variance'],
      'baseline_mean': np.abs(split.images / 255.0 - mean_train).sum(-1),
  }
  results, curves = evaluate_maps(maps, split, config.eval.norms)
  metrics = report.flatten(results)
  for key, value in (extra or {}).items():
    metrics[f'train/{key}'] = value
  notes = [
      f'Headline image score: the {config.eval.norm} norm of the map, fixed '
      'in the config before evaluation.',
      'Pixel AUROC pools every pixel of every test image (good ones '
      'included) at the model resolution '
      f'({config.dataset.image_size}x{config.dataset.image_size}).',
      f'MC dropout: {config.eval.mc_samples} passes, BatchNorm on running '
      'averages.',
  ]
  report.write_category_report(
      out_dir, category=dataset.category, metrics=metrics,
      roc_curves=curves,
      heatmap_rows=_heatmap_rows(split, outputs, maps,
                                 config.eval.heatmap_rows),
      columns=['input', 'reconstruction', 'residual', 'MC variance',
               'ground truth'],
      notes=notes)
  norm = config.eval.norm
  logging.info('%s: residual/%s image AUROC %.3f, pixel AUROC %.3f; '
               'MC variance %.3f / %.3f; baseline %.3f / %.3f',
               dataset.category, norm,
               metrics[f'residual/{norm}/image_auroc'],
               metrics['residual/pixel_auroc'],
               metrics[f'mc_variance/{norm}/image_auroc'],
               metrics['mc_variance/pixel_auroc'],
               metrics[f'baseline_mean/{norm}/image_auroc'],
               metrics['baseline_mean/pixel_auroc'])
  return metrics


def write_summary(config: ml_collections.ConfigDict, workdir: str,
                  per_category: dict[str, dict[str, float]]) -> dict:
  """Writes workdir/metrics.json and report.md averaged over categories."""
  norm = config.eval.norm
  headline = [f'{s}/{norm}/image_auroc' for s in SCORERS] + [
      f'{s}/pixel_auroc' for s in SCORERS]
  means = report.write_summary_report(
      workdir, per_category=per_category,
      title=f'{config.name}: {config.model.name} + {config.corruption.name} '
      f'noise on {config.dataset.name}',
      notes=[f'One model per category; image score = {norm} norm of the '
             'map (fixed beforehand). baseline_mean is the no-learning '
             'residual to the mean training image.'],
      headline_keys=headline)
  logging.info('Mean over %d categories: residual/%s image AUROC %.3f, '
               'pixel AUROC %.3f (baseline %.3f / %.3f). Report: %s/report.md',
               len(per_category), norm, means[f'residual/{norm}/image_auroc'],
               means['residual/pixel_auroc'],
               means[f'baseline_mean/{norm}/image_auroc'],
               means['baseline_mean/pixel_auroc'], workdir)
  return means
