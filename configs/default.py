"""Base config: every field of every experiment, with its unit.

Experiment files import this and change a few fields. Override any field on
the command line with `--config.<field>=value`; a mistyped field is an error.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the base config (AESc + Stain noise on the embedded textures)."""
  c = ml_collections.ConfigDict()
  c.name = 'default'       # default workdir is runs/<name>
  c.seed = 0               # every random draw derives from this
  c.num_devices = 0        # local devices to pmap over; 0 = all

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = 'textures'    # 'textures' (embedded demo benchmark)
  # Categories to run, one model each; empty = all of the dataset's.
  c.dataset.categories = ()
  c.dataset.data_dir = ''        # tfds cache; '' = $AAD_DATA_DIR or ~/.cache
  c.dataset.image_size = 128     # px, square; divisible by 2**model.depth
  c.dataset.channels = 1         # 1 = grayscale, 3 = colour

  c.model = ml_collections.ConfigDict()
  c.model.name = 'aesc'          # 'aesc' (skips) or 'ae' (plain)
  c.model.depth = 6              # stride-2 levels
  c.model.features = 16          # maps at level 0, doubled per level
  c.model.kernel = 5             # conv kernel size
  # 'fast': exact space-to-depth / sub-pixel forms of the strided and
  # upsampling convs (aad/models/layers.py); 'plain': textbook convs.
  c.model.conv_impl = 'fast'
  # Compute dtype: 'float32', or 'bfloat16' for GPU/TPU (parameters,
  # optimiser state and the loss stay float32; slower on CPUs).
  c.model.dtype = 'float32'
  # MC-dropout rate per level (finest first); () = the paper's for the model.
  c.model.dropout_rates = ()
  # METHOD.md Q1: the reference trains without dropout and only switches
  # it on for MC sampling, so False is the default.
  c.model.train_dropout = False

  c.corruption = ml_collections.ConfigDict()
  # Training-input noise: stain, gaussian, scratch, drops, structural,
  # stain_or_gaussian or none (aad/corruptions.py, METHOD.md 2). The block
  # of the same name holds its parameters; grey levels are 0..255.
  c.corruption.name = 'stain'
  c.corruption.stain = ml_collections.ConfigDict(dict(
      size=(0.01, 0.12),     # semi-axes, fraction of width / height
      color=(10, 220),       # grey level range (inclusive)
      irregularity=0.1,      # contour jitter, fraction of mean semi-axis
      # Edge blur sigma, fraction of the larger semi-axis: 0 is the
      # reference's "Stain" default (METHOD.md Q2), 0.15 its "StainBlur".
      blur=0.0,
      noise_var=0.05 / 255,  # texture noise variance, [0, 1] units
      n_points=20))          # contour control points
  c.corruption.gaussian = ml_collections.ConfigDict(dict(
      var=0.01))             # noise variance, [0, 1] units
  c.corruption.scratch = ml_collections.ConfigDict(dict(
      color=(150, 150)))     # grey level range
  c.corruption.drops = ml_collections.ConfigDict(dict(
      size=(0.01, 0.02),     # radius range, fraction of width
      color=(220, 220),      # grey level range
      nb=10,                 # disks per cluster
      spacing=0.1))          # disk centre spread, fraction of radius / 10
  c.corruption.structural = ml_collections.ConfigDict(dict(
      p_stain=0.6, p_scratch=0.2,  # the rest is drops
      color=(10, 220), stain_blur=0.15))
  c.corruption.stain_or_gaussian = ml_collections.ConfigDict(dict(
      p_stain=0.6, gaussian_var=0.1, stain_blur=0.15))

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 16        # global batch, split over devices
  c.train.num_steps = 2000       # optimiser steps per category
  c.train.learning_rate = 1e-3   # Adam (Keras default; METHOD.md Q4)
  c.train.adam_eps = 1e-7        # Keras' Adam epsilon
  # Steps run on device per host dispatch. CPUs unroll them (compile time
  # grows with it, speed does not), so 1 there; try 10+ on GPU/TPU.
  c.train.steps_per_call = 1
  c.train.log_every = 50         # steps between progress lines
  c.train.eval_every = 250       # steps between validation + checkpoint
  # Halve the LR when val PSNR has not improved by min_delta dB for
  # `patience` evaluations (the reference: factor 0.5, 1 dB, 30 epochs).
  c.train.plateau = False
  c.train.plateau_patience = 4
  c.train.plateau_factor = 0.5
  c.train.plateau_min_delta = 1.0

  c.eval = ml_collections.ConfigDict()
  # Map -> image score reductions (aad/evaluation.py): l1 (mean), l2 (root
  # mean square), linf (max), smooth_max (max after a Gaussian filter).
  c.eval.norm = 'l2'             # headline image score, one of `norms`
  c.eval.norms = ('l1', 'l2', 'linf', 'smooth_max')  # reported side by side
  c.eval.smooth_sigma = 4.0      # smooth_max Gaussian sigma, px of the maps
  # 'model': maps and masks at dataset.image_size; 'original': maps
  # upsampled bilinearly to the dataset's native mask size (MVTec's way).
  c.eval.resolution = 'model'
  c.eval.pro_fpr_limit = 0.3     # AU-PRO integrates PRO up to this FPR
  # Deployment threshold on the headline score from the good val images
  # only: their 'quantile' (threshold_quantile) or their 'max'.
  c.eval.threshold_mode = 'quantile'
  c.eval.threshold_quantile = 0.99
  c.eval.mc_samples = 30         # T, Monte-Carlo dropout passes
  c.eval.mc_chunk = 0            # passes per device call; 0 = from memory
  c.eval.batch_size = 16         # test images per device call
  # Example grid rows: the highest- and lowest-scored defective test
  # images (2/5 of the rows each) and the highest-scored good ones.
  c.eval.heatmap_rows = 10
  return c
