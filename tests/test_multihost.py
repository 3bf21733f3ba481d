"""Multi-host for real: 2 processes x 2 CPU devices joined by jax.distributed.

launch/local.sh starts the processes with a coordinator on localhost; their
training must follow the same loss trajectory as 1 process x 4 devices (the
reference run of conftest.TinyLaunch, shared with the SLURM test).
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _failure(output: str) -> str:
  """What a failed launch printed, errors first: when one process dies, the
  other aborts with a stack dump and faulthandler's list of extension
  modules, which would push the first process's error out of a plain tail.
  """
  lines = [line for line in output.splitlines()
           if 'Extension modules:' not in line and '(total: ' not in line]
  logged = [line for line in lines
            if re.match(r'\[process \d+\] [EF]\d{4} ', line)]
  return '\n'.join(['logged errors:', *logged, '... the end:', *lines[-40:]])


def test_two_processes_of_two_devices_match_one_process_of_four(
    tmp_path, tiny_launch):
  multi = subprocess.run(
      ['launch/local.sh', '2', *tiny_launch.flags(tmp_path / '2x2')],
      cwd=REPO, env=tiny_launch.env(2), capture_output=True, text=True,
      timeout=600, check=False)
  assert multi.returncode == 0, _failure(multi.stdout + multi.stderr)
  single_workdir, _ = tiny_launch.reference

  out = multi.stdout
  for i in (0, 1):
    assert f'[process {i}] ' in out and (
        f'Process {i} of 2; 2 local and 4 global devices' in out)
  loss_2x2 = tiny_launch.losses(tmp_path / '2x2')
  loss_1x4 = tiny_launch.losses(single_workdir)
  print('loss 2 processes x 2 devices:', loss_2x2.tolist())
  print('loss 1 process x 4 devices:  ', loss_1x4.tolist())
  assert loss_1x4.shape == (3,) and np.all(np.diff(loss_1x4) != 0)
  np.testing.assert_allclose(loss_2x2, loss_1x4, rtol=1e-5)

  # Evaluation ran on all 4 devices, gathered on both processes; process 0
  # alone wrote the report.
  m2 = json.loads((tmp_path / '2x2' / 'metrics.json').read_text())
  m1 = json.loads((single_workdir / 'metrics.json').read_text())
  for key in ('mean/residual/l2/image_auroc', 'mean/residual/pixel_auroc',
              'mean/mc_variance/l2/image_auroc'):
    assert m2[key] == pytest.approx(m1[key], abs=1e-3)
  report_lines = [l for l in out.splitlines() if 'Report: ' in l]
  assert len(report_lines) == 1 and report_lines[0].startswith('[process 0]')


def test_local_launch_exits_with_the_failure_of_its_processes(tmp_path):
  usage = subprocess.run(['launch/local.sh', '--config=configs/test.py'],
                         cwd=REPO, capture_output=True, text=True,
                         check=False)
  assert usage.returncode == 2 and 'usage: ' in usage.stderr
  result = subprocess.run(
      ['launch/local.sh', '2', '--config=configs/test.py',
       f'--workdir={tmp_path}', '--config.train.num_step=3'],
      cwd=REPO, env=dict(os.environ, PYTHON=sys.executable), text=True,
      capture_output=True, timeout=300, check=False)
  # Both processes fail on the mistyped field, but the first to exit stops
  # the other, maybe before it prints: only the exit status and the message
  # of the process that failed first are guaranteed, whichever it was.
  assert result.returncode != 0
  assert (f'a process exited with status {result.returncode};'
          in result.stderr)
  assert re.search(r'^\[process [01]\] .*num_step', result.stdout,
                   re.MULTILINE), result.stdout[-3000:]
