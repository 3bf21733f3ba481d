"""aad.evaluate and aad.predict on a trained run: outputs, thresholds, errors."""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from aad.experiment import testing
from aad.experiment import run as pipeline
from aad import predict
from aad.data import imageio
from aad.metrics import protocol
from aad.report import figures
from configs import test as test_config
from tests.test_folder_data import make_category
from tests.test_folder_data import noise
from tests.test_folder_data import save

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A run trained for 4 steps on a small MVTec-layout folder of mixed
  image sizes (returns (workdir, category folder))."""
  root = tmp_path_factory.mktemp('data')
  category = make_category(root / 'widget', train=6)
  config = test_config.get_config()
  config.num_devices = 1
  config.dataset.name = 'folder'
  config.dataset.path = category
  config.dataset.categories = ()
  config.dataset.channels = 3
  config.dataset.data_dir = str(root / 'tfds')
  config.train.num_steps = 4
  workdir = str(tmp_path_factory.mktemp('run'))
  pipeline.train_and_evaluate(config, workdir)
  return workdir, category


def test_evaluate_reproduces_the_training_metrics(run, tmp_path):
  workdir, category = run
  before = json.loads(pathlib.Path(workdir, 'metrics.json').read_text())
  testing.evaluate_workdir(workdir, output=str(tmp_path))
  after = json.loads((tmp_path / 'metrics.json').read_text())
  assert after == before
  assert (tmp_path / 'widget' / 'report.md').is_file()
  # Another folder (here a copy under another name) is scored by the run's
  # only model: the same images give the same figures under the new name.
  shutil.copytree(category, tmp_path / 'data' / 'gadget')
  testing.evaluate_workdir(workdir, path=str(tmp_path / 'data' / 'gadget'))
  other = json.loads(pathlib.Path(workdir, 'eval', 'gadget',
                                  'metrics.json').read_text())
  assert other == {k.replace('widget/', 'gadget/'): v
                   for k, v in before.items()}


def test_predict_writes_maps_overlays_masks_and_scores(run, tmp_path):
  workdir, category = run
  new = tmp_path / 'new'
  sizes = {'a': (40, 48), 'b': (30, 70)}
  for stem, (h, w) in sizes.items():
    save(str(new / f'{stem}.png'), noise(h, w))
  save(str(new / 'c.jpg'), noise(36, 36))
  out = tmp_path / 'out'
  rows = predict.predict(workdir, [str(new), f'{category}/test/scratch/'
                                   '000.png'], str(out), mc_samples=2)
  assert len(rows) == 4
  names = sorted(os.listdir(out))
  assert names == sorted(
      [f'{s}_{k}.png' for s in ('a', 'b', 'c', '000')
       for k in ('map', 'overlay', 'mask')] + ['scores.csv', predict.MANIFEST])
  assert sorted((out / predict.MANIFEST).read_text().split()) == names[1:]
  # Maps come back at each image's own size; the overlay has the image
  # area at that size above its label band (text and colour bar).
  for stem, (h, w) in sizes.items():
    colour = np.array(Image.open(out / f'{stem}_map.png'))
    assert colour.shape == (h, w, 3)
    labelled = np.array(Image.open(out / f'{stem}_overlay.png'))
    lines, rest = divmod(labelled.shape[0] - h - 3, figures.BAND_LINE)
    assert lines >= 2 and rest == 0  # text (wrapped to fit) + colour bar
    assert labelled.shape[1] >= w and labelled.shape[2] == 3
    band = labelled[h:]
    assert (band > 200).all(-1).sum() > 20  # white text
    # The colour bar: jet's dark blue at 0.
    assert ((band[..., 2] > 100) & (band[..., 0] < 40)).any()
    mask = np.array(Image.open(out / f'{stem}_mask.png'))
    assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
  with open(out / 'scores.csv') as f:
    table = list(csv.DictReader(f))
  thresholds = json.loads(pathlib.Path(
      workdir, 'widget', 'thresholds.json').read_text())
  t = thresholds['image']['residual']
  low, high = thresholds['image_range']['residual']
  assert low <= t <= high
  # This folder has one good validation image: no spread, the fallback.
  span = high - low if high > low else 2 * abs(t)
  assert list(table[0])[:5] == ['file', 'residual_l2', 'residual_normalised',
                                'mc_variance_l2', 'mc_variance_normalised']
  assert [r['file'] for r in table] == [r['file'] for r in rows]
  for r in table:
    assert float(r['threshold']) == pytest.approx(t)
    assert r['decision'] == ('anomalous' if float(r['residual_l2']) >= t
                             else 'good')
    assert float(r['mc_variance_l2']) >= 0
    normalised = float(r['residual_normalised'])
    assert 0 <= normalised <= 1
    assert normalised == pytest.approx(
        np.clip((float(r['residual_l2']) - t) / span + 0.5, 0, 1))
    assert (normalised >= 0.5) == (r['decision'] == 'anomalous')
  # A given threshold overrides the calibrated one; predict rewrites the
  # files it wrote before.
  everything = predict.predict(workdir, [str(new)], str(out),
                               threshold=0.0, mc_samples=2)
  assert {r['decision'] for r in everything} == {'anomalous'}


def _cli(module, *args, env=None):
  return subprocess.run(
      [sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
      text=True, timeout=300, env={**os.environ, **(env or {})}, check=False)


def test_cli_errors_name_the_problem_and_keep_old_outputs(run, tmp_path):
  workdir, _ = run
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'scores.csv').write_text('old results\n')
  empty = tmp_path / 'empty'
  empty.mkdir()
  stray = tmp_path / 'stray'
  save(str(stray / 'a.png'), noise(40, 48))
  (stray / 'readme.txt').write_text('x')
  bad = tmp_path / 'bad'
  save(str(bad / 'a.png'), noise(64, 64))
  with open(bad / 'a.png', 'r+b') as f:
    f.truncate(300)
  cases = [
      (['--workdir', workdir, '--input', str(empty)], 'the folder has no '
       'images'),
      (['--workdir', workdir, '--input', str(stray)], 'readme.txt: not an '
       'image file'),
      (['--workdir', workdir, '--input', str(bad)], 'a.png: cannot decode'),
      (['--workdir', str(tmp_path), '--input', str(stray / 'a.png')],
       'config.json: not found'),
  ]
  for args, message in cases:
    with pytest.raises(imageio.DataError, match=message):
      predict.predict(args[1], [args[3]], str(out), mc_samples=2)
    assert (out / 'scores.csv').read_text() == 'old results\n'
    assert os.listdir(out) == ['scores.csv']
  # The command line turns them into a message and exit status 1.
  result = _cli('aad.predict', *cases[2][0], '--output', str(out))
  assert result.returncode == 1, result.stderr
  assert cases[2][1] in result.stderr, result.stderr
  assert (out / 'scores.csv').read_text() == 'old results\n'
  # A run whose config exists but has no checkpoint yet.
  partial = tmp_path / 'partial'
  partial.mkdir()
  (partial / 'config.json').write_text(
      pathlib.Path(workdir, 'config.json').read_text())
  result = _cli('aad.evaluate', '--workdir', str(partial))
  assert result.returncode == 1
  assert 'no <category>/checkpoints folder' in result.stderr
  assert predict.output_names(['x/good/000.png', 'x/crack/000.png',
                               'x/crack/001.jpg']) == [
                                   'good_000', 'crack_000', '001']
  with pytest.raises(imageio.DataError, match='would both write stray_a_'):
    predict.output_names([str(stray / 'a.png'), str(stray / 'a.png')])


def test_similarity_scorers_with_and_without_maps_end_to_end(run, tmp_path):
  workdir, category = run
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  config = json.loads((copy / 'config.json').read_text())
  # A map-less headline: its own score picks the examples; predict draws
  # the first scorer with a map. activation_gaussian is fitted on the
  # model's outputs of the training images.
  scorers = ['psnr', 'ssim', 'residual', 'sh', 'activation_gaussian']
  config['eval']['scorers'] = scorers
  (copy / 'config.json').write_text(json.dumps(config))
  testing.evaluate_workdir(str(copy))
  metrics = json.loads((copy / 'widget' / 'metrics.json').read_text())
  assert 'psnr/own/image_auroc' in metrics
  assert 'psnr/pixel_auroc' not in metrics and 'ssim/pixel_auroc' in metrics
  assert 'ssim/own/image_auroc' in metrics
  # Fitted on the model's activations of the training images, saved.
  assert 'activation_gaussian/own/image_auroc' in metrics
  assert (copy / 'widget' / 'scorers.msgpack').is_file()
  text = (copy / 'widget' / 'report.md').read_text()
  ranking = text.split('## Ranking')[1].split('##')[0]
  assert all(f'| {n} ' in ranking for n in scorers)
  assert '## Ranking' in (copy / 'report.md').read_text()
  thresholds = json.loads((copy / 'widget' / 'thresholds.json').read_text())
  assert set(thresholds['image']) == set(scorers)
  assert set(thresholds['pixel']) == {'ssim', 'residual'}
  assert set(thresholds['image_range']) == set(scorers)
  # A run evaluated before image_range was recorded still predicts, its
  # normalised scores on the documented fallback span (2 |threshold|).
  del thresholds['image_range']
  (copy / 'widget' / 'thresholds.json').write_text(json.dumps(thresholds))
  rows = predict.predict(str(copy), [f'{category}/test/scratch/000.png'],
                         str(tmp_path / 'out'))
  assert set(rows[0]) == {'file', 'ssim_l2', 'residual_l2', 'psnr_own',
                          'sh_own', 'activation_gaussian_own', 'decision'} | {
                              f'{s}_normalised' for s in scorers}
  for s in scorers:
    raw = rows[0].get(f'{s}_l2', rows[0].get(f'{s}_own'))
    t = thresholds['image'][s]
    assert rows[0][f'{s}_normalised'] == pytest.approx(
        protocol.normalise(raw, t, 2 * abs(t) or 1.0))
  assert (tmp_path / 'out' / '000_map.png').is_file()
