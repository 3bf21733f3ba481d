"""aad.runtime.checkpoint: a restore into a model of other shapes fails before
orbax reads anything."""

import numpy as np
import pytest

from aad.runtime import checkpoint


def _state(width: int) -> dict:
  return {'params': {'dense': {'kernel': np.arange(3 * width, dtype=np.float32
                                                   ).reshape(3, width)}},
          'step': np.array(7, np.int32)}


def test_restore_round_trip_in_a_fresh_manager(tmp_path):
  saved = checkpoint.Checkpoints(str(tmp_path))
  saved.save(7, _state(4), {'seconds': 1.5}, 0.25)
  saved.close()
  ckpts = checkpoint.Checkpoints(str(tmp_path))
  state, meta = ckpts.restore(7, _state(4))
  ckpts.close()
  np.testing.assert_array_equal(state['params']['dense']['kernel'],
                                _state(4)['params']['dense']['kernel'])
  assert int(state['step']) == 7 and meta == {'seconds': 1.5}


def test_restore_into_other_shapes_fails_before_reading(tmp_path,
                                                        monkeypatch):
  saved = checkpoint.Checkpoints(str(tmp_path))
  saved.save(7, _state(4), {'seconds': 1.5}, 0.25)
  saved.close()
  # A manager of this process that has neither saved nor restored, as
  # aad.evaluate opens one; orbax must not start its reads at all (its
  # concurrent reads' errors were logged later with tracebacks).
  ckpts = checkpoint.Checkpoints(str(tmp_path))

  def no_read(*args, **kwargs):
    raise AssertionError('orbax started reading the arrays')

  monkeypatch.setattr(ckpts._manager, 'restore', no_read)
  with pytest.raises(ValueError, match=r'step 7 stores 1 arrays with another '
                     r'shape than the model, e\.g\. params/dense/kernel: '
                     r'\(3, 4\) against \(3, 5\)'):
    ckpts.restore(7, _state(5))
  ckpts.close()
