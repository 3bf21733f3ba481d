"""A finished run is never damaged, and every user error is one line.

One tiny run of configs/test.py is trained once for the module; each case
of the matrix works on its own copy and checks the exit status, that the
message names the key or file, that nothing like a traceback is printed,
and that every file of the finished run is byte-identical afterwards.
Most cases run in-process through the command lines' own error path
(`logs.exit_on`), which is what turns an error into one line; a few run
the real command lines. A seeded fault-injection test kills aad.main at
random moments and checks the resumed result and the absence of debris.
"""

import hashlib
import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from aad import data
from aad.runtime import errors
from aad.runtime import logs
from aad.experiment import run as pipeline
from aad import predict
from aad.experiment import testing
from aad.experiment import workdir as workdir_lib
from configs import test as test_config

REPO = pathlib.Path(__file__).resolve().parents[1]
DEBRIS = re.compile(r'(^\..*\.tmp$|orbax-checkpoint-tmp|aad-staging-|'
                    r'aad-write-test|^incomplete\.)')


def _env(cache: pathlib.Path) -> dict:
  # One compilation cache for every run of this module; compiling without
  # most optimisations halves a tiny run's time (identical across runs).
  return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache),
              JAX_DISABLE_MOST_OPTIMIZATIONS='1')


def _main_cmd(workdir, data_dir, *flags):
  return [sys.executable, '-m', 'aad.main', '--config=configs/test.py',
          f'--workdir={workdir}', f'--config.dataset.data_dir={data_dir}',
          '--config.num_devices=1', *flags]


def _config(data_dir, **overrides):
  """The config of the finished run, with dotted-key overrides."""
  config = test_config.get_config()
  config.num_devices = 1
  config.dataset.data_dir = str(data_dir)
  config.update_from_flattened_dict(overrides)
  return config


def snapshot(root: pathlib.Path) -> dict[str, str]:
  """{relative path: sha256} of every file under `root`."""
  out = {}
  for path in sorted(root.rglob('*')):
    if path.is_file() and not path.is_symlink():
      out[str(path.relative_to(root))] = hashlib.sha256(
          path.read_bytes()).hexdigest()
  return out


