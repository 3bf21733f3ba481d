"""Terminal logging: our progress lines, not the libraries' chatter; and
the one error exit of every command line (`run`, `exit_on`)."""

import logging as py_logging
import os
import re
import sys
import time
import traceback

from absl import app
from absl import flags
from absl import logging

from aad.runtime import errors

_QUIET = ('/orbax/', '/etils/', '/clu/', '/tensorflow_datasets/')


class _LibraryInfoFilter(py_logging.Filter):
  """Drops INFO records of chatty libraries; keeps their warnings."""

  def filter(self, record):
    if '/tensorflow_datasets/' in record.pathname and str(
        record.msg).startswith('Using custom data configuration'):
      return False  # every user folder is a custom tfds config, by design
    if any(part in record.pathname for part in _QUIET) and (
        errors.is_disk_full(Exception(record.getMessage())) or (
            record.exc_info and errors.is_disk_full(record.exc_info[1]))):
      return False  # orbax's threads' echo of the error we report once
    if record.levelno >= py_logging.WARNING:
      return True
    return not any(part in record.pathname for part in _QUIET)


def setup():
  """INFO for aad, WARNING and above for orbax, clu, etils and tfds."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())


def start(argv) -> None:
  """The start of a command line that scores a trained run (aad.evaluate,
  aad.predict, aad.export): no positional arguments, the CPU convolution
  choice made before JAX starts, then the terminal logging."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from aad.runtime import cpu  # pylint: disable=g-import-not-at-top
  cpu.configure_convolutions()
  setup()


def _debug() -> bool:
  """AAD_DEBUG=1 keeps the traceback of user errors (for bug reports)."""
  return os.environ.get('AAD_DEBUG', '') not in ('', '0')


def _one_line(text: str) -> str:
  return ' '.join(str(text).split())


def user_error(error: BaseException) -> errors.UserError | None:
  """The UserError `error` is, or stands for (a full disk, an unwritable
  path); None for a bug."""
  if isinstance(error, errors.UserError):
    return error
  if errors.is_disk_full(error):
    path = getattr(error, 'filename', None)
    if not path:
      found = re.search(r'local file "([^"]+)"', str(error)) or re.search(
          r'local file "([^"]+)"', str(error.__cause__ or ''))
      path = found.group(1) if found else '?'
    return errors.disk_full(path)
  if isinstance(error, OSError):
    return errors.from_os_error(error)
  return None


def exit_on(fn, *args, **kwargs):
  """Runs `fn`; a user-facing error (`aad.runtime.errors.UserError`, whose message
  names the file or key and the fix; a full disk; an unwritable path; an
  absl UsageError) becomes one logged line and SystemExit with status 1
  (2 for usage), without a traceback (unless AAD_DEBUG=1). Anything else
  is a bug and keeps its traceback."""
  try:
    return fn(*args, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    error = user_error(e)
    if isinstance(e, app.UsageError):
      error = errors.UsageError(str(e))
    if error is None or _debug():
      raise
    logging.error('%s', _one_line(str(error)))
    # The error rides along for callers in Python (tests); the command
    # line prints nothing more.
    raise SystemExit(2 if isinstance(error, errors.UsageError) else 1
                     ) from error


def _config_override(argv, message: str) -> str:
  """The --config.x.y argument a config error is about, if one names it."""
  names = re.findall(r"['\"](\w+)['\"]", message)[:1]  # the missing one
  for arg in argv[1:]:
    path = arg.split('=', 1)[0]
    if path.startswith('--config.') and any(
        n in path.split('.')[1:] for n in names):
      return path
  return ''


def _config_path(argv) -> str | None:
  """The --config file named on the command line, if any."""
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _library(path: str) -> bool:
  return (path.startswith('<') or 'site-packages' in path or
          'dist-packages' in path or
          path.startswith(os.path.dirname(os.__file__)))


def config_load_error(error: BaseException, path: str) -> str:
  """One line for `error`, raised while loading config file `path`: the
  file and line where it arose (the config file, or a file it imports)
  and the error's message."""
  if isinstance(error, SyntaxError) and error.filename:
    where, line = error.filename, error.lineno
    what = f'{type(error).__name__}: {error.msg}'
  else:
    # The deepest frame outside the libraries: in the config file, or in
    # a module it imports (configs/default.py).
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not _library(f.filename)]
    where, line = ((frames[-1].filename, frames[-1].lineno) if frames
                   else (path, None))
    what = f'{type(error).__name__}: {error}'
  at = os.path.relpath(where)
  at = where if at.startswith('..') else at
  at += f' line {line}' if line else ''
  return _one_line(f'--config={path}: cannot load it: {at}: {what}. Fix '
                   'the file (AAD_DEBUG=1 shows the traceback).')


def shipped_config_names(argv) -> list[str]:
  """`argv` with a bare --config name (`--config=aesc_stain`, no folder,
  no .py) replaced by the shipped config's file (aad/configs/)."""
  from aad import configs  # pylint: disable=g-import-not-at-top
  argv = list(argv)
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith('--config='):
      argv[i] = '--config=' + configs.resolve(arg.split('=', 1)[1])
    elif arg == '--config' and i + 1 < len(argv):
      argv[i + 1] = configs.resolve(argv[i + 1])
  return argv


