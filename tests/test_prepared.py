"""Prepared variables (`Family.prepare`, aad/models/layers.py `prepare`):
the fast convolutions' kernels built once per checkpoint give the outputs
of the plain variables, and inference then rebuilds none of them."""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aad import models
from aad.deploy import archive
from aad.deploy import detector as detector_lib
from aad.deploy import function
from aad.experiment import testing
from aad.models import aesc
from aad.models import layers
from aad.runtime import parallel
from aad.scoring import ops
from configs import test as test_config

# (config fields, image shape (H, W, C), prepared kernels) per case: every
# family, and AESc with 5x5 kernels (s2d and sub-pixel forms beside the
# im2col ones of small maps) and in bfloat16.
CASES = {
    'aesc': ({'model.kernel': 5}, (32, 64, 1), 6),
    'aesc_bfloat16': ({'model.dtype': 'bfloat16'}, (32, 32, 3), 6),
    'ae': ({'model.name': 'ae'}, (32, 32, 3), 6),
    'bergmann': ({'model.name': 'bergmann', 'model.bergmann.latent': 8},
                 (32, 32, 1), 0),
    'dae_denoiser': ({'model.name': 'dae_denoiser',
                      'model.dae_denoiser.encoder': (8, 8, 8),
                      'model.dae_denoiser.latent': 8,
                      'model.dae_denoiser.decoder': (8, 8, 8, 8),
                      'model.dae_denoiser.denoiser_layers': 3,
                      'model.dae_denoiser.denoiser_features': 6},
                     (32, 64, 1), 8),
    'draem': ({'model.name': 'draem', 'model.draem.recon_depth': 2,
               'model.draem.recon_features': 4, 'model.draem.disc_depth': 2,
               'model.draem.disc_features': 4}, (16, 24, 3), 8),
}


def _config(case):
  config = test_config.get_config()
  config.eval.mc_samples = 4
  config.eval.mc_chunk = 2
  config.update_from_flattened_dict(CASES[case][0])
  return config


@pytest.fixture(scope='module', params=sorted(CASES))
def case(request):
  """(name, config, family, plain variables, prepared variables, images,
  MC-dropout keys)."""
  config = _config(request.param)
  family = models.create(config)
  shape = CASES[request.param][1]
  plain = jax.jit(family.init, static_argnums=1)(jax.random.key(0), shape)
  # Non-zero BatchNorm statistics and biases, so that every parameter
  # shows in the outputs.
  plain = jax.tree.map(
      lambda a: a + 0.05 * jax.random.normal(jax.random.key(a.size), a.shape),
      plain)
  prepared = family.prepare(plain, shape)
  images = jax.random.uniform(jax.random.key(1), (2, *shape))
  keys = ops.image_keys(jax.random.key(2), np.arange(2))
  return request.param, config, family, plain, prepared, images, keys


def _plain_outputs(config, family, variables, x, keys):
  """The family's outputs from plain variables, by the networks the
  training stages run (their kernels rebuilt in the call)."""
  def forward(stage, v, y):
    return stage.forward(v, y, train=False)[0]
  first = family.stages[0]
  if family.name == 'draem':
    # Its stage's inputs carry the anomaly mask as a last channel.
    y = forward(first, variables, jnp.concatenate([x, x[..., :1]], -1))
    return {'reconstruction': y[..., :-2],
            'segmentation': jax.nn.sigmoid(y[..., -2])}
  out = {'reconstruction': forward(first, variables, x)}
  if family.name == 'dae_denoiser':
    out['smooth'] = forward(family.stages[1], variables,
                            out['reconstruction'])
  if family.name in ('aesc', 'ae'):
    out.update(ops.mc_dropout(
        aesc.build(config.model).apply, samples=config.eval.mc_samples,
        chunk=config.eval.mc_chunk, shared_prefix=True)(
            variables['ae'], x, keys))
  return out


def _wanted(family):
  return frozenset(family.output_names) - {'activations'}


def test_prepared_outputs_equal_plain_outputs(case):
  """Bitwise equal on this machine's CPU (prepare runs the very operations
  a plain call runs, earlier); the tolerance only allows another backend
  to round a kernel's sums of taps differently."""
  name, config, family, plain, prepared, x, keys = case
  want = jax.jit(lambda v, x, k: _plain_outputs(config, family, v, x, k))(
      plain, x, keys)
  got = jax.jit(lambda v, x, k: family.outputs(v, x, k, _wanted(family)))(
      prepared, x, keys)
  assert set(want) <= set(got)
  if name in ('aesc', 'aesc_bfloat16'):
    assert {'mc_mean', 'mc_variance'} <= set(want)
    assert np.ptp(np.asarray(got['mc_variance'])) > 0
  for key, value in want.items():
    np.testing.assert_allclose(np.asarray(got[key], np.float32),
                               np.asarray(value, np.float32), rtol=1e-6,
                               atol=1e-7, err_msg=f'{name}: {key}')


