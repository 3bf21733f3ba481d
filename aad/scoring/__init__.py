"""Scorers: named anomaly maps computed from an input and a family's outputs.

A scorer is a name and a pure function (x, outputs, fitted, cfg) -> map:
x the input images (N, H, W, C) float in [0, 1], outputs the family's named
arrays (aad/models/base.py), fitted what the scorer learnt from the
training images (None if it learns nothing), cfg the config's `eval` block,
and the map (N, H, W), larger = more anomalous. It runs on device inside
the scoring call. `config.eval.scorers` lists the scorers to evaluate
(empty: the family's default list); evaluation, reports, thresholds and
`aad.predict` iterate that list.

A scorer is one module found by its name, as big_vision finds its models:
scorer `name` is the module aad/scoring/scorers/<name>.py, and a name with
a dot (`my_pkg.my_scorer`) is imported as that module, so a scorer of
one's own is one file on PYTHONPATH. The module defines

  SCORER = Scorer(name=<the module's file name>, map=..., ...)

and, if it has options, `defaults()`: its fields of config.eval (assembled
by configs/default.py). Adding a scorer edits no other module.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable, Sequence

import jax
import numpy as np

from aad.scoring import ops

# The package of the built-in scorers, one module each.
PACKAGE = 'aad.scoring.scorers'


@dataclasses.dataclass(frozen=True)
class Scorer:
  """A scorer, defined by its module as `SCORER = Scorer(...)`.

  Attributes:
    name: the name used in config.eval.scorers, metrics and reports: the
      module's file name (a dotted name in the config gives the scorer that
      whole name).
    map: (x, outputs, fitted, cfg) -> (N, H, W) map, or None for a scorer
      without a local form (a global similarity measure): it has only its
      own image score, so evaluation gives it image metrics only and
      reports, thresholds and `aad.predict` skip its pixel parts.
    needs: family outputs the map reads; a family without them cannot use
      the scorer.
    label: column title of the heat-map figures; default the name.
    fit: optional fit(images, outputs, cfg) -> arrays, run once per
      category before scoring: images uint8 (N, H, W, C) of the `fit_split`
      split, outputs {output: the family's outputs of those images} for the
      outputs in `fit_needs` ({} when it is empty), cfg the eval block. Its
      result is the map's `fitted` argument and is saved with the run, so
      `aad.predict` needs no training data.
    baseline: a no-learning reference (kept out of the per-defect-type
      tables, which compare the models' scorers).
    image: optional (x, outputs, fitted, cfg) -> (N,) image score of the
      scorer's own (a measure whose standard image form is not a norm of
      its map), reported as the reduction 'own' beside the map's norms.
    joint: optional (x, outputs, fitted, cfg) -> (map or None, image score)
      in one pass, for measures whose map and score share their work (XLA
      does not merge two calls of the same loop).
    fit_needs: family outputs `fit` reads (the caller computes them, e.g.
      aad.experiment.testing.family_outputs).
    fit_split: 'train': fitted on the training images; 'val': on the good
      validation images, unseen in training (what the model gets wrong on
      new good images, e.g. the 'normalised' scorer).
  """
  name: str
  map: Callable[..., jax.Array] | None = None
  needs: tuple[str, ...] = ('reconstruction',)
  label: str = ''
  fit: Callable[[np.ndarray, dict, Any], Any] | None = None
  baseline: bool = False
  image: Callable[..., jax.Array] | None = None
  joint: Callable[..., tuple[Any, jax.Array]] | None = None
  fit_needs: tuple[str, ...] = ()
  fit_split: str = 'train'

  def __post_init__(self):
    if self.map is None and self.image is None:
      raise ValueError(f'scorer {self.name!r} has neither a map nor an '
                       'image score')
    if self.fit_split not in ('train', 'val'):
      raise ValueError(f'scorer {self.name!r}: fit_split must be train or '
                       f'val, not {self.fit_split!r}')
    object.__setattr__(self, 'needs', tuple(self.needs))
    object.__setattr__(self, 'fit_needs', tuple(self.fit_needs))
    object.__setattr__(self, 'label', self.label or self.name)

  @property
  def has_map(self) -> bool:
    return self.map is not None

  def compute(self, x, outputs, fitted, cfg) -> tuple[Any, Any]:
    """(map (N, H, W) or None, own image score (N,) or None)."""
    args = (x, outputs, fitted, cfg)
    if self.joint:
      return self.joint(*args)
    return (self.map(*args) if self.map else None,
            self.image(*args) if self.image else None)


def module_name(name: str) -> str:
  """The module of scorer `name`: a built-in one, or `name` itself when it
  holds a dot."""
  return name if '.' in name else f'{PACKAGE}.{name}'


def get(name: str) -> Scorer:
  """The scorer `name` (see the module docstring).

  Raises:
    KeyError: no module of that name.
    ValueError: the module defines no `SCORER`, or one of another name.
  """
  path = module_name(name)
  try:
    module = importlib.import_module(path)
  except ModuleNotFoundError as e:
    # Only the scorer's own module (or its package) missing means unknown;
    # a module that fails to import what it needs is its own error.
    if e.name and (path == e.name or path.startswith(e.name + '.')):
      raise KeyError(name) from None
    raise
  scorer = getattr(module, 'SCORER', None)
  if not isinstance(scorer, Scorer):
    raise ValueError(f'scorer module {path} defines no SCORER = Scorer(...)')
  short = path.rsplit('.', 1)[-1]
  if scorer.name != short:
    raise ValueError(f'scorer module {path}: SCORER.name is '
                     f'{scorer.name!r}, not its file name {short!r}')
  return scorer if name == short else dataclasses.replace(scorer, name=name)


def builtin_names() -> tuple[str, ...]:
  """The built-in scorers: the modules of aad/scoring/scorers/."""
  package = importlib.import_module(PACKAGE)
  return tuple(sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                      if not m.name.startswith('_')))


def resolve(names: Sequence[str], family) -> list[Scorer]:
  """The scorers `names` (config.eval.scorers; empty = the family's).

  Raises:
    ValueError: naming config.eval.scorers, for an unknown scorer or one
      that needs outputs the family does not have.
  """
  names = tuple(names) or family.scorers
  if len(set(names)) != len(names):
    raise ValueError(f'config.eval.scorers={names} lists a scorer twice.')

  def usable():
    return ', '.join(n for n in builtin_names()
                     if set(get(n).needs) <= set(family.output_names))

  out = []
  for name in names:
    try:
      scorer = get(name)
    except KeyError:
      raise ValueError(f'config.eval.scorers: unknown scorer {name!r}; '
                       f'model {family.name!r} can use {usable()} (scorer '
                       f'{name!r} would be the module {module_name(name)}).'
                       ) from None
    missing = set(scorer.needs) - set(family.output_names)
    if missing:
      raise ValueError(
          f'config.eval.scorers: {name!r} needs the output(s) '
          f'{", ".join(sorted(missing))}, which model {family.name!r} does '
          f'not have; it can use {usable()}.')
    out.append(scorer)
  return out


def needed_outputs(scorers: Sequence[Scorer]) -> frozenset[str]:
  """The family outputs the scorers read, plus the reconstruction (shown
  in every report)."""
  return frozenset({'reconstruction'}.union(*(s.needs for s in scorers)))


def make_maps_fn(scorers: Sequence[Scorer], cfg) -> Callable:
  """fn(fitted, (images uint8, outputs)) -> {'maps': {scorer: (N, H, W)}
  for the scorers with a map, 'image': {scorer: (N,)} for the scorers with
  an image score of their own}.
  """
  def fn(fitted, batch):
    images, outputs = batch
    x = ops.to_float(images)
    out = {'maps': {}, 'image': {}}
    for s in scorers:
      amap, own = s.compute(x, outputs, fitted.get(s.name), cfg)
      if amap is not None:
        out['maps'][s.name] = amap
      if own is not None:
        out['image'][s.name] = own
    return out
  return fn


def fit_outputs(scorers: Sequence[Scorer]) -> frozenset[str]:
  """The family outputs of the training images that `fit` needs."""
  return frozenset().union(*(s.fit_needs for s in scorers if s.fit))


def fit(scorers: Sequence[Scorer], train_images: np.ndarray,
        train_outputs: dict | None = None, cfg=None) -> dict:
  """{scorer: fitted arrays} for the scorers that learn from training data.

  Each is called as s.fit(train_images, {its fit_needs: train_outputs},
  cfg). train_outputs: the family's outputs of `train_images`, at least
  `fit_outputs(scorers)` (None when that is empty); cfg: the eval block.
  """
  out = {}
  for s in scorers:
    if not s.fit:
      continue
    if not set(s.fit_needs) <= set(train_outputs or {}):
      raise ValueError(f'scorer {s.name!r} is fitted on the outputs '
                       f'{", ".join(s.fit_needs)} of the training images')
    out[s.name] = s.fit(train_images,
                        {k: train_outputs[k] for k in s.fit_needs}, cfg)
  return out
