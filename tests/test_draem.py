"""The reconstruct-and-discriminate family (aad/models/draem.py), its
simulated anomalies and the segmentation scorer."""

import json
import pathlib

import jax
import numpy as np
from PIL import Image
import pytest

from aad import models
from aad.configs import default
from aad.models import corruptions
from aad.scoring import get


def _config(**draem_fields):
  c = default.get_config()
  c.model.name = 'draem'
  c.model.draem.update(dict(dict(recon_depth=2, recon_features=4,
                                 disc_depth=2, disc_features=4),
                            **draem_fields))
  return c


def _anomalies(n, image, **params):
  keys = jax.random.split(jax.random.key(0), n)
  return jax.vmap(lambda k: corruptions.perlin_anomaly(k, image, **params))(
      keys)


def test_simulated_anomaly_changes_only_its_mask_and_returns_it():
  image = jax.random.uniform(jax.random.key(1), (32, 48, 3))
  out = np.asarray(_anomalies(16, image, p_anomaly=1.0, opacity=(1.0, 1.0)))
  assert out.shape == (16, 32, 48, 4)
  mask = out[..., 3]
  assert set(np.unique(mask)) <= {0.0, 1.0}
  assert (mask.sum(axis=(1, 2)) > 0).sum() >= 12  # blobs, mostly non-empty
  unchanged = mask == 0
  np.testing.assert_array_equal(
      out[..., :3][unchanged], np.broadcast_to(np.asarray(image),
                                               out[..., :3].shape)[unchanged])
  # Fully opaque fills differ from the image almost everywhere they cover.
  changed = np.abs(out[..., :3] - np.asarray(image)).max(-1) > 1e-6
  assert changed[mask == 1].mean() > 0.9
  assert (out >= 0).all() and (out <= 1).all()


def test_simulated_anomaly_is_absent_at_p_anomaly_zero():
  image = jax.random.uniform(jax.random.key(2), (16, 16, 1))
  out = np.asarray(_anomalies(8, image, p_anomaly=0.0))
  np.testing.assert_array_equal(out[..., 0],
                                np.broadcast_to(image[..., 0], (8, 16, 16)))
  assert not out[..., 1].any()
  # Half the images at the default: the draws are per image.
  masks = np.asarray(_anomalies(64, image))[..., 1]
  assert 16 <= (masks.sum(axis=(1, 2)) > 0).sum() <= 48


def test_procedural_texture_range_and_shape():
  t = np.asarray(corruptions.procedural_texture(jax.random.key(3), (24, 40),
                                                3))
  assert t.shape == (24, 40, 3)
  assert t.min() >= 0 and t.max() <= 1 and t.std() > 0


def test_family_shapes_and_outputs():
  c = _config()
  fam = models.create(c)
  assert fam.size_multiple == 4
  v = fam.init(jax.random.key(0), (16, 24, 3))
  assert set(v) == {'reconstructive', 'discriminative'}
  v = fam.prepare(v, (16, 24, 3))
  x = jax.random.uniform(jax.random.key(1), (2, 16, 24, 3))
  out = fam.outputs(v, x, None, frozenset({'segmentation'}))
  assert out['reconstruction'].shape == (2, 16, 24, 3)
  assert out['segmentation'].shape == (2, 16, 24)
  seg = np.asarray(out['segmentation'])
  assert ((seg > 0) & (seg < 1)).all()
  assert 'segmentation' not in fam.outputs(v, x, None, frozenset())
  scorer = get('segmentation')
  np.testing.assert_array_equal(scorer.map(x, out, None, c.eval), seg)


def test_loss_is_l2_plus_ssim_plus_focal():
  c = _config(focal_weight=0.5)
  stage = models.create(c).stages[0]
  rng = np.random.default_rng(0)
  recon = rng.uniform(size=(2, 16, 16, 1)).astype(np.float32)
  clean = rng.uniform(size=(2, 16, 16, 1)).astype(np.float32)
  logits = rng.normal(size=(2, 16, 16)).astype(np.float32)
  mask = (rng.uniform(size=(2, 16, 16)) < 0.3).astype(np.float32)
  prediction = np.concatenate([recon, logits[..., None], mask[..., None]],
                              -1)
  # Focal loss by hand (Lin et al. 2017, no alpha): -(1 - p_t)^2 log p_t.
  p = 1 / (1 + np.exp(-logits))
  p_t = np.where(mask == 1, p, 1 - p)
  focal = np.mean(-(1 - p_t) ** 2 * np.log(p_t))
  from aad.models import losses
  expected = (np.mean((recon - clean) ** 2) +
              1 - float(np.mean(losses.ssim(recon, clean))) + 0.5 * focal)
  np.testing.assert_allclose(float(stage.loss(prediction, clean)), expected,
                             rtol=1e-5)


