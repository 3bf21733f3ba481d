"""tfds builders for MVTec AD (manual download) and any MVTec-layout folder.

Both store the images at their native size as RGB PNG (grayscale replicated,
so the luma conversion in `aad.data.load` gives the grey levels back
exactly), with the mask (zeros for good images), whether the image has a
mask, its label, defect type and name. Files are decoded by
`aad.data.imageio`, so every format it reads works, and every problem names
its file. tfds writes to a temporary folder and renames it when complete, so
a failed preparation leaves nothing half-written.
"""

from __future__ import annotations

import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from aad.data import folder as folder_lib
from aad.data import imageio
from aad.data import local_info
from aad.data.imageio import DataError
from aad.runtime import logs

# The 15 MVTec AD categories (Bergmann et al., CVPR 2019).
CATEGORIES = ('bottle', 'cable', 'capsule', 'carpet', 'grid', 'hazelnut',
              'leather', 'metal_nut', 'pill', 'screw', 'tile', 'toothbrush',
              'transistor', 'wood', 'zipper')
ARCHIVE = 'mvtec_anomaly_detection.tar.xz'

_FEATURES = dict(
    image=tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
    # 255 on defective pixels, as in MVTec's masks.
    mask=tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
    has_mask=np.bool_,
    label=tfds.features.ClassLabel(names=['good', 'defect']),
    defect_type=tfds.features.Text(),
    name=tfds.features.Text(),
)


# Smaller images carry no texture for a model to learn or a defect to
# find; resized up to the model's size they are a flat blur.
MIN_SIDE = 8


def _example(record: folder_lib.Record) -> dict:
  image = imageio.read_image(record.path)
  if min(image.shape[:2]) < MIN_SIDE:
    raise DataError(
        f'{record.path}: the image is {image.shape[1]}x{image.shape[0]} px, '
        f'under {MIN_SIDE} px on a side, too small to learn from or score; '
        'remove it or replace it with the full-size image.')
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  if record.mask_path is None:
    mask = np.zeros(image.shape[:2], np.uint8)
  else:
    mask = imageio.read_mask(record.mask_path)
    if mask.shape != image.shape[:2]:
      raise DataError(
          f'{record.mask_path}: mask of size {mask.shape[1]}x{mask.shape[0]} '
          f'for image {record.path} of size {image.shape[1]}x'
          f'{image.shape[0]}; masks must have their image\'s size.')
  return {'image': image, 'mask': mask[..., None] * 255,
          'has_mask': record.mask_path is not None, 'label': record.label,
          'defect_type': record.defect_type, 'name': record.name}


class _MvtecLayout(tfds.core.GeneratorBasedBuilder):
  """Shared by both builders: train and test splits of one category."""

  code_path = epath.Path(__file__)  # see aad/data/textures.py

  def _info(self) -> tfds.core.DatasetInfo:
    return local_info.LocalDatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict(_FEATURES),
        homepage='https://www.mvtec.com/company/research/datasets/mvtec-ad')

  def _records(self, dl_manager):
    """(train, test) records of the category (aad.data.folder.scan)."""
    raise NotImplementedError

  def _split_generators(self, dl_manager):
    train, test = self._records(dl_manager)
    splits = {'train': self._generate_examples(train, 'train')}
    if test:  # a good-only folder has no test split (aad.data.folder.scan)
      splits['test'] = self._generate_examples(test, 'test')
    return splits

  def _generate_examples(self, records: list[folder_lib.Record],
                         split: str = 'train'):
    progress = logs.Counter('prepared', len(records), f'{split} images')
    for i, record in enumerate(records):
      yield i, _example(record)
      progress.update(i + 1)


class MvtecAd(_MvtecLayout):
  """MVTec AD, one builder config per category, from a manual download."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  MVTec AD cannot be downloaded automatically (its licence asks for a form).
  Download {ARCHIVE} from
  https://www.mvtec.com/company/research/datasets/mvtec-ad and put either the
  archive itself or its extracted category folders (bottle/, cable/, ...) in
  the manual directory: config.dataset.manual_dir, by default
  <data_dir>/downloads/manual/.
  """
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=c) for c in CATEGORIES]

  def _records(self, dl_manager):
    # The official archive has every mask, so a missing one is an error.
    root = self._category_dir(dl_manager)
    train, test = folder_lib.scan(root, 'error')
    if not test:
      raise DataError(f'{root}: no test/ folder; the MVTec AD archive has '
                      'one per category. Extract it again.')
    return train, test

  def _category_dir(self, dl_manager) -> str:
    manual = str(dl_manager.manual_dir)
    category = self.builder_config.name
    extracted = os.path.join(manual, category)
    if folder_lib.is_category(extracted):
      return extracted
    archive = os.path.join(manual, ARCHIVE)
    if os.path.isfile(archive):
      # Extracted once into the tfds download folder, then reused. tfds does
      # not guess .tar.xz from the name; its tar reader detects xz itself.
      resource = tfds.download.Resource(
          path=archive, extract_method=tfds.download.ExtractMethod.TAR_STREAM)
      return os.path.join(str(dl_manager.extract(resource)), category)
    raise DataError(f'{manual}: neither {category}/ nor {ARCHIVE} is there.'
                    f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')


class AadFolder(_MvtecLayout):
  """A user's folder in MVTec layout; one builder config per folder state.

  The config name is a fingerprint of the folder's files (path, size,
  modification time), so the prepared copy is rebuilt when they change.
  """

  VERSION = tfds.core.Version('1.0.0')

  def __init__(self, *, root: str, missing_masks: str = 'error', **kwargs):
    # Scanned once: the records name the builder config and are what a
    # preparation then reads.
    self._scanned = folder_lib.scan(root, missing_masks)
    train, test = self._scanned
    name = folder_lib.fingerprint(root, train + test) + (
        '-image-level' if missing_masks == 'image_level' else '')
    super().__init__(config=tfds.core.BuilderConfig(
        name=name, description=os.path.abspath(root)), **kwargs)

  def _records(self, dl_manager):
    del dl_manager
    return self._scanned
