"""Denoising AE followed by a 20-layer denoiser (seed 000, METHOD.md 5.1).

Stage 'ae': the AE (3 strided 5x5 conv blocks, a dense latent, 5 strided
5x5 transposed-conv blocks) learns to reconstruct clean images from images
with additive Gaussian noise. Stage 'denoiser': with the AE frozen, the
fully convolutional denoiser learns to map the AE's reconstructions of clean
images to the clean images.

Our readings of what the seed leaves open (METHOD.md Q7), each a field of
config.model.dae_denoiser:
- The dense latent has `latent` units (256); the decoder's dense layer
  reshapes to (H/32, W/32, decoder[0]) so that five stride-2 ups give H x W;
  the last transposed conv has the image's channels and a sigmoid (the
  others BatchNorm + LeakyReLU 0.3, Keras' default like the rest of aad).
- Stage-1 noise: N(0, noise_std^2), then clipped to [0, 1].
- The denoiser's 63 + 1 split: each of the 20 layers is a 3x3 conv with 64
  filters; C of them (the image's channels: the seed's 1 for grayscale) are
  that layer's contribution s_l, the other 64 - C go through BatchNorm +
  ReLU into the next layer (the last layer computes s_20 only, as its other
  maps would feed nothing). Den(y) = y + sum_l s_l: the layers accumulate a
  correction of the input (DnCNN-like residual; `denoiser_residual=False`
  gives sum_l s_l alone).
- Feature mask (scorer `feature_mask`, aad/scoring/scorers/): the smooth
  residual |x - Den(AE(x))| weighted by what the denoiser had to correct,
  |Den(AE(x)) - AE(x)| (both summed over channels), to the power
  config.eval.feature_mask_power (1; 0 gives the smooth residual).
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aad.models import corruptions
from aad.models import base
from aad.models import layers

_BN_MOMENTUM = 0.99  # Keras' defaults, as AESc.
_BN_EPSILON = 1e-3
_LEAKY_SLOPE = 0.3
_UPS = 5  # stride-2 transposed convs of the decoder


def _transpose_phases(k: int) -> np.ndarray:
  """P[a, d, t] = 1 where tap t of a SAME stride-2 transposed conv (k odd)
  gives output phase a from input offset d - 1 (so d in 0..2)."""
  pad = -(-k // 2)  # lax.conv_transpose's leading pad for SAME, stride 2
  p = np.zeros((2, 3, k), np.float32)
  for a in (0, 1):
    for t in range(k):
      if (a + t - pad) % 2 == 0:
        p[a, (a + t - pad) // 2 + 1, t] = 1.0
  return p


def transposed_kernel(kernel):
  """(k, k, C, F) kernel of a stride-2 SAME transposed conv -> the
  (3, 3, C, 4F) kernel of `TransposedConv`'s sub-pixel conv."""
  with jax.named_scope(layers.KERNEL_SCOPE):
    k, _, cin, features = kernel.shape
    p = _transpose_phases(k)
    taps = np.einsum('adh,bew->deabhw', p, p).reshape(36, k * k)
    sub = jnp.asarray(taps) @ kernel.reshape(k * k, cin * features)
    return sub.reshape(3, 3, 2, 2, cin, features).transpose(
        0, 1, 4, 2, 3, 5).reshape(3, 3, cin, 4 * features)


class TransposedConv(nn.Module):
  """k x k stride-2 SAME transposed conv (nn.ConvTranspose's parameters and
  outputs) as a 3x3 conv with 4x the output channels, one per output phase,
  and depth-to-space (layers.conv: im2col on small maps). XLA:CPU runs the
  dilated-input form of nn.ConvTranspose at a few GFLOP/s. prepared=True
  reads that 3x3 kernel from the parameter 'fast_kernel' (built once,
  `layers.prepare`) instead of building it in every call."""
  features: int
  kernel_size: int = 5
  prepared: bool = False

  @nn.compact
  def __call__(self, x):
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (k, k, cin, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,),
                      jnp.float32)
    if self.prepared:
      sub = self.param('fast_kernel', lambda _: transposed_kernel(kernel))
    else:
      sub = transposed_kernel(kernel)
    y = layers.conv(x, sub.astype(x.dtype), ((1, 1), (1, 1)))
    return layers.depth_to_space(y) + bias


