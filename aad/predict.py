"""Scoring new images with a trained run: maps, overlays, masks, scores.csv.

A command line over `aad.Detector` (aad/deploy/detector.py).

  python -m aad.predict --workdir=runs/aesc_stain --input=DIR_OR_FILES \
      --output=DIR [--category=C] [--threshold=T] [--scorer=NAME]

Per input image `<stem>`, at the image's own size: `<stem>_map.png` (the
scorer's anomaly map in colour, the pixel threshold at mid-scale),
`<stem>_overlay.png` (the map over the image, above a band naming the
score, the decision and the map's colour scale) and `<stem>_mask.png`
(pixels at or above the pixel threshold); and one `scores.csv` with every
image's score per scorer of the run, beside it the score normalised to
[0, 1] (`<scorer>_normalised`, 0.5 at the calibrated image threshold), and
the decision at the image threshold. The
scorer of the maps and decisions is the run's headline scorer (the first of
its list) unless --scorer names another of them.

Thresholds default to those calibrated on good validation images when the
run was evaluated (<workdir>/<category>/thresholds.json); --threshold and
--pixel_threshold override them. Every input is read and checked before
anything is written; outputs are staged in a temporary folder next to
--output and moved in when all are complete, scores.csv last.
"""

from __future__ import annotations

import os
import shutil
import tempfile

# Before TensorFlow (clu, tfds) is imported: its C++ start-up chatter.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags
from absl import logging
import numpy as np

from aad.deploy import detector as detector_lib
from aad.runtime import errors
from aad.experiment import testing
from aad.metrics import protocol
from aad import models
from aad import report
from aad.runtime import atomic
from aad.report import figures
from aad.experiment import workdir as workdir_lib
from aad.data import imageio


def collect_inputs(inputs, bad: list | None = None) -> list[str]:
  """Image files from a list of files and folders (not recursive); with
  `bad` given, a non-image file is appended to it as (path, reason)
  instead of raising.

  Raises:
    DataError: for a missing path, a non-image file or an empty folder.
  """
  paths = []
  for item in inputs:
    item = os.path.expanduser(item)
    if os.path.isdir(item):
      names = sorted(n for n in os.listdir(item) if not n.startswith('.'))
      found = [os.path.join(item, n) for n in names
               if os.path.isfile(os.path.join(item, n))]
      if not found:
        raise imageio.DataError(f'{item}: the folder has no images.')
    elif os.path.isfile(item):
      found = [item]
    else:
      raise imageio.DataError(f'{item}: no such file or folder.')
    for path in found:
      if not imageio.is_image_file(path):
        reason = ('not an image file (expected .png, .jpg, .jpeg, .bmp, '
                  '.tif or .tiff)')
        if bad is None:
          raise imageio.DataError(
              f'{path}: {reason}; move it out or list the images '
              'explicitly.')
        bad.append((path, reason))
        continue
      paths.append(path)
  if bad:
    return paths
  if not paths:
    raise imageio.DataError('--input names no images.')
  return paths


def read_inputs(inputs) -> tuple[list[str], list, list[tuple[str, str]]]:
  """(paths, uint8 images, bad) of `inputs`: every file is checked (an
  image file, readable, decodable); bad holds (path, reason) of each one
  that is not.

  Raises:
    DataError: for a missing path or an empty folder.
  """
  bad = []
  paths, originals = [], []
  for path in collect_inputs(inputs, bad):
    try:
      originals.append(imageio.read_image(path))
      paths.append(path)
    except imageio.DataError as e:
      reason = str(e)
      if reason.startswith(f'{path}: '):
        reason = reason[len(path) + 2:]
      bad.append((path, reason.rstrip('.')))
  return paths, originals, bad


def bad_inputs_error(bad) -> imageio.DataError:
  """One line naming every bad input file and its reason."""
  listed = '; '.join(f'{path}: {reason}' for path, reason in bad)
  return imageio.DataError(
      f'{len(bad)} input file(s) cannot be scored, nothing was written: '
      f'{listed}. Fix or remove them, or rerun with --skip_bad to score '
      'the rest.')


