"""AESc + Stain noise (Collin & De Vleeschouwer, ICPR 2020), the main job.

  python -m aad.main --config=configs/aesc_stain.py

Trains one AESc per category of the embedded texture benchmark on images
corrupted with stain noise, then scores the test split by residual and by
MC-dropout variance and writes runs/aesc_stain/report.md.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.name = 'aesc_stain'
  return c
