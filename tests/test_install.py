"""The installed tool: the aad-jax wheel, its `aad` command and configs.

Builds the wheel from a copy of the checkout (no network: setuptools of
this environment, no build isolation), installs it with --no-deps into a
fresh virtual environment that sees this environment's packages through a
.pth file, and runs `aad` from a folder outside the checkout: the verbs,
the shipped configs, a tiny `aad fit --config=test`. Skips, saying why,
where the wheel cannot be built offline. Also: requirements.txt is the
distribution's dependencies plus its `test` extra.
"""

import os
import pathlib
import re
import shutil
import site
import subprocess
import sys
import tomllib

import pytest

from aad import cli
from aad import configs

REPO = pathlib.Path(__file__).resolve().parents[1]


def _requirements(path: pathlib.Path) -> set[str]:
  return {line.strip() for line in path.read_text().splitlines()
          if line.strip() and not line.lstrip().startswith('#')}


def test_requirements_txt_is_the_dependencies_and_the_test_extra():
  project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
  assert project['name'] == 'aad-jax'
  extras = project['optional-dependencies']
  assert _requirements(REPO / 'requirements.txt') == (
      set(project['dependencies']) | set(extras['test']))
  assert not any(r.startswith('pytest') for r in project['dependencies'])
  # The export extra: requirements-export.txt but jax2onnx (--no-deps).
  export = _requirements(REPO / 'requirements-export.txt')
  assert set(extras['export']) == {r for r in export
                                   if not r.startswith('jax2onnx')}
  assert project['scripts'] == {'aad': 'aad.cli:main'}


def test_bare_config_names_resolve_to_the_shipped_files():
  assert configs.resolve('aesc_stain') == str(
      pathlib.Path(configs.__file__).parent / 'aesc_stain.py')
  assert configs.resolve('test:arg').endswith('test.py:arg')
  for value in ('configs/test.py', 'test.py', 'nope', '/x/test'):
    assert configs.resolve(value) == value
  assert 'aesc_stain' in configs.names() and '__init__' not in configs.names()
  # The checkout's configs/ is the package's folder.
  assert (REPO / 'configs' / 'test.py').samefile(configs.path('test'))


def test_verbs_name_existing_modules():
  import importlib.util  # pylint: disable=g-import-not-at-top
  for module, _ in cli.VERBS.values():
    assert importlib.util.find_spec(module), module
  assert set(cli.VERBS) == {'fit', 'test', 'predict', 'export', 'benchmark',
                            'sweep', 'summary', 'suite'}


def _build_wheel(tmp: pathlib.Path) -> pathlib.Path:
  """The wheel, built from a copy of the sources (the checkout keeps no
  build/ folder from it); skips if it cannot be built offline."""
  src = tmp / 'src'
  shutil.copytree(REPO / 'aad', src / 'aad',
                  ignore=shutil.ignore_patterns('__pycache__'))
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(REPO / name, src / name)
  out = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--no-deps',
       '--no-build-isolation', '--no-index', '-q', '-w', str(tmp / 'dist'),
       str(src)], capture_output=True, text=True, timeout=120)
  wheels = list((tmp / 'dist').glob('aad_jax-*.whl'))
  if out.returncode or not wheels:
    pytest.skip('cannot build the wheel offline (pip wheel --no-deps '
                '--no-build-isolation): ' +
                (out.stderr.strip().splitlines() or ['no wheel'])[-1])
  return wheels[0]


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """(bin folder of a fresh venv with the wheel installed, environment)."""
  tmp = tmp_path_factory.mktemp('install')
  wheel = _build_wheel(tmp)
  venv = tmp / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)],
                 check=True, timeout=60)
  python = venv / 'bin' / 'python'
  own = subprocess.run(
      [str(python), '-c', 'import sysconfig; '
       'print(sysconfig.get_paths()["purelib"])'],
      capture_output=True, text=True, check=True).stdout.strip()
  # This environment's packages (JAX, Flax, TF...) without a download.
  pathlib.Path(own, '_aad_test_deps.pth').write_text(
      '\n'.join(site.getsitepackages()) + '\n')
  out = subprocess.run(
      [sys.executable, '-m', 'pip', '--python', str(python), 'install',
       '--no-deps', '--no-index', '-q', str(wheel)],
      capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  env = {k: v for k, v in os.environ.items()
         if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
  env['PATH'] = f'{venv / "bin"}{os.pathsep}{env.get("PATH", "")}'
  return venv / 'bin', env


def _aad(installed, *args, cwd, timeout=60):
  bin_dir, env = installed
  return subprocess.run([str(bin_dir / 'aad'), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_installed_aad_lists_verbs_and_configs(installed, tmp_path):
  bin_dir, env = installed
  where = subprocess.run([str(bin_dir / 'python'), '-c',
                          'import aad; print(aad.__file__)'], cwd=tmp_path,
                         env=env, capture_output=True, text=True, check=True)
  assert not where.stdout.startswith(str(REPO)), where.stdout  # the wheel's
  out = _aad(installed, '--help', cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  for verb in (*cli.VERBS, 'configs'):
    assert re.search(rf'^\s+{verb}\s', out.stdout, re.M), out.stdout
  out = _aad(installed, 'configs', cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  assert re.search(r'^aesc_stain\s+AESc \+ Stain noise \(Collin', out.stdout,
                   re.M), out.stdout
  out = _aad(installed, 'fit', '--helpfull', cwd=tmp_path)
  assert '--workdir' in out.stdout and '--config' in out.stdout, out.stdout
  out = _aad(installed, 'nope', cwd=tmp_path)
  assert out.returncode == 2 and "no verb 'nope'" in out.stderr


def test_installed_aad_fit_runs_a_shipped_config(installed, tmp_path):
  work = tmp_path / 'W'
  out = _aad(installed, 'fit', '--config=test', f'--workdir={work}',
             '--config.train.num_steps=4', cwd=tmp_path, timeout=240)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (work / 'metrics.json').is_file()
