"""Bergmann-style AE with a per-pixel L2 loss (seed 002), the embedded
benchmark.

  python -m aad.main --config=configs/ae_l2.py

The seed's network (METHOD.md 5.2: 500-d latent, BatchNorm, LeakyReLU 0.01)
trained on clean images (no corruption) with Adam at Bergmann's 2e-4, and
its detection: the per-pixel max over channels of |x - x_hat| (scorer
residual_max, the headline) with pixel precision / recall / F1 at
tau = 0.2 per defect type, besides the standard metrics. As
configs/aesc_stain.py: 64 px crops and 1000 steps per category, so that the
run fits in a few minutes on a 2-core CPU.
"""

from aad.configs import default


def get_config():
  c = default.get_config()
  c.name = 'ae_l2'
  c.model.name = 'bergmann'
  c.model.bergmann.loss = 'l2'
  c.corruption.name = 'none'
  c.dataset.image_size = 64
  c.train.num_steps = 1000
  c.train.learning_rate = 2e-4
  c.train.eval_every = 250
  c.train.log_every = 100
  c.eval.pixel_tau = 0.2
  return c
