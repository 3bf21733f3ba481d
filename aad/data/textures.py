"""The embedded default dataset: planted defects in scikit-image textures.

A small anomaly-detection benchmark that needs no download. Each category is
one of scikit-image's bundled 512x512 grayscale texture photographs (brick,
grass, gravel). Crops are cut from three disjoint regions of the photograph:

  train  rows   0..191, cols   0..511   defect-free crops
  val    rows 192..319, cols   0..511   defect-free crops (validation PSNR,
                                        threshold calibration)
  test   rows 320..511, cols   0..511   defect-free and defective crops

The val strip lies between train and test so that its statistics match
theirs (a right-hand strip of brick had 20% less contrast than the rest,
which put every calibrated threshold below the good test images).

Crops may overlap inside a region, never across regions. Half of the test
crops receive one planted defect; its mask marks exactly the pixels the defect
rewrote (compositing is hard-edged, so every pixel outside the mask equals the
clean crop; about 1% of the pixels inside keep their value by coincidence).
The defect families differ on purpose from the synthetic training corruptions
(uniform grey elliptic stains, gaussian noise, line/sine scratches, disks), so
the benchmark measures generalisation rather than recall of the noise model:
every family has an irregular shape and keeps (part of) the texture's own
structure. They are local changes of material or lighting, which the
photographs' own wide grey-level range hides from a per-pixel test ("darker
than the average image") but which stand out against their surroundings. A
defect covers 1.8-4.3% (crack) or 2.3-6.5% (the others) of the crop:

  foreign  a patch of another texture photograph (zoomed out 1-2x, brick
           2.5-4x, rotated by a multiple of 90 degrees) with the crop's
           standard deviation and a mean shifted by 1-1.5 of them (a
           different material), inside an irregular blob
  crack    a dark branching random-walk polyline 3-5 px wide and
           70-160 px long in all, with 1-2 side branches; grey levels
           times 0.2-0.35
  hole     an irregular blob at 85-100% of the crop's 1st-percentile grey
           level (a pit in shadow), keeping 10-20% of the local texture
           contrast
  glare    an irregular blob at or just above the crop's 99th-percentile
           grey level (a specular highlight), keeping 10-20% of the local
           texture contrast

Blobs are a smoothed random field on a radial bump, thresholded to the wanted
area (2.5-6.5% of the crop), so their outlines are lumpy, not elliptic.
Everything is deterministic from `SEED`. This is a demo benchmark, not MVTec
AD: its numbers are not comparable with published MVTec results.
"""

from __future__ import annotations

import functools
from typing import Any, Iterator

from etils import epath
import numpy as np
from scipy import ndimage
import skimage.data
import skimage.draw
import tensorflow_datasets as tfds

from aad.data import local_info
from aad.runtime import logs

CROP_SIZE = 128  # S: crops are S x S x 1 uint8.
SEED = 20200113  # Root of every random stream in this module.
CATEGORIES = ('brick', 'grass', 'gravel')
DEFECT_TYPES = ('foreign', 'crack', 'hole', 'glare')
GOOD = 'good'

# Crops per split. The test split has NUM_TEST_GOOD defect-free crops
# followed by NUM_TEST_PER_DEFECT crops of each family in DEFECT_TYPES order.
NUM_TRAIN = 512
NUM_VAL = 32
NUM_TEST_GOOD = 40
NUM_TEST_PER_DEFECT = 10

# (row_start, row_stop, col_start, col_stop) of each split's region of the
# 512x512 photograph; every crop of the split lies fully inside it.
REGIONS = {
    'train': (0, 192, 0, 512),
    'val': (192, 320, 0, 512),
    'test': (320, 512, 0, 512),
}

# Independent random streams, so that changing one split's size leaves the
# other splits unchanged.
_STREAMS = {'train': 0, 'val': 1, 'test': 2, 'defect': 3}


def split_size(split: str) -> int:
  """Returns the number of examples in `split`."""
  if split not in REGIONS:
    raise ValueError(f'Unknown split {split!r}; choose one of '
                     f'{", ".join(REGIONS)}.')
  return {
      'train': NUM_TRAIN,
      'val': NUM_VAL,
      'test': NUM_TEST_GOOD + NUM_TEST_PER_DEFECT * len(DEFECT_TYPES),
  }[split]


