"""aad.Detector, aad.export and aad.deploy.loader: the exported detector gives
the in-process maps, scores and decisions."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.transform

import aad
from aad import data
from aad.deploy import function
from aad.metrics import protocol
from aad.deploy import archive
from aad.deploy import loader
from aad.experiment import run as pipeline
from aad.data import imageio
from aad.data import preprocess
from configs import test as test_config

REPO = pathlib.Path(__file__).resolve().parents[1]
HAVE_ONNX = all(importlib.util.find_spec(m) for m in ('jax2onnx',
                                                      'onnxruntime'))
TOL = 1e-5


def _train(tmp_path_factory, textures_dir, name, input_channels, onnx,
           **fields):
  config = test_config.get_config()
  config.num_devices = 1
  config.dataset.data_dir = textures_dir
  config.train.num_steps = 2
  config.train.steps_per_call = 1
  config.train.eval_every = 2
  config.eval.mc_samples = 2
  for key, value in fields.items():
    *path, field = key.split('.')
    block = config
    for part in path:
      block = block[part]
    block[field] = value
  workdir = str(tmp_path_factory.mktemp(name))
  pipeline.train_and_evaluate(config, workdir)
  files = tmp_path_factory.mktemp(f'{name}_export')
  onnx_path = str(files / 'brick.onnx') if HAVE_ONNX and onnx else ''
  detector = aad.Detector.load(workdir, num_devices=1)
  meta = archive.write_detector(detector, workdir, str(files / 'brick.aad'),
                               input_channels=input_channels,
                               onnx_output=onnx_path)
  return {'workdir': workdir, 'aad': str(files / 'brick.aad'),
          'onnx': onnx_path, 'meta': meta, 'detector': detector}


@pytest.fixture(scope='module')
def aesc(tmp_path_factory, textures_dir):
  """AESc (residual, MC variance, mean-image baseline) on brick at 32 px,
  exported for grey and RGB inputs, and to ONNX."""
  return _train(tmp_path_factory, textures_dir, 'aesc', (1, 3), onnx=True)


@pytest.fixture(scope='module')
def bergmann(tmp_path_factory, textures_dir):
  """The Bergmann AE, scores on maps at the images' own size; grey inputs
  only, no ONNX (the AESc test covers it)."""
  return _train(tmp_path_factory, textures_dir, 'bergmann', (1,), onnx=False,
                **{'model.name': 'bergmann', 'model.bergmann.latent': 32,
                   'eval.resolution': 'original'})


@pytest.fixture(scope='module')
def benchmark(textures_dir):
  """7 test crops of the embedded benchmark (3 good, 4 defective) at their
  native 128 x 128, and at the model's 32 x 32."""
  native = data.load('textures', 'brick', image_size=128, channels=1,
                         data_dir=textures_dir).test
  model = data.load('textures', 'brick', image_size=32, channels=1,
                        data_dir=textures_dir).test
  pick = np.r_[np.flatnonzero(native.labels == 0)[:3],
               np.flatnonzero(native.labels == 1)[:4]]
  return native.images[pick], model.images[pick]


def assert_agree(a, b, tol=TOL, scorers=None):
  """Maps (each image's size and the model's), scores and decisions."""
  scorers = scorers or list(b.scores)
  assert scorers
  for s in scorers:
    if s in b.maps:
      assert len(a.maps[s]) == len(b.maps[s])
      for x, y in zip(a.maps[s], b.maps[s]):
        assert x.shape == y.shape
        np.testing.assert_allclose(y, x, rtol=0, atol=tol, err_msg=s)
      np.testing.assert_allclose(b.model_maps[s], a.model_maps[s], rtol=0,
                                 atol=tol, err_msg=s)
    np.testing.assert_allclose(b.scores[s], a.scores[s], rtol=0, atol=tol,
                               err_msg=s)
    np.testing.assert_array_equal(b.decisions[s], a.decisions[s])
    if s in b.decisions:
      np.testing.assert_allclose(b.normalised_scores[s],
                                 a.normalised_scores[s], rtol=0, atol=tol,
                                 err_msg=s)