class Finished:
  """The module's finished run; `copy()` gives a case its own."""

  def __init__(self, root: pathlib.Path, data_dir: str):
    self.root, self.data_dir = root, data_dir
    self.cache = root / 'xla_cache'
    self.workdir = root / 'finished'
    result = subprocess.run(
        _main_cmd(self.workdir, data_dir), cwd=REPO, env=_env(self.cache),
        capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    self.hashes = snapshot(self.workdir)

  def copy(self, tmp_path: pathlib.Path) -> pathlib.Path:
    dest = tmp_path / 'run'
    shutil.copytree(self.workdir, dest, symlinks=True)
    return dest


@pytest.fixture(scope='module')
def finished(tmp_path_factory, textures_dir):
  return Finished(tmp_path_factory.mktemp('reliability'), textures_dir)


@pytest.fixture
def io(capfd, caplog):
  """What a case prints: the terminal, and the log records (in-process,
  absl's log lines go to pytest's log capture)."""
  return capfd, caplog


def expect_exit(io_, fn, *args, status=1, match, **kwargs):
  """Runs `fn` through the command lines' error path; checks the exit
  status, the one-line message and that no traceback is printed."""
  capfd, caplog = io_
  capfd.readouterr()
  caplog.clear()
  with pytest.raises(SystemExit) as exit_info:
    logs.exit_on(fn, *args, **kwargs)
  out, err = capfd.readouterr()
  assert exit_info.value.code == status
  message = str(exit_info.value.__cause__)
  assert re.search(match, message), message
  assert 'Traceback' not in out + err + caplog.text, err[-3000:]
  errors_ = [r for r in caplog.records if r.levelname == 'ERROR']
  assert len(errors_) == 1 and not errors_[0].exc_info
  line = errors_[0].getMessage()
  assert '\n' not in line and re.search(match, line), line
  return message


# --- the finished run is refused by another experiment -----------------------

RERUNS = {
    # issue 14 item 2: a rerun at another size mixed two runs.
    'image_size': ({'dataset.image_size': 64},
                   r'config\.dataset\.image_size 32 -> 64.*new --workdir'),
    # item 1: a mistyped path rewrote config.json before failing.
    'dataset_path': ({'dataset.name': 'folder', 'dataset.path': '/nowhere'},
                     r'config\.dataset\.name .*textures.* -> .*folder'),
    'model_features': ({'model.features': 8},
                       r'config\.model\.features 4 -> 8'),
    # item 2: a resumed run ignored a new learning rate.
    'learning_rate': ({'train.learning_rate': 0.01},
                      r'config\.train\.learning_rate 0\.001 -> 0\.01'),
    'seed': ({'seed': 3}, r'config\.seed 0 -> 3'),
    'num_steps': ({'train.num_steps': 16}, r'config\.train\.num_steps 8 -> 16'),
    'eval_only': ({'eval.mc_samples': 8},
                  r'config\.eval\.mc_samples 4 -> 8.*--allow_eval_changes'),
}

CONFIG_VALUES = {
    'negative_learning_rate': ({'train.learning_rate': -1e-3},
                               r'config\.train\.learning_rate=-0\.001'),
    'huge_learning_rate': ({'train.learning_rate': 1e6},
                           r'config\.train\.learning_rate=1000000\.0.*'
                           r'\(0, 1\]'),
    'nan_learning_rate': ({'train.learning_rate': float('nan')},
                          r'config\.train\.learning_rate=nan'),
    'zero_batch': ({'train.batch_size': 0}, r'config\.train\.batch_size=0'),
    'zero_steps': ({'train.num_steps': 0}, r'config\.train\.num_steps=0'),
    'zero_mc_samples': ({'eval.mc_samples': 0},
                        r'config\.eval\.mc_samples=0'),
    'size_not_divisible': ({'dataset.image_size': 30},
                           r'config\.dataset\.image_size.*30x30.*multiples '
                           r'of 8'),
    'channels': ({'dataset.channels': 2}, r'config\.dataset\.channels=2'),
    'val_fraction': ({'dataset.val_fraction': 1.0},
                     r'config\.dataset\.val_fraction=1\.0'),
    'norm': ({'eval.norm': 'l3'}, r"config\.eval: .*'l3'"),
    'model_name': ({'model.name': 'nope'}, r"config\.model\.name='nope'"),
    'scorer': ({'eval.scorers': ('nope',)}, r'config\.eval\.scorers.*nope'),
    'corruption': ({'corruption.name': 'nope'},
                   r"config\.corruption: unknown corruption 'nope'"),
    'resolution': ({'eval.resolution': 'native'},
                   r"config\.eval\.resolution='native'"),
}


@pytest.mark.parametrize('case', list(RERUNS) + list(CONFIG_VALUES))
def test_rerun_with_another_config_is_refused_and_changes_nothing(
    finished, tmp_path, io, case):
  overrides, match = {**RERUNS, **CONFIG_VALUES}[case]
  run = finished.copy(tmp_path)
  config = _config(finished.data_dir, **overrides)
  expect_exit(io, pipeline.train_and_evaluate, config, str(run),
              match=match)
  assert snapshot(run) == finished.hashes
  if case == 'dataset_path':  # evaluate still works on the workdir
    assert workdir_lib.load_config(str(run)).dataset.name == 'textures'


def test_free_fields_may_change_on_a_rerun(finished):
  saved = json.loads((finished.workdir / 'config.json').read_text())
  config = _config(finished.data_dir, **{
      'dataset.data_dir': '/elsewhere', 'train.log_every': 1,
      'distributed.coordinator_address': 'localhost:1234'})
  workdir_lib.check_rerun(config, str(finished.workdir))  # no error
  # eval.* changes pass when asked for; training changes never do.
  workdir_lib.check_rerun(_config(finished.data_dir, **{
      'eval.mc_samples': 8}), str(finished.workdir), allow_eval_changes=True)
  with pytest.raises(errors.UserError, match='config.seed 0 -> 1'):
    workdir_lib.check_rerun(_config(finished.data_dir, seed=1,
                                    **{'eval.mc_samples': 8}),
                            str(finished.workdir), allow_eval_changes=True)
  assert saved['dataset']['data_dir'] == finished.data_dir
  changed = workdir_lib.changed_fields(saved, _config(
      finished.data_dir, **{'eval.norms': ('l2',)}))
  assert changed == {'eval.norms': (['l1', 'l2', 'linf', 'smooth_max'],
                                    ['l2'])}


# --- workdirs and outputs that cannot be used ---------------------------------


def test_workdir_that_is_a_file_or_cannot_be_created(finished, tmp_path,
                                                     io):
  a_file = tmp_path / 'file'
  a_file.write_text('mine')
  config = _config(finished.data_dir)
  expect_exit(io, pipeline.train_and_evaluate, config, str(a_file),
              match=rf'--workdir={a_file}: is a file, not a folder')
  expect_exit(io, pipeline.train_and_evaluate, config,
              str(a_file / 'run'),
              match=rf'--workdir={a_file}/run: cannot be written')
  assert a_file.read_text() == 'mine'


def _predict_cases(run: pathlib.Path, tmp_path: pathlib.Path):
  images = tmp_path / 'images'
  images.mkdir()
  Image.fromarray(np.full((40, 48), 90, np.uint8)).save(images / '04.jpg')
  Image.fromarray(np.zeros((40, 48), np.uint8)).save(images / '04_map.png')
  (tmp_path / 'a_file').write_text('x')
  taken = tmp_path / 'taken'
  taken.mkdir()
  (taken / '04_overlay.png').write_text('not ours')
  return images, {
      # item 3: the map of 04.jpg replaced an input named 04_map.png.
      'output_is_input': (images, r'lies in the input folder'),
      'output_inside_input': (images / 'out', r'lies in the input folder'),
      'output_is_a_file': (tmp_path / 'a_file',
                           r'a_file: is a file, not a folder'),
      'output_holds_other_files': (
          taken, r'taken/04_overlay.png: exists and was not written by '
          r'aad.predict'),
  }


@pytest.mark.parametrize('case', ['output_is_input', 'output_inside_input',
                                  'output_is_a_file',
                                  'output_holds_other_files',
                                  'missing_input', 'zero_mc_samples',
                                  'evaluate_not_a_run',
                                  'evaluate_output_is_a_file',
                                  'evaluate_edited_config'])
def test_predict_and_evaluate_refuse_before_scoring(finished, tmp_path,
                                                    io, case):
  run = finished.copy(tmp_path)
  images, outputs = _predict_cases(run, tmp_path)
  inputs_before = snapshot(images)
  if case in outputs:
    output, match = outputs[case]
    expect_exit(io, predict.predict, str(run), [str(images / '04.jpg')],
                str(output), match=match)
  elif case == 'missing_input':
    expect_exit(io, predict.predict, str(run), [str(tmp_path / 'nope')],
                str(tmp_path / 'out'), match=r'nope: no such file or folder')
  elif case == 'zero_mc_samples':
    expect_exit(io, predict.predict, str(run), [str(images / '04.jpg')],
                str(tmp_path / 'out'), mc_samples=0,
                match=r'--mc_samples=0: must be at least 1')
  elif case == 'evaluate_not_a_run':
    expect_exit(io, testing.evaluate_workdir, str(images),
                match=r'images/config.json: not found')
  elif case == 'evaluate_output_is_a_file':
    expect_exit(io, testing.evaluate_workdir, str(run),
                output=str(tmp_path / 'a_file'),
                match=r'--output=.*a_file: is a file')
  else:  # config.json edited by hand: no orbax traceback
    config = json.loads((run / 'config.json').read_text())
    config['model']['features'] = 8
    (run / 'config.json').write_text(json.dumps(config))
    expect_exit(io, testing.evaluate_workdir, str(run),
                match=r'checkpoints/ae: the checkpoint of step \d+ does not '
                r'fit the model of .*config.json')
    (run / 'config.json').write_bytes(
        (finished.workdir / 'config.json').read_bytes())
  assert snapshot(images) == inputs_before
  assert snapshot(run) == finished.hashes
  assert not (tmp_path / 'out').exists()


def test_input_flag_takes_a_path_with_commas_whole(tmp_path):
  odd = tmp_path / 'a,b.png'
  odd.write_bytes(b'')
  assert predict.split_inputs([str(odd)]) == [str(odd)]
  assert predict.split_inputs(['x.png,y.png', 'z']) == ['x.png', 'y.png', 'z']


# --- data: what fails names the file, what is supported loads ---------------


def _save(path: pathlib.Path, array, **kwargs):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)


