"""The only module that knows about devices and hosts.

Step functions elsewhere only know the axis name `AXIS`. State and the
on-device dataset are replicated (`in_axes=None`, placed once with a
replicated sharding so no call re-transfers them); per-device work is told
apart by `lax.axis_index(AXIS)`.

Several hosts (processes) use JAX's own multi-host runtime: `initialize`
calls `jax.distributed.initialize()` when the launch asks for it, and the
pmaps then run over the devices of every process. Each process feeds its own
devices; `lax.axis_index(AXIS)` is the global device index, so N processes
of M devices draw the same global batch as one process of N*M devices.
"""

import math
import os
from typing import Any, Callable, TypeVar

from absl import logging
import jax
from jax import lax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

AXIS = 'batch'
T = TypeVar('T')


def _slurm_tasks() -> int:
  """Tasks of the enclosing SLURM job step (1 outside SLURM)."""
  return int(os.environ.get('SLURM_STEP_NUM_TASKS',
                            os.environ.get('SLURM_NTASKS', '1')))


def initialize(config: ml_collections.ConfigDict) -> None:
  """Starts the multi-host runtime if the launch environment says so.

  Must run before anything touches a device. 'auto' starts it for an
  explicit coordinator address (`config.coordinator_address` or
  $JAX_COORDINATOR_ADDRESS) or a SLURM job step of several tasks; 'on'
  always does (TPU VM pods: JAX finds the workers itself); 'off' never.
  JAX detects whatever the config leaves unset (SLURM, TPU, ...).

  Args:
    config: the `distributed` block of the experiment config.
  """
  mode = config.initialize
  if mode not in ('auto', 'on', 'off'):
    raise ValueError(f"config.distributed.initialize={mode!r}: use 'auto', "
                     "'on' or 'off'.")
  explicit = bool(config.coordinator_address or
                  os.environ.get('JAX_COORDINATOR_ADDRESS'))
  if mode == 'off' or (mode == 'auto' and not explicit and
                       _slurm_tasks() <= 1):
    return
  if jax.distributed.is_initialized():
    return  # e.g. a sweep running several configs in one process
  if explicit and (config.num_processes <= 0 or config.process_id < 0) and (
      _slurm_tasks() <= 1):
    raise ValueError(
        'config.distributed.coordinator_address is set, so also set '
        'config.distributed.num_processes (> 0) and '
        'config.distributed.process_id (0 .. num_processes - 1), as '
        'launch/local.sh does.')
  # CPU processes need a collectives backend to run cross-process psums;
  # the setting is ignored by GPU and TPU backends.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
      coordinator_address=config.coordinator_address or None,
      num_processes=config.num_processes if config.num_processes > 0 else None,
      process_id=config.process_id if config.process_id >= 0 else None)
  logging.info('Process %d of %d; %d local and %d global devices.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def is_primary() -> bool:
  """Whether this is process 0, the one that writes reports and summaries."""
  return jax.process_index() == 0


def primary_first(fn: Callable[[], T], name: str) -> T:
  """Runs `fn` on process 0, then on the others (e.g. filling a cache).

  Args:
    fn: what every process runs.
    name: a name for the barrier, the same on every process.

  Returns:
    What `fn` returned on this process.
  """
  if jax.process_count() == 1:
    return fn()
  if is_primary():
    out = fn()
    multihost_utils.sync_global_devices(name)
  else:
    multihost_utils.sync_global_devices(name)
    out = fn()
  return out


def from_primary(flag: bool) -> bool:
  """Process 0's `flag` on every process, so that all take the same branch.

  E.g. whether a file exists: on a shared file system, processes may see it
  at different times.
  """
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def select_devices(num_devices: int = 0) -> list[jax.Device]:
  """Devices to pmap over: each process's first `num_devices` (0 = all).

  With several processes the list holds every process's share, process 0's
  first, so a device's position in it is its global index.
  """
  local = jax.local_device_count()
  if num_devices < 0 or num_devices > local:
    raise ValueError(
        f'config.num_devices={num_devices} but {local} local devices '
        'are available (0 = all). On CPU, more can be made with '
        'XLA_FLAGS=--xla_force_host_platform_device_count=N.')
  per_process = {}
  for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
    per_process.setdefault(d.process_index, []).append(d)
  counts = {len(v) for v in per_process.values()}
  if len(counts) > 1:
    raise ValueError('Processes have different device counts '
                     f'({sorted(counts)}); give every process the same.')
  n = num_devices or local
  return [d for p in sorted(per_process) for d in per_process[p][:n]]


def _local_rows(devices) -> list[int]:
  """Positions in `devices` of this process's devices (contiguous)."""
  rows = [i for i, d in enumerate(devices)
          if d.process_index == jax.process_index()]
  assert rows == list(range(rows[0], rows[-1] + 1)), rows
  return rows


def host_slice(size: int) -> slice:
  """This process's equal share of `size` items (the remainder is dropped).

  What a process keeps of a training set too large to hold on every host.
  """
  share = size // jax.process_count()
  if share == 0:
    raise ValueError(f'{size} items cannot be shared by '
                     f'{jax.process_count()} processes.')
  start = jax.process_index() * share
  return slice(start, start + share)


def mesh(devices) -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,))


