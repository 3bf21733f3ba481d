"""Negative signal-to-reconstruction-error ratio (global: no map)."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('sre')
