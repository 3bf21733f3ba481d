"""1 - universal image quality index (Wang & Bovik 2002), as a scorer."""

from aad.scoring import similarity

SCORER = similarity.scorer('uiq')
