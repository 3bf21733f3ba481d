"""The `aad` command of an installed aad-jax: one verb per command module.

  aad fit --config=aesc_stain [--workdir=DIR] [--config.x=...]
  aad test --workdir=DIR          aad predict / export / benchmark / sweep /
  aad configs                     summary / suite: the flags of python -m
                                  aad.<verb>
  aad <verb> --help               the verb's flags

`aad <verb> ARGS` runs the verb's module as `python -m <module> ARGS` does
(runpy, as __main__): its flags are defined once, by that module alone, and
parsed by its own absl or argparse start; a --config may be a file or the
bare name of a shipped config (aad/configs/). `aad configs` lists the
shipped configs with the first line of each one's docstring.
"""

import runpy
import sys

# verb: (module, what it does)
VERBS = {
    'fit': ('aad.main', 'train and evaluate one config (python -m aad.main)'),
    'test': ('aad.evaluate', "score a trained run's test split again"),
    'predict': ('aad.predict', 'score new images with a trained run'),
    'export': ('aad.export', 'freeze a trained detector into .aad (ONNX)'),
    'benchmark': ('aad.benchmark', 'time training, scoring or the metrics'),
    'sweep': ('aad.sweep', "run a config's sweep, one workdir per point"),
    'summary': ('aad.summary', "gather a sweep's runs into one table"),
    'suite': ('aad.suite', 'run one config over a list of dataset folders'),
}


def usage() -> str:
  width = max(map(len, [*VERBS, 'configs']))
  lines = ['usage: aad <verb> [flags]   (aad <verb> --help: its flags)', '',
           'verbs:']
  lines += [f'  {verb:<{width}}  {what}' for verb, (_, what) in VERBS.items()]
  lines += [f'  {"configs":<{width}}  list the shipped configs '
            '(--config=<name>)']
  return '\n'.join(lines) + '\n'


def list_configs() -> str:
  from aad import configs  # pylint: disable=g-import-not-at-top
  names = configs.names()
  width = max(map(len, names))
  return ''.join(f'{n:<{width}}  {configs.summary(n)}\n' for n in names)


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  verb, rest = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
  if verb in (None, '-h', '--help', 'help', '--helpshort', '--helpfull'):
    sys.stdout.write(usage())
    return 0 if verb else 2
  if verb == 'configs':
    if rest:
      sys.stderr.write(f'aad configs: takes no arguments, got {rest}\n')
      return 2
    sys.stdout.write(list_configs())
    return 0
  if verb not in VERBS:
    sys.stderr.write(f'aad: no verb {verb!r}.\n{usage()}')
    return 2
  # The module sees the command line `python -m <module>` gives it (runpy
  # sets argv[0] to the module's file, as python -m does).
  sys.argv = [f'aad {verb}', *rest]
  runpy.run_module(VERBS[verb][0], run_name='__main__', alter_sys=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
