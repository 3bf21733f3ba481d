"""Writing files atomically: JSON, text, bytes, or any writer (`write_with`).

Every file is written to a temporary name in the target directory and moved
into place with `os.replace`, so an interrupted run leaves either the old
file or the new one, never half of one. A full disk becomes one
`errors.disk_full` line naming the file; the old file, if any, is kept.
"""

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from aad.runtime import errors


def write_with(path: str, write: Callable[[Any], None], mode: str = 'w'):
  """Calls `write(file)` on a temp file, then renames it onto `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
      dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are for sharing.
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if errors.is_disk_full(e):  # the old file, if any, is untouched
      raise errors.disk_full(path) from e
    raise


def jsonable(obj):
  """Plain Python types; NaN/inf become null to keep the JSON strict."""
  if isinstance(obj, Mapping):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, np.ndarray):
    obj = obj.tolist()
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def write_json(path: str, obj: Any):
  """Writes `obj` as JSON with sorted keys, atomically (numpy values ok)."""
  text = json.dumps(jsonable(obj), sort_keys=True, indent=2, allow_nan=False)
  write_with(path, lambda f: f.write(text + '\n'))


def write_text(path: str, text: str):
  """Writes `text` to `path` atomically."""
  write_with(path, lambda f: f.write(text))


def write_bytes(path: str, data: bytes):
  """Writes `data` to `path` atomically."""
  write_with(path, lambda f: f.write(data), 'wb')
