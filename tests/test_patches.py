"""Patch mode: random training crops and tiled, stitched scoring."""

import json
import logging

import jax
import numpy as np
import pytest

from aad.experiment import run
from aad.training import loop
from aad.training import step as step_lib
from configs import test as test_config


def test_random_patches_are_slices_of_their_images():
  # Pixel value = 1000 * image + 12 * row + column: a patch's corner value
  # says where it was cut.
  n, h, w = 8, 10, 12
  images = (1000 * np.arange(n)[:, None, None] + 12 * np.arange(h)[:, None]
            + np.arange(w)).astype(np.float32)[..., None]
  patches = np.asarray(step_lib.random_patches(
      jax.random.key(0), images, 4, np.arange(n)))
  assert patches.shape == (n, 4, 4, 1)
  offsets = set()
  for i, patch in enumerate(patches):
    top, left = divmod(int(patch[0, 0, 0]) - 1000 * i, 12)
    assert 0 <= top <= h - 4 and 0 <= left <= w - 4
    np.testing.assert_array_equal(patch, images[i, top:top + 4,
                                                left:left + 4])
    offsets.add((top, left))
  assert len(offsets) > 1  # drawn per image, not one crop for the batch
  again = step_lib.random_patches(jax.random.key(0), images, 4, np.arange(n))
  np.testing.assert_array_equal(patches, again)


def test_patch_mode_trains_on_patches_and_scores_whole_images(
    tmp_path, textures_dir, caplog, monkeypatch):
  config = test_config.get_config()
  config.num_devices = 1
  config.dataset.data_dir = textures_dir
  config.dataset.patch_size = 16
  config.dataset.patch_stride = 8
  config.train.num_steps = 4
  # The activation Gaussian's non-spatial outputs are grouped per image
  # (N, tiles, L, V), not stitched.
  config.eval.scorers = ('residual', 'activation_gaussian')
  # A training line whenever the log has been silent (here: always), not
  # only every config.train.log_every steps.
  monkeypatch.setattr(loop._Progress, 'SILENT_S', 0.0)
  with caplog.at_level(logging.INFO):
    run.train_and_evaluate(config, str(tmp_path))
  metrics = json.loads((tmp_path / 'metrics.json').read_text())
  assert 0 <= metrics['brick/residual/pixel_auroc'] <= 1
  # Progress counts tiles, and names the images they come from.
  lines = [r.getMessage() for r in caplog.records]
  scored = [m for m in lines if m.startswith('scored ')]
  assert scored and all(' tiles of ' in m and 'tiles/s, ETA ' in m
                        for m in scored), scored
  # The compilation is announced before the first training line.
  compiling = next(i for i, m in enumerate(lines)
                   if 'compiling the training step' in m)
  first_step = next(i for i, m in enumerate(lines) if ' step 2/4 ' in m)
  assert compiling < first_step
  assert 0 <= metrics['brick/activation_gaussian/own/image_auroc'] <= 1
  assert (tmp_path / 'brick' / 'heatmaps.png').stat().st_size > 100
  config.dataset.patch_size = 12
  with pytest.raises(loop.TrainingError,
                     match='patch_size: .* multiples of 8'):
    run.train_and_evaluate(config, str(tmp_path / 'bad'))
  # The validation loss runs on whole images: they must suit the model
  # too, which is said before anything is trained.
  config.dataset.patch_size = 16
  config.dataset.image_size = 36
  with pytest.raises(loop.TrainingError,
                     match=r'image_size / image_width: the image size 36x36 '
                           r'.* multiples of 8, e\.g\. 32x32\.'):
    run.train_and_evaluate(config, str(tmp_path / 'bad_image'))
  assert not (tmp_path / 'bad_image' / 'brick').exists()
