"""Terminal logging: our progress lines, not the libraries' chatter."""

import logging as py_logging

from absl import logging

_QUIET = ('/orbax/', '/etils/', '/clu/', '/tensorflow_datasets/')


class _LibraryInfoFilter(py_logging.Filter):
  """Drops INFO records of chatty libraries; keeps their warnings."""

  def filter(self, record):
    if '/tensorflow_datasets/' in record.pathname and str(
        record.msg).startswith('Using custom data configuration'):
      return False  # every user folder is a custom tfds config, by design
    if record.levelno >= py_logging.WARNING:
      return True
    return not any(part in record.pathname for part in _QUIET)


def setup():
  """INFO for aad, WARNING and above for orbax, clu, etils and tfds."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())


def exit_on(errors, fn, *args, **kwargs):
  """Runs `fn`; a user-facing error of type `errors` (whose message names
  the file or key and the fix) becomes one logged line and exit status 1,
  without a traceback."""
  try:
    return fn(*args, **kwargs)
  except errors as e:
    logging.error('%s', e)
    raise SystemExit(1) from e
