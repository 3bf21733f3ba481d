"""Training's pure pieces: TrainState, the train step and the per-device
chunk of steps, and the validation function.

Every step, on device: draw a global batch of indices from the step key,
take this device's share, corrupt each image with a key derived from (step
key, position in the global batch), and take an Adam step on the stage's
loss. Several steps run per host call, so Python only dispatches and logs.
The resumable loop around them is aad/training/loop.py.
"""

from __future__ import annotations

from typing import Any, Callable

from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import optax

from aad.models import base
from aad.models import corruptions
from aad.runtime import parallel
from aad.scoring import ops


class TrainState(train_state.TrainState):
  """Parameters, BatchNorm statistics and Adam state of a stage's trained
  networks, each a dict keyed by network name."""
  batch_stats: Any = None


def init_variables(family: base.Family, config: ml_collections.ConfigDict,
                   image_shape: tuple[int, int, int]) -> base.Variables:
  """Every network's initial variables (seeded by config.seed)."""
  return jax.jit(family.init, static_argnums=1)(
      jax.random.key(config.seed), tuple(image_shape))


def create_train_state(stage: base.Stage, variables: base.Variables,
                       config: ml_collections.ConfigDict,
                       tx: optax.GradientTransformation | None = None
                       ) -> TrainState:
  """The state of `stage`'s networks from `variables`, with Adam by default.

  The optimiser must be built with `optax.inject_hyperparams` so the
  learning rate can be changed between steps (plateau schedule).
  """
  tx = tx or optax.inject_hyperparams(optax.adam)(
      learning_rate=config.train.learning_rate, b1=0.9, b2=0.999,
      eps=config.train.adam_eps)
  return TrainState.create(
      apply_fn=None, params={n: variables[n]['params'] for n in stage.nets},
      batch_stats={n: variables[n].get('batch_stats', {})
                   for n in stage.nets}, tx=tx)


def state_variables(state: TrainState) -> base.Variables:
  """{net: {'params', 'batch_stats'}} of a stage's trained networks."""
  return {n: {'params': state.params[n], 'batch_stats': state.batch_stats[n]}
          for n in state.params}


def train_step(state: TrainState, frozen: base.Variables, inputs: jax.Array,
               clean: jax.Array, dropout_key: jax.Array, *,
               stage: base.Stage, axis_name: str | None):
  """One Adam step on stage.loss(stage.forward(inputs), clean); pure.

  Args:
    state: the train state of the stage's networks (same on every device).
    frozen: variables of the family's other networks, not trained here.
    inputs: this device's model inputs (corrupted images), (b, H, W, C).
    clean: the clean targets.
    dropout_key: key for dropout if the model trains with it.
    stage: the stage (forward, loss).
    axis_name: device axis to average gradients and statistics over, or None.

  Returns:
    (new state, metrics dict of scalars averaged over devices).
  """
  def loss_fn(params):
    variables = dict(frozen)
    for name in params:
      variables[name] = {'params': params[name],
                         'batch_stats': state.batch_stats[name]}
    prediction, batch_stats = stage.forward(
        variables, inputs, train=True, rngs={'dropout': dropout_key})
    return stage.loss(prediction, clean), batch_stats

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  if axis_name is not None:
    # BatchNorm already averages its statistics over the axis (so the
    # running averages agree); the gradient of the global mean loss is the
    # mean of the per-device gradients.
    grads = lax.pmean(grads, axis_name)
    loss = lax.pmean(loss, axis_name)
  new_state = state.apply_gradients(
      grads=grads, batch_stats={**state.batch_stats, **batch_stats})
  metrics = {'loss': loss, 'grad_norm': optax.global_norm(grads),
             'learning_rate': state.opt_state.hyperparams['learning_rate']}
  return new_state, metrics


def random_patches(key: jax.Array, images: jax.Array, patch: int,
                   positions: jax.Array) -> jax.Array:
  """One random patch x patch crop per image (patch mode), at offsets drawn
  from `key` and each image's global batch position."""
  def crop(image, position):
    k = jax.random.fold_in(key, position)
    top = jax.random.randint(k, (), 0, image.shape[0] - patch + 1)
    left = jax.random.randint(jax.random.fold_in(k, 1), (), 0,
                              image.shape[1] - patch + 1)
    return lax.dynamic_slice(image, (top, left, 0),
                             (patch, patch, image.shape[2]))
  return jax.vmap(crop)(images, positions)


