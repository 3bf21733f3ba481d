"""Training: the resumable loop over a family's stages (aad/models/base.py).

A family trains in stages; each stage trains some of its networks with the
others frozen. The whole train split lives on the device(s); the steps
themselves are aad/training/step.py. The loop resumes from checkpoints,
lowers the learning rate on plateaus, validates, logs to TensorBoard and
stops cleanly on NaN losses and Ctrl-C. This module knows nothing of
evaluation.
"""

from __future__ import annotations

import os
import time

from absl import logging
from clu import metric_writers
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aad import data
from aad import models
from aad.models import base
from aad.runtime import checkpoint
from aad.runtime import errors
from aad.runtime import logs
from aad.runtime import parallel
from aad.training import step as step_lib


class TrainingError(errors.UserError, RuntimeError):
  """Training cannot go on (e.g. a NaN loss); the message says what to do."""


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


def _set_lr(state: step_lib.TrainState, lr: float) -> step_lib.TrainState:
  hyper = dict(state.opt_state.hyperparams)
  hyper['learning_rate'] = jnp.asarray(lr, jnp.float32)
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))


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
  if patch:
    try:
      if patch > min(h, w):
        raise ValueError(f'it must be at most the image size {h}x{w}')
      family.check_size(patch, patch, 'the patch size')
    except ValueError as e:
      raise TrainingError(f'config.dataset.patch_size: {e}') from None
  # In patch mode too: the validation loss runs on whole images.
  try:
    family.check_size(h, w, 'the image size')
  except ValueError as e:
    m = family.size_multiple
    raise TrainingError(
        f'config.dataset.image_size / image_width: {str(e).rstrip(".")}, '
        f'e.g. {max(m, h // m * m)}x{max(m, w // m * m)}.') from None
  return (patch, patch, c) if patch else (h, w, c)


def _resume(config: ml_collections.ConfigDict, stage: base.Stage,
            variables: base.Variables, ckpts: checkpoint.Checkpoints,
            label: str) -> tuple[step_lib.TrainState, dict, Plateau]:
  """(train state, checkpoint metadata, plateau schedule): fresh, or those
  of the stage's latest checkpoint."""
  state = step_lib.create_train_state(stage, variables, config)
  meta = {'config': config.to_dict(), 'plateau': {}, 'seconds': 0.0}
  start = ckpts.latest_step()
  if start is not None:
    state, meta = ckpts.restore(start, state)
    meta['config'] = config.to_dict()  # this run's, e.g. a raised num_steps
    logging.info('Resuming %s from step %d (checkpoint in %s).', label,
                 start, ckpts.directory)
  plateau = Plateau(config.train.plateau_patience,
                    config.train.plateau_factor,
                    config.train.plateau_min_delta, **meta['plateau'])
  return state, meta, plateau


def _chunk_runner(config: ml_collections.ConfigDict, stage: base.Stage,
                  index: int, frozen: base.Variables,
                  dataset: data.Dataset, devices: list[jax.Device],
                  label: str = ''):
  """run(state, steps) -> (state, stacked metrics): `steps` train steps on
  the devices, one compiled chunk per step count (its first call logs a
  line before and after the compilation)."""
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

  def run(state, steps):
    if steps in chunks:
      return chunks[steps](state, train_data, frozen_on_devices, base_key)
    logging.info('%s: compiling the training step (first call, %d step%s '
                 'per call)...', label, steps, 's' if steps > 1 else '')
    t0 = time.time()
    chunks[steps] = parallel.replicated_call(
        step_lib.make_train_chunk(
            stage, batch_size=config.train.batch_size,
            num_devices=len(devices), num_steps=steps,
            unroll=devices[0].platform == 'cpu',
            patch=config.dataset.patch_size),
        devices, per_device_args=(1,))
    out = chunks[steps](state, train_data, frozen_on_devices, base_key)
    logging.info('%s: first call done in %.1fs (compilation included); '
                 'training...', label, time.time() - t0)
    return out

  return run


