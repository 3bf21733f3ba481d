"""Checkpoints move between device counts: 4 -> 1 and 1 -> 4 devices."""

import logging

import jax
import numpy as np
import pytest

from aad.runtime import checkpoint
from aad import data
from aad.experiment import testing
from aad import models
from aad.training import loop
from aad.training import step as step_lib
from configs import test as test_config


def _target(config):
  """A train state of the test model's only stage, to restore into."""
  family = models.create(config)
  variables = step_lib.init_variables(family, config, (32, 32, 1))
  return step_lib.create_train_state(family.stages[0], variables, config)


@pytest.mark.skipif(jax.local_device_count() < 4,
                    reason='needs 4 (fake) devices: XLA_FLAGS is set in '
                    'tests/conftest.py before JAX starts')
def test_train_on_four_devices_then_resume_and_evaluate_on_one(
    tmp_path, textures_dir, caplog):
  config = test_config.get_config()
  config.dataset.data_dir = textures_dir
  # One scoring call shape (test + val = 112 images = 4 x 28), one compile.
  config.eval.batch_size = 28
  config.eval.mc_samples = 2
  dataset = data.load('textures', 'brick', image_size=32, channels=1,
                      data_dir=textures_dir)
  devices = jax.local_devices()
  workdir = str(tmp_path / 'brick')
  loop.train_category(config, workdir, dataset, devices[:4])
  ckpts = checkpoint.Checkpoints(f'{workdir}/checkpoints/ae')
  target = _target(config)
  saved, _ = ckpts.restore(ckpts.latest_step(), target)
  ckpts.close()
  assert int(saved.step) == 8

  config.train.num_steps = 12
  with caplog.at_level(logging.INFO):
    best, summary = loop.train_category(config, workdir, dataset,
                                         devices[:1])
  assert 'Resuming brick from step 8' in caplog.text
  assert summary['steps'] == 12 and summary['best_step'] in (4, 8, 12)
  ckpts = checkpoint.Checkpoints(f'{workdir}/checkpoints/ae')
  assert ckpts.latest_step() == 12
  resumed, _ = ckpts.restore(12, target)
  ckpts.close()
  assert int(resumed.step) == 12

  metrics = testing.evaluate_category(config, models.create(config), best,
                                       dataset, str(tmp_path / 'eval'),
                                       devices[:1])
  assert 0.0 <= metrics['residual/l2/image_auroc'] <= 1.0


@pytest.mark.skipif(jax.local_device_count() < 4,
                    reason='needs 4 (fake) devices: XLA_FLAGS is set in '
                    'tests/conftest.py before JAX starts')
def test_train_on_one_device_then_resume_on_four(tmp_path, textures_dir,
                                                 caplog):
  config = test_config.get_config()
  config.train.num_steps = 4
  dataset = data.load('textures', 'brick', image_size=32, channels=1,
                      data_dir=textures_dir)
  devices = jax.local_devices()
  workdir = str(tmp_path / 'brick')
  loop.train_category(config, workdir, dataset, devices[:1])
  ckpts = checkpoint.Checkpoints(f'{workdir}/checkpoints/ae')
  first, _ = ckpts.restore(4, _target(config))
  ckpts.close()
  config.train.num_steps = 8
  with caplog.at_level(logging.INFO):
    resumed, summary = loop.train_category(config, workdir, dataset,
                                            devices[:4])
  assert 'Resuming brick from step 4' in caplog.text
  assert 'brick step 8/8' in caplog.text and 'step 4/8' not in caplog.text
  assert summary['steps'] == 8 and summary['best_step'] in (4, 8)
  ckpts = checkpoint.Checkpoints(f'{workdir}/checkpoints/ae')
  saved, _ = ckpts.restore(8, _target(config))
  ckpts.close()
  assert int(saved.step) == 8
  # The 4 devices trained on from the 1-device weights of step 4.
  assert int(first.step) == 4
  moved = [not np.allclose(a, b) for a, b in zip(
      jax.tree.leaves(first.params), jax.tree.leaves(saved.params))]
  assert any(moved)