@pytest.mark.parametrize('family', ['aesc', 'bergmann'])
def test_exported_matches_in_process(family, request, benchmark):
  run = request.getfixturevalue(family)
  native, _ = benchmark
  detector = run['detector']
  assert run['meta']['platforms'] == ['cpu', 'cuda', 'tpu']
  inside = detector.predict(native)
  loaded = loader.load(run['aad'])
  outside = loaded.predict(native)
  assert set(outside.scores) == {s.name for s in detector.scorers}
  assert set(outside.normalised_scores) == set(inside.normalised_scores) == (
      set(detector.thresholds['image']))
  assert set(detector.thresholds['image_range']) == set(
      detector.thresholds['image'])
  assert_agree(inside, outside)
  # Not trivially equal: maps vary, the threshold splits the images.
  headline = detector.scorers[0].name
  assert np.ptp(inside.scores[headline]) > 1e-3
  assert all(m.shape == (128, 128) for m in outside.maps[headline])
  # A batch of 1 (another compiled shape); an image's result does not
  # depend on its batch, MC-dropout passes included, given its index.
  single = loaded.predict(native[3:4], indices=[3])
  for s in outside.scores:
    np.testing.assert_allclose(single.scores[s], outside.scores[s][3:4],
                               rtol=0, atol=TOL)
  assert_agree(detector.predict(native[:1]), loaded.predict(native[:1]))


def test_mc_dropout_seed_and_sizes(aesc, benchmark):
  native, model_size = benchmark
  loaded = loader.load(aesc['aad'])
  base = loaded.predict(native)
  assert loaded.metadata['seed'] == 2  # config.seed + 2, as aad.evaluate
  other = loaded.predict(native, seed=7)
  assert not np.allclose(other.scores['mc_variance'],
                         base.scores['mc_variance'])
  np.testing.assert_array_equal(other.scores['residual'],
                                base.scores['residual'])
  # Mixed sizes, grey and RGB, uint8 and [0, 1] floats in one call; each
  # map comes back at its image's size and matches the in-process path.
  rgb = np.repeat(native[4, 10:60, 5:75], 3, axis=-1)
  images = [native[1, :, :, 0] / 255.0, rgb]
  outside = loaded.predict(images)
  inside = aesc['detector'].predict(images)
  assert [m.shape for m in outside.maps['residual']] == [(128, 128),
                                                         (50, 70)]
  assert_agree(inside, outside)


def test_normalised_scores_by_hand():
  # Good validation scores 0.01..0.03, threshold 0.025: span 0.02.
  thresholds = {'image': {'residual': 0.025, 'old': 0.004, 'zero': 0.0},
                'image_range': {'residual': [0.01, 0.03]}}
  scales = protocol.normalisation(thresholds)
  assert scales['residual'] == (0.025, pytest.approx(0.02))
  # No recorded range (an older run): span 2 |threshold|, or 1 at 0.
  assert scales['old'] == (0.004, 0.008) and scales['zero'] == (0.0, 1.0)
  raw = np.array([-1.0, 0.0, 0.015, 0.025, 0.03, 0.035, 0.04, 5.0])
  got = protocol.normalise(raw, *scales['residual'])
  np.testing.assert_allclose(got, [0, 0, 0, 0.5, 0.75, 1, 1, 1], atol=1e-12)
  assert got[3] == 0.5  # exactly, at the threshold
  dense = protocol.normalise(np.linspace(-1, 1, 10001), *scales['residual'])
  assert np.all(np.diff(dense) >= 0)
  assert dense.min() == 0 and dense.max() == 1
  np.testing.assert_allclose(
      protocol.normalise(np.array([0.0, 0.002, 0.004, 0.008]),
                         *scales['old']), [0, 0.25, 0.5, 1])
  # The exported form (jnp.clip) is the same function.
  np.testing.assert_allclose(np.asarray(protocol.normalise(
      jnp.asarray(raw), *scales['residual'], clip=jnp.clip)), got, rtol=0,
      atol=1e-6)


def test_resize_and_reductions_match_scikit_image_and_scipy():
  rng = np.random.default_rng(0)
  pairs = [((128, 128), (32, 32)), ((30, 70), (32, 32)), ((33, 100), (32, 64))]
  with jax.enable_x64(True):
    for (h, w), size in pairs:
      image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
      amap = rng.random(size).astype(np.float32)

      @jax.jit
      def run(image, amap, size=size, shape=(h, w)):
        return (function.resize(image[None].astype(jnp.float64), size)[0],
                function.prepare(image[None], size, 1)[0],
                function.resize(amap[None, ..., None].astype(jnp.float64),
                              shape)[0, ..., 0])

      resized, grey, pasted = map(np.asarray, run(image, amap))
      np.testing.assert_allclose(resized, skimage.transform.resize(
          image, size, order=1, anti_aliasing=True, preserve_range=True),
                                 rtol=0, atol=1e-9)
      np.testing.assert_array_equal(grey, preprocess.convert_channels(
          preprocess.resize_image(image, size)[None], 1)[0])
      np.testing.assert_allclose(pasted, preprocess.paste_map(
          amap, (h, w), None), rtol=0, atol=1e-6)
    maps = rng.random((3, 20, 27)).astype(np.float32)
    for norm in protocol.REDUCTIONS:
      np.testing.assert_allclose(
          np.asarray(function.reduce(jnp.asarray(maps, jnp.float64), norm,
                                   4.0)),
          protocol.reduce(maps, norm, 4.0), rtol=1e-6, atol=0)


