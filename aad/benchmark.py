"""Benchmarks that print one JSON line each.

  python -m aad.benchmark --metrics [--num_maps=100 --size=256 --num_types=4]
  python -m aad.benchmark --config=configs/aesc_stain.py [--image_size=256
      --channels=3 --batch_size=16 --repeats=5 --scorers=residual,ssim
      --versus=residual --set=eval.similarity.fsim.noise_stride=2]

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
  parser.add_argument('--repeats', type=int, default=5,
                      help='timed calls after warm-up (median reported)')
  return parser


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


def _speed(args: argparse.Namespace) -> dict[str, object]:
  """Loads the config file, applies the overrides, times it."""
  from aad import configs  # pylint: disable=g-import-not-at-top
  from aad.runtime import cpu  # pylint: disable=g-import-not-at-top
  args.config = configs.resolve(args.config)  # a shipped config's name
  if not os.path.isfile(args.config):
    raise SystemExit(f'--config={args.config}: no such file (run from the '
                     'repository root, e.g. --config=configs/aesc_stain.py)')
  spec = importlib.util.spec_from_file_location('aad_benchmark_config',
                                                args.config)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    # A syntax error, a NameError in get_config: one line, status 2.
    from aad.runtime import logs  # pylint: disable=g-import-not-at-top
    if os.environ.get('AAD_DEBUG', '') not in ('', '0'):
      raise
    sys.stderr.write(f'benchmark: {logs.config_load_error(e, args.config)}\n')
    sys.exit(2)
  for value, block, field in ((args.image_size, 'dataset', 'image_size'),
                              (args.channels, 'dataset', 'channels'),
                              (args.batch_size, 'train', 'batch_size')):
    if value is not None:
      config[block][field] = value
  if args.scorers is not None:
    config.eval.scorers = tuple(n for n in args.scorers.split(',') if n)
  for item in args.set:
    set_field(config, item)
  versus = (None if args.versus is None else
            tuple(n for n in args.versus.split(',') if n))
  # Before aad.speed imports JAX: the CPU device count is fixed at start-up.
  cpu.configure(config.num_devices, config.train.batch_size,
                config.dataset.image_size)
  from aad.speed import throughput  # pylint: disable=g-import-not-at-top
  return {'benchmark': 'speed', 'config': args.config,
          **throughput.run(config, repeats=args.repeats, versus=versus)}


def main(argv: Sequence[str] | None = None) -> int:
  """Parses `argv` (default sys.argv[1:]), runs, prints one JSON line."""
  parser = _parser()
  args = parser.parse_args(argv)
  if args.config is not None:
    if args.metrics:
      parser.error('choose one benchmark: --metrics or --config')
    print(json.dumps(_speed(args)), flush=True)
    return 0
  if not args.metrics:
    parser.error('choose a benchmark: --metrics or --config=FILE')
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
