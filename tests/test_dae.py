"""DAE + denoiser (seed 000): layers, the 63 + 1 accumulation, the scorers,
two stages with the AE frozen, and a run killed in stage 2 resuming it."""

import json
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aad import data
from aad import models
from aad import scoring
from aad.training import loop
from aad.models import dae_denoiser as dae
from aad.training import step as step_lib
from configs import dae_denoiser
from configs import test as test_config
from tests import processes

REPO = pathlib.Path(__file__).resolve().parents[1]

TINY = {'model.name': 'dae_denoiser',
        'model.dae_denoiser.encoder': (8, 8, 8),
        'model.dae_denoiser.latent': 8,
        'model.dae_denoiser.decoder': (8, 8, 8, 8),
        'model.dae_denoiser.denoiser_layers': 3,
        'model.dae_denoiser.denoiser_features': 6,
        'model.dae_denoiser.denoiser_crop': 16,
        'model.dae_denoiser.denoiser_steps': 8}


def _tiny_config(data_dir):
  config = test_config.get_config()
  config.num_devices = 1
  config.dataset.data_dir = data_dir
  config.update_from_flattened_dict(TINY)
  return config


@pytest.mark.parametrize('shape', [(2, 2, 2, 3), (1, 4, 6, 5), (2, 8, 8, 1)])
def test_transposed_conv_equals_flax_conv_transpose(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  ref = nn.ConvTranspose(7, (5, 5), strides=(2, 2), padding='SAME')
  v = ref.init(jax.random.key(1), x)
  v = {'params': {**v['params'],
                  'bias': jax.random.normal(jax.random.key(2), (7,))}}
  y = dae.TransposedConv(7).apply(v, x)
  assert y.shape == (shape[0], 2 * shape[1], 2 * shape[2], 7)
  np.testing.assert_allclose(y, ref.apply(v, x), atol=1e-5)


@pytest.mark.parametrize('shape', [(2, 32, 32, 1), (1, 64, 32, 3)])
def test_ae_and_denoiser_shapes_and_ranges(shape):
  ae = dae.DenseAE((8, 16, 32), 10, (32, 16, 8, 8))
  x = jax.random.uniform(jax.random.key(1), shape)
  v = ae.init(jax.random.key(0), x)
  y = ae.apply(v, x)
  assert y.shape == shape and float(y.min()) > 0 and float(y.max()) < 1
  assert v['params']['Dense_0']['kernel'].shape == (
      shape[1] // 8 * shape[2] // 8 * 32, 10)
  den = dae.Denoiser(layers=4, features=9)
  vd = den.init(jax.random.key(2), y)
  assert den.apply(vd, y).shape == shape


def test_denoiser_accumulates_c_maps_of_every_layer():
  # The 63 + 1 reading: with C = 1, 1 of each layer's 64 maps is added to
  # the output, the other 63 feed the next layer; Den(y) = y + sum.
  den = dae.Denoiser(layers=20, features=64)
  y = jax.random.uniform(jax.random.key(3), (2, 16, 16, 1))
  v = den.init(jax.random.key(4), y)
  out, inter = den.apply(v, y, capture_intermediates=True)
  convs = [inter['intermediates'][f'Conv_{i}']['__call__'][0]
           for i in range(20)]
  assert [c.shape[-1] for c in convs] == [64] * 19 + [1]
  total = y + sum(c[..., :1] for c in convs)
  np.testing.assert_allclose(out, total, atol=1e-5)
  count = lambda t: sum(a.size for a in jax.tree.leaves(t))
  expected = (9 * 1 * 64 + 64) + 18 * (9 * 63 * 64 + 64) + (9 * 63 + 1)
  assert count(v['params']) == expected + 19 * 2 * 63  # + BN on the 63
  flat = dae.Denoiser(layers=3, features=8, residual=False)
  vf = flat.init(jax.random.key(5), y)
  out, inter = flat.apply(vf, y, capture_intermediates=True)
  np.testing.assert_allclose(out, sum(
      inter['intermediates'][f'Conv_{i}']['__call__'][0][..., :1]
      for i in range(3)), atol=1e-6)


def test_smooth_residual_and_feature_mask_by_hand():
  x = jnp.array([[[[0.2, 0.4]]]])            # (1, 1, 1, 2)
  out = {'reconstruction': jnp.array([[[[0.5, 0.5]]]]),
         'smooth': jnp.array([[[[0.1, 0.6]]]])}
  cfg = test_config.get_config().eval
  smooth = scoring.get('smooth_residual').map(x, out, None, cfg)
  np.testing.assert_allclose(smooth, [[[0.3]]], atol=1e-6)
  # correction |smooth - recon| = 0.4 + 0.1 = 0.5; feature mask 0.3 * 0.5.
  mask = scoring.get('feature_mask').map(x, out, None, cfg)
  np.testing.assert_allclose(mask, [[[0.15]]], atol=1e-6)
  cfg.feature_mask_power = 2.0
  np.testing.assert_allclose(
      scoring.get('feature_mask').map(x, out, None, cfg),
      [[[0.075]]], atol=1e-6)


def test_the_frozen_ae_is_bit_identical_after_stage_two(tmp_path,
                                                        textures_dir):
  config = _tiny_config(textures_dir)
  dataset = data.load('textures', 'brick', image_size=32, channels=1,
                      data_dir=textures_dir)
  devices = jax.local_devices()[:1]
  family = models.create(config)
  assert [s.name for s in family.stages] == ['ae', 'denoiser']
  init = step_lib.init_variables(family, config, (32, 32, 1))
  ae, _ = loop.train_stage(config, family, 0, init, str(tmp_path), dataset,
                            devices)
  variables, summary = loop.train_category(config, str(tmp_path), dataset,
                                            devices)
  for a, b in zip(jax.tree.leaves(ae['ae']), jax.tree.leaves(variables['ae'])):
    np.testing.assert_array_equal(a, b)
  moved = [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(init['denoiser']),
      jax.tree.leaves(variables['denoiser']))]
  assert any(moved)
  assert summary['steps'] == 16 and summary['denoiser/steps'] == 8
  assert summary['best_step'] == summary['denoiser/best_step']


def test_config_file_builds_the_seed_family():
  config = dae_denoiser.get_config()
  family = models.create(config)
  assert family.scorers[0] == 'feature_mask'
  assert [s.num_steps for s in family.stages] == [
      config.train.num_steps, config.model.dae_denoiser.denoiser_steps]
  with pytest.raises(ValueError, match='noise_std'):
    config.model.dae_denoiser.noise_std = -1.0
    models.create(config)


def test_a_run_killed_in_stage_two_resumes_stage_two(tmp_path, textures_dir):
  flags = [f'--config.{k}={v}'.replace(' ', '')
           for k, v in TINY.items() if k != 'model.dae_denoiser.denoiser_steps']
  cmd = [sys.executable, '-m', 'aad.main', '--config=configs/test.py',
         f'--workdir={tmp_path}', f'--config.dataset.data_dir={textures_dir}',
         '--config.num_devices=1', '--config.eval.heatmap_rows=2', *flags,
         '--config.model.dae_denoiser.denoiser_steps=400',
         '--config.train.eval_every=10', '--config.train.log_every=10']
  ckpts = tmp_path / 'brick' / 'checkpoints'
  processes.kill_when(cmd, lambda: any(
      s >= 20 for s in processes.saved_steps(ckpts / 'denoiser')), 300)
  saved = processes.saved_steps(ckpts / 'denoiser')[-1]
  assert 20 <= saved < 400
  ae_files = {p: p.read_bytes() for p in (ckpts / 'ae').rglob('*')
              if p.is_file()}
  rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                         timeout=600, check=False)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Resuming brick/ae from step 8' in rerun.stderr
  assert f'Resuming brick/denoiser from step {saved}' in rerun.stderr
  assert 'brick/ae step' not in rerun.stderr  # stage 1 did not train again
  assert 'brick/denoiser step 10/400' not in rerun.stderr
  assert 'brick/denoiser step 400/400' in rerun.stderr
  assert {p: p.read_bytes() for p in (ckpts / 'ae').rglob('*')
          if p.is_file()} == ae_files
  metrics = json.loads((tmp_path / 'metrics.json').read_text())
  for scorer in ('feature_mask', 'smooth_residual', 'residual',
                 'baseline_mean'):
    assert 0 <= metrics[f'mean/{scorer}/pixel_auroc'] <= 1
  assert metrics['brick/train/denoiser/steps'] == 400