def defect_types(split: str) -> tuple[str, ...]:
  """Returns the defect type ('good' or a family) of each example, in order."""
  if split != 'test':
    return (GOOD,) * split_size(split)
  return (GOOD,) * NUM_TEST_GOOD + tuple(
      t for t in DEFECT_TYPES for _ in range(NUM_TEST_PER_DEFECT))


def _rng(category: str, stream: str, *extra: int) -> np.random.Generator:
  return np.random.default_rng(
      [SEED, CATEGORIES.index(category), _STREAMS[stream], *extra])


@functools.cache
def photograph(name: str) -> np.ndarray:
  """Returns a bundled scikit-image photograph as a 2-D uint8 array."""
  image = getattr(skimage.data, name)()
  if image.ndim != 2 or image.dtype != np.uint8:
    raise ValueError(f'{name}: expected a grayscale uint8 image.')
  image.setflags(write=False)
  return image


def crop_boxes(category: str, split: str) -> np.ndarray:
  """Returns the crop boxes of a split.

  Args:
    category: one of CATEGORIES.
    split: 'train', 'val' or 'test'.

  Returns:
    int array (N, 4) of (row_start, col_start, row_stop, col_stop), in
    example order; each box is CROP_SIZE x CROP_SIZE and inside REGIONS[split].
  """
  _check_category(category)
  n = split_size(split)
  r0, r1, c0, c1 = REGIONS[split]
  rng = _rng(category, split)
  # Upper bounds are inclusive: a crop may touch the region's far edge.
  rows = rng.integers(r0, r1 - CROP_SIZE, size=n, endpoint=True)
  cols = rng.integers(c0, c1 - CROP_SIZE, size=n, endpoint=True)
  return np.stack([rows, cols, rows + CROP_SIZE, cols + CROP_SIZE], axis=1)


# ---------------------------------------------------------------------------
# Defect families. Each takes a clean (S, S) uint8 crop and a Generator and
# returns the defective crop and the boolean mask of the pixels it rewrote.
# Pixels outside the mask are never touched: compositing is hard-edged.


def _blob(rng: np.random.Generator, size: int,
          area: tuple[float, float] = (0.025, 0.065),
          weights: np.ndarray | None = None) -> np.ndarray:
  """An irregular, non-elliptic, hole-free blob covering `area` of the crop.

  A smoothed random field added to a radial bump, thresholded at the quantile
  giving the wanted area: the bump keeps the blob in one piece and the field
  makes its outline lumpy.

  Args:
    rng: random stream.
    size: side of the square crop.
    area: range of the blob's area as a fraction of the crop.
    weights: optional (size, size) non-negative map; the blob's centre is
      drawn with probability proportional to it (uniform if None).

  Returns:
    Boolean (size, size) mask.
  """
  target = rng.uniform(*area) * size * size
  radius = np.sqrt(target / np.pi)
  # Centres keep the blob (about `radius` wide) off the crop's border.
  lo, hi = int(np.ceil(radius + 4)), int(size - radius - 4)
  if weights is None:
    weights = np.ones((size, size))
  window = np.zeros((size, size))
  window[lo:hi, lo:hi] = weights[lo:hi, lo:hi] + 1e-9
  flat = rng.choice(size * size, p=window.ravel() / window.sum())
  centre = np.array(np.unravel_index(flat, (size, size)), np.float64)
  yy, xx = np.mgrid[:size, :size]
  r2 = ((yy - centre[0])**2 + (xx - centre[1])**2) / radius**2
  field = ndimage.gaussian_filter(
      rng.standard_normal((size, size)), sigma=radius / 3)
  field /= field.std()
  score = 1.0 - r2 + 0.6 * field
  threshold = np.sort(score, axis=None)[-int(target)]
  labels, _ = ndimage.label(score >= threshold)
  # Keep the component holding the strongest score and fill its holes.
  peak = np.unravel_index(np.argmax(score), score.shape)
  return ndimage.binary_fill_holes(labels == labels[peak])


# Zoom-out ranges of foreign patches per source photograph.
_FOREIGN_SCALES = {'brick': (2.5, 4.0), 'grass': (1.0, 2.0),
                   'gravel': (1.0, 2.0)}


