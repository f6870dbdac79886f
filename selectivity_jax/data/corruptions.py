"""Generated image corruptions in the style of CIFAR-10-C and Tiny-ImageNet-C, vectorised over the batch.

``corrupt_images(images, corruption, severity)`` returns a corrupted copy of uint8 images [N, H, W, 3].

Severity constants: Hendrycks' generators for Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations" (ICLR 2019), https://github.com/hendrycks/robustness, folder
``ImageNet-C/create_c/``: ``make_cifar_c.py`` (32x32, the 'cifar10' tables below) and ``make_tinyimagenet_c.py``
(64x64, the 'tiny_imagenet' tables). The operations follow his; the implementation is our own (numpy and
scipy.ndimage over the whole batch; a per-image loop only for JPEG through Pillow) and knowingly differs from his:

- images stay float32 in [0, 1] and are rounded to uint8 once at the end; his script rounds down (``np.uint8``) and
  also quantises to 8 bits in between (glass blur after its first blur, snow's flake layer, motion blur's PNG);
- motion blur (his: ImageMagick's MotionBlurImage through Wand) is a port of that filter: a one-sided Gaussian of
  ``2 * ceil(radius) + 1`` taps at integer pixel offsets along the motion direction, edge pixels repeated;
- brightness and saturate (his: skimage rgb2hsv / hsv2rgb) use a numpy HSV conversion with the same formulas;
- zoom blur and snow's flake zoom (his: scipy.ndimage.zoom of a centre crop) apply linear-interpolation matrices at
  the same sample positions as that zoom (order 1), as matrix products over the whole batch;
- elastic transform (his: cv2.warpAffine, then scipy map_coordinates) uses our bilinear sampling with the same border
  rules (reflect-101, then half-sample reflect);
- defocus blur builds his anti-aliased disk (cv2.GaussianBlur, 3x3) in numpy for radii up to 8 (all of ours) and
  filters with scipy.ndimage; pixelate reproduces Pillow's BOX resize (down, then up) as matrices with Pillow's
  rounding after each pass;
- glass blur keeps his sequential local pixel moves, looped over positions and vectorised over the batch; like his
  code (whose "swap" of two numpy views copies), each visited pixel takes its neighbour's value;
- the released Tiny-ImageNet-C was also saved as JPEG (quality 85) after every corruption; we do not do that;
- frost (needs his frost photographs) and spatter are not implemented.

Randomness comes only from ``seed`` (one numpy Generator per call). Images are processed in chunks of ``CHUNK_SIZE``
to bound memory; the noise drawn for an image depends on the seed and its position in the batch.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

CONSTANT_SETS = ("cifar10", "tiny_imagenet")
DEFAULT_CONSTANTS = {(32, 32): "cifar10", (64, 64): "tiny_imagenet"}
SEVERITIES = (1, 2, 3, 4, 5)
CHUNK_SIZE = 1000

# Severity constants (one entry per severity 1..5), from make_cifar_c.py ('cifar10') and make_tinyimagenet_c.py.
GAUSSIAN_NOISE = {  # standard deviation
    "cifar10": (0.04, 0.06, 0.08, 0.09, 0.10), "tiny_imagenet": (0.04, 0.08, 0.12, 0.15, 0.18)}
SHOT_NOISE = {  # Poisson counts at full intensity
    "cifar10": (500, 250, 100, 75, 50), "tiny_imagenet": (250, 100, 50, 30, 15)}
IMPULSE_NOISE = {  # fraction of values set to 0 or 1 (salt and pepper, half each)
    "cifar10": (0.01, 0.02, 0.03, 0.05, 0.07), "tiny_imagenet": (0.01, 0.02, 0.05, 0.08, 0.14)}
SPECKLE_NOISE = {  # standard deviation of the multiplicative noise
    "cifar10": (0.06, 0.1, 0.12, 0.16, 0.2), "tiny_imagenet": (0.15, 0.2, 0.25, 0.3, 0.35)}
GAUSSIAN_BLUR = {  # sigma
    "cifar10": (0.4, 0.6, 0.7, 0.8, 1.0), "tiny_imagenet": (0.5, 0.75, 1.0, 1.25, 1.5)}
DEFOCUS_BLUR = {  # (disk radius, anti-aliasing sigma)
    "cifar10": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "tiny_imagenet": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1))}
GLASS_BLUR = {  # (sigma, largest pixel move, rounds of moves)
    "cifar10": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "tiny_imagenet": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2))}
MOTION_BLUR = {  # (radius, sigma)
    "cifar10": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "tiny_imagenet": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3))}
ZOOM_BLUR = {  # zoom factors np.arange(1, stop, 0.01); the stop per severity
    "cifar10": (1.06, 1.11, 1.16, 1.21, 1.26), "tiny_imagenet": (1.06, 1.11, 1.16, 1.21, 1.26)}
SNOW = {  # (flake mean, flake std, flake zoom, flake threshold, blur radius, blur sigma, weight of the image)
    "cifar10": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "tiny_imagenet": ((0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
                      (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
                      (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6))}
FOG = {  # (fog strength, decay of the plasma fractal's roughness)
    "cifar10": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "tiny_imagenet": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75))}
BRIGHTNESS = {  # added to the HSV value
    "cifar10": (0.05, 0.1, 0.15, 0.2, 0.3), "tiny_imagenet": (0.1, 0.2, 0.3, 0.4, 0.5)}
CONTRAST = {  # fraction of the deviation from the per-channel mean that is kept
    "cifar10": (0.75, 0.5, 0.4, 0.3, 0.15), "tiny_imagenet": (0.4, 0.3, 0.2, 0.1, 0.05)}
ELASTIC_TRANSFORM = {  # (displacement alpha, displacement smoothing sigma, affine jitter), as fractions of the side
    "cifar10": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
    "tiny_imagenet": ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02))}
PIXELATE = {  # fraction of the side kept by the downscale
    "cifar10": (0.95, 0.9, 0.85, 0.75, 0.65), "tiny_imagenet": (0.9, 0.8, 0.7, 0.6, 0.5)}
JPEG_COMPRESSION = {  # JPEG quality
    "cifar10": (80, 65, 58, 50, 40), "tiny_imagenet": (65, 58, 50, 40, 25)}
SATURATE = {  # (HSV saturation factor, saturation added)
    "cifar10": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    "tiny_imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2))}


# ---- helpers: images are float32 [N, H, W, C] in [0, 1] ----

def _interpolation_matrix(positions: np.ndarray, size: int) -> np.ndarray:
    """[len(positions), size] weights of linear interpolation at ``positions`` (all within [0, size - 1])."""
    lower = np.clip(np.floor(positions).astype(int), 0, size - 1)
    upper = np.minimum(lower + 1, size - 1)
    fraction = positions - lower
    matrix = np.zeros((len(positions), size))
    np.add.at(matrix, (np.arange(len(positions)), lower), 1 - fraction)
    np.add.at(matrix, (np.arange(len(positions)), upper), fraction)
    return matrix.astype(np.float32)


def _clipped_zoom_matrix(size: int, factor: float) -> np.ndarray:
    """[size, size] linear map of one axis: zoom the centre ``ceil(size / factor)`` pixels by ``factor`` the way
    scipy.ndimage.zoom(order=1) does (corner-aligned samples, output rounded), then keep the centre ``size``."""
    crop = math.ceil(size / factor)
    zoomed = round(crop * factor)
    positions = (size - crop) // 2 + (np.arange(size) + (zoomed - size) // 2) * ((crop - 1) / (zoomed - 1))
    return _interpolation_matrix(positions, size)


def _planes(images: np.ndarray) -> np.ndarray:
    """[N, H, W, C] <-> [H, N, C, W] (its own inverse): the layout in which resampling the height or the width is
    one plain matrix product."""
    return images.transpose(1, 0, 3, 2)


def _along_height(matrix: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """[H', H] matrix applied to the height of planes [H, N, C, W] -> [H', N, C, W]."""
    return (matrix @ planes.reshape(planes.shape[0], -1)).reshape(-1, *planes.shape[1:])


def _along_width(matrix: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """[W', W] matrix applied to the width of planes [H, N, C, W] -> [H, N, C, W']."""
    return (planes.reshape(-1, planes.shape[3]) @ matrix.T).reshape(*planes.shape[:3], -1)


def _clipped_zoom(planes: np.ndarray, factor: float) -> np.ndarray:
    """Planes [H, N, C, W] zoomed in about the centre by ``factor``, same size."""
    height, width = planes.shape[0], planes.shape[3]
    return _along_height(_clipped_zoom_matrix(height, factor),
                         _along_width(_clipped_zoom_matrix(width, factor), planes))


def _motion_smear(images: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick-style motion blur of [N, H, W, C] with one angle per image (``angles`` [N], degrees): each pixel
    becomes a one-sided Gaussian average of the pixels at integer offsets along the angle (0: towards +x; rows grow
    down), edge pixels repeated."""
    taps = np.arange(2 * math.ceil(radius) + 1)
    weights = np.exp(-taps ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    taps, weights = taps[weights > 1e-8], weights[weights > 1e-8].astype(np.float32)  # the rest cannot move a level
    radians = np.deg2rad(angles)
    col_offsets = np.ceil(taps[:, None] * np.cos(radians) - 0.5).astype(int)  # [taps, N]
    row_offsets = np.ceil(taps[:, None] * np.sin(radians) - 0.5).astype(int)
    n, h, w = images.shape[:3]
    batch = np.arange(n)[:, None, None]
    smeared = np.zeros_like(images)
    for weight, row_offset, col_offset in zip(weights, row_offsets, col_offsets):
        rows = np.clip(np.arange(h) + row_offset[:, None], 0, h - 1)[:, :, None]
        cols = np.clip(np.arange(w) + col_offset[:, None], 0, w - 1)[:, None, :]
        smeared += weight * images[batch, rows, cols]
    return smeared


def _reflect_101(index: np.ndarray, size: int) -> np.ndarray:
    """Integer indices folded into [0, size) by mirroring about the edge pixels (d c b | a b c d | c b a)."""
    index = np.mod(index, 2 * size - 2)
    return np.where(index >= size, 2 * size - 2 - index, index)


def _reflect_half(index: np.ndarray, size: int) -> np.ndarray:
    """Integer indices folded into [0, size) by mirroring about the edges (c b a | a b c | c b a)."""
    index = np.mod(index, 2 * size)
    return np.where(index >= size, 2 * size - 1 - index, index)


def _bilinear(images: np.ndarray, rows: np.ndarray, cols: np.ndarray,
              fold: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    """[N, H, W, C] sampled bilinearly at positions ``rows``, ``cols`` [N, H', W'] -> [N, H', W', C]; ``fold`` maps
    neighbour indices outside the image back into it."""
    n, h, w = images.shape[:3]
    top, left = np.floor(rows), np.floor(cols)
    down = (rows - top).astype(np.float32)[..., None]
    right = (cols - left).astype(np.float32)[..., None]
    top, left = top.astype(int), left.astype(int)
    row0, row1, col0, col1 = fold(top, h), fold(top + 1, h), fold(left, w), fold(left + 1, w)
    batch = np.arange(n)[:, None, None]
    upper = images[batch, row0, col0] * (1 - right) + images[batch, row0, col1] * right
    lower = images[batch, row1, col0] * (1 - right) + images[batch, row1, col1] * right
    return upper * (1 - down) + lower * down


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] RGB in [0, 1] -> HSV in [0, 1] (hue 0 and saturation 0 for greys, as skimage)."""
    red, green, blue = np.moveaxis(rgb, -1, 0)
    value = rgb.max(axis=-1)
    delta = value - rgb.min(axis=-1)
    safe_delta = np.where(delta > 0, delta, 1)
    hue = np.where(red == value, (green - blue) / safe_delta,
                   np.where(green == value, 2 + (blue - red) / safe_delta, 4 + (red - green) / safe_delta))
    hue = np.where(delta > 0, (hue / 6) % 1, 0)
    saturation = np.where(delta > 0, delta / np.where(value > 0, value, 1), 0)
    return np.stack([hue, saturation, value], axis=-1)


# For each hue sextant, which of (value, t, p, q) are red, green and blue.
_HSV_SEXTANT_CHANNELS = np.array([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]])


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """[..., 3] HSV in [0, 1] -> RGB in [0, 1]."""
    hue, saturation, value = np.moveaxis(hsv, -1, 0)
    sextant = np.floor(hue * 6)
    fraction = hue * 6 - sextant
    candidates = np.stack([value, value * (1 - (1 - fraction) * saturation), value * (1 - saturation),
                           value * (1 - fraction * saturation)], axis=-1)
    return np.take_along_axis(candidates, _HSV_SEXTANT_CHANNELS[sextant.astype(int) % 6], axis=-1)


def _plasma_fractal(rng: np.random.Generator, count: int, size: int, decay: float) -> np.ndarray:
    """[count, size, size] diamond-square height maps scaled to [0, 1] (``size`` a power of two, wrapping edges).
    Each new point is the mean of its four neighbours plus ``scale * U(-scale, scale)``, with ``scale`` starting at
    100 and divided by ``decay`` per level, as in his generator."""
    heights = np.zeros((count, size, size))
    step, scale = size, 100.0

    def perturbed_mean(sums: np.ndarray) -> np.ndarray:
        return sums / 4 + scale * rng.uniform(-scale, scale, sums.shape)

    while step >= 2:
        half = step // 2
        corners = heights[:, ::step, ::step]
        square_sums = corners + np.roll(corners, -1, axis=1)
        heights[:, half::step, half::step] = perturbed_mean(square_sums + np.roll(square_sums, -1, axis=2))
        centres = heights[:, half::step, half::step]
        heights[:, ::step, half::step] = perturbed_mean(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2))
        heights[:, half::step, ::step] = perturbed_mean(
            centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1))
        step //= 2
        scale /= decay
    heights -= heights.min(axis=(1, 2), keepdims=True)
    return heights / heights.max(axis=(1, 2), keepdims=True)


def _disk_kernel(radius: float, alias_sigma: float) -> np.ndarray:
    """Normalised disk of ``radius`` on a 17x17 grid, smoothed by a 3x3 Gaussian, cropped to its support."""
    offsets = np.arange(-8, 9)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2).astype(np.float64)
    taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_sigma ** 2))
    taps /= taps.sum()
    kernel = ndimage.correlate1d(ndimage.correlate1d(disk / disk.sum(), taps, axis=0, mode="mirror"), taps, axis=1,
                                 mode="mirror")
    support = np.flatnonzero(kernel.any(axis=0))
    return kernel[support[0]:support[-1] + 1, support[0]:support[-1] + 1].astype(np.float32)


def _box_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] weights of Pillow's BOX resampling: each output pixel averages the input pixels whose
    centres fall in its box (the box is one input pixel wide when upscaling)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale
    offsets = (np.arange(in_size)[None, :] - centres[:, None] + 0.5) * (1.0 / filter_scale)
    covered = (offsets > -0.5) & (offsets <= 0.5)
    return (covered / covered.sum(axis=1, keepdims=True)).astype(np.float32)


def _box_resize(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """8-bit levels as planes [H, N, C, W] resized to [height, N, C, width] like Pillow's BOX resize: the horizontal
    pass, then the vertical one, each rounded half up to whole levels."""
    planes = np.floor(_along_width(_box_resize_matrix(planes.shape[3], width), planes) + 0.5)
    return np.floor(_along_height(_box_resize_matrix(planes.shape[0], height), planes) + 0.5)


# ---- corruptions: float32 images [N, H, W, 3] in [0, 1], one severity's parameters, rng -> [N, H, W, 3] ----

def _gaussian_noise(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return images + std * rng.standard_normal(images.shape, dtype=np.float32)


def _shot_noise(images: np.ndarray, counts: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.poisson(images * counts) / counts).astype(np.float32)


def _impulse_noise(images: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    hit = rng.random(images.shape, dtype=np.float32) < amount
    salt = rng.random(images.shape, dtype=np.float32) < 0.5
    return np.where(hit, salt.astype(np.float32), images)


def _speckle_noise(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return images + images * std * rng.standard_normal(images.shape, dtype=np.float32)


def _defocus_blur(images: np.ndarray, parameters: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    kernel = _disk_kernel(*parameters)
    return ndimage.correlate(images, kernel[None, :, :, None], mode="mirror")


def _gaussian_blur(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Spatial Gaussian blur (skimage.filters.gaussian's defaults: 'nearest' border, truncated at 4 sigma)."""
    return ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0)


