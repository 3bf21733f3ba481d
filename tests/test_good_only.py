"""Folders of good images only (flat, or train/good without test/), and
training from Python with aad.fit."""

import json
import logging
import os
import pathlib

import numpy as np
from PIL import Image
import pytest
from scipy import ndimage

import aad
from aad import data
from aad import predict
from aad import summary
from aad.data import folder
from aad.experiment import run as pipeline
from aad.experiment import testing
from aad.runtime import errors
from configs import test as test_config

rng = np.random.default_rng(0)


def smooth_image(h=40, w=48):
  """Random smooth RGB texture (blurred noise), uint8."""
  noise = rng.normal(size=(h, w, 3))
  blurred = ndimage.gaussian_filter(noise, (2, 2, 0))
  blurred = (blurred - blurred.min()) / (np.ptp(blurred) + 1e-9)
  return (blurred * 255).astype(np.uint8)


def good_folder(path, count=20):
  os.makedirs(path, exist_ok=True)
  for i in range(count):
    Image.fromarray(smooth_image()).save(os.path.join(path, f'{i:03d}.png'))
  return str(path)


def tiny_config(path, data_dir):
  config = test_config.get_config()
  config.num_devices = 1
  config.dataset.name = 'folder'
  config.dataset.path = str(path)
  config.dataset.categories = ()
  config.dataset.channels = 3
  config.dataset.data_dir = str(data_dir)
  config.train.num_steps = 4
  return config


@pytest.fixture(scope='module')
def flat_run(tmp_path_factory):
  """A run trained 4 steps on a flat folder of 20 good images."""
  root = tmp_path_factory.mktemp('good')
  images = good_folder(root / 'parts')
  workdir = str(tmp_path_factory.mktemp('runs') / 'flat')
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  logging.getLogger('absl').addHandler(handler)
  try:
    pipeline.train_and_evaluate(tiny_config(images, root / 'tfds'), workdir)
  finally:
    logging.getLogger('absl').removeHandler(handler)
  return workdir, images, [r.getMessage() for r in records]


def test_scan_good_only_layouts(tmp_path):
  flat = good_folder(tmp_path / 'flat', 3)
  train, test = folder.scan(flat)
  assert [r.name for r in train] == ['good/000.png', 'good/001.png',
                                     'good/002.png'] and test == []
  assert folder.categories(flat) == ('flat',)
  nested = tmp_path / 'nested'
  good_folder(nested / 'train' / 'good', 3)
  train, test = folder.scan(str(nested))
  assert len(train) == 3 and test == []
  assert folder.categories(str(tmp_path)) == ('nested',)
  # A flat folder with a stray file still names it.
  (tmp_path / 'flat' / 'notes.txt').write_text('x')
  with pytest.raises(data.DataError, match='notes.txt: not an image'):
    folder.scan(flat)


def test_good_only_run_says_so_and_writes_thresholds(flat_run):
  workdir, images, messages = flat_run
  expected = (f'no defective test images in {images}: trained and '
              'calibrated the threshold on 4 good validation images; test '
              'metrics need test/<defect>/ folders with masks')
  assert any(m.startswith(expected) for m in messages), messages
  cat = pathlib.Path(workdir, 'parts')
  thresholds = json.loads((cat / 'thresholds.json').read_text())
  assert set(thresholds['image']) == set(thresholds['pixel'])
  assert {'residual', 'mc_variance'} <= set(thresholds['image'])
  assert 'of 4 good validation images' in thresholds['image_rule']
  metrics = json.loads((cat / 'metrics.json').read_text())
  assert metrics['test/images'] == 0 and metrics['val/good_images'] == 4
  # Nothing that reads as a test metric.
  assert not [k for k in metrics if 'auroc' in k or 'threshold' in k
              or 'pixel' in k or 'f1' in k]
  assert expected in (cat / 'report.md').read_text()
  report = pathlib.Path(workdir, 'report.md').read_text()
  assert 'No test metrics for parts' in report
  # The table of runs lists it without metrics.
  header, rows = summary.gather(os.path.dirname(workdir))
  assert rows and rows[0][header.index('status')] == 'no test metrics'
  # aad.evaluate again: the same files.
  testing.evaluate_workdir(workdir)
  assert json.loads((cat / 'metrics.json').read_text()) == metrics
  assert json.loads((cat / 'thresholds.json').read_text()) == thresholds


def test_predict_scores_new_images_of_a_good_only_run(flat_run, tmp_path):
  workdir, _, _ = flat_run
  new = tmp_path / 'new'
  new.mkdir()
  for stem in ('a', 'b'):
    Image.fromarray(smooth_image(36, 50)).save(new / f'{stem}.png')
  rows = predict.predict(workdir, [str(new)], str(tmp_path / 'out'),
                         mc_samples=2)
  assert len(rows) == 2
  assert (tmp_path / 'out' / 'scores.csv').is_file()
  assert (tmp_path / 'out' / 'a_map.png').is_file()


def test_fit_trains_a_train_good_folder_and_returns_the_detector(tmp_path):
  root = tmp_path / 'line'
  good_folder(root / 'train' / 'good')
  workdir = str(tmp_path / 'run')
  detector = aad.fit('test', workdir, overrides={
      'num_devices': 1, 'dataset.name': 'folder',
      'dataset.path': str(root), 'dataset.categories': (),
      'dataset.channels': 3, 'dataset.data_dir': str(tmp_path / 'tfds')},
                     **{'train.num_steps': 4})
  assert isinstance(detector, aad.Detector)
  assert detector.category == 'line'
  assert 'residual' in detector.thresholds['image']
  prediction = detector.predict([smooth_image(), smooth_image(30, 30)])
  assert prediction.scores['residual'].shape == (2,)
  assert prediction.maps['residual'][1].shape == (30, 30)
  assert json.loads(pathlib.Path(workdir, 'line', 'metrics.json').read_text())[
      'test/images'] == 0


def test_fit_refuses_bad_configs_in_one_line(tmp_path):
  with pytest.raises(errors.UserError, match="no field 'train.num_stepz'"):
    aad.fit('test', str(tmp_path / 'a'), **{'train.num_stepz': 4})
  with pytest.raises(errors.UserError, match="no config named 'nope'"):
    aad.fit('nope', str(tmp_path / 'b'))
  with pytest.raises(errors.UserError, match='train.num_steps'):
    aad.fit(test_config.get_config(), str(tmp_path / 'c'),
            overrides={'train.num_steps': 0})
  assert not os.path.exists(tmp_path / 'c')
