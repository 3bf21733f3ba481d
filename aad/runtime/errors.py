"""The errors a user can fix, and turning file-system failures into them.

Every command line (aad.main, evaluate, predict, sweep, summary) ends a
`UserError` with its message as one line and exit status 1, without a
traceback (aad/runtime/logs.py); anything else is a bug and keeps its traceback.
A message names the file or config key and says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil


class UserError(Exception):
  """Something the user can fix; the message names it and the fix."""


class UsageError(UserError):
  """A wrong command line (flag, config override, config file): status 2."""


# File-system failures a user fixes (space, permissions, a path that is a
# file); other OSErrors are bugs.
_USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM,
                errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR,
                errno.ENOENT, errno.ENAMETOOLONG)
_DISK_FULL = ('No space left', 'RESOURCE_EXHAUSTED', 'Disk quota exceeded')


def free_bytes(path: str) -> int | None:
  """Free bytes on the file system of `path` (or of its nearest existing
  parent), None if none can be found."""
  path = os.path.abspath(path)
  while path and not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      return None
    path = parent
  try:
    return shutil.disk_usage(path).free
  except OSError:
    return None


def _disk_usage(path: str) -> int:
  # Blocks, not bytes: a checkpoint is many small files, each taking at
  # least one block of the file system.
  st = os.stat(path)
  return max(st.st_size, getattr(st, 'st_blocks', 0) * 512)


def size_of(path: str) -> int:
  """Disk space taken under `path` (a file or folder); 0 if absent."""
  if os.path.isfile(path):
    return _disk_usage(path)
  total = 0
  for root, dirs, files in os.walk(path):
    for name in files + dirs:
      try:
        total += _disk_usage(os.path.join(root, name))
      except OSError:
        pass
  return total


def _mb(n: int | None) -> str:
  if n is None:
    return '?'
  return f'{n / 2**20:.1f} MB' if n >= 2**20 else f'{n / 2**10:.0f} KB'


def disk_full(path: str, needed: int | None = None) -> UserError:
  """The one-line error for a full disk while writing `path`."""
  need = (f'; this write needs about {_mb(needed)}' if needed else '')
  return UserError(
      f'{path}: no space left on the device ({_mb(free_bytes(path))} free'
      f'{need}). Free some space (or use another --workdir / --output) and '
      'rerun the same command; everything saved before is intact.')


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` or an error it was raised from says the disk is full
  (orbax/tensorstore report it as RESOURCE_EXHAUSTED, not as an OSError)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC,
                                                      errno.EDQUOT):
      return True
    if any(s in str(error) for s in _DISK_FULL):
      return True
    error = error.__cause__ or error.__context__
  return False


def from_os_error(error: OSError) -> UserError | None:
  """The one-line UserError for a file-system failure a user can fix
  (full disk, permission, a file where a folder should be); None for
  others (bugs keep their traceback)."""
  if error.errno not in _USER_ERRNOS:
    return None
  path = error.filename or '?'
  if error.errno in (errno.ENOSPC, errno.EDQUOT):
    return disk_full(path)
  what = {
      errno.EACCES: 'permission denied; make it writable or choose another '
                    'path',
      errno.EPERM: 'operation not permitted; choose another path',
      errno.EROFS: 'the file system is read-only; choose another path',
      errno.ENOTDIR: 'a part of this path is a file, not a folder; choose '
                     'another path',
      errno.EEXIST: 'exists and is not a folder; choose another path',
      errno.EISDIR: 'is a folder where a file was expected',
      errno.ENOENT: 'no such file or folder',
      errno.ENAMETOOLONG: 'the name is too long',
  }[error.errno]
  return UserError(f'{path}: {what}.')


def writable_dir(path: str, flag: str) -> str:
  """Creates folder `path` if needed and checks that files can be written
  in it, before any work is done.

  Raises:
    UserError: naming `path` and `flag` (e.g. '--workdir').
  """
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f'{flag}={path}: is a file, not a folder; choose another '
                    'path.')
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f'.aad-write-test-{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    # Another process's start-up may have removed it already (debris).
    with contextlib.suppress(FileNotFoundError):
      os.remove(probe)
  except OSError as e:
    if is_disk_full(e):
      raise disk_full(path) from None
    reason = e.strerror or str(e)
    raise UserError(f'{flag}={path}: cannot be written ({reason}); choose '
                    'another path or fix its permissions.') from None
  return path
