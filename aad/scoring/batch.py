"""The scoring of one batch, as pure JAX functions: the family's outputs
of uint8 images with their Monte-Carlo-dropout keys, then the scorers' maps
and own image scores from the images and those outputs.

One implementation for every path: evaluation (aad/experiment/testing.py)
calls `outputs` and `maps` per device batch, tiling on the host in patch
mode and bringing each batch's outputs back to the host, so large images
never sit on a device whole; the Detector and the exported function
(aad/deploy/function.py) run `image_fn`, the same pieces with the tiling
inside jit. Identical keys give identical draws on every path.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from aad.data import tiling
from aad.scoring import ops
from aad import scoring

# Scoring draws its MC-dropout keys from key(config.seed + SEED_OFFSET)
# (training uses seed and seed + 1).
SEED_OFFSET = 2


def seed(config) -> int:
  """The seed of the scoring keys of a run."""
  return config.seed + SEED_OFFSET


def image_keys(key: jax.Array | None, indices) -> jax.Array | None:
  """One MC-dropout key per image, fold_in(key, the image's index in the
  scored list); None without a key (no random draws)."""
  return None if key is None else ops.image_keys(key, indices)


def tile_indices(indices, count: int):
  """The indices of the tiles of images `indices` (N,) in patch mode, each
  image's `count` tiles in `tiling.extract`'s order: index * count + tile.
  numpy or jax, as `indices`."""
  return (indices[:, None] * count +
          np.arange(count, dtype=indices.dtype)).reshape(-1)


def outputs(family, variables, images, keys, wanted: frozenset[str]) -> dict:
  """The family's `wanted` outputs of uint8 `images` (N, H, W, C), image i
  drawing its MC-dropout passes from keys[i] (None: no draws); `variables`
  from `family.prepare`, as everywhere here."""
  out = family.outputs(variables, ops.to_float(images), keys, wanted)
  return {k: v for k, v in out.items() if k in wanted}


def scorer_inputs(scorers, outputs: dict) -> dict:
  """The outputs the scorers' maps read (their `needs`)."""
  used = set().union(*(s.needs for s in scorers))
  return {k: v for k, v in outputs.items() if k in used}


def maps_fn(scorers, cfg) -> Callable:
  """fn(fitted, images, outputs) -> {'maps': {scorer: (N, H, W)},
  'image': {scorer: (N,)}}: `scorers_lib.make_maps_fn` on the outputs the
  scorers read."""
  fn = scoring.make_maps_fn(scorers, cfg)

  def maps(fitted, images, outputs):
    return fn(fitted, (images, scorer_inputs(scorers, outputs)))

  return maps


def image_fn(family, scorers, cfg, *, patch: int = 0,
             stride: int = 0, margin: float = 0.0) -> Callable:
  """fn(variables, fitted, uint8 images (N, H, W, C), key, indices) ->
  (outputs, {'maps', 'image'}) of whole images, in one pure function.

  In patch mode (patch > 0) the images are cut into tiles `stride` apart,
  tile t of image i drawing from fold_in(key, indices[i] * tiles + t), and
  the outputs are brought back per image (`tiling.untile`, tiles weighted
  by `margin`). key None draws
  nothing (indices are then unused).
  """
  wanted = scoring.needed_outputs(scorers)
  maps = maps_fn(scorers, cfg)

  def fn(variables, fitted, images, key, indices):
    if patch:
      shape = images.shape[1:3]
      tiles = tiling.extract(images, patch, stride)
      if key is not None:
        indices = tile_indices(indices, tiling.tile_count(shape, patch,
                                                          stride))
      out = outputs(family, variables, tiles, image_keys(key, indices),
                    wanted)
      out = tiling.untile(out, shape, patch, stride, margin)
    else:
      out = outputs(family, variables, images, image_keys(key, indices),
                    wanted)
    return out, maps(fitted, images, out)

  return fn


def patch_stride(dataset_config) -> tuple[int, int]:
  """(patch size, tile stride) of config.dataset; (0, 0) without patch
  mode. The stride defaults to half a patch."""
  patch = dataset_config.patch_size
  if not patch:
    return 0, 0
  return patch, dataset_config.patch_stride or max(1, patch // 2)
