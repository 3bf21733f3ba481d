"""A command line killed at a chosen moment, for the resume tests."""

import pathlib
import signal
import subprocess
import time
from typing import Callable

REPO = pathlib.Path(__file__).resolve().parents[1]


def saved_steps(directory: pathlib.Path) -> list[int]:
  """The steps of the orbax checkpoints in `directory` (none if absent)."""
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def kill_when(cmd: list[str], ready: Callable[[], bool],
              timeout: float = 240):
  """Runs `cmd` from the repository root and SIGKILLs it once `ready()`.

  Raises:
    AssertionError: if the command ended (or `timeout` s passed) first.
  """
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  try:
    while time.time() < deadline and proc.poll() is None and not ready():
      time.sleep(0.2)
    assert proc.poll() is None, 'the run ended before it could be killed'
    assert ready(), f'not ready to be killed after {timeout} s'
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
