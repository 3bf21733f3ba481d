"""Reconstruct and discriminate (DRAEM-style), the embedded benchmark.

  python -m aad.main --config=configs/draem.py

Per category, an autoencoder without skips learns to remove simulated
anomalies (Perlin blobs filled with a procedural texture or the image's
own displaced texture) with L2 + SSIM loss, and a U-Net on the input
stacked with its reconstruction learns to segment them with focal loss,
both trained together from scratch (aad/models/draem.py). The headline
scorer is the U-Net's probability map ('segmentation'), its image score
the map's maximum after a Gaussian of eval.smooth_sigma px ('smooth_max'),
as DRAEM takes the maximum of the box-averaged map.

A CPU budget like configs/aesc_stain.py's (64 px, 1000 steps per
category, narrow networks); DRAEM's own is 700 epochs with networks 8x
wider, a GPU budget (docs/method.md).
"""

from aad.configs import default


def get_config():
  c = default.get_config()
  c.name = 'draem'
  c.model.name = 'draem'
  c.eval.scorers = ('segmentation', 'residual', 'baseline_mean')
  c.eval.norm = 'smooth_max'
  c.dataset.image_size = 64
  c.train.update(dict(num_steps=1000, eval_every=250, log_every=100))
  return c
