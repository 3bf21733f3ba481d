"""DatasetInfo for datasets that live only on this machine.

tfds's DatasetBuilder, for a dataset not prepared yet, asks
DatasetInfo.initialize_from_bucket for precomputed metadata on tfds's
public bucket; that call first makes a temporary folder (/tmp/tmp*tfds)
and never removes it, so every unprepared builder left an empty folder
behind (hundreds after a day of tests). None of our datasets is on that
bucket (and nothing may be downloaded at run time), so the lookup is
skipped.
"""

import tensorflow_datasets as tfds


class LocalDatasetInfo(tfds.core.DatasetInfo):
  """tfds.core.DatasetInfo without the lookup on tfds's bucket."""

  def initialize_from_bucket(self) -> None:
    return None
