"""A dev suite: one config over a list of dataset folders, one table.

  python -m aad.suite --config=configs/folder.py [--datasets=DIR,DIR,...]
      [--workdir=ROOT] [--table_only] [--config.train.num_steps=500 ...]

Each dataset folder (MVTec layout) is one normal run of the config with
config.dataset.path=DIR, in ROOT/<folder name> (ROOT default:
runs/suite_<config.name>), run in this process one after the other as the
points of a sweep (`aad.sweep.run_points`): a finished run (metrics.json)
is skipped, an unfinished one resumes, and one that fails with a user error
is reported while the others go on (exit status 1 at the end). Without
--datasets the dev suite: ../shared/data/{kolektorsdd,bsdata_pitting,
mpdd_metal_plate,dagm_class1}, relative to the current folder.

At the end ROOT/suite.md and ROOT/suite.csv hold the table (printed too):
a row per dataset with its headline scorer's image AUROC, pixel AUROC and
AU-PRO, the no-learning baseline's image and pixel AUROC, and the minutes,
then the mean and the worst over the finished sets (docs/evaluation.md,
"A suite of datasets"). --table_only gathers and prints it again from ROOT,
running nothing.
"""

import math
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top

from aad import summary  # pylint: disable=g-import-not-at-top
from aad import sweep  # pylint: disable=g-import-not-at-top
from aad.runtime import errors  # pylint: disable=g-import-not-at-top

# The dev suite: four small real data sets of different kinds of defects
# (cracks, pitting, metal-plate defects, synthetic textures), relative to
# the repository root as the checkout's ../shared.
DEV_DATA = os.path.join('..', 'shared', 'data')
DEV_SUITE = ('kolektorsdd', 'bsdata_pitting', 'mpdd_metal_plate',
             'dagm_class1')
BASELINE = 'baseline_mean'
SUITE_FILE = 'suite.json'

HEADER = ('dataset', 'scorer', 'image AUROC', 'pixel AUROC', 'AU-PRO',
          'baseline image AUROC', 'baseline pixel AUROC', 'train min',
          'total min', 'status')
_FIRST_VALUE = HEADER.index('image AUROC')
# Columns where more is worse: the worst row takes their largest value.
_MINUTES = ('train min', 'total min')
_DONE = 'done'


def folders(datasets: list[str] | None,
            must_exist: bool = True) -> list[tuple[str, str]]:
  """(name, absolute path) of each dataset folder, the name its folder's
  name (its run's sub-directory); the dev suite's without `datasets`.

  Raises:
    errors.UsageError: a folder is missing (`must_exist`), or two share a
      name.
  """
  if datasets is None:
    paths = [os.path.join(DEV_DATA, name) for name in DEV_SUITE]
    missing = [p for p in paths if not os.path.isdir(p)]
    if missing and must_exist:
      raise errors.UsageError(
          f'The dev suite\'s folders are not here ({", ".join(missing)}, '
          f'relative to {os.getcwd()}): pass --datasets=DIR,DIR,... '
          '(folders in MVTec layout).')
  else:
    paths = [p for p in datasets if p]
    if not paths:
      raise errors.UsageError('--datasets is empty: give the dataset '
                              'folders, comma-separated.')
    missing = [p for p in paths if not os.path.isdir(p)]
    if missing and must_exist:
      raise errors.UsageError(
          f'--datasets: {", ".join(missing)}: no such folder (give folders '
          'in MVTec layout, comma-separated).')
  out = [(os.path.basename(os.path.abspath(p)), os.path.abspath(p))
         for p in paths]
  seen = {}
  for name, path in out:
    if name in seen and seen[name] != path:
      raise errors.UsageError(
          f'--datasets: {seen[name]} and {path} have the same folder name '
          f'{name!r}, so their runs would share one workdir; rename one, or '
          'run them in two suites (--workdir).')
    seen[name] = path
  return list(dict(out).items())


