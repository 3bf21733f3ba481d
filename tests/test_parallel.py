"""Data parallelism: N devices reproduce one device's training step."""

import jax
import numpy as np
import optax
import pytest

from aad import models
from aad.runtime import parallel
from aad.training import loop
from aad.training import step as step_lib
from configs import test as test_config


def _run(config, data, devices, steps):
  family = models.create(config, axis_name=parallel.AXIS)
  stage = family.stages[0]
  # Plain SGD: Adam divides by the gradient's magnitude, which turns the
  # round-off-sized gradients of the conv biases that precede BatchNorm
  # (their true gradient is 0) into full-size, order-dependent updates.
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.5)
  variables = step_lib.init_variables(family, config, data.shape[1:])
  state = step_lib.create_train_state(stage, variables, config, tx)
  chunk = parallel.replicated_call(
      step_lib.make_train_chunk(
          stage, batch_size=config.train.batch_size,
          num_devices=len(devices), num_steps=steps), devices)
  state, metrics = chunk(parallel.replicate(state, devices),
                         parallel.replicate(data, devices), {},
                         jax.random.key(7))
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.skipif(jax.local_device_count() < 4,
                    reason='needs 4 (fake) devices: XLA_FLAGS is set in '
                    'tests/conftest.py before JAX starts')
def test_four_devices_match_one_device():
  config = test_config.get_config()
  config.train.batch_size = 8
  data = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 1),
                                           dtype=np.uint8)
  devices = jax.local_devices()
  state1, m1 = _run(config, data, devices[:1], steps=3)
  state4, m4 = _run(config, data, devices[:4], steps=3)
  np.testing.assert_allclose(m4['loss'], m1['loss'], rtol=1e-5)
  assert m1['loss'].shape == (3,) and np.all(np.diff(m1['loss']) != 0)
  for a, b in zip(jax.tree.leaves((state1.params, state1.batch_stats)),
                  jax.tree.leaves((state4.params, state4.batch_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert int(state1.step) == int(state4.step) == 3


def test_batch_size_must_split_over_devices():
  stage = models.create(test_config.get_config()).stages[0]
  with pytest.raises(ValueError, match='batch_size=6 is not divisible'):
    step_lib.make_train_chunk(stage, batch_size=6, num_devices=4, num_steps=1)


def test_host_slice_gives_each_process_an_equal_share(monkeypatch):
  monkeypatch.setattr(jax, 'process_count', lambda: 3)
  shares = []
  for index in range(3):
    monkeypatch.setattr(jax, 'process_index', lambda i=index: i)
    shares.append(parallel.host_slice(10))
  assert shares == [slice(0, 3), slice(3, 6), slice(6, 9)]
  with pytest.raises(ValueError, match='2 items cannot be shared by 3'):
    parallel.host_slice(2)


def test_train_data_is_sharded_over_hosts_only_when_asked_or_too_large(
    monkeypatch):
  images = np.arange(8 * 4 * 4 * 1, dtype=np.uint8).reshape(8, 4, 4, 1)
  config = test_config.get_config().distributed
  assert loop.host_train_images(images, config) is images  # 'auto', small
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  config.max_replicated_mb = 0  # the 128 bytes no longer fit
  np.testing.assert_array_equal(loop.host_train_images(images, config),
                                images[4:])
  config.train_data = 'all'
  assert loop.host_train_images(images, config) is images
  config.train_data = 'shard'
  np.testing.assert_array_equal(loop.host_train_images(images, config),
                                images[4:])
  config.train_data = 'some'
  with pytest.raises(ValueError, match="train_data='some'"):
    loop.host_train_images(images, config)
