"""Writes results: a category's and a run's metrics.json and report.md with
their figures (tables.py, figures.py), and the PNG and CSV outputs of
`aad.predict`. `metrics.json` is written last in each report, so its
presence marks a complete report.
"""

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from aad.report import figures
from aad.report import tables
from aad.runtime import atomic


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
  flat = tables.flatten(metrics)
  drawn = figures.category_figures(
      out_dir, category, roc_curves=roc_curves, pr_curves=pr_curves,
      pr_chance=pr_chance, pro_curves=pro_curves,
      pro_fpr_limit=pro_fpr_limit, score_histograms=score_histograms,
      thresholds=thresholds, image_score=image_score,
      roi_previews=roi_previews, heatmap_rows=heatmap_rows, columns=columns,
      heatmap_title=heatmap_title)
  metric_lines = (
      ['## Metrics', '', *tables.metric_sections(flat, type_columns)]
      if grouped else [*tables.metrics_table(flat), ''])
  lines = [f'# {category}', '', *tables.ranking_section(flat, ranking or {}),
           *metric_lines]
  lines += ['## Figures', ''] + [f'![{c}]({n})\n' for c, n in drawn]
  lines += tables.notes_section(notes)
  atomic.write_text(os.path.join(out_dir, 'report.md'),
                   '\n'.join(lines) + '\n')
  atomic.write_json(os.path.join(out_dir, 'metrics.json'), flat)
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
  flats = {cat: tables.flatten(m) for cat, m in per_category.items()}
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
  lines += tables.markdown_table(['category', *headline_keys], [
      [cat, *(tables.fmt(f.get(k)) for k in headline_keys)]
      for cat, f in flats.items()] + [
          ['**mean**', *(tables.fmt(mean.get(k)) for k in headline_keys)]])
  lines += ['', *tables.ranking_section(mean, ranking or {})]
  lines += ['## All metrics (mean over categories)', '']
  lines += (tables.metric_sections(mean, type_columns) if grouped
            else [*tables.metrics_table(mean), ''])
  lines += tables.notes_section(notes)
  lines += ['## Per-category reports', '']
  lines += [f'- [{cat}]({cat}/report.md)' for cat in flats]
  atomic.write_text(os.path.join(workdir, 'report.md'),
                   '\n'.join(lines) + '\n')
  out = {f'{cat}/{k}': v for cat, f in flats.items() for k, v in f.items()}
  out.update({f'mean/{k}': v for k, v in mean.items()})
  atomic.write_json(os.path.join(workdir, 'metrics.json'), out)
  return mean


def write_png(path: str, image: np.ndarray):
  """Writes uint8 (H, W), (H, W, 1) or (H, W, 3) as PNG, atomically."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.asarray(image, np.uint8)
  pil = Image.fromarray(image[..., 0] if image.ndim == 3 and
                        image.shape[-1] == 1 else image)
  atomic.write_with(path, lambda f: pil.save(f, format='PNG'), mode='wb')


def write_csv(path: str, header: Sequence[str],
              rows: Iterable[Sequence[Any]]):
  """Writes a CSV table atomically."""
  import csv  # pylint: disable=g-import-not-at-top
  rows = list(rows)
  def write(f):
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(header)
    writer.writerows(rows)
  atomic.write_with(path, write)
