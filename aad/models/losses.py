"""Training losses and validation metrics of the model families (pure)."""

import jax
import jax.numpy as jnp


def mse(prediction: jax.Array, clean: jax.Array) -> jax.Array:
  """Mean squared error over every pixel and channel of the batch."""
  return jnp.mean((prediction - clean) ** 2)


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image PSNR in dB for values in [0, 1]."""
  mse_per_image = jnp.mean((x - y) ** 2, axis=(1, 2, 3))
  return -10.0 * jnp.log10(jnp.maximum(mse_per_image, 1e-10))
