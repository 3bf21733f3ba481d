"""Scores a trained run's test split again: metrics, thresholds, reports.

  python -m aad.evaluate --workdir=W [--output=DIR] [--dataset=...]
      [--path=DIR] [--categories=a,b] [--model_category=c]
      [--allow_unfinished]
"""

import os

# Before TensorFlow (clu, tfds) is imported: its C++ start-up chatter.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from aad.runtime import logs  # pylint: disable=g-import-not-at-top


def main(argv):
  """python -m aad.evaluate --workdir=W [--output=DIR] [--dataset=...]."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from aad.experiment import testing  # pylint: disable=g-import-not-at-top
  logs.start(argv)
  f = flags.FLAGS
  testing.evaluate_workdir(f.workdir, output=f.output, dataset=f.dataset,
                           path=f.path, categories=f.categories or (),
                           model_category=f.model_category,
                           num_devices=f.num_devices,
                           allow_unfinished=f.allow_unfinished)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'A training run (python -m aad.main '
                      '--workdir=...).', required=True)
  flags.DEFINE_string('output', '', 'Report folder; default: the workdir '
                      '(or workdir/eval/<name> for another dataset).')
  flags.DEFINE_string('dataset', '', 'Score this dataset instead '
                      '(textures, mvtec_ad, folder).')
  flags.DEFINE_string('path', '', 'Score this MVTec-layout folder instead '
                      '(implies --dataset=folder unless given).')
  flags.DEFINE_list('categories', [], 'Categories to score; default all.')
  flags.DEFINE_string('model_category', '', 'Trained category whose model '
                      'scores the others (for another dataset).')
  flags.DEFINE_integer('num_devices', 0, "Local devices; 0 = the run's "
                       'count if available, else all.')
  flags.DEFINE_bool('allow_unfinished', False, 'Score a run whose training '
                    'did not end (killed before its last step) with its '
                    'latest checkpoints; the reports and metrics '
                    '(train/unfinished) say so.')


if __name__ == '__main__':
  _define_flags()
  logs.run(main)
