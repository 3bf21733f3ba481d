"""Small orbax wrapper: train state + JSON metadata, latest and best kept.

Each checkpoint holds the train state (`state`) and a JSON item (`meta`) with
the run's config, the step and the host-side controller state (learning-rate
plateau logic), so a rerun in the same workdir resumes exactly and
`aad.evaluate` can rebuild the model without the original config file.
"""

import contextlib
import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from aad.runtime import errors

BEST_METRIC = 'val'  # the stage's validation metric, higher is better


class Checkpoints:
  """Keeps the latest checkpoint (for resuming) and the best (for scoring)."""

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(1),
        ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda m: m[BEST_METRIC], n=1,
            keep_checkpoints_without_metrics=False),
    ])
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=lambda m: m[BEST_METRIC], best_mode='max',
            create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def _step_dir(self, step: int) -> str:
    """The folder orbax writes step `step` to (the manager's default
    naming: the bare step number)."""
    return os.path.join(self.directory, str(step))

  @contextlib.contextmanager
  def _disk_errors(self):
    """A full disk (orbax reports it from its writer threads, as
    RESOURCE_EXHAUSTED) becomes one UserError naming the folder and the
    space a checkpoint needs; the complete checkpoints stay as they were."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      if not errors.is_disk_full(e):
        raise
      step = self._manager.latest_step()
      needed = (errors.size_of(self._step_dir(step))
                if step is not None else None)
      raise errors.disk_full(self.directory, needed) from e

  def _check_space(self, state: Any):
    """Refuses to start a save the disk cannot hold: orbax's writer
    threads fail noisily half-way, and a full disk is common on clusters."""
    # orbax's save waits for the previous one anyway; waiting first lets
    # its size be measured.
    self.wait()
    last = self._manager.latest_step()
    size = max(errors.size_of(self._step_dir(last))
               if last is not None else 0,
               sum(getattr(x, 'nbytes', 0) for x in jax.tree.leaves(state)))
    needed = int(1.25 * size) + 2**16  # orbax's metadata and manifests
    free = errors.free_bytes(self.directory)
    if free is not None and free < needed:
      raise errors.disk_full(self.directory, needed)

  def save(self, step: int, state: Any, meta: dict, val: float):
    self._check_space(state)
    with self._disk_errors():
      self._manager.save(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  meta=ocp.args.JsonSave(meta)),
          metrics={BEST_METRIC: float(val)})

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """Restores (state, meta) of `step` into the structure of `target`.

    Raises ValueError, before reading any array, when an array of the
    checkpoint has another shape than the same array of `target` (a
    config edited or copied from another run). Left to orbax, that
    failure came from one of its concurrent reads, and the others' errors
    were logged later, with tracebacks, as "Task exception was never
    retrieved" when Python collected them.
    """
    # The item's own metadata: a manager that has not saved or restored
    # in this process has no handler for 'state', and its item_metadata
    # gives None.
    stored = _shapes(ocp.StandardCheckpointHandler().metadata(
        pathlib.Path(self._step_dir(step)) / 'state'))
    wanted = _shapes(target)
    wrong = sorted(k for k in stored.keys() & wanted.keys()
                   if stored[k] != wanted[k])
    if wrong:
      raise ValueError(
          f'{self.directory}: step {step} stores {len(wrong)} arrays with '
          f'another shape than the model, e.g. {wrong[0]}: '
          f'{stored[wrong[0]]} against {wanted[wrong[0]]}')
    out = self._manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                meta=ocp.args.JsonRestore()))
    return out.state, out.meta

  def restore_meta(self, step: int) -> dict:
    out = self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return out.meta

  def wait(self):
    with self._disk_errors():
      self._manager.wait_until_finished()

  def close(self):
    with self._disk_errors():
      self._manager.wait_until_finished()
    self._manager.close()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{'params/enc/kernel': shape} of a pytree of arrays or of orbax's
  array metadata, keyed alike for both: dataclass fields, dict keys and
  sequence indices all become path parts."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator='/'):
              tuple(leaf.shape)
          for path, leaf in leaves if hasattr(leaf, 'shape')}
