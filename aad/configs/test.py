"""Tiny CPU config for the tests (seconds, not minutes).

  python -m aad.main --config=configs/test.py --workdir=/tmp/aad_test
"""

from aad.configs import default


def get_config():
  c = default.get_config()
  c.name = 'test'
  c.dataset.categories = ('brick',)
  c.dataset.image_size = 32
  c.model.depth = 3
  c.model.features = 4
  c.model.kernel = 3
  c.train.batch_size = 8
  c.train.num_steps = 8
  c.train.steps_per_call = 2
  c.train.log_every = 4
  c.train.eval_every = 4
  c.eval.mc_samples = 4
  c.eval.heatmap_rows = 4
  return c
