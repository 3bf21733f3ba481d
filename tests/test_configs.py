"""Config files: they load, and their corruption blocks match the code."""

import importlib
import inspect

import pytest

from aad import corruptions
from aad import train
from configs import default


@pytest.mark.parametrize('name', ['default', 'aesc_stain', 'mvtec_ad', 'test'])
def test_config_files_load_and_are_consistent(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  assert config.dataset.image_size % 2**config.model.depth == 0
  assert config.eval.norm in config.eval.norms
  assert callable(train.make_corruption(config.corruption))


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
    train.make_corruption(config)
