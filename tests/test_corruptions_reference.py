"""Each generated corruption (selectivity_jax.data.corruptions) against Hendrycks & Dietterich's published
definitions, written here independently of the module under test.

The severity constants are typed in below from the published generators, not read from the module. Deterministic
corruptions are compared with a NumPy / Pillow reference of the published operation (within half an 8-bit level, the
module's final rounding); random ones, whose draws the module makes its own way, with statistics and structure that
the published operation fixes (noise scale and law, which pixels may move where, which layer is grey or symmetric,
the range of a recovered fog map, the anchors of a recovered affine map). Every random draw here and in the module
comes from a fixed seed.

Frost (needs Hendrycks' frost photographs) and spatter are not implemented by the module (its docstring says so) and
so are not tested.
"""

import colorsys
import io
import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy import ndimage, stats

from selectivity_jax.data import corruptions
from selectivity_jax.data.corruptions import CORRUPTIONS, corrupt_images

SEVERITIES = (1, 2, 3, 4, 5)

# ---- published constants ----
# From github.com/hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py (CIFAR-10-C, 32x32) and
# ImageNet-C/create_c/make_tinyimagenet_c.py (Tiny-ImageNet-C, 64x64): the list `c` of each corruption function,
# severities 1..5. Zoom blur: the `stop` of its np.arange(1, stop, 0.01). Elastic transform: his entries are
# IMSIZE * fraction; the fractions are listed.
CIFAR10_C = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                          (0.1, 0.03, 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}
TINY_IMAGENET_C = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.15, 0.18),
    "shot_noise": (250, 100, 50, 30, 15),
    "impulse_noise": (0.01, 0.02, 0.05, 0.08, 0.14),
    "defocus_blur": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
    "glass_blur": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
    "motion_blur": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)),
    "fog": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03),
                          (0.16, 0.03, 0.02)),
    "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
    "jpeg_compression": (65, 58, 50, 40, 25),
    "speckle_noise": (0.15, 0.2, 0.25, 0.3, 0.35),
    "gaussian_blur": (0.5, 0.75, 1, 1.25, 1.5),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
}
PUBLISHED = {32: CIFAR10_C, 64: TINY_IMAGENET_C}  # the module picks its tables by image size
SIZES = tuple(PUBLISHED)


def published(corruption: str, severity: int, size: int = 32):
    return PUBLISHED[size][corruption][severity - 1]


# ---- helpers ----

