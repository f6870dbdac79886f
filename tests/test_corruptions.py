"""Generated corruptions (selectivity_jax.data.corruptions): shapes, determinism, strength over severities, and checks
that pin the operations against Pillow, scipy and closed forms."""

import functools
import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from selectivity_jax.data import corruptions
from selectivity_jax.data.corruptions import CORRUPTIONS, FAMILIES, corrupt_images

SIZES = (32, 64)
CONSTANTS_BY_SIZE = {32: "cifar10", 64: "tiny_imagenet"}
RANDOM_CORRUPTIONS = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur",
                      "snow", "fog", "elastic_transform"}


@functools.cache
def structured_images(size: int) -> np.ndarray:
    """Four uint8 test images [4, size, size, 3]: colour gradient, disc, bars, waves with a square; lightly textured."""
    rows, cols = np.mgrid[0:size, 0:size] / (size - 1)
    gradient = np.stack([0.2 + 0.6 * rows, 0.2 + 0.6 * cols, np.full_like(rows, 0.5)], axis=-1)
    disc = ((rows - 0.5) ** 2 + (cols - 0.45) ** 2 < 0.09)[..., None]
    square = ((np.abs(rows - 0.6) < 0.2) & (np.abs(cols - 0.3) < 0.2))[..., None]
    bars = (np.floor(cols * 4) % 2 == 0)[..., None]
    waves = 0.5 + 0.3 * np.sin(2 * np.pi * np.stack([rows + cols, 2 * rows, 1.5 * cols], axis=-1))
    images = np.stack([
        gradient,
        np.where(disc, [0.9, 0.6, 0.2], 0.15 + 0.2 * gradient),
        np.where(bars, [0.3, 0.3, 0.7], [0.8, 0.75, 0.4]) * (0.7 + 0.3 * rows[..., None]),
        np.where(square, [0.1, 0.7, 0.3], waves),
    ])
    texture = 0.04 * np.random.default_rng(size).standard_normal(images.shape)
    return np.rint(np.clip(images + texture, 0, 1) * 255).astype(np.uint8)


def mean_change(corrupted: np.ndarray, clean: np.ndarray) -> float:
    return float(np.abs(corrupted.astype(float) - clean).mean())


def test_api_lists_hendrycks_corruptions_in_his_order():
    required = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "gaussian_blur",
                "motion_blur", "zoom_blur", "contrast", "brightness", "saturate", "fog", "pixelate",
                "jpeg_compression", "elastic_transform")
    assert set(required) <= set(CORRUPTIONS) and len(set(CORRUPTIONS)) == len(CORRUPTIONS)
    benchmark_order = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                       "zoom_blur", "snow", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                       "jpeg_compression", "speckle_noise", "gaussian_blur", "saturate")
    assert [name for name in CORRUPTIONS if name in benchmark_order] == list(benchmark_order)
    assert set(FAMILIES) == set(CORRUPTIONS) and set(FAMILIES.values()) == {"noise", "blur", "weather", "digital"}
    assert FAMILIES["speckle_noise"] == "noise" and FAMILIES["elastic_transform"] == "digital"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_shape_dtype_and_determinism(corruption, size):
    images = structured_images(size)
    corrupted = corrupt_images(images, corruption, 3, seed=0)
    assert corrupted.shape == images.shape and corrupted.dtype == np.uint8
    assert np.array_equal(corrupted, corrupt_images(images, corruption, 3, seed=0))
    reseeded = corrupt_images(images, corruption, 3, seed=1)
    assert np.array_equal(corrupted, reseeded) == (corruption not in RANDOM_CORRUPTIONS)


