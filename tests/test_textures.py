"""Tests of the embedded textures dataset, its loader and preprocessing."""

import itertools

import numpy as np
import pytest

from aad import data
from aad.data import preprocess
from aad.data import textures

S = textures.CROP_SIZE
SPLITS = ('train', 'val', 'test')


@pytest.fixture(scope='session')
def brick_dirs(tmp_path_factory):
  """'brick' prepared twice, into two directories (about 3 s after import)."""
  return [str(tmp_path_factory.mktemp(f'tfds{i}')) for i in range(2)]


@pytest.fixture(scope='session')
def brick(brick_dirs):
  return data.load('textures', 'brick', image_size=S, channels=1,
                   data_dir=brick_dirs[0])


def test_categories_registered():
  assert data.CATEGORIES['textures'] == textures.CATEGORIES


def test_split_sizes_dtypes_and_shapes(brick):
  for name, n in (('train', 512), ('val', 32), ('test', 80)):
    split = getattr(brick, name)
    assert len(split) == n == textures.split_size(name)
    assert split.images.shape == (n, S, S, 1)
    assert split.images.dtype == np.uint8
    assert split.labels.shape == (n,) and split.labels.dtype == np.int32
    assert split.masks.shape == (n, S, S) and split.masks.dtype == np.uint8
    assert set(np.unique(split.masks)) <= {0, 1}
    assert len(split.defect_types) == len(split.names) == n
    assert len(set(split.names)) == n
  assert brick.category == 'brick'


def test_masks_non_empty_exactly_for_defects(brick):
  for split in (brick.train, brick.val, brick.test):
    defective = split.masks.any(axis=(1, 2))
    np.testing.assert_array_equal(defective, split.labels == 1)
    np.testing.assert_array_equal(
        split.labels, [t != 'good' for t in split.defect_types])
  assert not brick.train.labels.any() and not brick.val.labels.any()


def test_defect_families_present(brick):
  counts = {t: brick.test.defect_types.count(t)
            for t in set(brick.test.defect_types)}
  assert counts == {'good': 40, 'foreign': 10, 'crack': 10, 'hole': 10,
                    'glare': 10}


def test_loaded_examples_equal_the_generator(brick):
  # PNG is lossless: what was generated is what is read back, in order.
  for name in SPLITS:
    split = getattr(brick, name)
    for i, ex in enumerate(textures.examples('brick', name)):
      np.testing.assert_array_equal(split.images[i, ..., 0], ex['image'])
      np.testing.assert_array_equal(split.masks[i], ex['mask'])
      assert split.names[i] == ex['name']


def test_prepare_is_deterministic(brick, brick_dirs):
  again = data.load('textures', 'brick', image_size=S, channels=1,
                    data_dir=brick_dirs[1])
  for name in SPLITS:
    a, b = getattr(brick, name), getattr(again, name)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.names == b.names and a.defect_types == b.defect_types


@pytest.mark.parametrize('category', textures.CATEGORIES)
def test_crops_lie_in_disjoint_regions(category):
  boxes = {s: textures.crop_boxes(category, s) for s in SPLITS}
  for split, b in boxes.items():
    r0, r1, c0, c1 = textures.REGIONS[split]
    assert (b[:, 2] - b[:, 0] == S).all() and (b[:, 3] - b[:, 1] == S).all()
    assert (b[:, 0] >= r0).all() and (b[:, 2] <= r1).all()
    assert (b[:, 1] >= c0).all() and (b[:, 3] <= c1).all()
  for a, b in itertools.combinations(SPLITS, 2):
    x, y = boxes[a][:, None], boxes[b][None]
    overlap = ((np.minimum(x[..., 2], y[..., 2]) >
                np.maximum(x[..., 0], y[..., 0])) &
               (np.minimum(x[..., 3], y[..., 3]) >
                np.maximum(x[..., 1], y[..., 1])))
    assert not overlap.any(), (a, b)