def _validator(stage: base.Stage, frozen: base.Variables,
               dataset: data.Dataset, devices: list[jax.Device]):
  """validate(state) -> the mean stage.val_metric over the val images."""
  val_fn = parallel.batched_call(step_lib.make_val_fn(stage), devices)
  positions = np.arange(len(dataset.val.images))

  def validate(state):
    variables = {**frozen, **step_lib.state_variables(state)}
    return float(np.mean(val_fn(variables, (dataset.val.images,
                                            positions))))

  return validate


class _Scalars:
  """TensorBoard scalars, written once the checkpoint that covers their
  step is saved: a run killed in between resumes from that checkpoint and
  logs those steps again, which TensorBoard would show twice.

  Only process 0 writes, and only when there is training to do (a finished
  stage's folder stays as it was).
  """

  def __init__(self, directory: str, active: bool):
    self.writer = (metric_writers.SummaryWriter(directory) if active
                   else metric_writers.MultiWriter([]))
    self.pending = []

  def add(self, step: int, scalars: dict):
    self.pending.append((step, scalars))

  def write_upto(self, saved: int):
    for item in [p for p in self.pending if p[0] <= saved]:
      self.writer.write_scalars(*item)
      self.pending.remove(item)

  def flush(self):
    self.writer.flush()


def _check_finite(losses: np.ndarray, loss: float, step: int, label: str,
                  config: ml_collections.ConfigDict,
                  ckpts: checkpoint.Checkpoints):
  """Raises TrainingError, naming the kept checkpoint, on a NaN or infinite
  loss."""
  if np.all(np.isfinite(losses)):
    return
  ckpts.wait()
  last = ckpts.latest_step()
  kept = (f'the checkpoint of step {last} is kept in {ckpts.directory}'
          if last is not None else 'no checkpoint had been saved yet')
  raise TrainingError(
      f'{label}: the training loss became {loss} near step {step} '
      f'(config.train.learning_rate={config.train.learning_rate:g}); '
      f'{kept}. Rerun with a lower config.train.learning_rate in a new '
      '--workdir.')


class _Progress:
  """The train loss, speed and ETA in the log and TensorBoard (every
  config.train.log_every steps), and in the log alone when `SILENT_S`
  seconds have passed without a line."""

  SILENT_S = 20.0

  def __init__(self, config: ml_collections.ConfigDict, label: str,
               start: int, total: int):
    self.config, self.label, self.total = config, label, total
    # The rate is measured from the last TensorBoard line (t_log,
    # step_log); the silence from the last line of either kind (t_line).
    self.t_log, self.step_log = time.time(), start
    self.t_line = self.t_log

  def due(self) -> bool:
    return time.time() - self.t_line >= self.SILENT_S

  def log(self, step: int, metrics: dict, scalars: _Scalars | None,
          ckpts: checkpoint.Checkpoints):
    metrics = jax.device_get(metrics)
    loss = float(np.mean(metrics['loss']))
    _check_finite(metrics['loss'], loss, step, self.label, self.config,
                  ckpts)
    batch = self.config.train.batch_size
    now = time.time()
    rate = (step - self.step_log) * batch / (now - self.t_log)
    eta = (self.total - step) * batch / max(rate, 1e-9)
    logging.info('%s step %d/%d  loss %.5f  %.1f img/s  ETA %s', self.label,
                 step, self.total, loss, rate, logs.format_eta(eta))
    self.t_line = now
    if scalars is None:  # a line between two of log_every: the log only
      return
    scalars.add(step, {
        'train_loss': loss,
        'train_grad_norm': float(np.mean(metrics['grad_norm'])),
        'learning_rate': float(metrics['learning_rate'][-1]),
        'images_per_second': rate})
    self.t_log, self.step_log = now, step


