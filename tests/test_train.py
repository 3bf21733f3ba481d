"""End to end: train, checkpoint, resume, evaluate, report; CLI errors."""

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sklearn_metrics

from aad import data
from aad.runtime import parallel
from aad.experiment import run as pipeline
from aad.training import loop
from configs import test as test_config
from tests import processes

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(data_dir, **train_overrides):
  config = test_config.get_config()
  config.num_devices = 1
  config.dataset.data_dir = data_dir
  for key, value in train_overrides.items():
    setattr(config.train, key, value)
  return config


def test_train_and_evaluate_writes_the_report(tmp_path, textures_dir):
  means = pipeline.train_and_evaluate(_config(textures_dir), str(tmp_path))
  metrics = json.loads((tmp_path / 'metrics.json').read_text())
  for scorer in ('residual', 'mc_variance', 'baseline_mean'):
    for norm in ('l1', 'l2', 'linf'):
      value = metrics[f'brick/{scorer}/{norm}/image_auroc']
      assert 0.0 <= value <= 1.0
      assert metrics[f'mean/{scorer}/{norm}/image_auroc'] == value
    assert 0.0 <= metrics[f'mean/{scorer}/pixel_auroc'] <= 1.0
  assert means['residual/pixel_auroc'] == metrics['mean/residual/pixel_auroc']
  report = (tmp_path / 'report.md').read_text()
  assert '| brick |' in report and 'baseline_mean' in report
  assert report.startswith('# test: aesc + stain noise on textures\n')
  for name in ('report.md', 'metrics.json', 'roc_image.png', 'roc_pixel.png',
               'heatmaps.png'):
    assert (tmp_path / 'brick' / name).stat().st_size > 100
  # scores.csv: the image scores the metrics came from, test then val rows.
  with open(tmp_path / 'brick' / 'scores.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  test = [r for r in rows if r['split'] == 'test']
  val = [r for r in rows if r['split'] == 'val']
  assert test and val and len(test) + len(val) == len(rows)
  assert {r['label'] for r in val} == {'0'}
  columns = list(rows[0])[4:]
  assert [c.split('/')[0] for c in columns[::len(columns) // 3]] == [
      'residual', 'mc_variance', 'baseline_mean']  # config order
  labels = [int(r['label']) for r in test]
  assert labels == [int(r['type'] != 'good') for r in test]
  for column in ('residual/l2', 'mc_variance/linf', 'baseline_mean/l1'):
    auroc = sklearn_metrics.roc_auc_score(
        labels, [float(r[column]) for r in test])
    assert auroc == pytest.approx(
        metrics[f'brick/{column}/image_auroc'], abs=1e-4)
  # Best-PSNR checkpoint kept for scoring, latest one for resuming.
  steps = sorted(int(p.name) for p in
                 (tmp_path / 'brick' / 'checkpoints' / 'ae').iterdir()
                 if p.name.isdigit())
  assert steps and steps[-1] == 8
  assert metrics['brick/train/best_step'] in steps


def test_nan_loss_stops_with_a_clear_message(tmp_path, textures_dir):
  # The config check refuses an infinite rate up front; training itself
  # must still stop on a non-finite loss, saying no checkpoint exists yet.
  config = _config(textures_dir, learning_rate=float('inf'))
  dataset = data.from_config(config.dataset, 'brick')
  with pytest.raises(loop.TrainingError,
                     match='no checkpoint had been saved yet.*lower config'
                     r'.train.learning_rate in a new --workdir'):
    loop.train_category(config, str(tmp_path), dataset,
                         parallel.select_devices(1))


def _main(workdir, data_dir, *flags):
  return [sys.executable, '-m', 'aad.main', '--config=configs/test.py',
          f'--workdir={workdir}', f'--config.dataset.data_dir={data_dir}',
          '--config.num_devices=1', *flags]


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, textures_dir):
  flags = ['--config.train.num_steps=200', '--config.train.eval_every=10',
           '--config.train.log_every=10']
  cmd = _main(tmp_path, textures_dir, *flags)
  ckpt_dir = tmp_path / 'brick' / 'checkpoints' / 'ae'
  processes.kill_when(
      cmd, lambda: any(s >= 20 for s in processes.saved_steps(ckpt_dir)))
  saved = processes.saved_steps(ckpt_dir)[-1]
  assert 20 <= saved < 200
  rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                         timeout=600, check=False)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'Resuming brick from step {saved}' in rerun.stderr
  assert 'step 10/200' not in rerun.stderr  # it did not start over
  assert (tmp_path / 'metrics.json').exists()


def test_mistyped_config_key_is_named(tmp_path):
  result = subprocess.run(
      _main(tmp_path, tmp_path, '--config.train.num_step=3'), cwd=REPO,
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode != 0
  assert 'num_step' in result.stderr
  assert not (tmp_path / 'brick').exists()


def test_plateau_halves_after_patience():
  plateau = loop.Plateau(patience=2, factor=0.5, min_delta=1.0)
  lrs = [plateau.update(v, 1e-3) for v in (20.0, 20.5, 20.9)]
  np.testing.assert_allclose(lrs, [1e-3, 1e-3, 5e-4])
  assert plateau.update(22.5, 5e-4) == 5e-4 and plateau.best == 22.5


