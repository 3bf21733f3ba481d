"""Datasets as numpy arrays: the only part of `aad` that touches data files.

`load(name, category, ...)` (or `from_config`) returns a `Dataset` of uint8
arrays, cropped, resized and with the channel count the model wants.
Datasets are looked up by name in a registry: 'textures' (the embedded
benchmark), 'mvtec_ad' (manual download) and 'folder' (any MVTec-layout
folder); a new source is one `register(...)` call. No JAX in this package.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
from typing import Callable

from absl import logging
import numpy as np

from aad.data import preprocess
from aad.data.imageio import DataError  # pylint: disable=unused-import


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a dataset.

  Attributes:
    images: uint8 (N, H, W, C).
    labels: int32 (N,), 0 for good, 1 for defective.
    masks: uint8 (N, H, W), 1 on defective pixels, 0 elsewhere.
    defect_types: per image, 'good' or the defect family.
    names: per image, a name unique within the split.
    native_masks: optional uint8 (N, H0, W0): the masks at the loader's
      native resolution, before `load` resized them; what pixel metrics use
      with `config.eval.resolution='original'` (MVTec's convention). None
      when the source has no native size to offer.
    has_masks: optional bool (N,): False for defective images scored
      image-level only (their mask is missing, all 0); None = all drawn.
    roi_previews: with roi='peel', (name, native uint8 image, its
      preprocess.Roi) of the first ROI_PREVIEWS images, for the report's
      ROI figure; () otherwise.
  """
  images: np.ndarray
  labels: np.ndarray
  masks: np.ndarray
  defect_types: tuple[str, ...]
  names: tuple[str, ...]
  native_masks: np.ndarray | None = None
  has_masks: np.ndarray | None = None
  roi_previews: tuple = ()

  def __len__(self) -> int:
    return len(self.images)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A category's train (good only), val (good only) and test splits; the
  test split is empty for a good-only folder (`Dataset.good_only`)."""
  category: str
  train: Split
  val: Split | None
  test: Split

  @property
  def good_only(self) -> bool:
    """No test image (a folder of good images only): no test metrics."""
    return not len(self.test)


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a loader finds its data (the dataset block of the config)."""
  data_dir: str                # tfds cache of prepared datasets
  path: str = ''               # 'folder': the MVTec-layout folder
  manual_dir: str = ''         # 'mvtec_ad': the download; '' = tfds default
  missing_masks: str = 'error'  # 'folder': see aad.data.folder.scan


# A loader maps (category, source) to the dataset at its native size; its
# splits may hold lists of images of mixed sizes, and `val` may be None (it
# is then cut from train). `load` crops, resizes and converts afterwards.
Loader = Callable[[str, Source], Dataset]

_LOADERS: dict[str, Loader] = {}
# Dataset name -> its categories (or a function of the source folder), for
# configs, error messages and tests.
CATEGORIES: dict[str, tuple[str, ...] | Callable[[Source], tuple[str, ...]]
                 ] = {}


def register(name: str, categories, loader: Loader) -> None:
  """Makes `load(name, ...)` use `loader` for the given categories."""
  _LOADERS[name] = loader
  CATEGORIES[name] = categories if callable(categories) else tuple(categories)


