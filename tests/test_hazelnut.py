"""Integration on real images: ../shared/data/hazelnut_toy (MVTec layout).

Trains briefly through the command line, then checks that `aad.evaluate`
reproduces the metrics from the checkpoint and that `aad.predict` writes
maps, overlays, masks and scores.csv for the test images.
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
  env = {**os.environ, 'XLA_FLAGS': ''}  # one device, as a user's laptop
  result = subprocess.run([sys.executable, '-m', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


def test_train_evaluate_predict_on_hazelnut_toy(shared_data, tmp_path):
  folder = shared_data / 'hazelnut_toy'
  if not folder.is_dir():
    pytest.skip(f'{folder} is absent')
  workdir = tmp_path / 'run'
  log = _run('aad.main', '--config=configs/test.py', f'--workdir={workdir}',
             '--config.dataset.name=folder', f'--config.dataset.path={folder}',
             '--config.dataset.categories=()', '--config.dataset.channels=3',
             f'--config.dataset.data_dir={tmp_path / "tfds"}',
             '--config.train.num_steps=8')
  assert 'hazelnut_toy step 8/8' in log
  metrics = json.loads((workdir / 'metrics.json').read_text())
  # 6 good + 17 defective test images; 28 train images, 6 held out.
  assert metrics['hazelnut_toy/train/steps'] == 8
  assert 0 <= metrics['hazelnut_toy/residual/l2/image_auroc'] <= 1
  (workdir / 'metrics.json').rename(tmp_path / 'trained_metrics.json')
  _run('aad.evaluate', f'--workdir={workdir}')
  assert json.loads((workdir / 'metrics.json').read_text()) == metrics
  out = tmp_path / 'predicted'
  _run('aad.predict', f'--workdir={workdir}',
       f'--input={folder / "test" / "colour"}', f'--output={out}',
       '--mc_samples=2')
  files = sorted(f for f in os.listdir(out) if not f.startswith('.'))
  assert len(files) == 17 * 3 + 1
  # The list of what aad.predict wrote, so that it never overwrites others'.
  assert (out / '.aad-predict-files').read_text().split() == files
  assert {'00_map.png', '00_overlay.png', '00_mask.png',
          'scores.csv'} <= set(files)
  with open(out / 'scores.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 17
  assert {r['decision'] for r in rows} <= {'anomalous', 'good'}
