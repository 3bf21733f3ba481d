"""A trained run as a detector: images in; maps, scores and decisions out.

  import aad
  detector = aad.Detector.load('runs/aesc_stain', category='brick')
  result = detector.predict(['part1.png', image_array])
  result.maps['residual'][0]        # float32 (H, W) at the image's size
  result.scores['residual']         # (N,) image scores per scorer
  result.decisions['residual']      # (N,) bool: score >= the threshold
  result.normalised_scores['residual']  # (N,) in [0, 1], 0.5 at it

Images are prepared as the run's training data were (`aad.data.
prepare_image`: ROI, resize, channels) and scored as `aad.evaluate` scores
test images, so a test image gets the figures of the run's report.
`python -m aad.predict` is a command line over this class, and
`python -m aad.export` freezes the same computation into one file.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import jax
import numpy as np

from aad import data
from aad.deploy import function
from aad import models
from aad.scoring import batch
from aad.experiment import testing
from aad.metrics import protocol
from aad.deploy import loader
from aad.runtime import parallel
from aad.experiment import workdir as workdir_lib
from aad.data import imageio
from aad.data import preprocess


Prediction = loader.Prediction


def as_uint8(image: Any, name: str) -> np.ndarray:
  """`exported.as_uint8`, its errors as DataError."""
  try:
    return loader.as_uint8(image, name)
  except ValueError as e:
    raise imageio.DataError(str(e)) from e


def read_images(images) -> tuple[list[np.ndarray], list[str]]:
  """(uint8 (H, W, 1 or 3) images, names) from file paths, arrays, or one
  (N, H, W, C) batch array."""
  if isinstance(images, np.ndarray) and images.ndim == 4:
    images = list(images)
  elif isinstance(images, (str, os.PathLike, np.ndarray)):
    images = [images]
  out, names = [], []
  for i, item in enumerate(images):
    if isinstance(item, (str, os.PathLike)):
      names.append(os.fspath(item))
      out.append(imageio.read_image(os.fspath(item)))
    else:
      names.append(f'image {i}')
      out.append(as_uint8(item, names[-1]))
  if not out:
    raise imageio.DataError('no images to score.')
  return out, names


def choose_category(workdir: str, category: str | None) -> str:
  """`category`, or the run's only trained one."""
  trained = workdir_lib.trained_categories(workdir)
  if category:
    return category
  if len(trained) == 1:
    return trained[0]
  raise imageio.DataError(
      f'{workdir} has models for {", ".join(trained) or "no category"}; '
      'choose one with --category.')