def default_data_dir() -> str:
  """Where prepared datasets are cached: $AAD_DATA_DIR or ~/.cache/aad/tfds."""
  return os.environ.get('AAD_DATA_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'aad', 'tfds')


def _check_name(name: str) -> None:
  if name not in _LOADERS:
    raise DataError(f'Unknown dataset {name!r} (config.dataset.name); '
                    f'choose one of {", ".join(sorted(_LOADERS))}.')


def categories(name: str, source: Source | None = None) -> tuple[str, ...]:
  """The categories of dataset `name` (a folder's depend on its content)."""
  _check_name(name)
  found = CATEGORIES[name]
  return found(source or Source(default_data_dir())) if callable(found) \
      else found


def prepare_image(image: np.ndarray, name: str, *, size, channels: int,
                  roi: str = 'none', roi_margin: int = 0):
  """One new image as the model sees it, the way `load` prepares datasets.

  Args:
    image: uint8 (H, W, C) at its native size (aad.data.imageio).
    name: the image's name for error messages.
    size, channels, roi, roi_margin: as `load`.

  Returns:
    (uint8 image of `size` with `channels`, its preprocess.Roi or None).
  """
  found = None
  if roi == 'peel':
    found = preprocess.find_roi(image, roi_margin)
    if found is None:
      raise DataError(f'{name}: no object left to peel after an erosion of '
                      f'{roi_margin} px; lower config.dataset.roi_margin or '
                      "set config.dataset.roi='none'.")
    image = preprocess.crop_image(image, found)
  elif roi != 'none':
    raise DataError(f"config.dataset.roi={roi!r}; choose 'none' or 'peel'.")
  image = preprocess.resize_image(image, size)
  return preprocess.convert_channels(image[None], channels)[0], found


ROI_PREVIEWS = 4  # images per split kept at native size for the report


def _prepare(split: Split, size: tuple[int, int], channels: int, roi: str,
             roi_margin: int) -> Split:
  if not len(split.names):  # a good-only folder's test split
    return dataclasses.replace(
        split, images=np.zeros((0, *size, channels), np.uint8),
        masks=np.zeros((0, *size), np.uint8),
        native_masks=np.zeros((0, *size), np.uint8))
  images, masks = list(split.images), list(split.masks)
  previews = []
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  progress = logs.Counter('resized', len(split.names), quick_silent=True)
  for i, name in enumerate(split.names):
    native = images[i]
    images[i], found = prepare_image(images[i], name, size=size,
                                     channels=channels, roi=roi,
                                     roi_margin=roi_margin)
    if found is not None:
      masks[i] = preprocess.crop_mask(masks[i], found)
      if len(previews) < ROI_PREVIEWS:
        previews.append((name, native, found))
    progress.update(i + 1)
  if split.native_masks is not None and roi == 'none':
    native = split.native_masks
  else:
    native = [(np.asarray(m) > 0).astype(np.uint8) for m in masks]
    if len({m.shape for m in native}) == 1:
      native = np.stack(native)
  return dataclasses.replace(
      split, images=np.stack(images),
      masks=preprocess.resize_masks(masks, size), native_masks=native,
      roi_previews=tuple(previews))


def _subset(split: Split, idx) -> Split:
  take = lambda x: None if x is None else (  # pylint: disable=g-long-lambda
      x[idx] if isinstance(x, np.ndarray) else [x[i] for i in idx])
  return Split(images=take(split.images), labels=split.labels[idx],
               masks=take(split.masks),
               defect_types=tuple(split.defect_types[i] for i in idx),
               names=tuple(split.names[i] for i in idx),
               native_masks=take(split.native_masks),
               has_masks=take(split.has_masks))


def split_validation(train: Split, fraction: float) -> tuple[Split, Split]:
  """(train, val): the first `fraction` of the training images by name are
  held out, as Keras' validation_split does in the reference (METHOD.md)."""
  n = len(train.names)
  count = int(round(fraction * n))
  if not 0 < fraction < 1 or count < 1 or count >= n:
    raise DataError(
        f'config.dataset.val_fraction={fraction} of {n} training images '
        'leaves no validation or no training image; at least 2 training '
        'images are needed and 0 < val_fraction < 1.')
  order = np.argsort(np.asarray(train.names, dtype=object), kind='stable')
  return _subset(train, order[count:]), _subset(train, order[:count])


def load(name: str, category: str, *, image_size, channels: int,
         data_dir: str | None = None, roi: str = 'none', roi_margin: int = 0,
         val_fraction: float = 0.2, path: str = '', manual_dir: str = '',
         missing_masks: str = 'error') -> Dataset:
  """Loads a dataset category as uint8 numpy arrays.

  Prepares the dataset on first use (once per data_dir), then reads it.

  Args:
    name: dataset name, a key of CATEGORIES (e.g. 'textures').
    category: one of `categories(name, ...)` (e.g. 'brick').
    image_size: output size, int (square) or (height, width); images are
      resized bilinearly with anti-aliasing, masks with nearest neighbour.
    channels: 1 (grayscale) or 3 (RGB).
    data_dir: cache directory; defaults to default_data_dir().
    roi: 'none', or 'peel' to crop every image to its object
      (preprocess.find_roi) before resizing.
    roi_margin: the peel's erosion, px of the native image.
    val_fraction: share of the training images held out for validation
      when the dataset has no validation split.
    path, manual_dir, missing_masks: see `Source`.

  Returns:
    The Dataset, every split with images (N, height, width, channels),
    masks (N, height, width) and native_masks, the masks at the loader's
    native size (after the ROI crop; a list if their sizes differ).

  Raises:
    DataError: for an unknown dataset name or category, bad options, or
      unusable files (the message names them).
  """
  _check_name(name)
  source = Source(data_dir=data_dir or default_data_dir(), path=path,
                  manual_dir=manual_dir, missing_masks=missing_masks)
  known = categories(name, source)
  if category not in known:
    raise DataError(f'Unknown category {category!r} for dataset {name!r}; '
                    f'choose one of {", ".join(known)}.')
  if channels not in (1, 3):
    raise DataError(f'channels must be 1 or 3, not {channels!r}.')
  size = preprocess.hw(image_size)
  if min(size) < 1:
    raise DataError(f'image_size must be positive, not {image_size!r}.')
  raw = _LOADERS[name](category, source)
  train, val = raw.train, raw.val
  if val is None:
    train, val = split_validation(train, val_fraction)
  prepare = lambda s: _prepare(s, size, channels, roi, roi_margin)
  return Dataset(category=category, train=prepare(train), val=prepare(val),
                 test=prepare(raw.test))


def image_size(dataset_config) -> tuple[int, int]:
  """(height, width) the model sees: image_size, and image_width if set."""
  return (dataset_config.image_size,
          dataset_config.image_width or dataset_config.image_size)


def from_config(dataset_config, category: str) -> Dataset:
  """`load` with every option from a config's `dataset` block."""
  c = dataset_config
  return load(c.name, category, image_size=image_size(c), channels=c.channels,
              data_dir=c.data_dir or None, roi=c.roi,
              roi_margin=c.roi_margin, val_fraction=c.val_fraction,
              path=c.path, manual_dir=c.manual_dir,
              missing_masks=c.missing_masks)


@dataclasses.dataclass(frozen=True)
class Properties:
  """What the training images of one or more categories look like, for
  rules that choose a config from the data (aad/experiment/recommend.py); no test
  image or label is read.

  Attributes:
    count: training images (val included), all categories together.
    height, width: their median native size, px.
    colour: True if any of them has channels that differ (more than 2 grey
      levels anywhere).
  """
  count: int
  height: int
  width: int
  colour: bool


def properties(dataset_config) -> Properties:
  """`Properties` of the training images of a config's categories, at
  their native size (before any resizing the config asks for)."""
  c = dataset_config
  _check_name(c.name)
  source = Source(data_dir=c.data_dir or default_data_dir(), path=c.path,
                  manual_dir=c.manual_dir, missing_masks=c.missing_masks)
  images = []
  for category in config_categories(c):
    if category not in categories(c.name, source):
      raise DataError(f'Unknown category {category!r} for dataset '
                      f'{c.name!r}; choose one of '
                      f'{", ".join(categories(c.name, source))}.')
    raw = _LOADERS[c.name](category, source)
    for split in (raw.train, raw.val):
      if split is not None:
        images += list(split.images)
  if not images:
    raise DataError(f'{c.path or c.name}: no training image.')
  logging.info('measuring %d training images (size, colour)...',
               len(images))
  height = int(np.median([im.shape[0] for im in images]))
  width = int(np.median([im.shape[1] for im in images]))
  colour = any(im.shape[-1] == 3 and (
      np.abs(np.diff(im.astype(np.int16), axis=-1)).max() > 2)
               for im in images)
  return Properties(count=len(images), height=height, width=width,
                    colour=colour)


def config_categories(dataset_config) -> tuple[str, ...]:
  """The categories a config runs: its list, or all of the dataset's."""
  c = dataset_config
  return tuple(c.categories) or categories(
      c.name, Source(data_dir=c.data_dir or default_data_dir(), path=c.path,
                     manual_dir=c.manual_dir))


def _hide_gpus_from_tensorflow() -> None:
  """Keeps TensorFlow (used by tfds to decode images) off the accelerators."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    pass  # TensorFlow already initialised: whoever did so chose its devices.


def _read_tfds_split(builder, split: str) -> Split:
  """Reads a prepared tfds split with the textures feature layout."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  return Split(
      images=data['image'],
      labels=data['label'].astype(np.int32),
      masks=(data['mask'][..., 0] > 0).astype(np.uint8),
      defect_types=tuple(t.decode() for t in data['defect_type']),
      names=tuple(n.decode() for n in data['name']),
  )


