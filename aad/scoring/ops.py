"""On-device scoring helpers: uint8 to float, residual maps, norms, and the
vmapped Monte-Carlo-dropout sampler that families with dropout use.

Maps are float in [0, 1] units (the reference works in grey levels and
quantises predictions to uint8; we keep floats, so there are no ties and no
uint8 wrap-around, METHOD.md 4.2).
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp

NORMS = ('l1', 'l2', 'linf')


def over_channels(z: jax.Array, op: Callable = jnp.add,
                  axis: int = -1) -> jax.Array:
  """z's slices along a short axis (the channels) combined by `op`.

  jnp.sum or jnp.max over a minor axis of 3 went to a YNNPACK reduction on
  XLA:CPU that took 0.3-0.5 ms for a 16 x 64 x 64 x 3 batch, several times
  the elementwise adds of its slices, which also fuse with what follows.
  """
  return functools.reduce(
      op, [jax.lax.index_in_dim(z, i, axis, keepdims=False)
           for i in range(z.shape[axis])])


def image_mean(z: jax.Array) -> jax.Array:
  """Mean over every axis but the first, (N, ...) -> (N,), as a product
  with a constant vector of 1 / size.

  On XLA:CPU a reduction takes the elementwise work before it into its own
  YNNPACK fusion, and what that fusion reads is then computed apart, each
  part with its producers fused in again: for a score-only SSIM on 16 x 64
  x 64 x 1 each of the five windowed moments was recomputed whole from the
  images (0.85 ms). A dot reads its operand once, materialised, which keeps
  the separable filter in its two passes (0.42 ms). HIGHEST precision:
  accelerators would otherwise multiply in TF32 or bfloat16.
  """
  flat = z.reshape(z.shape[0], -1)
  weights = jnp.full((flat.shape[1],), 1.0 / flat.shape[1], flat.dtype)
  return jnp.dot(flat, weights, precision=jax.lax.Precision.HIGHEST)


def to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1] (the reference's 1/255 rescaling)."""
  return images.astype(jnp.float32) / 255.0


def residual_map(x: jax.Array, recon: jax.Array) -> jax.Array:
  """Sum over channels of |x - recon|: (..., H, W, C) -> (..., H, W)."""
  return over_channels(jnp.abs(x - recon))


def reduce_map(maps: jax.Array, norm: str) -> jax.Array:
  """Image scores from maps (N, H, W) by the norms of METHOD.md 4.1.

  l1 = sum / (H W), l2 = sqrt(sum of squares / (H W)), linf = max.
  """
  if norm == 'l1':
    return jnp.mean(maps, axis=(-2, -1))
  if norm == 'l2':
    return jnp.sqrt(jnp.mean(maps ** 2, axis=(-2, -1)))
  if norm == 'linf':
    return jnp.max(maps, axis=(-2, -1))
  raise ValueError(f'unknown norm {norm!r}; choose one of {NORMS}')


def mc_chunk_size(samples: int, batch: int, image_shape, features: int,
                  budget_bytes: float = 2**30) -> int:
  """Largest divisor of `samples` whose activations fit in `budget_bytes`.

  A pass over one image keeps roughly a few full-resolution feature maps
  alive at once; 4 * H * W * (C + 3 * features) bytes is a safe estimate.
  """
  h, w, c = image_shape
  per_pass = 4 * h * w * (c + 3 * features) * max(batch, 1)
  limit = max(1, int(budget_bytes // per_pass))
  return max(d for d in range(1, samples + 1)
             if samples % d == 0 and d <= limit)


def mc_dropout(apply_fn: Callable, *, samples: int, chunk: int,
               shared_prefix: bool = False) -> Callable:
  """Builds fn(variables, x, keys) -> reconstruction and MC-dropout maps.

  Per image (x float (N, H, W, C), one key per image): the deterministic
  reconstruction and `samples` Monte-Carlo-dropout passes (BatchNorm on
  running averages), drawn `chunk` at a time by `jax.vmap` over keys,
  reduced on device to the mean reconstruction and the per-pixel variance
  (population, ddof 0, averaged over channels). Image i's dropout keys are
  split from keys[i], so results do not depend on batching or devices.

  Args:
    apply_fn: the model's apply, (variables, x, mc_dropout=, rngs=).
    samples: T, the MC-dropout passes per image.
    chunk: passes per vmapped call; must divide `samples`.
    shared_prefix: apply_fn also takes `until_dropout` / `resume`
      (aad.models.aesc): the layers before the first dropout then run once
      per image, and the deterministic pass and every sample start from
      their output. Same samples as whole passes.

  Returns:
    fn returning {'reconstruction', 'mc_mean'} (N, H, W, C) and
    'mc_variance' (N, H, W).
  """
  if samples % chunk:
    raise ValueError(f'MC chunk {chunk} must divide the {samples} samples')

  def one_image(variables, x, key):
    if shared_prefix:
      prefix = apply_fn(variables, x[None], until_dropout=True)
      run = lambda **kw: apply_fn(variables, x[None], resume=prefix, **kw)[0]
    else:
      run = lambda **kw: apply_fn(variables, x[None], **kw)[0]
    recon = run()
    keys = jax.random.split(key, samples).reshape((samples // chunk, chunk))

    def sample(k):
      return run(mc_dropout=True, rngs={'dropout': k})

    def accumulate(carry, chunk_keys):
      # Shift by the deterministic output: the sums of squares then stay
      # small and E[d^2] - E[d]^2 does not cancel catastrophically.
      d = jax.vmap(sample)(chunk_keys) - recon
      return (carry[0] + d.sum(0), carry[1] + (d ** 2).sum(0)), None

    zeros = jnp.zeros_like(recon)
    (s1, s2), _ = jax.lax.scan(accumulate, (zeros, zeros), keys)
    mean_d, var = s1 / samples, s2 / samples - (s1 / samples) ** 2
    return {
        'reconstruction': recon,
        'mc_mean': recon + mean_d,
        'mc_variance': jnp.mean(jnp.maximum(var, 0.0), axis=-1),
    }

  def fn(variables, x, keys):
    return jax.vmap(one_image, in_axes=(None, 0, 0))(variables, x, keys)

  return fn


def image_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
  """One key per image, fold_in(key, global index of the image)."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