@pytest.mark.skipif(not HAVE_ONNX, reason='the ONNX export needs '
                    'requirements-export.txt (jax2onnx, onnxruntime)')
def test_onnx_under_onnxruntime_matches_in_process(aesc, benchmark):
  run = aesc
  _, model_size = benchmark
  loaded = loader.load(run['onnx'])
  assert isinstance(loaded, loader.OnnxDetector)
  assert loaded.metadata['scorers'] == ['residual', 'baseline_mean']
  assert loaded.metadata['left_out'] == ['mc_variance']
  inside = run['detector'].predict(model_size)
  for part in (slice(None), slice(0, 1)):
    outside = loaded.predict(model_size[part])
    part_inside = run['detector'].predict(model_size[part])
    for s in outside.scores:
      np.testing.assert_allclose(outside.model_maps[s],
                                 part_inside.model_maps[s], rtol=0,
                                 atol=1e-4)
      np.testing.assert_allclose(outside.scores[s], inside.scores[s][part],
                                 rtol=0, atol=1e-4)
      np.testing.assert_array_equal(outside.decisions[s],
                                    inside.decisions[s][part])
      np.testing.assert_allclose(outside.normalised_scores[s],
                                 inside.normalised_scores[s][part], rtol=0,
                                 atol=1e-3)
  with pytest.raises(ValueError, match=r'takes \(32, 32, 1\) uint8'):
    loaded.predict(np.zeros((40, 40), np.uint8))


# Run in a fresh interpreter from a folder holding only the artifact: any
# import of Flax, optax, orbax, TensorFlow or aad's training modules fails.
FRESH = textwrap.dedent('''
    import importlib.abc, json, sys
    import numpy as np
    BLOCKED = ('flax', 'optax', 'orbax', 'tensorflow', 'tensorflow_datasets',
               'clu', 'dm_pix', 'aad.training', 'aad.models',
               'aad.deploy.detector', 'aad.deploy.function', 'aad.deploy.archive',
               'aad.experiment', 'aad.data', 'aad.scoring', 'aad.metrics',
               'aad.runtime', 'aad.report')

    class Block(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCKED):
          raise ImportError(f'blocked: {name}')
        return None

    sys.meta_path.insert(0, Block())
    from aad.deploy import loader
    images = np.load('images.npy')
    detector = loader.load('brick.aad')
    result = detector.predict(images)
    out = {'scores': {s: v.tolist() for s, v in result.scores.items()}}
    try:
      import flax
    except ImportError as e:
      out['flax'] = str(e)
    out['loaded'] = sorted(m for m in sys.modules
                           if m.split('.')[0] in ('aad', 'flax', 'optax'))
    print(json.dumps(out))
''')


