"""Tests for aad.models.corruptions: draw statistics, compositing, jit/vmap, API.

Compilation dominates the run time here, so most checks share a few jitted,
vmapped programs over many keys at once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import interpolate
from scipy import ndimage

from aad.models import corruptions

HW = (128, 128)  # a and b are then drawn in [1, 15].
N_DRAWS = 2000
SHAPE = (64, 96, 3)  # Non-square, so row / column mix-ups show.
N_KEYS = 64
NOISE_STD = np.sqrt(corruptions.STAIN_NOISE_VAR)


@pytest.fixture(autouse=True, scope='module')
def _fast_compile():
  # XLA optimisation triples the compile time of these small programs and
  # barely changes their run time.
  old = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', old)


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def _image(shape, seed=1):
  return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


@functools.lru_cache(maxsize=None)
def _run(name):
  """Registered corruption `name` on N_KEYS keys and one SHAPE image."""
  fn = jax.jit(jax.vmap(corruptions.CORRUPTIONS[name], in_axes=(0, None)))
  return np.asarray(fn(_keys(N_KEYS), _image(SHAPE)))


def _mask_stats(key, shape_hw=HW, **kwargs):
  """Draws of one stain mask plus its area and second moments."""
  mask, params = corruptions.stain_mask(key, shape_hw, **kwargs)
  h, w = shape_hw
  dy = jnp.arange(h)[:, None] - params['cy']
  dx = jnp.arange(w)[None, :] - params['cx']
  cos, sin = jnp.cos(params['theta0']), jnp.sin(params['theta0'])
  area = mask.sum()
  # Moments along theta0 (the column radius b) and across it (the row
  # radius a): a filled ellipse has variance s^2 / 4 along semi-axis s.
  var_b = (mask * (dx * cos + dy * sin)**2).sum() / area
  var_a = (mask * (dy * cos - dx * sin)**2).sum() / area
  centre = mask[params['cy'], params['cx']]
  return dict(params, area=area, var_a=var_a, var_b=var_b, centre=centre)


@pytest.fixture(scope='module')
def draws():
  """Statistics of N_DRAWS sharp, regular stains on a 128x128 image."""
  stats = functools.partial(_mask_stats, irregularity=0.0)
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(stats))(_keys(N_DRAWS)))


def test_stain_draws_cover_their_ranges(draws):
  a, b, color = draws['a'], draws['b'], draws['color']
  assert (a.min(), a.max(), b.min(), b.max()) == (1, 15, 1, 15)
  assert (color.min(), color.max()) == (10, 220)
  # U_int[10, 220]: mean 115, std of the mean 61 / sqrt(2000) ~ 1.4.
  assert abs(color.mean() - 115) < 5
  assert abs(np.histogram(color, bins=3)[0] / N_DRAWS - 1 / 3).max() < 0.04
  theta0 = draws['theta0']
  assert theta0.min() >= 0 and theta0.max() < 2 * np.pi
  assert abs(theta0.mean() - np.pi) < 0.15
  r_max = np.maximum(a, b)
  for c, n in ((draws['cx'], HW[1]), (draws['cy'], HW[0])):
    assert (c - r_max >= 0).all() and (c + r_max <= n).all()
    assert c.min() == r_max[c.argmin()]  # The low end of the range is hit.
  assert (draws['centre'] == 1).all()


def test_stain_area_is_pi_a_b(draws):
  a, b = draws['a'].astype(float), draws['b'].astype(float)
  assert abs(draws['area'].sum() / (np.pi * a * b).sum() - 1) < 0.02
  big = np.minimum(a, b) >= 6  # Pixel quantisation dominates below.
  assert big.sum() > 200
  assert abs(draws['area'][big] / (np.pi * a * b)[big] - 1).max() < 0.08


def test_stain_row_radius_is_a(draws):
  # a (drawn from W) is the row radius: at theta0 = 0 it spans rows. Swapping
  # the convention would make var_a ~ b^2 / 4 and fail on unequal axes.
  a, b = draws['a'].astype(float), draws['b'].astype(float)
  pick = (np.minimum(a, b) >= 5) & (abs(a - b) >= 4)
  assert pick.sum() > 100
  assert abs(draws['var_a'][pick] / (a[pick]**2 / 4) - 1).max() < 0.2
  assert abs(draws['var_b'][pick] / (b[pick]**2 / 4) - 1).max() < 0.2


def test_stain_non_square_image():
  h, w = 48, 160  # a in [1, 19] (from W), b in [0, 5] (from H).
  stats = jax.jit(jax.vmap(functools.partial(_mask_stats, shape_hw=(h, w))))
  stats = jax.tree.map(np.asarray, stats(_keys(500)))
  a, b = stats['a'], stats['b']
  assert (a.min(), a.max(), b.min(), b.max()) == (1, 19, 0, 5)
  r_max = np.maximum(a, b)
  assert (stats['cx'] >= r_max).all() and (stats['cx'] <= w - r_max).all()
  assert (stats['cy'] >= r_max).all() and (stats['cy'] <= h - r_max).all()
  # A zero radius still gives a (line-like) stain through the centre.
  assert (stats['centre'] == 1).all()


def test_stain_irregularity_and_blur():
  def masks(key):
    sharp, params = corruptions.stain_mask(key, HW, irregularity=0.0)
    rough, _ = corruptions.stain_mask(key, HW, irregularity=0.3)
    soft, soft_params = corruptions.stain_mask(key, HW, irregularity=0.0,
                                               blur=0.15)
    same = jnp.stack([params[k] == soft_params[k] for k in params
                      if k != 'sigma']).all()
    return dict(
        params, sigma=soft_params['sigma'], same=same, sharp_mask=sharp,
        soft_mask=soft, sharp=sharp.sum(), rough=rough.sum(),
        soft=soft.sum(), soft_min=soft.min(), soft_max=soft.max(),
        rough_differs=(rough != sharp).any(),
        fractional=((soft > 0.01) & (soft < 0.99)).sum())

  out = jax.tree.map(np.asarray, jax.jit(jax.vmap(masks))(_keys(300, 3)))
  big = np.minimum(out['a'], out['b']) >= 7  # Jitter of at least 2 px.
  assert out['rough_differs'][big].all()
  assert abs(out['rough'][big].sum() / out['sharp'][big].sum() - 1) < 0.05
  # Blur changes neither the draws nor, away from the border, the mass.
  assert out['same'].all()
  np.testing.assert_allclose(
      out['sigma'], 0.15 * np.maximum(out['a'], out['b']), rtol=1e-6)
  assert out['soft_min'].min() >= 0 and out['soft_max'].max() <= 1 + 1e-6
  assert (out['fractional'][out['sigma'] >= 0.5] > 0).all()
  np.testing.assert_allclose(out['soft'], out['sharp'], rtol=0.02)
  # The fixed-support blur is scipy's gaussian_filter (reflect, truncate 4).
  for i in range(10):
    expected = ndimage.gaussian_filter(out['sharp_mask'][i], out['sigma'][i])
    np.testing.assert_allclose(out['soft_mask'][i], expected, atol=1e-5)


def test_periodic_spline_matches_scipy():
  knots = np.random.default_rng(0).normal(size=20).astype(np.float32)
  t = np.linspace(-3, 25, 500, dtype=np.float32)
  spline = interpolate.CubicSpline(np.arange(21), np.append(knots, knots[0]),
                                   bc_type='periodic')
  np.testing.assert_allclose(
      corruptions._periodic_spline(jnp.asarray(knots), jnp.asarray(t)),
      spline(np.mod(t, 20)), atol=1e-5)


@pytest.mark.parametrize('channels', [1, 3])
def test_stain_composites_grey_texture(channels):
  shape = SHAPE[:2] + (channels,)
  image = _image(shape)
  both = jax.jit(jax.vmap(
      lambda k, x: (corruptions.stain(k, x), corruptions.stain_mask(
          k, shape[:2])), in_axes=(0, None)))
  out, (mask, params) = both(_keys(N_KEYS), image)
  out, mask, image = np.asarray(out), np.asarray(mask), np.asarray(image)
  # The mask of stain_mask(key) is exactly the region stain(key) changed.
  np.testing.assert_array_equal((out != image).any(-1), mask > 0)
  # Inside, the pixel is the grey level plus independent channel noise.
  grey = np.asarray(params['color'])[:, None, None, None] / 255
  residual = (out - grey)[mask == 1]  # (pixels, channels)
  assert len(residual) > 1000
  assert abs(residual.mean()) < 0.002
  np.testing.assert_allclose(residual.std(axis=0), NOISE_STD, rtol=0.1)
  if channels == 3:
    corr = np.corrcoef(residual.T)
    assert abs(corr[np.triu_indices(3, 1)]).max() < 0.05


@pytest.mark.parametrize('shape,kw', [
    ((64, 64, 1), {}), ((256, 256, 3), {}), ((48, 96, 1), {}),
    ((64, 64, 1), dict(size=(0.2, 0.4), irregularity=0.5)),
    ((40, 40, 1), dict(size=(0.3, 0.45), irregularity=0.3))])
def test_stain_window_holds_the_whole_stain(shape, kw):
  # stain() computes only a window around the stain; the whole mask of
  # stain_mask() must change nothing outside it, for extreme draws too.
  image = jnp.full(shape, 0.5)
  both = jax.jit(jax.vmap(
      lambda k: (corruptions.stain(k, image, **kw),
                 corruptions.stain_mask(k, shape[:2], **kw)[0])))
  out, mask = both(_keys(256, 3))
  changed = np.asarray((out != image).any(-1))
  np.testing.assert_array_equal(changed, np.asarray(mask) > 0)
  assert changed.any(axis=(1, 2)).all()


def test_stain_blurred_edge_moves_toward_colour():
  image = _image(SHAPE)
  both = jax.jit(jax.vmap(
      lambda k, x: (corruptions.stain(k, x, blur=0.3), corruptions.stain_mask(
          k, SHAPE[:2], blur=0.3)), in_axes=(0, None)))
  out, (mask, params) = both(_keys(32, 7), image)
  out, mask = np.asarray(out), np.asarray(mask)[..., None]
  image = np.broadcast_to(np.asarray(image), out.shape)
  outside = np.broadcast_to(mask == 0, out.shape)
  np.testing.assert_array_equal(out[outside], image[outside])
  grey = np.asarray(params['color'])[:, None, None, None] / 255
  edge = np.broadcast_to((mask > 0.05) & (mask < 0.95), out.shape)
  assert edge.sum() > 1000
  closer = abs(out - grey) <= abs(image - grey) + 5 * NOISE_STD
  assert closer[edge].all()


def test_stain_reproducible_and_key_dependent():
  fn = jax.jit(jax.vmap(corruptions.stain, in_axes=(0, None)))
  np.testing.assert_array_equal(fn(_keys(N_KEYS), _image(SHAPE)),
                                _run('stain'))
  changes = (_run('stain') != np.asarray(_image(SHAPE))).reshape(N_KEYS, -1)
  assert len({c.tobytes() for c in changes}) == N_KEYS


def test_gaussian_adds_clipped_noise():
  key = jax.random.key(8)
  grey = jnp.full((64, 64, 3), 0.5, jnp.float32)
  residual = np.asarray(corruptions.gaussian(key, grey, var=0.01)) - 0.5
  assert abs(residual.mean()) < 0.005
  assert abs(residual.std() / 0.1 - 1) < 0.03
  out = np.asarray(corruptions.gaussian(key, _image((64, 64, 3)), var=0.1))
  assert out.min() == 0 and out.max() == 1 and out.dtype == np.float32


@pytest.mark.parametrize('shape', [(64, 64, 1), (64, 96, 3), (96, 64, 1)])
@pytest.mark.parametrize('name', sorted(corruptions.CORRUPTIONS))
def test_every_corruption_traces_under_jit_and_vmap(name, shape):
  fn = jax.jit(jax.vmap(corruptions.CORRUPTIONS[name]))
  images = jax.ShapeDtypeStruct((4,) + shape, jnp.float32)
  out = jax.eval_shape(fn, _keys(4), images)
  assert out.shape == images.shape and out.dtype == jnp.float32


@pytest.mark.parametrize('name', sorted(corruptions.CORRUPTIONS))
def test_every_corruption_runs(name):
  out, image = _run(name), np.asarray(_image(SHAPE))
  assert out.shape == (N_KEYS,) + SHAPE and out.dtype == np.float32
  assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
  changed = (out != image).any(axis=(1, 2, 3))
  if name == 'perlin':
    # As DRAEM's, a Perlin mask may come out empty (noise below the
    # threshold everywhere at a coarse scale); most images change.
    assert changed.mean() > 0.7
  else:
    assert not changed.any() if name == 'none' else changed.all()


def test_scratch_is_a_grey_curve():
  out = _run('scratch')
  painted = (out != np.asarray(_image(SHAPE))).any(-1)
  # Each kept point paints a 3x3 block; the start point is always kept.
  counts = painted.sum(axis=(1, 2))
  assert counts.min() >= 9 and counts.max() < 0.25 * painted[0].size
  # The curve advances at most max(H, W) / 4 px (plus the 3x3 brush) along
  # its axis, so one side of its bounding box is that short.
  rows = painted.any(axis=2).sum(axis=1)
  cols = painted.any(axis=1).sum(axis=1)
  assert np.minimum(rows, cols).max() <= max(SHAPE[:2]) / 4 + 3
  grey = out[painted]  # (pixels, channels)
  np.testing.assert_array_equal(grey[:, 0], grey[:, 2])
  assert abs(grey.mean() * 255 - 150) < 3
  assert abs(grey[:, 0].std() * 255 - 20) < 2


def test_drops_paint_one_disk():
  image = _image(SHAPE)
  drops = functools.partial(corruptions.drops, size=(0.04, 0.05))
  out = jax.jit(jax.vmap(drops, in_axes=(0, None)))(_keys(N_KEYS, 11), image)
  out = np.asarray(out)
  painted = (out != np.asarray(image)).any(-1)
  # r = U_int[3, 4] + 1 = 4 or 5; nb = 10 disks that nearly coincide.
  rows = painted.any(axis=2).sum(axis=1)
  cols = painted.any(axis=1).sum(axis=1)
  assert rows.min() >= 7 and rows.max() <= 11 and abs(rows - cols).max() <= 2
  area = painted.sum(axis=(1, 2))
  np.testing.assert_allclose(area, np.pi * rows * cols / 4, rtol=0.25)
  assert abs(out[painted].mean() * 255 - 220) < 1


def test_mixture_branch_frequencies():
  keys = _keys(20000, 12)
  for probs, expected in (((0.6, 0.2), [0.6, 0.2, 0.2]), ((0.6,), [0.6, 0.4])):
    index = jax.jit(jax.vmap(lambda k: corruptions.branch_index(k, probs)))
    counts = np.bincount(np.asarray(index(keys)), minlength=len(expected))
    np.testing.assert_allclose(counts / len(keys), expected, atol=0.015)
  with pytest.raises(ValueError):
    corruptions.branch_index(keys[0], (0.8, 0.3))


@pytest.mark.parametrize('name,probs,branches', [
    ('structural', (0.6, 0.2), (
        functools.partial(corruptions.stain, color=(10, 220), blur=0.15),
        functools.partial(corruptions.scratch, color=(10, 220)),
        functools.partial(corruptions.drops, color=(10, 220)))),
    ('stain_or_gaussian', (0.6,), (
        functools.partial(corruptions.stain, blur=0.15),
        functools.partial(corruptions.gaussian, var=0.1))),
])
def test_mixture_applies_the_drawn_branch(name, probs, branches):
  def both(key, image):
    k_branch, k_apply = jax.random.split(key)
    index = corruptions.branch_index(k_branch, probs)
    candidates = jnp.stack([f(k_apply, image) for f in branches])
    return corruptions.CORRUPTIONS[name](key, image), index, candidates

  out, index, candidates = jax.tree.map(np.asarray, jax.jit(jax.vmap(
      both, in_axes=(0, None)))(_keys(16, 13), _image((32, 48, 3))))
  assert set(index) == set(range(len(branches)))
  np.testing.assert_allclose(out, candidates[np.arange(16), index], atol=1e-6)


def test_make_binds_and_validates():
  fn = corruptions.make('stain', {'blur': 0.1, 'color': (50, 60)})
  assert fn.func is corruptions.stain
  assert fn.keywords == {'blur': 0.1, 'color': (50, 60)}
  assert corruptions.make('none').func is corruptions.none
  assert corruptions.make('gaussian', None).keywords == {}
  with pytest.raises(ValueError, match=r"'stains'.*stain_or_gaussian"):
    corruptions.make('stains')
  with pytest.raises(ValueError, match=r'sigma.*valid keys: var'):
    corruptions.make('gaussian', {'sigma': 0.1})


def test_corrupt_batch_depends_only_on_global_index():
  fn = corruptions.make('gaussian')
  images = jnp.stack([_image((16, 24, 1), seed=s) for s in range(6)])
  indices = jnp.array([7, 3, 11, 0, 5, 9])
  raw = jax.random.PRNGKey(15)
  typed = jax.random.wrap_key_data(raw)
  batch = jax.jit(corruptions.corrupt_batch, static_argnums=0)
  full = np.asarray(batch(fn, typed, images, indices))
  for i, g in enumerate(np.asarray(indices)):
    np.testing.assert_allclose(
        full[i], fn(jax.random.fold_in(typed, g), images[i]), atol=1e-6)
  # Another split of the same global batch, and a raw uint32 key.
  np.testing.assert_array_equal(
      batch(fn, typed, images[2:5], indices[2:5]), full[2:5])
  np.testing.assert_array_equal(batch(fn, raw, images, indices), full)
  assert not np.array_equal(full[0], full[1])


def test_perlin_smoothed_fill_is_the_image_blurred_inside_its_mask():
  image = jax.random.uniform(jax.random.key(5), (40, 48, 2))
  keys = jax.random.split(jax.random.key(6), 6)
  run = lambda **kw: np.asarray(jax.vmap(lambda k: corruptions.perlin(
      k, image, opacity=(1.0, 1.0), **kw))(keys))
  out = run(p_smooth=1.0, smooth_sigma=(2.0, 2.0))
  blurred = ndimage.gaussian_filter(np.asarray(image, np.float64), (2, 2, 0),
                                    mode='reflect', truncate=4.0)
  image = np.asarray(image)
  inside = np.abs(out - image).max(-1) > 1e-6
  assert inside.any(axis=(1, 2)).sum() >= 4  # most masks are not empty
  for i in range(len(keys)):
    np.testing.assert_allclose(out[i][inside[i]], blurred[inside[i]],
                               atol=1e-5)
    np.testing.assert_array_equal(out[i][~inside[i]], image[~inside[i]])
  # Off (the default), the images are those drawn without the option.
  np.testing.assert_array_equal(run(p_smooth=0.0), run())
  # The same masks with the smoothed fill as with the displaced one.
  np.testing.assert_array_equal(inside, np.abs(run() - image).max(-1) > 1e-6)


def test_band_is_a_rotated_rectangle_without_bend():
  from skimage import measure  # pylint: disable=g-import-not-at-top
  centre, angle, length, width = (20.3, 30.7), 0.6, 25.5, 3.3
  mask = np.asarray(corruptions.band((48, 64), centre, angle, length, width))
  along = np.array([np.cos(angle), np.sin(angle)]) * length / 2  # (x, y)
  across = np.array([-np.sin(angle), np.cos(angle)]) * width / 2
  c = np.array(centre[::-1])
  corners = [c + along + across, c + along - across, c - along - across,
             c - along + across]
  yy, xx = np.mgrid[:48, :64]
  inside = measure.points_in_poly(
      np.stack([xx.ravel(), yy.ravel()], 1), np.array(corners))
  np.testing.assert_array_equal(mask.ravel().astype(bool), inside)
  assert 0.8 * length * width < mask.sum() < 1.2 * length * width


def test_band_follows_its_sine():
  cy, cx, length, bend, period, phase = 30.0, 40.2, 60.0, 8.0, 40.0, 0.7
  mask = np.asarray(corruptions.band((64, 80), (cy, cx), 0.0, length, 5.0,
                                     bend=bend, period=period, phase=phase))
  rows = np.arange(64)[:, None]
  cols = np.flatnonzero(mask.any(0))
  assert cols.min() == 11 and cols.max() == 70  # |x - 40.2| < 30
  centre_row = (mask * rows).sum(0)[cols] / mask.sum(0)[cols]
  expected = cy + bend * np.sin(2 * np.pi * (cols - cx) / period + phase)
  np.testing.assert_allclose(centre_row, expected, atol=0.5)
