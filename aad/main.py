"""Command line entry point: one config file per experiment.

  python -m aad.main --config=configs/aesc_stain.py [--workdir=DIR]
      [--config.train.num_steps=500 ...]
  aad fit --config=aesc_stain ...      (the same, installed; aad/cli.py)

--config is a file, or the name of a shipped config (aad/configs/).
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from aad import configs  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file(
    'config', configs.path('aesc_stain'), 'Experiment config file, or the '
    'name of a shipped config (aad configs lists them).', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Output directory (checkpoints, reports); rerunning '
    'with the same one resumes. Default: runs/<config.name>.')
_ALLOW_EVAL_CHANGES = flags.DEFINE_bool(
    'allow_eval_changes', False, 'Rerun a workdir with other eval.* values: '
    're-evaluates its trained model with them (changes of what training '
    'depends on are always refused).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if config.sweep:
    raise app.UsageError(
        f'{config_flags.get_config_filename(flags.FLAGS["config"])} '
        'declares a sweep: run it with python -m aad.sweep (every run, or '
        '--point=K for one).')
  from aad import fitting  # pylint: disable=g-import-not-at-top
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.setup()
  fitting.train_and_evaluate(
      config, _WORKDIR.value or os.path.join('runs', config.name),
      allow_eval_changes=_ALLOW_EVAL_CHANGES.value)


if __name__ == '__main__':
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.run(main)
