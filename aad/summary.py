"""One table of many runs: a sweep's points, or every run under a folder.

  python -m aad.summary --workdir=ROOT

With ROOT/sweep.json (written by `aad.sweep`) the runs are the sweep's
points, their swept values as columns, unfinished ones marked; otherwise
every sub-directory of ROOT with a metrics.json is a run. Each run has a row
per scorer it evaluated (so a sweep over model families compares every
family and scorer), with the headline metrics averaged over its categories. Prints the table
as markdown and writes ROOT/summary.md and ROOT/summary.csv.
"""

import json
import os

from absl import app
from absl import flags

# (column, metric key after 'mean/<scorer>/'); {norm} is the scorer's image
# score: its own where it has one (the similarity measures, the activation
# Gaussian), else the run's eval.norm reduction of its map, as the reports'
# ranking tables.
COLUMNS = (
    ('image AUROC', '{norm}/image_auroc'),
    ('pixel AUROC', 'pixel_auroc'),
    ('AU-PRO', 'pixel_au_pro'),
    ('F1 at val threshold', '{norm}/threshold_f1'),
)
# In ROOT/<run>/timings.json (not metrics.json: timings differ between
# identical runs).
TRAIN_SECONDS = 'mean/train/train_seconds'


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def _runs(root: str) -> tuple[list[str], list[tuple[str, dict]]]:
  """(swept fields, [(run name, {field: value})]) found under `root`."""
  sweep_file = os.path.join(root, 'sweep.json')
  if os.path.exists(sweep_file):
    sweep = read_json(sweep_file)
    return list(sweep['axes']), [(p['name'], p['overrides'])
                                 for p in sweep['points']]
  names = sorted(n for n in os.listdir(root)
                 if os.path.exists(os.path.join(root, n, 'metrics.json')))
  return [], [(n, {}) for n in names]


def _fmt_value(value) -> str:
  if isinstance(value, (list, tuple)):
    return ','.join(map(str, value))
  return str(value)


def scorers(metrics: dict) -> list[str]:
  """The scorers a run evaluated, from its metrics' keys, sorted: those with
  a map have 'mean/<scorer>/pixel_auroc', the map-less ones (global
  similarity measures, the activation Gaussian) only
  'mean/<scorer>/own/image_auroc'."""
  return sorted({k.split('/')[1] for k in metrics
                 if k.startswith('mean/') and (
                     (k.endswith('/pixel_auroc') and k.count('/') == 2) or
                     (k.endswith('/own/image_auroc') and k.count('/') == 3))})


def image_score(metrics: dict, scorer: str, norm: str) -> str:
  """'own' where the scorer has its own image score, else `norm`."""
  return 'own' if f'mean/{scorer}/own/image_auroc' in metrics else norm


def scorer_values(metrics: dict, scorer: str, norm: str,
                  columns=COLUMNS) -> list[float | None]:
  """The means over categories of `columns` (as COLUMNS) for `scorer`,
  with its image score (`image_score`); None where the run has no such
  metric."""
  image = image_score(metrics, scorer, norm)
  return [metrics.get(f'mean/{scorer}/' + key.format(norm=image))
          for _, key in columns]


def read_run(run_dir: str) -> tuple[dict, dict | None, dict]:
  """A run folder's config.json, metrics.json (None: not finished) and
  timings.json ({} where the config or timings file is missing)."""
  def read(name):
    path = os.path.join(run_dir, name)
    return read_json(path) if os.path.exists(path) else None
  return read('config.json') or {}, read('metrics.json'), read(
      'timings.json') or {}


def gather(root: str) -> tuple[list[str], list[list[str]]]:
  """The table: header and one row of strings per run and scorer."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f'{root} is not a folder of runs.')
  fields, runs = _runs(root)
  if not runs:
    raise FileNotFoundError(f'No runs under {root}: no sweep.json and no '
                            'sub-directory with a metrics.json.')
  header = ['run', *fields, 'model', 'scorer', *(c for c, _ in COLUMNS),
            'train s (mean)', 'status']
  rows = []
  for name, overrides in runs:
    config, metrics, timings = read_run(os.path.join(root, name))
    # A field that only some cases set is blank where it keeps the base's.
    row = [name, *(_fmt_value(overrides.get(f, '')) for f in fields),
           config.get('model', {}).get('name', '')]
    if metrics is None:
      rows.append(row + [''] * (len(COLUMNS) + 2) + ['not finished'])
      continue
    norm = config.get('eval', {}).get('norm', 'l2')
    seconds = timings.get(TRAIN_SECONDS)
    if not scorers(metrics):
      # A folder of good images only: thresholds, no test metrics.
      rows.append(row + [''] * (len(COLUMNS) + 1) + [
          '' if seconds is None else f'{seconds:.0f}', 'no test metrics'])
      continue
    for scorer in scorers(metrics):
      rows.append(row + [scorer] + [
          '' if v is None else f'{v:.3f}'
          for v in scorer_values(metrics, scorer, norm)] + [
              '' if seconds is None else f'{seconds:.0f}', 'done'])
  return header, rows


def write(root: str) -> str:
  """Writes ROOT/summary.md and ROOT/summary.csv; returns the markdown."""
  return write_table(root, 'summary', *gather(root))


def write_table(root: str, stem: str, header: list[str],
                rows: list[list[str]], notes: tuple[str, ...] = ()) -> str:
  """Writes ROOT/<stem>.md (the markdown table, then `notes`, a line each)
  and ROOT/<stem>.csv (the table); returns the markdown."""
  from aad import report  # pylint: disable=g-import-not-at-top
  from aad.report import tables  # pylint: disable=g-import-not-at-top
  from aad.runtime import atomic  # pylint: disable=g-import-not-at-top
  lines = tables.markdown_table(header, rows)
  text = '\n'.join([*lines, *([''] if notes else []), *notes]) + '\n'
  atomic.write_text(os.path.join(root, f'{stem}.md'), text)
  report.write_csv(os.path.join(root, f'{stem}.csv'), header, rows)
  return text


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    print(write(flags.FLAGS.workdir), end='')
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from e


if __name__ == '__main__':
  # Defined here only, so that aad.sweep can import this module.
  flags.DEFINE_string('workdir', None, 'Root folder of the runs.')
  flags.mark_flag_as_required('workdir')
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.run(main)
