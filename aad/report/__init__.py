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

from aad.runtime import errors
from aad.metrics import protocol

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
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if errors.is_disk_full(e):  # the old file, if any, is untouched
      raise errors.disk_full(path) from e
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


def write_text(path: str, text: str):
  """Writes `text` to `path` atomically."""
  _atomic_write(path, lambda f: f.write(text))


def write_bytes(path: str, data: bytes):
  """Writes `data` to `path` atomically."""
  _atomic_write(path, lambda f: f.write(data), 'wb')


def _write_text(path: str, lines: Iterable[str]):
  write_text(path, '\n'.join(lines) + '\n')


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


def markdown_table(header: Sequence[str],
                   rows: Iterable[Sequence[str]]) -> list[str]:
  """Lines of a markdown table of string cells."""
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
  return markdown_table(['scorer', *metrics], (
      [scorer, *(_fmt(row.get(m)) for m in metrics)]
      for scorer, row in cells.items()))


def _fmt_column(name: str, value) -> str:
  # Thresholds are in score units, which can be tiny (MC variance ~1e-4):
  # significant digits keep them readable where 4 decimals would not.
  if value is not None and name.endswith('threshold'):
    return f'{value:.4g}'
  return _fmt(value)


def _grouped_table(first: Sequence[str], rows: Mapping[tuple, Mapping],
                   columns: Sequence[str]) -> list[str]:
  """Table with leading label columns (`first`) and metric columns."""
  return markdown_table([*first, *columns], (
      [*label, *(_fmt_column(c, row.get(c)) for c in columns)]
      for label, row in rows.items()))


def metric_sections(flat: Mapping[str, float],
                    type_columns: Sequence[str] = ()) -> list[str]:
  """Markdown tables of evaluation metrics grouped by level and scorer.

  Keys follow `aad.evaluation`: '<scorer>/<reduction>/image_*' (image
  table, one row per scorer and reduction), '<scorer>/<reduction>/
  threshold*' (deployment thresholds), '<scorer>/pixel_*' (pixel table,
  one row per scorer) and '<scorer>/by_type/<type>/...' (per defect type).
  Other keys (training summary, ...) go to a last generic table.

  Args:
    flat: flattened metrics of one category, or means over categories.
    type_columns: overall keys (e.g. 'residual/l2/image_auroc') to show per
      defect type: the type's value is '<scorer>/by_type/<type>/<rest>'.
      Empty: no per-type table (every per-type value stays in
      metrics.json).

  Returns:
    Markdown lines.
  """
  image, pixel, thresholds, other, types = {}, {}, {}, {}, []
  for key, value in flat.items():
    parts = key.split('/')
    if len(parts) > 3 and parts[1] == protocol.BY_TYPE:
      if parts[2] not in types:
        types.append(parts[2])
    elif len(parts) == 3 and parts[2].startswith('image_'):
      image.setdefault(tuple(parts[:2]), {})[parts[2]] = value
    elif len(parts) == 3 and parts[2].startswith('threshold'):
      thresholds.setdefault(tuple(parts[:2]), {})[parts[2]] = value
    elif len(parts) == 2 and parts[1].startswith('pixel_'):
      pixel.setdefault((parts[0],), {})[parts[1]] = value
    else:
      other[key] = value

  def columns(rows):
    return list(dict.fromkeys(m for row in rows.values() for m in row))

  lines = []
  if image:
    lines += ['### Image level', '',
              *_grouped_table(['scorer', 'reduction'], image, columns(image)),
              '']
  if pixel:
    lines += ['### Pixel level (all pixels of all test images pooled)', '',
              *_grouped_table(['scorer'], pixel, columns(pixel)), '']
  if thresholds:
    lines += ['### Deployment threshold (set on good validation images, '
              'no defect labels; test precision/recall/F1 at it)', '',
              *_grouped_table(['scorer', 'reduction'], thresholds,
                              columns(thresholds)), '']
  if types and type_columns:
    rows = {('all types',): {c: flat.get(c) for c in type_columns}}
    for name in sorted(types):
      rows[(name,)] = {}
      for c in type_columns:
        scorer, _, rest = c.partition('/')
        rows[(name,)][c] = flat.get(
            f'{scorer}/{protocol.BY_TYPE}/{name}/{rest}')
    lines += ['### Per defect type (each type against all good test '
              'images)', '',
              *_grouped_table(['defect type'], rows, type_columns), '']
  if other:
    lines += ['### Other', '', *_metrics_table(other), '']
  return lines


