"""Sweeps declared in a config as data: one run and one workdir per point.

  python -m aad.sweep --config=configs/aesc_stain_sweep.py [--workdir=ROOT]
      [--dry_run] [--point=K] [--config.train.num_steps=500 ...]

`config.sweep` mirrors the config's structure; each leaf is the tuple of
values of that field, and the points are the Cartesian product of the leaves
(in alphabetical order of their dotted names). `config.sweep.cases`, a
tuple of {dotted field: value} dicts, is one more axis whose values set
several fields together (a model family with its own image score, say).
Every point is a normal run
(`pipeline.train_and_evaluate`) in ROOT/<field=value_...>, run in this process
one after the other; a point whose workdir has metrics.json is finished and
skipped, an unfinished one resumes. Under a multi-host launch every process
runs the same sequence. `--point=K` runs point K only (e.g. one SLURM array
task each); `--dry_run` lists the points and those commands. At the end
ROOT/summary.md and summary.csv gather the runs' metrics (`aad.summary`).
"""

import dataclasses
import itertools
import os
import re
import shlex
import sys
from typing import Any

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top

# Fields a sweep cannot vary: how processes meet, and the sweep itself.
_FIXED = ('distributed', 'sweep')
# The axis of config.sweep whose values are {field: value} dicts.
CASES = 'cases'


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep: its sub-directory name and field values."""
  name: str
  overrides: dict[str, Any]


def axes(config: ml_collections.ConfigDict) -> list[tuple[str, tuple]]:
  """The sweep's axes, (dotted field, values), checked against `config`."""
  found = []

  def walk(node, prefix):
    for key, value in node.items():
      path = f'{prefix}{key}'
      if isinstance(value, ml_collections.ConfigDict):
        walk(value, path + '.')
      else:
        found.append((path, value))

  walk(config.sweep, '')
  found = [(path, values) for path, values in found if path != CASES]
  for path, values in found:
    _check_field(config, path, f'config.sweep.{path}')
    if not isinstance(values, (tuple, list)) or not values:
      raise ValueError(f'config.sweep.{path} = {values!r}: give a non-empty '
                       'tuple of the values to try.')
  return [(path, tuple(values)) for path, values in found]


def _check_field(config: ml_collections.ConfigDict, path: str, where: str):
  if path.split('.')[0] in _FIXED:
    raise ValueError(f'{where}: a sweep cannot vary {path.split(".")[0]}.')
  node = config
  for part in path.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ValueError(f'{where}: the config has no field {path}; sweep '
                       'axes name existing fields.')
    node = node[part]


