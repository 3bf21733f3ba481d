"""A training run's folder: who may write it (the same experiment only),
the debris a killed run leaves, and reading the run back: its config,
categories, best checkpoints, calibrated thresholds and fitted scorers
(what `aad.evaluate` and `aad.predict` start from)."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil

from absl import logging
from flax import serialization
import jax
import ml_collections
import numpy as np

from aad.runtime import checkpoint
from aad import data as data_lib
from aad.runtime import errors
from aad.runtime import atomic
from aad.runtime import lock as lock_lib
from aad.runtime import parallel
from aad.training import loop
from aad.training import step as step_lib
from aad.data.imageio import DataError
from aad.models import base
from aad.configs import default as default_config

CONFIG_FILE = 'config.json'
THRESHOLDS_FILE = 'thresholds.json'
FITTED_FILE = 'scorers.msgpack'
TIMINGS_FILE = 'timings.json'

# Config fields that change nothing a run computes (where the data cache
# lives, how processes find each other, how often progress is printed):
# a rerun may change them freely.
FREE_FIELDS = ('name', 'num_devices', 'distributed.*', 'sweep.*',
               'dataset.data_dir', 'dataset.manual_dir', 'train.log_every',
               'train.steps_per_call')
# Fields that change only how the trained model is evaluated: a rerun may
# change them when it says so (--allow_eval_changes).
EVAL_FIELDS = ('eval.*',)


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      out.update(_flat(value, f'{name}.'))
    else:
      out[name] = value
  return out


def _plain(config) -> dict:
  """The config as config.json holds it (lists, not tuples)."""
  return json.loads(json.dumps(atomic.jsonable(  # pylint: disable=protected-access
      config.to_dict() if hasattr(config, 'to_dict') else config)))


def _matches(field: str, patterns) -> bool:
  return any(fnmatch.fnmatchcase(field, p) for p in patterns)


def changed_fields(saved: dict, config) -> dict[str, tuple]:
  """{field: (saved value, new value)} of the fields that differ."""
  old, new = _flat(_plain(saved)), _flat(_plain(config))
  return {k: (old.get(k, '<absent>'), new.get(k, '<absent>'))
          for k in sorted(set(old) | set(new))
          if old.get(k, '<absent>') != new.get(k, '<absent>')}


def check_rerun(config: ml_collections.ConfigDict, workdir: str,
                allow_eval_changes: bool = False):
  """Refuses to write `workdir` with `config` if it holds a run of another
  experiment, before anything is written.

  A change of what the trained model depends on (model, data,
  preprocessing, corruption, training, seed) is refused: resuming would mix
  two runs in one folder. A change of eval.* fields is allowed only with
  `allow_eval_changes`; FREE_FIELDS always.

  Raises:
    UserError: naming the changed fields and what to do.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UserError(
        f'{path}: unreadable ({e}); this is not a run this version wrote. '
        'Choose another --workdir.') from None
  # A field this version added, absent from the saved config, changes
  # nothing at its default: new fields default to the old behaviour.
  defaults = _flat(_plain(default_config.get_config()))
  changed = {k: (a, b) for k, (a, b) in changed_fields(saved, config).items()
             if not _matches(k, FREE_FIELDS) and not (
                 a == '<absent>' and k in defaults and b == defaults[k])}
  if not changed:
    return
  model = {k: v for k, v in changed.items() if not _matches(k, EVAL_FIELDS)}

  def listing(fields):
    return '; '.join(f'config.{k} {a!r} -> {b!r}'
                     for k, (a, b) in list(fields.items())[:6]) + (
                         f' (and {len(fields) - 6} more)'
                         if len(fields) > 6 else '')
  if model:
    raise errors.UserError(
        f'--workdir={workdir} holds a run trained with other values of '
        f'{listing(model)}. Resuming it would mix two experiments: use a '
        'new --workdir for this config, or rerun with the values of '
        f'{path}.')
  if not allow_eval_changes:
    raise errors.UserError(
        f'--workdir={workdir} was evaluated with other values of '
        f'{listing(changed)}. Add --allow_eval_changes to re-evaluate the '
        'trained model with them (the reports are rewritten), or use a new '
        '--workdir.')


def missing_root(path: str) -> str:
  """The outermost folder of `path` that does not exist yet ('' if `path`
  exists): what creating `path` creates."""
  path = os.path.abspath(path)
  root = ''
  while not os.path.lexists(path):
    root, path = path, os.path.dirname(path)
  return root


