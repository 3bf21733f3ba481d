"""Tests of aad.report: flatten, atomic JSON, category and summary reports."""

import json
import os

from matplotlib import image as mpimg
import numpy as np
import pytest

from aad import report
from aad.report import tables
from aad.runtime import atomic
from aad.report import figures

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _assert_png(path, min_bytes=5000):
  with open(path, 'rb') as f:
    data = f.read()
  assert data.startswith(PNG_MAGIC) and len(data) > min_bytes
  return mpimg.imread(path)


def test_flatten():
  nested = {'residual': {'l2': {'image_auroc': np.float32(0.5)},
                         'pixel_auroc': 1},
            'epochs': 3}
  assert tables.flatten(nested) == {'residual/l2/image_auroc': 0.5,
                                    'residual/pixel_auroc': 1.0,
                                    'epochs': 3.0}
  flat = tables.flatten(nested)
  assert tables.flatten(flat) == flat  # Idempotent on flat dicts.
  with pytest.raises(ValueError, match='twice'):
    tables.flatten({'a/b': 1, 'a': {'b': 2}})


def test_write_json_round_trip_and_atomic(tmp_path):
  path = tmp_path / 'out.json'
  obj = {'b': np.float64(0.25), 'a': [np.int64(2), np.array([1.5, 2.0])],
         'c': float('nan'), 'd': {'z': True, 'y': None}}
  atomic.write_json(str(path), obj)
  text = path.read_text()
  assert json.loads(text) == {'a': [2, [1.5, 2.0]], 'b': 0.25, 'c': None,
                              'd': {'y': None, 'z': True}}
  assert text.index('"a"') < text.index('"b"') < text.index('"c"')
  assert os.listdir(tmp_path) == ['out.json']
  # A failing write leaves the previous file intact and no temp file.
  with pytest.raises(TypeError):
    atomic.write_json(str(path), {'x': object()})
  assert json.loads(path.read_text())['b'] == 0.25
  assert os.listdir(tmp_path) == ['out.json']


def _curves(seed):
  rng = np.random.default_rng(seed)
  fpr = np.concatenate([[0.0], np.sort(rng.random(5000)), [1.0]])
  return fpr, np.sqrt(fpr)  # AUROC 2/3; more points than are drawn.


def test_write_category_report(tmp_path):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  rows = [{'input': image, 'reconstruction': image[..., :1],
           'residual': rng.random((16, 16)),
           'ground truth': np.eye(16, dtype=np.uint8)[..., None],
           figures.ROW_LABEL: f'{i:03d}.png crack 0.9'} for i in range(3)]
  del rows[1]['residual']  # A missing cell is left blank.
  metrics = {'residual': {'l2': {'image_auroc': 0.9, 'pixel_auroc': 0.8}},
             'mc_variance': {'l2': {'image_auroc': 0.7}}}
  curves = {'l2': _curves(1), 'linf': _curves(2)}
  out = tmp_path / 'bottle'
  flat = report.write_category_report(
      str(out), category='bottle', metrics=metrics,
      roc_curves={'image': curves, 'pixel': curves}, heatmap_rows=rows,
      columns=['input', 'reconstruction', 'residual', 'ground truth'],
      notes=['maps resized to 256'])
  assert sorted(os.listdir(out)) == ['heatmaps.png', 'metrics.json',
                                     'report.md', 'roc_image.png',
                                     'roc_pixel.png']
  assert json.loads((out / 'metrics.json').read_text()) == flat == {
      'residual/l2/image_auroc': 0.9, 'residual/l2/pixel_auroc': 0.8,
      'mc_variance/l2/image_auroc': 0.7}
  md = (out / 'report.md').read_text()
  assert '| scorer | image_auroc | pixel_auroc |' in md
  assert '| residual/l2 | 0.9000 | 0.8000 |' in md
  assert '| mc_variance/l2 | 0.7000 | — |' in md
  for name in ('roc_image.png', 'roc_pixel.png', 'heatmaps.png'):
    assert f']({name})' in md
  assert '- maps resized to 256' in md
  assert _assert_png(out / 'roc_image.png').shape[:2] == (500, 500)
  _assert_png(out / 'heatmaps.png')


def test_heatmap_grid_is_bounded(tmp_path):
  rows = [{'residual': np.full((8, 8), i)} for i in range(30)]
  path = tmp_path / 'grid.png'
  figures.plot_heatmap_grid(str(path), rows, ['residual'], 'many rows')
  height = _assert_png(path, min_bytes=1000).shape[0]
  assert height == 100 * (2 * figures.MAX_ROWS + 1)