def cases(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """config.sweep.cases checked against `config`: [{dotted field: value}];
  [] without it."""
  block = config.get('sweep') or {}
  if CASES not in block:
    return []
  found = block[CASES]
  if not isinstance(found, (tuple, list)) or not found:
    raise ValueError(f'config.sweep.cases = {found!r}: give a non-empty '
                     'tuple of {field: value} dicts.')
  out = []
  for i, case in enumerate(found):
    if not isinstance(case, (dict, ml_collections.ConfigDict)) or not case:
      raise ValueError(f'config.sweep.cases[{i}] = {case!r}: give a '
                       'non-empty {dotted field: value} dict.')
    for path in case:
      _check_field(config, path, f'config.sweep.cases[{i}]')
    out.append(dict(case))
  return out


def _slug(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return '+'.join(_slug(v) for v in value) or 'none'
  return re.sub(r'[^A-Za-z0-9.+-]', '-', str(value))


def expand(config: ml_collections.ConfigDict) -> list[Point]:
  """The points of `config.sweep`, in a fixed order; [] without a sweep."""
  swept, paired = axes(config), cases(config)
  if not swept and not paired:
    return []
  points = []
  for case in paired or [{}]:
    for values in itertools.product(*(v for _, v in swept)):
      overrides = {**case, **{path: value for (path, _), value
                              in zip(swept, values)}}
      name = '_'.join(f'{path}={_slug(v)}' for path, v in overrides.items())
      points.append(Point(name, overrides))
  names = [p.name for p in points]
  if len(set(names)) < len(names):
    raise ValueError('Two sweep points get the same directory name; make '
                     'the values of each axis differ in their text.')
  return points


def point_config(config: ml_collections.ConfigDict,
                 point: Point) -> ml_collections.ConfigDict:
  """`config` with the point's values set and no sweep left in it."""
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.sweep = ml_collections.ConfigDict()
  for path, value in point.overrides.items():
    *parents, leaf = path.split('.')
    node = out
    for part in parents:
      node = node[part]
    try:
      node[leaf] = value
    except TypeError as e:
      raise ValueError(f'config.sweep.{path}: value {value!r} does not fit '
                       f'the field ({e}).') from e
  return out


def _command(point_index: int) -> str:
  """The command line that runs one point: this one with --point=K."""
  args = [a for a in sys.argv[1:]
          if not a.startswith(('--point', '--dry_run', '--nodry_run'))]
  return shlex.join(['python', '-m', 'aad.sweep', *args,
                     f'--point={point_index}'])


def run(config: ml_collections.ConfigDict, root: str,
        indices: list[int] | None = None) -> list[str]:
  """Runs the sweep's points (all, or `indices`) under `root`.

  Returns:
    The names of the points that failed (their error is logged).
  """
  from aad.runtime import parallel  # pylint: disable=g-import-not-at-top
  from aad.runtime import atomic  # pylint: disable=g-import-not-at-top
  points = expand(config)
  if parallel.is_primary():
    fields = {path: list(values) for path, values in axes(config)}
    for case in cases(config):
      for path, value in case.items():
        fields.setdefault(path, [])
        if value not in fields[path]:
          fields[path].append(value)
    atomic.write_json(os.path.join(root, 'sweep.json'), {
        'axes': fields,
        'points': [{'name': p.name, 'overrides': p.overrides}
                   for p in points]})
  return run_points(config, root, points, indices)


def run_points(config: ml_collections.ConfigDict, root: str,
               points: list[Point], indices: list[int] | None = None,
               what: str = 'Sweep point') -> list[str]:
  """Runs `points` (all, or `indices`) one after the other, each in
  ROOT/<point.name>: a finished one (metrics.json) is skipped, an unfinished
  one resumes, and one that fails with a UserError is logged while the
  others go on (`aad.suite` runs its datasets this way too; `what` names a
  point in the log lines).

  Returns:
    The names of the points that failed.
  """
  from aad.runtime import parallel  # pylint: disable=g-import-not-at-top
  from aad.experiment import run as pipeline  # pylint: disable=g-import-not-at-top
  from aad.runtime import errors  # pylint: disable=g-import-not-at-top
  failed = []
  for i in (range(len(points)) if indices is None else indices):
    point = points[i]
    workdir = os.path.join(root, point.name)
    if parallel.from_primary(
        os.path.exists(os.path.join(workdir, 'metrics.json'))):
      logging.info('%s %d/%d %s: finished, skipped.', what, i + 1,
                   len(points), point.name)
      continue
    logging.info('%s %d/%d: %s', what, i + 1, len(points), point.name)
    try:
      pipeline.train_and_evaluate(point_config(config, point), workdir)
    except errors.UserError as e:  # the point's own problem: go on
      logging.error('%s %s failed: %s', what, point.name, e)
      failed.append(point.name)
  return failed


def start(config: ml_collections.ConfigDict) -> None:
  """The start of a process that runs many points of `config` (aad.sweep,
  aad.suite): the CPU device layout, then jax.distributed."""
  from aad.runtime import cpu  # pylint: disable=g-import-not-at-top
  # Before JAX starts; points that change the image or batch size keep
  # the layout of the base config.
  cpu.configure(config.num_devices, config.train.batch_size,
                config.dataset.image_size)
  from aad.runtime import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize(config.distributed)


def exit_if_failed(failed: list[str], what: str) -> None:
  """Exit status 1, after a line naming the `failed` points, if any."""
  if failed:
    logging.error('%d %s(s) failed: %s. Rerun the same command to retry '
                  'them (finished ones are skipped).', len(failed), what,
                  ', '.join(failed))
    raise SystemExit(1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  from aad import summary  # pylint: disable=g-import-not-at-top
  logs.setup()
  config, point = flags.FLAGS.config, flags.FLAGS.point
  root = flags.FLAGS.workdir or os.path.join('runs', config.name)
  try:
    points = expand(config)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if not points:
    raise app.UsageError(
        'The config declares no sweep (config.sweep is empty); run it with '
        'python -m aad.main, or set e.g. c.sweep.seed = (0, 1).')
  if point is not None and not 0 <= point < len(points):
    raise app.UsageError(f'--point={point}: the sweep has points '
                         f'0..{len(points) - 1}.')
  if flags.FLAGS.dry_run:
    print(f'{len(points)} runs under {root}:')
    for i, point in enumerate(points):
      print(f'[{i}] {os.path.join(root, point.name)}\n    {_command(i)}')
    return
  start(config)
  from aad.runtime import parallel  # pylint: disable=g-import-not-at-top
  indices = None if point is None else [point]
  failed = run(config, root, indices)
  if indices is None and parallel.is_primary():
    print(summary.write(root), end='')
  exit_if_failed(failed, 'sweep point')


def _define_flags():
  # Defined only when run as a program, so importing this module (tests,
  # other tools) does not clash with aad.main's flags of the same names.
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (or a shipped config\'s '
      'name) that declares config.sweep.',
      lock_config=True)
  flags.DEFINE_string(
      'workdir', None, 'Root of the runs, one sub-directory per point. '
      'Default: runs/<config.name>.')
  flags.DEFINE_bool(
      'dry_run', False, 'List the points and their commands; run nothing.')
  flags.DEFINE_integer(
      'point', None, 'Run only this point (0-based), e.g. one per array '
      'task.')
  flags.mark_flag_as_required('config')


if __name__ == '__main__':
  _define_flags()
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.run(main)
