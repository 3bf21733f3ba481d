"""Denoising AE + 20-layer denoiser (seed 000), the embedded benchmark.

  python -m aad.main --config=configs/dae_denoiser.py

Stage 'ae': the dense-latent AE learns to undo additive Gaussian noise;
stage 'denoiser': with the AE frozen, the 20-layer fully convolutional
denoiser learns to map its reconstructions to the clean images (on 32 px
crops). Three scorers, as the seed: reconstruction (residual), smooth
reconstruction (smooth_residual) and feature mask (feature_mask, the
headline, chosen because the seed reports it best); readings of what the
seed leaves open are in aad/models/dae_denoiser.py.

As configs/aesc_stain.py, a budget for a few minutes on a 2-core CPU: 64 px
crops, 300 + 200 steps per category, and the seed's widths divided by 4
(encoder 32/64/128, decoder 128/64/32/16, latent 128, denoiser 32 maps per
layer, 31 + 1 for grayscale); at the seed's widths (configs/default.py) one
training step costs about 15x more. Depth, kernels and the 20 layers are
the seed's.
"""

from aad.configs import default


def get_config():
  c = default.get_config()
  c.name = 'dae_denoiser'
  c.model.name = 'dae_denoiser'
  d = c.model.dae_denoiser
  d.encoder, d.latent, d.decoder = (32, 64, 128), 128, (128, 64, 32, 16)
  d.denoiser_features = 32
  c.dataset.image_size = 64
  c.train.num_steps = 300
  d.denoiser_steps = 200
  c.train.eval_every = 100
  c.train.log_every = 50
  return c
