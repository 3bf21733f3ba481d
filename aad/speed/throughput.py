"""Throughput of training, inference, MC dropout and scoring on this machine.

Used by `python -m aad.benchmark --config=...` and `--families`. Every
figure is a median over timed repeats after a warm-up call, with
`block_until_ready` so that asynchronous dispatch does not flatter it; data
are random images of the configured size already on the device(s).
Inference and scoring read the trained variables prepared once
(`family.prepare`, as aad.evaluate, aad.Detector and the export do).
"""

import resource
import statistics
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np

from aad import models
from aad.models import layers
from aad.runtime import parallel
from aad.scoring import batch as score_batch
from aad import scoring
from aad.scoring import ops
from aad.training import step as step_lib


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `repeats` later calls)."""
  first, times = _rounds({'call': fn}, repeats)
  return first['call'], statistics.median(times['call'])


def _flops(fn: Callable, *args) -> float | None:
  """FLOPs of one call of the jitted `fn` from XLA's cost analysis."""
  try:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None  # Not every backend reports costs; the figure is optional.
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


class _ScoringCall:
  """One batch's whole scoring call for a list of scorers: the family
  outputs they need (from prepared `variables`) and their maps and image
  scores, on `devices`."""

  def __init__(self, config, family, variables, images, names, devices):
    scorers = scoring.resolve(names, family)
    self.scorers, self.names = scorers, [s.name for s in scorers]
    keys = ops.image_keys(jax.random.key(1), np.arange(len(images)))
    fit_wanted = scoring.fit_outputs(scorers)
    train_outputs = jax.device_get(jax.jit(
        lambda v, x: family.outputs(v, x, keys, fit_wanted))(
            variables, ops.to_float(images))) if fit_wanted else None
    fitted = scoring.fit(scorers, images, train_outputs, config.eval)
    self.fitted = fitted
    wanted = scoring.needed_outputs(scorers)
    maps = score_batch.maps_fn(scorers, config.eval)

    def score_fn(replicated, part):
      v, fitted = replicated
      images, indices = part
      out = score_batch.outputs(
          family, v, images, ops.image_keys(jax.random.key(1), indices),
          wanted)
      return maps(fitted, images, out)

    self._call = parallel.batched_call(score_fn, devices)
    self._replicated = parallel.replicate((variables, fitted), devices)
    self._batch = (images, np.arange(len(images)))

  def __call__(self):
    return self._call(self._replicated, self._batch)


def _rounds(calls: dict[str, Callable[[], Any]], repeats: int
            ) -> tuple[dict[str, float], dict[str, list[float]]]:
  """({name: seconds of the first call}, {name: seconds of each of
  `repeats` later calls}), the calls taking turns in each round."""
  first, times = {}, {name: [] for name in calls}
  for name, fn in calls.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first[name] = time.perf_counter() - t0
  for _ in range(repeats):
    for name, fn in calls.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
  return first, times


def _setting(config: ml_collections.ConfigDict, devices
             ) -> tuple[np.ndarray, dict]:
  """(random uint8 images: 4 training batches, the figures' header: the
  devices, sizes and model)."""
  size, channels = config.dataset.image_size, config.dataset.channels
  batch = config.train.batch_size
  rng = np.random.default_rng(0)
  data = rng.integers(0, 256, (4 * batch, size, size, channels),
                      dtype=np.uint8)
  return data, {'device': devices[0].device_kind,
                'platform': devices[0].platform,
                'num_devices': len(devices), 'image_size': size,
                'channels': channels, 'batch_size': batch,
                'model': config.model.name}


