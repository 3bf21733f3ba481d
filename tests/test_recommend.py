"""configs/folder.py's rules (aad/experiment/recommend.py): data properties in, config
fields out; nothing read from test images."""

import os

import numpy as np
import pytest
from PIL import Image

from aad.models import corruptions
from aad import data
from aad import models
from aad.runtime import errors
from aad.experiment import recommend
from aad.experiment import validate
from aad import scoring
from configs import folder as folder_config
from configs import folder_aesc as folder_aesc_config

rng = np.random.default_rng(0)


def _props(**kwargs):
  base = dict(count=300, height=1250, width=500, colour=False)
  return data.Properties(**dict(base, **kwargs))


def test_rules_for_large_elongated_grey_images():
  fields, why = recommend.rules(_props(), multiple=32, batch_size=16)
  # 1250 x 500 scaled by sqrt(640 * 256 / 625000) = 0.512 -> 640 x 256.
  assert fields['dataset.image_size'] == 640
  assert fields['dataset.image_width'] == 256
  assert fields['dataset.channels'] == 1
  assert fields['dataset.patch_size'] == 128
  assert fields['dataset.patch_stride'] == 64
  assert fields['train.num_steps'] == 3000
  # Patch mode: the line filter, no Gaussian.
  assert fields['eval.normalised.line_length'] == 32.0
  assert fields['eval.normalised.smooth_sigma'] == 0.0
  assert len(why) == 5
  # Without the normalised scorer its fields are set, but not reported.
  quiet, why = recommend.rules(_props(), 32, 16, normalised=False)
  assert quiet == fields
  assert len(why) == 4 and not any('normalised' in w or 'line filter' in w
                                   for w in why)


def test_rules_for_small_colour_textures():
  fields, _ = recommend.rules(_props(height=128, width=128, colour=True),
                              32, 16)
  assert (fields['dataset.image_size'], fields['dataset.image_width']) == (
      128, 128)
  assert fields['dataset.channels'] == 3
  assert fields['dataset.patch_size'] == 0  # small, square: whole images
  # 16 x 128 x 128 pixels per step, as many pixels as 3000 patch steps.
  assert fields['train.num_steps'] == 3000
  # Whole small images: a Gaussian, no line filter.
  assert fields['eval.normalised.line_length'] == 0.0
  assert fields['eval.normalised.smooth_sigma'] == 2.0
  big, _ = recommend.rules(_props(height=400, width=400), 32, 16)
  # 400 x 400 is under the pixel budget: kept (to the nearest multiple of
  # 32, ties down), and patched.
  assert big['dataset.image_size'] == 384 and big['dataset.patch_size'] == 128
  square, _ = recommend.rules(_props(height=200, width=200), 32, 16)
  assert square['dataset.patch_size'] == 0
  # 200 -> 192 px: 3000 x 128^2 / 192^2 steps, the same pixels seen.
  assert square['dataset.image_size'] == 192
  assert square['train.num_steps'] == 1333


def test_resolve_sets_the_fields_from_a_folder(tmp_path):
  root = tmp_path / 'parts'
  for i in range(5):
    os.makedirs(root / 'train' / 'good', exist_ok=True)
    image = rng.integers(0, 256, (300, 100), dtype=np.uint8)
    Image.fromarray(image).save(root / 'train' / 'good' / f'{i}.png')
  os.makedirs(root / 'test' / 'good')
  Image.fromarray(image).save(root / 'test' / 'good' / '0.png')
  config = folder_config.get_config()
  config.dataset.path = str(root)
  config.dataset.data_dir = str(tmp_path / 'tfds')
  props = data.properties(config.dataset)
  assert (props.count, props.height, props.width, props.colour) == (
      5, 300, 100, False)
  resolved = recommend.resolve(config)
  assert not resolved.auto
  assert resolved.dataset.image_size == 304   # 300 rounded to 16 (draem)
  assert resolved.dataset.image_width == 96
  assert resolved.dataset.channels == 1
  # Elongated (3 to 1): patches as wide as the image.
  assert resolved.dataset.patch_size == 96
  # The config's budget, 16 x 128^2 x 1400 px, in 16 patches of 96^2.
  assert resolved.train.num_steps == 16 * 128 * 128 * 1400 // (16 * 96 * 96)
  # No rule for the normalised scorer's mode: per-position statistics.
  assert resolved.eval.normalised.mode == 'position'
  assert resolved.eval.normalised.line_length == 32.0   # patch mode
  family = models.create(resolved)
  family.check_size(304, 96, 'the image size')
  assert [s.name for s in scoring.resolve(resolved.eval.scorers, family)] == [
      'segmentation', 'residual', 'baseline_mean']
  # The AESc form: its own size multiple (32) and step budget.
  aesc = folder_aesc_config.get_config()
  aesc.dataset.path, aesc.dataset.data_dir = str(root), str(tmp_path / 'tfds')
  resolved = recommend.resolve(aesc)
  assert resolved.dataset.image_size == 288   # 300 rounded to 32
  assert resolved.train.num_steps == 3000     # at most MAX_STEPS
  assert [s.name for s in scoring.resolve(
      resolved.eval.scorers, models.create(resolved))] == [
          'normalised', 'residual', 'baseline_mean']
  assert callable(corruptions.from_config(resolved.corruption))
  # A value given by the user is kept; the later rules build on it.
  config.train.num_steps = 7
  config.dataset.image_size = 96
  config.dataset.image_width = 96
  kept = recommend.resolve(config)
  assert kept.train.num_steps == 7 and kept.dataset.image_size == 96
  assert kept.dataset.patch_size == 0  # 96 x 96: whole images
  assert kept.dataset.channels == 1
  assert kept.eval.normalised.line_length == 0.0   # whole images
  assert kept.eval.normalised.smooth_sigma == 2.0
  config.auto = False
  assert recommend.resolve(config) is config


def test_the_folder_config_passes_the_checks_before_its_rules_ran():
  # aad.main checks the config before the rules have read any image: the
  # fields they choose must not be refused for holding "choose me".
  validate.check_config(folder_aesc_config.get_config())
  config = folder_config.get_config()
  config.dataset.path = '/nowhere'
  validate.check_config(config)
  assert config.auto and config.train.num_steps == 0   # not changed
  config.train.learning_rate = -1.0
  with pytest.raises(errors.UserError, match='train.learning_rate=-1.0'):
    validate.check_config(config)
  # A value given for a chosen field is still checked.
  config.train.learning_rate = 1e-3
  config.dataset.channels = 2
  with pytest.raises(errors.UserError, match='dataset.channels=2'):
    validate.check_config(config)
