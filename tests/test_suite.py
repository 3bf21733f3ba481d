"""aad.suite: the table of hand-written runs, the command line's errors,
and a tiny suite of two generated folders end to end."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from aad import suite
from aad.runtime import errors

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(root, name, *, scorers, norm, metrics=None, timings=None):
  """A hand-written run folder: config.json, and metrics.json and
  timings.json where given."""
  (root / name).mkdir(parents=True)
  (root / name / 'config.json').write_text(json.dumps(
      {'model': {'name': 'aesc'},
       'eval': {'norm': norm, 'scorers': list(scorers)}}))
  if metrics is not None:
    (root / name / 'metrics.json').write_text(json.dumps(metrics))
  if timings is not None:
    (root / name / 'timings.json').write_text(json.dumps(timings))


@pytest.fixture
def runs(tmp_path):
  # 'own': the headline scorer has its own image score; its norm
  # reduction (0.1) and the better residual scorer are not shown.
  _run(tmp_path, 'own', scorers=('normalised', 'residual', 'baseline_mean'),
       norm='top_k', metrics={
           'mean/normalised/own/image_auroc': 0.9,
           'mean/normalised/top_k/image_auroc': 0.1,
           'mean/normalised/pixel_auroc': 0.8,
           'mean/normalised/pixel_au_pro': 0.6,
           'mean/residual/top_k/image_auroc': 0.99,
           'mean/residual/pixel_auroc': 0.99,
           'mean/residual/pixel_au_pro': 0.99,
           'mean/baseline_mean/top_k/image_auroc': 0.5,
           'mean/baseline_mean/pixel_auroc': 0.55,
           'own/normalised/own/image_auroc': 0.9},
       timings={'own/train/train_seconds': 120.0, 'own/eval/seconds': 30.0,
                'mean/train/train_seconds': 120.0,
                'mean/eval/seconds': 30.0})
  # 'norm': the headline has no image score of its own (the run's norm);
  # no baseline evaluated; two categories, one of two stages.
  _run(tmp_path, 'norm', scorers=('residual',), norm='l2', metrics={
      'mean/residual/l2/image_auroc': 0.7,
      'mean/residual/max/image_auroc': 0.2,
      'mean/residual/pixel_auroc': 0.9,
      'mean/residual/pixel_au_pro': 0.5},
       timings={'x/train/train_seconds': 60.0,
                'x/train/ae/train_seconds': 60.0,
                'x/eval/seconds': 30.0,
                'y/train/train_seconds': 180.0, 'y/eval/seconds': 30.0,
                'mean/train/train_seconds': 120.0,
                'mean/eval/seconds': 30.0})
  # 'default': config.eval.scorers empty (the family's list): the first
  # scorer of the metrics but the baseline.
  _run(tmp_path, 'default', scorers=(), norm='l2', metrics={
      'mean/baseline_mean/l2/image_auroc': 0.6,
      'mean/baseline_mean/pixel_auroc': 0.65,
      'mean/mc_variance/l2/image_auroc': 0.8,
      'mean/mc_variance/pixel_auroc': 0.7,
      'mean/mc_variance/pixel_au_pro': 0.4,
      'mean/residual/l2/image_auroc': 0.95,
      'mean/residual/pixel_auroc': 0.95})
  # Unfinished: its timings so far are shown, it is left out of the
  # mean and worst.
  _run(tmp_path, 'unfinished', scorers=('residual',), norm='l2',
       timings={'unfinished/train/train_seconds': 6000.0,
                'mean/train/train_seconds': 6000.0})
  return tmp_path


NAMES = ['own', 'norm', 'default', 'unfinished', 'absent']


def test_table_rows_mean_and_worst(runs):
  header, rows, notes = suite.gather(str(runs), NAMES)
  assert header == ['dataset', 'scorer', 'image AUROC', 'pixel AUROC',
                    'AU-PRO', 'baseline image AUROC', 'baseline pixel AUROC',
                    'train min', 'total min', 'status']
  assert rows == [
      ['own', 'normalised', '0.900', '0.800', '0.600', '0.500', '0.550',
       '2.0', '2.5', 'done'],
      ['norm', 'residual', '0.700', '0.900', '0.500', '', '', '2.0', '5.0',
       'done'],
      ['default', 'mc_variance', '0.800', '0.700', '0.400', '0.600', '0.650',
       '', '', 'done'],
      ['unfinished', '', '', '', '', '', '', '100.0', '100.0',
       'not finished'],
      ['absent', '', '', '', '', '', '', '', '', 'not started'],
      # (0.9 + 0.7 + 0.8) / 3, (0.8 + 0.9 + 0.7) / 3, (0.6 + 0.5 + 0.4) / 3;
      # the baseline of the two sets that have it; the minutes of the two.
      ['mean', '', '0.800', '0.800', '0.500', '0.550', '0.600', '2.0',
       '3.8', ''],
      # The lowest metrics, the most minutes.
      ['worst', '', '0.700', '0.700', '0.400', '0.500', '0.550', '2.0',
       '5.0', ''],
  ]
  assert notes[0] == ('mean and worst over 3 of 5 sets; left out: '
                      'unfinished (not finished), absent (not started).')


def test_failed_sets_are_marked_and_left_out(runs):
  _, rows, notes = suite.gather(str(runs), ['own', 'unfinished'],
                                failed=('unfinished',))
  assert rows[1][-1] == 'failed'
  assert rows[2][:5] == ['mean', '', '0.900', '0.800', '0.600']
  assert rows[3][:5] == ['worst', '', '0.900', '0.800', '0.600']
  assert notes[0].startswith('mean and worst over 1 of 2 sets')


def test_no_finished_set_gives_blank_mean_and_worst(runs):
  _, rows, notes = suite.gather(str(runs), ['unfinished'])
  assert [r[0] for r in rows] == ['unfinished', 'mean', 'worst']
  assert rows[1][1:] == [''] * 9 and rows[2][1:] == [''] * 9
  assert notes[0].startswith('mean and worst over 0 of 1 sets')


def test_write_and_sets_under(runs):
  text = suite.write(str(runs), NAMES)
  assert text == (runs / 'suite.md').read_text()
  assert '| mean |' in text and '| worst |' in text
  assert 'mean and worst over 3 of 5 sets' in text
  csv_lines = (runs / 'suite.csv').read_text().splitlines()
  assert csv_lines[0].startswith('dataset,scorer,image AUROC,')
  assert len(csv_lines) == 1 + len(NAMES) + 2
  # Without suite.json: the sub-directories with a config.json.
  assert suite.sets_under(str(runs)) == ['default', 'norm', 'own',
                                         'unfinished']
  (runs / 'suite.json').write_text(json.dumps(
      {'config': 'x', 'sets': [{'name': 'norm', 'path': '/d/norm'}]}))
  assert suite.sets_under(str(runs)) == ['norm']


def test_folders_names_and_errors(tmp_path):
  (tmp_path / 'a' / 'parts').mkdir(parents=True)
  (tmp_path / 'b' / 'parts').mkdir(parents=True)
  (tmp_path / 'c').mkdir()
  assert suite.folders([str(tmp_path / 'a' / 'parts') + '/',
                        str(tmp_path / 'c')]) == [
                            ('parts', str(tmp_path / 'a' / 'parts')),
                            ('c', str(tmp_path / 'c'))]
  with pytest.raises(errors.UsageError, match='same folder name'):
    suite.folders([str(tmp_path / 'a' / 'parts'),
                   str(tmp_path / 'b' / 'parts')])
  with pytest.raises(errors.UsageError, match='nope: no such folder'):
    suite.folders([str(tmp_path / 'c'), str(tmp_path / 'nope')])


# --- the command line ---------------------------------------------------------


def _suite(*args, cwd=REPO, timeout=120):
  env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS='')
  return subprocess.run([sys.executable, '-m', 'aad.suite', *args], cwd=cwd,
                        env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _one_error_line(result) -> str:
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, result.stderr
  return lines[0]


FOLDER_CONFIG = f'--config={REPO / "configs" / "folder.py"}'


def test_cli_missing_dev_suite_is_one_line(tmp_path):
  # A current folder without ../shared/data.
  cwd = tmp_path / 'x' / 'repo'
  cwd.mkdir(parents=True)
  line = _one_error_line(_suite(FOLDER_CONFIG, cwd=cwd))
  assert 'pass --datasets=DIR,DIR' in line
  assert not (cwd / 'runs').exists()


def test_cli_missing_and_duplicate_folders_are_one_line(tmp_path):
  (tmp_path / 'a' / 'parts').mkdir(parents=True)
  (tmp_path / 'b' / 'parts').mkdir(parents=True)
  missing = _one_error_line(_suite(
      FOLDER_CONFIG, f'--datasets={tmp_path / "a" / "parts"},'
      f'{tmp_path / "nope"}', f'--workdir={tmp_path / "runs"}'))
  assert f'{tmp_path / "nope"}: no such folder' in missing
  same = _one_error_line(_suite(
      FOLDER_CONFIG, f'--datasets={tmp_path / "a" / "parts"},'
      f'{tmp_path / "b" / "parts"}', f'--workdir={tmp_path / "runs"}'))
  assert "same folder name 'parts'" in same
  assert not (tmp_path / 'runs').exists()


def test_cli_refuses_a_config_of_another_dataset(tmp_path):
  (tmp_path / 'parts').mkdir()
  line = _one_error_line(_suite(
      '--config=configs/test.py', f'--datasets={tmp_path / "parts"}',
      f'--workdir={tmp_path / "runs"}'))
  assert "dataset.name is 'textures'" in line


def test_cli_table_only_prints_the_table_of_a_root(runs):
  result = _suite('--table_only', f'--workdir={runs}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout == (runs / 'suite.md').read_text()
  assert '| own | normalised | 0.900 |' in result.stdout
  assert 'over 3 of 4 sets' in result.stdout
  nothing = _one_error_line(_suite('--table_only',
                                   f'--workdir={runs / "nope"}'))
  assert 'no such folder' in nothing


# --- end to end -----------------------------------------------------------------


def _save(path: pathlib.Path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def _tiny_folder(root: pathlib.Path, seed: int) -> pathlib.Path:
  """An MVTec-layout folder of 32x32 grey PNGs: 8 good training images,
  2 good and 2 defective test images with their masks."""
  rng = np.random.default_rng(seed)

  def image():
    return rng.integers(100, 140, (32, 32), dtype=np.uint8)

  for i in range(8):
    _save(root / f'train/good/{i:03d}.png', image())
  for i in range(2):
    _save(root / f'test/good/{i:03d}.png', image())
    defect, mask = image(), np.zeros((32, 32), np.uint8)
    defect[8 + 4 * i:16 + 4 * i, 10:20] = 250
    mask[8 + 4 * i:16 + 4 * i, 10:20] = 255
    _save(root / f'test/spot/{i:03d}.png', defect)
    _save(root / f'ground_truth/spot/{i:03d}_mask.png', mask)
  return root


def test_a_suite_of_two_tiny_folders_runs_and_gathers(tmp_path):
  sets = [_tiny_folder(tmp_path / 'data' / name, seed)
          for seed, name in enumerate(('alpha', 'beta'))]
  # Not in MVTec layout: its run fails, the others go on.
  broken = tmp_path / 'data' / 'broken'
  broken.mkdir()
  (broken / 'notes.txt').write_text('x')
  root = tmp_path / 'runs'
  tiny = ['--config=configs/test.py', f'--workdir={root}',
          '--config.dataset.name=folder', '--config.dataset.categories=()',
          '--config.dataset.channels=1',
          f'--config.dataset.data_dir={tmp_path / "tfds"}',
          '--config.num_devices=1', '--config.train.num_steps=2',
          '--config.train.eval_every=2', '--config.eval.mc_samples=2',
          "--config.eval.scorers=('residual','baseline_mean')"]
  result = _suite(*tiny, f'--datasets={sets[0]},{broken},{sets[1]}',
                  timeout=600)
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Suite set 3/3: beta' in result.stderr
  assert 'Suite set broken failed:' in result.stderr
  assert '1 suite set(s) failed: broken.' in result.stderr
  # After the data preparation's lines.
  assert result.stdout.endswith((root / 'suite.md').read_text())
  _, rows, notes = suite.gather(str(root), ['alpha', 'broken', 'beta'],
                                failed=('broken',))
  assert [r[0] for r in rows] == ['alpha', 'broken', 'beta', 'mean',
                                  'worst']
  assert [r[1] for r in rows[:3]] == ['residual', '', 'residual']
  assert [r[-1] for r in rows[:3]] == ['done', 'failed', 'done']
  for row in (rows[0], rows[2], rows[3], rows[4]):
    assert row[2] and row[5]  # image AUROC and the baseline's
  assert notes[0] == ('mean and worst over 2 of 3 sets; left out: broken '
                      '(failed).')
  for row in rows:
    assert f'| {" | ".join(row)} |' in result.stdout
  assert json.loads((root / 'suite.json').read_text())['sets'] == [
      {'name': 'alpha', 'path': str(sets[0])},
      {'name': 'broken', 'path': str(broken)},
      {'name': 'beta', 'path': str(sets[1])}]
  # Finished sets are skipped on a rerun.
  again = _suite(*tiny, f'--datasets={sets[0]},{sets[1]}', timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Suite set 1/2 alpha: finished, skipped.' in again.stderr
  assert 'Suite set 2/2 beta: finished, skipped.' in again.stderr
  assert 'over 2 of 2 sets.' in again.stdout
