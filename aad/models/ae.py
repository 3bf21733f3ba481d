"""The plain AE (config.model.name 'ae'): AESc without its skip connections,
built by aad/models/aesc.py from the same config fields."""

from aad.models.aesc import family  # noqa: F401