def _trained_and_prepared(config, family, data, devices, repeats
                          ) -> tuple[dict, dict, dict]:
  """(trained variables, them prepared for inference, the training and
  preparation figures). prepared: inference reads fast-form kernels built
  once (prepared_kernels of them, in prepare_s seconds); False when the
  family has none (e.g. bergmann, or conv_impl='plain')."""
  trained, figures = _training(config, family, data, devices, repeats)
  t0 = time.perf_counter()
  prepared = jax.block_until_ready(family.prepare(trained, data.shape[1:]))
  count = layers.prepared_kernels(prepared)
  figures.update(prepare_s=time.perf_counter() - t0, prepared=count > 0,
                 prepared_kernels=count)
  return trained, prepared, figures


def run(config: ml_collections.ConfigDict, repeats: int = 5,
        versus: tuple[str, ...] | None = None) -> dict:
  """Measures the configured model; returns a flat dict of figures.

  Training times the first stage of the family; inference its
  deterministic reconstruction; scoring the whole scoring call of the
  configured scorers (for AESc: reconstruction, T MC-dropout passes,
  residual and variance maps), both with the prepared variables. With
  `versus` (a list of scorer names) that list's scoring call is timed in
  the same rounds, and score_cost_ratio is the configured scorers' time
  over its time.
  """
  devices = parallel.select_devices(config.num_devices)
  data, result = _setting(config, devices)
  batch = config.train.batch_size
  result['mc_samples'] = config.eval.mc_samples
  family = models.create(config,
                         axis_name=parallel.reduce_axis(len(devices)))
  trained, prepared, figures = _trained_and_prepared(config, family, data,
                                                     devices, repeats)
  result.update(figures)
  # Inference and scoring on one batch per device call (the family's
  # inference networks do not use the training device axis).
  result.update(_inference(family, prepared, data[:batch], repeats))
  scoring, figures = _scoring(config, family, prepared, data[:batch],
                              devices, versus, repeats)
  result.update(figures)
  result.update(detector_speed(config, family, trained, scoring.fitted,
                               scoring.scorers, devices, data[:batch],
                               repeats))
  result['peak_rss_gib'] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                            / 2**20)
  return result


def families(config: ml_collections.ConfigDict, names: tuple[str, ...],
             repeats: int = 2) -> Iterator[dict]:
  """Per family of `names` (config.model.name set to each, the rest of
  `config` shared): training images/s of its first stage and inference
  images/s of its reconstruction with the prepared variables, one dict
  each as it is measured; a family whose size rule the image size breaks
  gets {'skipped': why}."""
  devices = parallel.select_devices(config.num_devices)
  for name in names:
    config = config.copy_and_resolve_references()
    config.model.name = name
    data, result = _setting(config, devices)
    family = models.create(config,
                           axis_name=parallel.reduce_axis(len(devices)))
    try:
      family.check_size(*data.shape[1:3], 'the image size')
    except ValueError as e:
      yield {**result, 'skipped': str(e)}
      continue
    _, prepared, figures = _trained_and_prepared(config, family, data,
                                                 devices, repeats)
    yield {**result, **figures,
           **_inference(family, prepared, data[:config.train.batch_size],
                        repeats)}


def _training(config, family, data, devices, repeats) -> tuple[dict, dict]:
  """(variables after the timed steps, figures) of the real chunk function
  (sampling, corruption, step) of the family's first stage."""
  batch = config.train.batch_size
  stage = family.stages[0]
  variables = step_lib.init_variables(family, config, data.shape[1:])
  state = parallel.replicate(
      step_lib.create_train_state(stage, variables, config), devices)
  steps = config.train.steps_per_call
  chunk = parallel.replicated_call(
      step_lib.make_train_chunk(
          stage, batch_size=batch, num_devices=len(devices),
          num_steps=steps, unroll=devices[0].platform == 'cpu'), devices)
  on_device = parallel.replicate(data, devices)
  frozen = parallel.replicate(
      {n: v for n, v in variables.items() if n not in stage.nets}, devices)
  key = jax.random.key(0)
  holder = {'state': state}

  def train_call():
    holder['state'], metrics = chunk(holder['state'], on_device, frozen, key)
    return metrics

  first, median = _timed(train_call, repeats)
  variables = {**variables, **step_lib.state_variables(
      jax.device_get(holder['state']))}
  return variables, {'train_compile_s': first - median,
                     'train_images_per_s': steps * batch / median}