def _prepare_builder(builder, what: str, download_config=None) -> None:
  """Prepares a tfds builder once (tfds writes to a temporary folder and
  renames it when complete, so an interrupted preparation redoes it all)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # Not builder.is_prepared(): it logs a warning for every missing dataset.
  if (builder.data_path / 'dataset_info.json').exists():
    return
  folder = str(builder.data_path.parent)
  os.makedirs(folder, exist_ok=True)
  # One preparation at a time per dataset folder (sweep points, processes);
  # whoever holds the lock may remove the incomplete folders of killed
  # preparations, since nobody else is writing them.
  with open(os.path.join(folder, '.aad-prepare.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    for name in os.listdir(folder):
      if name.startswith('incomplete.') and name.endswith(
          f'_{builder.data_path.name}'):
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    if (builder.data_path / 'dataset_info.json').exists():
      return  # prepared by another process while this one waited
    print(f'aad.data: preparing {what} in {builder.data_path} (one-off).',
          flush=True)
    # tfds' per-split progress bars would only clutter a training log (this
    # re-enables them afterwards, tfds' default).
    tfds.disable_progress_bar()
    try:
      builder.download_and_prepare(download_config=download_config)
    finally:
      tfds.enable_progress_bar()


def _load_textures(category: str, source: Source) -> Dataset:
  """Prepares (once) and reads the embedded scikit-image textures dataset."""
  _hide_gpus_from_tensorflow()
  # Imported here: `import aad.data` should not pull in tfds and skimage data.
  from aad.data import textures  # pylint: disable=g-import-not-at-top
  builder = textures.AadTextures(data_dir=source.data_dir, config=category)
  _prepare_builder(builder, f'{builder.name}/{category}')
  return Dataset(category=category,
                 **{s: _read_tfds_split(builder, s)
                    for s in ('train', 'val', 'test')})


def _read_ragged_split(builder, split: str) -> Split:
  """Reads an MVTec-layout tfds split one image at a time (sizes may
  differ), in name order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  progress = logs.Counter('read', builder.info.splits[split].num_examples,
                          f'{split} images', quick_silent=True)
  rows = []
  for row in tfds.as_numpy(builder.as_dataset(split=split)):
    rows.append(row)
    progress.update(len(rows))
  rows.sort(key=lambda r: r['name'])
  return Split(
      images=[r['image'] for r in rows],
      labels=np.array([r['label'] for r in rows], np.int32),
      masks=[(r['mask'][..., 0] > 0).astype(np.uint8) for r in rows],
      defect_types=tuple(r['defect_type'].decode() for r in rows),
      names=tuple(r['name'].decode() for r in rows),
      has_masks=np.array([bool(r['has_mask']) or not r['label']
                          for r in rows]))


