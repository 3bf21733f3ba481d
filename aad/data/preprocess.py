"""Host-side preprocessing of uint8 image batches: resizing, channels.

Pure numpy / scikit-image; no JAX and no TensorFlow. Images are (N, H, W, C)
uint8 and masks (N, H, W) uint8 with values 0/1 throughout.
"""

import numpy as np
import skimage.transform

# ITU-R BT.601 luma weights for R, G, B (what PIL's 'L' mode uses).
REC601_LUMA = np.array([0.299, 0.587, 0.114])


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """Resizes images to size x size, bilinear with anti-aliasing.

  Args:
    images: uint8 (N, H, W, C).
    size: output height and width.

  Returns:
    uint8 (N, size, size, C); the input itself if it already has that size.
  """
  if images.shape[1:3] == (size, size):
    return images
  out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
  for i, image in enumerate(images):
    # anti_aliasing only smooths when shrinking; preserve_range keeps 0..255.
    resized = skimage.transform.resize(
        image, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    out[i] = np.clip(np.round(resized), 0, 255)
  return out


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
  """Resizes binary masks to size x size with nearest-neighbour sampling.

  Args:
    masks: (N, H, W) with values 0/1 (any integer or boolean dtype).
    size: output height and width.

  Returns:
    uint8 (N, size, size) with values 0/1.
  """
  masks = (np.asarray(masks) > 0).astype(np.uint8)
  if masks.shape[1:3] == (size, size):
    return masks
  out = np.empty((len(masks), size, size), np.uint8)
  for i, mask in enumerate(masks):
    # Nearest neighbour without smoothing keeps the mask binary; the
    # threshold guards against any interpolation round-off.
    resized = skimage.transform.resize(
        mask, (size, size), order=0, anti_aliasing=False, preserve_range=True)
    out[i] = resized > 0.5
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
