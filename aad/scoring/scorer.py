"""Scorers: named anomaly maps computed from an input and a family's outputs.

A scorer is a name and a pure function (x, outputs, fitted, cfg) -> map:
x the input images (N, H, W, C) float in [0, 1], outputs the family's named
arrays (aad/models/base.py), fitted what the scorer learnt from the
training images (None if it learns nothing), cfg the config's `eval` block,
and the map (N, H, W), larger = more anomalous. It runs on device inside
the scoring call. `config.eval.scorers` lists the scorers to evaluate
(empty: the family's default list); evaluation, reports, thresholds and
`aad.predict` iterate that list, so a new scorer is one `register` call,
here or in the family module whose outputs it reads.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from aad.scoring import ops


@dataclasses.dataclass(frozen=True)
class Scorer:
  """A registered scorer; see `register` for the fields.

  map is None for a scorer without a local form (a global similarity
  measure): it has only its own image score, so evaluation gives it image
  metrics only and reports, thresholds and `aad.predict` skip its pixel
  parts. joint, when given, computes (map or None, image score) in one
  pass, for measures whose map and score share their work (XLA does not
  merge two calls of the same loop).
  """
  name: str
  map: Callable[..., jax.Array] | None
  needs: tuple[str, ...]
  label: str
  fit: Callable[[np.ndarray], Any] | None
  baseline: bool
  image: Callable[..., jax.Array] | None = None
  joint: Callable[..., tuple[Any, jax.Array]] | None = None
  fit_needs: tuple[str, ...] = ()
  # 'train': fitted on the training images; 'val': on the good validation
  # images, unseen in training (what the model gets wrong on new good
  # images, e.g. aad/normalised.py).
  fit_split: str = 'train'

  def __post_init__(self):
    if self.map is None and self.image is None:
      raise ValueError(f'scorer {self.name!r} has neither a map nor an '
                       'image score')
    if self.fit_split not in ('train', 'val'):
      raise ValueError(f'scorer {self.name!r}: fit_split must be train or '
                       f'val, not {self.fit_split!r}')

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


REGISTRY: dict[str, Scorer] = {}


def add(scorer: Scorer) -> Scorer:
  """Registers a `Scorer` built by hand (`register` is the usual way)."""
  if scorer.name in REGISTRY:
    raise ValueError(f'scorer {scorer.name!r} is registered twice')
  REGISTRY[scorer.name] = scorer
  return scorer


def register(name: str, *, needs: Sequence[str] = ('reconstruction',),
             label: str = '', fit: Callable[[np.ndarray], Any] | None = None,
             baseline: bool = False,
             image: Callable[..., jax.Array] | None = None,
             fit_needs: Sequence[str] = ()) -> Callable:
  """Decorator that registers a map function as scorer `name`.

  Args:
    name: the name used in config.eval.scorers, metrics and reports.
    needs: family outputs the map reads; a family without them cannot use
      the scorer.
    label: column title of the heat-map figures; default the name.
    fit: optional (train images, uint8 (N, H, W, C)) -> arrays, run once per
      category before scoring; its result is the map's `fitted` argument
      and is saved with the run, so `aad.predict` needs no training data.
      With `fit_needs` it is called as fit(train images, {output: the
      family's outputs of the train images}, cfg), cfg the eval block.
    baseline: a no-learning reference (kept out of the per-defect-type
      tables, which compare the models' scorers).
    image: optional (x, outputs, fitted, cfg) -> (N,) image score of the
      scorer's own (a measure whose standard image form is not a norm of
      its map), reported as the reduction 'own' beside the map's norms.
    fit_needs: family outputs `fit` reads from the training images (the
      caller computes them, e.g. aad.evaluate.family_outputs).
  """
  def wrap(fn):
    add(Scorer(name, fn, tuple(needs), label or name, fit, baseline, image,
               fit_needs=tuple(fit_needs)))
    return fn
  return wrap


def resolve(names: Sequence[str], family) -> list[Scorer]:
  """The scorers `names` (config.eval.scorers; empty = the family's).

  Raises:
    ValueError: naming config.eval.scorers, for an unknown scorer or one
      that needs outputs the family does not have.
  """
  names = tuple(names) or family.scorers
  if len(set(names)) != len(names):
    raise ValueError(f'config.eval.scorers={names} lists a scorer twice.')
  usable = sorted(n for n, s in REGISTRY.items()
                  if set(s.needs) <= set(family.output_names))
  out = []
  for name in names:
    if name not in REGISTRY:
      raise ValueError(f'config.eval.scorers: unknown scorer {name!r}; '
                       f'model {family.name!r} can use {", ".join(usable)}.')
    scorer = REGISTRY[name]
    missing = set(scorer.needs) - set(family.output_names)
    if missing:
      raise ValueError(
          f'config.eval.scorers: {name!r} needs the output(s) '
          f'{", ".join(sorted(missing))}, which model {family.name!r} does '
          f'not have; it can use {", ".join(usable)}.')
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

  train_outputs: the family's outputs of `train_images`, at least
  `fit_outputs(scorers)` (None when that is empty); cfg: the eval block,
  for the scorers fitted on outputs.
  """
  out = {}
  for s in scorers:
    if not s.fit:
      continue
    if s.fit_needs:
      if train_outputs is None or not set(s.fit_needs) <= set(train_outputs):
        raise ValueError(f'scorer {s.name!r} is fitted on the outputs '
                         f'{", ".join(s.fit_needs)} of the training images')
      out[s.name] = s.fit(train_images, {k: train_outputs[k]
                                         for k in s.fit_needs}, cfg)
    else:
      out[s.name] = s.fit(train_images)
  return out


# The method's own scorers (METHOD.md 4) and a no-learning baseline.

@register('residual')
def residual(x, outputs, fitted, cfg):
  """|x - reconstruction| summed over channels (METHOD.md 4.1)."""
  del fitted, cfg
  return ops.residual_map(x, outputs['reconstruction'])


@register('mc_variance', needs=('mc_variance',), label='MC variance')
def mc_variance(x, outputs, fitted, cfg):
  """Per-pixel variance of the MC-dropout passes (METHOD.md 4.2)."""
  del x, fitted, cfg
  return outputs['mc_variance']


def _mean_image(train_images: np.ndarray) -> np.ndarray:
  return train_images.astype(np.float32).mean(0) / 255.0


@register('baseline_mean', needs=(), fit=_mean_image, label='mean-image baseline',
          baseline=True)
def baseline_mean(x, outputs, fitted, cfg):
  """|x - mean training image| summed over channels: no learning at all,
  it shows how hard the data are."""
  del outputs, cfg
  return ops.over_channels(jnp.abs(x - fitted))