def split_inputs(values) -> list[str]:
  """--input values: each an existing path as given (commas and all), or a
  comma-separated list of paths (the older form)."""
  out = []
  for value in values or ():
    if os.path.exists(os.path.expanduser(value)):
      out.append(value)
    else:
      out.extend(v for v in value.split(',') if v)
  return out


MANIFEST = '.aad-predict-files'  # in --output: the files aad.predict wrote


def check_output(output: str, paths: list[str], targets: list[str], *,
                 allow_inside_input: bool = False) -> str:
  """Checks, before anything is scored, that `output` can take `targets`.

  Refuses an output folder that is, or lies inside, a folder of the inputs
  (unless `allow_inside_input`), an existing file of a target's name that
  aad.predict did not write there, and a folder that cannot be written.
  Removes staging folders of killed predictions beside it.

  Raises:
    DataError: naming the folder or file and what to do.
  """
  real = os.path.realpath(output)
  if os.path.exists(real) and not os.path.isdir(real):
    raise imageio.DataError(f'--output={output}: is a file, not a folder; '
                            'choose a folder.')
  if not allow_inside_input:
    for folder in sorted({os.path.realpath(p if os.path.isdir(p) else
                                           os.path.dirname(p) or '.')
                          for p in paths}):
      if real == folder or real.startswith(folder + os.sep):
        raise imageio.DataError(
            f'--output={output}: lies in the input folder {folder}, whose '
            'files its outputs could overwrite; choose a folder outside the '
            'inputs (or pass --allow_output_in_input).')
  ours = set()
  manifest = os.path.join(real, MANIFEST)
  if os.path.isfile(manifest):
    with open(manifest) as f:
      ours = set(f.read().split('\n'))
  for name in targets:
    path = os.path.join(real, name)
    if os.path.lexists(path) and name not in ours:
      raise imageio.DataError(
          f'{path}: exists and was not written by aad.predict; move it or '
          'choose another --output (nothing is overwritten that aad.predict '
          'did not write).')
  errors.writable_dir(real, '--output')
  parent, base = os.path.split(real)
  for name in os.listdir(parent):
    if name.startswith(f'.{base}.{_STAGING}'):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
  return real


_STAGING = 'aad-staging-'


def output_names(paths: list[str]) -> list[str]:
  """Output file stems: each image's own, or '<folder>_<stem>' where stems
  repeat (as in MVTec's test/<defect>/000.png).

  Raises:
    DataError: if names still collide (the same file given twice, say).
  """
  def stem(path):
    return os.path.splitext(os.path.basename(path))[0]
  counts = {}
  for path in paths:
    counts[stem(path)] = counts.get(stem(path), 0) + 1
  names = [stem(p) if counts[stem(p)] == 1 else
           f'{os.path.basename(os.path.dirname(os.path.abspath(p)))}_'
           f'{stem(p)}' for p in paths]
  seen = {}
  for path, name in zip(paths, names):
    if name in seen:
      raise imageio.DataError(f'{seen[name]} and {path} would both write '
                              f'{name}_*.png; rename one or list it once.')
    seen[name] = path
  return names


