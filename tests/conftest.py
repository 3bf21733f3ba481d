"""Test set-up: fake CPU devices, quiet TensorFlow, shared tiny runs."""

import atexit
import functools
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

# Must happen before JAX initialises its backend.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
# At the tests' tiny shapes XLA's compile time dominates, so the tests
# (and the subprocesses, which inherit it) compile without most
# optimisations. Results are the same computations, so every comparison in
# the tests holds; the command lines and aad.benchmark still compile with
# every optimisation.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
# One persistent compilation cache per test process, shared with every
# subprocess it starts: the runs of aad.main, aad.evaluate, the launchers
# and the sweeps compile the same tiny programs again and again (aad.main
# keeps a cache in its workdir only when none is set). Every entry is kept, however
# quickly it compiled. The first pytest process (pytest-xdist's controller,
# or the only one with -n 0) makes the folder and removes it at exit; each
# xdist worker keeps its own subfolder, since JAX writes entries without a
# lock and one worker's process could read another's half-written entry. A
# JAX_COMPILATION_CACHE_DIR set by the caller is left alone.
if ('JAX_COMPILATION_CACHE_DIR' not in os.environ
    and 'AAD_TESTS_XLA_CACHE' not in os.environ):
  os.environ['AAD_TESTS_XLA_CACHE'] = tempfile.mkdtemp(
      prefix='aad-tests-xla-cache-')
  atexit.register(shutil.rmtree, os.environ['AAD_TESTS_XLA_CACHE'],
                  ignore_errors=True)
if 'AAD_TESTS_XLA_CACHE' in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = os.path.join(
      os.environ['AAD_TESTS_XLA_CACHE'],
      os.environ.get('PYTEST_XDIST_WORKER', 'main'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import pytest  # pylint: disable=g-import-not-at-top

from aad.runtime import cpu as host_devices  # pylint: disable=g-import-not-at-top

host_devices.configure_convolutions()  # as the command lines do

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'


def pytest_configure(config):
  del config
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope='session')
def shared_data():
  path = SHARED / 'data'
  if not path.is_dir():
    pytest.skip(f'{path} is absent (a fresh checkout without ../shared)')
  return path


@pytest.fixture(scope='session')
def textures_dir(tmp_path_factory):
  """A tfds cache with the embedded 'brick' category prepared once."""
  from aad import data  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp('tfds'))
  data.load('textures', 'brick', image_size=32, channels=1, data_dir=path)
  return path


class TinyLaunch:
  """A tiny training run that multi-process launches are compared against.

  A few logged steps, then one evaluation with a single scoring call (28
  images per device x 4 devices = the 80 test + 32 val images). The
  reference, 1 process x 4 devices, runs once per session and serves every
  launcher's test (launch/local.sh, launch/slurm.sbatch).
  """

  FLAGS = ('--config=configs/test.py', '--config.train.num_steps=3',
           '--config.train.steps_per_call=1', '--config.train.log_every=1',
           '--config.train.eval_every=3', '--config.eval.mc_samples=2',
           '--config.eval.batch_size=28')

  def __init__(self, textures_dir: str, root: pathlib.Path):
    self._data = f'--config.dataset.data_dir={textures_dir}'
    self._root = root

  def flags(self, workdir) -> list[str]:
    return [*self.FLAGS, self._data, f'--workdir={workdir}']

  @staticmethod
  def env(devices_per_process: int) -> dict[str, str]:
    # Compiling without most optimisations halves these runs' time.
    env = dict(os.environ, PYTHON=sys.executable,
               JAX_DISABLE_MOST_OPTIMIZATIONS='1',
               XLA_FLAGS=('--xla_force_host_platform_device_count='
                          f'{devices_per_process}'))
    env.pop('JAX_COORDINATOR_ADDRESS', None)
    return env

  @staticmethod
  def losses(workdir):
    """The per-step train_loss that process 0 wrote to TensorBoard."""
    # pylint: disable=g-import-not-at-top
    import numpy as np
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util
    acc = event_accumulator.EventAccumulator(
        str(pathlib.Path(workdir) / 'brick' / 'tensorboard' / 'ae'))
    acc.Reload()
    return np.array([float(tensor_util.make_ndarray(e.tensor_proto))
                     for e in acc.Tensors('train_loss')])

  @functools.cached_property
  def reference(self) -> tuple[pathlib.Path, str]:
    """(workdir, log) of the run on 1 process x 4 devices."""
    workdir = self._root / '1x4'
    single = subprocess.run(
        [sys.executable, '-m', 'aad.main', *self.flags(workdir)], cwd=REPO,
        env=self.env(4), capture_output=True, text=True, timeout=600,
        check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    assert '4 device(s) cpu in 1 process(es)' in single.stderr
    return workdir, single.stderr


@pytest.fixture(scope='session')
def tiny_launch(tmp_path_factory, textures_dir):
  return TinyLaunch(textures_dir, tmp_path_factory.mktemp('tiny_launch'))
