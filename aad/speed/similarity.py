"""Times each similarity measure, jitted, on random batches (not a test).

  python -m aad.speed.similarity [--shapes 16x256x256x3,16x128x128x1]

Prints, per shape, the median milliseconds per batch of each measure (score
and map together) and of all thirteen in one jitted function, after a
warm-up call, with block_until_ready. XLA_FLAGS get the project's CPU
convolution choice first, as the command lines do.
"""

import argparse
import statistics
import time

from aad.runtime import cpu

cpu.configure_convolutions()  # Before JAX starts its backend.

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from aad.scoring import similarity  # pylint: disable=g-import-not-at-top


def _median_ms(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shapes', default='16x256x256x3,16x128x128x1')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  for text in args.shapes.split(','):
    shape = tuple(int(v) for v in text.split('x'))
    x = rng.random(shape, np.float32)
    y = np.clip(x + 0.05 * rng.standard_normal(shape), 0, 1).astype(x.dtype)
    x, y = jax.device_put(x), jax.device_put(y)
    print(f'{text}: median ms per batch of {shape[0]} images')
    for name, measure in similarity.MEASURES.items():
      ms = _median_ms(jax.jit(measure.fn), x, y, repeats=args.repeats)
      print(f'  {name:5s} {ms:8.1f}')
    every = jax.jit(lambda a, b: {n: m.fn(a, b)
                                  for n, m in similarity.MEASURES.items()})
    ms = _median_ms(every, x, y, repeats=args.repeats)
    print(f'  {"all":5s} {ms:8.1f}  ({shape[0] / ms * 1e3:.1f} images/s)')


if __name__ == '__main__':
  main()