class Detector:
  """One category of a trained run, ready to score new images.

  `variables` are the checkpoint's; scoring reads `prepared_variables`.
  """

  def __init__(self, config, family, category: str, scorers, variables,
               fitted, thresholds: dict | None, best_step: int, devices):
    self.config = config
    self.family = family
    self.category = category
    self.scorers = scorers
    self.variables = variables
    self.fitted = fitted
    self.thresholds = thresholds
    self.best_step = best_step
    self.devices = devices
    self._call = self._replicated = None

  @classmethod
  def load(cls, workdir: str, category: str | None = None, *,
           mc_samples: int | None = None, num_devices: int = 0,
           need_thresholds: bool = True) -> Detector:
    """The run's best model of `category` (default: its only one), fitted
    scorers and calibrated thresholds (<category>/thresholds.json).

    Args:
      mc_samples: MC-dropout passes instead of the run's eval.mc_samples.
      num_devices: local devices to score on; 0 = all.
      need_thresholds: False loads a run that was never evaluated
        (thresholds None, no decisions).

    Raises:
      DataError: naming the file or flag, for a folder that is not a run, a
        missing checkpoint, thresholds or fitted scorers.
      UserError: for a run whose training did not end, naming the stage,
        the step it reached and the command that resumes it.
    """
    # Before the first compilation: a new process reads the executables an
    # earlier one compiled (docs/deploy.md, "Start-up time").
    loader.enable_compilation_cache()
    config = workdir_lib.load_config(workdir)
    if mc_samples is not None:
      if mc_samples < 1:
        raise imageio.DataError('--mc_samples must be at least 1.')
      config.eval.mc_samples = mc_samples
    family = models.create(config)
    scorers = testing.configured_scorers(config, family)
    category = choose_category(workdir, category)
    # A run killed before its last step: resuming it, not evaluating it,
    # gives the thresholds and the model to load.
    workdir_lib.check_finished(workdir, [category], config=config,
                               family=family)
    thresholds = None
    if need_thresholds:
      thresholds = workdir_lib.load_thresholds(workdir, category)
    variables, summary = workdir_lib.restore_best(config, family, workdir,
                                                  category)
    fitted = workdir_lib.load_fitted(workdir, category)
    return cls(config, family, category, scorers, variables, fitted, thresholds,
               summary['best_step'], parallel.select_devices(num_devices))

  def score(self, prepared: np.ndarray) -> tuple[dict, dict]:
    """(maps {scorer: (N, h, w)}, own image scores {scorer: (N,)}) of
    prepared images: `aad.evaluate.score`'s computation (the same MC-dropout
    keys), compiled once per Detector and chunk size.

    Chunks of eval.batch_size images per device are padded to a power of
    two, so calls of any length reuse a few compiled shapes.
    """
    if self._call is None:
      fn = function.model_fn(self.config, self.family, self.scorers)
      seed = batch.seed(self.config)  # evaluation's scoring key
      self._call = parallel.batched_call(
          lambda replicated, batch: fn(*replicated, batch[0], seed,
                                       batch[1]), self.devices)
      self._replicated = parallel.replicate(
          (self.prepared_variables, self.fitted), self.devices)
    step = self.config.eval.batch_size * len(self.devices)
    parts = []
    for start in range(0, len(prepared), step):
      chunk = prepared[start:start + step]
      size = min(step, 1 << (len(chunk) - 1).bit_length())
      pad = np.repeat(chunk[-1:], size - len(chunk), axis=0)
      out = self._call(self._replicated, (
          np.concatenate([chunk, pad]),
          np.arange(start, start + size, dtype=np.int32)))
      parts.append(jax.tree.map(lambda x, n=len(chunk): np.asarray(x)[:n],
                                jax.device_get(out)))
    return tuple({k: np.concatenate([p[i][k] for p in parts])
                  for k in parts[0][i]} for i in (0, 1))

  @functools.cached_property
  def prepared_variables(self):
    """The variables the family's outputs read (`family.prepare`: the fast
    convolutions' kernels built once, not in every call; the export builds
    its own, `archive.export_variables`)."""
    return self.family.prepare(self.variables, workdir_lib.model_input_shape(
        self.config, self.family))

  @property
  def map_scorers(self) -> list[str]:
    """The scorers with a map, in config order (the first is the headline
    of maps and masks)."""
    return [s.name for s in self.scorers if s.has_map]

  def prepare(self, images: Sequence[np.ndarray], names: Sequence[str]
              ) -> tuple[np.ndarray, list]:
    """(uint8 (N, h, w, C) as the model sees them, their ROIs or None)."""
    d = self.config.dataset
    prepared, rois = [], []
    for image, name in zip(images, names):
      ready, roi = data.prepare_image(
          image, name, size=data.image_size(d), channels=d.channels,
          roi=d.roi, roi_margin=d.roi_margin)
      prepared.append(ready)
      rois.append(roi)
    return np.stack(prepared), rois

  def predict(self, images) -> Prediction:
    """Scores images: file paths, uint8 or [0, 1] float arrays of any size
    ((H, W), (H, W, 1/3/4)), or one (N, H, W, C) array.

    MC-dropout passes use the keys aad.evaluate uses: image i of this call
    gets fold_in(key(config.seed + 2), i).
    """
    originals, names = read_images(images)
    return self.predict_arrays(originals, names)

  def predict_arrays(self, originals: Sequence[np.ndarray],
                     names: Sequence[str]) -> Prediction:
    """`predict` on images already read (uint8 (H, W, C))."""
    prepared, rois = self.prepare(originals, names)
    model_maps, own = self.score(prepared)
    norm, sigma = self.config.eval.norm, self.config.eval.smooth_sigma
    full = self.config.eval.resolution == 'original'
    maps = {s: [preprocess.paste_map(model_maps[s][i], image.shape[:2],
                                     rois[i])
                for i, image in enumerate(originals)]
            for s in self.map_scorers}
    scores = {}
    for s in self.scorers:
      if s.has_map:
        # At the resolution the thresholds were calibrated at.
        scores[s.name] = np.array([float(protocol.reduce(
            (maps[s.name][i] if full else model_maps[s.name][i])[None],
            norm, sigma)[0]) for i in range(len(originals))])
      else:
        scores[s.name] = np.asarray(own[s.name], np.float64)
    thresholds = self.thresholds or {'image': {}, 'pixel': {}}
    decisions = {k: scores[k] >= t for k, t in thresholds['image'].items()
                 if k in scores}
    normalised = {k: protocol.normalise(scores[k], t, span)
                  for k, (t, span) in protocol.normalisation(
                      thresholds).items() if k in scores}
    return Prediction(maps=maps,
                      model_maps={k: model_maps[k] for k in maps},
                      scores=scores, decisions=decisions,
                      thresholds=thresholds, normalised_scores=normalised)
