"""Bergmann-style convolutional AE with an L2 or SSIM loss (seed 002).

METHOD.md 5.2: a 10-layer encoder down to a 500-d latent, a decoder that
mirrors it, BatchNorm (PyTorch momentum 0.1, eps 1e-6) and LeakyReLU 0.01.
The seed's printed decoder table is inconsistent (METHOD.md Q8); we read it
as the encoder mirrored: the latent transposed-conv back to the bottleneck,
then the encoder's layers in reverse with transposed convs for the stride-2
ones, which reproduces the table's first six rows and ends at the input
size after five stride-2 ups. The latent conv spans the whole bottleneck
(8x8 at the seed's 256 px, 2x2 at 64 px), so the latent is 1x1x500 at any
input size that is a multiple of 32.

Detection (seed 002): the per-pixel max over channels of |x - x_hat|
(scorer `residual_max`, aad/scoring/scorers/), thresholded at tau
(config.eval.pixel_tau, 0.2 in configs/ae_l2.py and ae_ssim.py) for pixel
precision, recall and F1.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from aad.models import corruptions
from aad.models import base
from aad.models import losses

_BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1 in Flax's convention.
_BN_EPSILON = 1e-6
_LEAKY_SLOPE = 0.01
_STRIDES = 5  # stride-2 layers of the encoder

# (features, kernel, stride) of encoder layers 1-9 (METHOD.md 5.2); the
# first keeps the input's channel count (3 -> 3 in the seed).
ENCODER = ((None, 4, 2), (32, 4, 2), (32, 4, 2), (32, 3, 1), (64, 4, 2),
           (64, 3, 1), (128, 4, 2), (64, 3, 1), (32, 3, 1))


class BergmannAE(nn.Module):
  """The seed-002 autoencoder; inputs (N, H, W, C), H and W multiples of 32.

  Attributes:
    latent: size of the 1x1 latent code (500 in the seed).
    encoder: (features, kernel, stride) per encoder layer before the latent
      conv; None features keeps the input channels.
    bn_axis_name: device axis of the training BatchNorm statistics.
  """
  latent: int = 500
  encoder: Sequence[tuple] = ENCODER
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    channels = x.shape[-1]
    norm = lambda: nn.BatchNorm(
        use_running_average=not train, momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON, axis_name=self.bn_axis_name if train else None)
    act = lambda y: nn.leaky_relu(y, _LEAKY_SLOPE)
    sizes = []
    y = x
    for features, k, s in self.encoder:
      sizes.append(y.shape[-1])
      # Padding 1 (PyTorch's): a 4x4 stride-2 conv halves the size, a 3x3
      # stride-1 conv keeps it.
      y = nn.Conv(features or channels, (k, k), strides=(s, s),
                  padding=((1, 1), (1, 1)))(y)
      y = act(norm()(y))
    bottleneck = y.shape[1:3]
    y = norm()(nn.Conv(self.latent, bottleneck, padding='VALID')(y))
    # Decoder: the mirror image.
    y = act(norm()(nn.ConvTranspose(self.encoder[-1][0] or channels,
                                    bottleneck, padding='VALID')(y)))
    layers = list(self.encoder)
    for i in reversed(range(len(layers))):
      _, k, s = layers[i]
      out = sizes[i] if i else channels
      # Transposed-conv padding k - 1 - 1 on the dilated input is
      # PyTorch's padding 1: 4x4 stride 2 doubles the size, 3x3 keeps it.
      y = nn.ConvTranspose(out, (k, k), strides=(s, s),
                           padding=((k - 2, k - 2), (k - 2, k - 2)))(y)
      if i:
        y = act(norm()(y))
    return nn.sigmoid(y)


LOSSES = {'l2': losses.mse, 'l2_norm': losses.l2_norm,
          'ssim': losses.ssim_loss}


def defaults() -> ml_collections.ConfigDict:
  """The family's fields of config.model (model.name='bergmann')."""
  c = ml_collections.ConfigDict()
  c.bergmann = ml_collections.ConfigDict(dict(
      latent=500,   # size of the 1x1 latent code
      # 'l2': mean per-pixel squared error; 'l2_norm': mean over images of
      # ||x - x_hat||_2 (the seed's written form); 'ssim': 1 - SSIM with an
      # 11x11 Gaussian window (sigma 1.5), as Bergmann et al.
      loss='l2'))
  return c


def family(config: ml_collections.ConfigDict,
           axis_name: str | None = None) -> base.Family:
  """The Bergmann AE (config.model.name 'bergmann', block model.bergmann).

  One stage: Adam on model.bergmann.loss between the reconstruction of the
  (config.corruption-corrupted, 'none' in its configs) images and the clean
  ones. Output: the reconstruction.
  """
  b = config.model.bergmann
  if b.loss not in LOSSES:
    raise ValueError(f'config.model.bergmann.loss={b.loss!r}: choose one of '
                     f'{", ".join(sorted(LOSSES))}')
  if b.latent < 1:
    raise ValueError(f'config.model.bergmann.latent={b.latent}: must be '
                     '>= 1')
  net = BergmannAE(latent=b.latent, bn_axis_name=axis_name)
  eval_net = BergmannAE(latent=b.latent)

  def init(key, shape):
    return {'ae': net.init(key, jnp.zeros((1,) + tuple(shape), jnp.float32))}

  def outputs(variables, x, keys, wanted=frozenset()):
    del keys, wanted
    return {'reconstruction': eval_net.apply(variables['ae'], x)}

  stage = base.Stage('ae', ('ae',), config.train.num_steps,
                     base.net_forward('ae', net, eval_net),
                     corruptions.from_config(config.corruption),
                     loss=LOSSES[b.loss])
  return base.Family(
      name='bergmann', init=init, stages=(stage,), outputs=outputs,
      output_names=('reconstruction',),
      scorers=('residual_max', 'residual', 'baseline_mean'),
      size_multiple=2 ** _STRIDES, corruption=config.corruption.name)

