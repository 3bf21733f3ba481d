"""Negative signal-to-reconstruction-error ratio (global: no map)."""

from aad.scoring import similarity

SCORER = similarity.scorer('sre')
