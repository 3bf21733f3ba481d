"""Training losses and validation metrics of the model families (pure)."""

import dm_pix
import jax
import jax.numpy as jnp


def mse(prediction: jax.Array, clean: jax.Array) -> jax.Array:
  """Mean squared error over every pixel and channel of the batch."""
  return jnp.mean((prediction - clean) ** 2)


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image PSNR in dB for values in [0, 1]."""
  mse_per_image = jnp.mean((x - y) ** 2, axis=(1, 2, 3))
  return -10.0 * jnp.log10(jnp.maximum(mse_per_image, 1e-10))


def l2_norm(prediction: jax.Array, clean: jax.Array) -> jax.Array:
  """Mean over images of ||prediction - clean||_2 (seed 002's written
  loss: the L2 norm of each image's difference, not squared)."""
  diff = (prediction - clean).reshape((prediction.shape[0], -1))
  return jnp.mean(jnp.sqrt(jnp.sum(diff ** 2, axis=-1) + 1e-12))


def ssim(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image SSIM of images in [0, 1] (N, H, W, C), averaged over
  channels and window positions: Wang et al. 2004 with an 11x11 Gaussian
  window of sigma 1.5, K1 0.01, K2 0.03 (dm-pix; positions where the window
  fits, as scikit-image's mean)."""
  return dm_pix.ssim(x, y, max_val=1.0, filter_size=11, filter_sigma=1.5)


def ssim_loss(prediction: jax.Array, clean: jax.Array) -> jax.Array:
  """1 - mean SSIM (11x11 Gaussian window, sigma 1.5; dm-pix)."""
  return 1.0 - jnp.mean(ssim(prediction, clean))


def mse_ssim(prediction: jax.Array, clean: jax.Array) -> jax.Array:
  """MSE + (1 - mean SSIM), DRAEM's reconstruction loss: the SSIM term
  penalises lost structure (edges, grain) that the MSE barely sees."""
  return mse(prediction, clean) + ssim_loss(prediction, clean)
