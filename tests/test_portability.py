"""Checkpoints move between device counts: train on 4, resume on 1."""

import logging

import jax
import pytest

from aad import checkpoint
from aad import data
from aad import evaluate
from aad import models
from aad import train
from configs import test as test_config


@pytest.mark.skipif(jax.local_device_count() < 4,
                    reason='needs 4 (fake) devices: XLA_FLAGS is set in '
                    'tests/conftest.py before JAX starts')
def test_train_on_four_devices_then_resume_and_evaluate_on_one(
    tmp_path, textures_dir, caplog):
  config = test_config.get_config()
  config.dataset.data_dir = textures_dir
  dataset = data.load('textures', 'brick', image_size=32, channels=1,
                      data_dir=textures_dir)
  devices = jax.local_devices()
  workdir = str(tmp_path / 'brick')
  train.train_category(config, workdir, dataset, devices[:4])
  ckpts = checkpoint.Checkpoints(f'{workdir}/checkpoints')
  target = train.create_train_state(models.create(config.model), config,
                                    (32, 32, 1))
  saved, _ = ckpts.restore(ckpts.latest_step(), target)
  ckpts.close()
  assert int(saved.step) == 8

  config.train.num_steps = 12
  with caplog.at_level(logging.INFO):
    best, summary = train.train_category(config, workdir, dataset,
                                         devices[:1])
  assert 'Resuming brick from step 8' in caplog.text
  assert summary['steps'] == 12 and summary['best_step'] in (4, 8, 12)
  ckpts = checkpoint.Checkpoints(f'{workdir}/checkpoints')
  assert ckpts.latest_step() == 12
  resumed, _ = ckpts.restore(12, target)
  ckpts.close()
  assert int(resumed.step) == 12

  metrics = evaluate.evaluate_category(config, best, dataset,
                                       str(tmp_path / 'eval'), devices[:1])
  assert 0.0 <= metrics['residual/l2/image_auroc'] <= 1.0