def _foreign(clean: np.ndarray, rng: np.random.Generator,
             category: str) -> tuple[np.ndarray, np.ndarray]:
  """Pastes a patch of another texture photograph, matched to the crop."""
  size = clean.shape[0]
  mask = _blob(rng, size)
  others = [c for c in CATEGORIES if c != category]
  other = others[rng.integers(len(others))]
  source = photograph(other)
  # Shrinking the source shows more of its structure: a native-scale brick
  # patch is mostly one flat brick, which would look like a plain stain.
  scale = rng.uniform(*_FOREIGN_SCALES[other])
  extent = int(np.ceil(size * scale))
  r, c = rng.integers(0, np.array(source.shape) - extent, endpoint=True)
  patch = source[r:r + extent, c:c + extent].astype(np.float64)
  patch = ndimage.zoom(patch, size / extent, order=1)[:size, :size]
  patch = np.rot90(patch, k=rng.integers(4))
  # The crop's spread, a shifted mean: another material, not a camouflaged
  # copy (an autoencoder with skip connections passes pure structure
  # changes through, and so would not be tested on them meaningfully).
  patch = (patch - patch.mean()) / (patch.std() + 1e-6)
  shift = rng.choice([-1, 1]) * rng.uniform(1.0, 1.5)
  patch = (patch + shift) * clean.std() + clean.mean()
  return _composite(clean, patch, mask), mask


def _polyline(rng: np.random.Generator, start: np.ndarray, heading: float,
              steps: int, size: int) -> list[np.ndarray]:
  """A random walk with slowly turning heading, as a list of vertices."""
  points = [start]
  for _ in range(steps):
    heading += rng.normal(0.0, 0.4)
    step = rng.uniform(4.0, 8.0) * np.array([np.sin(heading), np.cos(heading)])
    points.append(np.clip(points[-1] + step, 0, size - 1))
  return points


def _crack(clean: np.ndarray, rng: np.random.Generator,
           category: str) -> tuple[np.ndarray, np.ndarray]:
  """Draws a thin dark branching crack (3-5 px wide)."""
  del category
  size = clean.shape[0]
  start = rng.uniform(0.2 * size, 0.8 * size, size=2)
  heading = rng.uniform(0, 2 * np.pi)
  # Two arms leaving the start point in roughly opposite directions, plus
  # side branches from random vertices.
  paths = [_polyline(rng, start, heading, rng.integers(5, 9), size),
           _polyline(rng, start, heading + np.pi, rng.integers(4, 8), size)]
  for _ in range(rng.integers(1, 3)):
    arm = paths[rng.integers(2)]
    vertex = arm[rng.integers(1, len(arm))]
    turn = rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
    paths.append(_polyline(rng, vertex, heading + turn, rng.integers(3, 6),
                           size))
  skeleton = np.zeros((size, size), bool)
  for path in paths:
    for a, b in zip(path[:-1], path[1:]):
      rr, cc = skimage.draw.line(*np.round(a).astype(int),
                                 *np.round(b).astype(int))
      skeleton[rr, cc] = True
  half_width = rng.choice([1.5, 2.0, 2.5])
  mask = ndimage.distance_transform_edt(~skeleton) <= half_width
  darkened = clean.astype(np.float64) * rng.uniform(0.2, 0.35)
  return _composite(clean, darkened, mask), mask


def _local_texture(x: np.ndarray) -> np.ndarray:
  """The texture's detail: the crop minus its local (12 px) mean."""
  return x - ndimage.gaussian_filter(x, 12.0)


def _hole(clean: np.ndarray, rng: np.random.Generator,
          category: str) -> tuple[np.ndarray, np.ndarray]:
  """A pit in shadow: as dark as the crop's darkest 1%, faintly textured."""
  del category
  mask = _blob(rng, clean.shape[0])
  x = clean.astype(np.float64)
  level = rng.uniform(0.85, 1.0) * np.percentile(x, 1)
  values = level + rng.uniform(0.1, 0.2) * _local_texture(x)
  return _composite(clean, values, mask), mask