def replicate(tree: Any, devices) -> Any:
  """Places `tree` once on every device (what pmap's in_axes=None expects).

  With several processes, every process must pass the same values. Python
  scalars (e.g. a fresh TrainState's step) become strongly typed arrays:
  multi-process pmap outputs are, and a weak-typed input would make the
  next call with them compile again.
  """
  sharding = jax.sharding.NamedSharding(mesh(devices),
                                        jax.sharding.PartitionSpec())
  tree = jax.tree.map(
      lambda x: np.asarray(x) if isinstance(x, (bool, int, float)) else x,
      tree)
  return jax.device_put(tree, sharding)


def per_device(array: np.ndarray, devices) -> jax.Array:
  """Puts a copy of this process's `array` on each of its devices.

  Returns a global array of shape (len(devices), *array.shape) whose row i
  lives on devices[i]; as a `per_device` argument of `replicated_call`,
  each device sees its row. Processes may pass different values (e.g. their
  `host_slice` of a dataset) of the same shape.
  """
  array = np.asarray(array)
  local = [devices[i] for i in _local_rows(devices)]
  shards = [jax.device_put(array[None], d) for d in local]
  sharding = jax.sharding.NamedSharding(
      mesh(devices), jax.sharding.PartitionSpec(AXIS))
  return jax.make_array_from_single_device_arrays(
      (len(devices),) + array.shape, sharding, shards)


def reduce_axis(num_devices: int) -> str | None:
  """AXIS to average over, or None on one device.

  XLA:CPU runs a one-device `pmean` as a real all-reduce (a copy of every
  gradient and statistic), so single-device steps skip it.
  """
  return AXIS if num_devices > 1 else None


def device_index() -> jax.Array:
  """Global index of the current device along AXIS (inside a pmap)."""
  return lax.axis_index(AXIS)


def replicated_call(fn: Callable, devices,
                    per_device_args: tuple[int, ...] = ()) -> Callable:
  """pmaps `fn(*args)` whose outputs are equal on all devices.

  Each device runs `fn` on the same replicated inputs and uses
  `device_index()` to pick its share of the work; outputs must be made
  device-invariant inside `fn` (e.g. with `lax.pmean` over AXIS).

  Args:
    fn: the per-device function.
    devices: from `select_devices`.
    per_device_args: positions of arguments made by `per_device`, of which
      each device gets its own row; the others are replicated.
  """
  ids = jax.device_put(
      jnp.arange(len(devices)),
      jax.sharding.NamedSharding(mesh(devices),
                                 jax.sharding.PartitionSpec(AXIS)))
  mapped = {}

  def call(*args):
    if len(args) not in mapped:
      axes = tuple(0 if i in per_device_args else None
                   for i in range(len(args)))
      mapped[len(args)] = jax.pmap(
          lambda _, *a: fn(*a), axis_name=AXIS, in_axes=(0, *axes),
          out_axes=None, devices=devices)
    return mapped[len(args)](ids, *args)

  return call


