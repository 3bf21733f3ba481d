"""Your own folder with the small AESc and the `normalised` scorer.

  python -m aad.main --config=configs/folder_aesc.py --config.dataset.path=DIR

The folder config before the dev suite, tuned on kolektorsdd: better than
configs/folder.py on thin cracks in aligned parts (kolektorsdd 0.913
against 0.555 image AUROC), at chance on smudges (dagm_class1 0.483
against 0.998) and lower on the suite's mean (docs/results.md "The dev
suite"); about 5 minutes per set on a 2-core CPU. Image size, channels,
patch mode, training steps and the line filter are chosen from the
training images as in configs/folder.py. The rest:

- a small AESc (depth 5, 8..128 maps, 3x3 kernels), fast enough on a CPU
  to train at (near) native resolution;
- trained to remove DRAEM-like Perlin blobs of displaced texture
  (corruption 'perlin'), so that it does not learn the identity;
- scored by the `normalised` scorer: the FSIM error map divided by what
  the model gets wrong on the good validation images, clipped, averaged
  along lines (the largest of 16 directions; in patch mode, else a
  Gaussian blur), with the mean of its top 0.1% as the image score (the
  headline). docs/ablations.md has the ablation.
"""

from aad.configs import default
from aad.configs import folder


def get_config():
  c = folder.get_config()
  c.name = 'folder_aesc'
  c.model.name = 'aesc'
  c.model.depth = 5
  c.model.features = 8
  c.model.kernel = 3
  c.corruption.name = 'perlin'
  c.train.auto_pixels = default.get_config().train.auto_pixels
  c.eval.scorers = ('normalised', 'residual', 'baseline_mean')
  # Headline image score: the mean of the top 0.1% of the map (the
  # normalised scorer's own score too), not a global norm. The scorer's
  # fields are configs/folder.py's.
  c.eval.norm = 'top_k'
  return c
