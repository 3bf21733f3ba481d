"""A 2 x 2 sweep of the tiny test config (seeds x corruptions), for tests.

  python -m aad.sweep --config=configs/test_sweep.py --workdir=/tmp/aad_sweep
"""

import ml_collections

from aad.configs import test


def get_config():
  c = test.get_config()
  c.name = 'test_sweep'
  c.sweep = ml_collections.ConfigDict({
      'seed': (0, 1),
      'corruption': {'name': ('stain', 'gaussian')},
  })
  return c
