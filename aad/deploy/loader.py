"""Loading and running an exported detector (`python -m aad.export`).

  from aad.deploy import loader
  detector = loader.load('brick.aad')         # StableHLO, needs only jax
  result = detector.predict([image, ...])     # uint8 or [0, 1] float arrays
  result.maps['residual'][0], result.scores['residual'],
  result.normalised_scores['residual'], result.decisions['residual']

  detector = loader.load('brick.onnx')        # needs only onnxruntime

This module imports numpy and the standard library at import time, and jax
(or onnxruntime) only when a file is loaded; it never imports Flax, optax,
orbax, TensorFlow or aad's training code, so it runs where only jax (or
only onnxruntime) is installed: copy this file beside the artifact.

The .aad file is a zip: detector.json (scorers, thresholds, sizes, the
MC-dropout seed, versions) and one `jax.export` serialisation per input
channel count (1: grey, 3: RGB), each with symbolic batch, height and
width. A call takes uint8 images of one size (N, H, W, C), a seed and one
index per image: image i's MC-dropout passes use the key
fold_in(key(seed), indices[i]), so the default seed (the run's
config.seed + 2) and indices 0..N-1 give the figures of `aad.Detector`
on the same list, and the result of an image does not depend on the batch
it is in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

METADATA = 'detector.json'
FORMAT = 'aad-detector/1'
CACHE_ENV = 'AAD_CACHE_DIR'


def user_cache_dir() -> str:
  """The per-user folder of compiled detectors: $AAD_CACHE_DIR, else
  $XDG_CACHE_HOME/aad/xla, else ~/.cache/aad/xla."""
  if os.environ.get(CACHE_ENV):
    return os.environ[CACHE_ENV]
  root = (os.environ.get('XDG_CACHE_HOME')
          or os.path.join(os.path.expanduser('~'), '.cache'))
  return os.path.join(root, 'aad', 'xla')


def enable_compilation_cache(path: str | None = None) -> str | None:
  """Points JAX's persistent compilation cache at `path` (default
  `user_cache_dir()`) unless the process already has one (e.g. the user's
  JAX_COMPILATION_CACHE_DIR), so a new process reuses the executables an
  earlier one compiled instead of compiling them again. JAX's cache key
  covers the HLO, the compile options, the jax/jaxlib versions and the
  backend: an entry from another model, version or machine is never used.

  Every executable is kept however quickly it compiled (unless
  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS is set). Takes effect for the
  compilations after the call. $AAD_CACHE_DIR=off (or 0) turns it off; a
  folder that cannot be written leaves the cache off (one debug log line).

  Returns:
    The cache folder in use (the user's own if set), or None.
  """
  import jax  # pylint: disable=g-import-not-at-top
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  if os.environ.get(CACHE_ENV, '').lower() in ('off', '0', 'false', 'none'):
    return None
  path = path or user_cache_dir()
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    logging.getLogger(__name__).debug(
        'aad: no compilation cache (%s is not writable: %s)', path, e)
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return path


@dataclasses.dataclass(frozen=True)
class Prediction:
  """Maps, scores and decisions for N images (also `aad.Detector`'s).

  Attributes:
    maps: {scorer: N float32 maps, each at its image's own size} for the
      scorers with a map.
    model_maps: {scorer: float32 (N, h, w)} the same at the model's size.
    scores: {scorer: (N,)}: the run's eval.norm of the map (at the model
      size, or the image's with eval.resolution='original'); a scorer
      without a map has its own image score.
    decisions: {scorer: bool (N,)}: score >= the scorer's image threshold.
    thresholds: {'image': {scorer: t}, 'pixel': {scorer: t}, ...}.
    normalised_scores: {scorer: (N,)} in [0, 1], 0.5 at the scorer's image
      threshold t: clip((score - t) / span + 0.5, 0, 1), span the spread
      (max - min) of the good validation scores at calibration (see
      docs/deploy.md); for the scorers with a threshold. Empty from an
      export written before it existed.
  """
  maps: dict[str, list[np.ndarray]]
  model_maps: dict[str, np.ndarray]
  scores: dict[str, np.ndarray]
  decisions: dict[str, np.ndarray]
  thresholds: dict[str, dict[str, float]]
  normalised_scores: dict[str, np.ndarray] = dataclasses.field(
      default_factory=dict)


def as_uint8(image: Any, name: str) -> np.ndarray:
  """An image array as uint8 (H, W, 1 or 3): uint8 as it is, floats in
  [0, 1] times 255, rounded; (H, W) gets a channel axis, RGBA drops alpha.

  Raises:
    ValueError: naming `name`, for other dtypes, shapes or value ranges.
  """
  array = np.asarray(image)
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or not all(
      array.shape[:2]):
    raise ValueError(f'{name}: an image array must be (H, W), (H, W, 1), '
                     f'(H, W, 3) or (H, W, 4); got shape {array.shape}.')
  array = array[..., :3]
  if array.dtype == np.uint8:
    return array
  if np.issubdtype(array.dtype, np.floating):
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
      raise ValueError(f'{name}: float images must lie in [0, 1] (got '
                       f'{np.nanmin(array):g}..{np.nanmax(array):g}); scale '
                       'them or pass uint8.')
    return np.round(array * 255).astype(np.uint8)
  raise ValueError(f'{name}: image arrays must be uint8 or float in [0, 1]; '
                   f'got {array.dtype}.')


def image_list(images) -> list[np.ndarray]:
  """uint8 (H, W, 1 or 3) images from arrays or one (N, H, W, C) array."""
  if isinstance(images, np.ndarray) and images.ndim == 4:
    images = list(images)
  elif isinstance(images, np.ndarray):
    images = [images]
  out = [as_uint8(image, f'image {i}') for i, image in enumerate(images)]
  if not out:
    raise ValueError('no images to score.')
  return out


def _groups(images: list[np.ndarray], batch: int):
  """Index arrays of images of one shape, at most `batch` each."""
  by_shape = {}
  for i, image in enumerate(images):
    by_shape.setdefault(image.shape, []).append(i)
  for members in by_shape.values():
    for start in range(0, len(members), batch):
      yield np.array(members[start:start + batch])


def _assemble(parts, count: int, meta: dict) -> Prediction:
  """One Prediction from per-group outputs [(indices, outputs)]."""
  maps = {s: [None] * count for s in meta['map_scorers']}
  model_maps, scores, decisions, normalised = {}, {}, {}, {}
  for index, out in parts:
    for s in maps:
      for j, i in enumerate(index):
        maps[s][i] = np.asarray(out['maps'][s][j])
      model = np.asarray(out['model_maps'][s])
      model_maps.setdefault(s, np.zeros((count,) + model.shape[1:],
                                        model.dtype))[index] = model
    for kind, target in (('scores', scores), ('decisions', decisions),
                         ('normalised_scores', normalised)):
      for s, v in out.get(kind, {}).items():
        v = np.asarray(v)
        target.setdefault(s, np.zeros(count, v.dtype))[index] = v
  return Prediction(maps=maps, model_maps=model_maps, scores=scores,
                    decisions=decisions, thresholds=meta['thresholds'],
                    normalised_scores=normalised)


class ExportedDetector:
  """A .aad file's detector, run with jax (any platform it was exported
  for: see `metadata['platforms']`)."""

  def __init__(self, metadata: dict, modules: dict[int, Any]):
    self.metadata = metadata
    self._modules = modules
    self._calls = {}

  @property
  def thresholds(self) -> dict:
    return self.metadata['thresholds']

  def predict(self, images, *, seed: int | None = None, indices=None,
              batch_size: int | None = None) -> Prediction:
    """Scores uint8 or [0, 1] float arrays of any sizes ((H, W), (H, W, 1/3/
    4)) or one (N, H, W, C) array.

    Args:
      seed: MC-dropout seed; default the run's (metadata['seed']).
      indices: one int per image for its MC-dropout key; default 0..N-1.
      batch_size: images per call; default the run's eval.batch_size.
        Images of different sizes go in separate calls; a call's images are
        padded to a power of two (at most batch_size), so calls of any
        length reuse a few compiled shapes. Each new image size (or power
        of two) compiles once per process, or is read from the
        compilation cache (`enable_compilation_cache`).
    """
    import jax  # pylint: disable=g-import-not-at-top
    images = image_list(images)
    seed = self.metadata['seed'] if seed is None else seed
    indices = (np.arange(len(images)) if indices is None
               else np.asarray(indices))
    if indices.shape != (len(images),):
      raise ValueError(f'indices: one per image ({len(images)}); got shape '
                       f'{indices.shape}.')
    batch = batch_size or self.metadata['batch_size']
    parts = []
    for group in _groups(images, batch):
      channels = images[group[0]].shape[-1]
      if channels not in self._calls:
        self._calls[channels] = jax.jit(self._modules[channels].call)
      size = min(batch, 1 << (len(group) - 1).bit_length())
      padded = np.concatenate([group, np.repeat(group[-1:],
                                                size - len(group))])
      out = self._calls[channels](
          np.stack([images[i] for i in padded]), np.int32(seed),
          indices[padded].astype(np.int32))
      out = jax.tree.map(lambda x, n=len(group): np.asarray(x)[:n], out)
      parts.append((group, out))
    return _assemble(parts, len(images), self.metadata)


class OnnxDetector:
  """An ONNX export (`python -m aad.export --onnx=FILE`) run with
  onnxruntime: uint8 images at the model's size and channels, the scorers
  listed in its metadata (those without random draws)."""

  def __init__(self, path: str):
    import onnxruntime  # pylint: disable=g-import-not-at-top
    self.session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    meta = self.session.get_modelmeta().custom_metadata_map
    self.metadata = json.loads(meta['aad'])
    self._outputs = [o.name for o in self.session.get_outputs()]

  @property
  def thresholds(self) -> dict:
    return self.metadata['thresholds']

  def predict(self, images) -> Prediction:
    """Scores uint8 or [0, 1] float images already at the model's size and
    channels (metadata['image_size'], ['channels']): resizing and channel
    conversion are not in the ONNX graph (see README)."""
    images = image_list(images)
    size = tuple(self.metadata['image_size']) + (self.metadata['channels'],)
    for i, image in enumerate(images):
      if image.shape != size:
        raise ValueError(f'image {i}: the ONNX detector takes {size} uint8 '
                         f'images; got {image.shape}. Resize them as '
                         'aad.data.prepare_image does, or use the .aad file.')
    values = self.session.run(self._outputs, {'images': np.stack(images)})
    out = {'maps': {}, 'model_maps': {}, 'scores': {}, 'decisions': {},
           'normalised_scores': {}}
    for name, value in zip(self._outputs, values):
      kind, scorer = name.split('.', 1)
      out[kind][scorer] = value
    out['maps'] = dict(out['model_maps'])
    return _assemble([(np.arange(len(images)), out)], len(images),
                     self.metadata)


def read_archive(path: str) -> tuple[dict, dict[str, bytes]]:
  """(metadata, {member: bytes}) of a .aad file.

  Raises:
    ValueError: naming the file, if it is not an exported detector.
  """
  try:
    with zipfile.ZipFile(path) as archive:
      meta = json.loads(archive.read(METADATA))
      blobs = {name: archive.read(name)
               for name in meta.get('modules', {}).values()}
  except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
    raise ValueError(f'{path}: not an exported aad detector ({e}); write one '
                     'with python -m aad.export.') from e
  if meta.get('format') != FORMAT:
    raise ValueError(f'{path}: format {meta.get("format")!r}, this loader '
                     f'reads {FORMAT!r}.')
  return meta, blobs


def load(path: str) -> ExportedDetector | OnnxDetector:
  """The detector in `path`: a .aad file (jax) or a .onnx file
  (onnxruntime).

  Raises:
    ValueError: naming the file, if it is missing or not a detector.
  """
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such file.')
  if path.endswith('.onnx'):
    return OnnxDetector(path)
  meta, blobs = read_archive(path)
  enable_compilation_cache()  # before the first compilation
  from jax import export  # pylint: disable=g-import-not-at-top
  modules = {int(c): export.deserialize(bytearray(blobs[name]))
             for c, name in meta['modules'].items()}
  return ExportedDetector(meta, modules)