@pytest.mark.parametrize('field, value', [
    ('disc_depth', 0), ('p_anomaly', 1.5), ('focal_gamma', -1.0),
    ('p_line', 1.5), ('line_width', (0.0, 2.0)), ('line_length', (0.8, 0.2)),
    ('line_bend', (-1.0, 0.0))])
def test_bad_fields_are_named(field, value):
  with pytest.raises(ValueError, match=f'config.model.draem.{field}'):
    models.create(_config(**{field: value}))


def _save(path: pathlib.Path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def _stripes(rng, size=32):
  """A good image: horizontal stripes of a random phase, with noise."""
  rows = np.arange(size)[:, None] + rng.integers(0, 8)
  base = 110 + 40 * (np.sin(rows * 2 * np.pi / 8) > 0)
  noise = rng.normal(0, 4, (size, size))
  return np.clip(base + noise, 0, 255).astype(np.uint8)


def test_learns_to_segment_an_anomaly_it_was_not_shown(tmp_path):
  """Trained on stripes with Perlin-blob anomalies only, it segments a
  vertical bar and a dark disc it never saw."""
  rng = np.random.default_rng(0)
  root = tmp_path / 'stripes'
  for i in range(48):
    _save(root / f'train/good/{i:03d}.png', _stripes(rng))
  yy, xx = np.mgrid[:32, :32]
  for i in range(6):
    _save(root / f'test/good/{i:03d}.png', _stripes(rng))
    image, mask = _stripes(rng), np.zeros((32, 32), bool)
    if i % 2:
      mask[6:26, 10 + i:14 + i] = True
      image[mask] = 200
    else:
      mask = (yy - 16) ** 2 + (xx - 8 - 2 * i) ** 2 < 25
      image[mask] = 30
    _save(root / f'test/defect/{i:03d}.png', image)
    _save(root / f'ground_truth/defect/{i:03d}_mask.png',
          mask.astype(np.uint8) * 255)
  import aad  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  aad.fit('draem', str(workdir), **{
      'dataset.name': 'folder', 'dataset.categories': (),
      'dataset.path': str(root), 'dataset.data_dir': str(tmp_path / 'tfds'),
      'dataset.image_size': 32, 'dataset.channels': 1,
      'dataset.patch_size': 0, 'num_devices': 1,
      'model.draem.recon_depth': 3, 'model.draem.recon_features': 8,
      'model.draem.disc_depth': 3, 'model.draem.disc_features': 8,
      'model.draem.scale': (2, 8), 'train.batch_size': 16,
      'train.num_steps': 300, 'train.eval_every': 100,
      'train.log_every': 100, 'eval.heatmap_rows': 2,
      'eval.smooth_sigma': 2.0})
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert metrics['mean/segmentation/pixel_auroc'] > 0.9
  # It makes its own training inputs: the report names no corruption.
  report = (workdir / 'report.md').read_text()
  assert report.startswith('# draem: draem on folder\n')
  assert metrics['mean/segmentation/smooth_max/image_auroc'] > 0.9


def test_line_anomalies_are_thin_and_blobs_keep_their_draws():
  from skimage import measure  # pylint: disable=g-import-not-at-top
  image = jax.random.uniform(jax.random.key(3), (64, 64, 1))
  masks = np.asarray(_anomalies(32, image, p_anomaly=1.0, p_line=1.0,
                                line_width=(2.0, 2.0)))[..., 1]
  for mask in masks:
    props = measure.regionprops(mask.astype(np.uint8))[0]
    # At most the longest band, 64 px long and 2 wide, and elongated.
    assert 0 < mask.sum() <= 64 * 2 * 1.3
    assert props.axis_major_length > 4 * props.axis_minor_length
  # Without lines the blobs are perlin_mask's of the first key, as before.
  keys = jax.random.split(jax.random.key(0), 4)
  blobs = np.asarray(_anomalies(4, image, p_anomaly=1.0, p_line=0.0))
  for key, out in zip(keys, blobs):
    expected = corruptions.perlin_mask(jax.random.split(key, 3)[0], (64, 64))
    np.testing.assert_array_equal(out[..., 1], expected)