def _category(root: pathlib.Path) -> pathlib.Path:
  rng = np.random.default_rng(0)
  for i in range(5):
    _save(root / f'train/good/{i:03d}.png',
          rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
  _save(root / 'test/good/000.png', rng.integers(0, 256, (40, 48, 3),
                                                 dtype=np.uint8))
  _save(root / 'test/crack/000.png', rng.integers(0, 256, (40, 48, 3),
                                                  dtype=np.uint8))
  mask = np.zeros((40, 48), np.uint8)
  mask[5:9, 5:20] = 255
  _save(root / 'ground_truth/crack/000_mask.png', mask)
  return root


def _break(root: pathlib.Path, case: str):
  good = root / 'train/good'
  if case == 'truncated':
    data_ = (good / '001.png').read_bytes()
    (good / '001.png').write_bytes(data_[:200])
  elif case == 'zero_byte':
    (good / '001.png').write_bytes(b'')
  elif case == 'non_image_file':
    (good / 'notes.txt').write_text('x')
  elif case == 'empty_folder':
    for p in good.iterdir():
      p.unlink()
  elif case == 'missing_mask':
    (root / 'ground_truth/crack/000_mask.png').unlink()
  elif case == 'mask_size_mismatch':
    _save(root / 'ground_truth/crack/000_mask.png',
          np.zeros((20, 20), np.uint8))
  elif case == 'empty_test':  # no test/ at all is a good-only category
    shutil.rmtree(root / 'test')
    os.makedirs(root / 'test' / 'good')
  elif case == 'symlink_loop':
    os.symlink('loop.png', good / 'loop.png')
  elif case == 'tiny_image':  # item 5: a 1x1 image was accepted silently
    _save(good / '001.png', np.zeros((1, 1, 3), np.uint8))
  elif case == 'missing_path':
    shutil.rmtree(root)


DATA_ERRORS = {
    'truncated': r'train/good/001.png: cannot decode',
    'zero_byte': r'train/good/001.png',
    'non_image_file': r'train/good/notes.txt: not an image file',
    'empty_folder': r'train/good: no training images',
    'missing_mask': r'crack/000.png: defective test image without a '
                    r'ground-truth mask.*000_mask.png',
    'mask_size_mismatch': r'000_mask.png: mask of size 20x20',
    'empty_test': r'test: no test images in it',
    'symlink_loop': r'train/good/loop.png: a symbolic link to nothing',
    'tiny_image': r'train/good/001.png: the image is 1x1 px',
    'missing_path': r'cat.*(no such folder|does not exist)',
}


@pytest.mark.parametrize('case', list(DATA_ERRORS))
def test_bad_data_is_named_and_nothing_is_written(tmp_path, io, case):
  root = _category(tmp_path / 'cat')
  _break(root, case)
  workdir = tmp_path / 'run'
  config = _config(tmp_path / 'tfds', **{
      'dataset.name': 'folder', 'dataset.path': str(root),
      'dataset.channels': 3, 'dataset.categories': ()})
  expect_exit(io, pipeline.train_and_evaluate, config, str(workdir),
              match=DATA_ERRORS[case])
  # Refused before config.json, checkpoints or reports were written.
  assert not workdir.exists() or not any(workdir.iterdir())


@pytest.mark.parametrize('case', ['cmyk', 'sixteen_bit', 'rgba',
                                  'non_ascii_name'])
def test_supported_files_load(tmp_path, io, case):
  root = _category(tmp_path / 'cat')
  good = root / 'train/good'
  rng = np.random.default_rng(1)
  if case == 'cmyk':
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                    ).convert('CMYK').save(good / '001.jpg')
    (good / '001.png').unlink()
  elif case == 'sixteen_bit':
    Image.fromarray(rng.integers(0, 65536, (40, 48), dtype=np.uint16)
                    ).save(good / '001.png')
  elif case == 'rgba':
    _save(good / '001.png', rng.integers(0, 256, (40, 48, 4),
                                         dtype=np.uint8))
  else:
    shutil.move(good / '001.png', good / 'größe_ÆØ_001.png')
  config = _config(tmp_path / 'tfds', **{
      'dataset.name': 'folder', 'dataset.path': str(root),
      'dataset.channels': 3, 'dataset.categories': ()})
  capfd, caplog = io
  dataset = logs.exit_on(data.from_config, config.dataset, 'cat')
  assert 'Traceback' not in capfd.readouterr().err + caplog.text
  assert not [r for r in caplog.records if r.levelname == 'ERROR']
  images = np.concatenate([dataset.train.images, dataset.val.images])
  assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8


