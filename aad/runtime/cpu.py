"""How XLA:CPU runs: the device count and the convolution library.

Both are read from XLA_FLAGS when JAX initialises its backend, hence this
module imports no JAX and must run before the first JAX computation.

Device count. XLA:CPU shows one device that runs each op on all cores.
It can also be split into one device per core (pmap over the cores, ops on
the shared thread pool). On the 2-core machine of README "Performance",
with the Eigen convolutions below, one device trained batches of 16 images
at least as fast as two at every size measured (256x256x3: 26-27 against
25.5 img/s; 128x128x1: 83-95 against 80; 64x64x1: one was already faster
before), at equal inference speed. So one device is the default, and it
also avoids a hazard of several: a 128x128x3 run on 2 devices once aborted
with XLA:CPU's "Termination timeout for all reduce ... of 40 seconds
exceeded" (devices of one process share one thread pool, and a device
blocked in a collective holds a pool thread, so the other can starve).

`auto` splits only batches larger than those measured: one device per
core while each keeps at least MIN_PIXELS_PER_DEVICE image pixels of the
training batch (16 images of 256x256 stay on one device). It is a guess
for many-core machines, hence opt-in.

Precedence, first that applies:
1. XLA_FLAGS already has --xla_force_host_platform_device_count: kept.
2. $AAD_CPU_DEVICES=N (N >= 1), or 'auto' (the rule above, at most
   MAX_AUTO_DEVICES, a divisor of the batch).
3. config.num_devices > 0: that many devices.
4. One device.

Convolution library. jaxlib 0.10's XLA:CPU hands convolutions and dots to
YNNPACK. On the 2-core machine of README "Performance", Eigen's
convolutions ran AESc faster: deterministic inference at 256x256x3 80
against 67 img/s, MC-dropout scoring 3.7 against 2.8, training at 64x64x1
about 250 against 212; YNNPACK keeps the dots (im2col of the smallest
maps), where it was the faster. $AAD_CPU_CONVS=ynnpack keeps XLA's choice,
and so does an XLA_FLAGS that sets the library flag itself.
"""

import importlib.metadata
import os
import sys

from absl import logging

ENV = 'AAD_CPU_DEVICES'
_FLAG = '--xla_force_host_platform_device_count'
CONVS_ENV = 'AAD_CPU_CONVS'
_LIBRARY_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
_EIGEN_CONVS = f'{_LIBRARY_FLAG}=-individual_convolution'
# jaxlib versions whose XLA has that flag (XLA aborts on an unknown one).
_LIBRARY_FLAG_JAXLIB = ((0, 10), (0, 11))
# Measured on 2 cores only; more devices than this is a guess we do not make.
MAX_AUTO_DEVICES = 8
# 16 x 256 x 256: no smaller batch gained from a split over devices.
MIN_PIXELS_PER_DEVICE = 2**20


def auto_count(cores: int, batch_size: int, image_pixels: int) -> int:
  """Devices for `cores` CPUs and batches of `batch_size` images."""
  limit = max(1, min(cores, MAX_AUTO_DEVICES, batch_size))
  return max(d for d in range(1, limit + 1) if batch_size % d == 0 and (
      d == 1 or batch_size * image_pixels // d >= MIN_PIXELS_PER_DEVICE))


def choose(env: dict, num_devices: int, batch_size: int, image_pixels: int,
           cores: int) -> int | None:
  """The device count to force, or None to leave XLA_FLAGS alone.

  Args:
    env: the environment (os.environ).
    num_devices: config.num_devices (0 = no preference).
    batch_size: config.train.batch_size.
    image_pixels: height x width of the model's input.
    cores: CPUs available to this process.
  """
  if _FLAG in env.get('XLA_FLAGS', ''):
    return None
  value = env.get(ENV, '').strip().lower()
  if value == 'auto':
    return auto_count(cores, batch_size, image_pixels)
  if value:
    try:
      count = int(value)
    except ValueError:
      count = 0
    if count < 1:
      raise ValueError(f'{ENV}={env[ENV]!r}: use a positive integer or auto')
    return count
  if num_devices > 0:
    return num_devices
  return 1


def conv_flags(env: dict, jaxlib_version: str) -> str | None:
  """The XLA_FLAGS entry choosing the convolution library, or None.

  Args:
    env: the environment (os.environ).
    jaxlib_version: the installed jaxlib's version string.
  """
  choice = env.get(CONVS_ENV, 'eigen').strip().lower()
  if choice not in ('eigen', 'ynnpack'):
    raise ValueError(f'{CONVS_ENV}={env[CONVS_ENV]!r}: use eigen or ynnpack')
  if choice == 'ynnpack' or _LIBRARY_FLAG in env.get('XLA_FLAGS', ''):
    return None
  try:
    version = tuple(int(p) for p in jaxlib_version.split('.')[:2])
  except ValueError:
    return None
  return _EIGEN_CONVS if version in _LIBRARY_FLAG_JAXLIB else None


def _jax_started() -> bool:
  if 'jax' not in sys.modules:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()


def _add_flag(flag: str) -> None:
  flags = os.environ.get('XLA_FLAGS', '')
  os.environ['XLA_FLAGS'] = f'{flags} {flag}'.strip()


def configure_convolutions() -> str | None:
  """Sets XLA_FLAGS for the convolution library (see module doc).

  Returns:
    The flag added, or None if XLA_FLAGS was left as it was.
  """
  if _jax_started():
    logging.warning('JAX is already initialised; the convolution library '
                    'cannot change any more (call configure() earlier).')
    return None
  try:
    version = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return None
  flag = conv_flags(os.environ, version)
  if flag:
    _add_flag(flag)
  return flag


def configure(num_devices: int = 0, batch_size: int = 1,
              image_size: int = 256) -> int | None:
  """Sets XLA_FLAGS for the chosen CPU device count and the convolution
  library (see module doc).

  Args:
    num_devices: config.num_devices.
    batch_size: config.train.batch_size.
    image_size: config.dataset.image_size (square images).

  Returns:
    The forced device count, or None if XLA_FLAGS was left as it was.
  """
  if _jax_started():
    logging.warning('JAX is already initialised; the CPU device layout '
                    'cannot change any more (call configure() earlier).')
    return None
  configure_convolutions()
  cores = len(os.sched_getaffinity(0)) if hasattr(
      os, 'sched_getaffinity') else (os.cpu_count() or 1)
  count = choose(os.environ, num_devices, batch_size, image_size**2, cores)
  if count is not None:
    _add_flag(f'{_FLAG}={count}')
  return count
