"""Training: TrainState, the pure train step, and the resumable loop.

The whole train split lives on the device(s). Every step, on device: draw a
global batch of indices from the step key, take this device's share, corrupt
each image with a key derived from (step key, position in the global batch),
and take an Adam step on the MSE to the clean images. Several steps run per
host call (`lax.scan`), so Python only dispatches and logs.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from absl import logging
from clu import metric_writers
import flax.linen as nn
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from aad import checkpoint
from aad import corruptions
from aad import data as data_lib
from aad import models
from aad import parallel
from aad import report
from aad import scoring


class TrainState(train_state.TrainState):
  batch_stats: Any = None


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a NaN loss); the message says what to do."""


def create_train_state(model: nn.Module, config: ml_collections.ConfigDict,
                       image_shape: tuple[int, int, int],
                       tx: optax.GradientTransformation | None = None
                       ) -> TrainState:
  """Initialises parameters (Glorot) and, by default, Adam.

  The optimiser must be built with `optax.inject_hyperparams` so the
  learning rate can be changed between steps (plateau schedule).
  """
  variables = jax.jit(model.init)(jax.random.key(config.seed),
                                  jnp.zeros((1,) + image_shape, jnp.float32))
  tx = tx or optax.inject_hyperparams(optax.adam)(
      learning_rate=config.train.learning_rate, b1=0.9, b2=0.999,
      eps=config.train.adam_eps)
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables['batch_stats'], tx=tx)


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image PSNR in dB for values in [0, 1]."""
  mse = jnp.mean((x - y) ** 2, axis=(1, 2, 3))
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def train_step(state: TrainState, clean: jax.Array, noisy: jax.Array,
               dropout_key: jax.Array, *, axis_name: str | None):
  """One Adam step on MSE(model(noisy), clean); pure.

  Args:
    state: the train state (identical on every device).
    clean: this device's clean images, float (b, H, W, C).
    noisy: the same images corrupted.
    dropout_key: key for dropout if the model trains with it.
    axis_name: device axis to average gradients and statistics over, or None.

  Returns:
    (new state, metrics dict of scalars averaged over devices).
  """
  def loss_fn(params):
    recon, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, noisy,
        train=True, mutable=['batch_stats'], rngs={'dropout': dropout_key})
    return jnp.mean((recon - clean) ** 2), updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  if axis_name is not None:
    # BatchNorm already averages its statistics over the axis (so the
    # running averages agree); the gradient of the global mean loss is the
    # mean of the per-device gradients.
    grads = lax.pmean(grads, axis_name)
    loss = lax.pmean(loss, axis_name)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
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


def make_train_chunk(corrupt: Callable, *, batch_size: int, num_devices: int,
                     num_steps: int, unroll: bool = True,
                     patch: int = 0) -> Callable:
  """Builds the per-device function that runs `num_steps` train steps.

  The batch drawn at a step and each image's corruption depend only on the
  step key and the image's position in the global batch, never on the
  device count, so N devices reproduce one device's training.

  Args:
    corrupt: the corruption, (key, image) -> image.
    batch_size: global batch size.
    num_devices: devices the batch is split over.
    num_steps: steps per call.
    unroll: chain the steps as straight-line code. XLA:CPU runs a train
      step inside a `lax.scan` loop about 13x slower than outside one, so
      CPUs unroll; accelerators use `lax.scan` (one compiled step).
    patch: > 0 trains on random patch x patch crops (patch mode).
  """
  if batch_size % num_devices:
    raise ValueError(f'config.train.batch_size={batch_size} is not divisible '
                     f'by the {num_devices} devices in use')
  local = batch_size // num_devices

  def chunk(state, data, key):
    if not unroll:
      return lax.scan(lambda st, _: _step(st, data, key), state, None,
                      length=num_steps)
    history = []
    for _ in range(num_steps):
      state, metrics = _step(state, data, key)
      history.append(metrics)
    return state, jax.tree.map(lambda *m: jnp.stack(m), *history)

  def _step(state, data, key):
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
    clean = scoring.to_float(images)
    # The conditional (always true) makes XLA materialise the corrupted
    # batch once: XLA:CPU drops optimisation barriers, and would otherwise
    # fuse the whole corruption into both consumers of the first conv's
    # input (forward, and the weight gradient's transposed copy, where it
    # runs 4x slower in a cache-hostile order).
    noisy = lax.cond(
        state.step >= 0,
        lambda: corruptions.corrupt_batch(corrupt, noise_key, clean,
                                          positions),
        lambda: clean)
    state, metrics = train_step(state, clean, noisy,
                                jax.random.fold_in(drop_key, dev),
                                axis_name=parallel.reduce_axis(num_devices))
    return state, metrics

  return chunk


def make_val_psnr(corrupt: Callable, apply_fn: Callable) -> Callable:
  """Per-device validation: PSNR of model(corrupted val) to clean val.

  The corruption key is fixed so that successive validations are comparable
  (the reference also validates on corrupted inputs).
  """
  def fn(variables, batch):
    images, positions = batch
    clean = scoring.to_float(images)
    noisy = corruptions.corrupt_batch(corrupt, jax.random.key(0), clean,
                                      positions)
    return psnr(apply_fn(variables, noisy), clean)
  return fn


def make_corruption(config: ml_collections.ConfigDict) -> Callable:
  """The configured corruption with the parameters of its config block."""
  params = config.get(config.name)
  return corruptions.make(config.name, params.to_dict() if params else {})


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


def train_category(config: ml_collections.ConfigDict, workdir: str,
                   dataset: data_lib.Dataset,
                   devices: list[jax.Device]) -> tuple[TrainState, dict]:
  """Trains (or resumes) one category's model and returns its best state.

  Args:
    config: the experiment config.
    workdir: this category's directory (checkpoints/, tensorboard/).
    dataset: the loaded category.
    devices: devices to pmap over (every process's, from
      `parallel.select_devices`).

  Returns:
    (state restored from the best-val-PSNR checkpoint, training summary).
  """
  n_dev = len(devices)
  model = models.create(config.model, axis_name=parallel.reduce_axis(n_dev))
  eval_model = models.create(config.model)
  image_shape = dataset.train.images.shape[1:]
  patch = config.dataset.patch_size
  if patch:
    side = 2 ** config.model.depth
    if patch > min(image_shape[:2]) or patch % side:
      raise TrainingError(
          f'config.dataset.patch_size={patch} must be at most the image '
          f'size {image_shape[0]}x{image_shape[1]} and a multiple of '
          f'2**model.depth = {side}.')
    image_shape = (patch, patch, image_shape[-1])
  state = create_train_state(model, config, image_shape)
  corrupt = make_corruption(config.corruption)
  ckpts = checkpoint.Checkpoints(os.path.join(workdir, 'checkpoints'))
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
    logging.info('Resuming %s from step %d (checkpoint in %s).',
                 dataset.category, start, ckpts.directory)
  start = int(state.step)
  total = config.train.num_steps
  per_call = max(1, min(config.train.steps_per_call,
                        config.train.log_every, config.train.eval_every))

  # One copy per device, passed per device: with train_data='shard' the
  # hosts' copies differ, which a replicated argument cannot express.
  train_data = parallel.per_device(
      host_train_images(dataset.train.images, config.distributed), devices)
  base_key = jax.random.key(config.seed + 1)
  chunks = {}

  def run_chunk(state, steps):
    if steps not in chunks:
      chunks[steps] = parallel.replicated_call(
          make_train_chunk(corrupt, batch_size=config.train.batch_size,
                           num_devices=n_dev, num_steps=steps,
                           unroll=devices[0].platform == 'cpu', patch=patch),
          devices, per_device_args=(1,))
    return chunks[steps](state, train_data, base_key)

  val_fn = parallel.batched_call(make_val_psnr(corrupt, eval_model.apply),
                                 devices)
  val_positions = np.arange(len(dataset.val.images))

  def validate(state):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    return float(np.mean(val_fn(variables, (dataset.val.images,
                                            val_positions))))

  # Only process 0 writes summaries; every process takes part in the
  # checkpoints (orbax coordinates them and writes host arrays once).
  writer = (metric_writers.SummaryWriter(os.path.join(workdir, 'tensorboard'))
            if parallel.is_primary() else metric_writers.MultiWriter([]))
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
          raise TrainingError(
              f'{dataset.category}: the training loss became {loss} near '
              f'step {step}. The last good checkpoint is kept in '
              f'{ckpts.directory}; lower config.train.learning_rate and '
              'rerun the same command to resume from it.')
        now = time.time()
        rate = (step - step_log) * config.train.batch_size / (now - t_log)
        eta = (total - step) * config.train.batch_size / max(rate, 1e-9)
        logging.info('%s step %d/%d  loss %.5f  %.1f img/s  ETA %s',
                     dataset.category, step, total, loss, rate,
                     _format_eta(eta))
        writer.write_scalars(step, {
            'train_loss': loss,
            'train_grad_norm': float(np.mean(metrics['grad_norm'])),
            'learning_rate': float(metrics['learning_rate'][-1]),
            'images_per_second': rate})
        t_log, step_log = now, step
      if step % config.train.eval_every == 0 or step == total:
        val = validate(state)
        lr = float(state.opt_state.hyperparams['learning_rate'])
        if config.train.plateau:
          new_lr = plateau.update(val, lr)
          if new_lr != lr:
            logging.info('%s: val PSNR has not improved by %.2f dB for %d '
                         'evaluations; learning rate %.2e -> %.2e',
                         dataset.category, plateau.min_delta,
                         plateau.patience, lr, new_lr)
            state = _set_lr(state, new_lr)
        logging.info('%s step %d  val PSNR %.2f dB', dataset.category, step,
                     val)
        writer.write_scalars(step, {'val_psnr': val})
        meta['plateau'] = {'best': plateau.best, 'wait': plateau.wait}
        meta['seconds'] = seconds0 + time.time() - t_start
        ckpts.save(step, jax.device_get(state), meta, val)
  except KeyboardInterrupt:
    ckpts.close()
    logging.warning('Interrupted at step %d; the last checkpoint (step %s) is '
                    'kept in %s. Rerun the same command to resume.', step,
                    ckpts.latest_step(), ckpts.directory)
    raise
  writer.flush()
  ckpts.wait()
  best = ckpts.best_step()
  if best is None:
    raise TrainingError(f'no checkpoint in {ckpts.directory}: set '
                        'config.train.num_steps > 0')
  state, meta = ckpts.restore(best, jax.device_get(state))
  ckpts.close()
  summary = {'best_step': best, 'train_seconds': meta['seconds'],
             'steps': total}
  return state, summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains and evaluates one model per category; writes the report.

  Every process of a multi-host run calls this; process 0 writes the
  reports and returns the means over categories, the others return {}.
  """
  from aad import evaluate  # pylint: disable=g-import-not-at-top
  devices = parallel.select_devices(config.num_devices)
  os.makedirs(workdir, exist_ok=True)
  if parallel.is_primary():
    report.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  categories = data_lib.config_categories(config.dataset)
  logging.info('Workdir %s; %d device(s) %s in %d process(es); categories %s',
               workdir, len(devices), devices[0].platform,
               jax.process_count(), ', '.join(categories))
  results = {}
  for category in categories:
    # Process 0 prepares a missing dataset cache alone; the others then
    # read it instead of racing to write it.
    dataset = parallel.primary_first(
        lambda c=category: data_lib.from_config(config.dataset, c),
        f'load {category}')
    cat_dir = os.path.join(workdir, category)
    state, summary = train_category(config, cat_dir, dataset, devices)
    results[category] = evaluate.evaluate_category(
        config, state, dataset, cat_dir, devices, extra=summary)
  return evaluate.write_summary(config, workdir, results)

