"""|x - mean training image| summed over channels: no learning at all, it
shows how hard the data are."""

import jax.numpy as jnp
import numpy as np

from aad.scoring import ops
from aad.scoring import Scorer


def mean_image(images: np.ndarray, outputs, cfg) -> np.ndarray:
  del outputs, cfg
  return images.astype(np.float32).mean(0) / 255.0


def baseline_mean(x, outputs, fitted, cfg):
  del outputs, cfg
  return ops.over_channels(jnp.abs(x - fitted))


SCORER = Scorer(name='baseline_mean', map=baseline_mean, needs=(),
                fit=mean_image, label='mean-image baseline', baseline=True)
