"""A scorer is one module found by its name: a file of one's own on the
path is usable by its dotted name, and every built-in scorer's module is
named as its scorer."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from aad import scoring
from configs import default

_FAMILY = types.SimpleNamespace(name='plain', scorers=('residual',),
                                output_names=('reconstruction',))

_PLUGIN = '''
"""Twice the squared residual, summed over channels."""

import jax.numpy as jnp

from aad.scoring import Scorer


def doubled(x, outputs, fitted, cfg):
  del fitted, cfg
  return 2 * jnp.sum((x - outputs['reconstruction']) ** 2, axis=-1)


SCORER = Scorer(name='doubled', map=doubled, label='doubled SE')
'''


def test_a_scorer_file_on_the_path_is_usable_by_its_dotted_name(
    tmp_path, monkeypatch):
  package = tmp_path / 'my_scorers'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'doubled.py').write_text(_PLUGIN)
  monkeypatch.syspath_prepend(str(tmp_path))
  config = default.get_config()
  config.eval.scorers = ('my_scorers.doubled', 'residual')
  chosen = scoring.resolve(config.eval.scorers, _FAMILY)
  assert [s.name for s in chosen] == ['my_scorers.doubled', 'residual']
  assert chosen[0].label == 'doubled SE'
  # One image of 1 x 2 px, 2 channels: (0.5, 0.25) and (1, 0) against a
  # reconstruction of 0.5 everywhere.
  images = np.array([[[[128, 64], [255, 0]]]], np.uint8)
  recon = jnp.full((1, 1, 2, 2), 0.5)
  out = scoring.make_maps_fn(chosen, config.eval)(
      {}, (images, {'reconstruction': recon}))
  x = images / 255.0
  by_hand = [[2 * ((x[0, 0, 0, 0] - .5) ** 2 + (x[0, 0, 0, 1] - .5) ** 2),
              2 * (0.25 + 0.25)]]
  np.testing.assert_allclose(out['maps']['my_scorers.doubled'][0], by_hand,
                             rtol=1e-6)
  np.testing.assert_allclose(out['maps']['my_scorers.doubled'][0, 0, 1], 1.0,
                             rtol=1e-6)


def test_unknown_and_misnamed_scorers_are_named(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="config.eval.scorers: unknown scorer "
                     "'no_such_scorer'"):
    scoring.resolve(('no_such_scorer',), _FAMILY)
  with pytest.raises(ValueError, match="config.eval.scorers: unknown scorer "
                     "'no_such_pkg.scorer'"):
    scoring.resolve(('no_such_pkg.scorer',), _FAMILY)
  package = tmp_path / 'other_scorers'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'misnamed.py').write_text(_PLUGIN)
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(ValueError, match="SCORER.name is 'doubled', not its "
                     "file name 'misnamed'"):
    scoring.resolve(('other_scorers.misnamed',), _FAMILY)


def test_every_built_in_scorer_module_is_named_as_its_scorer():
  names = scoring.builtin_names()
  assert {'residual', 'normalised', 'activation_gaussian', 'se',
          'fsim'} <= set(names)
  for name in names:
    assert scoring.get(name).name == name