# --- the real command lines ----------------------------------------------------


@pytest.mark.parametrize('flags, status, match', [
    (['--config.train.num_step=3'], 2,
     r'--config\.train\.num_step: no such config field.*num_steps'),
    (['--config=configs/nope.py'], 2, r'--config=configs/nope.py: cannot '
     r'load it'),
    (['--bogus=1'], 2, r"Unknown command line flag 'bogus'"),
    (['--config.dataset.image_size=64'], 1,
     r'config\.dataset\.image_size 32 -> 64'),
])
def test_command_line_errors_are_one_line(finished, tmp_path, flags, status,
                                          match):
  run = finished.copy(tmp_path)
  result = subprocess.run(
      _main_cmd(run, finished.data_dir, *flags), cwd=REPO,
      env=_env(finished.cache), capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == status, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors_ = [l for l in result.stderr.splitlines()
             if re.search(match, l)]
  assert len(errors_) == 1, result.stderr[-3000:]
  assert snapshot(run) == finished.hashes


def _tmpfs(path: pathlib.Path, size: str):
  path.mkdir()
  if os.geteuid() != 0 or subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
      capture_output=True, check=False).returncode:
    pytest.skip('needs root to mount a small tmpfs (a full disk)')


def _main_fails_in_one_line(run: pathlib.Path, finished):
  """aad.main on `run` with the finished run's data: status 1, no
  traceback; returns the completed process."""
  result = subprocess.run(
      _main_cmd(run, finished.data_dir), cwd=REPO,
      env=_env(finished.cache), capture_output=True, text=True,
      timeout=300, check=False)
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  return result


