"""Similarity measures between inputs and reconstructions (issue 13).

The thirteen measures of METHOD.md 5.3 (seed 003), as pure batched JAX
functions: `fn(x, y, **kwargs) -> Result(score, map)` with x the inputs and
y the reconstructions, NHWC float32 in [0, 1] of one shape. Every score is
(N,) and every map (N, H, W) is oriented so that larger means more
anomalous, as aad.scoring.ops's residuals. All are jit-able and run on device;
keyword arguments default to the papers' values.

| name | score | map | colour (C=3) |
| --- | --- | --- | --- |
| se | sum (x - y)^2 | (x - y)^2 summed over C | all values |
| rmse | sqrt(mean (x - y)^2) | - | all values |
| psnr | -PSNR (capped at 200 dB) | - | all values |
| imed | IMED^2 | its per-pixel terms | channels summed |
| ssim | 1 - SSIM | 1 - local SSIM | channel mean |
| zncc | 1 - ZNCC | - | all values |
| gmsd | GMSD | 1 - GMS | luminance |
| fsim | 1 - FSIM(c) | (1 - S_L) PC_m | luminance + YIQ chroma |
| issm | 1 - ISSM | - | luminance |
| sre | -SRE (clipped to +-200 dB) | - | channel mean of ratios |
| sam | mean angle (degrees) | angle | angle of channel vectors |
| uiq | 1 - Q | 1 - local Q | channel mean |
| sh | 1 - histogram intersection | - | channel mean |

Measures without a map are global statistics (or, for RMSE and PSNR,
monotone functions of SE whose per-pixel form would rank pixels as the SE
map does). Grayscale SAM is degenerate (0 or 180 degrees).

SH. The seed only names "SH" (METHOD.md Q9). We read it as METHOD.md's
assumption, histogram intersection of 256-bin normalised histograms: it is
the usual histogram similarity (Swain and Ballard 1991), it fits a list that
otherwise holds image-similarity-measures' metrics plus classic ones, and it
adds what no other measure here gives, a score blind to where pixels are.
The alternative reading, a distance between Sobel-gradient histograms,
would mostly repeat GMSD. METHOD.md names grey histograms; for colour we
average the intersections of the three channel histograms (the grey
histogram for C=1), so that a colour shift at constant luma still counts.

`MEASURES` maps each name to a `Measure` so a scorer can wrap any of them in
one line, e.g. `MEASURES['ssim'].score_fn(x, y)`. Its functions give the
same values as the plain ones above; on CPU the heavier ones run a few
images at a time (common.in_chunks), which was 2-3 times faster.
`python -m aad.speed.similarity` times them.

As scorers: each measure is the scorer of its own name, one tiny module of
aad/scoring/scorers/ built by `scorer`, comparing the input x with the
family's reconstruction. Its score is the scorer's own image score
(reported as the reduction 'own'); its map, where the measure has a local
form, is the scorer's map. The global measures have no map rather than a
constant one: they get image metrics only. Parameters come from
config.eval.similarity.<measure> (`defaults`, the papers' values); map and
score are computed in one pass (`joint`).
"""

import dataclasses
from typing import Callable

import jax
import ml_collections

from aad.scoring import Scorer

from aad.scoring.similarity.common import in_chunks
from aad.scoring.similarity.common import Result
from aad.scoring.similarity.feature import fsim
from aad.scoring.similarity.feature import phase_congruency
from aad.scoring.similarity.pixelwise import imed
from aad.scoring.similarity.pixelwise import psnr
from aad.scoring.similarity.pixelwise import rmse
from aad.scoring.similarity.pixelwise import sam
from aad.scoring.similarity.pixelwise import se
from aad.scoring.similarity.pixelwise import sre
from aad.scoring.similarity.pixelwise import zncc
from aad.scoring.similarity.statistical import canny
from aad.scoring.similarity.statistical import issm
from aad.scoring.similarity.statistical import sh
from aad.scoring.similarity.structural import gmsd
from aad.scoring.similarity.structural import ssim
from aad.scoring.similarity.structural import uiq


@dataclasses.dataclass(frozen=True)
class Measure:
  """One measure of the registry.

  fn(x, y, **kwargs) -> Result is the measure's function run on CPU over
  chunks of `chunk` images (common.in_chunks; same values, faster); has_map
  says whether Result.map is an array (else None).
  """
  name: str
  fn: Callable[..., Result]
  has_map: bool

  @property
  def score_fn(self) -> Callable[..., jax.Array]:
    """(x, y, **kwargs) -> (N,) scores, larger = more anomalous."""
    return lambda x, y, **kw: self.fn(x, y, **kw).score

  @property
  def map_fn(self) -> Callable[..., jax.Array] | None:
    """(x, y, **kwargs) -> (N, H, W) maps, or None for global measures."""
    if not self.has_map:
      return None
    return lambda x, y, **kw: self.fn(x, y, **kw).map


