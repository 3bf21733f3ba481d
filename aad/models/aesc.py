"""AESc and plain AE (Collin & De Vleeschouwer, ICPR 2020) in Flax Linen.

Both networks share one module: `skips=True` gives AESc (additive skip
connections at every level), `skips=False` the plain convolutional AE.
Monte-Carlo dropout is chosen per call (`mc_dropout=True` plus a 'dropout'
rng), never by building a second model. The deterministic part before the
first dropout can be run once (`until_dropout=True`) and the rest sampled
many times from it (`resume=`), with the same results as whole passes.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from aad.models import corruptions
from aad.scoring import ops
from aad.models import base
from aad.models import layers
from aad.models import losses

# Keras defaults used by the reference code (METHOD.md 1.1).
_BN_MOMENTUM = 0.99
_BN_EPSILON = 1e-3
_LEAKY_SLOPE = 0.3

# MC-dropout rates per level L (index 0 = finest), METHOD.md 1.1.
AESC_DROPOUT = (0.0, 0.0, 0.1, 0.2, 0.4, 0.5)
AE_DROPOUT = (0.0, 0.0, 0.0, 0.0, 0.1, 0.2)
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class AutoEncoder(nn.Module):
  """Convolutional autoencoder with optional additive skip connections.

  Attributes:
    depth: number of stride-2 levels; inputs must be divisible by 2**depth.
    features: feature maps at level 0, doubled at every level.
    kernel: square kernel size of every convolution.
    skips: add encoder level L to the decoder at level L (AESc) or not (AE).
    dropout_rates: MC-dropout rate per level, used when mc_dropout is on.
    train_dropout: also apply those rates while training (METHOD.md Q1).
    bn_axis_name: device axis over which training BatchNorm statistics are
      averaged (None on a single device).
    conv_impl: 'fast' (exact reformulations, aad/models/layers.py) or
      'plain' (textbook convolutions); same parameters, same outputs.
    prepared: the convolutions read fast-form kernels built once
      (`layers.prepare`; inference only).
    dtype: computation dtype (parameters stay float32).
  """
  depth: int = 6
  features: int = 16
  kernel: int = 5
  skips: bool = True
  dropout_rates: Sequence[float] = AESC_DROPOUT
  train_dropout: bool = False
  bn_axis_name: str | None = None
  conv_impl: str = 'fast'
  prepared: bool = False
  dtype: jnp.dtype = jnp.float32

  @property
  def first_dropout_level(self) -> int:
    """The finest level with dropout (`depth` if none): levels before it
    are deterministic even under MC dropout."""
    return next((l for l in range(self.depth) if self.dropout_rates[l] > 0),
                self.depth)

  def _dropout_names(self) -> dict[tuple[str, int], str]:
    """The names Linen would give the Dropout layers, in creation order.

    Explicit names keep each layer's rng stream (derived from its name)
    the same whether a pass starts at the input or at `resume`.
    """
    order = [('enc', l) for l in range(self.depth)]
    order += [('dec', l) for l in reversed(range(self.depth - 1))]
    order = [o for o in order if self.dropout_rates[o[1]] > 0]
    return {o: f'Dropout_{i}' for i, o in enumerate(order)}

  @nn.compact
  def __call__(self, x, *, train: bool = False, mc_dropout: bool = False,
               until_dropout: bool = False, resume=None):
    """Reconstructs `x`.

    Args:
      x: float images in [0, 1], shape (N, H, W, C).
      train: BatchNorm uses batch statistics and updates its running ones.
      mc_dropout: apply the per-level dropout (needs a 'dropout' rng).
      until_dropout: stop before the first level with dropout and return
        its activations (a pytree) instead of a reconstruction.
      resume: such activations, from the same `x` and variables; the pass
        starts there (only `x`'s shape is used).

    Returns:
      Reconstructions in [0, 1] with the shape of `x`, or the activations
      if `until_dropout`.
    """
    if len(self.dropout_rates) < self.depth:
      raise ValueError(f'dropout_rates has {len(self.dropout_rates)} entries '
                       f'but depth is {self.depth}')
    _, h, w, c = x.shape
    if h % 2**self.depth or w % 2**self.depth:
      raise ValueError(f'image size {h}x{w} is not divisible by '
                       f'2**depth = {2**self.depth}')
    if train and (until_dropout or resume is not None):
      raise ValueError('until_dropout / resume are for inference only')
    use_dropout = mc_dropout or (train and self.train_dropout)
    conv = lambda f, name, **kw: layers.Conv(
        f, self.kernel, impl=self.conv_impl, prepared=self.prepared,
        dtype=self.dtype, name=name, **kw)
    norm = lambda name: nn.BatchNorm(
        use_running_average=not train, momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON, dtype=self.dtype,
        axis_name=self.bn_axis_name if train else None, name=name)

    names = self._dropout_names()

    def drop(y, part, level):
      rate = self.dropout_rates[level]
      if not use_dropout or rate == 0:
        return y
      return nn.Dropout(rate, deterministic=False,
                        name=names[(part, level)])(y)

    def encode(y, level):
      y = conv(self.features * 2**level, f'enc_conv{level}', stride=2)(y)
      return nn.leaky_relu(norm(f'enc_bn{level}')(y), _LEAKY_SLOPE)

    first = self.first_dropout_level
    if resume is None:
      y, skips = x.astype(self.dtype), []
    else:
      y, skips = resume[0], list(resume[1])
    for level in range(self.depth):
      if resume is not None and level < first:
        continue  # Its output is in `skips` already.
      if resume is None or level != first:
        y = encode(y, level)
      if until_dropout and level == first:
        return y, tuple(skips)
      # Level outputs for the activation-Gaussian scorer; sow stores
      # nothing unless 'intermediates' is mutable.
      self.sow('intermediates', f'enc{level}', y)
      y = drop(y, 'enc', level)
      skips.append(y)
    if until_dropout:  # No dropout at all: the prefix is the encoder.
      return y, tuple(skips)
    # Every decoder conv reads a x2 nearest-upsampled input; the conv does
    # the upsampling itself (exactly, and faster in the 'fast' form).
    for level in reversed(range(self.depth - 1)):
      y = conv(self.features * 2**level, f'dec_conv{level}',
               upsample_input=True)(y)
      y = nn.leaky_relu(norm(f'dec_bn{level}')(y), _LEAKY_SLOPE)
      y = drop(y, 'dec', level)
      if self.skips:
        y = y + skips[level]
      self.sow('intermediates', f'dec{level}', y)
    y = conv(c, 'out_conv', upsample_input=True)(y)
    return nn.sigmoid(y.astype(jnp.float32))


def build(m: ml_collections.ConfigDict, axis_name: str | None = None,
          prepared: bool = False) -> AutoEncoder:
  """The AutoEncoder of a `config.model` block (name 'aesc' or 'ae').

  Args:
    m: the model block.
    axis_name: pmap axis over which training BatchNorm averages its batch
      statistics (None on one device or for inference).
    prepared: for variables with prepared kernels (`layers.prepare`).
  """
  rates = tuple(m.dropout_rates) or (AESC_DROPOUT if m.name == 'aesc'
                                     else AE_DROPOUT)
  if len(rates) < m.depth:
    raise ValueError(f'config.model.dropout_rates has {len(rates)} entries, '
                     f'need one per level (depth={m.depth})')
  dtype = m.get('dtype', 'float32')
  if dtype not in DTYPES:
    raise ValueError(f'config.model.dtype={dtype!r}: choose one of '
                     f'{sorted(DTYPES)}')
  # The paper's lists are for depth 6; a shallower model keeps the finest.
  return AutoEncoder(
      depth=m.depth, features=m.features, kernel=m.kernel,
      skips=m.name == 'aesc', dropout_rates=rates[:m.depth],
      train_dropout=m.train_dropout, bn_axis_name=axis_name,
      conv_impl=m.conv_impl, prepared=prepared, dtype=DTYPES[dtype])


def layer_names(depth: int) -> tuple[str, ...]:
  """The layers whose activations can be sampled: encoder then decoder
  levels ('enc0' finest ... 'dec0')."""
  return (tuple(f'enc{l}' for l in range(depth)) +
          tuple(f'dec{l}' for l in reversed(range(depth - 1))))


def sample_positions(shapes: dict, g: ml_collections.ConfigDict
                     ) -> dict[str, np.ndarray]:
  """{layer: flat (h, w, c) indices of its vector_size samples}.

  One random mask per layer (seed 001), drawn from g.seed and the layer's
  index, so every image and every run with that seed uses the same one.

  Raises:
    ValueError: naming config.eval.activation_gaussian, for an unknown
      layer or one with fewer values than vector_size.
  """
  names = list(shapes)
  chosen = tuple(g.layers) or tuple(names)
  out = {}
  for layer in chosen:
    if layer not in shapes:
      raise ValueError(f'config.eval.activation_gaussian.layers: unknown '
                       f'layer {layer!r}; choose from {", ".join(names)}.')
    size = int(np.prod(shapes[layer]))
    if size < g.vector_size:
      raise ValueError(
          f'config.eval.activation_gaussian.vector_size={g.vector_size} is '
          f'more than the {size} values of layer {layer!r}.')
    rng = np.random.default_rng([g.seed, names.index(layer)])
    out[layer] = np.sort(rng.choice(size, g.vector_size, replace=False))
  return out


def defaults() -> ml_collections.ConfigDict:
  """The fields of config.model that aesc and ae read (other families read
  the block named after them)."""
  c = ml_collections.ConfigDict()
  c.depth = 6              # stride-2 levels
  c.features = 16          # maps at level 0, doubled per level
  c.kernel = 5             # conv kernel size
  # 'fast': exact space-to-depth / sub-pixel forms of the strided and
  # upsampling convs (aad/models/layers.py); 'plain': textbook convs.
  c.conv_impl = 'fast'
  # Compute dtype: 'float32', or 'bfloat16' for GPU/TPU (parameters,
  # optimiser state and the loss stay float32; slower on CPUs).
  c.dtype = 'float32'
  # MC-dropout rate per level (finest first); () = the paper's for the model.
  c.dropout_rates = ()
  # METHOD.md Q1: the reference trains without dropout and only switches
  # it on for MC sampling, so False is the default.
  c.train_dropout = False
  # Training loss: 'mse' (the method's), 'ssim' (1 - SSIM) or 'mse_ssim'
  # (their sum, DRAEM's).
  c.loss = 'mse'
  return c


# config.model.loss of aesc / ae.
LOSSES = {'mse': losses.mse, 'ssim': losses.ssim_loss,
          'mse_ssim': losses.mse_ssim}


def family(config: ml_collections.ConfigDict,
           axis_name: str | None = None) -> base.Family:
  """AESc (config.model.name 'aesc') or the plain AE ('ae') as a family.

  One stage: Adam on config.model.loss (the MSE by default) between the
  reconstruction of corrupted images
  (config.corruption) and the clean ones. Outputs: the reconstruction and,
  with config.eval.mc_samples passes of MC dropout, their mean and the
  per-pixel variance.
  """
  m = config.model
  # Runs saved before model.loss existed trained with the MSE.
  loss = m.get('loss', 'mse')
  if loss not in LOSSES:
    raise ValueError(f'config.model.loss={loss!r}: choose one of '
                     f'{", ".join(sorted(LOSSES))}')
  net, eval_net = build(m, axis_name), build(m)
  # `outputs` reads the fast-form kernels that `prepare` builds once per
  # checkpoint; the stage (validation in training) runs the plain ones.
  infer_net = build(m, prepared=True)

  def init(key, shape):
    return {'ae': net.init(key, jnp.zeros((1,) + tuple(shape), jnp.float32))}

  def prepare(variables, shape):
    return {**variables,
            'ae': layers.prepare(infer_net, variables['ae'], shape)}

  samples = config.eval.mc_samples

  def activations(v, x):
    """(reconstruction, (N, L, V) samples of the chosen layers' outputs)."""
    y, state = infer_net.apply(v, x, mutable=['intermediates'])
    acts = {k: a[0] for k, a in state['intermediates'].items()}
    positions = sample_positions(
        {k: acts[k].shape[1:] for k in layer_names(m.depth)},
        config.eval.activation_gaussian)
    return y, jnp.stack(
        [acts[k].reshape(x.shape[0], -1)[:, p].astype(jnp.float32)
         for k, p in positions.items()], axis=1)

  def outputs(variables, x, keys, wanted=frozenset()):
    v = variables['ae']
    out = {}
    if 'activations' in wanted:
      out['reconstruction'], out['activations'] = activations(v, x)
    if samples < 1 or not wanted & {'mc_mean', 'mc_variance'}:
      if 'reconstruction' not in out:
        out['reconstruction'] = infer_net.apply(v, x)
      return out
    # The memory estimate uses the configured batch, not this call's, so
    # a short last batch samples in the same chunks (same round-off).
    chunk = config.eval.mc_chunk or ops.mc_chunk_size(
        samples, config.eval.batch_size, x.shape[1:], m.features)
    return {**out, **ops.mc_dropout(
        infer_net.apply, samples=samples, chunk=chunk,
        shared_prefix=True)(v, x, keys)}

  def notes(wanted):
    if not wanted & {'mc_mean', 'mc_variance'}:
      return []
    return [f'MC dropout: {samples} passes, BatchNorm on running averages.']

  stage = base.Stage('ae', ('ae',), config.train.num_steps,
                     base.net_forward('ae', net, eval_net),
                     corruptions.from_config(config.corruption),
                     loss=LOSSES[loss])
  return base.Family(
      name=m.name, init=init, stages=(stage,), outputs=outputs,
      output_names=('reconstruction', 'mc_mean', 'mc_variance',
                    'activations'),
      scorers=('residual', 'mc_variance', 'baseline_mean'),
      size_multiple=2 ** m.depth, notes=notes, prepare=prepare,
      corruption=config.corruption.name)
