"""Host-side preprocessing of uint8 images: resizing, channels, ROI peel.

Pure numpy / scipy / scikit-image; no JAX and no TensorFlow. Images are
(N, H, W, C) uint8 and masks (N, H, W) uint8 with values 0/1 throughout.
Sizes are an int (square) or (height, width).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
import skimage.filters
import skimage.transform

# ITU-R BT.601 luma weights for R, G, B (what PIL's 'L' mode uses).
REC601_LUMA = np.array([0.299, 0.587, 0.114])


def hw(size) -> tuple[int, int]:
  """(height, width) of an int (square) or pair size."""
  if isinstance(size, (int, np.integer)):
    return int(size), int(size)
  height, width = size
  return int(height), int(width)


def resize_image(image: np.ndarray, size) -> np.ndarray:
  """One uint8 (H, W, C) image, bilinear with anti-aliasing."""
  if image.shape[:2] == hw(size):
    return image
  # anti_aliasing only smooths when shrinking; preserve_range keeps 0..255.
  resized = skimage.transform.resize(
      image, hw(size), order=1, anti_aliasing=True, preserve_range=True)
  return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def resize_mask(mask: np.ndarray, size) -> np.ndarray:
  """One (H, W) binary mask, nearest neighbour; uint8 0/1."""
  mask = (np.asarray(mask) > 0).astype(np.uint8)
  if mask.shape[:2] == hw(size):
    return mask
  # Nearest neighbour without smoothing keeps the mask binary; the
  # threshold guards against any interpolation round-off.
  resized = skimage.transform.resize(
      mask, hw(size), order=0, anti_aliasing=False, preserve_range=True)
  return (resized > 0.5).astype(np.uint8)


def resize_images(images, size) -> np.ndarray:
  """Resizes images to `size`, bilinear with anti-aliasing.

  Args:
    images: uint8 (N, H, W, C), or a list of (H, W, C) of mixed sizes.
    size: output size, int (square) or (height, width).

  Returns:
    uint8 (N, height, width, C); the input itself if it already has that
    size.
  """
  if isinstance(images, np.ndarray) and images.shape[1:3] == hw(size):
    return images
  out = np.empty((len(images),) + hw(size) + (images[0].shape[-1],),
                 np.uint8)
  for i, image in enumerate(images):
    out[i] = resize_image(image, size)
  return out


def resize_masks(masks, size) -> np.ndarray:
  """Resizes binary masks to `size` with nearest-neighbour sampling.

  Args:
    masks: (N, H, W) with values 0/1 (any integer or boolean dtype), or a
      list of (H, W) of mixed sizes.
    size: output size, int (square) or (height, width).

  Returns:
    uint8 (N, height, width) with values 0/1.
  """
  if isinstance(masks, np.ndarray) and masks.shape[1:3] == hw(size):
    return (masks > 0).astype(np.uint8)
  out = np.empty((len(masks),) + hw(size), np.uint8)
  for i, mask in enumerate(masks):
    out[i] = resize_mask(mask, size)
  return out


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
  """Converts images between grayscale and RGB.

  Args:
    images: uint8 (N, H, W, C) with C in {1, 3}.
    channels: wanted number of channels, 1 or 3. 1 -> 3 repeats the grey
      channel; 3 -> 1 takes the Rec.601 luma, rounded.

  Returns:
    uint8 (N, H, W, channels).

  Raises:
    ValueError: for other channel counts.
  """
  have = images.shape[-1]
  if channels not in (1, 3) or have not in (1, 3):
    raise ValueError(f'Cannot convert {have} channel(s) to {channels}; '
                     'only 1 (grayscale) and 3 (RGB) are supported.')
  if have == channels:
    return images
  if channels == 3:
    return np.repeat(images, 3, axis=-1)
  luma = images.astype(np.float64) @ REC601_LUMA
  return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]


@dataclasses.dataclass(frozen=True)
class Roi:
  """Where a peeled ROI sits in its image.

  Attributes:
    box: (top, bottom, left, right) of the crop, in the original image.
    inside: bool (bottom - top, right - left), the peeled object within the
      crop; the rest of the crop is set to 0.
  """
  box: tuple[int, int, int, int]
  inside: np.ndarray


def find_roi(image: np.ndarray, margin: int) -> Roi | None:
  """Peels the object of `image` (seed 003; METHOD.md 5.3 [ASSUME]).

  Otsu's threshold on the grey levels splits object from background; the
  object is the side that covers less of the image border. Its largest
  8-connected component, holes filled, is eroded by `margin` px (Euclidean)
  so that the outline, which the AE need not model, is left out.

  Args:
    image: uint8 (H, W, C).
    margin: erosion in pixels of `image`.

  Returns:
    The ROI, or None if nothing is left after the erosion.
  """
  grey = image.astype(np.float64).mean(-1)
  if grey.max() == grey.min():
    return None
  above = grey > skimage.filters.threshold_otsu(grey)
  border = np.concatenate([above[0], above[-1], above[:, 0], above[:, -1]])
  obj = above if border.mean() < 0.5 else ~above
  labels, count = ndimage.label(obj, structure=np.ones((3, 3)))
  if not count:
    return None
  largest = 1 + int(np.argmax(ndimage.sum_labels(obj, labels,
                                                 range(1, count + 1))))
  obj = ndimage.binary_fill_holes(labels == largest)
  if margin > 0:
    # Distance to the nearest background pixel, with the image edge counted
    # as background: an exact Euclidean erosion.
    obj = ndimage.distance_transform_edt(np.pad(obj, 1))[1:-1, 1:-1] > margin
  rows, cols = np.flatnonzero(obj.any(1)), np.flatnonzero(obj.any(0))
  if not len(rows):
    return None
  box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
  return Roi(box=box, inside=obj[box[0]:box[1], box[2]:box[3]])


def crop_image(image: np.ndarray, roi: Roi) -> np.ndarray:
  top, bottom, left, right = roi.box
  return image[top:bottom, left:right] * roi.inside[..., None].astype(
      image.dtype)


def crop_mask(mask: np.ndarray, roi: Roi) -> np.ndarray:
  top, bottom, left, right = roi.box
  return mask[top:bottom, left:right]


def paste_map(amap: np.ndarray, shape: tuple[int, int],
              roi: Roi | None) -> np.ndarray:
  """A model-resolution anomaly map brought back onto its original image.

  Args:
    amap: float (h, w) map of the preprocessed image.
    shape: (H, W) of the original image.
    roi: the image's ROI, or None if it was not cropped.

  Returns:
    float32 (H, W): the map resized bilinearly to the crop (or the whole
    image) and 0 outside the peeled object.
  """
  if roi is None:
    return skimage.transform.resize(amap, shape, order=1,
                                    preserve_range=True).astype(np.float32)
  top, bottom, left, right = roi.box
  out = np.zeros(shape, np.float32)
  out[top:bottom, left:right] = skimage.transform.resize(
      amap, (bottom - top, right - left), order=1,
      preserve_range=True) * roi.inside
  return out