def predict(workdir: str, inputs, output: str, *, category: str = '',
            scorer: str = '', threshold: float | None = None,
            pixel_threshold: float | None = None,
            mc_samples: int | None = None, num_devices: int = 0,
            allow_output_in_input: bool = False,
            skip_bad: bool = False) -> list[dict]:
  """Scores `inputs` with the run's best model (`aad.Detector`); writes to
  `output`.

  Returns:
    One dict per image: file, the score of each scorer, decision.
  """
  config = workdir_lib.load_config(workdir)
  scorers = testing.configured_scorers(config, models.create(config))
  # Global similarity measures have an image score and no map: they get a
  # score column, and cannot draw maps, masks or decisions.
  names = [s.name for s in scorers if s.has_map]
  mapless = [s.name for s in scorers if not s.has_map]
  if not names:
    raise imageio.DataError(
        f'{workdir}: config.eval.scorers has no scorer with a map '
        f'({", ".join(mapless)}); aad.predict draws maps.')
  scorer = scorer or names[0]
  if scorer not in names:
    raise imageio.DataError(f'--scorer={scorer}: the run evaluated '
                            f'{", ".join(names)} with maps; choose one of '
                            'them.')
  category = detector_lib.choose_category(workdir, category)
  # Before --output is made: an unfinished run is resumed, not evaluated.
  workdir_lib.check_finished(workdir, [category], config=config)
  # Every input checked (an image file, readable, decodable) before
  # anything is written; the bad ones are listed all at once.
  paths, originals, bad = read_inputs(inputs)
  if bad and (not skip_bad or not paths):
    raise bad_inputs_error(bad)
  if bad:
    logging.warning('Skipping %d bad input file(s) (--skip_bad): %s',
                    len(bad), '; '.join(f'{p}: {r}' for p, r in bad))
  stems = output_names(paths)
  targets = [f'{stem}_{kind}.png' for stem in stems
             for kind in ('map', 'overlay', 'mask')] + ['scores.csv']
  if mc_samples is not None and mc_samples < 1:
    raise imageio.DataError(f'--mc_samples={mc_samples}: must be at least '
                            '1.')
  output = check_output(output, paths, targets,
                        allow_inside_input=allow_output_in_input)
  detector = detector_lib.Detector.load(
      workdir, category, mc_samples=mc_samples, num_devices=num_devices,
      need_thresholds=threshold is None or pixel_threshold is None)
  calibrated = threshold is None
  if calibrated:
    threshold = detector.thresholds['image'][scorer]
  if pixel_threshold is None:
    pixel_threshold = detector.thresholds['pixel'][scorer]
  logging.info('%s: scoring %d images with the model of step %d; %s '
               'threshold %.4g (image), %.4g (pixel)', category, len(paths),
               detector.best_step, scorer, threshold, pixel_threshold)
  result = detector.predict_arrays(originals, paths)
  norm = config.eval.norm
  rows, files = [], {}
  for i, path in enumerate(paths):
    stem = stems[i]
    amap, vmax = result.maps[scorer][i], 2 * pixel_threshold
    decision = ('anomalous' if result.scores[scorer][i] >= threshold
                else 'good')
    files[f'{stem}_map.png'] = figures.colorize(amap, vmax)
    files[f'{stem}_overlay.png'] = figures.labelled(
        figures.overlay(originals[i], amap, vmax),
        [overlay_label(result, i, scorer, norm, threshold, decision,
                       calibrated)], vmax)
    files[f'{stem}_mask.png'] = (amap >= pixel_threshold).astype(
        np.uint8) * 255
    row = {'file': path}
    for s in names + mapless:
      row[f'{s}_{norm if s in names else protocol.OWN}'] = float(
          result.scores[s][i])
      row[f'{s}_normalised'] = (float(result.normalised_scores[s][i])
                                if s in result.normalised_scores else '')
    rows.append({**row, 'decision': decision})
  # A row per skipped file: empty scores, the reason as its decision.
  rows += [{**{k: '' for k in rows[0]}, 'file': path,
            'decision': f'skipped: {reason}'} for path, reason in bad]
  _write_outputs(output, files, rows, scorer, norm, threshold)
  anomalous = sum(r['decision'] == 'anomalous' for r in rows)
  logging.info('%d of %d images anomalous%s; outputs in %s', anomalous,
               len(rows) - len(bad),
               f' ({len(bad)} skipped)' if bad else '', output)
  return rows


