"""The README's commands: modules, flags, config keys and files exist.

Every shell command of a README code block that runs `python -m aad.<verb>`,
`aad <verb>` (the installed command, aad/cli.py: checked as the verb's
module) or `python -m pytest` is checked: the module exists, every `--flag` it
passes is one that command defines (read from `--helpfull` / `--help`, one
subprocess per verb), every `--config.a.b=...` override names a key of the
config file's `get_config()`, and the paths it names (configs/, tests/)
exist. Links to docs/ exist too, and the README stays a manual (<= 25 KB).
Needs neither ../shared nor a trained run.
"""

import concurrent.futures
import functools
import importlib.util
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from aad import cli
from aad import configs

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
MAX_BYTES = 25 * 1024
# absl's own flags and argparse's; always defined.
_ALWAYS = {'help', 'helpfull', 'helpshort', 'helpxml', 'flagfile',
           'undefok', 'h'}


def shell_commands(text: str) -> list[str]:
  """Commands of the ```bash / ```sh / ``` blocks, continuations joined,
  comments dropped; `a && b` gives both."""
  commands = []
  for lang, block in re.findall(r'```(\w*)\n(.*?)```', text, re.S):
    if lang not in ('', 'bash', 'sh', 'shell', 'console'):
      continue
    joined = re.sub(r'\\\n\s*', ' ', block)
    for line in joined.splitlines():
      line = line.split(' #', 1)[0].strip()
      if not line or line.startswith('#'):
        continue
      commands.extend(part.strip() for part in re.split(r'&&|;|\|\|', line))
  return commands


def python_m(command: str) -> tuple[str, list[str]] | None:
  """('aad.main', args) or ('pytest', args) for `python -m X args`."""
  try:
    words = shlex.split(command)
  except ValueError:
    return None
  for i in range(len(words) - 2):
    if re.fullmatch(r'python3?', words[i]) and words[i + 1] == '-m':
      module = words[i + 2]
      if module.startswith('aad.') or module == 'pytest':
        return module, words[i + 3:]
  return None


def aad_verb(command: str) -> tuple[str, list[str]] | None:
  """('aad.main', args) for `aad fit args` (the verb's module), ('aad
  configs', args) for `aad configs`, ('aad <unknown>', args) else."""
  try:
    words = shlex.split(command)
  except ValueError:
    return None
  if len(words) < 2 or words[0] != 'aad':
    return None
  verb, args = words[1], words[2:]
  return (cli.VERBS[verb][0] if verb in cli.VERBS else f'aad {verb}'), args


@functools.cache
def readme_text() -> str:
  return README.read_text()


def readme_commands() -> list[tuple[str, list[str]]]:
  found = [python_m(c) or aad_verb(c) for c in shell_commands(readme_text())]
  return [f for f in found if f]


def parse_flag_names(help_text: str) -> set[str]:
  """Flag names of absl's --helpfull or argparse's --help output."""
  names = set()
  for match in re.finditer(
      r'^\s*(?:-\S+,\s*)?--(\[no\])?([A-Za-z0-9_][\w.-]*)', help_text, re.M):
    names.add(match.group(2))
    if match.group(1):
      names.add('no' + match.group(2))
  # argparse's usage lines: [--name VALUE].
  names.update(re.findall(r'\[--([\w-]+)', help_text))
  return names


