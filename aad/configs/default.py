"""Base config: every field of every experiment, with its unit.

One function per block. The families' fields of config.model, the
corruptions of config.corruption and the scorers' options in config.eval
come from the defaults() beside their code (aad/models/<name>.py,
aad/models/corruptions.py, aad/scoring/scorers/<name>.py); this file
assembles them.

Experiment files import this and change a few fields. Override any field on
the command line with `--config.<field>=value`; a mistyped field is an error.
"""

import ml_collections

from aad.models import aesc
from aad.models import bergmann
from aad.models import corruptions
from aad.models import dae_denoiser
from aad.models import draem
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
  # normalised scorer's mode from the training images (aad/experiment/recommend.py,
  # configs/folder.py), overriding those fields; False: as configured.
  c.auto = False
  c.distributed = _distributed()
  c.sweep = _sweep()
  c.dataset = _dataset()
  c.model = _model()
  c.corruption = corruptions.defaults()
  c.train = _train()
  c.eval = _eval()
  return c


def _distributed() -> ml_collections.ConfigDict:
  """config.distributed: several hosts."""
  b = ml_collections.ConfigDict()
  # Several hosts (aad/runtime/parallel.py; launch/ has SLURM, TPU VM and local
  # scripts). One process per host (or per GPU), all running the same
  # command; the defaults suit one process and SLURM / TPU launches.
  # 'auto': start jax.distributed when coordinator_address (or
  # $JAX_COORDINATOR_ADDRESS) is set or in a SLURM step of several tasks;
  # 'on': always (TPU VM pods, where JAX finds the workers); 'off': never.
  b.initialize = 'auto'
  b.coordinator_address = ''  # 'host:port' of process 0
  b.num_processes = 0         # with coordinator_address; 0 = detect
  b.process_id = -1           # this process, 0..n-1; -1 = detect
  # Train images each host puts on its devices. 'all': every image (global
  # batches and per-image keys are then those of one host); 'shard': the
  # host's 1/num_processes of them, for a split too large to copy to every
  # device; 'auto': 'all' up to max_replicated_mb, else 'shard'.
  b.train_data = 'auto'
  b.max_replicated_mb = 2048  # MB of uint8 train images
  return b


def _sweep() -> ml_collections.ConfigDict:
  """config.sweep: a sweep declared as data."""
  b = ml_collections.ConfigDict()
  # Sweep (aad/sweep.py): axes as data, mirroring the config's structure,
  # each leaf the tuple of values of that field, e.g.
  #   c.sweep.seed = (0, 1); c.sweep.corruption.name = ('stain', 'gaussian')
  # The runs are the Cartesian product, one workdir each. Empty: no sweep.
  return b


def _dataset() -> ml_collections.ConfigDict:
  """config.dataset: which data, how it is prepared."""
  b = ml_collections.ConfigDict()
  # 'textures' (embedded demo benchmark), 'mvtec_ad' (manual download,
  # see manual_dir) or 'folder' (any folder in MVTec layout, see path).
  b.name = 'textures'
  # Categories to run, one model each; empty = all of the dataset's.
  b.categories = ()
  b.data_dir = ''        # tfds cache; '' = $AAD_DATA_DIR or ~/.cache
  # 'folder': a category folder (train/good, test/<type>, ground_truth/) or
  # a folder of such category folders.
  b.path = ''
  # 'mvtec_ad': folder holding mvtec_anomaly_detection.tar.xz or its
  # extracted categories; '' = <data_dir>/downloads/manual.
  b.manual_dir = ''
  # A defective test image without a mask: 'error' (stop and name it) or
  # 'image_level' (image metrics only; pixel metrics skip it).
  b.missing_masks = 'error'
  # Share of train/good held out (first by name, as the reference's Keras
  # validation_split) when the dataset has no validation split.
  b.val_fraction = 0.2
  b.image_size = 128     # px, height (and width unless image_width)
  b.image_width = 0      # px; 0 = image_size (square)
  b.channels = 1         # 1 = grayscale, 3 = colour
  # 'none', or 'peel': crop each image to its object (Otsu threshold,
  # largest component, eroded by roi_margin px of the native image; seed
  # 003, METHOD.md 5.3) and set the rest of the crop to 0.
  b.roi = 'none'
  b.roi_margin = 8
  # Patch mode for large or elongated images: > 0 trains on random
  # patch_size x patch_size crops of the (resized) images and scores by
  # tiles patch_stride apart, averaging overlaps; 0 = whole images.
  b.patch_size = 0
  b.patch_stride = 0     # px; 0 = patch_size // 2
  return b


