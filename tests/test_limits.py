"""The reliability matrix's cases of sizes and inputs a run cannot take:
config files that fail to load, sizes that cannot fit, bad input images
(docs/reliability.md). In-process where possible."""

import csv
import glob
import os
import pathlib
import subprocess
import sys

import pytest

from aad import benchmark
from aad import predict
from aad.data import imageio
from aad.experiment import limits
from aad.experiment import validate
from aad.runtime import errors
from aad.runtime import logs
from configs import aesc_stain
from tests.test_predict import run  # pylint: disable=unused-import


def _config(**fields):
  c = aesc_stain.get_config()
  for key, value in fields.items():
    block, field = key.split('__')
    c[block][field] = value
  return c


def _broken_configs(tmp_path):
  syntax = tmp_path / 'syntax.py'
  syntax.write_text('from configs import default\n\n\ndef get_config():\n'
                    '  c = default.get_config(\n  return c\n')
  raises = tmp_path / 'raises.py'
  raises.write_text('from configs import default\n\n\ndef get_config():\n'
                    '  c = default.get_config()\n  c.name = undefined_name\n'
                    '  return c\n')
  return syntax, raises


def test_config_file_that_fails_to_load_is_one_line_with_file_and_line(
    tmp_path, capsys):
  syntax, raises = _broken_configs(tmp_path)
  # aad.main (and aad.sweep: the same flag parsing), in a subprocess.
  done = subprocess.run(
      [sys.executable, '-m', 'aad.main', f'--config={syntax}',
       f'--workdir={tmp_path / "w"}'], capture_output=True, text=True,
      timeout=120, check=False)
  assert done.returncode == 2, done.stderr
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1, done.stderr
  assert f'{syntax} line 5' in lines[0] and 'SyntaxError' in lines[0]
  assert 'was never closed' in lines[0]
  assert not (tmp_path / 'w').exists()
  # aad.benchmark --config, in-process: a NameError in get_config.
  with pytest.raises(SystemExit) as exit_info:
    benchmark.main([f'--config={raises}'])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert f'{raises} line 6' in err[0]
  assert "NameError: name 'undefined_name' is not defined" in err[0]
  # The formatter names the config file's own line for a syntax error.
  try:
    compile(syntax.read_text(), str(syntax), 'exec')
  except SyntaxError as e:
    assert f'{syntax} line 5: SyntaxError' in logs.config_load_error(
        e, str(syntax))


@pytest.mark.parametrize('fields, key', [
    ({'train__batch_size': 100000}, 'config.train.batch_size=100000'),
    ({'dataset__image_size': 8192}, 'config.dataset.image_size=8192'),
    ({'eval__batch_size': 50000}, 'config.eval.batch_size=50000'),
])
def test_sizes_that_cannot_fit_are_refused_naming_the_key(fields, key):
  with pytest.raises(errors.UserError) as e:
    validate.check_config(_config(**fields))
  message = str(e.value)
  assert message.startswith(key), message
  assert 'memory' in message and 'this machine has' in message
  assert f'lower {key.split("=")[0]}' in message
  assert '\n' not in message


@pytest.mark.parametrize('fields, key', [
    ({'train__num_steps': 10**20}, 'config.train.num_steps'),
    ({'train__num_steps': 10**9}, 'config.train.num_steps'),
    ({'eval__mc_samples': 10**6}, 'config.eval.mc_samples'),
    ({'dataset__image_size': 2**20}, 'config.dataset.image_size'),
])
def test_implausible_counts_are_refused_at_their_bound(fields, key):
  with pytest.raises(errors.UserError) as e:
    validate.check_config(_config(**fields))
  assert str(e.value).startswith(key) and 'must be at most' in str(e.value)


def test_memory_estimate_scales_with_batch_and_size():
  base = limits.needed(_config())
  assert 0 < base['train'] < limits.needed(
      _config(train__batch_size=64))['train']
  fixed = limits.estimate(_config())['train_fixed']
  assert limits.needed(_config(dataset__image_size=256))['train'] > 4 * (
      base['train'] - fixed)


def _bad_folder(tmp_path, good):
  """A folder of good images (copied from `good`) and three bad files."""
  import shutil  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'inputs'
  folder.mkdir()
  for src in good:
    shutil.copy(src, folder / os.path.basename(src))
  (folder / 'notes.txt').write_text('not an image')
  (folder / 'empty.png').write_bytes(b'')
  (folder / 'truncated.png').write_bytes(
      pathlib.Path(good[0]).read_bytes()[:60])
  return folder


def test_predict_lists_every_bad_input_and_skip_bad_scores_the_rest(
    run, tmp_path):
  workdir, category = run
  good = sorted(glob.glob(os.path.join(category, 'test', 'good', '*.png')))[:2]
  folder = _bad_folder(tmp_path, good)
  out = tmp_path / 'out'
  with pytest.raises(imageio.DataError) as e:
    predict.predict(workdir, [str(folder)], str(out))
  message = str(e.value)
  assert message.startswith('3 input file(s) cannot be scored'), message
  for name in ('notes.txt', 'empty.png', 'truncated.png'):
    assert name in message
  assert '\n' not in message and not out.exists()
  rows = predict.predict(workdir, [str(folder)], str(out), skip_bad=True)
  assert len(rows) == len(good) + 3
  with open(out / 'scores.csv') as f:
    table = {os.path.basename(r['file']): r for r in csv.DictReader(f)}
  assert set(table) == {os.path.basename(g) for g in good} | {
      'notes.txt', 'empty.png', 'truncated.png'}
  for name in ('notes.txt', 'empty.png', 'truncated.png'):
    assert table[name]['decision'].startswith('skipped: ')
    assert not any(v for k, v in table[name].items()
                   if k.startswith(('residual', 'mc_')))
  for g in good:
    assert table[os.path.basename(g)]['decision'] in ('good', 'anomalous')
    stem = os.path.splitext(os.path.basename(g))[0]
    assert (out / f'{stem}_map.png').exists()
