"""The CPU device layout: precedence of the overrides and its effect on JAX."""

import os
import subprocess
import sys

import pytest

from aad.runtime import cpu as host_devices

from conftest import REPO


@pytest.mark.parametrize('cores,batch,size,expected', [
    (2, 16, 256, 1), (2, 16, 128, 1), (2, 16, 64, 1), (2, 32, 256, 2),
    (1, 64, 256, 1), (64, 64, 256, 4), (64, 256, 128, 4), (5, 48, 256, 3),
    (3, 56, 256, 2), (64, 16, 512, 4)])
def test_auto_is_one_device_per_core_with_enough_pixels_each(cores, batch,
                                                             size, expected):
  assert host_devices.auto_count(cores, batch, size * size) == expected


def test_precedence_flags_then_env_then_config_then_one():
  # Batches of 32 images of 256x256: `auto` splits them over the 2 cores.
  choose = lambda env, num_devices: host_devices.choose(
      env, num_devices, 32, 256 * 256, cores=2)
  forced = {'XLA_FLAGS': '--xla_force_host_platform_device_count=3',
            host_devices.ENV: '1'}
  assert choose(forced, 2) is None
  assert choose({'XLA_FLAGS': '--xla_cpu_enable_fast_math=false',
                 host_devices.ENV: '1'}, 2) == 1
  assert choose({host_devices.ENV: 'auto'}, 0) == 2
  assert choose({host_devices.ENV: 'auto'}, 1) == 2
  assert choose({host_devices.ENV: '3'}, 1) == 3
  assert choose({}, 2) == 2
  assert choose({}, 0) == 1  # one device unless asked (module docstring)
  with pytest.raises(ValueError, match='AAD_CPU_DEVICES'):
    choose({host_devices.ENV: 'two'}, 0)


def test_configure_sets_the_device_count_before_jax_starts():
  # A fresh interpreter: this one's JAX backend already exists.
  code = ('from aad.runtime import cpu\n'
          'print(cpu.configure(0, 16))\n'
          'import jax\n'
          'print(jax.device_count("cpu"))\n'
          'print(cpu.configure(0, 16))\n'
          'import os; print(os.environ["XLA_FLAGS"])\n')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update({host_devices.ENV: '3', 'JAX_PLATFORMS': 'cpu',
              'XLA_FLAGS': '--xla_cpu_enable_fast_math=false'})
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env,
                       capture_output=True, text=True, check=True).stdout
  assert out.split() == [
      '3', '3', 'None', '--xla_cpu_enable_fast_math=false',
      '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',
      '--xla_force_host_platform_device_count=3']


def test_eigen_convolutions_unless_asked_or_set_or_unknown_jaxlib():
  flag = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
  assert host_devices.conv_flags({}, '0.10.2') == flag
  assert host_devices.conv_flags({host_devices.CONVS_ENV: 'Eigen'},
                                 '0.11.0') == flag
  assert host_devices.conv_flags({host_devices.CONVS_ENV: 'ynnpack'},
                                 '0.10.2') is None
  # The user's own setting of the flag is kept.
  assert host_devices.conv_flags(
      {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type='},
      '0.10.2') is None
  # XLA aborts on an unknown flag: versions not known to have it get none.
  assert host_devices.conv_flags({}, '0.9.0') is None
  assert host_devices.conv_flags({}, '0.12.0') is None
  assert host_devices.conv_flags({}, 'dev') is None
  with pytest.raises(ValueError, match='AAD_CPU_CONVS'):
    host_devices.conv_flags({host_devices.CONVS_ENV: 'mkl'}, '0.10.2')
