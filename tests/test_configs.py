"""Config files: they load, and their corruption blocks match the code."""

import importlib
import inspect

import pytest

from aad.models import corruptions
from aad import models
from aad import scoring
from aad import sweep
from aad.experiment import validate
from aad.experiment import workdir
from configs import default


@pytest.mark.parametrize('name, num_runs', [
    ('default', 0), ('aesc_stain', 0), ('mvtec_ad', 0), ('test', 0),
    ('ae_l2', 0), ('ae_ssim', 0), ('dae_denoiser', 0),
    ('aesc_stain_sweep', 18), ('test_sweep', 4), ('compare_families', 5),
    ('compare_scorers', 0), ('draem', 0)])
def test_config_files_load_and_are_consistent(name, num_runs):
  config = importlib.import_module(f'configs.{name}').get_config()
  assert len(sweep.expand(config)) == num_runs
  runs = [sweep.point_config(config, p) for p in sweep.expand(config)]
  for run in runs or [config]:
    family = models.create(run)
    family.check_size(run.dataset.image_size,
                      run.dataset.image_width or run.dataset.image_size,
                      'the image size')
    assert scoring.resolve(run.eval.scorers, family)
    assert run.eval.norm in run.eval.norms
    assert callable(corruptions.from_config(run.corruption))
    validate.check_config(run)  # every shipped config passes the check


@pytest.mark.parametrize('name', sorted(set(corruptions.CORRUPTIONS) -
                                         {'none'}))
def test_corruption_blocks_list_every_parameter_with_its_default(name):
  block = default.get_config().corruption[name].to_dict()
  signature = inspect.signature(corruptions.CORRUPTIONS[name])
  defaults = {k: p.default for k, p in signature.parameters.items()
              if p.kind == p.KEYWORD_ONLY}
  assert block == defaults
  corruptions.make(name, block)


def test_unknown_corruption_name_is_named():
  config = default.get_config().corruption
  config.name = 'stains'
  with pytest.raises(ValueError, match='stains'):
    corruptions.from_config(config)


def test_compare_scorers_lists_every_scorer_aesc_can_use():
  config = importlib.import_module('configs.compare_scorers').get_config()
  family = models.create(config)
  usable = {n for n in scoring.builtin_names()
            if set(scoring.get(n).needs) <= set(family.output_names)}
  assert set(config.eval.scorers) == usable


def test_the_family_comparison_runs_draem_as_configs_draem():
  from configs import compare_families  # pylint: disable=g-import-not-at-top
  from configs import draem  # pylint: disable=g-import-not-at-top
  config = compare_families.get_config()
  point = [p for p in sweep.expand(config) if 'draem' in p.name]
  run = sweep.point_config(config, point[0])
  shipped = draem.get_config()
  differ = set(workdir.changed_fields(shipped, run))
  # Only the name, the DAE's block (unused) and the scorer list, which
  # resolves to the same scorers.
  assert differ - {'name', 'eval.scorers'} == {
      k for k in differ if k.startswith('model.dae_denoiser.')}
  assert 'eval.norm' not in differ and 'model.name' not in differ
  family = models.create(run)
  assert [s.name for s in scoring.resolve(run.eval.scorers, family)] == [
      s.name for s in scoring.resolve(shipped.eval.scorers, family)]
