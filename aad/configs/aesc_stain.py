"""AESc + Stain noise (Collin & De Vleeschouwer, ICPR 2020), the main job.

  python -m aad.main --config=configs/aesc_stain.py

Trains one AESc (depth 6, 5x5 kernels, 16..512 maps, additive skips) per
category of the embedded texture benchmark on images corrupted with stain
noise (blur 0, METHOD.md Q2), then scores the test split by residual and by
30-pass MC-dropout variance and writes runs/aesc_stain/report.md.

The paper trains on MVTec AD at 256x256 for 250 epochs of 125 steps. Here
the embedded benchmark's 128 px crops are used at 64x64 and each category
gets 1000 steps, so that the whole job fits in about 5 minutes on a 2-core
CPU; raise both for real work.
"""

from aad.configs import default


def get_config():
  c = default.get_config()
  c.name = 'aesc_stain'
  c.dataset.image_size = 64
  c.train.num_steps = 1000
  c.train.eval_every = 250
  c.train.log_every = 100
  return c
