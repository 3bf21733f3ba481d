"""MVTec-layout folders: file formats, sizes, masks, preprocessing, errors."""

import os

import jax
import numpy as np
from PIL import Image
import pytest
import tifffile

from aad import data
from aad.data import tiling
from aad.data import folder
from aad.data import imageio
from aad.data import preprocess

rng = np.random.default_rng(0)


def save(path, array, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if path.endswith(('.tif', '.tiff')):
    tifffile.imwrite(path, array)
  else:
    Image.fromarray(array).save(path, **kwargs)
  return path


def noise(h, w, c=3):
  return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


def make_category(root, *, train=4, missing_mask=False, sizes=None):
  """A small category: RGB PNG train images of `sizes` (mixed by default),
  a good and a 'scratch' test image with its mask."""
  sizes = sizes or [(40, 48), (36, 36), (40, 48), (44, 30)]
  for i in range(train):
    h, w = sizes[i % len(sizes)]
    save(f'{root}/train/good/{i:03d}.png', noise(h, w))
  save(f'{root}/test/good/000.png', noise(40, 48))
  save(f'{root}/test/scratch/000.png', noise(40, 48))
  if not missing_mask:
    mask = np.zeros((40, 48), np.uint8)
    mask[10:20, 5:9] = 255
    save(f'{root}/ground_truth/scratch/000_mask.png', mask)
  return str(root)


# --- file formats -----------------------------------------------------------


def test_read_image_formats_exactly(tmp_path):
  rgb = noise(9, 13)
  grey = noise(9, 13, 1)[..., 0]
  sixteen = (np.arange(9 * 13).reshape(9, 13) * 500).astype(np.uint16)
  rgba = np.concatenate([rgb, noise(9, 13, 1)], -1)
  rgb16 = (rgb.astype(np.uint16) * 257)
  cases = {
      'rgb.png': (rgb, rgb),
      'rgb.bmp': (rgb, rgb),
      'rgb.tif': (rgb, rgb),
      'grey.png': (grey, grey[..., None]),
      'grey.tiff': (grey, grey[..., None]),
      'rgba.png': (rgba, rgb),  # alpha dropped, colour kept
      # 16 bit: v / 257 rounded (65535 -> 255).
      'grey16.png': (sixteen, np.round(sixteen / 257).astype(
          np.uint8)[..., None]),
      'grey16.tif': (sixteen, np.round(sixteen / 257).astype(
          np.uint8)[..., None]),
      'rgb16.tif': (rgb16, rgb),
  }
  for name, (stored, expected) in cases.items():
    got = imageio.read_image(save(str(tmp_path / name), stored))
    assert got.dtype == np.uint8, name
    np.testing.assert_array_equal(got, expected, err_msg=name)
  jpeg = imageio.read_image(save(str(tmp_path / 'rgb.jpg'), rgb, quality=95))
  assert jpeg.shape == rgb.shape and jpeg.dtype == np.uint8
  # JPEG is lossy; a smooth image survives it closely.
  smooth = np.broadcast_to(np.linspace(0, 255, 13).astype(np.uint8)[None, :,
                                                                   None],
                           (9, 13, 3)).copy()
  got = imageio.read_image(save(str(tmp_path / 's.jpg'), smooth, quality=95))
  assert np.abs(got.astype(int) - smooth).max() <= 8


def test_read_image_errors_name_the_file(tmp_path):
  good = save(str(tmp_path / 'a.png'), noise(64, 64))
  truncated = str(tmp_path / 'cut.png')
  with open(good, 'rb') as f, open(truncated, 'wb') as g:
    g.write(f.read()[:300])
  with pytest.raises(imageio.DataError, match='cut.png.*truncated'):
    imageio.read_image(truncated)
  fake = tmp_path / 'fake.png'
  fake.write_text('not an image')
  with pytest.raises(imageio.DataError, match='fake.png.*not an image'):
    imageio.read_image(str(fake))
  with pytest.raises(imageio.DataError, match='missing.png: no such file'):
    imageio.read_image(str(tmp_path / 'missing.png'))
  bad_tiff = tmp_path / 'bad.tif'
  bad_tiff.write_bytes(b'II*\x00garbage')
  with pytest.raises(imageio.DataError, match='bad.tif'):
    imageio.read_image(str(bad_tiff))


# --- layout scanning ----------------------------------------------------------


def test_scan_lists_images_and_masks(tmp_path):
  root = make_category(tmp_path / 'cat')
  train, test = folder.scan(root)
  assert [r.name for r in train] == [f'good/{i:03d}.png' for i in range(4)]
  assert [(r.name, r.label, r.defect_type) for r in test] == [
      ('good/000.png', 0, 'good'), ('scratch/000.png', 1, 'scratch')]
  assert test[1].mask_path.endswith('ground_truth/scratch/000_mask.png')
  assert folder.categories(root) == ('cat',)
  assert folder.categories(str(tmp_path)) == ('cat',)


@pytest.mark.parametrize('breakage, message', [
    ('no_train', r'train/good.*training images go in'),
    ('empty_train', r'train/good: no training images'),
    ('stray_file', r'notes.txt: not an image file.*Move it out'),
    # An empty test/ folder is a mistake; none at all is a good-only
    # category (tests/test_good_only.py).
    ('empty_test', r'test: no test images in it'),
    ('missing_mask', r'scratch/000.png: defective test image without a '
                     r'ground-truth mask.*000_mask.png.*image_level'),
])
def test_scan_errors_name_the_problem(tmp_path, breakage, message):
  root = make_category(tmp_path / 'cat',
                       missing_mask=breakage == 'missing_mask')
  if breakage in ('no_train', 'empty_train'):
    for name in os.listdir(f'{root}/train/good'):
      os.remove(f'{root}/train/good/{name}')
    if breakage == 'no_train':
      os.rmdir(f'{root}/train/good')
  elif breakage == 'stray_file':
    (tmp_path / 'cat/train/good/notes.txt').write_text('x')
  elif breakage == 'empty_test':
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(f'{root}/test')
    os.makedirs(f'{root}/test/good')
  with pytest.raises(imageio.DataError, match=message):
    folder.scan(root)
  with pytest.raises(imageio.DataError, match='no such folder'):
    folder.categories(str(tmp_path / 'nowhere'))


# --- loading through the tfds builder ----------------------------------------


def load(root, tmp_path, **kwargs):
  options = dict(image_size=32, channels=3, path=str(root),
                 data_dir=str(tmp_path / 'tfds'))
  options.update(kwargs)
  return data.load('folder', os.path.basename(str(root)), **options)


def test_folder_of_mixed_formats_and_sizes(tmp_path):
  root = make_category(tmp_path / 'mixed')
  # Replace two training images by other formats, sizes and channel counts.
  os.remove(f'{root}/train/good/001.png')
  os.remove(f'{root}/train/good/003.png')
  grey16 = (rng.integers(0, 65536, (30, 50))).astype(np.uint16)
  save(f'{root}/train/good/001.tif', grey16)
  save(f'{root}/train/good/003.jpg', noise(52, 20))
  save(f'{root}/train/good/004.png', np.concatenate(
      [noise(33, 33), np.full((33, 33, 1), 7, np.uint8)], -1))  # RGBA
  ds = load(root, tmp_path, image_size=(24, 40), val_fraction=0.4)
  assert ds.train.images.shape == (3, 24, 40, 3)
  assert ds.val.images.shape == (2, 24, 40, 3)
  # The first 40% by name is validation (as Keras' validation_split).
  assert ds.val.names == ('good/000.png', 'good/001.tif')
  assert ds.train.names == ('good/002.png', 'good/003.jpg', 'good/004.png')
  assert ds.test.labels.tolist() == [0, 1]
  assert ds.test.masks.shape == (2, 24, 40)
  # The mask (rows 10-19 of 40, cols 5-8 of 48) resized nearest.
  expected = preprocess.resize_mask(
      np.pad(np.ones((10, 4)), ((10, 20), (5, 39))), (24, 40))
  np.testing.assert_array_equal(ds.test.masks[1], expected)
  np.testing.assert_array_equal(ds.test.native_masks[1][10:20, 5:9], 1)
  assert ds.test.native_masks[1].sum() == 40
  # The 16-bit grey image went through v/257, grey -> RGB -> resize.
  want = preprocess.resize_image(
      np.repeat(np.round(grey16 / 257).astype(np.uint8)[..., None], 3, -1),
      (24, 40))
  np.testing.assert_array_equal(ds.val.images[1], want)
  grey = load(root, tmp_path, image_size=(24, 40),
              val_fraction=0.4, channels=1)
  # RGB-replicated grey images come back exactly in grayscale mode.
  np.testing.assert_array_equal(grey.val.images[1], want[..., :1])


def test_missing_masks_error_or_image_level(tmp_path):
  root = make_category(tmp_path / 'nomask', missing_mask=True)
  with pytest.raises(imageio.DataError, match='without a ground-truth mask'):
    load(root, tmp_path)
  ds = load(root, tmp_path, missing_masks='image_level')
  assert ds.test.labels.tolist() == [0, 1]
  assert ds.test.has_masks.tolist() == [True, False]
  assert ds.test.masks.sum() == 0


def test_mask_of_the_wrong_size_is_named(tmp_path):
  root = make_category(tmp_path / 'badmask')
  save(f'{root}/ground_truth/scratch/000_mask.png',
       np.zeros((20, 20), np.uint8))
  with pytest.raises(imageio.DataError,
                     match=r'000_mask.png: mask of size 20x20 for image .*'
                     r'000.png of size 48x40'):
    load(root, tmp_path)


def test_truncated_training_image_stops_preparation(tmp_path):
  root = make_category(tmp_path / 'trunc', sizes=[(64, 64)])
  path = f'{root}/train/good/002.png'
  with open(path, 'rb') as f:
    head = f.read()[:400]
  with open(path, 'wb') as f:
    f.write(head)
  with pytest.raises(imageio.DataError, match='002.png.*truncated'):
    load(root, tmp_path)
  # Nothing half-prepared is left to be read later.
  assert not list((tmp_path / 'tfds').glob('aad_folder/*/*/dataset_info.json'))


def test_changed_folder_is_prepared_again(tmp_path):
  root = make_category(tmp_path / 'grow')
  assert len(load(root, tmp_path).train.images) == 3
  save(f'{root}/train/good/009.png', noise(40, 48))
  ds = load(root, tmp_path)
  assert len(ds.train.images) + len(ds.val.images) == 5


def test_mvtec_ad_without_download_explains_what_to_do(tmp_path):
  with pytest.raises(imageio.DataError,
                     match=r'(?s)mvtec_anomaly_detection.tar.xz.*mvtec.com'):
    data.load('mvtec_ad', 'bottle', image_size=32, channels=3,
              data_dir=str(tmp_path))


def test_mvtec_ad_reads_an_extracted_manual_folder(tmp_path):
  make_category(tmp_path / 'manual' / 'bottle')
  ds = data.load('mvtec_ad', 'bottle', image_size=32, channels=3,
                 data_dir=str(tmp_path / 'tfds'),
                 manual_dir=str(tmp_path / 'manual'))
  assert len(ds.train.images) == 3 and len(ds.test.images) == 2
  assert ds.test.masks[1].sum() > 0


# --- preprocessing -------------------------------------------------------------


def test_roi_peel_on_a_disk():
  yy, xx = np.mgrid[:100, :120]
  disk = (yy - 50) ** 2 + (xx - 70) ** 2 <= 30 ** 2
  image = np.where(disk, 200, 20).astype(np.uint8)[..., None]
  roi = preprocess.find_roi(image, margin=5)
  # Eroded by 5 px: a disk of radius 25 (distance > 5 from the outside).
  assert roi.box == (25, 76, 45, 96)
  cropped = preprocess.crop_image(image, roi)
  assert cropped.shape == (51, 51, 1)
  assert set(np.unique(cropped)) == {0, 200}  # outside the object -> 0
  # A dark object on a bright background is found too.
  roi_dark = preprocess.find_roi(255 - image, margin=5)
  assert roi_dark.box == roi.box
  assert preprocess.find_roi(image, margin=40) is None
  pasted = preprocess.paste_map(np.ones((8, 8)), (100, 120), roi)
  assert pasted.shape == (100, 120) and pasted[50, 70] == 1
  assert pasted[5, 5] == 0 and pasted[roi.box[0], roi.box[2]] == 0


def test_tiles_cover_and_stitch_back():
  assert tiling.positions(10, 4, 3) == [0, 3, 6]
  assert tiling.positions(11, 4, 3) == [0, 3, 6, 7]
  images = rng.normal(size=(2, 11, 13, 3)).astype(np.float32)
  tiles = tiling.extract(images, 4, 3)
  assert tiles.shape == (2 * 4 * 4, 4, 4, 3)  # starts 0 3 6 7 x 0 3 6 9
  np.testing.assert_allclose(tiling.stitch(tiles, (11, 13), 3), images,
                             rtol=1e-6)
  # Overlaps are averaged: tiles of constant t give, per pixel, the mean
  # of the t of the tiles that cover it.
  t = np.arange(len(tiles) // 2, dtype=np.float32)
  const = np.broadcast_to(np.concatenate([t, t])[:, None, None],
                          (len(tiles), 4, 4))
  out = tiling.stitch(const, (11, 13), 3)
  # Pixel (0, 0) is only in tile 0; pixel (3, 3) in tiles (0,0), (0,1),
  # (1,0), (1,1) of the 4x4 grid: indices 0, 1, 4, 5.
  assert out[0, 0, 0] == 0 and out[1, 3, 3] == np.mean([0, 1, 4, 5])
  with pytest.raises(ValueError, match='patch size 12 exceeds'):
    tiling.positions(10, 12, 3)


def test_mvtec_ad_reads_the_official_archive(tmp_path):
  import tarfile  # pylint: disable=g-import-not-at-top
  make_category(tmp_path / 'src' / 'screw')
  manual = tmp_path / 'manual'
  manual.mkdir()
  with tarfile.open(manual / 'mvtec_anomaly_detection.tar.xz', 'w:xz') as t:
    t.add(tmp_path / 'src' / 'screw', arcname='screw')
  ds = data.load('mvtec_ad', 'screw', image_size=32, channels=1,
                 data_dir=str(tmp_path / 'tfds'), manual_dir=str(manual))
  assert ds.train.images.shape == (3, 32, 32, 1)
  assert ds.test.defect_types == ('good', 'scratch')


def test_preparing_a_folder_leaves_no_temporary_folder(tmp_path,
                                                        monkeypatch):
  # tfds's builders used to leave an empty /tmp/tmp*tfds folder each time
  # they were made for an unprepared dataset (aad/data/local_info.py).
  import tempfile  # pylint: disable=g-import-not-at-top
  scratch = tmp_path / 'tmp'
  scratch.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
  make_category(tmp_path / 'parts' / 'screw')
  ds = data.load('folder', 'screw', image_size=32, channels=3,
                 data_dir=str(tmp_path / 'tfds'),
                 path=str(tmp_path / 'parts'))
  assert len(ds.test) == 2
  assert os.listdir(scratch) == []


def test_stitch_weights_tiles_by_their_window():
  # Two tiles of 4 px along a 6 px row, stride 2: pixels 2-3 are covered
  # by both. Tile 0 is all 1, tile 1 all 5.
  tiles = np.stack([np.ones((4, 4)), 5 * np.ones((4, 4))])[..., None]
  tiles = tiles.astype(np.float32)
  plain = tiling.stitch(tiles, (4, 6), 2)
  np.testing.assert_allclose(plain[0, 0, :, 0], [1, 1, 3, 3, 5, 5])
  # margin 2: ramp min(1, min(i + .5, 3.5 - i) / 2) = .25 .75 .75 .25 per
  # axis; the weights of a row's columns are the ramp times the same row
  # weight, which cancels. Pixel 2: tile 0's column 2 (.75), tile 1's
  # column 0 (.25): (.75 * 1 + .25 * 5) / 1 = 2; pixel 3: (.25 + .75 * 5).
  weighted = tiling.stitch(tiles, (4, 6), 2, margin=2.0)
  np.testing.assert_allclose(weighted[0, 0, :, 0], [1, 1, 2, 4, 5, 5],
                             rtol=1e-6)
  np.testing.assert_allclose(tiling.window(4, 2.0)[0],
                             np.array([.25, .75, .75, .25]) * .25)
  # The same on jax arrays (the exported detector stitches inside jit).
  np.testing.assert_allclose(
      jax.jit(lambda t: tiling.stitch(t, (4, 6), 2, margin=2.0))(tiles),
      weighted, rtol=1e-6)
  # A constant map stays constant, margin or not.
  np.testing.assert_allclose(
      tiling.stitch(np.full((4, 4, 4, 1), 7, np.float32), (6, 6), 2,
                    margin=1.5), 7, rtol=1e-6)