@contextlib.contextmanager
def writer(workdir: str, created: str = ''):
  """Makes this run the workdir's only writer while the block runs.

  Process 0, the one that writes (`parallel.is_primary`), holds the
  workdir's lock file (aad/runtime/lock.py); every process learns whether
  it got it. If the block fails before config.json is written and this run
  created the folder (`created`: the outermost folder it made, from
  `missing_root`), the folders it made go too: a refused new run leaves
  nothing behind.

  Raises:
    UserError: on every process, when another run holds the lock (process
      0's names its host and PID).
  """
  primary = parallel.is_primary()
  with contextlib.ExitStack() as stack:
    refused = None
    if primary:
      try:
        stack.enter_context(lock_lib.workdir_lock(workdir))
      except lock_lib.Locked as e:
        refused = e
    if not parallel.from_primary(refused is None):
      raise refused or lock_lib.Locked(
          f'--workdir={workdir} is in use by another run of aad.main '
          f'(see {os.path.join(workdir, lock_lib.LOCK_FILE)}); wait for it '
          'to end, stop it, or choose another --workdir.')
    try:
      yield
    except BaseException:
      if not (primary and created and
              not os.path.exists(os.path.join(workdir, CONFIG_FILE))):
        raise
      # Nothing of the run was written; JAX's compilation cache may have
      # been (aad.main keeps it in the workdir).
      shutil.rmtree(os.path.join(workdir, 'xla_cache'), ignore_errors=True)
      stack.close()  # releases the lock, removing its file
      folder, top = os.path.abspath(workdir), os.path.abspath(created)
      with contextlib.suppress(OSError):
        while True:
          os.rmdir(folder)  # only if empty
          if folder == top or len(folder) <= len(top):
            break
          folder = os.path.dirname(folder)
      raise


def write_config(config: ml_collections.ConfigDict, workdir: str):
  """Saves the run's config (atomically), once its inputs are checked."""
  atomic.write_json(os.path.join(workdir, CONFIG_FILE), config.to_dict())


# What killed runs leave behind: report.py's and orbax's temporary files
# and folders, aad.predict's staging folders.
DEBRIS = ('.*.tmp', '*.orbax-checkpoint-tmp*', '.aad-write-test-*')


def clean_debris(workdir: str) -> list[str]:
  """Removes the temporary files and folders of killed runs under
  `workdir`; returns what was removed."""
  removed = []
  if not os.path.isdir(workdir):
    return removed
  for root, dirs, files in os.walk(workdir):
    if root == workdir and 'xla_cache' in dirs:
      dirs.remove('xla_cache')  # JAX's own, possibly another process's
    for name in list(dirs) + files:
      if _matches(name, DEBRIS):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
          shutil.rmtree(path, ignore_errors=True)
          dirs.remove(name)
        else:
          try:
            os.remove(path)
          except FileNotFoundError:
            # Gone since the listing: another process of a multi-host run
            # removed its own write probe (errors.writable_dir).
            continue
        removed.append(path)
  if removed:
    logging.info('Removed %d temporary file(s) of an interrupted run in %s.',
                 len(removed), workdir)
  return removed


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (workdir/config.json), locked."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise DataError(f'{path}: not found, so {workdir} is not a training '
                    'run. Point --workdir at the folder `python -m aad.main` '
                    'wrote (default runs/<config.name>).')
  with open(path) as f:
    saved = json.load(f)
  config = ml_collections.ConfigDict(
      with_new_fields(saved, _plain(default_config.get_config())))
  config.lock()
  return config


def with_new_fields(saved: dict, defaults: dict) -> dict:
  """`saved` (a config.json) with the fields this version added since it
  was written, at their defaults, which keep the old behaviour; every
  saved value is kept."""
  out = dict(saved)
  for key, value in defaults.items():
    if key not in out:
      out[key] = value
    elif isinstance(value, dict) and isinstance(out[key], dict):
      out[key] = with_new_fields(out[key], value)
  return out


def stage_steps(workdir: str, category: str, family: base.Family
                ) -> list[tuple[base.Stage, int, str]]:
  """(stage, the step of its latest checkpoint or 0, checkpoint folder) of
  each stage of `family` for `category`: where a rerun would resume."""
  out = []
  for stage in family.stages:
    directory = os.path.join(workdir, category, 'checkpoints', stage.name)
    reached = 0
    if os.path.isdir(directory):  # a manager would create it
      ckpts = checkpoint.Checkpoints(directory)
      try:
        reached = ckpts.latest_step() or 0
      finally:
        ckpts.close()
    out.append((stage, reached, directory))
  return out