def random_images(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def flat_images(level: int, count: int, size: int = 32) -> np.ndarray:
    return np.full((count, size, size, 3), level, np.uint8)


def assert_rounds_to(corrupted: np.ndarray, expected_levels: np.ndarray, slack: float = 0.01):
    """uint8 output is the clipped reference (float, in levels) rounded: within half a level (plus float32 slack)."""
    error = np.abs(corrupted.astype(float) - np.clip(expected_levels, 0, 255))
    assert error.max() <= 0.5 + slack, f"largest deviation {error.max():.3f} levels"


def gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
    """Normalised Gaussian weights out to int(truncate * sigma + 0.5) pixels (scipy / skimage's cut)."""
    offsets = np.arange(-int(truncate * sigma + 0.5), int(truncate * sigma + 0.5) + 1)
    taps = np.exp(-offsets ** 2 / (2.0 * sigma ** 2))
    return taps / taps.sum()


def correlate_axis(array: np.ndarray, taps: np.ndarray, axis: int, pad_mode: str) -> np.ndarray:
    """1-D correlation of ``array`` with odd ``taps`` along ``axis``; borders by np.pad's ``pad_mode``."""
    half = len(taps) // 2
    widths = [(0, 0)] * array.ndim
    widths[axis] = (half, half)
    windows = sliding_window_view(np.pad(array, widths, mode=pad_mode), len(taps), axis=axis)
    return windows @ taps


def gaussian_blur_reference(images: np.ndarray, sigma: float, truncate: float = 4.0, pad_mode: str = "edge"):
    """skimage.filters.gaussian over height and width (defaults: border 'nearest' = edge, truncate 4)."""
    taps = gaussian_taps(sigma, truncate)
    return correlate_axis(correlate_axis(images, taps, 1, pad_mode), taps, 2, pad_mode)


def affine_fit(coords: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares [3, k] matrix A with [col, row, 1] @ A ~ values, over coords [m, 2] (col, row)."""
    design = np.concatenate([coords, np.ones((len(coords), 1))], axis=1)
    return np.linalg.lstsq(design, values, rcond=None)[0]


# ---- the constants ----

def test_every_implemented_corruption_has_published_constants():
    assert set(CORRUPTIONS) == set(CIFAR10_C) == set(TINY_IMAGENET_C)  # all but frost and spatter


@pytest.mark.parametrize("corruption", sorted(CIFAR10_C))
def test_severity_constants_are_the_published_ones(corruption):
    table = getattr(corruptions, corruption.upper())  # the module's table of this corruption
    for constants, size in (("cifar10", 32), ("tiny_imagenet", 64)):
        np.testing.assert_array_equal(np.asarray(table[constants], float),
                                      np.asarray(PUBLISHED[size][corruption], float), err_msg=constants)


def test_image_size_picks_the_published_table():
    assert corruptions.DEFAULT_CONSTANTS == {(32, 32): "cifar10", (64, 64): "tiny_imagenet"}


# ---- noise (the module's draws are its own: the law of the output is checked) ----

def noisy_levels(corruption: str, severity: int, level: int, size: int) -> np.ndarray:
    """The corrupted levels (float) of a flat grey batch of 393216 values."""
    count = 128 * 32 ** 2 // size ** 2
    return corrupt_images(flat_images(level, count, size), corruption, severity, seed=severity).astype(float)


def rounded_normal_law(mean: float, std: float) -> tuple[float, float, float]:
    """Exact mean, std and kurtosis of clip(rint(N(mean, std)), 0, 255) (levels): rounding and clipping included."""
    levels = np.arange(256.0)
    upper = stats.norm.cdf(levels + 0.5, mean, std)
    lower = stats.norm.cdf(levels - 0.5, mean, std)
    upper[-1], lower[0] = 1.0, 0.0
    probabilities = upper - lower
    centre = probabilities @ levels
    variance = probabilities @ (levels - centre) ** 2
    return centre, math.sqrt(variance), probabilities @ (levels - centre) ** 4 / variance ** 2


def kurtosis(values: np.ndarray) -> float:
    centred = values - values.mean()
    return float(np.mean(centred ** 4) / np.mean(centred ** 2) ** 2)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_adds_normal_noise_of_the_published_std(severity, size):
    """Published: clip(x + N(0, c)). On mid grey the output follows that law: its mean, std and kurtosis."""
    mean, std, expected_kurtosis = rounded_normal_law(128, 255 * published("gaussian_noise", severity, size))
    corrupted = noisy_levels("gaussian_noise", severity, 128, size)
    assert corrupted.std() == pytest.approx(std, rel=0.01)
    assert corrupted.mean() == pytest.approx(mean, abs=5 * std / math.sqrt(corrupted.size))
    assert kurtosis(corrupted) == pytest.approx(expected_kurtosis, abs=0.05)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_speckle_noise_is_multiplicative(severity, size):
    """Published: clip(x + x * N(0, c)): black stays black, and the output is N(x, c x) (rounded): its std is 4x
    larger at level 128 than at 32."""
    assert not corrupt_images(flat_images(0, 8, size), "speckle_noise", severity, seed=severity).any()
    for level in (32, 128):
        mean, std, _ = rounded_normal_law(level, level * published("speckle_noise", severity, size))
        corrupted = noisy_levels("speckle_noise", severity, level, size)
        assert corrupted.std() == pytest.approx(std, rel=0.015), level
        assert corrupted.mean() == pytest.approx(mean, abs=5 * std / math.sqrt(corrupted.size)), level


def shot_noise_law(level: int, counts: int) -> tuple[float, float]:
    """Exact mean and std of the output level rint(255 * min(k, counts) / counts), k ~ Poisson(level / 255 * counts)."""
    rate = level / 255 * counts
    k = np.arange(int(rate + 15 * math.sqrt(rate) + 20))
    probabilities = stats.poisson.pmf(k, rate)
    levels = np.rint(255 * np.minimum(k, counts) / counts)
    mean = probabilities @ levels
    return mean, math.sqrt(probabilities @ (levels - mean) ** 2)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_shot_noise_is_poisson_counts_over_c(severity, size):
    """Published: clip(Poisson(x * c) / c): outputs on the lattice 255 k / c, mean and std of that law at two levels
    (std grows as sqrt(x)), black stays black."""
    counts = published("shot_noise", severity, size)
    assert not corrupt_images(flat_images(0, 8, size), "shot_noise", severity, seed=severity).any()
    lattice = 255 * np.arange(counts + 1) / counts
    for level in (51, 204):
        corrupted = noisy_levels("shot_noise", severity, level, size)
        distance = np.abs(np.unique(corrupted)[:, None] - lattice).min(axis=1)
        assert distance.max() <= 0.5 + 1e-3, level
        mean, std = shot_noise_law(level, counts)
        assert corrupted.mean() == pytest.approx(mean, abs=5 * std / math.sqrt(corrupted.size)), level
        assert corrupted.std() == pytest.approx(std, rel=0.015), level


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_salts_and_peppers_the_published_fraction_of_values(severity, size):
    """Published: skimage random_noise 's&p', amount c: each value independently set to 0 or 1 (half each) with
    probability c."""
    amount = published("impulse_noise", severity, size)
    residual = noisy_levels("impulse_noise", severity, 128, size) - 128
    hit = residual != 0
    assert set(np.unique(residual[hit] + 128)) <= {0.0, 255.0}
    assert hit.mean() == pytest.approx(amount, abs=5 * math.sqrt(amount * (1 - amount) / hit.size))
    assert (residual > 0).sum() / hit.sum() == pytest.approx(0.5, abs=2.5 / math.sqrt(hit.sum()))
    one_channel = (hit.sum(axis=-1) == 1).mean()  # per value, not per pixel: channels hit independently
    expected = 3 * amount * (1 - amount) ** 2
    assert one_channel == pytest.approx(expected, abs=5 * math.sqrt(expected / (hit.size / 3)))


# ---- blurs ----

@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_blur_is_skimage_gaussian(severity, size):
    images = random_images(4, size, seed=severity)
    expected = gaussian_blur_reference(images / 255.0, published("gaussian_blur", severity, size))
    assert_rounds_to(corrupt_images(images, "gaussian_blur", severity), expected * 255)


def disk_kernel_reference(radius: float, alias_sigma: float) -> np.ndarray:
    """His disk(): the normalised disk x^2 + y^2 <= r^2 on the 17x17 grid -8..8, then cv2.GaussianBlur 3x3 of
    ``alias_sigma`` (border reflect-101, numpy's 'reflect')."""
    grid = np.arange(-8, 9)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius ** 2).astype(float)
    taps = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * alias_sigma ** 2))
    taps /= taps.sum()
    return correlate_axis(correlate_axis(disk / disk.sum(), taps, 0, "reflect"), taps, 1, "reflect")


