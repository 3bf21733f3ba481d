"""aad.summary on hand-written runs: scorers with and without maps."""

import json

from aad import summary


def _run(root, name, metrics, norm='l2'):
  (root / name).mkdir()
  (root / name / 'metrics.json').write_text(json.dumps(metrics))
  (root / name / 'config.json').write_text(json.dumps(
      {'model': {'name': 'aesc'}, 'eval': {'norm': norm}}))


def test_rows_for_mapped_own_and_mapless_scorers(tmp_path):
  _run(tmp_path, 'a', {
      # A map and the run's norm only.
      'mean/residual/l2/image_auroc': 0.91, 'mean/residual/pixel_auroc': 0.81,
      'mean/residual/pixel_au_pro': 0.61,
      'mean/residual/l2/threshold_f1': 0.71,
      # A map and its own image score: the own one is shown.
      'mean/ssim/l2/image_auroc': 0.5, 'mean/ssim/own/image_auroc': 0.92,
      'mean/ssim/pixel_auroc': 0.82, 'mean/ssim/own/threshold_f1': 0.72,
      # No map at all.
      'mean/sh/own/image_auroc': 0.93, 'mean/sh/own/threshold_f1': 0.73,
      # Per-category and per-type keys are not scorers of the summary.
      'brick/sh/own/image_auroc': 0.1,
      'mean/by_type/crack/sh/own/image_auroc': 0.2})
  _run(tmp_path, 'b', {'mean/residual/max/image_auroc': 0.6,
                       'mean/residual/pixel_auroc': 0.7}, norm='max')
  header, rows = summary.gather(str(tmp_path))
  col = {c: header.index(c) for c in ('scorer', 'image AUROC', 'pixel AUROC',
                                      'AU-PRO', 'F1 at val threshold')}
  got = [[r[0], r[col['scorer']], r[col['image AUROC']], r[col['pixel AUROC']],
          r[col['AU-PRO']], r[col['F1 at val threshold']]] for r in rows]
  assert got == [['a', 'residual', '0.910', '0.810', '0.610', '0.710'],
                 ['a', 'sh', '0.930', '', '', '0.730'],
                 ['a', 'ssim', '0.920', '0.820', '', '0.720'],
                 ['b', 'residual', '0.600', '0.700', '', '']]


def test_train_seconds_come_from_timings_json(tmp_path):
  metrics = {'mean/residual/l2/image_auroc': 0.9,
             'mean/residual/pixel_auroc': 0.8,
             # An older run's metrics.json held the timing: not read.
             'mean/train/train_seconds': 99.0}
  _run(tmp_path, 'a', metrics)
  _run(tmp_path, 'b', metrics)
  (tmp_path / 'a' / 'timings.json').write_text(json.dumps(
      {'mean/train/train_seconds': 21.6}))
  header, rows = summary.gather(str(tmp_path))
  col = header.index('train s (mean)')
  assert [(r[0], r[col]) for r in rows] == [('a', '22'), ('b', '')]


def test_a_field_only_some_sweep_cases_set_is_blank_elsewhere(tmp_path):
  metrics = {'mean/residual/l2/image_auroc': 0.9,
             'mean/residual/pixel_auroc': 0.8}
  _run(tmp_path, 'model.name=aesc', metrics)
  _run(tmp_path, 'model.name=draem_eval.norm=smooth-max',
       {'mean/segmentation/smooth_max/image_auroc': 0.95,
        'mean/segmentation/pixel_auroc': 0.9}, norm='smooth_max')
  (tmp_path / 'sweep.json').write_text(json.dumps({
      'axes': {'model.name': ['aesc', 'draem'], 'eval.norm': ['smooth_max']},
      'points': [
          {'name': 'model.name=aesc', 'overrides': {'model.name': 'aesc'}},
          {'name': 'model.name=draem_eval.norm=smooth-max',
           'overrides': {'model.name': 'draem', 'eval.norm': 'smooth_max'}}]}))
  header, rows = summary.gather(str(tmp_path))
  assert header[1:3] == ['model.name', 'eval.norm']
  image = header.index('image AUROC')
  assert [(r[1], r[2], r[image]) for r in rows] == [
      ('aesc', '', '0.900'), ('draem', 'smooth_max', '0.950')]