def _glare(clean: np.ndarray, rng: np.random.Generator,
           category: str) -> tuple[np.ndarray, np.ndarray]:
  """A specular highlight: as bright as the crop's brightest 1%."""
  del category
  mask = _blob(rng, clean.shape[0])
  x = clean.astype(np.float64)
  top = np.percentile(x, 99)
  level = top + rng.uniform(0.0, 0.15) * (255.0 - top)
  values = level + rng.uniform(0.1, 0.2) * _local_texture(x)
  return _composite(clean, values, mask), mask


def _composite(clean: np.ndarray, values: np.ndarray,
               mask: np.ndarray) -> np.ndarray:
  values = np.clip(np.round(values), 0, 255).astype(np.uint8)
  return np.where(mask, values, clean)


_DEFECTS = {
    'foreign': _foreign,
    'crack': _crack,
    'hole': _hole,
    'glare': _glare,
}


def examples(category: str, split: str) -> Iterator[dict[str, Any]]:
  """Generates the examples of one split, in order.

  Args:
    category: one of CATEGORIES.
    split: 'train', 'val' or 'test'.

  Yields:
    Dicts with 'image' (S, S) uint8, 'clean' (the crop before any defect),
    'mask' (S, S) bool (True where the defect rewrote pixels), 'defect_type'
    ('good' or a DEFECT_TYPES entry), 'name' and 'box' (see crop_boxes).
  """
  source = photograph(category)
  boxes = crop_boxes(category, split)
  for i, (box, defect_type) in enumerate(zip(boxes, defect_types(split))):
    clean = np.ascontiguousarray(source[box[0]:box[2], box[1]:box[3]])
    if defect_type == GOOD:
      image, mask = clean, np.zeros_like(clean, bool)
    else:
      # One stream per example: any example can be regenerated on its own.
      rng = _rng(category, 'defect', i)
      image, mask = _DEFECTS[defect_type](clean, rng, category)
    yield dict(image=image, clean=clean, mask=mask, defect_type=defect_type,
               name=f'{split}/{defect_type}/{i:03d}', box=box)


def _check_category(category: str) -> None:
  if category not in CATEGORIES:
    raise ValueError(f'Unknown textures category {category!r}; choose one of '
                     f'{", ".join(CATEGORIES)}.')


class AadTextures(tfds.core.GeneratorBasedBuilder):
  """Planted-defect benchmark cut from scikit-image texture photographs."""

  VERSION = tfds.core.Version('2.2.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release: foreign, crack, hole and smear defects.',
      '2.0.0': 'Defects that change material or lighting: foreign patches '
               'with a shifted level, darker cracks, shadowed holes, glare.',
      '2.1.0': 'Holes and glare at the 1st/99th percentile grey level '
               'instead of beyond it; cracks 3-5 px wide.',
      '2.2.0': 'Train rows 0-191 and val rows 192-319 over the full width, '
               'so val matches train and test.',
  }
  # tfds 4.9.10 locates a builder's source file through `importlib_resources`,
  # a package it only requires on Python < 3.9; naming the file here avoids
  # that import (and so the need for an extra dependency).
  code_path = epath.Path(__file__)
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name=name, description=f'Crops of skimage.data.{name}().')
      for name in CATEGORIES
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    shape = (CROP_SIZE, CROP_SIZE, 1)
    return local_info.LocalDatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=shape, encoding_format='png'),
            # 0 outside the defect, 255 inside, as in MVTec masks.
            'mask': tfds.features.Image(shape=shape, encoding_format='png'),
            'label': tfds.features.ClassLabel(names=['good', 'defect']),
            'defect_type': tfds.features.Text(),
            'name': tfds.features.Text(),
        }),
        supervised_keys=None,
        homepage='https://scikit-image.org/docs/stable/api/skimage.data.html',
        # Examples are stored in generation order (good first, then each
        # defect family) so that figures and names line up with the code.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from the installed scikit-image.
    return {split: self._generate_examples(split=split) for split in REGIONS}

  def _generate_examples(self, split):
    progress = logs.Counter('prepared', split_size(split), f'{split} images')
    for i, ex in enumerate(examples(self.builder_config.name, split)):
      yield i, {
          'image': ex['image'][..., None],
          'mask': (ex['mask'][..., None] * 255).astype(np.uint8),
          'label': int(ex['defect_type'] != GOOD),
          'defect_type': ex['defect_type'],
          'name': ex['name'],
      }
      progress.update(i + 1)
