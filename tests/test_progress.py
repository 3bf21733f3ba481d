"""Progress lines: throttled, with count, rate and ETA (aad.runtime.logs)."""

import logging

from aad.runtime import logs


class _Clock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_counter_throttles_and_always_prints_the_last_line(caplog):
  clock = _Clock()
  with caplog.at_level(logging.INFO):
    counter = logs.Counter('scored', 8820, 'tiles', ' of 60 images',
                           every_s=5.0, clock=clock)
    for done in range(30, 8820 + 1, 30):  # 294 batches, 0.1 s each
      clock.now += 0.1
      counter.update(done)
  lines = [r.getMessage() for r in caplog.records]
  # One line per 5 s of the 29.4 s, and the last.
  assert 5 <= len(lines) <= 7, lines
  assert lines[0] == ('scored 1530/8820 tiles of 60 images '
                      '(300.0 tiles/s, ETA 0m24s)')
  assert lines[-1] == ('scored 8820/8820 tiles of 60 images '
                       '(300.0 tiles/s, ETA 0m00s)')


def test_counter_counts_images_by_default(caplog):
  clock = _Clock()
  with caplog.at_level(logging.INFO):
    counter = logs.Counter('scored', 16, clock=clock)
    clock.now += 2.0
    counter.update(16)
  assert caplog.records[-1].getMessage() == (
      'scored 16/16 images (8.0 images/s, ETA 0m00s)')
  assert logs.format_eta(187) == '3m07s'


def test_a_quick_phase_can_stay_silent(caplog):
  clock = _Clock()
  with caplog.at_level(logging.INFO):
    quick = logs.Counter('read', 10, quick_silent=True, clock=clock)
    for done in range(1, 11):
      clock.now += 0.1
      quick.update(done)
    assert not caplog.records
    slow = logs.Counter('read', 10, quick_silent=True, clock=clock)
    for done in range(1, 11):
      clock.now += 1.0
      slow.update(done)
  assert [r.getMessage() for r in caplog.records] == [
      'read 5/10 images (1.0 images/s, ETA 0m05s)',
      'read 10/10 images (1.0 images/s, ETA 0m00s)']


def test_training_line_after_a_silence_is_not_repeated_every_step(
    caplog, monkeypatch):
  # Between two log_every lines, one line per SILENT_S of silence: after
  # the first, the next is due only SILENT_S later, not at every step.
  import ml_collections
  import numpy as np
  from aad.training import loop
  clock = _Clock()
  monkeypatch.setattr(loop.time, 'time', clock)
  config = ml_collections.ConfigDict({'train': {'batch_size': 4}})
  progress = loop._Progress(config, 'brick', 0, 100)
  metrics = {'loss': np.array([0.5])}
  logged = []
  with caplog.at_level(logging.INFO):
    for step in range(1, 50):  # 1 s per step, no log_every line
      clock.now += 1.0
      if progress.due():
        progress.log(step, metrics, None, ckpts=None)
        logged.append(step)
  assert logged == [20, 40]
  assert caplog.records[0].getMessage() == (
      'brick step 20/100  loss 0.50000  4.0 img/s  ETA 1m20s')
