"""Model families, chosen by config.model.name (see aad/models/base.py).

Each family module has `family(config, axis_name) -> base.Family`. To add
one: write aad/models/<name>.py with that function (and any scorers of its
own outputs, registered with aad.scorers.register), list it below, and give
it a config file and tests.
"""

import ml_collections

# Scorers of any family's outputs, registered on import: every scorer
# lookup goes through a family (scorers.resolve), so importing them here
# makes them available wherever a model is (aad.scorers must not import
# them: they import it).
from aad.scoring import gaussian  # noqa: F401
from aad.scoring import normalisation  # noqa: F401
from aad.models import aesc
from aad.models import base
from aad.models import bergmann
from aad.models import dae
from aad.scoring.similarity import scorers as similarity_scorers  # noqa: F401

FAMILIES = {
    'aesc': aesc.family,
    'ae': aesc.family,
    'bergmann': bergmann.family,
    'dae_denoiser': dae.family,
}
DTYPES = aesc.DTYPES


def create(config: ml_collections.ConfigDict,
           axis_name: str | None = None) -> base.Family:
  """The family named by config.model.name, built from the whole config.

  Args:
    config: the experiment config (families read config.model, their own
      block under it, and what else their stages and outputs need).
    axis_name: pmap axis over which training BatchNorm averages its batch
      statistics, so N devices normalise exactly like one device with the
      global batch.
  """
  name = config.model.name
  if name not in FAMILIES:
    raise ValueError(f'config.model.name={name!r} is unknown; choose one of '
                     f'{", ".join(sorted(FAMILIES))}')
  return FAMILIES[name](config, axis_name)
