"""Reading back a training run: its config, categories, best checkpoints and
calibrated thresholds (what `aad.evaluate` and `aad.predict` start from)."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from aad import checkpoint
from aad import models
from aad import train
from aad.data.imageio import DataError

CONFIG_FILE = 'config.json'
THRESHOLDS_FILE = 'thresholds.json'


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
                 category: str) -> tuple[Any, dict]:
  """The category's best-val-PSNR checkpoint: (state, training summary).

  The summary is what training reported with it: best_step, train_seconds
  (up to that checkpoint) and steps.

  Raises:
    DataError: when the category has no checkpoint, naming the folder.
  """
  directory = os.path.join(workdir, category, 'checkpoints')
  if not os.path.isdir(directory):
    raise DataError(f'{directory}: no checkpoints for {category!r}; train '
                    f'it first (python -m aad.main --workdir={workdir}), '
                    'or pick one of the trained categories: '
                    f'{", ".join(trained_categories(workdir)) or "none"}.')
  ckpts = checkpoint.Checkpoints(directory)
  try:
    step = ckpts.best_step()
    if step is None:
      raise DataError(f'{directory}: no complete checkpoint yet; rerun '
                      'training in this workdir to finish it.')
    # Parameters do not depend on the image size: the smallest valid input
    # builds the target structure.
    side = 2 ** config.model.depth
    target = train.create_train_state(models.create(config.model), config,
                                      (side, side, config.dataset.channels))
    state, meta = ckpts.restore(step, target)
  finally:
    ckpts.close()
  return state, {'best_step': step, 'train_seconds': meta['seconds'],
                 'steps': config.train.num_steps}


def load_thresholds(workdir: str, category: str) -> dict:
  """The thresholds calibrated on good validation images during training."""
  path = os.path.join(workdir, category, THRESHOLDS_FILE)
  if not os.path.isfile(path):
    raise DataError(f'{path}: not found. It is written when a run is '
                    f'evaluated (python -m aad.evaluate --workdir={workdir}); '
                    'or give a threshold with --threshold.')
  with open(path) as f:
    return json.load(f)