def test_full_disk_is_one_line_and_keeps_the_finished_run(finished, tmp_path):
  disk = tmp_path / 'disk'
  size = sum(os.path.getsize(p) for p in finished.workdir.rglob('*')
             if p.is_file())
  # Room for the run and a few of the rewritten reports' temporary files,
  # not for all: the rerun (a re-evaluation) fills it up.
  _tmpfs(disk, f'{size // 1024 + 300}k')
  try:
    run = disk / 'run'
    shutil.copytree(finished.workdir, run)
    filler = disk / 'filler'
    free = errors.free_bytes(str(disk))
    filler.write_bytes(b'\0' * max(0, free - 60 * 1024))
    result = _main_fails_in_one_line(run, finished)
    lines = [l for l in result.stderr.splitlines()
             if 'no space left on the device' in l]
    assert len(lines) == 1 and str(run) in lines[0], result.stderr[-3000:]
    assert re.search(r'\(\d+ KB free', lines[0])
    assert snapshot(run) == finished.hashes
    assert not [p for p in run.rglob('*') if DEBRIS.search(p.name)]
  finally:
    subprocess.run(['umount', str(disk)], check=False)


def test_full_disk_during_a_checkpoint_save_is_one_line(finished, tmp_path):
  disk = tmp_path / 'disk'
  # Room for the first checkpoint of configs/test.py, not for the second.
  _tmpfs(disk, '200k')
  try:
    run = disk / 'run'
    result = _main_fails_in_one_line(run, finished)
    lines = [l for l in result.stderr.splitlines() if ' E' in l[:30] or
             l.startswith('E')]
    assert len(lines) == 1, result.stderr[-3000:]
    assert re.search(rf'{run}/brick/checkpoints/ae: no space left on the '
                     r'device \(\d+ KB free; this write needs about \d+ KB\)',
                     lines[0]), lines[0]
    assert sorted(p.name for p in (run / 'brick/checkpoints/ae').iterdir()
                  ) == ['4']  # the first checkpoint, complete
  finally:
    subprocess.run(['umount', str(disk)], check=False)


