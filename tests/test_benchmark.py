"""Tests of aad.benchmark (the --metrics JSON line, its flag errors) and
of aad.speed.protocol (the synthetic maps)."""

import json

import numpy as np
import pytest

from aad import benchmark
from aad.metrics import protocol
from aad.speed import protocol as protocol_timing

KEYS = {'benchmark', 'num_maps', 'size', 'num_types', 'num_val', 'image_s',
        'pixel_s', 'by_type_s', 'threshold_s', 'total_s'}


def test_metrics_prints_one_json_line(capsys):
  assert benchmark.main(['--metrics', '--num_maps=10', '--size=64']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 1
  result = json.loads(lines[0])
  assert set(result) == KEYS
  assert (result['benchmark'], result['num_maps'], result['size']) == (
      'metrics', 10, 64)
  parts = [result[k] for k in ('image_s', 'pixel_s', 'by_type_s',
                               'threshold_s')]
  assert all(p >= 0 for p in parts)
  assert result['total_s'] == pytest.approx(sum(parts), abs=1e-3)


def test_synthetic_maps_are_deterministic_and_typed():
  a = protocol_timing.synthetic_maps(10, 32, num_types=3, num_val=4)
  b = protocol_timing.synthetic_maps(10, 32, num_types=3, num_val=4)
  np.testing.assert_array_equal(a['maps'], b['maps'])
  assert a['maps'].shape == a['masks'].shape == (10, 32, 32)
  assert a['val_maps'].shape == (4, 32, 32)
  assert set(a['defect_types']) == {'good', 'type0', 'type1', 'type2'}
  defective = a['labels'] == 1
  assert np.all(a['masks'][defective].any(axis=(1, 2)))
  assert not a['masks'][~defective].any()
  # What is timed is what the evaluation computes.
  results = protocol.evaluate_scorer(
      a['maps'], a['labels'], a['masks'], a['defect_types'],
      protocol.Protocol(reductions=('l2',)), val_map=a['val_maps'])
  assert set(results['by_type']) == {'type0', 'type1', 'type2'}


@pytest.mark.parametrize('argv,message', [
    (['--metrics', '--config=configs/test.py'], 'choose one benchmark'),
    ([], '--metrics'),
])
def test_unimplemented_or_missing_benchmark_is_an_error(argv, message,
                                                         capsys):
  with pytest.raises(SystemExit) as exit_info:
    benchmark.main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_config_benchmark_prints_speed_figures(capsys):
  assert benchmark.main(['--config=configs/test.py', '--repeats=1',
                         '--scorers=residual,mc_variance,psnr,ssim',
                         '--versus=residual']) == 0
  result = json.loads(capsys.readouterr().out.strip())
  assert result['benchmark'] == 'speed' and result['image_size'] == 32
  for key in ('train_images_per_s', 'infer_images_per_s',
              'score_images_per_s'):
    assert result[key] > 0
  assert result['mc_samples'] == 4
  # Inference and scoring ran the prepared variables: the tiny AESc's 3
  # strided and 3 upsampling convs have their kernels built once.
  assert result['prepared'] and result['prepared_kernels'] == 6
  assert result['scorers'] == ['residual', 'mc_variance', 'psnr', 'ssim']
  assert result['versus_scorers'] == ['residual']
  assert result['score_cost_ratio'] == pytest.approx(
      result['versus_images_per_s'] / result['score_images_per_s'])


def test_families_benchmark_prints_a_line_per_family(capsys):
  assert benchmark.main(['--families=ae,bergmann', '--image_size=32',
                         '--batch_size=2', '--repeats=1',
                         '--set=model.bergmann.latent=8',
                         '--set=num_devices=1']) == 0
  lines = [json.loads(line) for line in
           capsys.readouterr().out.splitlines()]
  assert [r['model'] for r in lines] == ['ae', 'bergmann']
  assert all(r['benchmark'] == 'family' and r['image_size'] == 32
             for r in lines)
  # The AE's default depth 6 needs multiples of 64 px.
  assert 'multiples of 64' in lines[0]['skipped']
  bergmann = lines[1]
  assert bergmann['train_images_per_s'] > 0
  assert bergmann['infer_images_per_s'] > 0
  # Its convolutions are Flax's: nothing to prepare.
  assert not bergmann['prepared'] and bergmann['prepared_kernels'] == 0
  with pytest.raises(SystemExit, match="unknown family vae"):
    benchmark.main(['--families=vae'])


def test_set_field_overrides_nested_fields_and_names_bad_keys():
  from configs import default
  config = default.get_config()
  benchmark.set_field(config, 'eval.similarity.fsim.noise_stride=2')
  benchmark.set_field(config, 'eval.norm=linf')
  assert config.eval.similarity.fsim.noise_stride == 2
  assert config.eval.norm == 'linf'
  with pytest.raises(SystemExit, match="no field 'eval.nrom'"):
    benchmark.set_field(config, 'eval.nrom=l1')
  with pytest.raises(SystemExit, match='KEY=VALUE'):
    benchmark.set_field(config, 'eval.norm')


COLD_KEYS = {f'{kind}_{state}_{key}' for kind in ('detector', 'aad')
             for state in ('cold', 'warm')
             for key in ('load_s', 'first_predict_s')}


def test_cold_start_reads_the_cache_in_a_new_process(tiny_launch, tmp_path,
                                                     capsys):
  """Fresh processes load the run and its export, predict, and the second
  of each finds its executables in the cache (figures: docs/deploy.md)."""
  workdir, _ = tiny_launch.reference
  cache = tmp_path / 'cache'
  assert benchmark.main(['--cold_start', f'--workdir={workdir}',
                         '--category=brick', f'--cache_dir={cache}']) == 0
  result = json.loads(capsys.readouterr().out.strip())
  assert result['benchmark'] == 'cold_start'
  assert COLD_KEYS <= set(result)
  assert all(result[k] > 0 for k in COLD_KEYS)
  for kind in ('detector', 'aad'):
    # The cold run filled the folder given by $AAD_CACHE_DIR; the warm
    # one compiled nothing new: every executable came from the cache.
    assert result[f'{kind}_cache_entries'] > 0
    assert any((cache / f'{kind}_xla').iterdir())
    assert result[f'{kind}_warm_new_entries'] == 0
  assert (cache / 'detector.aad').is_file()


def test_cold_start_needs_a_run(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    benchmark.main(['--cold_start'])
  assert exit_info.value.code == 2
  assert '--workdir' in capsys.readouterr().err
  with pytest.raises(SystemExit, match='not a trained run'):
    benchmark.main(['--cold_start', f'--workdir={tmp_path}'])