def filter2d_reference(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.filter2D per channel: correlation, centred anchor, border reflect-101."""
    half = kernel.shape[0] // 2
    padded = np.pad(images, ((0, 0), (half, half), (half, half), (0, 0)), mode="reflect")
    windows = sliding_window_view(padded, kernel.shape, axis=(1, 2))
    return np.einsum("nhwcij,ij->nhwc", windows, kernel)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_defocus_blur_is_the_anti_aliased_disk(severity, size):
    images = random_images(4, size, seed=severity)
    kernel = disk_kernel_reference(*published("defocus_blur", severity, size))
    expected = filter2d_reference(images / 255.0, kernel)
    assert_rounds_to(corrupt_images(images, "defocus_blur", severity), expected * 255)


def test_defocus_blur_hand_computed_pixels():
    """CIFAR severity 1: disk radius 0.3 (the centre tap alone), anti-aliased by a 3-tap Gaussian of sigma 0.4, taps
    (e, 1, e) / (1 + 2e), e = exp(-1 / 0.32) = 0.043937: a 255 dot becomes 255 / 1.087874^2 = 215.47 at the centre,
    255 e / 1.087874^2 = 9.47 beside it and 0.42 diagonally."""
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 16, 16] = 255
    corrupted = corrupt_images(image, "defocus_blur", 1)[0, 15:18, 15:18, 0]
    np.testing.assert_array_equal(corrupted, [[0, 9, 0], [9, 215, 9], [0, 9, 0]])


def clipped_zoom_reference(images: np.ndarray, factor: float) -> np.ndarray:
    """His clipped_zoom per image: the centre ceil(size / factor) square, scipy.ndimage.zoom(order=1), centre crop."""
    size = images.shape[1]
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    zoomed = ndimage.zoom(images[:, top:top + crop, top:top + crop], (1, factor, factor, 1), order=1)
    trim = (zoomed.shape[1] - size) // 2
    return zoomed[:, trim:trim + size, trim:trim + size]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_zoom_blur_averages_the_image_and_its_zooms(severity, size):
    images = random_images(2, size, seed=severity)
    clean = images / 255.0
    factors = np.arange(1, published("zoom_blur", severity, size), 0.01)
    total = clean + sum(clipped_zoom_reference(clean, factor) for factor in factors)
    assert_rounds_to(corrupt_images(images, "zoom_blur", severity), total / (len(factors) + 1) * 255)


def motion_offsets(radius: float, angle: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """ImageMagick MotionBlurImage (effect.c): 2 ceil(radius) + 1 taps, tap i at (ceil(i cos a - 0.5),
    ceil(i sin a - 0.5)) (columns, rows; rows grow down)."""
    taps = np.arange(2 * math.ceil(radius) + 1)
    cols = np.ceil(taps * math.cos(math.radians(angle)) - 0.5).astype(int)
    rows = np.ceil(taps * math.sin(math.radians(angle)) - 0.5).astype(int)
    return tuple(cols), tuple(rows)


def motion_blur_reference(image: np.ndarray, sigma: float, offsets) -> np.ndarray:
    """[H, W, C] blurred with weights exp(-i^2 / 2 sigma^2) (normalised) at ``offsets``, edge pixels repeated."""
    cols, rows = offsets
    weights = np.exp(-np.arange(len(cols)) ** 2 / (2.0 * sigma ** 2))
    weights /= weights.sum()
    height, width = image.shape[:2]
    result = np.zeros(image.shape)
    for weight, row, col in zip(weights, rows, cols, strict=True):
        source_rows = np.clip(np.arange(height) + row, 0, height - 1)
        source_cols = np.clip(np.arange(width) + col, 0, width - 1)
        result += weight * image[source_rows][:, source_cols]
    return result


def motion_patterns(radius: float, low: float, high: float) -> list:
    """The distinct offset patterns of the angles in [low, high] degrees (a 0.01 degree grid)."""
    return sorted({motion_offsets(radius, angle) for angle in np.linspace(low, high, round((high - low) * 100) + 1)})


def matching_patterns(image: np.ndarray, corrupted: np.ndarray, sigma: float, patterns: list) -> list:
    """The patterns whose reference blur of ``image`` (uint8) rounds to ``corrupted``."""
    matches = []
    for pattern in patterns:
        expected = motion_blur_reference(image / 255.0, sigma, pattern) * 255
        if np.abs(corrupted - expected).max() <= 0.51:
            matches.append(pattern)
    return matches


@pytest.mark.parametrize("severity", SEVERITIES)
def test_motion_blur_is_imagemagicks_at_an_angle_within_45_degrees(severity):
    """Published: MagickMotionBlurImage(radius, sigma, angle ~ U(-45, 45)). Each image must equal the reference
    blur at one of the angles in that range; the images get different angles."""
    radius, sigma = CIFAR10_C["motion_blur"][severity - 1]
    patterns = motion_patterns(radius, -45, 45)
    images = random_images(3, seed=severity)
    corrupted = corrupt_images(images, "motion_blur", severity, seed=severity)
    found = [matching_patterns(image, result, sigma, patterns) for image, result in zip(images, corrupted, strict=True)]
    assert all(found), [len(matches) for matches in found]
    assert len({frozenset(matches) for matches in found}) > 1


def coded_image(size: int = 32) -> np.ndarray:
    """[size, size, 3] uint8 whose red is 8 x row and green 8 x column (every pixel names its place), blue 100."""
    rows, cols = np.mgrid[:size, :size]
    return np.stack([8 * rows, 8 * cols, np.full_like(rows, 100)], axis=-1).astype(np.uint8)


def glass_moves(severity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Glass blur of 32 coded images: (output, row moves, column moves) of the pixels from row and column 2 on,
    each move the source's place (read off red and green) less the pixel's own."""
    images = np.repeat(coded_image()[None], 32, axis=0)
    corrupted = corrupt_images(images, "glass_blur", severity, seed=severity).astype(float)
    row_moves = corrupted[:, 2:, 2:, 0] / 8 - np.arange(2, 32)[:, None]
    col_moves = corrupted[:, 2:, 2:, 1] / 8 - np.arange(2, 32)
    return corrupted, row_moves, col_moves


@pytest.mark.parametrize("severity", [1, 2, 4])  # the severities whose sigma (<= 0.25) moves no level of this image
def test_glass_blur_moves_pixels_as_his_loop_does(severity):
    """His loop, for rows and columns from size - d down to d + 1: x[h, w] = x[h + dy, w + dx], (dx, dy) from
    randint(-d, d) (his 'swap' of numpy views copies one way). For d = 1 each round takes every visited pixel from
    one of (0, 0), (0, -1), (-1, 0), (-1, -1) away, uniformly; rows and columns 0 and 1 stay; rounds compose."""
    rounds = CIFAR10_C["glass_blur"][severity - 1][2]
    corrupted, row_moves, col_moves = glass_moves(severity)
    assert (corrupted[..., 2] == 100).all() and (corrupted[..., :2] % 8 == 0).all()  # whole pixels move
    np.testing.assert_array_equal(corrupted[:, :2], np.repeat(coded_image()[None, :2], 32, axis=0))
    np.testing.assert_array_equal(corrupted[:, :, :2], np.repeat(coded_image()[None, :, :2], 32, axis=0))
    assert set(np.unique(row_moves)) == set(np.unique(col_moves)) == set(range(-rounds, 1))
    if rounds == 1:
        for row_move in (-1, 0):
            for col_move in (-1, 0):
                share = ((row_moves == row_move) & (col_moves == col_move)).mean()
                assert share == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_glass_blur_moves_reach_the_published_rounds(severity):
    """At any sigma: read-off moves (blur-weighted where sigma is 0.4) stay within the published number of rounds
    of one-pixel moves up and left, and reach that far."""
    rounds = CIFAR10_C["glass_blur"][severity - 1][2]
    _, row_moves, col_moves = glass_moves(severity)
    for moves in (row_moves, col_moves):
        assert moves.max() <= 1 / 16 and moves.min() >= -rounds - 1 / 16
        assert moves.min() <= -rounds + 1 / 16


@pytest.mark.parametrize("severity", SEVERITIES)
def test_glass_blur_blurs_before_and_after_the_moves(severity):
    """Row 0 is never moved nor a source of moves, and row 2 (the first moved) is too far to matter: a bright dot on
    row 0 comes out as the published Gaussian blur applied twice."""
    sigma = CIFAR10_C["glass_blur"][severity - 1][0]
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[:, 0, 16] = 255
    expected = gaussian_blur_reference(gaussian_blur_reference(images / 255.0, sigma), sigma) * 255
    assert_rounds_to(corrupt_images(images, "glass_blur", severity, seed=severity)[:, 0], expected[:, 0])


# ---- weather ----

def snow_base(images: np.ndarray, image_weight: float) -> np.ndarray:
    """His snow without flakes: w x + (1 - w) max(x, 1.5 grey + 0.5), grey = cv2 RGB2GRAY (0.299, 0.587, 0.114)."""
    grey = images @ np.array([0.299, 0.587, 0.114])
    return image_weight * images + (1 - image_weight) * np.maximum(images, 1.5 * grey[..., None] + 0.5)


def snow_layer(corrupted: np.ndarray, images: np.ndarray, image_weight: float) -> np.ndarray:
    """What the corruption added to the flake-free image (in [0, 1] units)."""
    return corrupted / 255.0 - snow_base(images / 255.0, image_weight)


def dark_images(count: int, seed: int) -> np.ndarray:
    """Random images with levels 0..50: the snow's base stays below 0.4, so flakes rarely reach white."""
    return np.random.default_rng(seed).integers(0, 51, (count, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_snow_adds_a_grey_point_symmetric_layer_to_the_published_base(severity):
    """Published: x' = w x + (1 - w) max(x, 1.5 grey + 0.5); out = x' + L + rot180(L) with one grey, non-negative
    flake layer L. So out - x' is >= 0, equal over the channels and symmetric under a half turn (where not white),
    and 0 where no flake fell."""
    image_weight = CIFAR10_C["snow"][severity - 1][6]
    images = dark_images(16, seed=severity)
    corrupted = corrupt_images(images, "snow", severity, seed=severity)
    layer = snow_layer(corrupted, images, image_weight)
    step = 1 / 255 + 1e-4  # two roundings apart
    assert layer.min() >= -step / 2
    unclipped = (corrupted < 255).all(axis=-1)
    assert np.ptp(layer, axis=-1)[unclipped].max() <= step
    turned = layer.mean(axis=-1)[:, ::-1, ::-1]
    both = unclipped & unclipped[:, ::-1, ::-1]
    assert np.abs(layer.mean(axis=-1) - turned)[both].max() <= step
    assert (np.abs(layer).max(axis=-1) <= step / 2).mean() > 0.02  # flake-free pixels show the base exactly


def snow_layer_reference(rng: np.random.Generator, count: int, parameters: tuple) -> np.ndarray:
    """His flake layer L + rot180(L) for ``count`` 32x32 images, from our own draws."""
    mean, std, zoom, threshold, radius, sigma = parameters[:6]
    flakes = clipped_zoom_reference(rng.normal(mean, std, (count, 32, 32, 1)), zoom)
    flakes = np.clip(np.where(flakes < threshold, 0, flakes), 0, 1)
    layers = [motion_blur_reference(flake, sigma, motion_offsets(radius, rng.uniform(-135, -45))) for flake in flakes]
    return np.stack(layers) + np.stack(layers)[:, ::-1, ::-1]


@pytest.mark.parametrize("severity", SEVERITIES)
def test_snow_layer_has_the_published_flake_statistics(severity):
    """On black images (base (1 - w) / 2 everywhere): the mean added level (set by the flakes' law, zoom and
    threshold) matches our own draws of the published layer, rounded alike; the streaks (angle in [-135, -45]
    degrees) run mostly vertically."""
    parameters = CIFAR10_C["snow"][severity - 1]
    base = (1 - parameters[6]) / 2 * 255
    black = np.zeros((256, 32, 32, 3), np.uint8)
    added = corrupt_images(black, "snow", severity, seed=severity)[..., 0] - base
    layer = snow_layer_reference(np.random.default_rng(100 + severity), 512, parameters)[..., 0]
    expected = np.rint(np.clip(base + 255 * layer, 0, 255)) - base
    assert added.mean() == pytest.approx(expected.mean(), rel=0.15)
    assert np.abs(np.diff(added, axis=1)).mean() < 0.8 * np.abs(np.diff(added, axis=2)).mean()


def fog_map(corrupted: np.ndarray, images: np.ndarray, strength: float) -> np.ndarray:
    """The fog map F recovered from out = (x + s F) m / (m + s), m = the image's largest value."""
    peak = images.max(axis=(1, 2, 3), keepdims=True) / 255.0
    return (corrupted / 255.0 * (peak + strength) / peak - images / 255.0) / strength


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_fog_adds_one_grey_plasma_map_spanning_0_to_1(severity, size):
    """Published: (x + s F) * max(x) / (max(x) + s), max over the whole image, F a plasma fractal scaled to [0, 1] on
    a map the image's size. Recovered F is the same in each channel and spans exactly [0, 1] in each image."""
    strength = published("fog", severity, size)[0]
    levels = np.random.default_rng(severity).integers(20, 150, (8, size, size, 3))
    images = (levels * np.array([1.0, 0.6, 0.3])).astype(np.uint8)  # the channels' largest values differ
    fog = fog_map(corrupt_images(images, "fog", severity, seed=severity), images, strength)
    peak = images.max(axis=(1, 2, 3)) / 255.0
    tolerance = (0.5 / 255 * (peak + strength) / (peak * strength) + 1e-4)[:, None, None, None]
    assert (np.ptp(fog, axis=-1, keepdims=True) <= 2 * tolerance).all()
    assert (np.abs(fog.min(axis=(1, 2, 3))) <= tolerance[:, 0, 0, 0]).all()
    assert (np.abs(fog.max(axis=(1, 2, 3)) - 1) <= tolerance[:, 0, 0, 0]).all()


def plasma_reference(rng: np.random.Generator, size: int, decay: float) -> np.ndarray:
    """Diamond-square on a wrapping size x size grid as in his plasma_fractal: new points are the mean of their four
    neighbours plus scale * U(-scale, scale); scale starts at 100 and is divided by ``decay`` per level; result
    scaled to [0, 1]."""
    grid = np.zeros((size, size))
    step, scale = size, 100.0
    while step >= 2:
        half = step // 2
        corner = grid[::step, ::step]
        below_right = corner + np.roll(corner, -1, 0) + np.roll(corner, -1, 1) + np.roll(corner, (-1, -1), (0, 1))
        grid[half::step, half::step] = below_right / 4 + scale * rng.uniform(-scale, scale, corner.shape)
        centre = grid[half::step, half::step]
        edge_top = centre + np.roll(centre, 1, 0) + corner + np.roll(corner, -1, 1)
        edge_left = centre + np.roll(centre, 1, 1) + corner + np.roll(corner, -1, 0)
        grid[::step, half::step] = edge_top / 4 + scale * rng.uniform(-scale, scale, corner.shape)
        grid[half::step, ::step] = edge_left / 4 + scale * rng.uniform(-scale, scale, corner.shape)
        step, scale = half, scale / decay
    grid -= grid.min()
    return grid / grid.max()


def roughness(maps: np.ndarray) -> float:
    return float(np.abs(np.diff(maps, axis=-1)).mean() + np.abs(np.diff(maps, axis=-2)).mean())


@pytest.mark.parametrize("severity", SEVERITIES)
def test_fog_map_is_as_rough_as_the_published_plasma_fractal(severity):
    strength, decay = CIFAR10_C["fog"][severity - 1]
    images = np.full((64, 32, 32, 3), 100, np.uint8)
    fog = fog_map(corrupt_images(images, "fog", severity, seed=severity), images, strength)[..., 0]
    rng = np.random.default_rng(200 + severity)
    reference = np.stack([plasma_reference(rng, 32, decay) for _ in range(256)])
    assert roughness(fog) == pytest.approx(roughness(reference), rel=0.05)


# ---- colour ----

def hsv_reference(images: np.ndarray, edit) -> np.ndarray:
    """Per pixel through colorsys (the formulas of skimage's rgb2hsv / hsv2rgb): (h, s, v) -> edit(h, s, v)."""
    result = np.empty(images.shape)
    for index in np.ndindex(images.shape[:-1]):
        hsv = colorsys.rgb_to_hsv(*(images[index] / 255.0))
        result[index] = colorsys.hsv_to_rgb(*edit(*hsv))
    return result * 255


def colour_images(size: int) -> np.ndarray:
    """Two random images with greys, black, white and pure colours in their first row."""
    images = random_images(2, size, seed=size)
    specials = [[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]
    images[:, 0, :len(specials)] = specials
    return images


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_adds_to_the_hsv_value(severity, size):
    shift = published("brightness", severity, size)
    images = colour_images(size)
    expected = hsv_reference(images, lambda h, s, v: (h, s, min(max(v + shift, 0), 1)))
    assert_rounds_to(corrupt_images(images, "brightness", severity), expected)


def test_brightness_hand_computed_pixel():
    """(100, 50, 0) has value 100 / 255; severity 1 adds 0.05 (12.75 levels) with hue and saturation kept: every
    channel scales by 112.75 / 100, giving (112.75, 56.375, 0) -> (113, 56, 0)."""
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[...] = (100, 50, 0)
    assert (corrupt_images(image, "brightness", 1) == (113, 56, 0)).all()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_saturate_scales_and_shifts_the_hsv_saturation(severity, size):
    factor, added = published("saturate", severity, size)
    images = colour_images(size)
    expected = hsv_reference(images, lambda h, s, v: (h, min(max(s * factor + added, 0), 1), v))
    assert_rounds_to(corrupt_images(images, "saturate", severity), expected)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_scales_deviations_from_each_channels_mean(severity, size):
    """Published: (x - mean) * c + mean, mean over height and width per image and channel (keepdims)."""
    kept = published("contrast", severity, size)
    images = random_images(3, size, seed=severity) // np.array([4, 2, 1], np.uint8) + np.array([0, 100, 0], np.uint8)
    clean = images / 255.0
    means = clean.mean(axis=(1, 2), keepdims=True)
    assert_rounds_to(corrupt_images(images, "contrast", severity), ((clean - means) * kept + means) * 255)


def test_contrast_hand_computed_pixels():
    """Red half 0, half 200 (mean 100); green 50 everywhere. Severity 5 keeps 0.15 of the deviation: 85 and 115."""
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, :, 16:, 0] = 200
    image[..., 1] = 50
    corrupted = corrupt_images(image, "contrast", 5)
    assert (corrupted[0, :, :16, 0] == 85).all() and (corrupted[0, :, 16:, 0] == 115).all()
    assert (corrupted[..., 1] == 50).all() and (corrupted[..., 2] == 0).all()


# ---- digital ----

def pillow_round_trip(images: np.ndarray, operation) -> np.ndarray:
    return np.stack([np.asarray(operation(Image.fromarray(image))) for image in images])


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_compression_is_pillow_jpeg_at_the_published_quality(severity, size):
    quality = published("jpeg_compression", severity, size)
    images = random_images(2, size, seed=severity)
    expected = pillow_round_trip(images, lambda image: jpeg(image, quality))
    np.testing.assert_array_equal(corrupt_images(images, "jpeg_compression", severity), expected)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixelate_is_pillow_box_down_to_the_published_fraction_and_up(severity, size):
    small = int(size * published("pixelate", severity, size))
    images = random_images(2, size, seed=severity)
    expected = pillow_round_trip(images, lambda image: image.resize((small, small), Image.BOX).resize(
        (size, size), Image.BOX))
    np.testing.assert_array_equal(corrupt_images(images, "pixelate", severity), expected)


def elastic_sources(severity: int, count: int = 32) -> np.ndarray:
    """[count, 32, 32, 2] source (column, row) of each output pixel, read off an image whose red is 10 + 7 x column
    and green 10 + 7 x row (within 0.5 / 7 pixel)."""
    rows, cols = np.mgrid[:32, :32]
    image = np.stack([10 + 7 * cols, 10 + 7 * rows, np.full_like(rows, 128)], axis=-1).astype(np.uint8)
    corrupted = corrupt_images(np.repeat(image[None], count, 0), "elastic_transform", severity, seed=severity)
    return (corrupted[..., :2] - 10.0) / 7


INNER = np.stack(np.meshgrid(np.arange(6, 26), np.arange(6, 26), indexing="xy"), axis=-1).reshape(-1, 2)  # col, row


def moved_anchors(inverse: np.ndarray) -> np.ndarray:
    """Where the affine map ``inverse`` ((col, row, 1) @ inverse: output -> source) came from: the points it sends
    to his anchors (centre +- size // 3: (26, 26), (26, 6), (6, 6))."""
    anchors = np.array([[26.0, 26.0], [26.0, 6.0], [6.0, 6.0]])
    return (anchors - inverse[2]) @ np.linalg.inv(inverse[:2])


def test_elastic_transform_severity_1_is_his_random_affine_map():
    """Severity 1 has no elastic part: each image is an affine resampling, border reflect-101, whose anchor points
    moved by U(-0.08 x 32, 0.08 x 32) each coordinate (his cv2.getAffineTransform of jittered anchors)."""
    jitter = CIFAR10_C["elastic_transform"][0][2] * 32
    moves = []
    for sources in elastic_sources(1):
        inverse = affine_fit(INNER, sources[INNER[:, 1], INNER[:, 0]])
        grid = np.stack(np.meshgrid(np.arange(32), np.arange(32), indexing="xy"), axis=-1)
        predicted = np.concatenate([grid, np.ones((32, 32, 1))], axis=-1) @ inverse
        folded = np.where(predicted < 0, -predicted, np.where(predicted > 31, 62 - predicted, predicted))
        assert np.abs(sources - folded).max() <= 0.15  # read-off rounding 0.07 + fit error
        moves.append(moved_anchors(inverse) - np.array([[26, 26], [26, 6], [6, 6]]))
    moves = np.abs(np.array(moves))
    assert moves.max() <= jitter + 0.02 and moves.max() > 0.9 * jitter


def displacement_reference(alpha: float, sigma: float, count: int) -> np.ndarray:
    """His elastic displacement (our draws): alpha * gaussian(U(-1, 1), sigma, mode 'reflect', truncate 3),
    [count, 32, 32]."""
    noise = np.random.default_rng(300).uniform(-1, 1, (count, 32, 32))
    return alpha * gaussian_blur_reference(noise[..., None], sigma, 3.0, "symmetric")[..., 0]


def affine_residual_std(fields: np.ndarray) -> float:
    """Std over images of ``fields`` [n, 32, 32, k] on the inner square, less each image's least-squares affine part."""
    residuals = []
    for field in fields:
        values = field[INNER[:, 1], INNER[:, 0]]
        residuals.append(values - np.concatenate([INNER, np.ones((len(INNER), 1))], axis=1) @ affine_fit(INNER, values))
    return float(np.std(residuals))


@pytest.mark.parametrize("severity", [2, 3, 4, 5])  # severity 2's field (std ~0.02 px) hides in the read-off noise
def test_elastic_transform_displacement_has_the_published_size(severity):
    """Beyond its affine part, the source of each pixel moves by the smoothed noise field: its std matches our draws
    of the published field (alpha = a x 32, sigma = s x 32), plus the read-off rounding (1 / 7 level)."""
    alpha, sigma = (fraction * 32 for fraction in CIFAR10_C["elastic_transform"][severity - 1][:2])
    measured = affine_residual_std(elastic_sources(severity))
    expected = affine_residual_std(displacement_reference(alpha, sigma, 64)[..., None])
    assert measured == pytest.approx(math.sqrt(expected ** 2 + 1 / (12 * 49)), rel=0.1)


# ---- randomness ----

RANDOM_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur",
                      "snow", "fog", "elastic_transform")


@pytest.mark.parametrize("corruption", RANDOM_CORRUPTIONS)
def test_random_draws_come_from_the_seed_only(corruption):
    """Same seed, same output, whatever numpy's global state; the global state is neither used nor advanced."""
    images = random_images(4, seed=7)
    np.random.seed(1)
    first = corrupt_images(images, corruption, 3, seed=5)
    np.random.seed(2)
    state = np.random.get_state()[1].copy()
    np.testing.assert_array_equal(corrupt_images(images, corruption, 3, seed=5), first)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert not np.array_equal(corrupt_images(images, corruption, 3, seed=6), first)