def test_checkpoints_stay_plain_and_prepared_adds_the_fast_kernels(case):
  name, _, family, plain, prepared, _, _ = case
  count = CASES[name][2]
  assert layers.prepared_kernels(plain) == 0
  assert layers.prepared_kernels(prepared) == count
  # The plain parameters are all still there, unchanged.
  strip = lambda tree: {
      k: strip(v) for k, v in tree.items() if k != 'fast_kernel'
  } if isinstance(tree, dict) else tree
  jax.tree.map(np.testing.assert_array_equal, strip(prepared), plain)
  # Preparing prepared variables changes nothing.
  again = family.prepare(prepared, CASES[name][1])
  jax.tree.map(np.testing.assert_array_equal, again, prepared)
  if count:
    # Plain variables in the prepared networks: a loud error, not a slow
    # path.
    with pytest.raises(flax.errors.ScopeParamNotFoundError,
                       match='fast_kernel'):
      family.outputs(plain, case[5], None, _wanted(family))


def _lowered_text(fn, *args) -> str:
  return jax.jit(fn).lower(*args).as_text(debug_info=True)


def test_inference_rebuilds_no_kernel(case):
  """No operation of the prepared outputs' program (MC-dropout passes
  included) comes from a kernel rearrangement (layers.KERNEL_SCOPE); the
  plain networks' programs have them, so the check would see them."""
  name, config, family, plain, prepared, x, keys = case
  got = _lowered_text(
      lambda v, x, k: family.outputs(v, x, k, _wanted(family)), prepared, x,
      keys)
  assert layers.KERNEL_SCOPE not in got
  want = _lowered_text(
      lambda v, x, k: _plain_outputs(config, family, v, x, k), plain, x,
      keys)
  assert (layers.KERNEL_SCOPE in want) == (CASES[name][2] > 0)


def test_prepared_variables_serve_other_sizes():
  """Which form a conv takes depends on its map's size; the prepared
  variables hold both, so one preparation serves any input size."""
  config = _config('aesc')
  family = models.create(config)
  plain = family.init(jax.random.key(0), (32, 32, 1))
  prepared = family.prepare(plain, (32, 32, 1))
  net = aesc.build(config.model)
  for shape in [(8, 8, 1), (16, 48, 1), (64, 64, 1)]:
    x = jax.random.uniform(jax.random.key(3), (1, *shape))
    got = family.outputs(prepared, x, None, frozenset())['reconstruction']
    np.testing.assert_allclose(got, net.apply(plain['ae'], x), rtol=1e-6,
                               atol=1e-7)


def test_the_detector_prepares_once():
  config = _config('aesc')
  config.num_devices = 1
  calls = []
  base = models.create(config)

  def prepare(variables, shape):
    calls.append(shape)
    return base.prepare(variables, shape)

  family = dataclasses.replace(base, prepare=prepare)
  scorers = testing.configured_scorers(config, family)
  variables = base.init(jax.random.key(0), (32, 32, 1))
  fitted = {'baseline_mean': np.full((32, 32, 1), 0.5, np.float32)}
  detector = detector_lib.Detector(config, family, 'brick', scorers,
                                   variables, fitted, None, 0,
                                   parallel.select_devices(1))
  images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1),
                                             dtype=np.uint8)
  first = detector.predict(list(images))
  second = detector.predict(list(images[:1]))
  assert calls == [(32, 32, 1)]
  # (Another batch size: other round-off.)
  np.testing.assert_allclose(second.scores['residual'],
                             first.scores['residual'][:1], rtol=1e-6)
  # The checkpoint's variables stay as they were.
  assert layers.prepared_kernels(detector.variables) == 0
  assert layers.prepared_kernels(detector.prepared_variables) == 6
  # The export holds prepared kernels (XLA's constant folding of the same
  # operations: equal up to the last bit) and rebuilds none per call.
  exported = archive.export_variables(detector)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                       atol=1e-7),
               exported, detector.prepared_variables)
  fn = function.detector_fn(config, family, scorers, exported, fitted,
                            {'image': {}, 'pixel': {}})
  with jax.enable_x64(True):
    text = _lowered_text(fn, images[:1], np.int32(2),
                         np.zeros(1, np.int32))
  assert layers.KERNEL_SCOPE not in text
