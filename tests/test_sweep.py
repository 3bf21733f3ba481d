"""Sweeps: declared as data, expanded into runs, gathered into one table."""

import json
import logging
import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from aad import summary
from aad import sweep
from configs import test_sweep

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_expand_is_the_product_of_the_axes_in_field_order():
  config = test_sweep.get_config()
  points = sweep.expand(config)
  assert [p.name for p in points] == [
      'corruption.name=stain_seed=0', 'corruption.name=stain_seed=1',
      'corruption.name=gaussian_seed=0', 'corruption.name=gaussian_seed=1']
  run = sweep.point_config(config, points[2])
  assert run.corruption.name == 'gaussian' and run.seed == 0
  assert not run.sweep and config.sweep  # the base is left as it was
  assert run.train.num_steps == config.train.num_steps


def test_tuple_valued_fields_sweep_and_name_their_runs():
  config = test_sweep.get_config()
  config.sweep = ml_collections.ConfigDict(
      {'dataset': {'categories': (('brick',), ('grass', 'gravel'))}})
  points = sweep.expand(config)
  assert [p.name for p in points] == ['dataset.categories=brick',
                                      'dataset.categories=grass+gravel']
  assert sweep.point_config(config, points[1]).dataset.categories == (
      'grass', 'gravel')


def test_cases_set_fields_together_crossed_with_the_axes():
  config = test_sweep.get_config()
  config.sweep = ml_collections.ConfigDict({
      'seed': (0, 1),
      'cases': ({'model.name': 'aesc'},
                {'model.name': 'draem', 'eval.norm': 'smooth_max'})})
  points = sweep.expand(config)
  assert [p.name for p in points] == [
      'model.name=aesc_seed=0', 'model.name=aesc_seed=1',
      'model.name=draem_eval.norm=smooth-max_seed=0',
      'model.name=draem_eval.norm=smooth-max_seed=1']
  draem = sweep.point_config(config, points[3])
  assert (draem.model.name, draem.eval.norm, draem.seed) == (
      'draem', 'smooth_max', 1)
  aesc = sweep.point_config(config, points[0])
  assert (aesc.model.name, aesc.eval.norm) == ('aesc', config.eval.norm)


@pytest.mark.parametrize('axes, message', [
    ({'cases': ()}, 'non-empty tuple'),
    ({'cases': ({},)}, r'cases\[0\].*non-empty'),
    ({'cases': ({'model.nam': 'ae'},)}, r'cases\[0\]: the config has no '
                                        'field model.nam'),
    ({'train': {'num_step': (1, 2)}}, 'no field train.num_step'),
    ({'seed': 3}, 'non-empty tuple'),
    ({'seed': ()}, 'non-empty tuple'),
    ({'distributed': {'process_id': (0, 1)}}, 'cannot vary distributed'),
    ({'seed': ('zero',)}, "value 'zero' does not fit"),
])
def test_bad_sweeps_are_named(axes, message):
  config = test_sweep.get_config()
  config.sweep = ml_collections.ConfigDict(axes)
  with pytest.raises(ValueError, match=message):
    for point in sweep.expand(config):
      sweep.point_config(config, point)


def test_a_two_by_two_sweep_runs_and_its_summary_lists_every_run(
    tmp_path, textures_dir, caplog):
  flags = ['--config=configs/test_sweep.py', f'--workdir={tmp_path}',
           f'--config.dataset.data_dir={textures_dir}',
           '--config.num_devices=1', '--config.train.num_steps=2',
           '--config.train.eval_every=2', '--config.eval.mc_samples=2',
           '--config.eval.batch_size=112']
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  dry = subprocess.run([sys.executable, '-m', 'aad.sweep', *flags,
                        '--dry_run'], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300, check=False)
  assert dry.returncode == 0, dry.stderr[-3000:]
  assert '4 runs under' in dry.stdout and '--point=3' in dry.stdout
  assert not (tmp_path / 'sweep.json').exists()

  result = subprocess.run([sys.executable, '-m', 'aad.sweep', *flags],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  print(result.stdout)
  names = [p.name for p in sweep.expand(test_sweep.get_config())]
  table = (tmp_path / 'summary.md').read_text()
  assert table == result.stdout  # what it printed is what it wrote
  header, rows = summary.gather(str(tmp_path))
  assert header[:5] == ['run', 'corruption.name', 'seed', 'model', 'scorer']
  scorer_names = ['baseline_mean', 'mc_variance', 'residual']
  assert [r[0] for r in rows] == [n for n in names for _ in scorer_names]
  assert [r[4] for r in rows] == scorer_names * 4
  assert [r[1:3] for r in rows[::3]] == [['stain', '0'], ['stain', '1'],
                                         ['gaussian', '0'], ['gaussian', '1']]
  auroc = header.index('image AUROC')
  for row in rows:
    name, scorer = row[0], row[4]
    assert row[-1] == 'done' and row[3] == 'aesc'
    assert f'| {name} |' in table
    metrics = json.loads((tmp_path / name / 'metrics.json').read_text())
    assert row[auroc] == f'{metrics[f"mean/{scorer}/l2/image_auroc"]:.3f}'
    run_config = json.loads((tmp_path / name / 'config.json').read_text())
    assert run_config['seed'] == int(row[2]) and not run_config['sweep']
  # Different seeds and corruptions train different models.
  residual = [r for r in rows if r[4] == 'residual']
  assert len({json.dumps(r[5:-2]) for r in residual}) > 1
  csv_lines = (tmp_path / 'summary.csv').read_text().splitlines()
  assert csv_lines[0].startswith('run,corruption.name,seed,model,scorer,') and (
      len(csv_lines) == 13)

  # Finished points are skipped on a rerun.
  config = test_sweep.get_config()
  config.dataset.data_dir = textures_dir
  with caplog.at_level(logging.INFO):
    assert sweep.run(config, str(tmp_path)) == []
  assert caplog.text.count('finished, skipped') == 4


def test_main_and_sweep_refuse_the_other_kind_of_config(tmp_path):
  main = subprocess.run(
      [sys.executable, '-m', 'aad.main', '--config=configs/test_sweep.py',
       f'--workdir={tmp_path}'], cwd=REPO, capture_output=True, text=True,
      timeout=300, check=False)
  assert main.returncode != 0
  assert 'declares a sweep: run it with python -m aad.sweep' in main.stderr
  plain = subprocess.run(
      [sys.executable, '-m', 'aad.sweep', '--config=configs/test.py',
       f'--workdir={tmp_path}'], cwd=REPO, capture_output=True, text=True,
      timeout=300, check=False)
  assert plain.returncode != 0 and 'declares no sweep' in plain.stderr
  assert not list(tmp_path.iterdir())
