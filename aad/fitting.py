"""`aad.fit`: training from Python, the pipeline of `python -m aad.main`.

  detector = aad.fit('aesc_stain', 'runs/x', **{'train.num_steps': 500})
  detector = aad.fit('configs/folder.py', 'runs/parts',
                     overrides={'dataset.path': '/data/parts'})

Imports no JAX at module level: the CPU device layout (aad.runtime.cpu)
must be set before JAX starts its backend, as aad.main does.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import sys
from typing import Any

from aad import configs as shipped
from aad.runtime import errors

def _from_file(path: str):
  """get_config() of a config file; its folder's parent is importable
  while it loads (a config of one's own may import its neighbours as
  `from configs import default`)."""
  if not os.path.isfile(path):
    raise errors.UsageError(f'aad.fit: config file {path} not found; give a '
                            "config name ('aesc_stain'), a .py file or an "
                            'ml_collections.ConfigDict.')
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  added = root not in sys.path
  if added:
    sys.path.insert(0, root)
  try:
    spec = importlib.util.spec_from_file_location(
        'aad_fit_config', os.path.abspath(path))
    module = importlib.util.module_from_spec(spec)
    try:
      spec.loader.exec_module(module)
      return module.get_config()
    except Exception as e:  # pylint: disable=broad-except
      from aad.runtime import logs  # pylint: disable=g-import-not-at-top
      if os.environ.get('AAD_DEBUG', '') not in ('', '0'):
        raise
      raise errors.UsageError(logs.config_load_error(e, path)) from None
  finally:
    if added:
      sys.path.remove(root)


def load_config(config):
  """A ConfigDict from a config name (configs/<name>.py), a config file or
  a ConfigDict (copied, so the caller's stays as it was)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  if isinstance(config, ml_collections.ConfigDict):
    return copy.deepcopy(config)
  if not isinstance(config, (str, os.PathLike)):
    raise errors.UsageError(
        f'aad.fit: config={config!r}; give a config name (\'aesc_stain\'), '
        'a .py file or an ml_collections.ConfigDict.')
  config = os.fspath(config)
  if config.endswith('.py') or os.sep in config:
    return _from_file(config)
  if config not in shipped.names():
    raise errors.UsageError(
        f'aad.fit: no config named {config!r}; choose one of '
        f'{", ".join(shipped.names())}, or give a .py file or an '
        'ml_collections.ConfigDict.')
  return _from_file(shipped.path(config))


def apply_overrides(config, overrides: dict[str, Any]) -> None:
  """Sets dotted keys ('train.num_steps') of `config`, as the command
  line's --config.train.num_steps; an unknown key or a value of the wrong
  type is a UsageError naming it."""
  for key, value in overrides.items():
    *blocks, field = key.split('.')
    node = config
    for i, block in enumerate(blocks):
      if not hasattr(node, 'keys') or block not in node:
        raise errors.UsageError(
            f'aad.fit: {key}={value!r}: the config has no field '
            f'{".".join(blocks[:i + 1])!r}.')
      node = node[block]
    if not hasattr(node, 'keys') or field not in node:
      raise errors.UsageError(
          f'aad.fit: {key}={value!r}: the config has no field {key!r}.')
    try:
      node[field] = tuple(value) if isinstance(value, list) else value
    except (TypeError, ValueError) as e:
      raise errors.UsageError(
          f'aad.fit: {key}={value!r}: {str(e).splitlines()[0]}') from None


def train_and_evaluate(config, workdir: str, *,
                       allow_eval_changes: bool = False):
  """The run of `python -m aad.main` and `aad.fit` once the config is
  final: the CPU device layout (before anything starts JAX; a warning, and
  no change, if it has started), the config checks, jax.distributed, the
  compilation cache in the workdir (when none is set), then
  aad.experiment.run.train_and_evaluate."""
  from aad.runtime import cpu  # pylint: disable=g-import-not-at-top
  cpu.configure(config.num_devices, config.train.batch_size,
                config.dataset.image_size)
  import jax  # pylint: disable=g-import-not-at-top
  from aad.experiment import run as pipeline  # pylint: disable=g-import-not-at-top
  from aad.experiment import validate  # pylint: disable=g-import-not-at-top
  from aad.runtime import parallel  # pylint: disable=g-import-not-at-top
  # Before any work, in one line; the memory check needs the devices, so
  # it runs after jax.distributed starts (the pipeline checks again).
  validate.check_config(config, memory=False)
  parallel.initialize(config.distributed)
  if not jax.config.jax_compilation_cache_dir:
    # Every category compiles the same step functions; with the cache
    # only the first does, and reruns reuse them.
    jax.config.update('jax_compilation_cache_dir',
                      os.path.join(workdir, 'xla_cache'))
  return pipeline.train_and_evaluate(config, workdir,
                                     allow_eval_changes=allow_eval_changes)


def fit(config, workdir: str | None = None, *,
        overrides: dict[str, Any] | None = None, category: str | None = None,
        allow_eval_changes: bool = False, **dotted: Any):
  """Trains and evaluates as `python -m aad.main`; returns the Detector.

  Args:
    config: a config name ('aesc_stain': aad/configs/aesc_stain.py), the path
      of a config file, or an ml_collections.ConfigDict (not changed).
    workdir: the run's folder; None = runs/<config.name>. Rerunning into
      a finished workdir re-evaluates (or is refused) as aad.main does.
    overrides: {dotted key: value}, e.g. {'train.num_steps': 500}.
    category: the category whose Detector to return; None = the first.
    allow_eval_changes: as aad.main's --allow_eval_changes.
    **dotted: more overrides, e.g. **{'dataset.image_size': 64}.

  Returns:
    The trained `aad.Detector` (`Detector.load(workdir, category)`).

  Raises:
    aad.runtime.errors.UserError: for a bad config, override, dataset or
      workdir (one line naming it and the fix).
  """
  config = load_config(config)
  apply_overrides(config, {**(overrides or {}), **dotted})
  if config.get('sweep'):
    raise errors.UsageError('aad.fit: the config declares a sweep; run it '
                            'with python -m aad.sweep.')
  workdir = workdir or os.path.join('runs', config.name)
  train_and_evaluate(config, workdir, allow_eval_changes=allow_eval_changes)
  from aad.deploy import detector  # pylint: disable=g-import-not-at-top
  if category is None:  # the first category trained, in the run's order
    from aad import data  # pylint: disable=g-import-not-at-top
    from aad.experiment import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
    category = data.config_categories(
        workdir_lib.load_config(workdir).dataset)[0]
  return detector.Detector.load(workdir, category)