def _ranks(values: Mapping[str, float]) -> dict[str, int]:
  """Competition ranks, 1 = largest; equal values share the rank."""
  return {k: 1 + sum(other > v for other in values.values())
          for k, v in values.items()}


def ranking_section(flat: Mapping[str, float],
                    ranking: Mapping[str, tuple[str, str | None]]
                    ) -> list[str]:
  """Markdown lines ranking scorers by image AUROC, then pixel AUROC.

  Args:
    flat: flattened metrics.
    ranking: {scorer: (image AUROC key, pixel AUROC key or None)}; scorers
      whose image key is missing from `flat` are left out.

  Returns:
    A '## Ranking' section: one row per scorer, sorted by image AUROC,
    with the image score used, both AUROCs and both ranks.
  """
  image = {n: flat[k] for n, (k, _) in ranking.items() if k in flat}
  if not image:
    return []
  pixel = {n: flat[k] for n, (_, k) in ranking.items()
           if n in image and k and k in flat}
  image_rank, pixel_rank = _ranks(image), _ranks(pixel)
  order = sorted(image, key=lambda n: (image_rank[n], -pixel.get(n, -1), n))
  rows = [[n, ranking[n][0].split('/')[-2], _fmt(image[n]),
           str(image_rank[n]), _fmt(pixel.get(n)),
           str(pixel_rank[n]) if n in pixel_rank else '—'] for n in order]
  return ['## Ranking', '', *markdown_table(
      ['scorer', 'image score', 'image AUROC', 'image rank', 'pixel AUROC',
       'pixel rank'], rows), '']


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


def plot_pr(path: str, curves: Mapping[str, tuple[Any, Any]], title: str,
            chance: float | None = None):
  """Draws precision-recall curves with their average precision.

  Args:
    path: output PNG.
    curves: scorer name -> (recall, precision) in sklearn's layout (recall
      decreasing, as `metrics.pr_curve` returns it).
    title: figure title.
    chance: precision of a random detector (the positive fraction), drawn
      as a dashed line; None for none.
  """
  fig = Figure(figsize=(5, 5), layout='constrained')
  ax = fig.add_subplot()
  for name, (recall, precision) in curves.items():
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    ap = float(-np.sum(np.diff(recall) * precision[:-1]))
    ax.plot(*_thin(recall, precision), lw=1.2, label=f'{name} (AP {ap:.3f})')
  if chance is not None:
    ax.axhline(chance, ls='--', lw=0.8, color='grey',
               label=f'chance ({chance:.3f})')
  ax.set(xlim=(0, 1), ylim=(0, 1.005), aspect='equal', title=title,
         xlabel='recall', ylabel='precision')
  ax.grid(alpha=0.3)
  ax.legend(loc='lower left', fontsize='small')
  _save_figure(fig, path)


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
  """Trapezoid area under y(x) on [0, limit], y interpolated at limit."""
  stop = int(np.searchsorted(x, limit, 'right'))
  xs, ys = x[:stop], y[:stop]
  if stop < x.size and xs[-1] < limit:
    frac = (limit - xs[-1]) / (x[stop] - xs[-1])
    xs, ys = np.append(xs, limit), np.append(ys, ys[-1] + frac * (
        y[stop] - ys[-1]))
  return float(np.trapezoid(ys, xs))


