"""Data sources, each returning uint8 images [N, H, W, C] and int32 labels [N]."""

from selectivity_jax.data.synthetic import synthetic_images

__all__ = ["synthetic_images"]