def run(config: ml_collections.ConfigDict, root: str,
        sets: list[tuple[str, str]]) -> list[str]:
  """Runs the config on each (name, path) of `sets`, in ROOT/<name>; writes
  ROOT/suite.json (the sets, for --table_only).

  Returns:
    The names of the sets whose run failed (their error is logged).
  """
  from aad.runtime import atomic  # pylint: disable=g-import-not-at-top
  from aad.runtime import parallel  # pylint: disable=g-import-not-at-top
  if parallel.is_primary():
    atomic.write_json(os.path.join(root, SUITE_FILE), {
        'config': config.name,
        'sets': [{'name': name, 'path': path} for name, path in sets]})
  points = [sweep.Point(name, {'dataset.path': path}) for name, path in sets]
  return sweep.run_points(config, root, points, what='Suite set')


def sets_under(root: str) -> list[str]:
  """The names of the sets of the suite in `root`: those of its suite.json,
  else every sub-directory with a config.json (a run)."""
  suite_file = os.path.join(root, SUITE_FILE)
  if os.path.isfile(suite_file):
    return [s['name'] for s in summary.read_json(suite_file)['sets']]
  if not os.path.isdir(root):
    raise errors.UsageError(f'{root}: no such folder; run the suite first, '
                            'or give its --workdir.')
  names = sorted(n for n in os.listdir(root)
                 if os.path.isfile(os.path.join(root, n, 'config.json')))
  if not names:
    raise errors.UsageError(f'{root}: no suite here (no {SUITE_FILE} and no '
                            'run folder); run the suite first, or give its '
                            '--workdir.')
  return names


def headline_scorer(config: dict, scorers: list[str]) -> str:
  """The run's headline scorer: the first of its config.eval.scorers; with
  that list empty (the family's defaults, not in config.json), the first
  scorer of its metrics but the baseline."""
  configured = config.get('eval', {}).get('scorers') or []
  if configured:
    return configured[0]
  return next((s for s in scorers if s != BASELINE), scorers[0])


def _minutes(timings: dict) -> list[float | None]:
  """[training minutes (mean over the run's categories), training and
  evaluation minutes summed over its categories] from its timings.json."""
  train = timings.get(summary.TRAIN_SECONDS)
  # Per category '<category>/train/train_seconds' and '<category>/eval/
  # seconds' (the wall-clock time of each phase); the 'mean/' keys repeat
  # them averaged.
  phases = [v for k, v in timings.items() if not k.startswith('mean/') and
            k.endswith(('/train/train_seconds', '/eval/seconds'))]
  return [None if train is None else train / 60,
          sum(phases) / 60 if phases else None]


def _set_values(run_dir: str) -> tuple[str, list[float | None], str]:
  """(headline scorer, the values of the numeric columns, status) of the
  run in `run_dir`."""
  config, metrics, timings = summary.read_run(run_dir)
  minutes = _minutes(timings)
  blank = [None] * (len(HEADER) - _FIRST_VALUE - len(_MINUTES) - 1)
  if metrics is None:
    return '', blank + minutes, (
        'not finished' if os.path.isdir(run_dir) else 'not started')
  found = summary.scorers(metrics)
  if not found:  # a folder of good images only
    return '', blank + minutes, 'no test metrics'
  scorer = headline_scorer(config, found)
  norm = config.get('eval', {}).get('norm', 'l2')
  values = summary.scorer_values(metrics, scorer, norm, summary.COLUMNS[:3])
  baseline = (summary.scorer_values(metrics, BASELINE, norm,
                                    summary.COLUMNS[:2])
              if BASELINE in found else [None, None])
  return scorer, values + baseline + minutes, _DONE


def _cell(column: str, value: float | None) -> str:
  if value is None:
    return ''
  return f'{value:.1f}' if column in _MINUTES else f'{value:.3f}'