# --- killed runs: the same result, no debris -----------------------------------


# Log lines that mark a moment of a run, and where a kill right after one
# lands: start-up, training, a checkpoint save (it follows the validation
# line), scoring, report writing (after a category's report, the summary's).
MOMENTS = {'start-up': 'Workdir ', 'training': 'step 4/8',
           'checkpoint save': 'val psnr', 'scoring': 'scoring ',
           'report writing': 'image AUROC'}


def test_killed_at_random_moments_resumes_to_the_same_result(
    finished, tmp_path):
  """At least 5 SIGKILLs at seeded random moments (a random moment of the
  run, then a random delay of up to 0.3 s), then a run to the end."""
  rng = random.Random(14)
  workdir = tmp_path / 'killed'
  cmd = _main_cmd(workdir, finished.data_dir)
  env = _env(finished.cache)
  kills = attempts = 0
  while kills < 5 and attempts < 12:
    attempts += 1
    moment = rng.choice(sorted(MOMENTS))
    delay = rng.uniform(0, 0.3)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # ends when the run does
      if MOMENTS[moment] in line:
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        break
    proc.stderr.close()
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    kills += killed
    ckpts = workdir / 'brick' / 'checkpoints' / 'ae'
    print(f'attempt {attempts}: {moment} + {delay:.2f} s: '
          f'{"killed" if killed else "ended first"}; checkpoints/ae holds '
          f'{sorted(p.name for p in ckpts.glob("*"))}')
  assert kills >= 5
  result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  # A second run of configs/test.py with the same seed, killed and resumed,
  # writes the same bytes as the uninterrupted one (timings live apart).
  for name in ('metrics.json', 'report.md', 'brick/metrics.json',
               'brick/report.md', 'brick/thresholds.json', 'config.json'):
    assert (workdir / name).read_bytes() == (
        finished.workdir / name).read_bytes(), name
  timings = json.loads((workdir / 'timings.json').read_text())
  assert timings['mean/train/train_seconds'] > 0
  assert 'seconds' not in (workdir / 'metrics.json').read_text()
  left = [str(p) for p in workdir.rglob('*') if DEBRIS.search(p.name)]
  left += [str(p) for p in pathlib.Path(finished.data_dir).rglob('*')
           if DEBRIS.search(p.name)]
  assert not left


def test_debris_removed_by_another_process_meanwhile_is_no_error(
    tmp_path, monkeypatch):
  # Multi-host start-up: process 0 lists the workdir while process 1's
  # write probe (errors.writable_dir) is there, and process 1 removes it
  # before process 0 does. Seen in CI as process 0 failing with
  # "<workdir>/.aad-write-test-<pid>: no such file or folder."
  gone = tmp_path / '.aad-write-test-4242'
  stale = tmp_path / '.metrics.json.ab12.tmp'
  gone.write_text('ok')
  stale.write_text('half')
  real_remove = os.remove

  def remove_after_the_other_process(path, *args, **kwargs):
    if os.path.basename(path) == gone.name:
      real_remove(path)  # the other process's own removal won the race
    return real_remove(path, *args, **kwargs)

  monkeypatch.setattr(os, 'remove', remove_after_the_other_process)
  assert workdir_lib.clean_debris(str(tmp_path)) == [str(stale)]
  assert not gone.exists() and not stale.exists()


def test_start_up_removes_the_debris_of_killed_runs(finished, tmp_path):
  run = finished.copy(tmp_path)
  planted = [run / '.metrics.json.x1y2.tmp', run / 'brick' /
             '.thresholds.json.abc.tmp', run / 'brick' / 'checkpoints' /
             'ae' / '12.orbax-checkpoint-tmp-99']
  for path in planted[:2]:
    path.write_text('half')
  planted[2].mkdir()
  removed = workdir_lib.clean_debris(str(run))
  assert sorted(removed) == sorted(map(str, planted))
  assert snapshot(run) == finished.hashes
  # A killed tfds preparation's folder goes with the next preparation.
  cache = tmp_path / 'tfds'
  version = cache / 'aad_textures' / 'brick'
  (version / 'incomplete.ABC123_2.2.0').mkdir(parents=True)
  data.load('textures', 'brick', image_size=32, channels=1,
            data_dir=str(cache))
  assert sorted(p.name for p in version.iterdir()) == ['.aad-prepare.lock',
                                                       '2.2.0']


