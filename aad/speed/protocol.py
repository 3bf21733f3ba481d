"""The evaluation protocol's cost on synthetic maps (`aad.benchmark --metrics`).

100 random 256x256 maps, 40% of them good, the others with random blob
masks of `num_types` fake defect types (fixed seed), and 32 good validation
maps. Groups, in seconds:
  image      the l2 reduction, image AUROC, AP, F1-max (+ threshold);
  pixel      pixel AUROC, AP, F1-max (+ threshold) and AU-PRO@0.3, which
             share one sort of the pixels (`curves.pixel_metrics`), so
             they are timed together, as the evaluation runs them;
  by_type    all of the above for each defect type against the good maps;
  threshold  the val calibration and the test precision/recall/F1 at it;
  total      their sum.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from aad.metrics import protocol as protocol_lib


def _blob(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
  """One irregular blob: a disk with a radius that wobbles with angle."""
  h, w = shape
  r0 = rng.uniform(0.03, 0.12) * min(h, w)
  cy, cx = rng.uniform(r0, h - r0), rng.uniform(r0, w - r0)
  yy, xx = np.ogrid[:h, :w]
  angle = np.arctan2(yy - cy, xx - cx)
  wobble = sum(rng.uniform(0, 0.25) * np.sin(k * angle + rng.uniform(0, 6.3))
               for k in (2, 3, 5))
  return np.hypot(yy - cy, xx - cx) <= r0 * (1 + wobble)


def synthetic_maps(num_maps: int = 100, size: int = 256, num_types: int = 4,
                   num_val: int = 32, good_fraction: float = 0.4,
                   seed: int = 0) -> dict[str, object]:
  """Random maps with blob defects, deterministic from `seed`.

  Maps are float32 standard normal noise, raised by 0.5-2 on the blobs so
  the metrics are neither trivial nor at chance; every value is distinct
  (the slowest case for the sorts).

  Returns:
    {'maps': (N, size, size) float32, 'masks': (N, size, size) uint8,
     'labels': (N,) int32, 'defect_types': tuple of N str,
     'val_maps': (num_val, size, size) float32, all good}.
  """
  rng = np.random.default_rng(seed)
  num_good = int(round(good_fraction * num_maps))
  if num_good < 1 or num_maps - num_good < num_types or num_types < 1:
    raise ValueError(f'{num_maps} maps cannot hold good ones and '
                     f'{num_types} defect types.')
  labels = np.zeros(num_maps, np.int32)
  labels[num_good:] = 1
  types = ['good'] * num_good + [f'type{i % num_types}'
                                 for i in range(num_maps - num_good)]
  masks = np.zeros((num_maps, size, size), np.uint8)
  maps = rng.standard_normal((num_maps, size, size), np.float32)
  for i in range(num_good, num_maps):
    for _ in range(int(rng.integers(1, 4))):
      masks[i] |= _blob((size, size), rng)
    maps[i] += np.float32(rng.uniform(0.5, 2.0)) * masks[i]
  val_maps = rng.standard_normal((num_val, size, size), np.float32)
  return {'maps': maps, 'masks': masks, 'labels': labels,
          'defect_types': tuple(types), 'val_maps': val_maps}


def _timed(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def time_metrics(data: dict[str, object],
                 protocol: protocol_lib.Protocol | None = None
                 ) -> dict[str, float]:
  """Seconds per metric group of one scorer (see the module docstring);
  protocol: default the l2 reduction as the headline."""
  protocol = protocol or protocol_lib.Protocol(reductions=('l2',),
                                               headline='l2')
  maps, masks, labels = data['maps'], data['masks'], data['labels']
  scores = {}

  def image():
    scores[protocol.headline] = protocol_lib.reduce(maps, protocol.headline,
                                                  protocol.sigma)
    protocol_lib.image_metrics(labels, scores[protocol.headline])

  seconds = {'image_s': _timed(image)}
  seconds['pixel_s'] = _timed(
      lambda: protocol_lib.pixel_metrics(masks, maps, protocol.fpr_limit))
  seconds['by_type_s'] = _timed(lambda: protocol_lib.by_type_metrics(
      maps, labels, masks, data['defect_types'], scores, protocol.fpr_limit))
  seconds['threshold_s'] = _timed(lambda: protocol_lib.deployment_threshold(
      labels, scores[protocol.headline], data['val_maps'], protocol))
  seconds['total_s'] = sum(seconds.values())
  return seconds
