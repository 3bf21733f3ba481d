"""Small orbax wrapper: train state + JSON metadata, latest and best kept.

Each checkpoint holds the train state (`state`) and a JSON item (`meta`) with
the run's config, the step and the host-side controller state (learning-rate
plateau logic), so a rerun in the same workdir resumes exactly and
`aad.evaluate` can rebuild the model without the original config file.
"""

import os
from typing import Any

import orbax.checkpoint as ocp

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

  def save(self, step: int, state: Any, meta: dict, val: float):
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave(meta)),
        metrics={BEST_METRIC: float(val)})

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """Restores (state, meta) of `step` into the structure of `target`."""
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
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
