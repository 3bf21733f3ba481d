"""Scoring: norms by hand, MC-dropout mean/variance against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aad.scoring import ops
from aad.models import aesc


def test_residual_and_norms_by_hand():
  x = jnp.zeros((1, 2, 2, 3))
  recon = jnp.array([[[[0.1, 0.2, 0.0], [0.0, 0.0, 0.0]],
                      [[0.5, 0.0, 0.5], [0.0, 0.3, 0.0]]]])
  m = ops.residual_map(x, recon)
  np.testing.assert_allclose(m, [[[0.3, 0.0], [1.0, 0.3]]], atol=1e-7)
  np.testing.assert_allclose(ops.reduce_map(m, 'l1'), [1.6 / 4], 1e-6)
  np.testing.assert_allclose(ops.reduce_map(m, 'l2'),
                             [np.sqrt((0.09 + 1.0 + 0.09) / 4)], 1e-6)
  np.testing.assert_allclose(ops.reduce_map(m, 'linf'), [1.0])
  with pytest.raises(ValueError, match="'l3'"):
    ops.reduce_map(m, 'l3')


@pytest.mark.parametrize('axis', [-1, 1])
def test_over_channels_is_the_reduction_over_that_axis(axis):
  z = np.random.default_rng(3).standard_normal((2, 3, 5, 4)).astype(np.float32)
  np.testing.assert_allclose(ops.over_channels(jnp.asarray(z), axis=axis),
                             z.sum(axis), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(
      ops.over_channels(jnp.asarray(z), jnp.maximum, axis), z.max(axis))
  # One channel: the plane itself.
  np.testing.assert_array_equal(ops.over_channels(jnp.asarray(z[..., :1])),
                                z[..., 0])


def test_image_mean_is_the_mean_over_all_but_the_first_axis():
  rng = np.random.default_rng(4)
  for shape in ((3, 7), (2, 5, 6), (2, 4, 5, 3)):
    z = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(ops.image_mean(jnp.asarray(z)),
                               z.reshape(shape[0], -1).mean(axis=1),
                               rtol=1e-5, atol=1e-6)
  # Hand-computed: (1 + 2 + 3 + 6) / 4 and (-4 + 0 + 0 + 0) / 4.
  z = jnp.asarray([[[1.0, 2.0], [3.0, 6.0]], [[-4.0, 0.0], [0.0, 0.0]]])
  np.testing.assert_array_equal(ops.image_mean(z), [3.0, -1.0])


def _fake_apply(variables, x, mc_dropout=False, rngs=None):
  """Deterministic: 0.5 x; MC: plus uniform noise from the dropout key."""
  y = variables['scale'] * x
  if mc_dropout:
    y = y + jax.random.uniform(rngs['dropout'], x.shape)
  return y


@pytest.mark.parametrize('chunk', [1, 3, 6])
def test_mc_variance_matches_numpy_and_ignores_batching(chunk):
  images = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 2), np.uint8)
  key = jax.random.key(5)
  sampler = ops.mc_dropout(_fake_apply, samples=6, chunk=chunk)
  fn = jax.jit(lambda v, images, indices: sampler(
      v, ops.to_float(images), ops.image_keys(key, indices)))
  variables = {'scale': 0.5}
  out = fn(variables, images, np.arange(10, 13))
  x = images / 255.0
  for i in range(3):
    keys = jax.random.split(jax.random.fold_in(key, 10 + i), 6)
    samples = np.stack([np.asarray(_fake_apply(variables, x[i][None], True,
                                               {'dropout': k})[0])
                        for k in keys])
    np.testing.assert_allclose(out['mc_mean'][i], samples.mean(0), atol=1e-6)
    np.testing.assert_allclose(out['mc_variance'][i],
                               samples.var(0).mean(-1), atol=1e-6)
    np.testing.assert_allclose(out['reconstruction'][i], 0.5 * x[i],
                               atol=1e-6)
  # The same image at the same global index gives the same draws alone.
  alone = fn(variables, images[1:2], np.array([11]))
  np.testing.assert_allclose(alone['mc_variance'][0], out['mc_variance'][1],
                             atol=1e-7)


def test_chunk_must_divide_samples():
  with pytest.raises(ValueError, match='must divide'):
    ops.mc_dropout(_fake_apply, samples=30, chunk=7)


def test_mc_chunk_size_is_a_divisor_within_budget():
  # 64x64x1, 16 features: 4 * 4096 * 49 bytes = 0.8 MB per image-pass.
  assert ops.mc_chunk_size(30, 16, (64, 64, 1), 16) == 30
  small = ops.mc_chunk_size(30, 16, (256, 256, 3), 16,
                                budget_bytes=2**28)
  assert 30 % small == 0 and small * 16 * 4 * 65536 * 51 <= 2**28
  assert ops.mc_chunk_size(30, 16, (1024, 1024, 3), 16) == 1


def test_shared_prefix_scores_equal_whole_passes():
  # aesc rates put the first dropout at level 2: levels 0-1 run once per
  # image instead of once per pass, with the same maps.
  model = aesc.AutoEncoder(depth=4, features=4, kernel=3,
                           dropout_rates=(0.0, 0.0, 0.3, 0.5))
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)
  v = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  out = {}
  for shared in (False, True):
    fn = jax.jit(ops.mc_dropout(model.apply, samples=4, chunk=2,
                                    shared_prefix=shared))
    out[shared] = fn(v, ops.to_float(images),
                     ops.image_keys(jax.random.key(3), np.arange(2)))
  assert float(out[True]['mc_variance'].max()) > 1e-6
  for name in out[False]:
    np.testing.assert_allclose(out[True][name], out[False][name], atol=1e-6)