class DenseAE(nn.Module):
  """The seed-000 AE; inputs (N, H, W, C), H and W multiples of 32."""
  encoder: Sequence[int] = (128, 256, 512)
  latent: int = 256
  decoder: Sequence[int] = (512, 256, 128, 64)
  bn_axis_name: str | None = None
  prepared: bool = False  # fast-form kernels built once (inference)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    n, h, w, c = x.shape
    norm = lambda: nn.BatchNorm(
        use_running_average=not train, momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON, axis_name=self.bn_axis_name if train else None)
    act = lambda y: nn.leaky_relu(y, _LEAKY_SLOPE)
    y = x
    for features in self.encoder:
      # layers.Conv: the exact space-to-depth form of a 5x5 stride-2 conv.
      y = act(norm()(layers.Conv(features, 5, stride=2,
                                 prepared=self.prepared)(y)))
    y = nn.Dense(self.latent)(y.reshape((n, -1)))
    side = 2 ** _UPS
    y = nn.Dense(h // side * w // side * self.decoder[0])(y)
    y = y.reshape((n, h // side, w // side, self.decoder[0]))
    for features in self.decoder:
      y = act(norm()(TransposedConv(features, prepared=self.prepared)(y)))
    y = TransposedConv(c, prepared=self.prepared)(y)
    return nn.sigmoid(y)


class Denoiser(nn.Module):
  """20 fully convolutional 3x3 layers accumulating C-channel maps."""
  layers: int = 20
  features: int = 64
  residual: bool = True
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, y, *, train: bool = False):
    c = y.shape[-1]
    if self.features <= c:
      raise ValueError(f'denoiser_features={self.features} must exceed the '
                       f'{c} image channels it accumulates')
    total = y if self.residual else jnp.zeros_like(y)
    h = y
    for layer in range(self.layers):
      last = layer == self.layers - 1
      out = layers.Conv(c if last else self.features, 3)(h)
      total = total + out[..., :c]
      if not last:
        h = nn.relu(nn.BatchNorm(
            use_running_average=not train, momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON,
            axis_name=self.bn_axis_name if train else None)(out[..., c:]))
    return total


def defaults() -> ml_collections.ConfigDict:
  """The family's fields of config.model (model.name='dae_denoiser'; our
  readings of the seed's open points are in the module docstring). Stage
  'ae' trains train.num_steps steps, stage 'denoiser' (AE frozen)
  denoiser_steps."""
  c = ml_collections.ConfigDict()
  c.dae_denoiser = ml_collections.ConfigDict(dict(
      encoder=(128, 256, 512),      # strided 5x5 conv blocks
      latent=256,                   # dense latent size
      decoder=(512, 256, 128, 64),  # strided 5x5 transposed-conv blocks
                                    # before the output one
      noise_std=0.1,                # stage-1 Gaussian noise std, [0, 1]
      denoiser_layers=20,
      denoiser_features=64,         # per layer; C of them accumulated
      denoiser_residual=True,       # Den(y) = y + sum of the layers' maps
      denoiser_steps=1000,
      denoiser_crop=32))            # px, stage-2 training crops; 0 = whole
  return c


def family(config: ml_collections.ConfigDict,
           axis_name: str | None = None) -> base.Family:
  """The DAE + denoiser (config.model.name 'dae_denoiser', block
  model.dae_denoiser): stages 'ae' then 'denoiser'; outputs the AE's
  reconstruction and the denoiser's 'smooth' one."""
  d = config.model.dae_denoiser
  if d.noise_std < 0:
    raise ValueError('config.model.dae_denoiser.noise_std must be >= 0; '
                     f'got {d.noise_std}')
  if d.denoiser_layers < 1 or d.latent < 1:
    raise ValueError('config.model.dae_denoiser.denoiser_layers and .latent '
                     'must be >= 1')

  def build(axis, prepared=False):
    return (DenseAE(tuple(d.encoder), d.latent, tuple(d.decoder), axis,
                    prepared),
            Denoiser(d.denoiser_layers, d.denoiser_features,
                     d.denoiser_residual, axis))

  (ae, den), (eval_ae, eval_den) = build(axis_name), build(None)
  # `outputs` reads the AE's fast-form kernels that `prepare` builds once
  # per checkpoint (the denoiser's 3x3 stride-1 convs have none); the
  # stages (training, validation) run the plain ones.
  infer_ae = build(None, prepared=True)[0]

  def init(key, shape):
    x = jnp.zeros((1,) + tuple(shape), jnp.float32)
    k_ae, k_den = jax.random.split(key)
    return {'ae': ae.init(k_ae, x), 'denoiser': den.init(k_den, x)}

  def reconstruct(variables, x):
    return eval_ae.apply(variables['ae'], x)

  def prepare(variables, shape):
    return {**variables,
            'ae': layers.prepare(infer_ae, variables['ae'], shape)}

  def outputs(variables, x, keys, wanted=frozenset()):
    del keys
    recon = infer_ae.apply(variables['ae'], x)
    out = {'reconstruction': recon}
    if 'smooth' in wanted:
      out['smooth'] = eval_den.apply(variables['denoiser'], recon)
    return out

  noise = corruptions.make('gaussian', {'var': float(d.noise_std) ** 2})
  stages = (
      base.Stage('ae', ('ae',), config.train.num_steps,
                 base.net_forward('ae', ae, eval_ae), noise),
      # The denoiser sees the frozen AE's reconstruction of clean images.
      base.Stage('denoiser', ('denoiser',), d.denoiser_steps,
                 base.net_forward('denoiser', den, eval_den),
                 corruptions.make('none'),
                 prepare=reconstruct, crop=d.denoiser_crop),
  )
  return base.Family(
      name='dae_denoiser', init=init, stages=stages, outputs=outputs,
      output_names=('reconstruction', 'smooth'),
      scorers=('feature_mask', 'smooth_residual', 'residual',
               'baseline_mean'),
      size_multiple=2 ** _UPS, prepare=prepare)

