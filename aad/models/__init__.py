"""Model families, chosen by config.model.name (see aad/models/base.py).

A family is one module found by its name, as big_vision finds its models:
family `name` is the module aad/models/<name>.py (a name with a dot is
imported as that module), which has `family(config, axis_name) ->
base.Family` and `defaults()`, its fields of config.model (assembled by
configs/default.py). To add one: write aad/models/<name>.py (and any
scorers of its own outputs, aad/scoring/scorers/), and give it a config
file and tests; no other module changes. 'ae' (aesc.py without skips) is
the one-line module ae.py.
"""

import importlib
import pkgutil

import ml_collections

from aad.models import base


def module_name(name: str) -> str:
  """The module of family `name`."""
  return name if '.' in name else f'{__name__}.{name}'


def names() -> tuple[str, ...]:
  """The built-in families: the modules of aad/models/ with `family`."""
  found = (m.name for m in pkgutil.iter_modules(__path__))
  return tuple(sorted(n for n in found if hasattr(
      importlib.import_module(module_name(n)), 'family')))


def create(config: ml_collections.ConfigDict,
           axis_name: str | None = None) -> base.Family:
  """The family named by config.model.name, built from the whole config.

  Args:
    config: the experiment config (families read config.model, their own
      block under it, and what else their stages and outputs need).
    axis_name: pmap axis over which training BatchNorm averages its batch
      statistics, so N devices normalise exactly like one device with the
      global batch.
  """
  name = config.model.name
  path = module_name(name)
  try:
    module = importlib.import_module(path)
  except ModuleNotFoundError as e:
    # A family module that fails to import what it needs is its own error.
    if not (e.name and (path == e.name or path.startswith(e.name + '.'))):
      raise
    module = None
  if not hasattr(module, 'family'):
    raise ValueError(f'config.model.name={name!r} is unknown; choose one of '
                     f'{", ".join(names())}')
  return module.family(config, axis_name)
