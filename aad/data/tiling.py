"""Patch mode: cutting images into overlapping tiles and stitching maps back.

For images too large or too elongated for one pass, the model trains on
random patches (aad/training) and scores tiles `stride` apart; each pixel's
map value is the mean over the tiles that cover it. One implementation for
both sides: on numpy arrays (evaluation tiles on the host and scores the
tiles in batches) and on jax arrays (the exported detector tiles inside
jit); only the in-place update is spelled per array type.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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


def _numpy_of(array):
  """jax.numpy for jax arrays (tracers included), numpy otherwise."""
  return jnp if isinstance(array, jax.Array) else np


def _add(total, where, values):
  """total[where] += values: in place for numpy, functional for jax."""
  if isinstance(total, jax.Array):
    return total.at[where].add(values)
  total[where] += values
  return total


def extract(images, patch: int, stride: int):
  """(N, H, W, C) -> (N * T, patch, patch, C), image-major; numpy or jax
  (static positions)."""
  tiles = [images[:, y:y + patch, x:x + patch]
           for y, x in grid(images.shape[1:3], patch, stride)]
  return _numpy_of(images).stack(tiles, axis=1).reshape(
      (-1, patch, patch) + images.shape[3:])


def window(patch: int, margin: float) -> np.ndarray:
  """(patch, patch) float32 tile weights: 1 at least `margin` px inside the
  tile, falling linearly towards its edges (never to 0); all 1 for
  margin 0."""
  if margin <= 0:
    return np.ones((patch, patch), np.float32)
  inside = np.arange(patch) + 0.5
  ramp = np.minimum(1.0, np.minimum(inside, patch - inside) / margin)
  return np.outer(ramp, ramp).astype(np.float32)


def stitch(tiles, shape: tuple[int, int], stride: int, margin: float = 0.0):
  """Averages per-tile maps over their overlaps.

  Args:
    tiles: (N * T, p, p, ...) maps of `extract`'s tiles, in its order;
      numpy or jax.
    shape: (H, W) of the images.
    stride: the stride `extract` used.
    margin: px; > 0 weights each tile by `window`, so that where tiles
      overlap a pixel is taken mostly from those that hold it away from
      their edges (a network's zero padding shows at a tile's edges, a
      grid in the stitched map). A pixel only one tile covers keeps that
      tile's value.

  Returns:
    (N, H, W, ...) float32 of the tiles' array type: each pixel the
    (weighted) mean of the tiles covering it.
  """
  patch = tiles.shape[1]
  starts = grid(shape, patch, stride)
  tiles = tiles.reshape((-1, len(starts)) + tiles.shape[1:])
  weights = window(patch, margin)
  weighted = weights.reshape(weights.shape + (1,) * (tiles.ndim - 4))
  total = _numpy_of(tiles).zeros(
      (tiles.shape[0],) + tuple(shape) + tiles.shape[4:], np.float32)
  count = np.zeros(tuple(shape), np.float32)
  for t, (y, x) in enumerate(starts):
    tile = tiles[:, t] if margin <= 0 else tiles[:, t] * weighted
    total = _add(total, (slice(None), slice(y, y + patch),
                         slice(x, x + patch)), tile)
    count[y:y + patch, x:x + patch] += weights
  return total / count.reshape(count.shape + (1,) * (total.ndim - 3))


def tile_count(shape: tuple[int, int], patch: int, stride: int) -> int:
  """Tiles per image of `shape` (H, W)."""
  return len(grid(shape, patch, stride))


def untile(outputs: dict, shape: tuple[int, int], patch: int,
           stride: int, margin: float = 0.0) -> dict:
  """Per-tile outputs back per image: those with the tiles' (patch, patch)
  spatial axes stitched to (N, H, W, ...) (`stitch`, with `margin`); the
  others, such as sampled 'activations' (tiles, L, V), grouped as (N,
  tiles per image, ...), for scorers that handle tiles. numpy or jax."""
  count = tile_count(shape, patch, stride)

  def spatial(v):
    return v.ndim >= 3 and tuple(v.shape[1:3]) == (patch, patch)

  return {k: stitch(v, shape, stride, margin) if spatial(v)
          else v.reshape((v.shape[0] // count, count) + v.shape[1:])
          for k, v in outputs.items()}
