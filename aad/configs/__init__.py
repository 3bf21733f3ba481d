"""The shipped experiment configs, one `get_config()` per file.

They live in the package so that an installed `aad` finds them; in a
checkout `configs/` is a link to this folder, so `--config=configs/x.py`
and `from configs import x` keep working. A bare name (`--config=x`)
names the file x.py of this folder (`resolve`); `aad configs` lists them.
"""

import ast
import os

FOLDER = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
  """The shipped configs' names (their files without .py), sorted."""
  return sorted(f[:-3] for f in os.listdir(FOLDER)
                if f.endswith('.py') and not f.startswith('_'))


def path(name: str) -> str:
  """The file of shipped config `name`."""
  return os.path.join(FOLDER, f'{name}.py')


def is_bare(value: str) -> bool:
  """A --config value that names a shipped config rather than a file: no
  folder and no .py (an optional `:argument` of config_flags aside)."""
  file = value.split(':', 1)[0]
  return bool(file) and '/' not in file and os.sep not in file and (
      not file.endswith('.py'))


def resolve(value: str) -> str:
  """The file a --config value names: `x` (or `x:arg`) the shipped x.py if
  there is one; anything else unchanged (a path, or an unknown name, which
  the loader then reports as missing)."""
  if not is_bare(value):
    return value
  name, sep, rest = value.partition(':')
  return path(name) + sep + rest if os.path.isfile(path(name)) else value


def summary(name: str) -> str:
  """The first line of the config's module docstring (else of its
  get_config's), read without importing it."""
  with open(path(name), encoding='utf-8') as f:
    tree = ast.parse(f.read())
  doc = ast.get_docstring(tree) or next(
      (ast.get_docstring(n) for n in tree.body
       if isinstance(n, ast.FunctionDef) and n.name == 'get_config'), None)
  return (doc or '').strip().split('\n', 1)[0]
