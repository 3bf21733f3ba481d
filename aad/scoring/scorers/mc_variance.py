"""Per-pixel variance of the MC-dropout passes (METHOD.md 4.2)."""

from aad.scoring import Scorer


def mc_variance(x, outputs, fitted, cfg):
  del x, fitted, cfg
  return outputs['mc_variance']


SCORER = Scorer(name='mc_variance', map=mc_variance, needs=('mc_variance',),
                label='MC variance')
