"""Freezing a trained detector into one file (`python -m aad.export`).

The .aad file (read by `aad.deploy.loader.load`, which needs only jax) holds the
whole detector of one category, serialised with `jax.export` (StableHLO):
resize to the model's size and channel conversion (as the training data
were prepared), the model, the configured scorers' maps and image scores,
the maps brought back to the input size, and the calibrated thresholds
(decisions). Batch, height and width are symbolic; one module per input
channel count (grey, RGB). aad/deploy/function.py builds the function;
aad/deploy/loader.py documents the format and the MC-dropout seed.

--onnx also writes an ONNX file (jax2onnx, from requirements-export.txt):
uint8 images at the model's size, the scorers without random draws; see
README "Deploying a detector" for what it leaves out.
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import json
import os
import zipfile

# Before TensorFlow (clu, tfds) is imported: its C++ start-up chatter.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import logging
import jax
from jax import export as jax_export
import jax.extend as jax_extend
import jax.numpy as jnp
import numpy as np

from aad import data
from aad import models
from aad.deploy import function
from aad.deploy import detector as detector_lib
from aad.deploy import loader
from aad.metrics import protocol
from aad.runtime import atomic
from aad.experiment import workdir as workdir_lib
from aad.data import imageio

PLATFORMS = ('cpu', 'cuda', 'tpu')
# Scorers whose maps come from random draws (MC dropout): not in the ONNX
# graph, where jax2onnx turns JAX's threefry draws into RandomUniform.
RANDOM_OUTPUTS = ('mc_mean', 'mc_variance')


def metadata(detector: detector_lib.Detector, workdir: str) -> dict:
  """What the loader needs besides the modules, as JSON."""
  config = detector.config
  return {
      'format': loader.FORMAT,
      'workdir': os.path.abspath(workdir),
      'category': detector.category,
      'config_name': config.name,
      'model': config.model.name,
      'best_step': detector.best_step,
      'image_size': list(data.image_size(config.dataset)),
      'channels': config.dataset.channels,
      'scorers': [s.name for s in detector.scorers],
      'map_scorers': detector.map_scorers,
      'norm': config.eval.norm,
      'resolution': config.eval.resolution,
      'mc_samples': config.eval.mc_samples,
      'seed': config.seed + 2,  # aad.evaluate's scoring key
      'batch_size': config.eval.batch_size,
      'thresholds': detector.thresholds,
      'jax_version': jax.__version__,
  }


def export_variables(detector: detector_lib.Detector):
  """The prepared variables an export holds (`family.prepare`: the fast
  convolutions' kernels built), built by XLA from the checkpoint's
  variables as constants.

  Before prepared variables, an export held the plain kernels and the
  compiler of the loading process built the fast ones by constant folding,
  once. Building them the same way here gives those files' scores bit for
  bit: XLA's folding may round a sum of taps in the last bit otherwise
  than the run-time product that evaluation and the Detector use (as
  before, the .aad and in-process scores agree to about 1e-7).
  """
  plain = jax.device_get(detector.variables)
  shape = workdir_lib.model_input_shape(detector.config, detector.family)
  return jax.jit(lambda: detector.family.prepare(
      jax.tree.map(jnp.asarray, plain), shape))()


def export_stablehlo(detector: detector_lib.Detector, platforms=PLATFORMS,
                     input_channels=(1, 3)) -> tuple[dict[int, bytes],
                                                     tuple[str, ...]]:
  """({input channels: serialised jax.export module}, platforms), for
  grey (1) and/or RGB (3) inputs.

  A platform whose lowering fails is left out with a warning naming the
  error (e.g. an op without a TPU lowering); the CPU must lower.
  """
  fn = jax.jit(function.detector_fn(detector.config, detector.family,
                                    detector.scorers,
                                    export_variables(detector),
                                    detector.fitted, detector.thresholds))
  modules = {}
  platforms = tuple(platforms)
  for channels in input_channels:
    with jax.enable_x64(True):
      images, = jax_export.symbolic_args_specs(
          (np.zeros((1, 8, 8, channels), np.uint8),), 'b, h, w, _')
      batch = images.shape[0]
      args = (images, jax.ShapeDtypeStruct((), jnp.int32),
              jax.ShapeDtypeStruct((batch,), jnp.int32))
      while True:
        try:
          module = jax_export.export(fn, platforms=platforms)(*args)
          break
        except Exception as e:  # pylint: disable=broad-except
          failed = [p for p in platforms if p in str(e).lower()]
          if not failed or failed == ['cpu'] or len(platforms) == 1:
            raise
          logging.warning('leaving out %s: %s', failed[0],
                          str(e).splitlines()[0])
          platforms = tuple(p for p in platforms if p != failed[0])
    modules[channels] = bytes(module.serialize())
  return modules, platforms


def write_archive(path: str, meta: dict, modules: dict[int, bytes]):
  """The .aad zip, written atomically."""
  meta = dict(meta, modules={str(c): f'detector_c{c}.jaxexport'
                             for c in modules})
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
    archive.writestr(loader.METADATA, json.dumps(meta, indent=2,
                                                   sort_keys=True))
    for c, blob in modules.items():
      archive.writestr(meta['modules'][str(c)], blob)
  atomic.write_bytes(path, buffer.getvalue())


def export_onnx(detector: detector_lib.Detector, path: str, meta: dict):
  """The ONNX file: uint8 images at the model size -> the maps, scores,
  decisions and normalised scores of the scorers without random draws.

  Raises:
    DataError: when jax2onnx is missing, or naming the op it could not
      convert.
  """
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
    import onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise imageio.DataError(
        f'--onnx needs jax2onnx ({e}); install the export extra: pip install '
        '--no-deps -r requirements-export.txt') from e
  scorers = [s for s in detector.scorers
             if not set(s.needs) & set(RANDOM_OUTPUTS)]
  left_out = [s.name for s in detector.scorers if s not in scorers]
  if not scorers:
    raise imageio.DataError(
        f'--onnx: every scorer of the run ({", ".join(left_out)}) draws '
        'MC-dropout passes, which ONNX cannot reproduce; use the .aad file.')
  config = detector.config.copy_and_resolve_references()
  # Textbook convolutions: the same parameters and outputs as the fast
  # forms (tests/test_models.py), without their jnp.pad, which jax2onnx
  # 0.17 cannot lower with a symbolic batch.
  config.model.conv_impl = 'plain'
  # The family of this config: its networks use the plain convolutions
  # (its prepared variables are the checkpoint's but for the families
  # whose fast forms do not depend on conv_impl).
  family = models.create(config)
  variables = family.prepare(detector.variables,
                             workdir_lib.model_input_shape(config, family))
  model = functools.partial(
      function.model_fn(config, family, scorers, random=False), variables,
      detector.fitted)
  norm, sigma = config.eval.norm, float(config.eval.smooth_sigma)
  thresholds = detector.thresholds
  scales = protocol.normalisation(thresholds)
  names = [s.name for s in scorers]

  def fn(images):
    maps, own = model(images, None, None)
    scores = {k: function.reduce(v, norm, sigma) for k, v in maps.items()}
    scores.update({k: v for k, v in own.items() if k not in maps})
    out = {f'model_maps.{k}': v for k, v in maps.items()}
    out.update({f'scores.{k}': scores[k] for k in names})
    out.update({f'decisions.{k}': scores[k] >= thresholds['image'][k]
                for k in names if k in thresholds['image']})
    out.update({f'normalised_scores.{k}': protocol.normalise(
        scores[k], *scales[k], clip=jnp.clip) for k in names if k in scales})
    return out

  h, w = data.image_size(config.dataset)
  spec = jax.ShapeDtypeStruct(
      jax_export.symbolic_shape('B') + (h, w, config.dataset.channels),
      jnp.uint8)
  # jax2onnx converts the traced program, not the Python function: its
  # Flax and jax.numpy shims (which fail on Flax 0.12's Conv under JAX
  # 0.10) then stay out of the way.
  program = jax.make_jaxpr(fn)(spec)
  flat = jax_extend.core.jaxpr_as_fun(program)
  # A flat dict's leaves come in sorted key order: its keys name the
  # ONNX outputs.
  outputs = sorted(jax.eval_shape(fn, spec))
  try:
    model_proto = jax2onnx.to_onnx(
        lambda images: tuple(flat(images)), [spec], input_names=['images'],
        output_names=outputs, model_name='aad_detector')
  except Exception as e:  # pylint: disable=broad-except
    raise imageio.DataError(
        f'--onnx: jax2onnx could not convert the detector: '
        f'{type(e).__name__}: {str(e).splitlines()[0]}') from e
  onnx_meta = dict(meta, scorers=names,
                   map_scorers=[n for n in names if n in
                                detector.map_scorers],
                   left_out=left_out, jax2onnx_version=importlib.metadata.version('jax2onnx'))
  entry = model_proto.metadata_props.add()
  entry.key, entry.value = 'aad', json.dumps(onnx_meta)
  atomic.write_bytes(path, model_proto.SerializeToString())
  onnx.checker.check_model(path)
  return onnx_meta


def export_detector(workdir: str, output: str, *, category: str = '',
                    platforms=PLATFORMS, input_channels=(1, 3),
                    onnx_output: str = '',
                    mc_samples: int | None = None) -> dict:
  """Writes the .aad file (and the ONNX one with `onnx_output`).

  Returns:
    The metadata written.

  Raises:
    DataError: naming the file or config key, for a run that cannot be
      loaded or exported.
  """
  try:
    function.check_exportable(workdir_lib.load_config(workdir))
  except ValueError as e:
    raise imageio.DataError(f'{workdir}: {e}') from e
  detector = detector_lib.Detector.load(workdir, category or None,
                                        mc_samples=mc_samples,
                                        num_devices=1)
  return write_detector(detector, workdir, output, platforms=platforms,
                        input_channels=input_channels,
                        onnx_output=onnx_output)


def write_detector(detector: detector_lib.Detector, workdir: str,
                   output: str, *, platforms=PLATFORMS,
                   input_channels=(1, 3), onnx_output: str = '') -> dict:
  """`export_detector` for a loaded detector."""
  meta = metadata(detector, workdir)
  modules, platforms = export_stablehlo(detector, platforms, input_channels)
  meta['platforms'] = list(platforms)
  write_archive(output, meta, modules)
  logging.info('%s: wrote the %s detector (%s, best step %d) for %s, %.1f '
               'MB', output, detector.category, ', '.join(meta['scorers']),
               detector.best_step, ', '.join(platforms),
               os.path.getsize(output) / 1e6)
  if onnx_output:
    onnx_meta = export_onnx(detector, onnx_output, meta)
    logging.info('%s: wrote the ONNX detector (%s)%s', onnx_output,
                 ', '.join(onnx_meta['scorers']),
                 f'; left out {", ".join(onnx_meta["left_out"])} (random '
                 'draws)' if onnx_meta['left_out'] else '')
  return meta
