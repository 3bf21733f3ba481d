"""Training: TrainState, the pure train step, and the resumable stage loop.

A family (aad/models/base.py) trains in stages; each stage trains some of
its networks with the others frozen. The whole train split lives on the
device(s). Every step, on device: draw a global batch of indices from the
step key, take this device's share, corrupt each image with a key derived
from (step key, position in the global batch), and take an Adam step on the
stage's loss. Several steps run per host call, so Python only dispatches
and logs. This module knows nothing of evaluation.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from absl import logging
from clu import metric_writers
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from aad.runtime import checkpoint
from aad.models import corruptions
from aad import data as data_lib
from aad.runtime import errors
from aad import models
from aad.runtime import parallel
from aad.scoring import ops
from aad.models import base


class TrainState(train_state.TrainState):
  """Parameters, BatchNorm statistics and Adam state of a stage's trained
  networks, each a dict keyed by network name."""
  batch_stats: Any = None


class TrainingError(errors.UserError, RuntimeError):
  """Training cannot go on (e.g. a NaN loss); the message says what to do."""


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
      step inside a `lax.scan` loop about 13x slower than outside one, so
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
    # runs 4x slower in a cache-hostile order).
    inputs = lax.cond(
        state.step >= 0,
        lambda: corruptions.corrupt_batch(stage.corrupt, noise_key, clean,
                                          positions),
        lambda: clean)
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


class Plateau:
  """Host-side ReduceLROnPlateau on val PSNR (mode max), as the reference."""

  def __init__(self, patience: int, factor: float, min_delta: float,
               best: float = -np.inf, wait: int = 0):
    self.patience, self.factor, self.min_delta = patience, factor, min_delta
    self.best, self.wait = best, wait

  def update(self, value: float, lr: float) -> float:
    """Returns the learning rate to use after observing `value`."""
    if value > self.best + self.min_delta:
      self.best, self.wait = value, 0
      return lr
    self.wait += 1
    if self.wait >= self.patience:
      self.wait = 0
      return lr * self.factor
    return lr


def _set_lr(state: TrainState, lr: float) -> TrainState:
  hyper = dict(state.opt_state.hyperparams)
  hyper['learning_rate'] = jnp.asarray(lr, jnp.float32)
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 60}m{seconds % 60:02d}s'


def host_train_images(images: np.ndarray,
                       config: ml_collections.ConfigDict) -> np.ndarray:
  """The train images this host puts on its devices.

  Args:
    images: the whole train split, uint8 (N, H, W, C).
    config: the `distributed` block: 'all' keeps every image (global batches
      as on one host), 'shard' this host's equal share, 'auto' the former up
      to `max_replicated_mb`.

  Returns:
    `images` or this host's slice of them (all of them with one process).
  """
  mode = config.train_data
  if mode not in ('auto', 'all', 'shard'):
    raise ValueError(f"config.distributed.train_data={mode!r}: use 'auto', "
                     "'all' or 'shard'.")
  if mode == 'auto':
    mode = ('all' if images.nbytes <= config.max_replicated_mb * 2**20
            else 'shard')
  if mode == 'all':
    return images
  part = images[parallel.host_slice(len(images))]
  if len(part) < len(images):
    logging.info('Each host trains on its own %d of the %d train images '
                 '(config.distributed.train_data).', len(part), len(images))
  return part


def input_shape(config: ml_collections.ConfigDict, family: base.Family,
                image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
  """The shape the networks train on: the images', or the patches' in
  patch mode; checked against the family's size rule.

  Raises:
    TrainingError: naming the config field, for a size the networks cannot
      take.
  """
  h, w, c = image_shape
  patch = config.dataset.patch_size
  try:
    if patch:
      if patch > min(h, w):
        raise ValueError(f'it must be at most the image size {h}x{w}')
      family.check_size(patch, patch, 'the patch size')
      return (patch, patch, c)
    family.check_size(h, w, 'the image size')
  except ValueError as e:
    field = ('config.dataset.patch_size' if patch else
             'config.dataset.image_size / image_width')
    raise TrainingError(f'{field}: {e}') from None
  return (h, w, c)


def train_stage(config: ml_collections.ConfigDict, family: base.Family,
                index: int, variables: base.Variables, workdir: str,
                dataset: data_lib.Dataset,
                devices: list[jax.Device]) -> tuple[base.Variables, dict]:
  """Trains (or resumes) stage `index` of `family` on one category.

  Args:
    config: the experiment config.
    family: the family built for training (BatchNorm over the device axis).
    index: which of family.stages.
    variables: every network's variables: the stage's own as initialised,
      the others trained by earlier stages (frozen here).
    workdir: this category's directory (checkpoints/<stage>,
      tensorboard/<stage>).
    dataset: the loaded category.
    devices: devices to pmap over (every process's, from
      `parallel.select_devices`).

  Returns:
    (the stage's networks' variables from its best checkpoint, summary).
  """
  stage = family.stages[index]
  label = (dataset.category if len(family.stages) == 1
           else f'{dataset.category}/{stage.name}')
  n_dev = len(devices)
  frozen = {n: v for n, v in variables.items() if n not in stage.nets}
  state = create_train_state(stage, variables, config)
  ckpts = checkpoint.Checkpoints(
      os.path.join(workdir, 'checkpoints', stage.name))
  meta = {'config': config.to_dict(), 'plateau': {}, 'seconds': 0.0}
  plateau = Plateau(config.train.plateau_patience, config.train.plateau_factor,
                    config.train.plateau_min_delta)
  start = ckpts.latest_step()
  if start is not None:
    state, meta = ckpts.restore(start, state)
    meta['config'] = config.to_dict()  # this run's, e.g. a raised num_steps
    plateau = Plateau(config.train.plateau_patience,
                      config.train.plateau_factor,
                      config.train.plateau_min_delta, **meta['plateau'])
    logging.info('Resuming %s from step %d (checkpoint in %s).', label,
                 start, ckpts.directory)
  start = int(state.step)
  total = stage.num_steps
  per_call = max(1, min(config.train.steps_per_call,
                        config.train.log_every, config.train.eval_every))

  # One copy per device, passed per device: with train_data='shard' the
  # hosts' copies differ, which a replicated argument cannot express.
  train_data = parallel.per_device(
      host_train_images(dataset.train.images, config.distributed), devices)
  # Stage 0 keeps the key of single-stage training; later stages draw
  # their own batches.
  base_key = jax.random.key(config.seed + 1)
  if index:
    base_key = jax.random.fold_in(base_key, index)
  frozen_on_devices = parallel.replicate(frozen, devices)
  chunks = {}

  def run_chunk(state, steps):
    if steps not in chunks:
      chunks[steps] = parallel.replicated_call(
          make_train_chunk(stage, batch_size=config.train.batch_size,
                           num_devices=n_dev, num_steps=steps,
                           unroll=devices[0].platform == 'cpu',
                           patch=config.dataset.patch_size),
          devices, per_device_args=(1,))
    return chunks[steps](state, train_data, frozen_on_devices, base_key)

  val_fn = parallel.batched_call(make_val_fn(stage), devices)
  val_positions = np.arange(len(dataset.val.images))
  val_name = f'val {stage.val_metric.__name__}'

  def validate(state):
    variables = {**frozen, **state_variables(state)}
    return float(np.mean(val_fn(variables, (dataset.val.images,
                                            val_positions))))

  # Only process 0 writes summaries, and only when there is training to
  # do (a finished stage's folder stays as it was); every process takes
  # part in the checkpoints (orbax coordinates them and writes host arrays
  # once).
  writer = (metric_writers.SummaryWriter(
      os.path.join(workdir, 'tensorboard', stage.name))
            if parallel.is_primary() and start < total
            else metric_writers.MultiWriter([]))
  # Scalars are written once the checkpoint that covers their step is
  # saved: a run killed in between resumes from that checkpoint and logs
  # those steps again, which TensorBoard would show twice.
  pending = []

  def write_upto(saved):
    for item in [p for p in pending if p[0] <= saved]:
      writer.write_scalars(*item)
      pending.remove(item)
  state = parallel.replicate(state, devices)
  step, t_start, seconds0 = start, time.time(), meta['seconds']
  t_log, step_log = t_start, start
  try:
    while step < total:
      n = min(per_call, total - step,
              config.train.eval_every - step % config.train.eval_every)
      state, metrics = run_chunk(state, n)
      step += n
      if step % config.train.log_every == 0 or step == total or (
          step % config.train.eval_every == 0):
        metrics = jax.device_get(metrics)
        loss = float(np.mean(metrics['loss']))
        if not np.all(np.isfinite(metrics['loss'])):
          ckpts.wait()
          last = ckpts.latest_step()
          kept = (f'the checkpoint of step {last} is kept in '
                  f'{ckpts.directory}' if last is not None else
                  'no checkpoint had been saved yet')
          raise TrainingError(
              f'{label}: the training loss became {loss} near step {step} '
              f'(config.train.learning_rate='
              f'{config.train.learning_rate:g}); {kept}. Rerun with a lower '
              'config.train.learning_rate in a new --workdir.')
        now = time.time()
        rate = (step - step_log) * config.train.batch_size / (now - t_log)
        eta = (total - step) * config.train.batch_size / max(rate, 1e-9)
        logging.info('%s step %d/%d  loss %.5f  %.1f img/s  ETA %s', label,
                     step, total, loss, rate, _format_eta(eta))
        pending.append((step, {
            'train_loss': loss,
            'train_grad_norm': float(np.mean(metrics['grad_norm'])),
            'learning_rate': float(metrics['learning_rate'][-1]),
            'images_per_second': rate}))
        t_log, step_log = now, step
      if step % config.train.eval_every == 0 or step == total:
        val = validate(state)
        lr = float(state.opt_state.hyperparams['learning_rate'])
        if config.train.plateau:
          new_lr = plateau.update(val, lr)
          if new_lr != lr:
            logging.info('%s: %s has not improved by %.2f for %d '
                         'evaluations; learning rate %.2e -> %.2e', label,
                         val_name, plateau.min_delta, plateau.patience, lr,
                         new_lr)
            state = _set_lr(state, new_lr)
        logging.info('%s step %d  %s %.2f', label, step, val_name, val)
        pending.append((step, {val_name.replace(' ', '_'): val}))
        meta['plateau'] = {'best': plateau.best, 'wait': plateau.wait}
        meta['seconds'] = seconds0 + time.time() - t_start
        ckpts.wait()  # the previous save is complete: log up to it
        write_upto(ckpts.latest_step() or 0)
        ckpts.save(step, jax.device_get(state), meta, val)
  except KeyboardInterrupt:
    ckpts.close()
    write_upto(ckpts.latest_step() or 0)
    writer.flush()
    logging.warning('Interrupted at step %d; the last checkpoint (step %s) is '
                    'kept in %s. Rerun the same command to resume.', step,
                    ckpts.latest_step(), ckpts.directory)
    raise
  ckpts.wait()
  write_upto(total)
  writer.flush()
  best = ckpts.best_step()
  if best is None:
    raise TrainingError(f'no checkpoint in {ckpts.directory}: set the '
                        'number of steps of stage '
                        f'{stage.name!r} above 0')
  state, meta = ckpts.restore(best, jax.device_get(state))
  ckpts.close()
  summary = {'best_step': best, 'train_seconds': meta['seconds'],
             'steps': total}
  return state_variables(state), summary


def train_category(config: ml_collections.ConfigDict, workdir: str,
                   dataset: data_lib.Dataset,
                   devices: list[jax.Device]) -> tuple[base.Variables, dict]:
  """Trains (or resumes) every stage of one category's model, in order.

  A stage whose checkpoints already reach its step count is not trained
  again: its best checkpoint is restored, so a run killed in a later stage
  resumes that stage.

  Returns:
    (every network's variables from its stage's best checkpoint, summary:
    best_step of the last stage, train_seconds and steps summed over
    stages, and per-stage '<stage>/...' entries when there are several).
  """
  family = models.create(config,
                         axis_name=parallel.reduce_axis(len(devices)))
  shape = input_shape(config, family, dataset.train.images.shape[1:])
  variables = init_variables(family, config, shape)
  summaries = []
  for index in range(len(family.stages)):
    trained, stage_summary = train_stage(config, family, index, variables,
                                         workdir, dataset, devices)
    variables = {**variables, **trained}
    summaries.append(stage_summary)
  return variables, merge_summaries(family, summaries)


def merge_summaries(family: base.Family, summaries: list[dict]) -> dict:
  """One training summary from the stages': the last stage's best_step,
  train_seconds and steps summed, and '<stage>/<key>' for each stage when
  there are several."""
  out = {'best_step': summaries[-1]['best_step'],
         'train_seconds': sum(s['train_seconds'] for s in summaries),
         'steps': sum(s['steps'] for s in summaries)}
  if len(summaries) > 1:
    for stage, summary in zip(family.stages, summaries):
      out.update({f'{stage.name}/{k}': v for k, v in summary.items()})
  return out
