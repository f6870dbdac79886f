"""A synthetic, class-structured image data set generated in memory (no download; for demos and tests).

Each class owns a template: a sum of a few random oriented sinusoidal gratings with a class colour. A sample is its
class template, circularly shifted by a random offset, scaled by a random contrast and covered in Gaussian noise, so
that a small convnet learns it in a few hundred steps but not from a single pixel.
"""

from __future__ import annotations

import numpy as np


def _class_templates(rng: np.random.Generator, num_classes: int, size: int, channels: int,
                     gratings: int) -> np.ndarray:
    """[num_classes, size, size, channels] float templates in about [-1, 1]."""
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    templates = np.zeros((num_classes, size, size, channels))
    for c in range(num_classes):
        pattern = np.zeros((size, size))
        for _ in range(gratings):
            frequency = rng.uniform(1.0, 4.0) * 2 * np.pi / size
            angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            pattern += np.sin(frequency * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        pattern /= np.sqrt(gratings)
        colour = rng.uniform(-1.0, 1.0, size=channels)
        templates[c] = pattern[..., None] * (0.5 + 0.5 * np.abs(colour)) + 0.3 * colour
    return templates


def synthetic_images(num_classes: int = 10, num_per_class: int = 100, image_size: int = 32, channels: int = 3,
                     seed: int = 0, noise: float = 0.6, gratings: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Generates (images uint8 [N, H, W, C], labels int32 [N]), N = num_classes * num_per_class, classes interleaved.

    Templates and samples both follow from ``seed``: draw train and test splits from ONE call (then slice), since two
    seeds give two unrelated sets of classes.
    """
    if num_classes < 2 or num_per_class < 1 or image_size < 4:
        raise ValueError(f"need num_classes >= 2, num_per_class >= 1, image_size >= 4; got "
                         f"{num_classes}, {num_per_class}, {image_size}")
    rng = np.random.default_rng(seed)
    templates = _class_templates(rng, num_classes, image_size, channels, gratings)
    labels = np.tile(np.arange(num_classes, dtype=np.int32), num_per_class)
    shifts = rng.integers(0, image_size, size=(labels.size, 2))
    contrast = rng.uniform(0.6, 1.4, size=labels.size)
    images = np.empty((labels.size, image_size, image_size, channels), np.uint8)
    for i, (label, (dy, dx)) in enumerate(zip(labels, shifts)):
        image = np.roll(templates[label], (dy, dx), axis=(0, 1)) * contrast[i]
        image += noise * rng.normal(size=image.shape)
        images[i] = np.clip(127.5 + 60.0 * image, 0, 255).astype(np.uint8)
    return images, labels
