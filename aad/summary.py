"""One table of many runs: a sweep's points, or every run under a folder.

  python -m aad.summary --workdir=ROOT

With ROOT/sweep.json (written by `aad.sweep`) the rows are the sweep's
points, their swept values as columns, unfinished ones marked; otherwise
every sub-directory of ROOT with a metrics.json is a row. The columns are
the headline metrics averaged over each run's categories. Prints the table
as markdown and writes ROOT/summary.md and ROOT/summary.csv.
"""

import json
import os

from absl import app
from absl import flags

# (column, metric key after 'mean/'); {norm} is each run's eval.norm.
COLUMNS = (
    ('residual image AUROC', 'residual/{norm}/image_auroc'),
    ('residual pixel AUROC', 'residual/pixel_auroc'),
    ('residual AU-PRO', 'residual/pixel_au_pro'),
    ('MC variance image AUROC', 'mc_variance/{norm}/image_auroc'),
    ('MC variance pixel AUROC', 'mc_variance/pixel_auroc'),
    ('baseline image AUROC', 'baseline_mean/{norm}/image_auroc'),
)


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def _runs(root: str) -> tuple[list[str], list[tuple[str, dict]]]:
  """(swept fields, [(run name, {field: value})]) found under `root`."""
  sweep_file = os.path.join(root, 'sweep.json')
  if os.path.exists(sweep_file):
    sweep = _read_json(sweep_file)
    return list(sweep['axes']), [(p['name'], p['overrides'])
                                 for p in sweep['points']]
  names = sorted(n for n in os.listdir(root)
                 if os.path.exists(os.path.join(root, n, 'metrics.json')))
  return [], [(n, {}) for n in names]


def _fmt_value(value) -> str:
  if isinstance(value, (list, tuple)):
    return ','.join(map(str, value))
  return str(value)


def gather(root: str) -> tuple[list[str], list[list[str]]]:
  """The table: header and one row of strings per run under `root`."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f'{root} is not a folder of runs.')
  fields, runs = _runs(root)
  if not runs:
    raise FileNotFoundError(f'No runs under {root}: no sweep.json and no '
                            'sub-directory with a metrics.json.')
  header = ['run', *fields, *(c for c, _ in COLUMNS), 'status']
  rows = []
  for name, overrides in runs:
    metrics_file = os.path.join(root, name, 'metrics.json')
    row = [name, *(_fmt_value(overrides[f]) for f in fields)]
    if not os.path.exists(metrics_file):
      rows.append(row + [''] * len(COLUMNS) + ['not finished'])
      continue
    metrics = _read_json(metrics_file)
    config_file = os.path.join(root, name, 'config.json')
    norm = (_read_json(config_file)['eval']['norm']
            if os.path.exists(config_file) else 'l2')
    for _, key in COLUMNS:
      value = metrics.get('mean/' + key.format(norm=norm))
      row.append('' if value is None else f'{value:.3f}')
    rows.append(row + ['done'])
  return header, rows


def write(root: str) -> str:
  """Writes ROOT/summary.md and ROOT/summary.csv; returns the markdown."""
  header, rows = gather(root)
  from aad import report  # pylint: disable=g-import-not-at-top
  text = '\n'.join(report.markdown_table(header, rows)) + '\n'
  report.write_text(os.path.join(root, 'summary.md'), text)
  report.write_csv(os.path.join(root, 'summary.csv'), header, rows)
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
  app.run(main)
