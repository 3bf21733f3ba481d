"""Reading image and mask files into uint8 arrays, with clear errors.

Every reader returns uint8 (H, W, C) with C = 1 (grayscale) or 3 (RGB), so
the rest of `aad` sees one format whatever the file held:
- 16-bit images are scaled to 8 bits (v / 257, rounded: 65535 -> 255);
- alpha channels are dropped (the colour is kept as stored);
- palette and other colour modes are converted to RGB.
TIFF goes through tifffile (Pillow truncates 16-bit colour TIFF); the rest
through Pillow.
"""

from __future__ import annotations

import os

import numpy as np

from aad.runtime import errors

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


class DataError(errors.UserError, ValueError):
  """A data file or folder cannot be used; the message names it and the fix."""


def is_image_file(path: str) -> bool:
  return path.lower().endswith(IMAGE_EXTENSIONS)


def _to_uint8(array: np.ndarray, path: str) -> np.ndarray:
  if array.dtype == np.uint8:
    return array
  if array.dtype == bool:
    return array.astype(np.uint8) * 255
  if array.dtype in (np.uint16, np.int32, np.uint32) and (
      array.size == 0 or (array.min() >= 0 and array.max() <= 65535)):
    return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
  raise DataError(f'{path}: pixel type {array.dtype} (range '
                  f'{array.min()}..{array.max()}) is not supported; save it '
                  'as 8- or 16-bit grayscale or colour.')


def _channels(array: np.ndarray, path: str) -> np.ndarray:
  if array.ndim == 2:
    return array[..., None]
  if array.ndim == 3 and array.shape[-1] in (1, 3):
    return array
  if array.ndim == 3 and array.shape[-1] in (2, 4):  # + alpha: drop it
    return array[..., :-1]
  raise DataError(f'{path}: an image of shape {array.shape} is neither '
                  'grayscale nor colour; save it as one of those.')


def _read_tiff(path: str) -> np.ndarray:
  import tifffile  # pylint: disable=g-import-not-at-top
  try:
    array = tifffile.imread(path)
  except Exception as e:  # tifffile raises many types for broken files.
    raise DataError(f'{path}: cannot read this TIFF file ({e}); check that '
                    'it is complete, or re-save it.') from e
  if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] > 4:
    array = np.moveaxis(array, 0, -1)  # planar (C, H, W) storage
  return array


def _read_pillow(path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from PIL import UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image.load()  # decodes now, so truncated files fail here
      if image.mode in ('1', 'L', 'LA', 'RGB', 'RGBA', 'I;16', 'I;16B',
                        'I;16L', 'I'):
        return np.array(image)
      return np.array(image.convert('RGBA' if 'transparency' in image.info
                                    else 'RGB'))
  except UnidentifiedImageError as e:
    raise DataError(f'{path}: not an image file Pillow can read; remove it '
                    'from the folder or convert it to PNG.') from e
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f'{path}: cannot decode this image ({e}); the file is '
                    'probably truncated or corrupt: replace or remove it.'
                    ) from e


def read_image(path: str) -> np.ndarray:
  """Reads an image file as uint8 (H, W, 1 or 3).

  Raises:
    DataError: naming `path`, for missing, unreadable, truncated or
      unsupported files.
  """
  if not os.path.isfile(path):
    raise DataError(f'{path}: no such file.')
  if path.lower().endswith(('.tif', '.tiff')):
    array = _read_tiff(path)
  else:
    array = _read_pillow(path)
  array = _channels(np.asarray(array), path)
  if array.shape[0] == 0 or array.shape[1] == 0:
    raise DataError(f'{path}: the image is empty ({array.shape}).')
  return _to_uint8(array, path)


def read_mask(path: str) -> np.ndarray:
  """Reads a ground-truth mask as uint8 (H, W) with values 0/1 (> 0 is 1)."""
  array = read_image(path)
  return (array.max(axis=-1) > 0).astype(np.uint8)