def make_train_chunk(stage: base.Stage, *, batch_size: int,
                     num_devices: int, num_steps: int, unroll: bool = True,
                     patch: int = 0) -> Callable:
  """Builds the per-device function that runs `num_steps` train steps.

  The batch drawn at a step and each image's corruption depend only on the
  step key and the image's position in the global batch, never on the
  device count, so N devices reproduce one device's training.

  Args:
    stage: the stage to train (corruption, inputs, forward, loss).
    batch_size: global batch size.
    num_devices: devices the batch is split over.
    num_steps: steps per call.
    unroll: chain the steps as straight-line code. XLA:CPU runs a train
      step inside a `lax.scan` loop many times slower than outside one, so
      CPUs unroll; accelerators use `lax.scan` (one compiled step).
    patch: > 0 trains on random patch x patch crops (patch mode).

  Returns:
    chunk(state, data, frozen, key) -> (state, stacked metrics).
  """
  if batch_size % num_devices:
    raise ValueError(f'config.train.batch_size={batch_size} is not divisible '
                     f'by the {num_devices} devices in use')
  local = batch_size // num_devices

  def chunk(state, data, frozen, key):
    if not unroll:
      return lax.scan(lambda st, _: _step(st, data, frozen, key), state, None,
                      length=num_steps)
    history = []
    for _ in range(num_steps):
      state, metrics = _step(state, data, frozen, key)
      history.append(metrics)
    return state, jax.tree.map(lambda *m: jnp.stack(m), *history)

  def _step(state, data, frozen, key):
    step_key = jax.random.fold_in(key, state.step)
    idx_key, noise_key, drop_key = jax.random.split(step_key, 3)
    dev = parallel.device_index()
    positions = dev * local + jnp.arange(local)
    indices = jax.random.randint(idx_key, (batch_size,), 0, data.shape[0])
    images = data[indices[positions]]
    if patch:
      # Its own key: the same batch indices and noise keys as whole-image
      # training.
      images = random_patches(jax.random.fold_in(step_key, 3), images, patch,
                              positions)
    clean = ops.to_float(images)
    # The conditional (always true) makes XLA materialise the corrupted
    # batch once: XLA:CPU drops optimisation barriers, and would otherwise
    # fuse the whole corruption into both consumers of the first conv's
    # input (forward, and the weight gradient's transposed copy, where it
    # runs in a cache-hostile order).
    # The other branch only needs the shape (a corruption may add
    # channels, e.g. a mask).
    corrupt = lambda: corruptions.corrupt_batch(stage.corrupt, noise_key,
                                                clean, positions)
    shape = jax.eval_shape(corrupt)
    inputs = lax.cond(
        state.step >= 0, corrupt,
        lambda: clean if shape.shape == clean.shape else jnp.zeros(
            shape.shape, shape.dtype))
    if stage.prepare is not None:
      inputs = lax.stop_gradient(stage.prepare(frozen, inputs))
    if stage.crop:
      # One window per image, the same for its input and its target.
      both = random_patches(jax.random.fold_in(step_key, 4),
                            jnp.concatenate([inputs, clean], axis=-1),
                            stage.crop, positions)
      inputs, clean = jnp.split(both, [inputs.shape[-1]], axis=-1)
    return train_step(state, frozen, inputs, clean,
                      jax.random.fold_in(drop_key, dev), stage=stage,
                      axis_name=parallel.reduce_axis(num_devices))

  return chunk


def make_val_fn(stage: base.Stage) -> Callable:
  """Per-device validation: stage.val_metric of the stage's prediction from
  corrupted validation images against the clean ones.

  The corruption key is fixed so that successive validations are comparable
  (the reference also validates on corrupted inputs).
  """
  def fn(variables, batch):
    images, positions = batch
    clean = ops.to_float(images)
    inputs = corruptions.corrupt_batch(stage.corrupt, jax.random.key(0),
                                       clean, positions)
    if stage.prepare is not None:
      inputs = stage.prepare(variables, inputs)
    return stage.val_metric(stage.forward(variables, inputs, train=False)[0],
                            clean)
  return fn
