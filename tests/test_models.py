"""AESc / AE: parameter count, shapes, MC-dropout behaviour, skips."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aad import models
from aad.models import aesc
from aad.models import layers
from configs import default


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_paper_model_parameter_count():
  # METHOD.md 1.1: 12 convs (5x5, 16..512 maps) + 11 BatchNorms, C=3.
  f = [16, 32, 64, 128, 256, 512]
  convs = [(3, 16)] + list(zip(f[:-1], f[1:]))           # encoder
  convs += [(512, 256), (256, 128), (128, 64), (64, 32), (32, 16), (16, 3)]
  expected = sum(25 * i * o + o for i, o in convs)
  expected += 2 * (sum(f) + sum(f[:-1]))                  # BN scale + bias
  model = aesc.build(default.get_config().model)
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jnp.zeros((1, 256, 256, 3)))
  assert _count(variables['params']) == expected == 8736515
  assert _count(variables['batch_stats']) == 2 * (sum(f) + sum(f[:-1]))


@pytest.mark.parametrize('shape', [(2, 32, 32, 1), (1, 32, 64, 3)])
def test_output_shape_and_range(shape):
  model = aesc.AutoEncoder(depth=3, features=4, kernel=3)
  x = jax.random.uniform(jax.random.key(1), shape)
  variables = model.init(jax.random.key(0), x)
  y = model.apply(variables, x)
  assert y.shape == shape and y.dtype == jnp.float32
  assert float(y.min()) > 0 and float(y.max()) < 1


def test_size_not_divisible_is_a_clear_error():
  model = aesc.AutoEncoder(depth=3, features=4, kernel=3)
  with pytest.raises(ValueError, match='not divisible by 2\\*\\*depth = 8'):
    model.init(jax.random.key(0), jnp.zeros((1, 36, 32, 1)))


def test_mc_dropout_is_chosen_by_argument_and_key():
  model = aesc.AutoEncoder(depth=3, features=4, kernel=3,
                           dropout_rates=(0.0, 0.3, 0.5))
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
  v = model.init(jax.random.key(0), x)
  det = model.apply(v, x)
  np.testing.assert_array_equal(det, model.apply(v, x))
  mc = lambda k: model.apply(v, x, mc_dropout=True,
                             rngs={'dropout': jax.random.key(k)})
  np.testing.assert_array_equal(mc(3), mc(3))
  assert float(jnp.abs(mc(3) - mc(4)).max()) > 1e-4
  assert float(jnp.abs(mc(3) - det).max()) > 1e-4
  zero = aesc.AutoEncoder(depth=3, features=4, kernel=3,
                          dropout_rates=(0.0, 0.0, 0.0))
  np.testing.assert_array_equal(
      zero.apply(v, x, mc_dropout=True, rngs={'dropout': jax.random.key(3)}),
      det)


@pytest.mark.parametrize('skips', [True, False])
def test_skips_carry_input_past_a_dead_bottleneck(skips):
  # Dropping the whole bottleneck leaves the plain AE input-independent;
  # AESc still sees the input through its skip connections.
  model = aesc.AutoEncoder(depth=3, features=4, kernel=3, skips=skips,
                           dropout_rates=(0.0, 0.0, 1.0))
  x1 = jax.random.uniform(jax.random.key(1), (1, 32, 32, 1))
  x2 = jax.random.uniform(jax.random.key(2), (1, 32, 32, 1))
  v = model.init(jax.random.key(0), x1)
  run = lambda x: model.apply(v, x, mc_dropout=True,
                              rngs={'dropout': jax.random.key(0)})
  diff = float(jnp.abs(run(x1) - run(x2)).max())
  assert (diff > 1e-4) if skips else (diff == 0.0)


def test_train_mode_updates_batch_stats():
  model = aesc.AutoEncoder(depth=2, features=4, kernel=3)
  x = jax.random.uniform(jax.random.key(1), (4, 16, 16, 1))
  v = model.init(jax.random.key(0), x)
  _, updates = model.apply(v, x, train=True, mutable=['batch_stats'])
  before = v['batch_stats']['enc_bn0']['mean']
  after = updates['batch_stats']['enc_bn0']['mean']
  conv = nn.Conv(4, (3, 3), strides=(2, 2), padding='SAME')
  batch_mean = conv.apply({'params': v['params']['enc_conv0']}, x).mean(
      axis=(0, 1, 2))
  # Keras momentum 0.99: new = 0.99 * old + 0.01 * batch mean.
  np.testing.assert_allclose(after, 0.99 * before + 0.01 * batch_mean,
                             rtol=1e-5, atol=1e-7)


def test_unknown_model_name():
  config = default.get_config()
  config.model.name = 'vae'
  with pytest.raises(ValueError, match="'vae' is unknown"):
    models.create(config)


@pytest.mark.parametrize('kernel,shape,depth', [(5, (2, 64, 64, 3), 4),
                                                (3, (2, 32, 64, 1), 4),
                                                (5, (2, 32, 32, 2), 5),
                                                (5, (2, 32, 64, 1), 5)])
def test_fast_convs_match_plain_outputs_and_gradients(kernel, shape, depth):
  # Every form runs: s2d and sub-pixel convs, im2col of both on <= 16 px
  # maps, direct strided im2col (<= 16 output px) and im2col on the
  # upsampled input (<= 16 output px: depth 5 on 32 px).
  kw = dict(depth=depth, features=8, kernel=kernel)
  fast = aesc.AutoEncoder(conv_impl='fast', **kw)
  plain = aesc.AutoEncoder(conv_impl='plain', **kw)
  x = jax.random.uniform(jax.random.key(1), shape)
  v = fast.init(jax.random.key(0), x)

  def loss(model, params):
    y, _ = model.apply({'params': params, 'batch_stats': v['batch_stats']},
                       x, train=True, mutable=['batch_stats'])
    return jnp.mean((y - x) ** 2), y

  # Jitted: op by op, the depth-5 gradients took 20-26 s per case here.
  grad = lambda model: jax.jit(jax.value_and_grad(
      lambda p: loss(model, p), has_aux=True))(v['params'])
  (lf, yf), gf = grad(fast)
  (lp, yp), gp = grad(plain)
  np.testing.assert_allclose(yf, yp, atol=1e-5)
  np.testing.assert_allclose(lf, lp, rtol=1e-5)
  # One tolerance for all: biases feeding BatchNorm have a true gradient of
  # 0, so theirs are round-off that no relative tolerance can match.
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(gp))
  for a, b in zip(jax.tree.leaves(gf), jax.tree.leaves(gp)):
    np.testing.assert_allclose(a, b, atol=1e-5 * scale)


@pytest.mark.parametrize('k,stride', [(5, 1), (5, 2), (3, 1), (3, 2)])
def test_trimmed_taps_give_the_full_kernels_conv(k, stride):
  # Maps from 1 px (most taps read padding) to larger than the kernel.
  kernel = jax.random.normal(jax.random.key(0), (k, k, 3, 4))
  for h, w in [(1, 1), (2, 2), (1, 3), (3, 2), (4, 4), (6, 5)]:
    x = jax.random.normal(jax.random.key(h * 7 + w), (2, h, w, 3))
    padding = (layers._same_padding(h, k, stride),
               layers._same_padding(w, k, stride))
    want = jax.lax.conv_general_dilated(x, kernel, (stride, stride),
                                        padding, dimension_numbers=(
                                            'NHWC', 'HWIO', 'NHWC'))
    got = layers._im2col_conv(x, kernel, padding, stride)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # 2x2 -> 1x1 with a 5x5 stride-2 kernel reads only its central 2x2 taps;
  # 2x2 -> 2x2 with 5x5 stride 1 only its central 3x3.
  trimmed, pads = layers._trim_taps(jnp.zeros((5, 5, 1, 1)), (2, 2),
                                    ((1, 2), (1, 2)), 2)
  assert trimmed.shape[:2] == (2, 2) and pads == ((0, 0), (0, 0))
  trimmed, pads = layers._trim_taps(jnp.zeros((5, 5, 1, 1)), (2, 2),
                                    ((2, 2), (2, 2)), 1)
  assert trimmed.shape[:2] == (3, 3) and pads == ((1, 1), (1, 1))


@pytest.mark.parametrize('rates', [(0.0, 0.0, 0.3, 0.5), (0.2, 0.0, 0.0, 0.5),
                                   (0.0, 0.0, 0.0, 0.0)])
def test_resuming_after_the_deterministic_prefix_matches_whole_passes(rates):
  # The layers before the first dropout run once; deterministic and MC
  # passes from their output equal whole passes with the same key.
  model = aesc.AutoEncoder(depth=4, features=4, kernel=3, dropout_rates=rates)
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  v = model.init(jax.random.key(0), x)
  prefix = model.apply(v, x, until_dropout=True)
  first = model.first_dropout_level
  assert first == next((l for l, r in enumerate(rates) if r), 4)
  assert len(prefix[1]) == min(first, 4)  # the skips of levels before it
  np.testing.assert_allclose(model.apply(v, x, resume=prefix),
                             model.apply(v, x), atol=1e-6)
  for k in range(3):
    rngs = {'dropout': jax.random.key(k)}
    whole = model.apply(v, x, mc_dropout=True, rngs=rngs)
    np.testing.assert_allclose(
        model.apply(v, x, resume=prefix, mc_dropout=True, rngs=rngs), whole,
        atol=1e-6)
  with pytest.raises(ValueError, match='inference only'):
    model.apply(v, x, train=True, until_dropout=True,
                mutable=['batch_stats'])


def test_bfloat16_compute_stays_close_to_float32():
  config = default.get_config().model
  config.depth, config.features = 4, 8
  f32 = aesc.build(config)
  config.dtype = 'bfloat16'
  bf16 = aesc.build(config)
  x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
  # Jitted: op by op (eager bfloat16 convolutions and their gradients),
  # this test took ~40 s of the suite.
  v = jax.jit(f32.init)(jax.random.key(0), x)
  # Parameters stay float32, so the two share one checkpoint.
  abstract = jax.eval_shape(bf16.init, jax.random.key(0), x)
  shape = lambda a: a.shape
  assert jax.tree.map(shape, abstract) == jax.tree.map(shape, v)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract))
  # The convolutions really run in bfloat16.
  assert 'bf16[' in str(jax.make_jaxpr(lambda x: bf16.apply(v, x))(x))
  assert 'bf16[' not in str(jax.make_jaxpr(lambda x: f32.apply(v, x))(x))
  y32, y16 = jax.jit(f32.apply)(v, x), jax.jit(bf16.apply)(v, x)
  assert y16.dtype == jnp.float32
  assert 0 < float(jnp.abs(y16 - y32).max()) < 0.05
  # Training: the loss and gradients are close too.
  def loss(model, params):
    y, _ = model.apply({'params': params, 'batch_stats': v['batch_stats']},
                       x, train=True, mutable=['batch_stats'])
    return jnp.mean((y - x) ** 2)
  g32 = jax.jit(jax.grad(lambda p: loss(f32, p)))(v['params'])
  g16 = jax.jit(jax.grad(lambda p: loss(bf16, p)))(v['params'])
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(g16))
  cos = lambda a, b: float(jnp.vdot(a, b) / jnp.linalg.norm(a)
                           / jnp.linalg.norm(b))
  flat = lambda g: jnp.concatenate([t.ravel() for t in jax.tree.leaves(g)])
  assert cos(flat(g16), flat(g32)) > 0.98
  with pytest.raises(ValueError, match="'float16'"):
    config.dtype = 'float16'
    aesc.build(config)
