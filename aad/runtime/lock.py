"""One writer per workdir: an advisory lock file that names its holder.

`aad.main` (and each run of `aad.sweep`) holds `<workdir>/.lock` from
before its first write until it ends. The lock is `fcntl.flock` on that
file, so the kernel releases it when the process ends in any way (kill -9
included): a lock file left by a dead process is taken over without any
check of PIDs. The file holds JSON {host, pid, started} of the holder, for
the message that refuses a second run. Readers (aad.evaluate, aad.predict,
aad.export) take no lock.

Only stdlib: no JAX, so a test can hold a lock from a bare subprocess.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time

from aad.runtime import errors

LOCK_FILE = '.lock'


class Locked(errors.UserError):
  """Another process holds the workdir's lock."""


def _holder(fd: int) -> dict:
  """The holder's {host, pid, started}, {} while it has not written it."""
  try:
    text = os.pread(fd, 4096, 0).decode('utf-8', 'replace')
    holder = json.loads(text)
    return holder if isinstance(holder, dict) else {}
  except (OSError, ValueError):
    return {}


def _describe(holder: dict) -> str:
  if not holder:
    return 'another process (it has not written its host and PID yet)'
  return (f'PID {holder.get("pid", "?")} on host {holder.get("host", "?")}'
          + (f', running since {holder["started"]}' if holder.get('started')
             else ''))


def _acquire(path: str) -> int:
  """An open file descriptor of `path`, flock-ed by this process.

  Raises:
    Locked: naming the holder, if another process holds it.
  """
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      # The holder writes its name right after taking the lock: wait a
      # moment for it rather than name no one.
      holder = _holder(fd)
      for _ in range(20):
        if holder:
          break
        time.sleep(0.05)
        holder = _holder(fd)
      os.close(fd)
      workdir = os.path.dirname(path)
      raise Locked(
          f'--workdir={workdir} is in use by another run of aad.main '
          f'({_describe(holder)}; lock file {path}). Wait for it to end, '
          'stop it, or choose another --workdir.') from None
    except BaseException:
      os.close(fd)
      raise
    # The previous holder removes the file when it ends: if this is no
    # longer the file at `path`, the lock was taken on a removed file.
    try:
      same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if same:
      return fd
    os.close(fd)


def _write_holder(fd: int):
  holder = {'host': socket.gethostname(), 'pid': os.getpid(),
            'started': time.strftime('%Y-%m-%d %H:%M:%S %z')}
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
  except OSError:
    pass  # e.g. a full disk: the lock holds all the same, unnamed


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds `workdir`'s lock (the folder must exist) while the block runs.

  A lock file left by a process that died is taken over. The file is
  removed when the block ends.

  Raises:
    Locked: naming the holder (host and PID), if another process holds it.
  """
  path = os.path.join(workdir, LOCK_FILE)
  fd = _acquire(path)
  try:
    _write_holder(fd)
    yield
  finally:
    # Removed while still held, so that no other process takes a lock on
    # the file after this one let it go and before it is gone.
    with contextlib.suppress(OSError):
      os.remove(path)
    os.close(fd)