def _lower_on_plateau(state, val: float, plateau: Plateau, label: str,
                      val_name: str):
  """The state with the learning rate the plateau schedule sets after
  `val`."""
  lr = float(state.opt_state.hyperparams['learning_rate'])
  new_lr = plateau.update(val, lr)
  if new_lr == lr:
    return state
  logging.info('%s: %s has not improved by %.2f for %d evaluations; '
               'learning rate %.2e -> %.2e', label, val_name,
               plateau.min_delta, plateau.patience, lr, new_lr)
  return _set_lr(state, new_lr)


def _finish(ckpts: checkpoint.Checkpoints, state, stage: base.Stage,
            total: int) -> tuple[base.Variables, dict]:
  """The stage's variables from its best checkpoint, and its summary."""
  best = ckpts.best_step()
  if best is None:
    raise TrainingError(f'no checkpoint in {ckpts.directory}: set the '
                        'number of steps of stage '
                        f'{stage.name!r} above 0')
  state, meta = ckpts.restore(best, jax.device_get(state))
  ckpts.close()
  summary = {'best_step': best, 'train_seconds': meta['seconds'],
             'steps': total}
  return step_lib.state_variables(state), summary


def train_stage(config: ml_collections.ConfigDict, family: base.Family,
                index: int, variables: base.Variables, workdir: str,
                dataset: data.Dataset,
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
  frozen = {n: v for n, v in variables.items() if n not in stage.nets}
  ckpts = checkpoint.Checkpoints(
      os.path.join(workdir, 'checkpoints', stage.name))
  state, meta, plateau = _resume(config, stage, variables, ckpts, label)
  step, total = int(state.step), stage.num_steps
  train = config.train
  per_call = max(1, min(train.steps_per_call, train.log_every,
                        train.eval_every))
  run_chunk = _chunk_runner(config, stage, index, frozen, dataset, devices,
                            label)
  validate = _validator(stage, frozen, dataset, devices)
  val_name = f'val {stage.val_metric.__name__}'
  scalars = _Scalars(os.path.join(workdir, 'tensorboard', stage.name),
                     parallel.is_primary() and step < total)
  progress = _Progress(config, label, step, total)
  state = parallel.replicate(state, devices)
  t_start, seconds0 = time.time(), meta['seconds']
  try:
    while step < total:
      n = min(per_call, total - step, train.eval_every - step %
              train.eval_every)
      state, metrics = run_chunk(state, n)
      step += n
      validating = step % train.eval_every == 0 or step == total
      if step % train.log_every == 0 or validating:
        progress.log(step, metrics, scalars, ckpts)
      elif progress.due():
        progress.log(step, metrics, None, ckpts)
      if not validating:
        continue
      val = validate(state)
      if train.plateau:
        state = _lower_on_plateau(state, val, plateau, label, val_name)
      logging.info('%s step %d  %s %.2f', label, step, val_name, val)
      scalars.add(step, {val_name.replace(' ', '_'): val})
      meta['plateau'] = {'best': plateau.best, 'wait': plateau.wait}
      meta['seconds'] = seconds0 + time.time() - t_start
      ckpts.wait()  # the previous save is complete: log up to it
      scalars.write_upto(ckpts.latest_step() or 0)
      ckpts.save(step, jax.device_get(state), meta, val)
  except KeyboardInterrupt:
    ckpts.close()
    scalars.write_upto(ckpts.latest_step() or 0)
    scalars.flush()
    logging.warning('Interrupted at step %d; the last checkpoint (step %s) is '
                    'kept in %s. Rerun the same command to resume.', step,
                    ckpts.latest_step(), ckpts.directory)
    raise
  ckpts.wait()
  scalars.write_upto(total)
  scalars.flush()
  return _finish(ckpts, state, stage, total)


def train_category(config: ml_collections.ConfigDict, workdir: str,
                   dataset: data.Dataset, devices: list[jax.Device],
                   family: base.Family | None = None
                   ) -> tuple[base.Variables, dict]:
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
  logging.info('%s: initialising the model (%s, input %s)...',
               dataset.category, config.model.name,
               'x'.join(map(str, shape)))
  variables = step_lib.init_variables(family, config, shape)
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
