"""Freezes a trained run's detector into one .aad file (and ONNX).

  python -m aad.export --workdir=runs/aesc_stain --output=brick.aad \\
      [--category=brick] [--platforms=cpu,cuda,tpu] [--onnx=brick.onnx]
"""

import os

# Before TensorFlow (clu, tfds) is imported: its C++ start-up chatter.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from aad.deploy import archive
from aad.runtime import logs

PLATFORMS = archive.PLATFORMS


def _define_flags():
  flags.DEFINE_string('workdir', None, 'A trained and evaluated run.',
                      required=True)
  flags.DEFINE_string('output', None, 'The .aad file to write.',
                      required=True)
  flags.DEFINE_string('category', '', "The run's category to export; "
                      'needed if it has several.')
  flags.DEFINE_list('platforms', list(PLATFORMS), 'Platforms to lower for.')
  flags.DEFINE_list('input_channels', ['1', '3'], 'Input channel counts '
                    'the file accepts (1 grey, 3 RGB; RGBA drops alpha).')
  flags.DEFINE_string('onnx', '', 'Also write this ONNX file (needs '
                      'requirements-export.txt).')
  flags.DEFINE_integer('mc_samples', None, "MC-dropout passes; default: the "
                       "run's config.")


def main(argv):
  logs.start(argv)
  f = flags.FLAGS
  unknown = set(f.platforms) - set(PLATFORMS)
  if unknown:
    raise app.UsageError(f'--platforms: unknown {", ".join(sorted(unknown))};'
                         f' choose from {", ".join(PLATFORMS)}.')
  channels = tuple(sorted({int(c) for c in f.input_channels}))
  if not channels or set(channels) - {1, 3}:
    raise app.UsageError('--input_channels: 1 and/or 3.')
  archive.export_detector(f.workdir, f.output, category=f.category,
                         platforms=f.platforms, input_channels=channels,
                         onnx_output=f.onnx, mc_samples=f.mc_samples)


if __name__ == '__main__':
  _define_flags()
  logs.run(main)  # user errors: one line, status 1 (2 for usage)