def _inference(family, variables, images, repeats) -> dict:
  """Figures of the deterministic reconstruction of one batch, jitted,
  with prepared `variables`."""
  batch = len(images)
  x = images.astype(np.float32) / 255.0
  keys = ops.image_keys(jax.random.key(1), np.arange(batch))
  reconstruct = lambda v, x: family.outputs(
      v, x, keys, frozenset({'reconstruction'}))['reconstruction']
  infer = jax.jit(reconstruct)
  first, median = _timed(lambda: infer(variables, x), repeats)
  result = {'infer_compile_s': first - median,
            'infer_images_per_s': batch / median}
  flops = _flops(reconstruct, variables, x)
  if flops:
    result['infer_gflops_per_s'] = flops / median / 1e9
  return result


def _scoring(config, family, variables, images, devices, versus, repeats):
  """(the configured scorers' _ScoringCall, figures), with `versus`'s call
  timed in the same rounds."""
  batch = len(images)
  calls = {name: _ScoringCall(config, family, variables, images, names,
                              devices)
           for name, names in (('score', config.eval.scorers),
                               ('versus', versus)) if names is not None}
  first, times = _rounds(calls, max(1, repeats // 2))
  median = {name: statistics.median(t) for name, t in times.items()}
  result = {'score_compile_s': first['score'] - median['score'],
            'score_images_per_s': batch / median['score'],
            'scorers': calls['score'].names}
  if 'versus' in calls:
    # Timed in the same loop, call after call, so that the machine's drift
    # moves both alike (speed is a ratio measured side by side); the ratio
    # is the median of each round's, so that a round slowed by another
    # job counts once, as one outlying ratio, instead of shifting both
    # medians.
    result['versus_scorers'] = calls['versus'].names
    result['versus_images_per_s'] = batch / median['versus']
    result['score_cost_ratio'] = statistics.median(
        s / v for s, v in zip(times['score'], times['versus']))
  return calls['score'], result


def detector_speed(config: ml_collections.ConfigDict, family, variables,
                   fitted,
                   scorers, devices, images: np.ndarray,
                   repeats: int) -> dict:
  """Images/s of the whole detector on `images` (uint8, the model's size):
  `aad.Detector.predict` in this process (host preparation, the scoring
  call, maps pasted back, scores, decisions) and the same detector exported
  with `jax.export`, deserialised and run by `aad.deploy.loader` (everything in
  the one compiled call)."""
  # pylint: disable=g-import-not-at-top
  from aad.deploy import detector as detector_lib
  from aad.deploy import archive
  from aad.deploy import loader
  thresholds = {kind: {s.name: 0.5 for s in scorers}
                for kind in ('image', 'pixel')}
  detector = detector_lib.Detector(config, family, 'benchmark', scorers,
                                   variables,
                                   fitted, thresholds, 0, devices)
  images = list(images)
  first, median = _timed(lambda: detector.predict(images),
                         max(1, repeats // 2))
  out = {'detector_compile_s': first - median,
         'detector_images_per_s': len(images) / median}
  t0 = time.perf_counter()
  modules, _ = archive.export_stablehlo(
      detector, platforms=(devices[0].platform,),
      input_channels=(config.dataset.channels,))
  out['export_s'] = time.perf_counter() - t0
  frozen = loader.ExportedDetector(
      {**archive.metadata(detector, ''), 'batch_size': len(images)},
      {c: jax.export.deserialize(bytearray(m)) for c, m in modules.items()})
  first, median = _timed(lambda: frozen.predict(images), max(1, repeats // 2))
  out['exported_compile_s'] = first - median
  out['exported_images_per_s'] = len(images) / median
  return out
