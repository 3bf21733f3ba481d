"""Reconstruct and discriminate (DRAEM, Zavrtanik et al., ICCV 2021).

Two networks trained together, from scratch, on good images with simulated
anomalies (corruptions.perlin_anomaly: Perlin blobs filled with a foreign
procedural texture, the image smoothed or its own texture displaced, half
the images left clean):
- 'reconstructive': an autoencoder without skips (aesc.AutoEncoder) that
  learns to give back the clean image, with L2 + SSIM loss (DRAEM's);
- 'discriminative': a U-Net on the input stacked with its reconstruction
  that learns to output the simulated anomaly's mask, with focal loss.
A real anomaly is then what the discriminator segments: it has learnt
what an input that differs from its reconstruction looks like, not one
material's defects. The 'segmentation' scorer (aad/scoring/scorers/) uses
its probability map; the configs take its Gaussian-smoothed maximum
(eval.norm 'smooth_max') as image score, where DRAEM takes the maximum of
the map averaged over a 21 px box.

Our readings and CPU budget (config.model.draem): DRAEM's networks (128 and
64 base maps) and 700 epochs are a GPU budget of hours per category; here
both are narrower (a few minutes on a 2-core CPU, docs/method.md), 3x3
kernels, strided convolutions instead of max-pooling and nearest
upsampling + conv (the fast exact forms of aad/models/layers.py), one
sigmoid logit with optax's sigmoid focal loss instead of two softmax maps.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from aad.models import aesc
from aad.models import base
from aad.models import corruptions
from aad.models import layers
from aad.models import losses

_BN_MOMENTUM = 0.9   # PyTorch's BatchNorm defaults, as DRAEM
_BN_EPSILON = 1e-5


class UNet(nn.Module):
  """A U-Net that maps (N, H, W, C) to (N, H, W) logits.

  Attributes:
    features: maps at the finest level, doubled per level.
    depth: stride-2 levels; H and W must be multiples of 2**depth.
    bn_axis_name: device axis of training BatchNorm statistics.
    prepared: the convolutions read fast-form kernels built once
      (`layers.prepare`; inference only).
  """
  features: int = 16
  depth: int = 4
  bn_axis_name: str | None = None
  prepared: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    norm = lambda: nn.BatchNorm(
        use_running_average=not train, momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON, axis_name=self.bn_axis_name if train else None)

    conv = functools.partial(layers.Conv, kernel_size=3,
                             prepared=self.prepared)

    def block(y, features, **kw):
      y = nn.relu(norm()(conv(features, **kw)(y)))
      return nn.relu(norm()(conv(features)(y)))

    skips, y = [], x
    for level in range(self.depth):
      y = block(y, self.features * 2**level, stride=2 if level else 1)
      skips.append(y)
    y = block(y, self.features * 2**self.depth, stride=2)
    for level in reversed(range(self.depth)):
      y = nn.relu(norm()(conv(self.features * 2**level,
                              upsample_input=True)(y)))
      y = block(jnp.concatenate([y, skips[level]], axis=-1),
                self.features * 2**level)
    return conv(1)(y)[..., 0]


def defaults() -> ml_collections.ConfigDict:
  """The family's fields of config.model (model.name='draem'): the two
  networks, the loss weights and the simulated anomalies. Trained for
  train.num_steps steps."""
  c = ml_collections.ConfigDict()
  c.draem = ml_collections.ConfigDict(dict(
      recon_depth=4,          # reconstructive AE: stride-2 levels
      recon_features=16,      # its maps at level 0, doubled per level
      disc_depth=4,           # discriminative U-Net: stride-2 levels
      disc_features=8,        # its maps at level 0, doubled per level
      focal_gamma=2.0,        # focal loss exponent (DRAEM's)
      focal_weight=1.0,       # focal loss weight, beside L2 + SSIM
      # Simulated anomalies (aad/models/corruptions.perlin_anomaly).
      scale=(1, 32),          # Perlin lattice cells per axis, log-uniform
      threshold=0.5,          # noise level above which a pixel is masked
      opacity=(0.2, 1.0),     # fill opacity range (DRAEM: 1 - beta)
      p_anomaly=0.5,          # share of training images with an anomaly
      p_foreign=0.5,          # share of fills from a procedural texture
      # Share of fills by the image smoothed (texture lost): 0.2 found
      # dagm_class1's smudges and lost the embedded gravel
      # (docs/ablations.md), so off by default.
      p_smooth=0.0,
      texture_scale=(2, 64),  # procedural texture's Perlin scale range
      smooth_sigma=(1, 3),    # px, range of the smoothing's Gaussian
      # Share of masks that are a thin bent band (a crack or scratch)
      # instead of a blob; its length (fraction of the image's shorter
      # side), width (px) and bend (fraction of the length) ranges.
      p_line=0.0,
      line_length=(0.25, 1.0),
      line_width=(1.0, 4.0),
      line_bend=(0.0, 0.1),
  ))
  return c


def _check(d: ml_collections.ConfigDict):
  for key in ('recon_depth', 'recon_features', 'disc_depth',
              'disc_features'):
    if d[key] < 1:
      raise ValueError(f'config.model.draem.{key} must be >= 1; got '
                       f'{d[key]}')
  for key in ('p_anomaly', 'p_foreign', 'p_smooth', 'p_line'):
    if not 0 <= d[key] <= 1:
      raise ValueError(f'config.model.draem.{key} must be in [0, 1]; got '
                       f'{d[key]}')
  if d.p_foreign + d.p_smooth > 1:
    raise ValueError('config.model.draem.p_foreign + p_smooth must be at '
                     f'most 1; got {d.p_foreign} + {d.p_smooth}')
  for key in ('smooth_sigma', 'line_length', 'line_width'):
    if not 0 < d[key][0] <= d[key][1]:
      raise ValueError(f'config.model.draem.{key} must be a range '
                       f'0 < lo <= hi; got {tuple(d[key])}')
  if not 0 <= d.line_bend[0] <= d.line_bend[1]:
    raise ValueError('config.model.draem.line_bend must be a range '
                     f'0 <= lo <= hi; got {tuple(d.line_bend)}')
  if d.focal_gamma < 0 or d.focal_weight < 0:
    raise ValueError('config.model.draem.focal_gamma and .focal_weight must '
                     'be >= 0')


def family(config: ml_collections.ConfigDict,
           axis_name: str | None = None) -> base.Family:
  """DRAEM (config.model.name 'draem', block model.draem): one stage
  training both networks; outputs the reconstruction and the
  discriminator's anomaly probability map 'segmentation' (N, H, W)."""
  d = config.model.draem
  _check(d)

  def build(axis, prepared=False):
    rec = aesc.AutoEncoder(
        depth=d.recon_depth, features=d.recon_features, kernel=3,
        skips=False, dropout_rates=(0.0,) * d.recon_depth,
        bn_axis_name=axis, prepared=prepared)
    return rec, UNet(d.disc_features, d.disc_depth, axis, prepared)

  (rec, disc), (eval_rec, eval_disc) = build(axis_name), build(None)
  # `outputs` reads the fast-form kernels that `prepare` builds once per
  # checkpoint; the stage (training, validation) runs the plain ones.
  infer_rec, infer_disc = build(None, prepared=True)

  def init(key, shape):
    x = jnp.zeros((1,) + tuple(shape), jnp.float32)
    k_rec, k_disc = jax.random.split(key)
    return {'reconstructive': rec.init(k_rec, x),
            'discriminative': disc.init(k_disc, jnp.concatenate([x, x], -1))}

  def forward(variables, inputs, *, train, rngs=None):
    """(reconstruction, logits and target mask stacked on the channels,
    updated batch statistics) of corrupted inputs whose last channel is
    the simulated anomaly's mask."""
    del rngs
    x, mask = inputs[..., :-1], inputs[..., -1:]
    if not train:
      recon = eval_rec.apply(variables['reconstructive'], x)
      logits = eval_disc.apply(variables['discriminative'],
                               jnp.concatenate([x, recon], -1))
      updates = {}
    else:
      recon, r = rec.apply(variables['reconstructive'], x, train=True,
                           mutable=['batch_stats'])
      logits, s = disc.apply(variables['discriminative'],
                             jnp.concatenate([x, recon], -1), train=True,
                             mutable=['batch_stats'])
      updates = {'reconstructive': r['batch_stats'],
                 'discriminative': s['batch_stats']}
    return jnp.concatenate([recon, logits[..., None], mask], -1), updates

  def split(prediction):
    return prediction[..., :-2], prediction[..., -2], prediction[..., -1]

  def focal(logits, mask):
    return optax.sigmoid_focal_loss(logits, mask, alpha=None,
                                    gamma=d.focal_gamma)

  def loss(prediction, clean):
    recon, logits, mask = split(prediction)
    return (losses.mse_ssim(recon, clean) +
            d.focal_weight * jnp.mean(focal(logits, mask)))

  def val_metric(prediction, clean):
    # Higher is better: minus each image's reconstruction error and focal
    # loss (SSIM, over windows of the whole batch, is left out).
    recon, logits, mask = split(prediction)
    return -(jnp.mean((recon - clean) ** 2, axis=(1, 2, 3)) +
             d.focal_weight * jnp.mean(focal(logits, mask), axis=(1, 2)))

  def prepare(variables, shape):
    # The discriminator sees the input and its reconstruction stacked.
    both = (*shape[:-1], 2 * shape[-1])
    rec_v, disc_v = variables['reconstructive'], variables['discriminative']
    return {**variables,
            'reconstructive': layers.prepare(infer_rec, rec_v, shape),
            'discriminative': layers.prepare(infer_disc, disc_v, both)}

  def outputs(variables, x, keys, wanted=frozenset()):
    del keys
    recon = infer_rec.apply(variables['reconstructive'], x)
    out = {'reconstruction': recon}
    if 'segmentation' in wanted:
      out['segmentation'] = jax.nn.sigmoid(infer_disc.apply(
          variables['discriminative'], jnp.concatenate([x, recon], -1)))
    return out

  # Returns the mask as an extra last channel, which `forward` passes on
  # to the loss.
  anomaly = functools.partial(
      corruptions.perlin_anomaly, scale=tuple(d.scale),
      threshold=d.threshold, opacity=tuple(d.opacity),
      p_anomaly=d.p_anomaly, p_foreign=d.p_foreign, p_smooth=d.p_smooth,
      texture_scale=tuple(d.texture_scale),
      smooth_sigma=tuple(d.smooth_sigma), p_line=d.p_line,
      line_length=tuple(d.line_length), line_width=tuple(d.line_width),
      line_bend=tuple(d.line_bend))
  stage = base.Stage('draem', ('reconstructive', 'discriminative'),
                     config.train.num_steps, forward, anomaly, loss=loss,
                     val_metric=val_metric)
  return base.Family(
      name='draem', init=init, stages=(stage,), outputs=outputs,
      output_names=('reconstruction', 'segmentation'),
      scorers=('segmentation', 'residual', 'baseline_mean'),
      size_multiple=2 ** max(d.recon_depth, d.disc_depth),
      prepare=prepare)