# --- unfinished runs ------------------------------------------------------------


def _unfinished(finished, tmp_path: pathlib.Path) -> pathlib.Path:
  """A copy of the finished run as a run killed before its end leaves it:
  config.json asks for 16 steps, the last checkpoint is of step 8 (a
  killed run's config.json holds its full step count from the start)."""
  run = finished.copy(tmp_path)
  config = json.loads((run / 'config.json').read_text())
  config['train']['num_steps'] = 16
  (run / 'config.json').write_text(json.dumps(config))
  return run


UNFINISHED = (r"category 'brick' is unfinished: stage 'ae' reached step 8 of "
              r'16 \(last checkpoint in .*brick/checkpoints/ae\)\. Resume it '
              r'.*python -m aad\.main --config=.* --workdir=.*run.*'
              r'config\.json')


def test_unfinished_run_is_refused_by_evaluate_predict_and_export(
    finished, tmp_path, io):
  # Issue "Reliability, second pass" 1: evaluate wrote the metrics of a
  # half-trained model with 'train/steps 40'; predict sent the user to
  # evaluate.
  from aad.deploy import archive  # pylint: disable=g-import-not-at-top
  run = _unfinished(finished, tmp_path)
  before = snapshot(run)
  message = expect_exit(io, testing.evaluate_workdir, str(run),
                        match=UNFINISHED + r'.*--allow_unfinished')
  images = tmp_path / 'images'
  images.mkdir()
  Image.fromarray(np.full((40, 48), 90, np.uint8)).save(images / 'a.png')
  message += expect_exit(io, predict.predict, str(run), [str(images)],
                         str(tmp_path / 'out'), match=UNFINISHED)
  message += expect_exit(io, archive.export_detector, str(run),
                         str(tmp_path / 'brick.aad'), match=UNFINISHED)
  assert 'aad.evaluate' not in message
  assert snapshot(run) == before
  assert not (tmp_path / 'out').exists()
  assert not (tmp_path / 'brick.aad').exists()
  # Asked for explicitly, and labelled so.
  out = tmp_path / 'eval'
  testing.evaluate_workdir(str(run), output=str(out), allow_unfinished=True)
  for folder, prefix in ((out, 'mean/'), (out / 'brick', '')):
    metrics = json.loads((folder / 'metrics.json').read_text())
    assert metrics[f'{prefix}train/unfinished'] == 1, folder
    assert metrics[f'{prefix}train/steps'] == 8, folder
    assert re.search(r"UNFINISHED TRAINING.*'brick'.*reached step 8 of 16",
                     (folder / 'report.md').read_text()), folder
  assert 'unfinished' not in (finished.workdir / 'metrics.json').read_text()
  assert snapshot(run) == before


# --- one writer per workdir; refused runs leave nothing ------------------------


def test_two_runs_into_one_workdir_one_trains_the_other_is_refused(
    finished, tmp_path):
  # Issue "Reliability, second pass" 2: both trained (once one died with
  # two orbax tracebacks).
  workdir = tmp_path / 'shared'
  cmd = _main_cmd(workdir, finished.data_dir)
  procs = [subprocess.Popen(cmd, cwd=REPO, env=_env(finished.cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True) for _ in range(2)]
  stderr = [p.communicate(timeout=600)[1] for p in procs]
  status = [p.returncode for p in procs]
  assert sorted(status) == [0, 1], [s[-2000:] for s in stderr]
  winner, loser = (0, 1) if status[0] == 0 else (1, 0)
  refused = [l for l in stderr[loser].splitlines() if 'in use by' in l]
  assert len(refused) == 1, stderr[loser][-3000:]
  assert re.search(
      rf'--workdir={workdir} is in use by another run of aad\.main \(PID '
      rf'{procs[winner].pid} on host {re.escape(socket.gethostname())}',
      refused[0]), refused[0]
  assert 'Traceback' not in stderr[loser] + stderr[winner]
  assert 'step 8/8' not in stderr[loser] and 'step 8/8' in stderr[winner]
  assert (workdir / 'metrics.json').is_file()
  assert not (workdir / '.lock').exists()


def _hold_lock(workdir: pathlib.Path) -> subprocess.Popen:
  """A process that holds `workdir`'s lock until it is killed."""
  proc = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\n'
       'from aad.runtime import lock\n'
       'with lock.workdir_lock(sys.argv[1]):\n'
       '  print("held", flush=True)\n'
       '  time.sleep(120)\n', str(workdir)],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline() == 'held\n'
  return proc


