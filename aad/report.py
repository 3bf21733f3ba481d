"""Writes results: metrics JSON, markdown reports, ROC and heat-map figures.

This is the only module that draws. It uses matplotlib's object API
(`Figure` + Agg canvas) rather than pyplot, so nothing depends on a global
backend or leaks open figures in long evaluation runs.

Every file is written to a temporary name in the target directory and moved
into place with `os.replace`, so an interrupted run leaves either the old
file or the new one, never half of one. `metrics.json` is written last in
each report, so its presence marks a complete report.
"""

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
import numpy as np

# Heat-map grid columns drawn as images (gray or RGB); others are maps.
IMAGE_COLUMNS = ('input', 'reconstruction', 'mean prediction',
                 'ground truth', 'mask')
ROW_LABEL = 'label'  # Row-dict key of the optional row label.
MAX_ROWS = 12
_MAX_CURVE_POINTS = 2000


def _atomic_write(path: str, write: Callable[[Any], None], mode: str = 'w'):
  """Calls `write(file)` on a temp file, then renames it onto `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
      dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are for sharing.
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def _jsonable(obj):
  """Plain Python types; NaN/inf become null to keep the JSON strict."""
  if isinstance(obj, Mapping):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, np.ndarray):
    obj = obj.tolist()
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def write_json(path: str, obj: Any):
  """Writes `obj` as JSON with sorted keys, atomically (numpy values ok)."""
  text = json.dumps(_jsonable(obj), sort_keys=True, indent=2, allow_nan=False)
  _atomic_write(path, lambda f: f.write(text + '\n'))


def _write_text(path: str, lines: Iterable[str]):
  text = '\n'.join(lines) + '\n'
  _atomic_write(path, lambda f: f.write(text))


def flatten(metrics: Mapping[str, Any], prefix: str = '') -> dict[str, float]:
  """Flattens nested metrics, joining keys with '/'.

  Args:
    metrics: e.g. {'residual': {'l2': {'image_auroc': 0.9}}}.
    prefix: prepended to every key (used by the recursion).

  Returns:
    e.g. {'residual/l2/image_auroc': 0.9}; leaves converted to float.
  """
  out = {}
  for key, value in metrics.items():
    name = f'{prefix}/{key}' if prefix else str(key)
    items = (flatten(value, name).items() if isinstance(value, Mapping)
             else [(name, float(value))])
    for k, v in items:
      if k in out:
        raise ValueError(f'Metric key {k!r} occurs twice after flattening.')
      out[k] = v
  return out


def _fmt(value) -> str:
  return '—' if value is None else f'{value:.4f}'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
  return ['| ' + ' | '.join(header) + ' |',
          '|' + ' --- |' * len(header)] + [
              '| ' + ' | '.join(row) + ' |' for row in rows]


def _metrics_table(flat: Mapping[str, float]) -> list[str]:
  """Markdown table, scorer (key up to the last '/') x metric name."""
  cells = {}
  for key, value in flat.items():
    scorer, _, metric = key.rpartition('/')
    cells.setdefault(scorer or '—', {})[metric] = value
  metrics = list(dict.fromkeys(m for row in cells.values() for m in row))
  return _table(['scorer', *metrics], (
      [scorer, *(_fmt(row.get(m)) for m in metrics)]
      for scorer, row in cells.items()))


def _notes(notes: Sequence[str]) -> list[str]:
  return ['## Notes', '', *(f'- {n}' for n in notes), ''] if notes else []


def _save_figure(fig: Figure, path: str):
  _atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100), 'wb')


def _thin(x: np.ndarray, y: np.ndarray, max_points: int = _MAX_CURVE_POINTS):
  """At most `max_points` points, evenly spaced along the curve's length.

  Pixel ROC curves can have millions of vertices; drawing them is slow and
  no more accurate at 100 dpi than ~2000 points.
  """
  if x.size <= max_points:
    return x, y
  length = np.concatenate([[0.0], np.cumsum(
      np.abs(np.diff(x)) + np.abs(np.diff(y)))])
  index = np.searchsorted(length, np.linspace(0, length[-1], max_points))
  index = np.unique(np.clip(index, 0, x.size - 1))
  return x[index], y[index]


def plot_roc(path: str, curves: Mapping[str, tuple[Any, Any]], title: str):
  """Draws ROC curves with their AUROC in the legend.

  Args:
    path: output PNG.
    curves: scorer name -> (fpr, tpr), e.g. from `metrics.roc_curve`.
    title: figure title.
  """
  fig = Figure(figsize=(5, 5), layout='constrained')
  ax = fig.add_subplot()
  for name, (fpr, tpr) in curves.items():
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    area = float(np.trapezoid(tpr, fpr))
    ax.plot(*_thin(fpr, tpr), lw=1.2, label=f'{name} (AUROC {area:.3f})')
  ax.plot([0, 1], [0, 1], ls='--', lw=0.8, color='grey', label='chance')
  ax.set(xlim=(0, 1), ylim=(0, 1.005), aspect='equal', title=title,
         xlabel='false positive rate', ylabel='true positive rate')
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right', fontsize='small')
  _save_figure(fig, path)


def _to_image(a: np.ndarray) -> np.ndarray:
  """Gray (H, W) or RGB (H, W, 3) in [0, 1]; 0..255 values rescaled."""
  a = np.asarray(a)
  # Decided by value, not dtype, so uint8 0/1 masks stay visible.
  scale = 255.0 if a.max(initial=0) > 1 else 1.0
  return np.clip(a.astype(np.float64) / scale, 0, 1)


def _squeeze(a) -> np.ndarray:
  a = np.asarray(a)
  return a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a


def plot_heatmap_grid(path: str, rows: Sequence[Mapping[str, Any]],
                      columns: Sequence[str], title: str, *,
                      image_columns: Iterable[str] = IMAGE_COLUMNS,
                      max_rows: int = MAX_ROWS):
  """Draws a grid of examples: one row per image, one column per quantity.

  Args:
    path: output PNG.
    rows: each maps column name -> (H, W), (H, W, 1) or (H, W, 3) array, plus
      an optional row label under `ROW_LABEL` (e.g. file, defect, score).
      A missing column leaves its cell blank. Only the first `max_rows` rows
      are drawn.
    columns: column names, in order.
    title: figure title.
    image_columns: columns drawn as gray/RGB images (uint8 or [0, 1]);
      the others are maps drawn with a colour map, scaled alike down each
      column, RGB maps averaged over channels.
    max_rows: bound on the rows drawn, to keep the figure readable.
  """
  rows, image_columns = list(rows)[:max_rows], set(image_columns)
  if not rows or not columns:
    raise ValueError('plot_heatmap_grid needs at least one row and column.')
  fig = Figure(figsize=(2 * len(columns) + 0.6, 2 * len(rows) + 1),
               layout='constrained')
  axes = fig.subplots(len(rows), len(columns), squeeze=False)
  fig.suptitle(title)
  for j, column in enumerate(columns):
    cells = [None if row.get(column) is None else _squeeze(row[column])
             for row in rows]
    is_image = column in image_columns
    if not is_image:
      cells = [c if c is None or c.ndim == 2 else c.mean(-1) for c in cells]
      drawn = [c for c in cells if c is not None]
      # One scale per column makes rows comparable; the 99.9th percentile
      # keeps a few hot pixels from washing out the rest of the column.
      values = np.concatenate([c.ravel() for c in drawn]) if drawn else [0]
      vmin, vmax = np.min(values), np.percentile(values, 99.9)
      vmax = vmax if vmax > vmin else vmin + 1
    im = None
    for i, cell in enumerate(cells):
      ax = axes[i, j]
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(column, fontsize='medium')
      if cell is None:
        ax.set_frame_on(False)
      elif is_image:
        ax.imshow(_to_image(cell), cmap='gray', vmin=0, vmax=1)
      else:
        im = ax.imshow(cell, cmap='inferno', vmin=vmin, vmax=vmax)
    if im is not None:
      fig.colorbar(im, ax=axes[:, j], location='bottom', shrink=0.8)
  for i, row in enumerate(rows):
    if row.get(ROW_LABEL):
      axes[i, 0].set_ylabel(str(row[ROW_LABEL]), fontsize='small')
  _save_figure(fig, path)


def write_category_report(
    out_dir: str, *, category: str, metrics: Mapping[str, Any],
    roc_curves: Mapping[str, Mapping[str, tuple[Any, Any]]],
    heatmap_rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
    notes: Sequence[str]) -> dict[str, float]:
  """Writes one category's metrics.json, report.md and figures.

  Args:
    out_dir: the category's report directory (created if needed).
    category: e.g. 'bottle'.
    metrics: nested (or flat) metrics, flattened with `flatten`.
    roc_curves: {'image': {scorer: (fpr, tpr)}, 'pixel': {...}}; a level
      that is absent or empty gets no figure.
    heatmap_rows: rows for `plot_heatmap_grid` (none: no figure).
    columns: its columns.
    notes: free-text lines for the report (settings, caveats).

  Returns:
    The flattened metrics.
  """
  flat = flatten(metrics)
  figures = []
  for level in ('image', 'pixel'):
    if roc_curves.get(level):
      name = f'roc_{level}.png'
      plot_roc(os.path.join(out_dir, name), roc_curves[level],
               f'{category}: {level}-level ROC')
      figures.append((f'{level}-level ROC', name))
  if heatmap_rows:
    plot_heatmap_grid(os.path.join(out_dir, 'heatmaps.png'), heatmap_rows,
                      columns, f'{category}: examples')
    figures.append(('examples', 'heatmaps.png'))
  lines = [f'# {category}', '', *_metrics_table(flat), '']
  lines += ['## Figures', ''] + [f'![{c}]({n})\n' for c, n in figures]
  lines += _notes(notes)
  _write_text(os.path.join(out_dir, 'report.md'), lines)
  write_json(os.path.join(out_dir, 'metrics.json'), flat)
  return flat


def write_summary_report(
    workdir: str, *, per_category: Mapping[str, Mapping[str, Any]],
    title: str, notes: Sequence[str],
    headline_keys: Sequence[str]) -> dict[str, float]:
  """Writes the cross-category metrics.json and report.md.

  Args:
    workdir: run directory; category reports are at <category>/report.md.
    per_category: category -> its (flattened) metrics.
    title: report title.
    notes: free-text lines for the report.
    headline_keys: metric keys of the headline table (category x key).

  Returns:
    key -> unweighted mean over categories, for the keys every category has.
  """
  flats = {cat: flatten(m) for cat, m in per_category.items()}
  if not flats or 'mean' in flats:
    raise ValueError('Need >= 1 category, none of them named "mean".')
  # A mean over some of the categories is not comparable with published
  # all-category means, so keys missing anywhere get no mean.
  keys = [k for k in dict.fromkeys(k for f in flats.values() for k in f)
          if all(k in f for f in flats.values())]
  mean = {k: float(np.mean([f[k] for f in flats.values()])) for k in keys}
  lines = [f'# {title}', '',
           f'Categories: {len(flats)}; means are unweighted over categories.',
           '', '## Headline metrics', '']
  lines += _table(['category', *headline_keys], [
      [cat, *(_fmt(f.get(k)) for k in headline_keys)]
      for cat, f in flats.items()] + [
          ['**mean**', *(_fmt(mean.get(k)) for k in headline_keys)]])
  lines += ['', '## All metrics (mean over categories)', '']
  lines += _metrics_table(mean) + [''] + _notes(notes)
  lines += ['## Per-category reports', '']
  lines += [f'- [{cat}]({cat}/report.md)' for cat in flats]
  _write_text(os.path.join(workdir, 'report.md'), lines)
  out = {f'{cat}/{k}': v for cat, f in flats.items() for k, v in f.items()}
  out.update({f'mean/{k}': v for k, v in mean.items()})
  write_json(os.path.join(workdir, 'metrics.json'), out)
  return mean
