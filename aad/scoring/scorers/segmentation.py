"""The discriminator's anomaly probability map of a reconstruct-and-
discriminate family (aad/models/draem.py). Its configs take the map's
Gaussian-smoothed maximum (eval.norm 'smooth_max') as image score, as DRAEM
takes the maximum of the map averaged over a 21 px box."""

from aad.scoring import Scorer


def segmentation(x, outputs, fitted, cfg):
  del x, fitted, cfg
  return outputs['segmentation']


SCORER = Scorer(name='segmentation', map=segmentation,
                needs=('segmentation',), label='discriminator')
