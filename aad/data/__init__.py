"""Datasets as numpy arrays: the only part of `aad` that touches data files.

`load(name, category, ...)` returns a `Dataset` of uint8 arrays, resized and
with the channel count the model wants. Datasets are looked up by name in a
registry, so a new source (an MVTec AD or folder loader in `mvtec.py`) is one
`register(...)` call away and callers do not change. No JAX in this package.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from aad.data import preprocess


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
  """
  images: np.ndarray
  labels: np.ndarray
  masks: np.ndarray
  defect_types: tuple[str, ...]
  names: tuple[str, ...]
  native_masks: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.images)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A category's train (good only), val (good only) and test splits."""
  category: str
  train: Split
  val: Split
  test: Split


# A loader maps (category, data_dir) to the dataset at its native size and
# channel count; `load` resizes and converts afterwards.
Loader = Callable[[str, str], Dataset]

_LOADERS: dict[str, Loader] = {}
# Dataset name -> its categories, for configs, error messages and tests.
CATEGORIES: dict[str, tuple[str, ...]] = {}


def register(name: str, categories: tuple[str, ...], loader: Loader) -> None:
  """Makes `load(name, ...)` use `loader` for the given categories."""
  _LOADERS[name] = loader
  CATEGORIES[name] = tuple(categories)


def default_data_dir() -> str:
  """Where prepared datasets are cached: $AAD_DATA_DIR or ~/.cache/aad/tfds."""
  return os.environ.get('AAD_DATA_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'aad', 'tfds')


def load(name: str, category: str, *, image_size: int, channels: int,
         data_dir: str | None = None) -> Dataset:
  """Loads a dataset category as uint8 numpy arrays.

  Prepares the dataset on first use (once per data_dir), then reads it.

  Args:
    name: dataset name, a key of CATEGORIES (e.g. 'textures').
    category: one of CATEGORIES[name] (e.g. 'brick').
    image_size: output height and width; images are resized bilinearly with
      anti-aliasing, masks with nearest neighbour.
    channels: 1 (grayscale) or 3 (RGB).
    data_dir: cache directory; defaults to default_data_dir().

  Returns:
    The Dataset, every split with images (N, image_size, image_size,
    channels), masks (N, image_size, image_size) and native_masks, the
    masks at the loader's native size (kept from the loader if it set them).

  Raises:
    ValueError: for an unknown dataset name or category, or bad sizes.
  """
  if name not in _LOADERS:
    raise ValueError(f'Unknown dataset {name!r}; choose one of '
                     f'{", ".join(sorted(_LOADERS))}.')
  if category not in CATEGORIES[name]:
    raise ValueError(f'Unknown category {category!r} for dataset {name!r}; '
                     f'choose one of {", ".join(CATEGORIES[name])}.')
  if channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, not {channels!r}.')
  if image_size < 1:
    raise ValueError(f'image_size must be positive, not {image_size!r}.')
  raw = _LOADERS[name](category, data_dir or default_data_dir())

  def convert(split: Split) -> Split:
    images = preprocess.convert_channels(
        preprocess.resize_images(split.images, image_size), channels)
    masks = preprocess.resize_masks(split.masks, image_size)
    native = (split.native_masks if split.native_masks is not None
              else (np.asarray(split.masks) > 0).astype(np.uint8))
    return dataclasses.replace(split, images=images, masks=masks,
                               native_masks=native)

  return Dataset(category=category, train=convert(raw.train),
                 val=convert(raw.val), test=convert(raw.test))


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


def _load_textures(category: str, data_dir: str) -> Dataset:
  """Prepares (once) and reads the embedded scikit-image textures dataset."""
  _hide_gpus_from_tensorflow()
  # Imported here: `import aad.data` should not pull in tfds and skimage data.
  from aad.data import textures  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = textures.AadTextures(data_dir=data_dir, config=category)
  # Not builder.is_prepared(): it logs a warning for every missing dataset.
  if not (builder.data_path / 'dataset_info.json').exists():
    print(f'aad.data: preparing {builder.name}/{category} in {data_dir} '
          '(one-off, a few seconds).', flush=True)
    # tfds' per-split progress bars would only clutter a training log (this
    # re-enables them afterwards, tfds' default).
    tfds.disable_progress_bar()
    try:
      builder.download_and_prepare()
    finally:
      tfds.enable_progress_bar()
  return Dataset(category=category,
                 **{s: _read_tfds_split(builder, s)
                    for s in ('train', 'val', 'test')})


register('textures', ('brick', 'grass', 'gravel'), _load_textures)
