"""Bergmann AE (seed 002): architecture, SSIM loss, tau detection, a run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from aad.metrics import protocol as evaluation
from aad import models
from aad.experiment import run as pipeline
from aad import scoring
from aad.models import bergmann
from aad.models import losses
from configs import ae_l2
from configs import ae_ssim


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_parameter_count_follows_the_seed_table():
  # METHOD.md 5.2 at 256x256x3: encoder (in, out, k) rows, latent 8x8 conv
  # to 500, then the mirror; every conv has a bias, every BN but the
  # output's a scale and offset.
  enc = [(3, 3, 4), (3, 32, 4), (32, 32, 4), (32, 32, 3), (32, 64, 4),
         (64, 64, 3), (64, 128, 4), (128, 64, 3), (64, 32, 3), (32, 500, 8)]
  dec = [(500, 32, 8), (32, 64, 3), (64, 128, 3), (128, 64, 4), (64, 64, 3),
         (64, 32, 4), (32, 32, 3), (32, 32, 4), (32, 3, 4), (3, 3, 4)]
  convs = sum(k * k * i * o + o for i, o, k in enc + dec)
  norms = 2 * sum(o for _, o, _ in enc + dec[:-1])
  net = bergmann.BergmannAE()
  v = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)))
  assert _count(v['params']) == convs + norms
  assert _count(v['batch_stats']) == norms


@pytest.mark.parametrize('shape', [(2, 64, 64, 1), (1, 32, 64, 3)])
def test_output_shape_range_and_one_by_one_latent(shape):
  net = bergmann.BergmannAE(latent=7)
  x = jax.random.uniform(jax.random.key(1), shape)
  v = net.init(jax.random.key(0), x)
  y, inter = net.apply(v, x, capture_intermediates=True)
  assert y.shape == shape and float(y.min()) > 0 and float(y.max()) < 1
  latent = inter['intermediates']['Conv_9']['__call__'][0]
  assert latent.shape == (shape[0], 1, 1, 7)


@pytest.mark.parametrize('channels', [1, 3])
def test_ssim_loss_is_one_minus_skimage_ssim(channels):
  rng = np.random.default_rng(channels)
  a = rng.random((2, 40, 48, channels)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
  expected = [structural_similarity(
      a[i], b[i], gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=1.0, channel_axis=-1)
              for i in range(2)]
  np.testing.assert_allclose(losses.ssim(jnp.asarray(a), jnp.asarray(b)),
                             expected, atol=1e-3)
  assert 0.1 < float(np.mean(expected)) < 0.9  # a case that tests something
  loss = losses.ssim_loss(jnp.asarray(a), jnp.asarray(b))
  np.testing.assert_allclose(loss, 1 - np.mean(expected), atol=1e-3)
  assert float(losses.ssim_loss(jnp.asarray(a), jnp.asarray(a))) == (
      pytest.approx(0.0, abs=1e-6))
  # DRAEM's sum, aesc's model.loss='mse_ssim'.
  np.testing.assert_allclose(
      losses.mse_ssim(jnp.asarray(a), jnp.asarray(b)),
      np.mean((a - b) ** 2) + 1 - np.mean(expected), atol=1e-3)


def test_aesc_loss_is_configurable():
  from configs import test as test_config  # pylint: disable=g-import-not-at-top
  config = test_config.get_config()
  assert models.create(config).stages[0].loss is losses.mse
  config.model.loss = 'mse_ssim'
  assert models.create(config).stages[0].loss is losses.mse_ssim
  config.model.loss = 'l1'
  with pytest.raises(ValueError, match="config.model.loss='l1'"):
    models.create(config)


def test_l2_losses_by_hand():
  x = jnp.zeros((2, 1, 2, 1))
  y = jnp.array([[[[3.0], [4.0]]], [[[0.0], [0.0]]]])
  assert float(losses.mse(y, x)) == pytest.approx(25 / 4)
  # The seed's written form: the mean over images of ||x - y||_2.
  assert float(losses.l2_norm(y, x)) == pytest.approx(5 / 2)


def test_residual_max_and_pixel_tau_metrics_by_hand():
  x = np.zeros((2, 2, 2, 3), np.float32)
  recon = x.copy()
  recon[0, 0, 0] = (0.1, 0.5, 0.0)   # max 0.5: flagged at tau 0.2
  recon[0, 1, 1] = (0.1, 0.0, 0.15)  # max 0.15: missed
  recon[1, 0, 1] = (0.3, 0.0, 0.0)   # a false alarm on a good image
  amap = scoring.get('residual_max').map(
      jnp.asarray(x), {'reconstruction': jnp.asarray(recon)}, None, None)
  np.testing.assert_allclose(amap, [[[0.5, 0], [0, 0.15]], [[0, 0.3], [0, 0]]],
                             atol=1e-7)
  masks = np.zeros((2, 2, 2), bool)
  masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 0, 1] = True
  out = evaluation.pixel_tau_metrics(masks, np.asarray(amap), 0.2)
  # Flagged: (0,0,0) true, (1,0,1) false; 3 defect pixels.
  assert out['pixel_tau_precision'] == pytest.approx(1 / 2)
  assert out['pixel_tau_recall'] == pytest.approx(1 / 3)
  assert out['pixel_tau_f1'] == pytest.approx(0.4, abs=1e-6)
  protocol = evaluation.Protocol(pixel_tau=0.2)
  entry = evaluation.evaluate_scorer(np.asarray(amap), [1, 0], masks,
                                     ['cut', 'good'], protocol)
  assert entry['pixel_tau_f1'] == pytest.approx(0.4, abs=1e-6)
  assert entry['by_type']['cut']['pixel_tau_recall'] == pytest.approx(1 / 3)


@pytest.mark.parametrize('module', [ae_l2, ae_ssim])
def test_configs_train_and_evaluate(module, tmp_path, textures_dir):
  config = module.get_config()
  config.dataset.data_dir = textures_dir
  config.dataset.categories = ('brick',)
  config.dataset.image_size = 32
  config.num_devices = 1
  config.model.bergmann.latent = 16
  config.train.num_steps = 4
  config.train.eval_every = config.train.log_every = 2
  config.eval.heatmap_rows = 2
  pipeline.train_and_evaluate(config, str(tmp_path))
  metrics = json.loads((tmp_path / 'metrics.json').read_text())
  family = models.create(config)
  assert family.scorers[0] == 'residual_max'
  for scorer in family.scorers:
    assert 0 <= metrics[f'mean/{scorer}/l2/image_auroc'] <= 1
  assert 0 <= metrics['brick/residual_max/pixel_tau_f1'] <= 1
  assert metrics['brick/residual_max/pixel_tau'] == 0.2
  types = {k.split('/')[3] for k in metrics if '/by_type/' in k}
  for t in types:
    assert f'brick/residual_max/by_type/{t}/pixel_tau_precision' in metrics