@functools.cache
def defined_flags(module: str) -> frozenset[str]:
  out = subprocess.run(
      [sys.executable, '-m', module, '--helpfull'], cwd=REPO,
      capture_output=True, text=True, timeout=120)
  text = out.stdout + out.stderr
  if 'unrecognized arguments: --helpfull' in text:  # argparse
    out = subprocess.run([sys.executable, '-m', module, '--help'], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
  names = parse_flag_names(text)
  assert names, f'python -m {module} --helpfull printed no flags:\n{text}'
  return frozenset(names | _ALWAYS)


def flag_uses(args: list[str]) -> list[tuple[str, str | None]]:
  """(name, value) of every --flag of a command line."""
  uses = []
  for arg in args:
    match = re.fullmatch(r'--([\w.-]+)(?:=(.*))?', arg, re.S)
    if match:
      uses.append((match.group(1), match.group(2)))
  return uses


def config_has_key(config_file: str, dotted: str) -> bool:
  spec = importlib.util.spec_from_file_location(
      '_readme_config', REPO / configs.resolve(config_file))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  node = module.get_config()
  for part in dotted.split('.'):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      return False
  return True


def check_command(module: str, args: list[str],
                  flags_of=defined_flags) -> list[str]:
  """Problems of one `python -m module args` command; [] if none."""
  problems = []
  if module == 'pytest':
    for arg in args:
      if not arg.startswith('-') and not (REPO / arg.split('::')[0]).exists():
        problems.append(f'pytest path {arg} does not exist')
    return problems
  if module == 'aad configs':
    return [f'aad configs takes no arguments: {args}'] if args else []
  if module.startswith('aad '):
    return [f'no verb {module}']
  if importlib.util.find_spec(module) is None:
    return [f'no module {module}']
  uses = flag_uses(args)
  defined = flags_of(module)
  config_file = dict(uses).get('config')
  for name, value in uses:
    if name.startswith('config.'):
      if 'config' not in defined:
        problems.append(f'{module} has no --config for --{name}')
      elif not config_file:
        problems.append(f'--{name} without --config')
      elif not config_has_key(config_file, name[len('config.'):]):
        problems.append(f'--{name}: no such key in {config_file}')
    elif name not in defined:
      problems.append(f'python -m {module} defines no --{name}')
    if name == 'config' and value and not (
        REPO / configs.resolve(value)).is_file():
      problems.append(f'--config={value}: no such file')
  return problems


def test_readme_is_a_manual_not_a_notebook():
  size = len(README.read_bytes())
  assert size <= MAX_BYTES, f'README.md is {size} bytes (> {MAX_BYTES})'


def test_readme_shows_the_two_setup_commands():
  commands = readme_commands()
  assert ('aad.main', ['--config=configs/aesc_stain.py']) in commands
  assert ('pytest', ['tests']) in commands


def test_readme_shows_the_installed_route():
  text = readme_text()
  assert re.search(r'^pip install \.$', text, re.M)
  commands = readme_commands()
  assert ('aad configs', []) in commands
  assert any(m == 'aad.main' and '--config=aesc_stain' in a
             for m, a in commands)


def test_readme_commands_use_real_modules_flags_and_config_keys():
  commands = readme_commands()
  assert len(commands) >= 10, commands
  verbs = sorted({m for m, _ in commands
                  if m != 'pytest' and not m.startswith('aad ')})
  # One --helpfull subprocess per verb, in parallel.
  with concurrent.futures.ThreadPoolExecutor(len(verbs)) as pool:
    list(pool.map(defined_flags, verbs))
  problems = [f'`python -m {m} {" ".join(a)}`: {p}'
              for m, a in commands for p in check_command(m, a)]
  assert not problems, '\n'.join(problems)


def test_paths_the_readme_names_exist():
  text = readme_text()
  paths = set(re.findall(r'(?<![\w/.])((?:configs|launch|tests)/[\w./-]+\.'
                         r'(?:py|sh|sbatch))', text))
  paths |= set(re.findall(r'\]\(((?:docs/)?[\w./-]+\.(?:md|png))', text))
  assert any(p.startswith('configs/') for p in paths)
  missing = sorted(p for p in paths if not (REPO / p).exists())
  assert not missing, f'README names files that do not exist: {missing}'


@pytest.mark.parametrize('command, problem', [
    ('python -m aad.main --config=configs/aesc_stain.py --wrokdir=runs/x',
     'defines no --wrokdir'),
    ('python -m aad.main --config=configs/aesc_stain.py '
     '--config.train.num_stepz=3', 'no such key'),
    ('python -m aad.main --config=configs/nope.py', 'no such file'),
    ('python -m aad.nope --workdir=x', 'no module aad.nope'),
    ('python -m pytest tests/test_nope.py', 'does not exist'),
    ('aad fit --config=aesc_stain --wrokdir=runs/x', 'defines no --wrokdir'),
    ('aad fit --config=nope', 'no such file'),
    ('aad fit --config=test --config.train.num_stepz=3', 'no such key'),
    ('aad nope --workdir=x', 'no verb aad nope'),
    ('aad configs --x', 'takes no arguments'),
])
def test_the_check_fails_on_a_wrong_command(command, problem):
  module, args = python_m(command) or aad_verb(command)
  fake = lambda m: frozenset({'config', 'workdir'} | _ALWAYS)
  problems = check_command(module, args, flags_of=fake)
  assert any(problem in p for p in problems), problems


def test_flag_names_are_parsed_from_absl_and_argparse_help():
  absl_help = ('  --[no]allow_eval_changes: Rerun.\n'
               '  --config: Experiment config file.\n  -?,--[no]help: x\n')
  assert {'allow_eval_changes', 'noallow_eval_changes', 'config',
          'help'} <= parse_flag_names(absl_help)
  argparse_help = ('usage: x [-h] [--metrics] [--num_maps NUM_MAPS]\n'
                   'options:\n  -h, --help  show\n  --repeats REPEATS\n')
  assert {'metrics', 'num_maps', 'repeats', 'help'} <= parse_flag_names(
      argparse_help)
