"""|x - reconstruction| summed over channels (METHOD.md 4.1)."""

from aad.scoring import ops
from aad.scoring import Scorer


def residual(x, outputs, fitted, cfg):
  del fitted, cfg
  return ops.residual_map(x, outputs['reconstruction'])


SCORER = Scorer(name='residual', map=residual)
