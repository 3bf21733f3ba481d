"""The recommended config for your own folder in MVTec layout.

  python -m aad.main --config=configs/folder.py --config.dataset.path=DIR

Image size, channels, patch mode and training steps are chosen from the
training images by the rules of aad/experiment/recommend.py (config.auto;
never from test images or labels), and logged; any of them given on the
command line (--config.train.num_steps=1000, ...) is kept instead. The
rest is fixed here, chosen on the worst set and the mean of the dev suite
(`python -m aad.suite`, docs/results.md "The dev suite"):

- the reconstruct-and-discriminate family (aad/models/draem.py): an
  autoencoder learns to remove simulated anomalies and a U-Net on the
  input stacked with its reconstruction learns to segment them, both from
  scratch, narrow enough to train in 10-20 minutes per set on a 2-core CPU
  (1400 steps of 16 patches of 128 px);
- simulated anomalies: Perlin blobs filled with a procedural texture (2 in
  5), the image's own texture displaced (2 in 5) or the image smoothed (1
  in 5: texture lost, as under a smudge);
- scored by the U-Net's probability map (`segmentation`), its image score
  the map's maximum after a Gaussian (`smooth_max`, the headline).

configs/folder_aesc.py keeps the folder config of before the dev suite
(a small AESc and the `normalised` scorer): better on thin cracks in
aligned parts (kolektorsdd), at chance on smudges (dagm_class1).
"""

from aad.configs import default


def get_config():
  c = default.get_config()
  c.name = 'folder'
  c.auto = True
  # Chosen from the training images (aad/experiment/recommend.py); give a value on
  # the command line to keep it.
  c.dataset.channels = 0
  c.dataset.image_size = 0
  c.dataset.patch_size = -1
  c.train.num_steps = 0
  c.eval.normalised.line_length = -1.0
  c.dataset.name = 'folder'
  c.dataset.categories = ()
  c.model.name = 'draem'
  c.model.draem.p_foreign = 0.4
  c.model.draem.p_smooth = 0.2
  # The rules' step budget: 1400 steps of 16 patches of 128 px.
  c.train.auto_pixels = 16 * 128 * 128 * 1400
  c.train.log_every = 100
  c.eval.scorers = ('segmentation', 'residual', 'baseline_mean')
  c.eval.norms = ('l2', 'linf', 'smooth_max', 'top_k')
  c.eval.norm = 'smooth_max'
  # The `normalised` scorer, where listed (configs/folder_aesc.py): the
  # FSIM error map in z-scores of the good validation images per pixel
  # position, clipped at z = 5; in patch mode (large images) then the
  # largest mean along a line (sigma 32 px along, 2 across, 16 directions)
  # instead of an isotropic blur: thin cracks and scratches rise only a
  # little above the grain per pixel, but along a line
  # (aad/scoring/lines.py; docs/ablations.md).
  # line_length (with smooth_sigma) is chosen by the rules.
  c.eval.normalised.base = ('fsim',)
  c.eval.normalised.smooth_sigma = 0.0
  c.eval.normalised.clip = 5.0
  c.eval.normalised.line_width = 2.0
  c.eval.normalised.orientations = 16
  return c
