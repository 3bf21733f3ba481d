"""Reading back a training run: its config, categories, best checkpoints,
calibrated thresholds and fitted scorers (what `aad.evaluate` and
`aad.predict` start from)."""

from __future__ import annotations

import json
import os

from flax import serialization
import jax
import ml_collections
import numpy as np

from aad import checkpoint
from aad import data as data_lib
from aad import models
from aad import report
from aad import train
from aad.data.imageio import DataError
from aad.models import base

CONFIG_FILE = 'config.json'
THRESHOLDS_FILE = 'thresholds.json'
FITTED_FILE = 'scorers.msgpack'


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (workdir/config.json), locked."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise DataError(f'{path}: not found, so {workdir} is not a training '
                    'run. Point --workdir at the folder `python -m aad.main` '
                    'wrote (default runs/<config.name>).')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.lock()
  return config


def trained_categories(workdir: str) -> tuple[str, ...]:
  """Categories of the run that have a checkpoint, sorted."""
  if not os.path.isdir(workdir):
    return ()
  return tuple(sorted(
      c for c in os.listdir(workdir)
      if os.path.isdir(os.path.join(workdir, c, 'checkpoints'))))


def restore_best(config: ml_collections.ConfigDict, workdir: str,
                 category: str) -> tuple[base.Variables, dict]:
  """The category's networks, each from the best checkpoint of the stage
  that trained it: (variables, training summary as train.train_category).

  Raises:
    DataError: when a stage has no checkpoint, naming the folder.
  """
  directory = os.path.join(workdir, category, 'checkpoints')
  if not os.path.isdir(directory):
    raise DataError(f'{directory}: no checkpoints for {category!r}; train '
                    f'it first (python -m aad.main --workdir={workdir}), '
                    'or pick one of the trained categories: '
                    f'{", ".join(trained_categories(workdir)) or "none"}.')
  family = models.create(config)
  h, w = data_lib.image_size(config.dataset)
  shape = train.input_shape(config, family, (h, w, config.dataset.channels))
  variables = train.init_variables(family, config, shape)
  summaries = []
  for stage in family.stages:
    ckpts = checkpoint.Checkpoints(os.path.join(directory, stage.name))
    try:
      step = ckpts.best_step()
      if step is None:
        raise DataError(f'{ckpts.directory}: no complete checkpoint of stage '
                        f'{stage.name!r} yet; rerun training in this '
                        'workdir to finish it.')
      target = train.create_train_state(stage, variables, config)
      state, meta = ckpts.restore(step, target)
    finally:
      ckpts.close()
    variables = {**variables, **train.state_variables(state)}
    summaries.append({'best_step': step, 'train_seconds': meta['seconds'],
                      'steps': stage.num_steps})
  return variables, train.merge_summaries(family, summaries)


def load_thresholds(workdir: str, category: str) -> dict:
  """The thresholds calibrated on good validation images during training."""
  path = os.path.join(workdir, category, THRESHOLDS_FILE)
  if not os.path.isfile(path):
    raise DataError(f'{path}: not found. It is written when a run is '
                    f'evaluated (python -m aad.evaluate --workdir={workdir}); '
                    'or give a threshold with --threshold.')
  with open(path) as f:
    return json.load(f)


def save_fitted(out_dir: str, fitted: dict):
  """Saves what the scorers learnt from the training images (the
  `aad.scorers.fit` result), so scoring new images needs no training data."""
  data = serialization.msgpack_serialize(
      jax.tree.map(np.asarray, jax.device_get(fitted)))
  report.write_bytes(os.path.join(out_dir, FITTED_FILE), data)


def load_fitted(workdir: str, category: str) -> dict:
  """The scorers' fitted arrays saved by `save_fitted` ({} if none learn)."""
  path = os.path.join(workdir, category, FITTED_FILE)
  if not os.path.isfile(path):
    raise DataError(f'{path}: not found. It is written when a run is '
                    f'evaluated (python -m aad.evaluate --workdir={workdir}).')
  with open(path, 'rb') as f:
    return serialization.msgpack_restore(f.read())
