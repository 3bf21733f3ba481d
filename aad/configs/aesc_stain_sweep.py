"""AESc + Stain vs Gaussian noise, per category, over 3 seeds: 18 runs.

  python -m aad.sweep --config=configs/aesc_stain_sweep.py --dry_run
  python -m aad.sweep --config=configs/aesc_stain_sweep.py
  python -m aad.summary --workdir=runs/aesc_stain_sweep

The base is configs/aesc_stain.py; the sweep is data: categories x seeds x
training corruption, one workdir each under runs/aesc_stain_sweep/, and a
table of every run's headline metrics in its summary.md.
"""

import ml_collections

from aad.configs import aesc_stain


def get_config():
  c = aesc_stain.get_config()
  c.name = 'aesc_stain_sweep'
  c.sweep = ml_collections.ConfigDict({
      'dataset': {'categories': (('brick',), ('grass',), ('gravel',))},
      'seed': (0, 1, 2),
      'corruption': {'name': ('stain', 'gaussian')},
  })
  return c
