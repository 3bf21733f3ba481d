"""AESc + Stain noise on MVTec AD, the paper's setting (Collin & De
Vleeschouwer, ICPR 2020): 256x256 colour, one model per category.

  python -m aad.main --config=configs/mvtec_ad.py \
      [--config.dataset.categories='("bottle",)'] \
      [--config.dataset.manual_dir=/data/mvtec]

MVTec AD is a manual download: README "Real data". The paper trains 250
epochs of 125 steps of 16 images; 31250 steps are about an hour per
category on one GPU and days on a CPU.
"""

from aad.configs import default


def get_config():
  c = default.get_config()
  c.name = 'mvtec_ad'
  c.dataset.name = 'mvtec_ad'
  c.dataset.image_size = 256
  c.dataset.channels = 3
  c.train.num_steps = 250 * 125
  c.train.eval_every = 125 * 5
  c.train.log_every = 125
  c.train.plateau = True  # the reference: x0.5 after 30 epochs w/o 1 dB
  c.train.plateau_patience = 6  # evaluations of 5 epochs each
  c.eval.resolution = 'original'  # MVTec's convention: native mask size
  return c
