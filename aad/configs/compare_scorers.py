"""Every scorer usable with AESc side by side: the ranking of issue 13.

  python -m aad.main --config=configs/compare_scorers.py

AESc + stain noise as configs/aesc_stain.py (64 px, 1000 steps per
category of the embedded benchmark), scored by the method's scorers
(residual first, the headline; MC-dropout variance; the mean-image
baseline), seed 002's max-channel residual, seed 001's activation
Gaussian (METHOD.md 5.4), the residual normalised on the good validation
images (aad/scoring/normalisation.py), and by the thirteen similarity measures of seed
003 (METHOD.md 5.3) between input and reconstruction. Each report opens with a ranking
of all of them by image and pixel AUROC (aad/experiment/testing.py RANKING_NOTE).
"""

from aad.scoring.similarity import MEASURES
from aad.configs import aesc_stain

# The method's scorers (METHOD.md 4), seed 002's max-channel residual.
METHOD_SCORERS = ('residual', 'mc_variance', 'baseline_mean', 'residual_max',
                  'activation_gaussian', 'normalised')


def get_config():
  c = aesc_stain.get_config()
  c.name = 'compare_scorers'
  c.eval.scorers = METHOD_SCORERS + tuple(MEASURES)
  return c