def overlay_label(result, i: int, scorer: str, norm: str, threshold: float,
                  decision: str, calibrated: bool) -> str:
  """The overlay's text: image i's normalised score against 0.5 (at the
  calibrated threshold), or its raw score against a --threshold."""
  op = '>=' if decision == 'anomalous' else '<'
  if calibrated and scorer in result.normalised_scores:
    return (f'{scorer} {result.normalised_scores[scorer][i]:.3f} '
            f'(normalised) {op} 0.5: {decision}')
  return (f'{scorer}_{norm} {result.scores[scorer][i]:.4g} {op} '
          f'{threshold:.4g}: {decision}')


def _write_outputs(output: str, files: dict, rows: list[dict], scorer: str,
                   norm: str, threshold: float):
  """Stages every file next to `output`, then moves them in."""
  output = os.path.abspath(output)
  parent = os.path.dirname(output)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(
      dir=parent, prefix=f'.{os.path.basename(output)}.{_STAGING}')
  try:
    for name, image in files.items():
      report.write_png(os.path.join(staging, name), image)
    header = list(rows[0]) + ['scorer', 'threshold']
    report.write_csv(os.path.join(staging, 'scores.csv'), header,
                     [[r[k] for k in rows[0]] + [f'{scorer}_{norm}',
                                                 threshold] for r in rows])
    os.makedirs(output, exist_ok=True)
    # The manifest first: a file moved in is then always one it lists.
    manifest = os.path.join(output, MANIFEST)
    listed = set()
    if os.path.isfile(manifest):
      with open(manifest) as f:
        listed = set(f.read().split('\n')) - {''}
    atomic.write_text(manifest, '\n'.join(
        sorted(listed | set(files) | {'scores.csv'})) + '\n')
    for name in list(files) + ['scores.csv']:
      os.replace(os.path.join(staging, name), os.path.join(output, name))
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _define_flags():
  """Defined when run as a program only, so importing this module (tests,
  notebooks) does not clash with other entry points' flags."""
  flags.DEFINE_string('workdir', None, 'A trained run.', required=True)
  flags.DEFINE_multi_string(
      'input', None, 'Image files and/or folders: repeat the flag, or '
      'separate them with commas (a path that exists is taken whole, commas '
      'and all).', required=True)
  flags.DEFINE_string('output', None, 'Folder for the outputs.',
                      required=True)
  flags.DEFINE_string('category', '', "The run's category whose model to "
                      'use; needed if it has several.')
  flags.DEFINE_string('scorer', '', 'Scorer of the maps, masks and '
                      "decisions, one of the run's; default its headline "
                      '(first) scorer.')
  flags.DEFINE_float('threshold', None, "Image threshold on the scorer's "
                     'score; default: the calibrated one.')
  flags.DEFINE_float('pixel_threshold', None, 'Map threshold for the masks; '
                     'default: the calibrated one.')
  flags.DEFINE_integer('mc_samples', None, "MC-dropout passes; default: the "
                       "run's config.")
  flags.DEFINE_integer('num_devices', 0, 'Local devices; 0 = all.')
  flags.DEFINE_bool('allow_output_in_input', False, 'Allow --output in (or '
                    'equal to) an input folder; files aad.predict did not '
                    'write are still never overwritten.')
  flags.DEFINE_bool('skip_bad', False, 'Score the readable images and list '
                    'the bad files (not images, unreadable, undecodable) in '
                    "scores.csv with a 'skipped: <reason>' decision; "
                    'default: stop and list them all, writing nothing.')


def main(argv):
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.start(argv)
  f = flags.FLAGS
  predict(f.workdir, split_inputs(f.input), f.output, category=f.category,
          scorer=f.scorer, threshold=f.threshold,
          pixel_threshold=f.pixel_threshold, mc_samples=f.mc_samples,
          num_devices=f.num_devices,
          allow_output_in_input=f.allow_output_in_input,
          skip_bad=f.skip_bad)


if __name__ == '__main__':
  _define_flags()
  from aad.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.run(main)
