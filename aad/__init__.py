"""aad: autoencoder-based visual anomaly detection in JAX/Flax.

`aad.Detector` (aad/deploy/detector.py) loads a trained run for scoring new images;
`aad.fit` (aad/fitting.py) trains one from Python, as python -m aad.main.
Both are imported on first use, so `import aad.deploy.loader` (the loader of
exported detectors) pulls in neither Flax nor the training code.
"""


def __getattr__(name):
  if name in ('Detector', 'Prediction'):
    from aad.deploy import detector  # pylint: disable=g-import-not-at-top
    return getattr(detector, name)
  if name == 'fit':
    from aad import fitting  # pylint: disable=g-import-not-at-top
    return fitting.fit
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