def test_a_lock_left_by_a_dead_process_is_taken_over(finished, tmp_path, io):
  # pylint: disable=g-import-not-at-top
  from aad.runtime import lock
  workdir = tmp_path / 'run'
  workdir.mkdir()

  def take():
    with workdir_lib.writer(str(workdir)):
      pass

  holder = _hold_lock(workdir)
  expect_exit(io, take, match=rf'--workdir={workdir} is in use by another '
              rf'run of aad\.main \(PID {holder.pid} on host '
              rf'{re.escape(socket.gethostname())}, running since .*\.lock')
  holder.kill()  # as kill -9: the file stays, naming a dead process
  holder.wait()
  stale = json.loads((workdir / lock.LOCK_FILE).read_text())
  assert stale['pid'] == holder.pid
  with workdir_lib.writer(str(workdir)):
    held = json.loads((workdir / lock.LOCK_FILE).read_text())
    assert held['pid'] == os.getpid()
  assert not (workdir / lock.LOCK_FILE).exists()
  # A run refused by the lock leaves the holder's workdir alone.
  holder = _hold_lock(workdir)
  try:
    expect_exit(io, pipeline.train_and_evaluate, _config(finished.data_dir),
                str(workdir), match=rf'PID {holder.pid} on host')
    assert sorted(p.name for p in workdir.iterdir()) == [lock.LOCK_FILE]
  finally:
    holder.kill()
    holder.wait()


@pytest.mark.parametrize('case', ['path_is_a_file', 'missing_path'])
def test_refused_new_run_leaves_no_folder(tmp_path, io, case):
  # Issue "Reliability, second pass" 6: a refused run left an empty
  # workdir, and a dataset path that is a file was "no such folder".
  path = tmp_path / 'cat'
  if case == 'path_is_a_file':
    path.write_text('not a folder')
  workdir = tmp_path / 'new' / 'run'
  config = _config(tmp_path / 'tfds', **{
      'dataset.name': 'folder', 'dataset.path': str(path),
      'dataset.channels': 3, 'dataset.categories': ()})
  match = {'path_is_a_file': rf'{path}: is a file, not a folder\. Set '
                             r'config\.dataset\.path',
           'missing_path': rf'{path}: no such folder'}[case]
  expect_exit(io, pipeline.train_and_evaluate, config, str(workdir),
              match=match)
  assert not (tmp_path / 'new').exists()


def test_a_field_added_since_the_run_counts_only_off_its_default(tmp_path):
  # A run saved before corruption.perlin.p_smooth existed: resuming with
  # the field at its default (the old behaviour) passes, at another value
  # is refused.
  from aad.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  saved = json.loads(json.dumps(config.to_dict(), default=list))
  del saved['corruption']['perlin']['p_smooth']
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  workdir_lib.check_rerun(config, str(tmp_path))  # no error
  config.corruption.perlin.p_smooth = 0.2
  with pytest.raises(errors.UserError,
                     match=r"perlin\.p_smooth '<absent>' -> 0\.2"):
    workdir_lib.check_rerun(config, str(tmp_path))
  # aad.evaluate and aad.predict read such a run with the field at its
  # default; what was saved stays as saved.
  saved['model']['draem'].pop('p_line')
  saved['eval'].pop('tile_margin')
  saved['train']['num_steps'] = 7
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  loaded = workdir_lib.load_config(str(tmp_path))
  assert loaded.model.draem.p_line == 0.0
  assert loaded.eval.tile_margin == 0.0
  assert loaded.train.num_steps == 7
  assert 'p_smooth' in loaded.corruption.perlin
