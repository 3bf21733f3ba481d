"""The only module that knows about devices: pmap wrappers and placement.

Step functions elsewhere only know the axis name `AXIS`. State and the
on-device dataset are replicated (`in_axes=None`, placed once with a
replicated sharding so no call re-transfers them); per-device work is told
apart by `lax.axis_index(AXIS)`.
"""

from typing import Any, Callable

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

AXIS = 'batch'


def select_devices(num_devices: int = 0) -> list[jax.Device]:
  """Local devices to use; 0 means all of them."""
  devices = jax.local_devices()
  if num_devices < 0 or num_devices > len(devices):
    raise ValueError(
        f'config.num_devices={num_devices} but {len(devices)} local devices '
        'are available (0 = all). On CPU, more can be made with '
        'XLA_FLAGS=--xla_force_host_platform_device_count=N.')
  return devices[:num_devices] if num_devices else devices


def mesh(devices) -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,))


def replicate(tree: Any, devices) -> Any:
  """Places `tree` once on every device (what pmap's in_axes=None expects)."""
  sharding = jax.sharding.NamedSharding(mesh(devices),
                                        jax.sharding.PartitionSpec())
  return jax.device_put(tree, sharding)


def reduce_axis(num_devices: int) -> str | None:
  """AXIS to average over, or None on one device.

  XLA:CPU runs a one-device `pmean` as a real all-reduce (a copy of every
  gradient and statistic), so single-device steps skip it.
  """
  return AXIS if num_devices > 1 else None


def device_index() -> jax.Array:
  """Index of the current device along AXIS (inside a pmapped function)."""
  return lax.axis_index(AXIS)


def replicated_call(fn: Callable, devices) -> Callable:
  """pmaps `fn(*replicated_args)` whose outputs are equal on all devices.

  Each device runs `fn` on the same replicated inputs and uses
  `device_index()` to pick its share of the work; outputs must be made
  device-invariant inside `fn` (e.g. with `lax.pmean` over AXIS).
  """
  mapped = jax.pmap(lambda _, args: fn(*args), axis_name=AXIS,
                    in_axes=(0, None), out_axes=None, devices=devices)
  ids = jax.device_put(
      jnp.arange(len(devices)),
      jax.sharding.NamedSharding(mesh(devices),
                                 jax.sharding.PartitionSpec(AXIS)))
  return lambda *args: mapped(ids, args)


def batched_call(fn: Callable, devices) -> Callable:
  """Runs `fn(replicated, batch)` with `batch` split over devices.

  `batch` is a pytree of host arrays with a leading axis; it is padded to a
  multiple of the device count, split, and the outputs are concatenated
  back and un-padded.
  """
  n = len(devices)
  mapped = jax.pmap(fn, axis_name=AXIS, in_axes=(None, 0), out_axes=0,
                    devices=devices)

  def call(replicated, batch):
    size = jax.tree.leaves(batch)[0].shape[0]
    pad = -size % n
    def split(x):
      x = np.asarray(x)
      if pad:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
      return x.reshape((n, -1) + x.shape[1:])
    out = mapped(replicated, jax.tree.map(split, batch))
    return jax.tree.map(
        lambda y: y.reshape((-1,) + y.shape[2:])[:size], out)

  return call