def test_artifact_runs_in_a_process_without_training_modules(
    aesc, benchmark, tmp_path):
  native, _ = benchmark
  (tmp_path / 'brick.aad').write_bytes(pathlib.Path(aesc['aad']).read_bytes())
  np.save(tmp_path / 'images.npy', native)
  (tmp_path / 'run.py').write_text(FRESH)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['PYTHONPATH'] = str(REPO)
  result = subprocess.run([sys.executable, 'run.py'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['flax'] == 'blocked: flax'
  assert out['loaded'] == ['aad', 'aad.deploy', 'aad.deploy.loader']
  inside = aesc['detector'].predict(native)
  assert set(out['scores']) == set(inside.scores)
  for s, values in out['scores'].items():
    np.testing.assert_allclose(values, inside.scores[s], rtol=0, atol=TOL)


def test_errors_name_the_problem(aesc, tmp_path):
  with pytest.raises(ValueError, match='not an exported aad detector'):
    (tmp_path / 'x.aad').write_text('hello')
    loader.load(str(tmp_path / 'x.aad'))
  with pytest.raises(ValueError, match='no such file'):
    loader.load(str(tmp_path / 'missing.aad'))
  loaded = loader.load(aesc['aad'])
  with pytest.raises(ValueError, match=r'image 1: float images must lie in '
                     r'\[0, 1\]'):
    loaded.predict([np.zeros((8, 8)), np.full((8, 8), 2.0)])
  with pytest.raises(imageio.DataError, match='image 0: an image array must'):
    aesc['detector'].predict([np.zeros((8, 8, 2), np.uint8)])
  config = json.loads(pathlib.Path(aesc['workdir'], 'config.json').read_text())
  config['dataset']['roi'] = 'peel'
  roi_run = tmp_path / 'roi'
  roi_run.mkdir()
  (roi_run / 'config.json').write_text(json.dumps(config))
  os.symlink(pathlib.Path(aesc['workdir'], 'brick'), roi_run / 'brick')
  with pytest.raises(imageio.DataError, match=r"config.dataset.roi='peel'"):
    archive.export_detector(str(roi_run), str(tmp_path / 'roi.aad'))
  assert not (tmp_path / 'roi.aad').exists()
  result = subprocess.run(
      [sys.executable, '-m', 'aad.export', f'--workdir={tmp_path}',
       f'--output={tmp_path / "y.aad"}'], cwd=REPO, capture_output=True,
      text=True, timeout=300, check=False)
  assert result.returncode == 1
  assert 'config.json: not found' in result.stderr
  assert 'Traceback' not in result.stderr


def test_patch_mode_matches_evaluate(textures_dir):
  """Tiles at static positions on device give aad.evaluate's stitched maps
  and MC-dropout keys (an untrained model: the arithmetic, not the fit)."""
  # pylint: disable=g-import-not-at-top
  from aad.experiment import testing as evaluate
  from aad import models
  from aad.runtime import parallel
  from aad.training import step as step_lib
  config = test_config.get_config()
  config.dataset.patch_size = 16
  config.dataset.patch_stride = 8
  config.eval.mc_samples = 2
  family = models.create(config)
  variables = family.prepare(
      step_lib.init_variables(family, config, (16, 16, 1)), (16, 16, 1))
  images = data.load('textures', 'brick', image_size=32, channels=1,
                         data_dir=textures_dir).test.images[:3]
  scorers = evaluate.configured_scorers(config, family)
  fitted = {'baseline_mean': images.astype(np.float32).mean(0) / 255}
  _, maps, _ = evaluate.score(config, family, variables, images,
                              parallel.select_devices(1), scorers, fitted)
  got, _ = jax.jit(function.model_fn(config, family, scorers))(
      variables, fitted, images, config.seed + 2, np.arange(3))
  assert set(got) == {'residual', 'mc_variance', 'baseline_mean'}
  for name, value in got.items():
    assert value.shape == (3, 32, 32)
    np.testing.assert_allclose(value, maps[name], rtol=0, atol=TOL)
  assert np.ptp(maps['mc_variance']) > 0


CACHE_CHECK = textwrap.dedent('''
    import json, jax
    from aad.deploy import loader
    used = loader.enable_compilation_cache()
    print(json.dumps([used, jax.config.jax_compilation_cache_dir,
                      jax.config.jax_persistent_cache_min_compile_time_secs]))
''')


@pytest.mark.parametrize('setting,expected', [
    ({'AAD_CACHE_DIR': '{tmp}/xla'}, ['{tmp}/xla', '{tmp}/xla', 0.0]),
    ({'XDG_CACHE_HOME': '{tmp}'}, ['{tmp}/aad/xla', '{tmp}/aad/xla', 0.0]),
    # The user's own cache is left alone, and so are its settings.
    ({'AAD_CACHE_DIR': '{tmp}/xla', 'JAX_COMPILATION_CACHE_DIR': '{tmp}/own'},
     ['{tmp}/own', '{tmp}/own', 1.0]),
    # A folder that cannot be made (under a file), or off: no cache.
    ({'AAD_CACHE_DIR': '{tmp}/file/xla'}, [None, None, 1.0]),
    ({'AAD_CACHE_DIR': 'off'}, [None, None, 1.0]),
])
def test_compilation_cache_folder(setting, expected, tmp_path):
  (tmp_path / 'file').write_text('')
  env = {k: v for k, v in os.environ.items()
         if k not in ('JAX_COMPILATION_CACHE_DIR', 'AAD_CACHE_DIR',
                      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')}
  env.update({k: v.format(tmp=tmp_path) for k, v in setting.items()})
  env['PYTHONPATH'] = str(REPO)
  result = subprocess.run([sys.executable, '-c', CACHE_CHECK], env=env,
                          capture_output=True, text=True, timeout=120,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  got = json.loads(result.stdout.strip().splitlines()[-1])
  assert got == [e.format(tmp=tmp_path) if isinstance(e, str) else e
                 for e in expected]