def plot_pro(path: str, curves: Mapping[str, tuple[Any, Any]], title: str,
             fpr_limit: float = 0.3):
  """Draws PRO curves up to `fpr_limit`, with AU-PRO (area / limit).

  Args:
    path: output PNG.
    curves: scorer name -> (fpr, pro), e.g. from `metrics.pro_curve`.
    title: figure title.
    fpr_limit: the integration bound; the x axis stops there.
  """
  fig = Figure(figsize=(5, 5), layout='constrained')
  ax = fig.add_subplot()
  for name, (fpr, pro) in curves.items():
    fpr, pro = np.asarray(fpr, np.float64), np.asarray(pro, np.float64)
    area = _area_up_to(fpr, pro, fpr_limit) / fpr_limit
    stop = min(int(np.searchsorted(fpr, fpr_limit, 'right')) + 1, fpr.size)
    ax.plot(*_thin(fpr[:stop], pro[:stop]), lw=1.2,
            label=f'{name} (AU-PRO {area:.3f})')
  ax.plot([0, fpr_limit], [0, fpr_limit], ls='--', lw=0.8, color='grey',
          label='chance')
  ax.set(xlim=(0, fpr_limit), ylim=(0, 1.005), title=title,
         xlabel='false positive rate (normal pixels)',
         ylabel='per-region overlap (PRO)')
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right', fontsize='small')
  _save_figure(fig, path)


