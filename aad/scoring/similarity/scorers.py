"""The thirteen similarity measures as scorers (issue 13, METHOD.md 5.3).

Each measure of aad.scoring.similarity.MEASURES is the scorer of its own
name ('se', 'ssim', 'fsim', ...), one tiny module of aad/scoring/scorers/
built by `scorer`, comparing the input x with the family's reconstruction.
Its score (the measure's standard image form, larger = more anomalous) is
the scorer's own image score, reported as the reduction 'own'; its map,
where the measure has a local form (se, imed, ssim, gmsd, fsim, sam, uiq),
is the scorer's map. The global measures (rmse, psnr, zncc, issm, sre, sh)
have no map rather than a constant one: they get image metrics only, and
reports and aad.predict skip their pixel parts.

Parameters come from config.eval.similarity.<measure> (`defaults`, the
papers' values); map and score are computed in one pass (`joint`).
"""

import ml_collections

from aad.scoring.scorer import Scorer
from aad.scoring.similarity import MEASURES

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