def empty_split() -> Split:
  """The test split of a good-only folder: no image."""
  return Split(images=[], labels=np.zeros(0, np.int32), masks=[],
               defect_types=(), names=(), has_masks=np.zeros(0, bool))


def _mvtec_layout(builder, category: str, what: str,
                  download_config=None) -> Dataset:
  _prepare_builder(builder, what, download_config)
  # A good-only folder (no test/, or a flat folder of images) has no test
  # split: the run trains and calibrates without test metrics.
  test = (_read_ragged_split(builder, 'test')
          if 'test' in builder.info.splits else empty_split())
  return Dataset(category=category, train=_read_ragged_split(builder, 'train'),
                 val=None, test=test)


def _load_mvtec_ad(category: str, source: Source) -> Dataset:
  """MVTec AD from the manual download (aad.data.mvtec.MvtecAd)."""
  _hide_gpus_from_tensorflow()
  from aad.data import mvtec  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = mvtec.MvtecAd(data_dir=source.data_dir, config=category)
  manual = source.manual_dir or os.path.join(source.data_dir, 'downloads',
                                             'manual')
  if not (builder.data_path / 'dataset_info.json').exists() and not (
      os.path.isdir(os.path.join(manual, category)) or
      os.path.isfile(os.path.join(manual, mvtec.ARCHIVE))):
    raise DataError(f'MVTec AD {category!r} is not prepared and {manual} '
                    f'has neither {category}/ nor {mvtec.ARCHIVE}.'
                    f'{mvtec.MvtecAd.MANUAL_DOWNLOAD_INSTRUCTIONS}')
  download_config = tfds.download.DownloadConfig(
      manual_dir=source.manual_dir or None)
  return _mvtec_layout(builder, category, f'mvtec_ad/{category}',
                       download_config)


def _folder_categories(source: Source) -> tuple[str, ...]:
  from aad.data import folder  # pylint: disable=g-import-not-at-top
  if not source.path:
    raise DataError("config.dataset.name='folder' needs config.dataset.path, "
                    'a folder in MVTec layout.')
  return folder.categories(source.path)


def _load_folder(category: str, source: Source) -> Dataset:
  """A user's folder in MVTec layout (aad.data.mvtec.AadFolder)."""
  _hide_gpus_from_tensorflow()
  from aad.data import folder  # pylint: disable=g-import-not-at-top
  from aad.data import mvtec  # pylint: disable=g-import-not-at-top
  root = folder.category_dir(source.path, category)
  builder = mvtec.AadFolder(root=root, missing_masks=source.missing_masks,
                            data_dir=source.data_dir)
  return _mvtec_layout(builder, category, root)


register('textures', ('brick', 'grass', 'gravel'), _load_textures)
# The MVTec AD category names, without importing tfds for them.
register('mvtec_ad', ('bottle', 'cable', 'capsule', 'carpet', 'grid',
                      'hazelnut', 'leather', 'metal_nut', 'pill', 'screw',
                      'tile', 'toothbrush', 'transistor', 'wood', 'zipper'),
         _load_mvtec_ad)
register('folder', _folder_categories, _load_folder)
