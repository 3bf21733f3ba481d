"""1 - universal image quality index (Wang & Bovik 2002), as a scorer."""

from aad.scoring.similarity import scorers

SCORER = scorers.scorer('uiq')
