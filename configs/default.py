"""Base config: every field of every experiment, with its unit.

The families' fields of config.model and the scorers' options in
config.eval come from the defaults() beside their code (aad/models/<name>.py,
aad/scoring/scorers/<name>.py); this file assembles them.

Experiment files import this and change a few fields. Override any field on
the command line with `--config.<field>=value`; a mistyped field is an error.
"""

import ml_collections

from aad.models import aesc
from aad.models import bergmann
from aad.models import dae_denoiser
from aad.scoring.scorers import activation_gaussian
from aad.scoring.scorers import feature_mask
from aad.scoring.scorers import normalised
from aad.scoring import similarity


def get_config() -> ml_collections.ConfigDict:
  """Returns the base config (AESc + Stain noise on the embedded textures)."""
  c = ml_collections.ConfigDict()
  c.name = 'default'       # default workdir is runs/<name>
  c.seed = 0               # every random draw derives from this
  c.num_devices = 0        # devices per process to pmap over; 0 = all
  # True: choose image size, channels, patch mode, training steps and the
  # normalised scorer's mode from the training images (aad/recommend.py,
  # configs/folder.py), overriding those fields; False: as configured.
  c.auto = False

  # Several hosts (aad/parallel.py; launch/ has SLURM, TPU VM and local
  # scripts). One process per host (or per GPU), all running the same
  # command; the defaults suit one process and SLURM / TPU launches.
  c.distributed = ml_collections.ConfigDict()
  # 'auto': start jax.distributed when coordinator_address (or
  # $JAX_COORDINATOR_ADDRESS) is set or in a SLURM step of several tasks;
  # 'on': always (TPU VM pods, where JAX finds the workers); 'off': never.
  c.distributed.initialize = 'auto'
  c.distributed.coordinator_address = ''  # 'host:port' of process 0
  c.distributed.num_processes = 0         # with coordinator_address; 0 = detect
  c.distributed.process_id = -1           # this process, 0..n-1; -1 = detect
  # Train images each host puts on its devices. 'all': every image (global
  # batches and per-image keys are then those of one host); 'shard': the
  # host's 1/num_processes of them, for a split too large to copy to every
  # device; 'auto': 'all' up to max_replicated_mb, else 'shard'.
  c.distributed.train_data = 'auto'
  c.distributed.max_replicated_mb = 2048  # MB of uint8 train images

  # Sweep (aad/sweep.py): axes as data, mirroring the config's structure,
  # each leaf the tuple of values of that field, e.g.
  #   c.sweep.seed = (0, 1); c.sweep.corruption.name = ('stain', 'gaussian')
  # The runs are the Cartesian product, one workdir each. Empty: no sweep.
  c.sweep = ml_collections.ConfigDict()

  c.dataset = ml_collections.ConfigDict()
  # 'textures' (embedded demo benchmark), 'mvtec_ad' (manual download,
  # see manual_dir) or 'folder' (any folder in MVTec layout, see path).
  c.dataset.name = 'textures'
  # Categories to run, one model each; empty = all of the dataset's.
  c.dataset.categories = ()
  c.dataset.data_dir = ''        # tfds cache; '' = $AAD_DATA_DIR or ~/.cache
  # 'folder': a category folder (train/good, test/<type>, ground_truth/) or
  # a folder of such category folders.
  c.dataset.path = ''
  # 'mvtec_ad': folder holding mvtec_anomaly_detection.tar.xz or its
  # extracted categories; '' = <data_dir>/downloads/manual.
  c.dataset.manual_dir = ''
  # A defective test image without a mask: 'error' (stop and name it) or
  # 'image_level' (image metrics only; pixel metrics skip it).
  c.dataset.missing_masks = 'error'
  # Share of train/good held out (first by name, as the reference's Keras
  # validation_split) when the dataset has no validation split.
  c.dataset.val_fraction = 0.2
  c.dataset.image_size = 128     # px, height (and width unless image_width)
  c.dataset.image_width = 0      # px; 0 = image_size (square)
  c.dataset.channels = 1         # 1 = grayscale, 3 = colour
  # 'none', or 'peel': crop each image to its object (Otsu threshold,
  # largest component, eroded by roi_margin px of the native image; seed
  # 003, METHOD.md 5.3) and set the rest of the crop to 0.
  c.dataset.roi = 'none'
  c.dataset.roi_margin = 8
  # Patch mode for large or elongated images: > 0 trains on random
  # patch_size x patch_size crops of the (resized) images and scores by
  # tiles patch_stride apart, averaging overlaps; 0 = whole images.
  c.dataset.patch_size = 0
  c.dataset.patch_stride = 0     # px; 0 = patch_size // 2

  c.model = ml_collections.ConfigDict()
  # The model family (aad/models/<name>.py): 'aesc' (AE with additive
  # skips), 'ae' (the same without skips), 'bergmann' (seed 002),
  # 'dae_denoiser' (seed 000). Each family module's defaults() gives its
  # fields: aesc's flat ones (aesc and ae read them), the others' blocks
  # named after them.
  c.model.name = 'aesc'
  c.model.update(aesc.defaults())
  c.model.update(bergmann.defaults())
  c.model.update(dae_denoiser.defaults())

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

  # DRAEM-like Perlin blobs filled with the image's own texture from
  # elsewhere, changed in contrast (gain) and level (shift, [0, 1] units).
  c.corruption.perlin = ml_collections.ConfigDict(dict(
      scale=(1, 32),         # Perlin lattice cells per axis, log-uniform
      threshold=0.5,         # noise level above which a pixel is masked
      opacity=(0.2, 1.0),    # fill opacity range
      gain=(0.5, 1.5), shift=(-0.25, 0.25),
      p_clean=0.0))          # probability of no corruption

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
  # Scorers to evaluate (aad/scoring/scorers/<name>.py, or a module of
  # one's own named with its dots), the first being the headline one (heat maps, aad.predict's default); () = the
  # family's default list (aesc/ae: residual, mc_variance, baseline_mean).
  c.eval.scorers = ()
  # Map -> image score reductions (aad/evaluation.py): l1 (mean), l2 (root
  # mean square), linf (max), smooth_max (max after a Gaussian filter),
  # top_k (mean of the largest 0.1% of the values).
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
  # aad.predict's masks: pixels above this quantile of the good val maps.
  c.eval.pixel_threshold_quantile = 0.999
  # > 0: also report pixel precision / recall / F1 of map >= pixel_tau, per
  # defect type (seed 002's fixed tau, in map units); 0 = off.
  c.eval.pixel_tau = 0.0
  # Scorers' options: each scorer module's defaults() (aad/scoring/
  # scorers/<name>.py; the similarity measures' in aad/scoring/similarity/
  # scorers.py, METHOD.md 5.3).
  c.eval.update(feature_mask.defaults())
  c.eval.update(similarity.defaults())
  c.eval.update(activation_gaussian.defaults())
  c.eval.update(normalised.defaults())
  c.eval.mc_samples = 30         # T, Monte-Carlo dropout passes
  c.eval.mc_chunk = 0            # passes per device call; 0 = from memory
  c.eval.batch_size = 16         # test images per device call
  # Example grid rows: the highest- and lowest-scored defective test
  # images (2/5 of the rows each) and the highest-scored good ones.
  c.eval.heatmap_rows = 10
  return c
