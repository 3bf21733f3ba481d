"""Maps normalised against what the model gets wrong on good images.

A raw error map (the residual, 1 - SSIM, GMSD, ...) is large wherever the
model reconstructs poorly, defect or not: bright or grainy images, the
edges of an aligned part, fine texture. The `normalised` scorer fits, on
the good validation images (unseen in training, so their errors are those
of new good images), the expected error and its spread, and scores

  z = (e - mean) / (std + eps),

clipped at `clip` (0: not clipped; with sides=2 the map is the larger of
this for z and for -z: less error than usual counts too), smoothed by a
Gaussian of
`smooth_sigma` px and, when `line_length` > 0, by the oriented line filter
of aad/scoring/lines.py (the largest mean along a line of `orientations`
directions, sigma `line_length` px along and `line_width` px across), with
the mean of the top `top_k` fraction of the result as its own image score
(a global norm of the raw map ranks images by their overall error level
instead). The clip keeps a few extreme pixels (a speck of dust, a glint)
from outweighing a long faint defect once the map is averaged along lines.

`mode` says what the expectation depends on:
  'position': each pixel's own mean and std over the good images (for
    aligned images: the same part at the same place), pooled over a
    Gaussian neighbourhood of `position_sigma` px (0: the pixel alone);
  'local': the local intensity and texture (Gaussian local mean and local
    standard deviation of the input, `local_sigma` px), binned into
    `bins` x `bins` quantile bins of the good images, each bin with its
    own mean and std of the error (for unaligned images);
  'both': 'local' first, then 'position' on the result.

`base` names the error maps (scorers with a map and no fit),
and the z-maps of several are averaged: ('residual',) alone or combined
with structure-aware ones, e.g. ('residual', 'ssim').
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from aad.scoring import lines
from aad.scoring import ops
from aad import scoring

MODES = ('position', 'local', 'both')
EPS = 1e-6


def gaussian_blur(maps: jax.Array, sigma: float) -> jax.Array:
  """Gaussian filter of (N, H, W) maps over H and W, reflected at the
  borders (scipy.ndimage.gaussian_filter's mode='reflect', truncate 4)."""
  if sigma <= 0:
    return maps
  radius = int(4 * sigma + 0.5)
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps = jnp.asarray(taps / taps.sum(), maps.dtype)
  out = maps
  for axis in (1, 2):
    # Reflection needs the side to exceed the radius; clamp beyond it.
    pad = [(0, 0)] * 3
    pad[axis] = (radius, radius)
    mode = 'symmetric' if maps.shape[axis] > radius else 'edge'
    padded = jnp.pad(out, pad, mode=mode)
    length = out.shape[axis]
    out = sum(taps[i] * jax.lax.slice_in_dim(padded, i, i + length,
                                             axis=axis)
              for i in range(2 * radius + 1))
  return out


def local_stats(x: jax.Array, sigma: float) -> tuple[jax.Array, jax.Array]:
  """Local mean and standard deviation of the luminance of (N, H, W, C)
  images in [0, 1], with Gaussian windows of `sigma` px."""
  lum = jnp.mean(x, axis=-1)
  mean = gaussian_blur(lum, sigma)
  var = gaussian_blur(lum * lum, sigma) - mean * mean
  return mean, jnp.sqrt(jnp.maximum(var, 0.0))


def settings(cfg) -> dict:
  """The `eval.normalised` block as a dict, checked.

  Raises:
    ValueError: naming the key, for a value the scorer cannot use.
  """
  block = cfg.get('normalised') if cfg is not None else None
  s = dict(DEFAULTS, **(dict(block) if block is not None else {}))
  unknown = sorted(set(s) - set(DEFAULTS))
  if unknown:
    raise ValueError(f'config.eval.normalised: unknown key(s) '
                     f'{", ".join(unknown)}; valid: {", ".join(DEFAULTS)}.')
  if s['mode'] not in MODES:
    raise ValueError(f'config.eval.normalised.mode={s["mode"]!r}; choose '
                     f'one of {", ".join(MODES)}.')
  base = tuple(s['base'])
  for name in base:
    try:
      scorer = scoring.get(name)
    except KeyError:
      scorer = None
    if scorer is None or scorer.map is None or scorer.fit is not None:
      ok = [n for n, r in ((n, scoring.get(n))
                           for n in scoring.builtin_names())
            if r.map is not None and r.fit is None
            and set(r.needs) <= {'reconstruction'}]
      raise ValueError(f'config.eval.normalised.base: {name!r} is not a '
                       'scorer with a map and without a fit; choose among '
                       f'{", ".join(ok)}.')
  if not base:
    raise ValueError('config.eval.normalised.base is empty; name at least '
                     "one error map, e.g. ('residual',).")
  if not 0 < s['top_k'] <= 1:
    raise ValueError(f'config.eval.normalised.top_k={s["top_k"]} must lie '
                     'in (0, 1].')
  if (s['bins'] < 1 or s['local_sigma'] <= 0 or s['smooth_sigma'] < 0 or
      s['position_sigma'] < 0):
    raise ValueError('config.eval.normalised: bins >= 1, local_sigma > 0, '
                     'smooth_sigma >= 0 and position_sigma >= 0 are needed.')
  if not (s['clip'] >= 0 and s['line_length'] >= 0 and s['line_width'] > 0
          and int(s['orientations']) == s['orientations'] >= 1):
    raise ValueError('config.eval.normalised: clip >= 0 (0: off), '
                     'line_length >= 0 (0: off), line_width > 0 and a whole '
                     f'orientations >= 1 are needed; got clip={s["clip"]}, '
                     f'line_length={s["line_length"]}, line_width='
                     f'{s["line_width"]}, orientations={s["orientations"]}.')
  if s['sides'] not in (1, 2):
    raise ValueError(f'config.eval.normalised.sides={s["sides"]}: 1 (more '
                     'error than on good images) or 2 (more or less).')
  s['orientations'] = int(s['orientations'])
  s['base'] = base
  return s


DEFAULTS = dict(base=('residual',), mode='position', smooth_sigma=2.0,
                top_k=0.001, bins=8, local_sigma=4.0, position_sigma=0.0,
                clip=0.0, line_length=0.0, line_width=2.0, orientations=16,
                sides=1)


def base_maps(x, outputs, cfg, base: Sequence[str]) -> list[jax.Array]:
  """The raw error maps (N, H, W) named by `base`."""
  return [scoring.get(n).map(x, outputs, None, cfg) for n in base]


def _bin_index(values: jax.Array, edges: jax.Array) -> jax.Array:
  """Bin of each value among quantile `edges` (inner edges, ascending)."""
  return jnp.searchsorted(jnp.asarray(edges), values, side='right')


def _local_index(x, fitted_base, s) -> jax.Array:
  mean, std = local_stats(x, s['local_sigma'])
  bins = s['bins']
  return (_bin_index(mean, fitted_base['mean_edges']) * bins +
          _bin_index(std, fitted_base['std_edges']))


def _table(index: np.ndarray, values: np.ndarray, count: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std of `values` per bin of `index` (bins without values get
  the overall mean and std)."""
  index, values = index.ravel(), values.ravel().astype(np.float64)
  n = np.bincount(index, minlength=count)
  total = np.bincount(index, values, minlength=count)
  squares = np.bincount(index, values * values, minlength=count)
  safe = np.maximum(n, 1)
  mean = np.where(n > 0, total / safe, values.mean())
  var = np.where(n > 1, squares / safe - (total / safe) ** 2, values.var())
  return mean.astype(np.float32), np.sqrt(np.maximum(var, 0)).astype(
      np.float32)


def fit_maps(x: np.ndarray, maps: np.ndarray, s: dict) -> dict:
  """What `normalise` needs, from the good images x (N, H, W, C) in [0, 1]
  and one error map of them (N, H, W): numpy, for saving with the run."""
  fitted = {}
  z = maps.astype(np.float32)
  if s['mode'] in ('local', 'both'):
    mean, std = (np.asarray(v) for v in local_stats(jnp.asarray(x),
                                                      s['local_sigma']))
    inner = np.linspace(0, 1, s['bins'] + 1)[1:-1]
    fitted['mean_edges'] = np.quantile(mean, inner).astype(np.float32)
    fitted['std_edges'] = np.quantile(std, inner).astype(np.float32)
    index = np.asarray(_local_index(jnp.asarray(x), fitted, s))
    fitted['local_mean'], fitted['local_std'] = _table(index, z,
                                                       s['bins'] ** 2)
    z = (z - fitted['local_mean'][index]) / (fitted['local_std'][index] +
                                             EPS)
  if s['mode'] in ('position', 'both'):
    mean, var = z.mean(0), z.var(0)
    if s['position_sigma'] > 0:
      # Pooling neighbours: a std from a few dozen images is noisy per
      # pixel, and the map's maximum finds the pixels where it came out
      # too low.
      mean, var = (np.asarray(gaussian_blur(jnp.asarray(v[None]),
                                            s['position_sigma']))[0]
                   for v in (mean, var))
    fitted['position_mean'] = mean
    fitted['position_std'] = np.sqrt(np.maximum(var, 0))
  return fitted


def normalise(x, amap, fitted_base: dict, s: dict) -> jax.Array:
  """The z-map of one error map (N, H, W), on device."""
  z = amap
  if s['mode'] in ('local', 'both'):
    index = _local_index(x, fitted_base, s)
    z = (z - jnp.take(jnp.asarray(fitted_base['local_mean']), index)) / (
        jnp.take(jnp.asarray(fitted_base['local_std']), index) + EPS)
  if s['mode'] in ('position', 'both'):
    z = (z - fitted_base['position_mean']) / (fitted_base['position_std'] +
                                              EPS)
  return z


def fit(images: np.ndarray, outputs: dict, cfg) -> dict:
  """The scorer's fit: fit_maps of each base map of the good images."""
  s = settings(cfg)
  fitted = {}
  x = np.asarray(ops.to_float(images))
  recon = outputs['reconstruction']
  step = 16
  compute = jax.jit(lambda x, r: base_maps(x, {'reconstruction': r}, cfg,
                                           s['base']))
  parts = [compute(x[i:i + step], recon[i:i + step])
           for i in range(0, len(x), step)]
  for j, name in enumerate(s['base']):
    maps = np.concatenate([np.asarray(p[j]) for p in parts])
    fitted[name] = fit_maps(x, maps, s)
  return fitted


def normalised_map(x, outputs, fitted, cfg):
  """The scorer's map: the mean z-map of the base maps, clipped and
  smoothed."""
  s = settings(cfg)
  zs = [normalise(x, m, fitted[n], s)
        for n, m in zip(s['base'], base_maps(x, outputs, cfg, s['base']))]
  z = sum(zs) / len(zs)
  if s['sides'] == 1:
    return _filtered(z, s)
  # Less error than on good images counts too: a region that lost its
  # texture (a smudge, wear, polish) is easier to reconstruct than the
  # texture around it. Each direction is filtered on its own, so that a
  # region of consistently low error stands out once averaged.
  return jnp.maximum(_filtered(z, s), _filtered(-z, s))


def _filtered(z, s):
  """z clipped at `clip`, smoothed, line-filtered (as configured)."""
  if s['clip'] > 0:
    z = jnp.minimum(z, s['clip'])
  z = gaussian_blur(z, s['smooth_sigma'])
  if s['line_length'] > 0:
    z = lines.line_filter(z, s['line_length'], s['line_width'],
                          s['orientations'])
  return z


def top_k_mean(maps: jax.Array, fraction: float) -> jax.Array:
  """Mean of the largest `fraction` of each map's values (at least one)."""
  flat = maps.reshape((maps.shape[0], -1))
  k = max(1, int(round(fraction * flat.shape[1])))
  return jnp.mean(jax.lax.top_k(flat, k)[0], axis=-1)


def image_score(x, outputs, fitted, cfg):
  """The scorer's own image score: the top_k mean of its map."""
  return top_k_mean(normalised_map(x, outputs, fitted, cfg),
                    settings(cfg)['top_k'])


def joint(x, outputs, fitted, cfg):
  """(map, own image score) in one pass."""
  amap = normalised_map(x, outputs, fitted, cfg)
  return amap, top_k_mean(amap, settings(cfg)['top_k'])