def test_write_summary_report(tmp_path):
  per_category = {
      'bottle': {'res/image_auroc': 0.9, 'res/pixel_auroc': 0.8, 'only': 1},
      'carpet': {'res/image_auroc': 0.6, 'res/pixel_auroc': 0.7},
      'grid': {'res': {'image_auroc': 0.3, 'pixel_auroc': 0.9}}}
  mean = report.write_summary_report(
      str(tmp_path), per_category=per_category, title='AESc + Stain',
      notes=['seed 0'], headline_keys=['res/image_auroc', 'res/pixel_auroc'])
  assert mean == pytest.approx({'res/image_auroc': 0.6,
                                'res/pixel_auroc': 0.8})
  saved = json.loads((tmp_path / 'metrics.json').read_text())
  assert set(saved) == {
      'bottle/res/image_auroc', 'bottle/res/pixel_auroc', 'bottle/only',
      'carpet/res/image_auroc', 'carpet/res/pixel_auroc',
      'grid/res/image_auroc', 'grid/res/pixel_auroc',
      'mean/res/image_auroc', 'mean/res/pixel_auroc'}
  assert saved['mean/res/image_auroc'] == pytest.approx(0.6)
  md = (tmp_path / 'report.md').read_text()
  assert md.startswith('# AESc + Stain')
  assert '| category | res/image_auroc | res/pixel_auroc |' in md
  assert '| carpet | 0.6000 | 0.7000 |' in md
  assert '| **mean** | 0.6000 | 0.8000 |' in md
  assert '| res | 0.6000 | 0.8000 |' in md  # Full table of means.
  assert '- seed 0' in md and '[grid](grid/report.md)' in md
  assert sorted(os.listdir(tmp_path)) == ['metrics.json', 'report.md']
  with pytest.raises(ValueError, match='mean'):
    report.write_summary_report(str(tmp_path), per_category={'mean': {}},
                                title='', notes=[], headline_keys=[])


@pytest.mark.parametrize('roi', ['peel', 'none'])
def test_roi_figure_is_written_only_when_the_peel_is_on(roi, tmp_path):
  from aad import data as data_lib  # pylint: disable=g-import-not-at-top
  # A bright disk on a dark background: the peel finds the disk.
  yy, xx = np.mgrid[:40, :48]
  disk = ((yy - 20)**2 + (xx - 26)**2 < 12**2).astype(np.uint8) * 200 + 20
  images = [np.repeat(disk[..., None], 3, -1) for _ in range(5)]
  split = data_lib.Split(
      images=images, labels=np.zeros(5, np.int32),
      masks=[np.zeros((40, 48), np.uint8)] * 5, defect_types=('good',) * 5,
      names=tuple(f'{i}.png' for i in range(5)))
  prepared = data_lib._prepare(split, (16, 16), 1, roi, 2)  # pylint: disable=protected-access
  assert len(prepared.roi_previews) == (data_lib.ROI_PREVIEWS
                                        if roi == 'peel' else 0)
  out = tmp_path / 'disk'
  report.write_category_report(
      str(out), category='disk', metrics={'r': {'l2': {'image_auroc': 1.0}}},
      roc_curves={}, heatmap_rows=[], columns=[], notes=[],
      roi_previews=prepared.roi_previews)
  assert (out / 'roi.png').is_file() == (roi == 'peel')
  assert ('](roi.png)' in (out / 'report.md').read_text()) == (roi == 'peel')
  if roi == 'peel':
    _assert_png(out / 'roi.png')


def test_labelled_overlay_keeps_the_image_above_its_band():
  rng = np.random.default_rng(0)
  for h, w in ((40, 48), (200, 300)):
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    out = figures.labelled(
        image, ['residual 0.734 (normalised) >= 0.5: anomalous'], 0.052)
    # The image area is the image itself, at its own size, top left.
    np.testing.assert_array_equal(out[:h, :w], image)
    assert out.dtype == np.uint8 and out.shape[2] == 3 and out.shape[1] >= w
    band = out[h:]
    lines = (band.shape[0] - 3) // figures.BAND_LINE
    assert band.shape[0] == lines * figures.BAND_LINE + 3 and lines >= 2
    assert (band > 200).all(-1).sum() > 20  # the text
    # The colour bar runs from jet's dark blue (0) to dark red (vmax).
    assert ((band[..., 2] > 100) & (band[..., 0] < 40)).any()
    assert ((band[..., 0] > 100) & (band[..., 2] < 40)).any()
  # A wide image keeps its width, the text on one line (+ the bar).
  assert out.shape == (200 + 2 * figures.BAND_LINE + 3, 300, 3)