def plot_score_histograms(path: str,
                          scores: Mapping[str, tuple[Any, Any]], title: str,
                          thresholds: Mapping[str, float] | None = None,
                          xlabel: str = 'image score'):
  """Draws, per scorer, histograms of good and defective image scores.

  Args:
    path: output PNG.
    scores: scorer name -> (good image scores, defective image scores).
    title: figure title.
    thresholds: optional scorer name -> a decision threshold, drawn as a
      vertical line.
    xlabel: x-axis label (the score's name).
  """
  if not scores:
    raise ValueError('plot_score_histograms needs at least one scorer.')
  thresholds = thresholds or {}
  fig = Figure(figsize=(4 * len(scores), 3.6), layout='constrained')
  axes = fig.subplots(1, len(scores), squeeze=False)[0]
  fig.suptitle(title)
  for ax, (name, (good, defective)) in zip(axes, scores.items()):
    good, defective = np.asarray(good), np.asarray(defective)
    both = np.concatenate([good, defective])
    # Shared bins, so the two histograms are comparable bar by bar.
    bins = np.histogram_bin_edges(both, bins=min(30, max(5, both.size // 3)))
    ax.hist(good, bins=bins, alpha=0.6, color='tab:blue',
            label=f'good ({good.size})')
    ax.hist(defective, bins=bins, alpha=0.6, color='tab:red',
            label=f'defective ({defective.size})')
    if name in thresholds:
      ax.axvline(thresholds[name], color='black', ls='--', lw=1,
                 label='val threshold')
    ax.set(title=name, xlabel=xlabel, ylabel='test images')
    ax.ticklabel_format(axis='x', style='sci', scilimits=(-3, 3))
    ax.legend(fontsize='small')
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
      # Under the last cell only: attached to the whole column, the
      # constrained layout misplaces it in tall grids and cuts its labels.
      fig.colorbar(im, ax=axes[-1, j], location='bottom', shrink=0.8)
  for i, row in enumerate(rows):
    if row.get(ROW_LABEL):
      axes[i, 0].set_ylabel(str(row[ROW_LABEL]), fontsize='small')
  _save_figure(fig, path)


def plot_roi_outlines(path: str, previews: Sequence[tuple], title: str):
  """Draws images at native size with their peeled ROI outlined.

  Args:
    path: PNG path.
    previews: (name, uint8 (H, W, C) image, preprocess.Roi) triples.
    title: figure title.
  """
  fig = Figure(figsize=(3 * len(previews), 3.4))
  axes = fig.subplots(1, len(previews), squeeze=False)[0]
  fig.suptitle(title)
  for ax, (name, image, roi) in zip(axes, previews):
    top, bottom, left, right = roi.box
    inside = np.zeros(image.shape[:2], np.float32)
    inside[top:bottom, left:right] = roi.inside
    ax.imshow(_to_image(_squeeze(image)), cmap='gray')
    # The object's boundary (the 0.5 level of its mask) and its crop box.
    ax.contour(inside, levels=[0.5], colors='lime', linewidths=1.2)
    ax.plot([left, right, right, left, left], [top, top, bottom, bottom, top],
            color='yellow', linewidth=0.8, linestyle='--')
    ax.set_title(name, fontsize=8)
    ax.set_axis_off()
  _save_figure(fig, path)


def _category_figures(out_dir: str, category: str, *, roc_curves,
                      pr_curves, pr_chance, pro_curves, pro_fpr_limit,
                      score_histograms, thresholds, image_score,
                      roi_previews, heatmap_rows, columns,
                      heatmap_title) -> list[tuple[str, str]]:
  """Draws `write_category_report`'s figures (those with data) in out_dir;
  returns their (caption, file name) in report order."""
  figures = []
  score = f' ({image_score} score)' if image_score else ''
  for level in ('image', 'pixel'):
    suffix = score if level == 'image' else ''
    if roc_curves.get(level):
      name = f'roc_{level}.png'
      plot_roc(os.path.join(out_dir, name), roc_curves[level],
               f'{category}: {level}-level ROC{suffix}')
      figures.append((f'{level}-level ROC', name))
    if pr_curves and pr_curves.get(level):
      name = f'pr_{level}.png'
      plot_pr(os.path.join(out_dir, name), pr_curves[level],
              f'{category}: {level}-level precision-recall{suffix}',
              chance=(pr_chance or {}).get(level))
      figures.append((f'{level}-level precision-recall', name))
  if pro_curves:
    plot_pro(os.path.join(out_dir, 'pro.png'), pro_curves,
             f'{category}: PRO curve up to FPR {pro_fpr_limit:g}',
             pro_fpr_limit)
    figures.append(('PRO curve', 'pro.png'))
  if score_histograms:
    plot_score_histograms(
        os.path.join(out_dir, 'score_histograms.png'), score_histograms,
        f'{category}: test image scores{score}, good vs defective',
        thresholds, xlabel=f'{image_score or "image"} score')
    figures.append(('image scores, good vs defective',
                    'score_histograms.png'))
  if roi_previews:
    plot_roi_outlines(os.path.join(out_dir, 'roi.png'), roi_previews,
                      f'{category}: peeled ROI (green) and crop (dashed)')
    figures.append(('ROI peeling', 'roi.png'))
  if heatmap_rows:
    plot_heatmap_grid(os.path.join(out_dir, 'heatmaps.png'), heatmap_rows,
                      columns, f'{category}: {heatmap_title}')
    figures.append(('examples', 'heatmaps.png'))
  return figures


def write_category_report(
    out_dir: str, *, category: str, metrics: Mapping[str, Any],
    roc_curves: Mapping[str, Mapping[str, tuple[Any, Any]]],
    heatmap_rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
    notes: Sequence[str],
    pr_curves: Mapping[str, Mapping[str, tuple[Any, Any]]] | None = None,
    pr_chance: Mapping[str, float] | None = None,
    pro_curves: Mapping[str, tuple[Any, Any]] | None = None,
    pro_fpr_limit: float = 0.3,
    score_histograms: Mapping[str, tuple[Any, Any]] | None = None,
    thresholds: Mapping[str, float] | None = None,
    image_score: str = '',
    heatmap_title: str = 'examples',
    grouped: bool = False,
    type_columns: Sequence[str] = (),
    ranking: Mapping[str, tuple[str, str | None]] | None = None,
    roi_previews: Sequence[tuple] = ()) -> dict[str, float]:
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
    pr_curves: like roc_curves, {scorer: (recall, precision)} per level
      (`plot_pr`); None or empty levels: no figure.
    pr_chance: per level, the positive fraction (chance precision).
    pro_curves: {scorer: (fpr, pro)} for `plot_pro`; None: no figure.
    pro_fpr_limit: its FPR bound.
    score_histograms: {scorer: (good scores, defective scores)} for
      `plot_score_histograms`; None: no figure.
    thresholds: {scorer: threshold} drawn on the histograms.
    image_score: name of the image score in titles (e.g. 'l2').
    heatmap_title: title of the example grid.
    grouped: lay the metrics out by level with `metric_sections` (image,
      pixel, thresholds, per type); False: one scorer x metric table.
    type_columns: with `grouped`, the keys of the per-defect-type table.
    ranking: {scorer: (image AUROC key, pixel AUROC key or None)}: a
      ranking table first (`ranking_section`); None: none.
    roi_previews: (name, native image, Roi) of a few images when the ROI
      peel is on: a figure of their outlines (`plot_roi_outlines`); ():
      none.

  Returns:
    The flattened metrics.
  """
  flat = flatten(metrics)
  figures = _category_figures(
      out_dir, category, roc_curves=roc_curves, pr_curves=pr_curves,
      pr_chance=pr_chance, pro_curves=pro_curves,
      pro_fpr_limit=pro_fpr_limit, score_histograms=score_histograms,
      thresholds=thresholds, image_score=image_score,
      roi_previews=roi_previews, heatmap_rows=heatmap_rows, columns=columns,
      heatmap_title=heatmap_title)
  tables = (['## Metrics', '', *metric_sections(flat, type_columns)]
            if grouped else [*_metrics_table(flat), ''])
  lines = [f'# {category}', '', *ranking_section(flat, ranking or {}),
           *tables]
  lines += ['## Figures', ''] + [f'![{c}]({n})\n' for c, n in figures]
  lines += _notes(notes)
  _write_text(os.path.join(out_dir, 'report.md'), lines)
  write_json(os.path.join(out_dir, 'metrics.json'), flat)
  return flat


def write_summary_report(
    workdir: str, *, per_category: Mapping[str, Mapping[str, Any]],
    title: str, notes: Sequence[str],
    headline_keys: Sequence[str], grouped: bool = False,
    type_columns: Sequence[str] = (),
    ranking: Mapping[str, tuple[str, str | None]] | None = None
    ) -> dict[str, float]:
  """Writes the cross-category metrics.json and report.md.

  Args:
    workdir: run directory; category reports are at <category>/report.md.
    per_category: category -> its (flattened) metrics.
    title: report title.
    notes: free-text lines for the report.
    headline_keys: metric keys of the headline table (category x key).
    grouped: lay the table of means out by level and scorer with
      `metric_sections`; False: one scorer x metric table.
    type_columns: with `grouped`, the keys of the per-defect-type table.
    ranking: as `write_category_report`'s, ranking the means over
      categories.

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
  lines += markdown_table(['category', *headline_keys], [
      [cat, *(_fmt(f.get(k)) for k in headline_keys)]
      for cat, f in flats.items()] + [
          ['**mean**', *(_fmt(mean.get(k)) for k in headline_keys)]])
  lines += ['', *ranking_section(mean, ranking or {})]
  lines += ['## All metrics (mean over categories)', '']
  lines += (metric_sections(mean, type_columns) if grouped
            else [*_metrics_table(mean), ''])
  lines += _notes(notes)
  lines += ['## Per-category reports', '']
  lines += [f'- [{cat}]({cat}/report.md)' for cat in flats]
  _write_text(os.path.join(workdir, 'report.md'), lines)
  out = {f'{cat}/{k}': v for cat, f in flats.items() for k, v in f.items()}
  out.update({f'mean/{k}': v for k, v in mean.items()})
  write_json(os.path.join(workdir, 'metrics.json'), out)
  return mean


def colorize(amap: np.ndarray, vmax: float, cmap: str = 'jet') -> np.ndarray:
  """uint8 (H, W, 3) colour rendering of a map on the scale [0, vmax]."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  scaled = np.clip(np.asarray(amap, np.float64) / max(vmax, 1e-12), 0, 1)
  return (colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, amap: np.ndarray, vmax: float) -> np.ndarray:
  """The image (uint8 (H, W, 1 or 3)) under its coloured map, the map
  more opaque where it is higher (half at vmax and above)."""
  rgb = np.broadcast_to(image, image.shape[:2] + (3,)).astype(np.float64)
  alpha = 0.5 * np.clip(np.asarray(amap) / max(vmax, 1e-12), 0, 1)[..., None]
  out = (1 - alpha) * rgb + alpha * colorize(amap, vmax)
  return out.round().astype(np.uint8)


def write_png(path: str, image: np.ndarray):
  """Writes uint8 (H, W), (H, W, 1) or (H, W, 3) as PNG, atomically."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.asarray(image, np.uint8)
  pil = Image.fromarray(image[..., 0] if image.ndim == 3 and
                        image.shape[-1] == 1 else image)
  _atomic_write(path, lambda f: pil.save(f, format='PNG'), mode='wb')


def write_csv(path: str, header: Sequence[str],
              rows: Iterable[Sequence[Any]]):
  """Writes a CSV table atomically."""
  import csv  # pylint: disable=g-import-not-at-top
  rows = list(rows)
  def write(f):
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(header)
    writer.writerows(rows)
  _atomic_write(path, write)
