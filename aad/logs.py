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
