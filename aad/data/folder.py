"""Scanning a folder in MVTec AD layout, before anything is decoded.

  <category>/train/good/*.png                 defect-free training images
  <category>/test/good/*.png                  defect-free test images
  <category>/test/<defect>/*.png              defective test images
  <category>/ground_truth/<defect>/<stem>_mask.png   their masks

Any of PNG, JPEG, BMP and TIFF (aad.data.imageio); masks may also be named
<stem>.<ext>. A category folder without test/ (train/good only), or a flat
folder of images (no train/), is a good-only category: every image trains
or validates, and the test split is empty (no test metrics; the run
calibrates its thresholds on the good validation images).
Layout problems are found here, in milliseconds, with messages
that name the file and the fix; decoding problems are found when the
dataset is prepared (aad.data.mvtec).
"""

from __future__ import annotations

import dataclasses
import os

from aad.data.imageio import DataError
from aad.data.imageio import is_image_file

GOOD = 'good'
MISSING_MASKS = ('error', 'image_level')


@dataclasses.dataclass(frozen=True)
class Record:
  """One image of the folder."""
  path: str
  label: int            # 0 good, 1 defective
  defect_type: str      # 'good' or the test/<defect> folder name
  name: str             # '<defect>/<stem>', unique within the split
  mask_path: str | None  # None for good images and masks allowed missing


def is_category(root: str) -> bool:
  return os.path.isdir(os.path.join(root, 'train'))


def is_flat(root: str) -> bool:
  """A folder of good images only, without train/: at least one image
  file in it (sub-folders make it a root of categories instead)."""
  if not os.path.isdir(root) or is_category(root):
    return False
  entries = [n for n in os.listdir(root) if not n.startswith('.')]
  return any(is_image_file(n) and os.path.isfile(os.path.join(root, n))
             for n in entries) and not any(
                 os.path.isdir(os.path.join(root, n)) and is_category(
                     os.path.join(root, n)) for n in entries)


def categories(root: str) -> tuple[str, ...]:
  """A category folder is its own single category; a root of category
  folders (like the extracted MVTec AD archive) has one per sub-folder."""
  root = os.path.abspath(os.path.expanduser(root))
  if os.path.exists(root) and not os.path.isdir(root):
    raise DataError(f'{root}: is a file, not a folder. Set '
                    'config.dataset.path to a folder in MVTec layout (README '
                    '"Bring your own folder").')
  if not os.path.isdir(root):
    raise DataError(f'{root}: no such folder. Set config.dataset.path to a '
                    'folder in MVTec layout (README "Bring your own '
                    'folder").')
  if is_category(root) or is_flat(root):
    return (os.path.basename(root),)
  found = tuple(sorted(d for d in os.listdir(root)
                       if is_category(os.path.join(root, d))))
  if not found:
    raise DataError(f'{root}: neither a category folder (with train/good/), '
                    'a folder of good images, nor a folder of such '
                    f'categories. Expected {root}/*.png, '
                    f'{root}/train/good/*.png or {root}/<category>/train/'
                    'good/*.png.')
  return found


def category_dir(root: str, category: str) -> str:
  root = os.path.abspath(os.path.expanduser(root))
  if (is_category(root) or is_flat(root)) and (
      os.path.basename(root) == category):
    return root
  return os.path.join(root, category)


def _images(folder: str) -> list[str]:
  """Sorted image files of `folder`; other files (but hidden ones) are an
  error, since a stray file usually means a misplaced dataset."""
  names = sorted(n for n in os.listdir(folder) if not n.startswith('.'))
  paths = [os.path.join(folder, n) for n in names]
  for p in paths:
    if os.path.islink(p) and not os.path.exists(p):
      raise DataError(f'{p}: a symbolic link to nothing (or a loop of '
                      'links); point it at an image or remove it.')
  paths = [p for p in paths if os.path.isfile(p)]
  for p in paths:
    if not is_image_file(p):
      raise DataError(f'{p}: not an image file (expected .png, .jpg, .jpeg, '
                      '.bmp, .tif or .tiff). Move it out of the dataset '
                      'folder.')
  return paths


def _mask_for(root: str, defect: str, image_path: str) -> str | None:
  stem = os.path.splitext(os.path.basename(image_path))[0]
  folder = os.path.join(root, 'ground_truth', defect)
  if not os.path.isdir(folder):
    return None
  for candidate in (f'{stem}_mask', stem):
    for name in os.listdir(folder):
      base, _ = os.path.splitext(name)
      if base == candidate and is_image_file(name):
        return os.path.join(folder, name)
  return None


def scan(root: str, missing_masks: str = 'error'
         ) -> tuple[list[Record], list[Record]]:
  """Lists the train and test images of a category folder.

  Args:
    root: the category folder (with train/ and test/; without test/, or
      a flat folder of images, a good-only category with no test image).
    missing_masks: what a defective test image without a mask means:
      'error' (stop, naming it) or 'image_level' (score it for image
      metrics only; pixel metrics use the images that have masks).

  Returns:
    (train records, test records), each sorted by name; test records are
    [] for a good-only category.

  Raises:
    DataError: for a missing or empty folder, a non-image file, or a
      missing mask (with missing_masks='error').
  """
  if missing_masks not in MISSING_MASKS:
    raise DataError(f'config.dataset.missing_masks={missing_masks!r}; '
                    f'choose one of {", ".join(MISSING_MASKS)}.')
  root = os.path.abspath(os.path.expanduser(root))
  if is_flat(root):
    return [Record(p, 0, GOOD, f'{GOOD}/{os.path.basename(p)}', None)
            for p in _images(root)], []
  train_dir = os.path.join(root, 'train', GOOD)
  if not os.path.isdir(train_dir):
    raise DataError(f'{root}: no {train_dir} folder; training images go in '
                    '<category>/train/good/.')
  train = [Record(p, 0, GOOD, f'{GOOD}/{os.path.basename(p)}', None)
           for p in _images(train_dir)]
  if not train:
    raise DataError(f'{train_dir}: no training images in it.')
  test_dir = os.path.join(root, 'test')
  if not os.path.isdir(test_dir):
    return train, []  # good only: no test metrics (aad.experiment.testing)
  test = []
  for defect in sorted(os.listdir(test_dir)):
    folder = os.path.join(test_dir, defect)
    if defect.startswith('.') or not os.path.isdir(folder):
      continue
    for path in _images(folder):
      name = f'{defect}/{os.path.basename(path)}'
      if defect == GOOD:
        test.append(Record(path, 0, GOOD, name, None))
        continue
      mask = _mask_for(root, defect, path)
      if mask is None and missing_masks == 'error':
        stem = os.path.splitext(os.path.basename(path))[0]
        raise DataError(
            f'{path}: defective test image without a ground-truth mask '
            f'(expected {root}/ground_truth/{defect}/{stem}_mask.png). Add '
            'it, or set config.dataset.missing_masks=image_level to score '
            'such images for image-level metrics only.')
      test.append(Record(path, 1, defect, name, mask))
  if not test:
    raise DataError(f'{test_dir}: no test images in it (expected test/good/ '
                    'and test/<defect>/ folders of images).')
  return train, test


def fingerprint(root: str, records: list[Record]) -> str:
  """A short hash of every file's path, size and modification time, so a
  prepared copy is rebuilt when the folder changes."""
  import hashlib  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256(os.path.abspath(root).encode())
  for r in records:
    for path in (r.path, r.mask_path):
      if path:
        stat = os.stat(path)
        digest.update(f'{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0'.encode())
  return digest.hexdigest()[:16]