def parse_flags(argv):
  """absl's flag parsing, with every failure one line and exit status 2:
  an unknown flag, a bad value, a missing config file, a mistyped config
  field (absl would print a 50-line traceback for the last two). A bare
  --config name is a shipped config (`shipped_config_names`)."""
  argv = shipped_config_names(argv)
  path = _config_path(argv)
  from aad import configs  # pylint: disable=g-import-not-at-top
  if path and configs.is_bare(path) and not os.path.exists(path):
    sys.stderr.write(f'{os.path.basename(argv[0])}: --config={path}: no such '
                     'file and no shipped config of that name (shipped: '
                     f'{", ".join(configs.names())}).\n')
    sys.exit(2)
  try:
    rest = flags.FLAGS(argv)
    for name in ('config',):  # a config file that failed to load
      if name in flags.FLAGS:
        value = flags.FLAGS[name].value
        if value is not None:
          getattr(value, 'keys', None)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError,
          OSError) as e:
    if _debug():
      raise
    raw = _one_line(str(e.args[0] if e.args else e).replace(
        "\\'", "'").replace('\\n', ' '))
    override = _config_override(argv, raw)
    message = raw
    if 'earlier failure to load' in message:
      found = re.search(r'Attempted \[Relative path\]: (\S+) (.*)', message)
      message = (f'--config={found.group(1)}: cannot load it ({found.group(2)})'
                 if found else message)
    elif override:
      hint = (raw.split(' ', 1)[1] if ' ' in raw else '').rstrip("'")
      message = (f'{override}: no such config field. {hint} '
                 'configs/default.py lists the fields.')
    sys.stderr.write(f'{os.path.basename(argv[0])}: {message} (--helpshort '
                     'lists the flags)\n')
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except
    # A config file that fails to import (a syntax error) or whose
    # get_config raises (a NameError): its file, line and message.
    path = _config_path(argv)
    if path is None or _debug():
      raise
    sys.stderr.write(f'{os.path.basename(argv[0])}: '
                     f'{config_load_error(e, path)}\n')
    sys.exit(2)
  return rest


def run(main):
  """app.run(main) for every command line: a bad flag or config override,
  a usage error of `main` or a user error (aad.runtime.errors.UserError, a full
  disk, an unwritable path) is one line, status 2 for usage, 1 else."""
  app.run(lambda argv: _exit_now(exit_on, main, argv),
          flags_parser=parse_flags)


def _exit_now(fn, *args):
  """Runs `fn`; a SystemExit leaves at once (os._exit).

  After a failed checkpoint save, orbax's background threads would
  otherwise print dozens of tracebacks while the interpreter shuts down.
  Every file is written atomically, so what was saved stays complete.
  """
  try:
    return fn(*args)
  except (SystemExit, KeyboardInterrupt) as e:
    if isinstance(e, KeyboardInterrupt):
      logging.error('Interrupted. What was saved is kept; rerun the same '
                    'command to resume.')
      status = 130
    else:
      status = e.code if isinstance(e.code, int) else 1
    py_logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access


def format_eta(seconds: float) -> str:
  """'3m07s': a duration for the progress lines."""
  seconds = int(max(seconds, 0))
  return f'{seconds // 60}m{seconds % 60:02d}s'


class Counter:
  """Progress lines of a counted phase, throttled: one when `every_s`
  seconds have passed since the last, and always the last one (done ==
  total), each with the count, the rate and the ETA:

    scored 1200/8820 tiles of 60 images (845.0 tiles/s, ETA 0m09s)

  Args:
    verb: what was done ('scored').
    total: how many in all.
    unit: what is counted ('images', 'tiles').
    of: appended after the unit (' of 60 images'); '' for none.
    every_s: the least time between two lines but the last.
    clock: time.monotonic; a fake clock in the tests.
    quick_silent: no line at all for a phase that ends within `every_s`
      (for steps that are mostly quick, such as reading a dataset).
  """

  def __init__(self, verb: str, total: int, unit: str = 'images',
               of: str = '', every_s: float = 5.0, clock=None,
               quick_silent: bool = False):
    self.verb, self.total, self.unit, self.of = verb, total, unit, of
    self.every_s, self.quick_silent = every_s, quick_silent
    self.clock = clock or time.monotonic
    self.t0 = self.last = self.clock()

  def update(self, done: int) -> None:
    now = self.clock()
    if (done < self.total or self.quick_silent and self.last == self.t0
       ) and now - self.last < self.every_s:
      return
    self.last = now
    rate = done / max(now - self.t0, 1e-9)
    eta = (self.total - done) / max(rate, 1e-9)
    logging.info('%s %d/%d %s%s (%.1f %s/s, ETA %s)', self.verb, done,
                 self.total, self.unit, self.of, rate,
                 self.unit.split()[-1], format_eta(eta))


# The progress lines name the file that counts (testing.py:87), not this one.
logging.ABSLLogger.register_frame_to_skip(__file__, 'update')
