"""Markdown tables of metrics: flattening, grouping by level, rankings."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aad.metrics import protocol


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


def fmt(value) -> str:
  return '—' if value is None else f'{value:.4f}'


def markdown_table(header: Sequence[str],
                   rows: Iterable[Sequence[str]]) -> list[str]:
  """Lines of a markdown table of string cells."""
  return ['| ' + ' | '.join(header) + ' |',
          '|' + ' --- |' * len(header)] + [
              '| ' + ' | '.join(row) + ' |' for row in rows]


def metrics_table(flat: Mapping[str, float]) -> list[str]:
  """Markdown table, scorer (key up to the last '/') x metric name."""
  cells = {}
  for key, value in flat.items():
    scorer, _, metric = key.rpartition('/')
    cells.setdefault(scorer or '—', {})[metric] = value
  metrics = list(dict.fromkeys(m for row in cells.values() for m in row))
  return markdown_table(['scorer', *metrics], (
      [scorer, *(fmt(row.get(m)) for m in metrics)]
      for scorer, row in cells.items()))


def _fmt_column(name: str, value) -> str:
  # Thresholds are in score units, which can be tiny (MC variance ~1e-4):
  # significant digits keep them readable where 4 decimals would not.
  if value is not None and name.endswith('threshold'):
    return f'{value:.4g}'
  return fmt(value)


def _grouped_table(first: Sequence[str], rows: Mapping[tuple, Mapping],
                   columns: Sequence[str]) -> list[str]:
  """Table with leading label columns (`first`) and metric columns."""
  return markdown_table([*first, *columns], (
      [*label, *(_fmt_column(c, row.get(c)) for c in columns)]
      for label, row in rows.items()))


def metric_sections(flat: Mapping[str, float],
                    type_columns: Sequence[str] = ()) -> list[str]:
  """Markdown tables of evaluation metrics grouped by level and scorer.

  Keys follow `aad.metrics.protocol`: '<scorer>/<reduction>/image_*' (image
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
    lines += ['### Other', '', *metrics_table(other), '']
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
  rows = [[n, ranking[n][0].split('/')[-2], fmt(image[n]),
           str(image_rank[n]), fmt(pixel.get(n)),
           str(pixel_rank[n]) if n in pixel_rank else '—'] for n in order]
  return ['## Ranking', '', *markdown_table(
      ['scorer', 'image score', 'image AUROC', 'image rank', 'pixel AUROC',
       'pixel rank'], rows), '']


def notes_section(notes: Sequence[str]) -> list[str]:
  return ['## Notes', '', *(f'- {n}' for n in notes), ''] if notes else []
