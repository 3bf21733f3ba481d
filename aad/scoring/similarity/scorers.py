"""The thirteen similarity measures as scorers (issue 13, METHOD.md 5.3).

Each measure of aad.scoring.similarity.MEASURES is registered under its own name
('se', 'ssim', 'fsim', ...) as a scorer comparing the input x with the
family's reconstruction. Its score (the measure's standard image form,
larger = more anomalous) is the scorer's own image score, reported as the
reduction 'own'; its map, where the measure has a local form (se, imed,
ssim, gmsd, fsim, sam, uiq), is the scorer's map. The global measures
(rmse, psnr, zncc, issm, sre, sh) register no map rather than a constant
one: they get image metrics only, and reports and aad.predict skip their
pixel parts.

Parameters come from config.eval.similarity.<measure> (configs/default.py,
the papers' values); map and score are computed in one pass (`joint`).
"""

from aad.scoring import scorer as scorers
from aad.scoring.similarity import MEASURES

LABELS = {'se': 'SE', 'rmse': 'RMSE', 'psnr': 'PSNR', 'imed': 'IMED',
          'ssim': '1 - SSIM', 'zncc': 'ZNCC', 'gmsd': 'GMSD',
          'fsim': '1 - FSIM', 'issm': 'ISSM', 'sre': 'SRE', 'sam': 'SAM',
          'uiq': '1 - UIQ', 'sh': 'SH'}


def measure_kwargs(cfg, name: str) -> dict:
  """The measure's keyword arguments from config.eval.similarity.<name>
  ({} where the block or the measure's entry is absent: the defaults)."""
  block = cfg.get('similarity') if cfg is not None else None
  entry = block.get(name) if block is not None else None
  return dict(entry) if entry is not None else {}


def _scorer(measure) -> scorers.Scorer:
  def joint(x, outputs, fitted, cfg):
    del fitted
    result = measure.fn(x, outputs['reconstruction'],
                        **measure_kwargs(cfg, measure.name))
    return result.map, result.score

  amap = (lambda *args: joint(*args)[0]) if measure.has_map else None
  return scorers.Scorer(
      name=measure.name, map=amap, needs=('reconstruction',),
      label=LABELS[measure.name], fit=None, baseline=False,
      image=lambda *args: joint(*args)[1], joint=joint)


for _measure in MEASURES.values():
  scorers.add(_scorer(_measure))

NAMES = tuple(MEASURES)
