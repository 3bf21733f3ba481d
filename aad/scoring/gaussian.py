"""Activation-Gaussian detector (seed 001, METHOD.md 5.4): the scorer.

A family that exposes the output 'activations' (N, L, V) gives, per image,
V activation values sampled from each of L chosen layers at fixed positions
(one random mask per layer, shared by all images; aad/models/aesc.py
samples them). `fit` models the training images' vectors of each layer by
a Gaussian N(mu_l, Sigma_l) and keeps mu_l and the inverse of the
regularised covariance Sigma_l + lambda_l I, lambda_l = reg tr(Sigma_l) / V
(METHOD.md's [ASSUME], reg = 1e-3 with V = 64), computed on device with
jnp. A test image's score is sqrt(sum_l d_l^2), d_l its Mahalanobis
distance in layer l: the distance of the concatenated vector under a
block-diagonal covariance (layers modelled independently, as the seed's one
mask per layer suggests). The positions are random, so there is no map:
the scorer has an image score only
(aad/scoring/scorers/activation_gaussian.py, map None).
"""

import jax.numpy as jnp

NAME = 'activation_gaussian'


def fit_gaussian(vectors, reg: float = 1e-3) -> dict:
  """{'mean': (L, V), 'precision': (L, V, V)} of vectors (N, L, V).

  Covariance with the 1/(N-1) normalisation (numpy's np.cov), regularised
  by reg tr(Sigma) / V on its diagonal, inverted per layer.
  """
  v = jnp.asarray(vectors, jnp.float32)
  n, _, size = v.shape
  if n < 2:
    raise ValueError(f'{NAME}: needs at least 2 training images, got {n}')
  mean = v.mean(0)
  centred = v - mean
  cov = jnp.einsum('nli,nlj->lij', centred, centred) / (n - 1)
  lam = reg * jnp.trace(cov, axis1=1, axis2=2) / size
  eye = jnp.eye(size, dtype=cov.dtype)
  precision = jnp.linalg.inv(cov + lam[:, None, None] * eye)
  return {'mean': mean, 'precision': precision}


def layer_distances(vectors, fitted) -> jnp.ndarray:
  """Per-layer Mahalanobis distances (N, L) of vectors (N, L, V)."""
  d = jnp.asarray(vectors, jnp.float32) - fitted['mean']
  sq = jnp.einsum('nli,lij,nlj->nl', d, fitted['precision'], d)
  return jnp.sqrt(jnp.maximum(sq, 0.0))


def fit(train_images, outputs, cfg) -> dict:
  """The scorer's fit: the Gaussians of the training images' vectors.

  In patch mode the activations are (N, tiles, L, V): every tile of every
  training image is one sample.
  """
  del train_images
  v = outputs['activations']
  return fit_gaussian(v.reshape((-1,) + v.shape[-2:]),
                      float(cfg.activation_gaussian.reg))


def score(x, outputs, fitted, cfg):
  """sqrt(sum over layers of squared Mahalanobis distances), (N,); in
  patch mode ((N, tiles, L, V) activations) the largest over an image's
  tiles, so that a defect in one tile is not averaged away."""
  del x, cfg
  v = outputs['activations']
  d = layer_distances(v.reshape((-1,) + v.shape[-2:]), fitted)
  per_vector = jnp.sqrt(jnp.sum(d**2, axis=1)).reshape(v.shape[:-2])
  return per_vector.max(axis=1) if per_vector.ndim == 2 else per_vector

