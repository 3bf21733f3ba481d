"""Benchmarks that print one JSON line each.

  python -m aad.benchmark --metrics [--num_maps=100 --size=256 --num_types=4]
  python -m aad.benchmark --config=configs/aesc_stain.py [--image_size=256
      --channels=3 --batch_size=16 --repeats=5 --scorers=residual,ssim
      --versus=residual --set=eval.similarity.fsim.noise_stride=2]

  python -m aad.benchmark --cold_start --workdir=W [--category=C]
      [--aad=FILE] [--cache_dir=D]
  python -m aad.benchmark --families[=aesc,draem] [--image_size=64
      --channels=1 --batch_size=8 --repeats=2 --set=model.depth=5]

--cold_start times a trained run's start-up, each in fresh subprocesses:
`aad.Detector.load` then its first `predict` of one image at the model's
size, and `aad.deploy.loader.load` of the .aad file (default: exported
from the run to a temporary file) then its first `predict`; each twice,
first with an empty compilation cache folder ($AAD_CACHE_DIR; the first
ever run on a machine: cold) then again (warm). load_s counts the imports
it needs; *_cache_entries counts the cache's files after the cold run,
*_warm_new_entries those the warm run added (0: every executable was read
from the cache).

--metrics times the evaluation protocol (`aad.metrics.protocol`) for one
scorer on synthetic maps, per group of metrics (aad/speed/protocol.py).

--config times the experiment's model on random images on this machine
(aad/speed/throughput.py): training images/s (the real step: sampling, corruption,
Adam), deterministic inference, full scoring with T MC-dropout passes, the
whole detector on images of the model's size in process (`aad.Detector`:
detector_images_per_s) and exported with jax.export and run by
`aad.deploy.loader` (exported_images_per_s), compile seconds, achieved GFLOP/s
of inference from XLA's cost analysis and the process' peak memory. --image_size, --channels and --batch_size
override the config; --scorers the scored list (config.eval.scorers, comma
separated; scoring time covers the family outputs they need and their
maps); --versus another list timed in the same rounds, call after call
(score_cost_ratio = the median over rounds of scorers' time / versus'
time, a ratio measured side by side); --set KEY=VALUE any config field (a Python literal; repeatable).
Inference, scoring and the detector read the trained variables prepared
once, as aad.evaluate and aad.Detector do: prepared says whether the model
has fast-form kernels to prepare (prepared_kernels of them, built in
prepare_s seconds, compilation included).

--families times every model family (aad.models.names(); or the comma
separated list given) on the base config (configs/default.py, each
family's defaults) at one size: one JSON line per family with its training
images/s (first stage) and inference images/s (prepared), and the
preparation figures. Cheap by default: 64 px (the smallest size every
family's defaults take), grey, batch 8, 2 timed repeats; a family whose
size rule the size breaks gets a line with 'skipped' (e.g. at 32 px
AESc's depth 6 needs --set=model.depth=5).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m aad.benchmark',
      description='Time parts of aad; prints one JSON line.')
  parser.add_argument('--metrics', action='store_true',
                      help='time every evaluation metric of one scorer on '
                      'synthetic maps')
  parser.add_argument('--num_maps', type=int, default=100,
                      help='synthetic test maps (40%% good)')
  parser.add_argument('--size', type=int, default=256,
                      help='map height and width, px')
  parser.add_argument('--num_types', type=int, default=4,
                      help='fake defect types')
  parser.add_argument('--num_val', type=int, default=32,
                      help='good validation maps for the threshold')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--config', default=None,
                      help='time training/inference of this config file '
                      '(or shipped config name)')
  parser.add_argument('--image_size', type=int, default=None,
                      help='override config.dataset.image_size')
  parser.add_argument('--channels', type=int, default=None,
                      help='override config.dataset.channels')
  parser.add_argument('--batch_size', type=int, default=None,
                      help='override config.train.batch_size')
  parser.add_argument('--scorers', default=None,
                      help='override config.eval.scorers (comma separated)')
  parser.add_argument('--versus', default=None,
                      help='also time this scorer list (comma separated) in '
                      'the same rounds and print score_cost_ratio, e.g. '
                      '--versus=residual')
  parser.add_argument('--set', action='append', default=[],
                      metavar='KEY=VALUE',
                      help='override a config field, e.g. '
                      'eval.similarity.fsim.noise_stride=2 (repeatable)')
  parser.add_argument('--repeats', type=int, default=None,
                      help='timed calls after warm-up (median reported; '
                      'default 5, --families 2)')
  parser.add_argument('--families', nargs='?', const='all', default=None,
                      metavar='NAMES',
                      help='time training and inference of every model '
                      'family (or these, comma separated), one JSON line '
                      'each')
  parser.add_argument('--cold_start', action='store_true',
                      help='time a trained run\'s load and first predict '
                      'in fresh processes, with an empty then a warm '
                      'compilation cache')
  parser.add_argument('--workdir', default=None,
                      help='the trained run (--cold_start)')
  parser.add_argument('--category', default='',
                      help='its category (--cold_start; default its only '
                      'one)')
  parser.add_argument('--aad', default=None,
                      help='the run\'s exported .aad file (--cold_start; '
                      'default: exported to a temporary file)')
  parser.add_argument('--cache_dir', default=None,
                      help='the cache folders\' parent (--cold_start; '
                      'default a temporary folder, removed after); must '
                      'not exist yet')
  return parser


# Run in a fresh interpreter: argv[1] 'detector' or 'aad', argv[2] the run
# or the file, argv[3] the category; prints one JSON line.
_COLD_CHILD = '''
import json, os, sys, time
start = time.perf_counter()
kind, path, category = sys.argv[1:4]
import numpy as np
if kind == 'detector':
  import aad
  from aad import data
  detector = aad.Detector.load(path, category or None)
  size = tuple(data.image_size(detector.config.dataset))
  channels = detector.config.dataset.channels
else:
  from aad.deploy import loader
  detector = loader.load(path)
  size = tuple(detector.metadata['image_size'])
  channels = detector.metadata['channels']
  if str(channels) not in detector.metadata['modules']:
    channels = int(next(iter(detector.metadata['modules'])))
loaded = time.perf_counter()
image = np.random.default_rng(0).integers(0, 256, size + (channels,),
                                          dtype=np.uint8)
result = detector.predict([image])
for scores in result.scores.values():
  np.asarray(scores)
done = time.perf_counter()
print(json.dumps({'load_s': round(loaded - start, 2),
                  'first_predict_s': round(done - loaded, 2)}))
'''


def _count_files(folder: str) -> int:
  return sum(len(files) for _, _, files in os.walk(folder))


def _cold_run(kind: str, path: str, category: str, cache: str) -> dict:
  """{'load_s', 'first_predict_s'} of one fresh process using `cache`."""
  import subprocess  # pylint: disable=g-import-not-at-top
  env = {k: v for k, v in os.environ.items()
         if k not in ('JAX_COMPILATION_CACHE_DIR',
                      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')}
  env['AAD_CACHE_DIR'] = cache
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (root, env.get('PYTHONPATH')) if p)
  result = subprocess.run(
      [sys.executable, '-c', _COLD_CHILD, kind, path, category], env=env,
      capture_output=True, text=True, timeout=1200, check=False)
  if result.returncode:
    raise SystemExit(f'benchmark --cold_start: the {kind} process failed:\n'
                     f'{result.stderr[-3000:]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def cold_start(workdir: str, category: str = '', aad_file: str | None = None,
               cache_dir: str | None = None) -> dict[str, object]:
  """Load and first-predict seconds of the run's Detector and .aad file in
  fresh processes, cold (empty cache) then warm."""
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise SystemExit(f'--workdir={workdir}: not a trained run (no '
                     'config.json)')
  if cache_dir is not None and os.path.exists(cache_dir):
    raise SystemExit(f'--cache_dir={cache_dir}: exists; name a new folder '
                     '(the first run must find it empty)')
  root = cache_dir or tempfile.mkdtemp(prefix='aad-cold-start-')
  try:
    if aad_file is None:
      aad_file = os.path.join(root, 'detector.aad')
      env = dict(os.environ, AAD_CACHE_DIR='off')
      env.pop('JAX_COMPILATION_CACHE_DIR', None)
      exported = subprocess.run(
          [sys.executable, '-m', 'aad.export', f'--workdir={workdir}',
           f'--output={aad_file}'] + (
               [f'--category={category}'] if category else []),
          env=env, capture_output=True, text=True, timeout=1200,
          check=False)
      if exported.returncode:
        raise SystemExit('benchmark --cold_start: aad.export failed:\n'
                         f'{exported.stderr[-3000:]}')
    result = {'benchmark': 'cold_start', 'workdir': workdir,
              'category': category, 'aad_file': aad_file}
    for kind, path in (('detector', workdir), ('aad', aad_file)):
      cache = os.path.join(root, f'{kind}_xla')
      for state in ('cold', 'warm'):
        before = _count_files(cache) if os.path.isdir(cache) else 0
        times = _cold_run(kind, path, category, cache)
        for key, value in times.items():
          result[f'{kind}_{state}_{key}'] = value
        if state == 'cold':
          result[f'{kind}_cache_entries'] = _count_files(cache)
        else:
          result[f'{kind}_warm_new_entries'] = _count_files(cache) - before
    return result
  finally:
    if cache_dir is None:
      shutil.rmtree(root, ignore_errors=True)


def set_field(config, item: str) -> None:
  """Applies 'a.b.c=value' (value a Python literal, else a string)."""
  key, sep, text = item.partition('=')
  if not sep:
    raise SystemExit(f'--set={item}: expected KEY=VALUE, e.g. '
                     'eval.similarity.fsim.noise_stride=2')
  *path, field = key.split('.')
  block = config
  for part in path:
    block = block.get(part) if hasattr(block, 'get') else None
  if block is None or not hasattr(block, 'get') or field not in block:
    raise SystemExit(f'--set={item}: the config has no field {key!r}')
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  block[field] = value


def _load_config(path: str):
  """The config of a file, or of a shipped config's name."""
  from aad import configs  # pylint: disable=g-import-not-at-top
  path = configs.resolve(path)  # a shipped config's name
  if not os.path.isfile(path):
    raise SystemExit(f'--config={path}: no such file (run from the '
                     'repository root, e.g. --config=configs/aesc_stain.py)')
  spec = importlib.util.spec_from_file_location('aad_benchmark_config',
                                                path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    return path, module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    # A syntax error, a NameError in get_config: one line, status 2.
    from aad.runtime import logs  # pylint: disable=g-import-not-at-top
    if os.environ.get('AAD_DEBUG', '') not in ('', '0'):
      raise
    sys.stderr.write(f'benchmark: {logs.config_load_error(e, path)}\n')
    sys.exit(2)


def _override(config, args: argparse.Namespace):
  """Applies --image_size, --channels, --batch_size, --scorers and --set;
  then fixes the CPU device count (before JAX starts its backend)."""
  from aad.runtime import cpu  # pylint: disable=g-import-not-at-top
  for value, block, field in ((args.image_size, 'dataset', 'image_size'),
                              (args.channels, 'dataset', 'channels'),
                              (args.batch_size, 'train', 'batch_size')):
    if value is not None:
      config[block][field] = value
  if args.scorers is not None:
    config.eval.scorers = tuple(n for n in args.scorers.split(',') if n)
  for item in args.set:
    set_field(config, item)
  cpu.configure(config.num_devices, config.train.batch_size,
                config.dataset.image_size)


def _speed(args: argparse.Namespace) -> dict[str, object]:
  """Loads the config file, applies the overrides, times it."""
  args.config, config = _load_config(args.config)
  _override(config, args)
  versus = (None if args.versus is None else
            tuple(n for n in args.versus.split(',') if n))
  from aad.speed import throughput  # pylint: disable=g-import-not-at-top
  return {'benchmark': 'speed', 'config': args.config,
          **throughput.run(config, repeats=args.repeats or 5,
                           versus=versus)}


# --families' base settings, before the command line's overrides.
FAMILIES_DEFAULTS = {'image_size': 64, 'channels': 1, 'batch_size': 8,
                     'repeats': 2}


def _families(args: argparse.Namespace):
  """One figures dict per family of --families, as each is measured."""
  # pylint: disable=g-import-not-at-top
  from aad import models
  from aad.configs import default
  known = models.names()
  names = (known if args.families == 'all' else
           tuple(n for n in args.families.split(',') if n))
  unknown = [n for n in names if n not in known]
  if unknown or not names:
    raise SystemExit(f'--families={args.families}: unknown family '
                     f'{", ".join(unknown) or "(none named)"}; choose from '
                     f'{", ".join(known)}')
  for key, value in FAMILIES_DEFAULTS.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  config = default.get_config()
  _override(config, args)
  from aad.speed import throughput
  for result in throughput.families(config, names, repeats=args.repeats):
    yield {'benchmark': 'family', **result}


def main(argv: Sequence[str] | None = None) -> int:
  """Parses `argv` (default sys.argv[1:]), runs, prints one JSON line
  (--families: one per family)."""
  parser = _parser()
  args = parser.parse_args(argv)
  chosen = [flag for flag, on in (
      ('--metrics', args.metrics), ('--config', args.config is not None),
      ('--cold_start', args.cold_start),
      ('--families', args.families is not None)) if on]
  if len(chosen) > 1:
    parser.error(f'choose one benchmark: {" or ".join(chosen)}')
  if args.cold_start:
    if not args.workdir:
      parser.error('--cold_start needs --workdir=W (a trained run)')
    print(json.dumps(cold_start(args.workdir, args.category, args.aad,
                                args.cache_dir)), flush=True)
    return 0
  if args.families is not None:
    for result in _families(args):
      print(json.dumps(result), flush=True)
    return 0
  if args.config is not None:
    print(json.dumps(_speed(args)), flush=True)
    return 0
  if not args.metrics:
    parser.error('choose a benchmark: --metrics, --config=FILE, --families '
                 'or --cold_start --workdir=W')
  from aad.speed import protocol  # pylint: disable=g-import-not-at-top
  data = protocol.synthetic_maps(args.num_maps, args.size, args.num_types,
                                 args.num_val, seed=args.seed)
  seconds = protocol.time_metrics(data)
  result = {'benchmark': 'metrics', 'num_maps': args.num_maps,
            'size': args.size, 'num_types': args.num_types,
            'num_val': args.num_val,
            **{k: round(v, 4) for k, v in seconds.items()}}
  print(json.dumps(result), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
