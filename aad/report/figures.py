"""The report's figures: ROC, PR and PRO curves, score histograms, heat-map
grids, ROI outlines; and colour renderings of maps.

This is the only module that draws. It uses matplotlib's object API
(`Figure` + Agg canvas) rather than pyplot, so nothing depends on a global
backend or leaks open figures in long evaluation runs.
"""

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
import numpy as np

from aad.runtime import atomic

# Heat-map grid columns drawn as images (gray or RGB); others are maps.
IMAGE_COLUMNS = ('input', 'reconstruction', 'mean prediction',
                 'ground truth', 'mask')
ROW_LABEL = 'label'  # Row-dict key of the optional row label.
MAX_ROWS = 12
_MAX_CURVE_POINTS = 2000


def _save_figure(fig: Figure, path: str):
  atomic.write_with(path, lambda f: fig.savefig(f, format='png', dpi=100), 'wb')


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


def category_figures(out_dir: str, category: str, *, roc_curves,
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


BAND_LINE = 13  # px per line of `labelled`'s band (Pillow's default font)
_PAD = 3


def _wrap(text: str, width: float, font) -> list[str]:
  """`text`'s words in lines of at most `width` px (a longer word alone)."""
  lines = []
  for word in text.split():
    if lines and font.getlength(f'{lines[-1]} {word}') <= width:
      lines[-1] = f'{lines[-1]} {word}'
    else:
      lines.append(word)
  return lines


def labelled(image: np.ndarray, text: Sequence[str], vmax: float,
             cmap: str = 'jet') -> np.ndarray:
  """uint8 (H + band, W', 3): `image` (uint8 (H, W, 3)) unchanged at the
  top left, above a dark band with `text` (each item's words wrapped to the
  width) and a colour bar of the map scale 'map 0 [cmap] vmax'. W' = W,
  or wider (dark) where a word or the bar needs more room. Drawn with
  Pillow's ImageDraw and default font: fast for many images."""
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top
  font = ImageFont.load_default()
  h, w = image.shape[:2]
  left, right = 'map 0', f'{vmax:.3g}'
  bar_at = _PAD + font.getlength(left) + _PAD
  bar_min = bar_at + 16 + _PAD + font.getlength(right) + _PAD
  words = [font.getlength(word) for line in text for word in line.split()]
  width = int(np.ceil(max([w, bar_min] + [x + 2 * _PAD for x in words])))
  lines = [part for line in text
           for part in _wrap(line, width - 2 * _PAD, font)]
  band = (len(lines) + 1) * BAND_LINE + _PAD
  canvas = Image.new('RGB', (width, h + band), (32, 32, 32))
  canvas.paste(Image.fromarray(np.ascontiguousarray(image[..., :3])), (0, 0))
  draw = ImageDraw.Draw(canvas)
  for i, line in enumerate(lines):
    draw.text((_PAD, h + _PAD + i * BAND_LINE), line, fill=(255, 255, 255),
              font=font)
  y = h + _PAD + len(lines) * BAND_LINE
  draw.text((_PAD, y), left, fill=(255, 255, 255), font=font)
  bar_w = int(width - bar_at - font.getlength(right) - 2 * _PAD)
  bar = colorize(np.linspace(0, vmax, bar_w)[None].repeat(BAND_LINE - 3, 0),
                 vmax, cmap)
  canvas.paste(Image.fromarray(bar), (int(bar_at), y + 1))
  draw.text((int(bar_at) + bar_w + _PAD, y), right, fill=(255, 255, 255),
            font=font)
  return np.asarray(canvas)
