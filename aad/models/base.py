"""What a model family gives the rest of aad.

A family is one module aad/models/<name>.py with a `family(config,
axis_name)` function that returns a `Family`: how to initialise its
networks, its training stages, and one pure `outputs` function that turns
images into named arrays (a reconstruction, and whatever else the family
exposes). Training (aad/training/) runs the stages; scoring
(aad/experiment/testing.py) calls `outputs` and hands the arrays to the
configured scorers (aad/scoring/__init__.py). Nothing outside the family's
module knows its networks.

Variables are {net name: {'params': ..., 'batch_stats': ...}}: one entry
per network, so a stage can train some networks and freeze the others.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax

from aad.models import losses

Variables = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage of a family.

  Attributes:
    name: the checkpoint folder (<category>/checkpoints/<name>) and log tag.
    nets: the networks this stage trains; every other network is frozen at
      the best checkpoint of the earlier stage that trained it.
    num_steps: optimiser steps of the stage.
    forward: (variables, inputs, *, train, rngs) -> (prediction, {net:
      batch_stats} of the trained nets). `variables` holds every network
      up to this stage; with train=True the trained nets run BatchNorm on
      batch statistics and return the updated ones, the frozen ones run on
      their running averages.
    corrupt: (key, image) -> image, applied on device to each clean training
      image (aad.models.corruptions); the model learns to undo it.
    loss: (prediction, clean) -> scalar to minimise.
    val_metric: (prediction, clean) -> (N,) per-image values, higher is
      better; their mean on the validation images picks the best checkpoint.
    prepare: optional (variables, corrupted batch) -> the stage's inputs,
      run without gradient (e.g. a frozen network's reconstruction).
    crop: > 0 trains on one random crop x crop window per image of
      (inputs, clean), taken after `prepare` (for costly fully
      convolutional networks); 0 = whole images.
  """
  name: str
  nets: tuple[str, ...]
  num_steps: int
  forward: Callable[..., tuple[jax.Array, dict]]
  corrupt: Callable[[jax.Array, jax.Array], jax.Array]
  loss: Callable[[jax.Array, jax.Array], jax.Array] = losses.mse
  val_metric: Callable[[jax.Array, jax.Array], jax.Array] = losses.psnr
  prepare: Callable[[Variables, jax.Array], jax.Array] | None = None
  crop: int = 0


@dataclasses.dataclass(frozen=True)
class Family:
  """A model family, built from an experiment config.

  Attributes:
    name: config.model.name.
    init: (key, image shape (H, W, C)) -> variables of every network.
    stages: the training stages, in order.
    outputs: (variables from `prepare`, images (N, H, W, C) float in
      [0, 1], keys (N,), wanted) -> {name: array with leading axis N}.
      Pure and jit-able; one key per image (derived from the image's
      index, so results do not depend on batching); `wanted` (a frozenset
      of output names) lets a family skip work no scorer needs.
      'reconstruction' is always there.
    output_names: every name `outputs` can return.
    scorers: the scorers evaluated when config.eval.scorers is empty.
    size_multiple: image (and patch) height and width must be multiples
      of it.
    notes: (wanted outputs) -> lines for the report on how they were made.
    corruption: the config.corruption its training inputs are made with,
      by name, for the report's title; '' where the family makes its own
      (simulated anomalies, fixed noise).
    prepare: (variables, shape) -> the variables `outputs` takes (not
      Stage.prepare), from a checkpoint's (what `init` and training give):
      work that depends on the weights alone, done once per loaded
      checkpoint instead of in every call (e.g. fast-form conv kernels,
      aad/models/layers.py). `shape` is init's (H, W, C). Exact: outputs
      are those the plain variables would give. The default returns the
      variables as they are.
  """
  name: str
  init: Callable[[jax.Array, tuple[int, int, int]], Variables]
  stages: tuple[Stage, ...]
  outputs: Callable[..., dict[str, jax.Array]]
  output_names: tuple[str, ...]
  scorers: tuple[str, ...]
  size_multiple: int
  notes: Callable[[frozenset[str]], list[str]] = lambda wanted: []
  corruption: str = ''
  prepare: Callable[[Variables, tuple[int, int, int]], Variables] = (
      lambda variables, shape: variables)

  def __post_init__(self):
    trained = [n for s in self.stages for n in s.nets]
    if len(trained) != len(set(trained)):
      raise ValueError(f'{self.name}: a network is trained by two stages.')
    names = [s.name for s in self.stages]
    if len(names) != len(set(names)):
      raise ValueError(f'{self.name}: two stages share a name.')

  def check_size(self, height: int, width: int, what: str):
    """Raises ValueError unless (height, width) suits the networks."""
    m = self.size_multiple
    if height % m or width % m or height < m or width < m:
      raise ValueError(
          f'{what} {height}x{width} does not suit model {self.name!r}: '
          f'height and width must be positive multiples of {m}.')


def net_forward(name: str, net: nn.Module,
                eval_net: nn.Module) -> Callable[..., tuple[jax.Array, dict]]:
  """A Stage.forward that runs network `name` alone: `net` in training mode
  (BatchNorm on batch statistics, returned updated), `eval_net` (the same
  network without the device axis) on running averages otherwise."""
  def forward(variables, x, *, train, rngs=None):
    if not train:
      return eval_net.apply(variables[name], x), {}
    y, updates = net.apply(variables[name], x, train=True,
                           mutable=['batch_stats'], rngs=rngs or {})
    return y, {name: updates['batch_stats']}
  return forward
