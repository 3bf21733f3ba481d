"""Activation-Gaussian detector (seed 001, METHOD.md 5.4): an image score
only, from the 'activations' output (aad/scoring/gaussian.py)."""

import ml_collections

from aad.scoring import gaussian
from aad.scoring import Scorer


def defaults() -> ml_collections.ConfigDict:
  """The scorer's fields of config.eval."""
  c = ml_collections.ConfigDict()
  # For aesc/ae: vector_size activations sampled at fixed random positions
  # of each layer (enc0..enc<depth-1>, dec<depth-2>..dec0; () = all), one
  # Gaussian per layer fitted on the training images, covariance + reg
  # tr(Sigma) / vector_size on the diagonal.
  c.activation_gaussian = ml_collections.ConfigDict(dict(
      layers=(), vector_size=64, reg=1e-3, seed=0))
  return c


SCORER = Scorer(name='activation_gaussian', needs=('activations',),
                label='activation Gaussian', fit=gaussian.fit,
                image=gaussian.score, fit_needs=('activations',))