def _measures(*entries) -> dict[str, Measure]:
  return {name: Measure(name, in_chunks(fn, chunk, values, *per_pixel),
                       has_map)
          for name, fn, has_map, chunk, values, *per_pixel in entries}


# Chunk sizes (images per step): the fastest of none, 1, 2, 4 and 8 at
# 16 x 256 x 256 x 3 on a 2-core CPU; the cheap one-pass measures keep the
# whole batch. Those given with _TUNED take proportionally more images of
# smaller sizes. FSIM's chunks count pixels, not values (its 16 complex
# responses per image are of the luminance, whatever C is): one pair per
# step from 128 x 128 up, where a pair's responses already fill a core's
# L2 cache, and 4 pairs at 64 x 64 (_FSIM_TUNED).
_TUNED = 256 * 256 * 3
_FSIM_TUNED = 64 * 64
MEASURES: dict[str, Measure] = _measures(
    ('se', se, True, None, None),
    ('rmse', rmse, False, None, None),
    ('psnr', psnr, False, None, None),
    ('imed', imed, True, None, None),
    ('ssim', ssim, True, 4, _TUNED),
    ('zncc', zncc, False, None, None),
    ('gmsd', gmsd, True, 2, _TUNED),
    ('fsim', fsim, True, 4, _FSIM_TUNED, True),
    ('issm', issm, False, 2, _TUNED),
    ('sre', sre, False, None, None),
    ('sam', sam, True, None, None),
    ('uiq', uiq, True, 2, _TUNED),
    ('sh', sh, False, 2, _TUNED),
)

__all__ = ['MEASURES', 'Measure', 'Result', 'canny', 'phase_congruency'] + [
    name for name in MEASURES]


LABELS = {'se': 'SE', 'rmse': 'RMSE', 'psnr': 'PSNR', 'imed': 'IMED',
          'ssim': '1 - SSIM', 'zncc': 'ZNCC', 'gmsd': 'GMSD',
          'fsim': '1 - FSIM', 'issm': 'ISSM', 'sre': 'SRE', 'sam': 'SAM',
          'uiq': '1 - UIQ', 'sh': 'SH'}
NAMES = tuple(MEASURES)


def defaults() -> ml_collections.ConfigDict:
  """The measures' fields of config.eval: keyword arguments per measure,
  the papers' values. Grey levels in [0, 1]; fsim's scale maps them to the
  paper's 0..255 constants."""
  c = ml_collections.ConfigDict()
  c.similarity = ml_collections.ConfigDict(dict(
      se={}, rmse={}, zncc={}, sam={},
      psnr=dict(max_val=1.0, max_db=200.0),   # -PSNR, capped (identity)
      sre=dict(max_db=200.0),
      imed=dict(sigma=1.0, truncate=4.0),     # Gaussian metric, px
      ssim=dict(max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01,
                k2=0.03),                     # Wang et al. 2004
      uiq=dict(block_size=8),                 # Wang & Bovik 2002
      gmsd=dict(c=170.0 / 255.0**2),          # Xue et al. 2014
      # Zhang et al. 2011; noise_stride > 1 takes the phase-congruency
      # noise median on every n-th row and column (1 = the reference; 2
      # costs less, README "Comparing scorers").
      fsim=dict(chroma=True, scale=255.0, t1=0.85, t2=160.0, t3=200.0,
                t4=200.0, lam=0.03, nscale=4, norient=4, noise_stride=1),
      issm=dict(a=0.3, b=0.5, c=0.7, bins=10, low=100, high=200),
      sh=dict(bins=256)))                     # histogram intersection
  return c


def measure_kwargs(cfg, name: str) -> dict:
  """The measure's keyword arguments from config.eval.similarity.<name>
  ({} where the block or the measure's entry is absent: the defaults)."""
  block = cfg.get('similarity') if cfg is not None else None
  entry = block.get(name) if block is not None else None
  return dict(entry) if entry is not None else {}


def scorer(name: str) -> Scorer:
  """The scorer of measure `name` (the SCORER of its module)."""
  measure = MEASURES[name]

  def joint(x, outputs, fitted, cfg):
    del fitted
    result = measure.fn(x, outputs['reconstruction'],
                        **measure_kwargs(cfg, measure.name))
    return result.map, result.score

  amap = (lambda *args: joint(*args)[0]) if measure.has_map else None
  return Scorer(name=name, map=amap, label=LABELS[name],
                image=lambda *args: joint(*args)[1], joint=joint)