def _model() -> ml_collections.ConfigDict:
  """config.model: the family and every family's fields."""
  b = ml_collections.ConfigDict()
  # The model family (aad/models/<name>.py): 'aesc' (AE with additive
  # skips), 'ae' (the same without skips), 'bergmann' (seed 002),
  # 'dae_denoiser' (seed 000), 'draem' (reconstruct and discriminate,
  # DRAEM). Each family module's defaults() gives its
  # fields: aesc's flat ones (aesc and ae read them), the others' blocks
  # named after them.
  b.name = 'aesc'
  b.update(aesc.defaults())
  b.update(bergmann.defaults())
  b.update(dae_denoiser.defaults())
  b.update(draem.defaults())
  return b


def _train() -> ml_collections.ConfigDict:
  """config.train: the optimiser and the training loop."""
  b = ml_collections.ConfigDict()
  b.batch_size = 16        # global batch, split over devices
  b.num_steps = 2000       # optimiser steps per category
  # With config.auto: num_steps such that training sees this many pixels
  # (aad/experiment/recommend.py).
  b.auto_pixels = 16 * 128 * 128 * 3000
  b.learning_rate = 1e-3   # Adam (Keras default; METHOD.md Q4)
  b.adam_eps = 1e-7        # Keras' Adam epsilon
  # Steps run on device per host dispatch. CPUs unroll them (compile time
  # grows with it, speed does not), so 1 there; try 10+ on GPU/TPU.
  b.steps_per_call = 1
  b.log_every = 50         # steps between progress lines
  b.eval_every = 250       # steps between validation + checkpoint
  # Halve the LR when val PSNR has not improved by min_delta dB for
  # `patience` evaluations (the reference: factor 0.5, 1 dB, 30 epochs).
  b.plateau = False
  b.plateau_patience = 4
  b.plateau_factor = 0.5
  b.plateau_min_delta = 1.0
  return b


def _eval() -> ml_collections.ConfigDict:
  """config.eval: scorers, metrics, thresholds, MC dropout."""
  b = ml_collections.ConfigDict()
  # Scorers to evaluate (aad/scoring/scorers/<name>.py, or a module of
  # one's own named with its dots), the first being the headline one (heat maps, aad.predict's default); () = the
  # family's default list (aesc/ae: residual, mc_variance, baseline_mean).
  b.scorers = ()
  # Map -> image score reductions (aad/metrics/protocol.py): l1 (mean), l2 (root
  # mean square), linf (max), smooth_max (max after a Gaussian filter),
  # top_k (mean of the largest 0.1% of the values).
  b.norm = 'l2'             # headline image score, one of `norms`
  b.norms = ('l1', 'l2', 'linf', 'smooth_max')  # reported side by side
  b.smooth_sigma = 4.0      # smooth_max Gaussian sigma, px of the maps
  # Patch mode: px over which each tile's maps are weighted down towards
  # the tile's edges, where the networks' zero padding shows
  # (aad/data/tiling.py); 0 = the plain mean of the overlapping tiles.
  b.tile_margin = 0.0
  # 'model': maps and masks at dataset.image_size; 'original': maps
  # upsampled bilinearly to the dataset's native mask size (MVTec's way).
  b.resolution = 'model'
  b.pro_fpr_limit = 0.3     # AU-PRO integrates PRO up to this FPR
  # Deployment threshold on the headline score from the good val images
  # only: their 'quantile' (threshold_quantile) or their 'max'.
  b.threshold_mode = 'quantile'
  b.threshold_quantile = 0.99
  # aad.predict's masks: pixels above this quantile of the good val maps.
  b.pixel_threshold_quantile = 0.999
  # > 0: also report pixel precision / recall / F1 of map >= pixel_tau, per
  # defect type (seed 002's fixed tau, in map units); 0 = off.
  b.pixel_tau = 0.0
  # Scorers' options: each scorer module's defaults() (aad/scoring/
  # scorers/<name>.py; the similarity measures' in aad/scoring/similarity/
  # scorers.py, METHOD.md 5.3).
  b.update(feature_mask.defaults())
  b.update(similarity.defaults())
  b.update(activation_gaussian.defaults())
  b.update(normalised.defaults())
  b.mc_samples = 30         # T, Monte-Carlo dropout passes
  b.mc_chunk = 0            # passes per device call; 0 = from memory
  b.batch_size = 16         # test images per device call
  # Example grid rows: the highest- and lowest-scored defective test
  # images (2/5 of the rows each) and the highest-scored good ones.
  b.heatmap_rows = 10
  return b