def gather(root: str, names: list[str], failed=()
           ) -> tuple[list[str], list[list[str]], list[str]]:
  """The suite's table from the runs ROOT/<name>: header, a row per set
  then its 'mean' and 'worst' rows (the lowest AUROC and AU-PRO, the most
  minutes) over the finished sets, and the notes under the table. The sets
  in `failed` are marked so."""
  columns = HEADER[_FIRST_VALUE:-1]
  rows, done = [], []
  for name in names:
    scorer, values, status = _set_values(os.path.join(root, name))
    if name in failed and status != _DONE:
      status = 'failed'
    rows.append([name, scorer, *(_cell(c, v) for c, v in zip(columns, values)),
                 status])
    if status == _DONE:
      done.append(values)
  mean, worst = [], []
  for i, column in enumerate(columns):
    present = [v[i] for v in done if v[i] is not None]
    mean.append(math.fsum(present) / len(present) if present else None)
    worst.append(((max if column in _MINUTES else min)(present))
                 if present else None)
  for label, values in (('mean', mean), ('worst', worst)):
    rows.append([label, '', *(_cell(c, v) for c, v in zip(columns, values)),
                 ''])
  left_out = [f'{r[0]} ({r[-1]})' for r in rows[:len(names)]
              if r[-1] != _DONE]
  notes = [f'mean and worst over {len(done)} of {len(names)} sets'
           + (f'; left out: {", ".join(left_out)}' if left_out else '') + '.',
           'worst: the lowest AUROC and AU-PRO, the most minutes. scorer: '
           "the headline (config.eval.scorers[0]), its image score its own "
           "where it has one, else the run's eval.norm; baseline: "
           f'{BASELINE} (no learning). train min: mean over the set\'s '
           'categories; total min: training and evaluation, summed.']
  return list(HEADER), rows, notes


def write(root: str, names: list[str], failed=()) -> str:
  """Writes ROOT/suite.md and ROOT/suite.csv; returns the markdown."""
  return summary.write_table(root, 'suite', *gather(root, names, failed))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.setup()
  config, datasets = flags.FLAGS.config, flags.FLAGS.datasets
  if config is None and not (flags.FLAGS.table_only and flags.FLAGS.workdir):
    raise app.UsageError('Give --config (with --table_only, --config or '
                         '--workdir).')
  root = flags.FLAGS.workdir or os.path.join('runs', f'suite_{config.name}')
  if flags.FLAGS.table_only:
    names = (sets_under(root) if datasets is None else
             [name for name, _ in folders(datasets, must_exist=False)])
    print(write(root, names), end='')
    return
  if config.sweep:
    raise app.UsageError('The config declares a sweep; a suite runs one '
                         'config (run the sweep with python -m aad.sweep).')
  if config.dataset.name != 'folder':
    raise app.UsageError(
        f"The config's dataset.name is {config.dataset.name!r}; a suite runs "
        'folders: use a folder config (configs/folder.py) or add '
        "--config.dataset.name=folder --config.dataset.categories='()'.")
  sets = folders(datasets)
  sweep.start(config)
  from aad.runtime import parallel  # pylint: disable=g-import-not-at-top
  failed = run(config, root, sets)
  if parallel.is_primary():
    print(write(root, [name for name, _ in sets], failed), end='')
  sweep.exit_if_failed(failed, 'suite set')


def _define_flags():
  # Defined only when run as a program, as aad.sweep's.
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (or a shipped config\'s '
      'name) of a folder dataset, e.g. configs/folder.py.',
      lock_config=True)
  flags.DEFINE_list(
      'datasets', None, 'Dataset folders (MVTec layout), comma-separated. '
      'Default: the dev suite, ../shared/data/{' + ','.join(DEV_SUITE) +
      '}.')
  flags.DEFINE_string(
      'workdir', None, 'Root of the runs, one sub-directory per dataset. '
      'Default: runs/suite_<config.name>.')
  flags.DEFINE_bool(
      'table_only', False, 'Gather and print the table of the runs under '
      '--workdir; run nothing.')


if __name__ == '__main__':
  _define_flags()
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.run(main)