def check_finished(workdir: str, categories, *,
                   config: ml_collections.ConfigDict | None = None,
                   family: base.Family | None = None,
                   allow: bool = False, allow_flag: str = ''
                   ) -> dict[str, str]:
  """Checks that every stage of each of `categories` reached its step
  count (config.train.num_steps, or the stage's own): that training ended.

  What aad.evaluate, aad.predict and aad.export read of a run killed
  before would be the figures of a half-trained model.

  Args:
    workdir: the run.
    categories: its trained categories to check.
    config, family: the run's (default: from workdir/config.json).
    allow: return the unfinished categories instead of refusing them.
    allow_flag: the command line's flag that sets `allow`, for the
      message ('' if it has none).

  Returns:
    {category: 'stage 'ae' reached step 12 of 40'} of the unfinished
    categories (empty when training ended).

  Raises:
    UserError: naming the first unfinished category, its stage, the step
      reached of how many, and the command that resumes it.
  """
  from aad import models  # pylint: disable=g-import-not-at-top
  config = config if config is not None else load_config(workdir)
  family = family if family is not None else models.create(config)
  unfinished, first = {}, None
  for category in categories:
    for stage, reached, directory in stage_steps(workdir, category, family):
      if reached < stage.num_steps:
        unfinished[category] = (f'stage {stage.name!r} reached step '
                                f'{reached} of {stage.num_steps}')
        first = first or (category, directory)
        break
  if unfinished and not allow:
    category, directory = first
    others = sorted(set(unfinished) - {category})
    more = (f' (so did {len(others)} more: {", ".join(others[:5])}'
            f'{", ..." if len(others) > 5 else ""})' if others else '')
    raise errors.UserError(
        f'{workdir}: the training of category {category!r} is unfinished: '
        f'{unfinished[category]} (last checkpoint in {directory}){more}. '
        'Resume it by rerunning its training command in this workdir: '
        'python -m aad.main --config=<the config it was started with> '
        f'--workdir={workdir} (its values are in '
        f'{os.path.join(workdir, CONFIG_FILE)}).' +
        (f' Or add {allow_flag} to use its checkpoints as they are.'
         if allow_flag else ''))
  return unfinished


def trained_categories(workdir: str) -> tuple[str, ...]:
  """Categories of the run that have a checkpoint, sorted."""
  if not os.path.isdir(workdir):
    return ()
  return tuple(sorted(
      c for c in os.listdir(workdir)
      if os.path.isdir(os.path.join(workdir, c, 'checkpoints'))))


def model_input_shape(config: ml_collections.ConfigDict,
                      family: base.Family) -> tuple[int, int, int]:
  """(H, W, C) the run's networks take: the configured image size, or the
  patch size in patch mode (`loop.input_shape`)."""
  h, w = data_lib.image_size(config.dataset)
  return loop.input_shape(config, family, (h, w, config.dataset.channels))


def restore_best(config: ml_collections.ConfigDict, family: base.Family,
                 workdir: str, category: str) -> tuple[base.Variables, dict]:
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
  shape = model_input_shape(config, family)
  variables = step_lib.init_variables(family, config, shape)
  summaries = []
  for stage in family.stages:
    ckpts = checkpoint.Checkpoints(os.path.join(directory, stage.name))
    try:
      step = ckpts.best_step()
      if step is None:
        raise DataError(f'{ckpts.directory}: no complete checkpoint of stage '
                        f'{stage.name!r} yet; rerun training in this '
                        'workdir to finish it.')
      target = step_lib.create_train_state(stage, variables, config)
      try:
        state, meta = ckpts.restore(step, target)
      except (ValueError, KeyError, TypeError) as e:
        raise DataError(
            f'{ckpts.directory}: the checkpoint of step {step} does not fit '
            f'the model of {os.path.join(workdir, CONFIG_FILE)} (was the '
            'file edited or copied from another run?); restore the run\'s '
            'own config.json or train again.') from e
      # The steps trained: the stage's count once training ended.
      reached = min(stage.num_steps, ckpts.latest_step() or 0)
    finally:
      ckpts.close()
    variables = {**variables, **step_lib.state_variables(state)}
    summaries.append({'best_step': step, 'train_seconds': meta['seconds'],
                      'steps': reached})
  return variables, loop.merge_summaries(family, summaries)


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
  `aad.scoring.fit` result), so scoring new images needs no training data."""
  data = serialization.msgpack_serialize(
      jax.tree.map(np.asarray, jax.device_get(fitted)))
  atomic.write_bytes(os.path.join(out_dir, FITTED_FILE), data)


def load_fitted(workdir: str, category: str) -> dict:
  """The scorers' fitted arrays saved by `save_fitted` ({} if none learn)."""
  path = os.path.join(workdir, category, FITTED_FILE)
  if not os.path.isfile(path):
    raise DataError(f'{path}: not found. It is written when a run is '
                    f'evaluated (python -m aad.evaluate --workdir={workdir}).')
  with open(path, 'rb') as f:
    return serialization.msgpack_restore(f.read())
