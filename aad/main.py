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
  from aad.runtime import cpu  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  # Before anything imports JAX: the CPU device count is fixed at start-up.
  cpu.configure(config.num_devices, config.train.batch_size,
                         config.dataset.image_size)
  import jax  # pylint: disable=g-import-not-at-top
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  from aad.runtime import parallel  # pylint: disable=g-import-not-at-top
  from aad.experiment import run as pipeline  # pylint: disable=g-import-not-at-top
  logs.setup()
  workdir = _WORKDIR.value or os.path.join('runs', config.name)
  if config.sweep:
    raise app.UsageError(
        f'{config_flags.get_config_filename(flags.FLAGS["config"])} '
        'declares a sweep: run it with python -m aad.sweep (every run, or '
        '--point=K for one).')
  from aad.experiment import validate  # pylint: disable=g-import-not-at-top
  # Before any work, in one line; the memory check needs the devices, so
  # it runs after jax.distributed starts (experiment.run checks again).
  validate.check_config(config, memory=False)
  parallel.initialize(config.distributed)
  if not jax.config.jax_compilation_cache_dir:
    # Every category compiles the same step functions; with the cache
    # only the first does, and reruns reuse them.
    jax.config.update('jax_compilation_cache_dir',
                      os.path.join(workdir, 'xla_cache'))
  pipeline.train_and_evaluate(config, workdir,
                              allow_eval_changes=_ALLOW_EVAL_CHANGES.value)


if __name__ == '__main__':
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.run(main)