# Corruptions whose strength is NOT monotone in severity under Hendrycks' own constants (kept faithfully); measured
# on these images and on real CIFAR-10 / ImageNet samples alike. Each gets the weakest assertion that holds.
NOT_MONOTONE = {
    # CIFAR: severities 1 and 2 differ only in a blur sigma (0.05 vs 0.25) too small to change a level (identical
    # output), and the blur of severities 3 and 5 smooths the pixel moves: 3 < 2 and 5 < 4 by a few percent.
    # Tiny ImageNet: 2 < 1 and 4 < 3 by a few percent, for the same reason.
    ("glass_blur", 32), ("glass_blur", 64),
    # CIFAR: severities 3 (radius 6, sigma 2) and 4 (radius 8, sigma 2) give identical output: the extra taps of the
    # one-sided Gaussian weigh < 1e-9.
    ("motion_blur", 32),
    # The random affine jitter shrinks with severity (8% -> 3% of the side for CIFAR, 8% -> 2% for Tiny ImageNet)
    # while the small-scale elastic displacement grows: the mean pixel change DEcreases, severity 5 ~ 0.6 x severity 1.
    ("elastic_transform", 32), ("elastic_transform", 64),
    # Severities 1 and 2 desaturate (x0.3, x0.1), severity 3 saturates mildly (x1.5 / x2): 3 changes least.
    ("saturate", 32), ("saturate", 64),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_strength_grows_with_severity(corruption, size):
    images = structured_images(size)
    changes = [mean_change(corrupt_images(images, corruption, severity), images) for severity in range(1, 6)]
    if (corruption, size) not in NOT_MONOTONE:
        assert all(weaker < stronger for weaker, stronger in zip(changes, changes[1:])), changes
    elif corruption == "elastic_transform":
        assert all(change > 5 for change in changes), changes  # every severity distorts; strength falls (see above)
    elif corruption == "motion_blur":
        assert changes[2] == changes[3] and all(a <= b for a, b in zip(changes, changes[1:])), changes
        assert changes[4] > changes[0], changes
    else:
        assert changes[4] > changes[0], changes


def test_noise_has_the_tabled_scale():
    grey = np.full((8, 32, 32, 3), 128, np.uint8)
    for severity in range(1, 6):
        residual = corrupt_images(grey, "gaussian_noise", severity, seed=severity).astype(float) - 128
        assert residual.std() == pytest.approx(255 * corruptions.GAUSSIAN_NOISE["cifar10"][severity - 1], rel=0.05)
        assert abs(residual.mean()) < 0.5
    shot = corrupt_images(grey, "shot_noise", 5).astype(float)
    counts = corruptions.SHOT_NOISE["cifar10"][4]
    assert shot.std() == pytest.approx(255 * np.sqrt(128 / 255 * counts) / counts, rel=0.05)


def test_impulse_noise_only_sets_black_or_white():
    images = structured_images(64)
    corrupted = corrupt_images(images, "impulse_noise", 5)
    changed = corrupted != images
    assert set(np.unique(corrupted[changed])) <= {0, 255}
    assert changed.mean() == pytest.approx(corruptions.IMPULSE_NOISE["tiny_imagenet"][4], rel=0.1)


@pytest.mark.parametrize("size", SIZES)
def test_brightness_shifts_hsv_value(size):
    images = structured_images(size)
    shift = corruptions.BRIGHTNESS[CONSTANTS_BY_SIZE[size]][2]
    corrupted = corrupt_images(images, "brightness", 3).astype(float)
    assert corrupted.mean() > images.mean() + 10
    # Hue and saturation kept, value + shift: every channel scales by new value / old value.
    value = images.max(axis=-1, keepdims=True).astype(float)
    expected = images * np.minimum(value + 255 * shift, 255) / value
    np.testing.assert_allclose(corrupted, expected, atol=1.01)


@pytest.mark.parametrize("size", SIZES)
def test_saturate_keeps_value_and_desaturates_at_severity_2(size):
    images = structured_images(size)
    for severity in range(1, 6):
        corrupted = corrupt_images(images, "saturate", severity)
        np.testing.assert_allclose(corrupted.max(axis=-1), images.max(axis=-1), atol=1)
    spread = np.ptp(corrupt_images(images, "saturate", 2).astype(float), axis=-1)
    np.testing.assert_allclose(spread, 0.1 * np.ptp(images.astype(float), axis=-1), atol=1.5)


@pytest.mark.parametrize("size", SIZES)
def test_contrast_lowers_spread_and_keeps_means(size):
    images = structured_images(size)
    kept = corruptions.CONTRAST[CONSTANTS_BY_SIZE[size]][4]
    corrupted = corrupt_images(images, "contrast", 5).astype(float)
    np.testing.assert_allclose(corrupted.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=0.5)
    np.testing.assert_allclose(corrupted.std(axis=(1, 2)), kept * images.std(axis=(1, 2)), atol=0.5)


@pytest.mark.parametrize("size", SIZES)
def test_pixelate_is_pillows_box_resize_down_and_up(size):
    images = structured_images(size)
    for severity, kept in enumerate(corruptions.PIXELATE[CONSTANTS_BY_SIZE[size]], start=1):
        small = int(size * kept)
        expected = np.stack([np.asarray(Image.fromarray(image).resize((small, small), Image.BOX)
                                        .resize((size, size), Image.BOX)) for image in images])
        np.testing.assert_array_equal(corrupt_images(images, "pixelate", severity), expected)
    small = int(size * corruptions.PIXELATE[CONSTANTS_BY_SIZE[size]][4])
    corrupted = corrupt_images(images, "pixelate", 5).astype(int)
    for axis in (1, 2):  # constant blocks: at most `small` runs of equal rows / columns
        changes = (np.diff(corrupted, axis=axis) != 0).any(axis=(3 - axis, 3))
        assert (changes.sum(axis=1) < small).all()
    if size == 64:  # 64 -> 32 -> 64: aligned 2x2 blocks
        blocks = corrupted.reshape(4, 32, 2, 32, 2, 3)
        assert (blocks == blocks[:, :, :1, :, :1]).all()


def test_jpeg_compression_round_trips_through_pillow():
    images = structured_images(32)
    quality = corruptions.JPEG_COMPRESSION["cifar10"][4]
    expected = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        expected.append(np.asarray(Image.open(buffer)))
    np.testing.assert_array_equal(corrupt_images(images, "jpeg_compression", 5), np.stack(expected))


@pytest.mark.parametrize("size", SIZES)
def test_zoom_blur_matches_scipy_zoom_of_centre_crops(size):
    """Hendrycks' zoom blur, written with scipy.ndimage.zoom per image: mean of the image and its centre crops
    zoomed back to full size by 1, 1.01, ... (order 1), within one level of rounding."""
    images = structured_images(size)
    stop = corruptions.ZOOM_BLUR[CONSTANTS_BY_SIZE[size]][2]
    clean = images / 255.0
    total = clean.copy()
    factors = np.arange(1, stop, 0.01)
    for factor in factors:
        crop = int(np.ceil(size / factor))
        start = (size - crop) // 2
        zoomed = ndimage.zoom(clean[:, start:start + crop, start:start + crop], (1, factor, factor, 1), order=1)
        trim = (zoomed.shape[1] - size) // 2
        total += zoomed[:, trim:trim + size, trim:trim + size]
    expected = np.rint(total / (len(factors) + 1) * 255)
    assert np.abs(corrupt_images(images, "zoom_blur", 3) - expected).max() <= 1


@pytest.mark.parametrize("corruption", ["defocus_blur", "gaussian_blur", "glass_blur", "motion_blur", "zoom_blur",
                                        "elastic_transform", "pixelate", "contrast"])
def test_spatial_corruptions_keep_a_constant_image(corruption):
    flat = np.full((3, 32, 32, 3), (40, 120, 200), np.uint8)
    for severity in (1, 5):
        np.testing.assert_array_equal(corrupt_images(flat, corruption, severity), flat)


def test_constants_follow_image_size_unless_given():
    images = structured_images(32)
    assert np.array_equal(corrupt_images(images, "contrast", 1), corrupt_images(images, "contrast", 1,
                                                                                constants="cifar10"))
    assert not np.array_equal(corrupt_images(images, "contrast", 1),
                              corrupt_images(images, "contrast", 1, constants="tiny_imagenet"))
    large = structured_images(64)
    assert np.array_equal(corrupt_images(large, "contrast", 1),
                          corrupt_images(large, "contrast", 1, constants="tiny_imagenet"))


def test_other_sizes_need_explicit_constants():
    images = np.random.default_rng(0).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="pass constants="):
        corrupt_images(images, "fog", 1)
    for corruption in CORRUPTIONS:
        corrupted = corrupt_images(images, corruption, 5, constants="cifar10")
        assert corrupted.shape == images.shape and corrupted.dtype == np.uint8


def test_chunks_give_the_same_result_as_one_batch(monkeypatch):
    images = structured_images(32)
    whole = corrupt_images(images, "defocus_blur", 4)
    monkeypatch.setattr(corruptions, "CHUNK_SIZE", 3)
    np.testing.assert_array_equal(corrupt_images(images, "defocus_blur", 4), whole)


@pytest.mark.parametrize("call, message", [
    (lambda images: corrupt_images(images, "frost", 1), "unknown corruption 'frost'; valid: gaussian_noise"),
    (lambda images: corrupt_images(images, "fog", 0), "severity must be one of"),
    (lambda images: corrupt_images(images, "fog", 6), "severity must be one of"),
    (lambda images: corrupt_images(images.astype(np.float32), "fog", 1), "need uint8 images"),
    (lambda images: corrupt_images(images[..., :1], "fog", 1), "need uint8 images"),
    (lambda images: corrupt_images(images, "fog", 1, constants="imagenet"), "unknown constants 'imagenet'"),
])
def test_bad_input_raises_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(structured_images(32))