def _glass_blur(images: np.ndarray, parameters: tuple[float, int, int], rng: np.random.Generator) -> np.ndarray:
    sigma, reach, rounds = parameters
    n, h, w = images.shape[:3]
    images = _gaussian_blur(images, sigma, rng)
    positions = [(row, col) for row in range(h - reach, reach, -1) for col in range(w - reach, reach, -1)]
    moves = rng.integers(-reach, reach, size=(rounds, len(positions), 2, n))  # (columns, rows) in [-reach, reach)
    batch = np.arange(n)
    for round_moves in moves:
        for (row, col), (col_move, row_move) in zip(positions, round_moves):
            images[:, row, col] = images[batch, row + row_move, col + col_move]
    return _gaussian_blur(images, sigma, rng)


def _motion_blur(images: np.ndarray, parameters: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    radius, sigma = parameters
    return _motion_smear(images, radius, sigma, rng.uniform(-45, 45, size=len(images)))


def _zoom_blur(images: np.ndarray, stop: float, rng: np.random.Generator) -> np.ndarray:
    factors = np.arange(1, stop, 0.01)
    planes = np.ascontiguousarray(_planes(images))
    total = planes.copy()
    for factor in factors:
        total += _clipped_zoom(planes, factor)
    return _planes(total) / (len(factors) + 1)


def _snow(images: np.ndarray, parameters: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    mean, std, zoom, threshold, radius, sigma, image_weight = parameters
    n, h, w = images.shape[:3]
    flakes = _planes(_clipped_zoom(_planes(rng.normal(mean, std, size=(n, h, w, 1)).astype(np.float32)), zoom))
    flakes = np.clip(np.where(flakes < threshold, 0, flakes), 0, 1)
    flakes = _motion_smear(flakes, radius, sigma, rng.uniform(-135, -45, size=n))
    grey = images @ np.float32([0.299, 0.587, 0.114])
    images = image_weight * images + (1 - image_weight) * np.maximum(images, 1.5 * grey[..., None] + 0.5)
    return images + flakes + flakes[:, ::-1, ::-1]


def _fog(images: np.ndarray, parameters: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    strength, decay = parameters
    n, h, w = images.shape[:3]
    size = 1 << (max(h, w) - 1).bit_length()
    fog = _plasma_fractal(rng, n, size, decay)[:, :h, :w, None].astype(np.float32)
    peak = images.max(axis=(1, 2, 3), keepdims=True)
    return (images + strength * fog) * peak / (peak + strength)


def _brightness(images: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    hsv = _rgb_to_hsv(images)
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0, 1)
    return _hsv_to_rgb(hsv)


def _contrast(images: np.ndarray, kept: float, rng: np.random.Generator) -> np.ndarray:
    means = images.mean(axis=(1, 2), keepdims=True)
    return (images - means) * kept + means


def _elastic_transform(images: np.ndarray, parameters: tuple[float, float, float],
                       rng: np.random.Generator) -> np.ndarray:
    n, h, w = images.shape[:3]
    alpha, sigma, jitter = (fraction * min(h, w) for fraction in parameters)
    # Random affine: three anchor points (x, y) around the centre move by up to ``jitter``; each output pixel is
    # sampled where the inverse affine (moved -> anchors) sends it.
    anchors = np.array([w // 2, h // 2]) + min(h, w) // 3 * np.array([[1, 1], [1, -1], [-1, -1]])
    moved = anchors + rng.uniform(-jitter, jitter, size=(n, 3, 2))
    inverse = np.linalg.solve(np.concatenate([moved, np.ones((n, 3, 1))], axis=2),
                              np.broadcast_to(anchors, (n, 3, 2)).astype(float))  # [n, 3, 2]: (x, y, 1) @ inverse
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    source = np.einsum("hwk,nkd->nhwd", np.stack([cols, rows, np.ones_like(rows)], axis=-1), inverse)
    warped = _bilinear(images, source[..., 1], source[..., 0], _reflect_101)
    # Elastic: smoothed uniform noise as displacement field.
    col_shift, row_shift = (alpha * ndimage.gaussian_filter(rng.uniform(-1, 1, size=(n, h, w)), (0, sigma, sigma),
                                                            mode="reflect", truncate=3) for _ in range(2))
    return _bilinear(warped, rows + row_shift, cols + col_shift, _reflect_half)


def _pixelate(images: np.ndarray, kept: float, rng: np.random.Generator) -> np.ndarray:
    h, w = images.shape[1:3]
    small = _box_resize(np.rint(_planes(images) * 255), int(h * kept), int(w * kept))
    return _planes(_box_resize(small, h, w)) / np.float32(255)


def _jpeg_compression(images: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    levels = np.rint(images * 255).astype(np.uint8)
    decoded = np.empty_like(levels)
    for i, image in enumerate(levels):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        decoded[i] = np.asarray(Image.open(buffer))
    return decoded / np.float32(255)


def _saturate(images: np.ndarray, parameters: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    factor, added = parameters
    hsv = _rgb_to_hsv(images)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor + added, 0, 1)
    return _hsv_to_rgb(hsv)


Corrupter = Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]

# Hendrycks' order (make_cifar_c.py): the benchmark's corruptions, then the held-out extras (speckle noise onwards).
_CORRUPTERS: dict[str, tuple[Corrupter, dict[str, tuple]]] = {
    "gaussian_noise": (_gaussian_noise, GAUSSIAN_NOISE),
    "shot_noise": (_shot_noise, SHOT_NOISE),
    "impulse_noise": (_impulse_noise, IMPULSE_NOISE),
    "defocus_blur": (_defocus_blur, DEFOCUS_BLUR),
    "glass_blur": (_glass_blur, GLASS_BLUR),
    "motion_blur": (_motion_blur, MOTION_BLUR),
    "zoom_blur": (_zoom_blur, ZOOM_BLUR),
    "snow": (_snow, SNOW),
    "fog": (_fog, FOG),
    "brightness": (_brightness, BRIGHTNESS),
    "contrast": (_contrast, CONTRAST),
    "elastic_transform": (_elastic_transform, ELASTIC_TRANSFORM),
    "pixelate": (_pixelate, PIXELATE),
    "jpeg_compression": (_jpeg_compression, JPEG_COMPRESSION),
    "speckle_noise": (_speckle_noise, SPECKLE_NOISE),
    "gaussian_blur": (_gaussian_blur, GAUSSIAN_BLUR),
    "saturate": (_saturate, SATURATE),
}
CORRUPTIONS: tuple[str, ...] = tuple(_CORRUPTERS)
FAMILIES: dict[str, str] = {
    "gaussian_noise": "noise", "shot_noise": "noise", "impulse_noise": "noise", "speckle_noise": "noise",
    "defocus_blur": "blur", "glass_blur": "blur", "motion_blur": "blur", "zoom_blur": "blur", "gaussian_blur": "blur",
    "snow": "weather", "fog": "weather", "brightness": "weather",
    "contrast": "digital", "elastic_transform": "digital", "pixelate": "digital", "jpeg_compression": "digital",
    "saturate": "digital",
}


def _constant_set(image_shape: tuple[int, ...], constants: str | None) -> str:
    """The constants table to use: ``constants`` if given, else chosen by image size (32 or 64)."""
    if constants is None:
        size = tuple(image_shape[1:3])
        if size not in DEFAULT_CONSTANTS:
            raise ValueError(f"no default severity constants for {size[0]}x{size[1]} images (only 32x32 -> 'cifar10', "
                             f"64x64 -> 'tiny_imagenet'); pass constants= one of {CONSTANT_SETS}")
        return DEFAULT_CONSTANTS[size]
    if constants not in CONSTANT_SETS:
        raise ValueError(f"unknown constants {constants!r}; valid: {CONSTANT_SETS}")
    return constants


def corrupt_images(images: np.ndarray, corruption: str, severity: int, *, seed: int = 0,
                   constants: str | None = None) -> np.ndarray:
    """Corrupted copy of uint8 images [N, H, W, 3] -> uint8 [N, H, W, 3].

    ``corruption`` one of ``CORRUPTIONS``, ``severity`` 1..5, randomness from ``seed`` only; ``constants``
    'cifar10' (CIFAR-10-C's) or 'tiny_imagenet' (Tiny-ImageNet-C's), by default chosen by image size (32 or 64).
    """
    if corruption not in _CORRUPTERS:
        raise ValueError(f"unknown corruption {corruption!r}; valid: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}; got {severity!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"need uint8 images [N, H, W, 3]; got {images.dtype} {images.shape}")
    corrupter, table = _CORRUPTERS[corruption]
    parameters = table[_constant_set(images.shape, constants)][int(severity) - 1]
    rng = np.random.default_rng(seed)
    corrupted = np.empty_like(images)
    for start in range(0, len(images), CHUNK_SIZE):
        chunk = images[start:start + CHUNK_SIZE].astype(np.float32) / np.float32(255)
        result = corrupter(chunk, parameters, rng)
        corrupted[start:start + CHUNK_SIZE] = np.rint(np.clip(result, 0, 1) * 255).astype(np.uint8)
    return corrupted