# Outputs with at most this many values per row (image scores, not maps)
# are returned packed into one array per dtype: each returned array has a
# fixed cost on CPU whatever its size, and a scoring call with every
# scorer returns some twenty score vectors.
_PACK_MAX = 256


def _pack(out):
  """(packed small leaves per dtype, large leaves) of one device's outputs
  (leading axis: rows); `_unpack` undoes it given the same structure."""
  leaves = jax.tree.leaves(out)
  packed, large = {}, []
  for leaf in leaves:
    if math.prod(leaf.shape[1:]) <= _PACK_MAX:
      packed.setdefault(str(leaf.dtype), []).append(
          leaf.reshape(leaf.shape[0], -1))
    else:
      large.append(leaf)
  return ({k: jnp.concatenate(v, axis=1) for k, v in packed.items()},
          large)


def _unpack(out, packed, large):
  """The outputs' pytree from `_pack`'s arrays (host numpy, rows first);
  `out` gives the structure, shapes and dtypes (abstract values)."""
  leaves, treedef = jax.tree.flatten(out)
  offsets = {k: 0 for k in packed}
  large = iter(large)
  result = []
  for leaf in leaves:
    width = math.prod(leaf.shape[1:])
    if width <= _PACK_MAX:
      key = str(leaf.dtype)
      start = offsets[key]
      offsets[key] = start + width
      part = packed[key][:, start:start + width]
      result.append(part.reshape((part.shape[0],) + leaf.shape[1:]))
    else:
      result.append(next(large))
  return jax.tree.unflatten(treedef, result)


def _signature(batch, skip: int) -> tuple:
  """The batch's structure and its leaves' shapes past the first `skip`
  axes (devices, rows): what the outputs' shapes follow. (Not dtypes: the
  host's int64 arrays are traced as int32.)"""
  return (jax.tree.structure(batch),
          tuple(tuple(x.shape[skip:]) for x in jax.tree.leaves(batch)))


def batched_call(fn: Callable, devices) -> Callable:
  """Runs `fn(replicated, batch)` with `batch` split over devices.

  `batch` is a pytree of host arrays with a leading axis, the same on every
  process; it is padded to a multiple of the device count and split. Each
  process feeds its devices' rows; the outputs are gathered from every
  process, concatenated back and un-padded, so each process gets them all,
  as host numpy arrays. Small outputs travel packed (`_pack`).
  """
  n = len(devices)
  rows = _local_rows(devices)
  # The replicated argument carries one extra scalar leaf: with jax 0.10.2,
  # pmap given an in_axes=None argument without leaves ({} when no scorer
  # is fitted) left the device axis on the batch's first leaf.
  # The outputs' structure per batch signature, recorded while pmap traces
  # (a Python side effect at trace time; no second trace is needed).
  shapes = {}

  def traced(r, b):
    out = fn(r[0], b)
    shapes[_signature(b, 1)] = jax.tree.map(
        lambda y: jax.ShapeDtypeStruct(y.shape, y.dtype), out)
    return _pack(out)

  mapped = jax.pmap(traced, axis_name=AXIS, in_axes=(None, 0), out_axes=0,
                    devices=devices)

  def call(replicated, batch):
    size = jax.tree.leaves(batch)[0].shape[0]
    pad = -size % n
    def split(x):
      x = np.asarray(x)
      if pad:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
      return x.reshape((n, -1) + x.shape[1:])[rows[0]:rows[-1] + 1]
    args = ((replicated, np.zeros((), np.int32)), jax.tree.map(split, batch))
    out = mapped(*args)
    if jax.process_count() > 1:
      # pmap returns this process's rows; every process needs all of them.
      out = multihost_utils.process_allgather(out, tiled=True)
    # One transfer of every output, then reshaping and un-padding in numpy:
    # on device each leaf would cost two more dispatched ops, and every
    # caller wants the values on the host anyway.
    packed, large = jax.tree.map(
        lambda y: y.reshape((-1,) + y.shape[2:])[:size], jax.device_get(out))
    return _unpack(shapes[_signature(args[1], 2)], packed, large)

  return call
