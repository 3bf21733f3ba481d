"""Patch mode: cutting images into overlapping tiles and stitching maps back.

For images too large or too elongated for one pass, the model trains on
random patches (aad/train.py) and scores tiles `stride` apart; each pixel's
map value is the mean over the tiles that cover it. Host-side numpy: the
tiles are scored by the usual on-device score function.
"""

from __future__ import annotations

import numpy as np


def positions(length: int, patch: int, stride: int) -> list[int]:
  """Tile starts along one axis: every `stride`, plus one flush with the
  end, so every pixel is covered."""
  if patch > length:
    raise ValueError(f'patch size {patch} exceeds the image side {length}; '
                     'lower config.dataset.patch_size or raise image_size.')
  if stride < 1:
    raise ValueError(f'tile stride must be positive, not {stride}.')
  starts = list(range(0, length - patch + 1, stride))
  if starts[-1] != length - patch:
    starts.append(length - patch)
  return starts


def grid(shape: tuple[int, int], patch: int, stride: int
         ) -> list[tuple[int, int]]:
  """(top, left) of every tile of an image of `shape` (H, W)."""
  return [(y, x) for y in positions(shape[0], patch, stride)
          for x in positions(shape[1], patch, stride)]


def extract(images: np.ndarray, patch: int, stride: int) -> np.ndarray:
  """(N, H, W, C) -> (N * T, patch, patch, C), image-major."""
  tiles = [images[:, y:y + patch, x:x + patch]
           for y, x in grid(images.shape[1:3], patch, stride)]
  return np.stack(tiles, axis=1).reshape((-1, patch, patch) +
                                         images.shape[3:])


def stitch(tiles: np.ndarray, shape: tuple[int, int], stride: int
           ) -> np.ndarray:
  """Averages per-tile maps over their overlaps.

  Args:
    tiles: (N * T, p, p, ...) maps of `extract`'s tiles, in its order.
    shape: (H, W) of the images.
    stride: the stride `extract` used.

  Returns:
    (N, H, W, ...) float32: each pixel the mean of the tiles covering it.
  """
  patch = tiles.shape[1]
  starts = grid(shape, patch, stride)
  tiles = tiles.reshape((-1, len(starts)) + tiles.shape[1:])
  total = np.zeros((len(tiles),) + tuple(shape) + tiles.shape[4:],
                   np.float32)
  count = np.zeros(tuple(shape), np.float32)
  for t, (y, x) in enumerate(starts):
    total[:, y:y + patch, x:x + patch] += tiles[:, t]
    count[y:y + patch, x:x + patch] += 1
  return total / count.reshape(count.shape + (1,) * (total.ndim - 3))