@pytest.mark.parametrize('category', textures.CATEGORIES)
def test_mask_marks_the_changed_pixels(category):
  photo = textures.photograph(category)
  seen = set()
  for ex in textures.examples(category, 'test'):
    box, mask = ex['box'], ex['mask']
    np.testing.assert_array_equal(
        ex['clean'], photo[box[0]:box[2], box[1]:box[3]])
    if ex['defect_type'] == 'good':
      assert not mask.any()
      np.testing.assert_array_equal(ex['image'], ex['clean'])
      continue
    seen.add(ex['defect_type'])
    # Untouched outside; inside, (nearly) every pixel and a visible amount.
    np.testing.assert_array_equal(ex['image'][~mask], ex['clean'][~mask])
    diff = np.abs(ex['image'].astype(int) - ex['clean'])[mask]
    assert (diff > 0).mean() > 0.95, ex['name']
    assert diff.mean() > 8, ex['name']
    assert 0.01 <= mask.mean() <= 0.08, ex['name']
  assert seen == set(textures.DEFECT_TYPES)


def test_generation_is_pure():
  a = list(textures.examples('gravel', 'test'))[-1]
  b = list(textures.examples('gravel', 'test'))[-1]
  np.testing.assert_array_equal(a['image'], b['image'])
  np.testing.assert_array_equal(a['mask'], b['mask'])


def test_load_resizes_and_converts(brick, brick_dirs):
  small = data.load('textures', 'brick', image_size=64, channels=3,
                    data_dir=brick_dirs[0])
  assert small.test.images.shape == (80, 64, 64, 3)
  assert small.test.masks.shape == (80, 64, 64)
  assert small.train.images.dtype == np.uint8
  # Grey stays grey, and every defect keeps some mask pixels.
  np.testing.assert_array_equal(small.test.images[..., 0],
                                small.test.images[..., 2])
  np.testing.assert_array_equal(small.test.masks.any(axis=(1, 2)),
                                brick.test.labels == 1)


def test_resize_images_hand_checked():
  images = np.full((2, 8, 8, 1), 77, np.uint8)
  np.testing.assert_array_equal(preprocess.resize_images(images, 4),
                                np.full((2, 4, 4, 1), 77))
  assert preprocess.resize_images(images, 8) is images
  # A left-dark, right-bright image stays so after a 2x shrink, and
  # anti-aliasing blends the two columns next to the edge.
  step = np.zeros((1, 8, 8, 3), np.uint8)
  step[:, :, 4:] = 200
  out = preprocess.resize_images(step, 4)[0, 0, :, 0]
  assert out[0] == 0 and out[-1] == 200 and 0 < out[1] < out[2] < 200


def test_resize_masks_is_nearest_and_binary():
  mask = np.array([[[1, 0], [0, 0]]], np.uint8)
  np.testing.assert_array_equal(
      preprocess.resize_masks(mask, 4)[0],
      [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  big = np.kron(np.array([[0, 1], [1, 0]]), np.ones((3, 3)))[None] * 255
  np.testing.assert_array_equal(preprocess.resize_masks(big, 2)[0],
                                [[0, 1], [1, 0]])


def test_convert_channels_hand_checked():
  grey = np.array([[[[10]]]], np.uint8)
  np.testing.assert_array_equal(preprocess.convert_channels(grey, 3),
                                [[[[10, 10, 10]]]])
  rgb = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]]],
                 np.uint8)
  # round(0.299 * 255) = 76, round(0.587 * 255) = 150, round(0.114 * 255) = 29.
  np.testing.assert_array_equal(
      preprocess.convert_channels(rgb, 1)[..., 0], [[[76, 150, 29, 255]]])
  with pytest.raises(ValueError, match='4 channel'):
    preprocess.convert_channels(np.zeros((1, 2, 2, 4), np.uint8), 1)


def test_unknown_names_are_reported():
  with pytest.raises(ValueError, match=r"'marble'.*brick, grass, gravel"):
    data.load('textures', 'marble', image_size=S, channels=1)
  with pytest.raises(ValueError, match=r"'mvtec'.*folder, mvtec_ad, "
                     'textures'):
    data.load('mvtec', 'bottle', image_size=S, channels=1)
  with pytest.raises(ValueError, match="'marble'"):
    textures.crop_boxes('marble', 'train')
  with pytest.raises(ValueError, match='channels must be 1 or 3'):
    data.load('textures', 'brick', image_size=S, channels=2)
