"""Error maps normalised against what the model gets wrong on good images
(aad/scoring/normalisation.py), fitted on the good validation images."""

import ml_collections

from aad.scoring import normalisation
from aad.scoring import Scorer


def defaults() -> ml_collections.ConfigDict:
  """The scorer's fields of config.eval."""
  c = ml_collections.ConfigDict()
  # Error maps (`base`, scorers with a map; several are averaged)
  # normalised by the mean and std of the error on the good validation
  # images, per `mode`: 'position' (per pixel, for aligned images), 'local'
  # (per bin of local intensity and texture: `bins` x `bins` quantile bins
  # of the Gaussian local mean and std of `local_sigma` px) or 'both';
  # per-position statistics pooled over a Gaussian of `position_sigma` px
  # (0: each pixel alone); then clipped at `clip` (0: off), smoothed by a
  # Gaussian of `smooth_sigma` px and, if `line_length` > 0, by the largest
  # mean along a line among `orientations` directions (sigma `line_length`
  # px along, `line_width` across; aad/scoring/lines.py); own image score:
  # mean of the top `top_k` fraction of the map. sides=2: less error than
  # on the good images counts as well as more (each direction filtered on
  # its own, the larger kept).
  c.normalised = ml_collections.ConfigDict(dict(normalisation.DEFAULTS))
  return c


SCORER = Scorer(name='normalised', map=normalisation.normalised_map,
                label='normalised error', fit=normalisation.fit,
                image=normalisation.image_score, joint=normalisation.joint,
                fit_needs=('reconstruction',), fit_split='val')
