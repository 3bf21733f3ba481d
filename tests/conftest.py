"""Test set-up: fake CPU devices for multi-device code, quiet TensorFlow."""

import os
import pathlib

# Must happen before JAX initialises its backend.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import pytest  # pylint: disable=g-import-not-at-top

from aad import host_devices  # pylint: disable=g-import-not-at-top

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
