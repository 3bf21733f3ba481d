"""One experiment end to end: per category, train the family's stages, score
the test split, write the report; then the summary over categories.

Training (aad/training/) knows nothing of evaluation
(aad/experiment/testing.py); this module is the only one that calls both.
"""

import os

from absl import logging
import jax
import ml_collections

from aad import data
from aad.runtime import errors
from aad import models
from aad.experiment import testing
from aad.runtime import parallel
from aad.experiment import recommend
from aad.training import loop
from aad.experiment import limits
from aad.experiment import validate
from aad.experiment import workdir as workdir_lib


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_eval_changes: bool = False):
  """Trains and evaluates one model per category; writes the report.

  Nothing is written before the config, the workdir and the first
  category's data are checked: a refused rerun leaves a finished workdir
  exactly as it was, and a refused new run leaves no folder behind.
  Process 0 holds the workdir's lock (`workdir_lib.writer`) throughout: a
  second run into the same workdir is refused, naming the first.

  Every process of a multi-host run calls this; process 0 writes the
  reports and returns the means over categories, the others return {}.
  """
  # config.auto (configs/folder.py): fields chosen from the training data,
  # before the checks and before config.json is written, so that evaluate
  # and predict reuse them.
  config = recommend.resolve(config)
  validate.check_config(config)
  devices = parallel.select_devices(config.num_devices)
  try:  # A bad model or scorer list fails before any work, in one line.
    # One family for training and scoring: the device axis is only that of
    # the training BatchNorm statistics; inference networks do not use it.
    family = models.create(config,
                           axis_name=parallel.reduce_axis(len(devices)))
    testing.configured_scorers(config, family)
  except ValueError as e:
    raise loop.TrainingError(str(e)) from None
  workdir_lib.check_rerun(config, workdir, allow_eval_changes)
  created = workdir_lib.missing_root(workdir)
  errors.writable_dir(workdir, '--workdir')
  with workdir_lib.writer(workdir, created):
    return _run(config, family, devices, workdir)


def _run(config: ml_collections.ConfigDict, family, devices,
         workdir: str) -> dict:
  """`train_and_evaluate` once the workdir is this run's to write."""
  if parallel.is_primary():
    workdir_lib.clean_debris(workdir)
  categories = data.config_categories(config.dataset)
  logging.info('Workdir %s; model %s; %d device(s) %s in %d process(es); '
               'categories %s', workdir, config.model.name, len(devices),
               devices[0].platform, jax.process_count(),
               ', '.join(categories))
  results = {}
  for index, category in enumerate(categories):
    # Process 0 prepares a missing dataset cache alone; the others then
    # read it instead of racing to write it.
    logging.info('%s: loading the dataset...', category)
    dataset = parallel.primary_first(
        lambda c=category: data.from_config(config.dataset, c),
        f'load {category}')
    logging.info('%s: %d training, %d validation and %d test images',
                 category, len(dataset.train), len(dataset.val),
                 len(dataset.test))
    # The training images are held on the host (and replicated on the
    # devices): now that their number is known, the memory check again.
    limits.check_memory(config, len(dataset.train.images))
    if index == 0 and parallel.is_primary():
      workdir_lib.write_config(config, workdir)
    cat_dir = os.path.join(workdir, category)
    variables, summary = loop.train_category(config, cat_dir, dataset,
                                              devices, family=family)
    results[category] = testing.evaluate_category(
        config, family, variables, dataset, cat_dir, devices, extra=summary)
  return testing.write_summary(config, family, workdir, results)
