"""On-device data: augmentation, permutation, batch gather and padded evaluation splits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selectivity_jax.data.on_device import (channel_stats, epoch_permutation, gather_batch, normalize,
                                            put_eval_arrays, put_train_arrays, random_crop_flip)
from selectivity_jax.parallel import make_data_mesh


def test_crop_stays_inside_the_padded_image():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (64, 8, 8, 3), dtype=np.uint8)  # no zeros: padding is recognizable
    out = np.asarray(random_crop_flip(jax.random.key(0), jnp.asarray(images), padding=4, flip=False))
    assert out.shape == images.shape and out.dtype == np.uint8
    shifts = set()
    for image, crop in zip(images, out):
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if np.array_equal(padded[dy:dy + 8, dx:dx + 8], crop)]
        assert matches, "every crop is a window of the zero-padded image"
        shifts.add(matches[0])
    assert len(shifts) > 20  # offsets vary over the 9 x 9 possibilities


def test_crop_offsets_cover_every_window():
    """RandomCrop with padding p draws each of the (2p + 1)^2 windows of the padded image (He et al. 2016's
    augmentation), the last row and column of offsets too."""
    images = jnp.asarray(np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4, 1).repeat(2000, axis=0))
    out = np.asarray(random_crop_flip(jax.random.key(2), images, padding=2, flip=False))
    padded = np.pad(np.asarray(images[0]), ((2, 2), (2, 2), (0, 0)))
    offsets = {next((dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(padded[dy:dy + 4, dx:dx + 4], c))
               for c in out}
    assert offsets == {(dy, dx) for dy in range(5) for dx in range(5)}


def test_flips_half_the_time():
    images = jnp.tile(jnp.arange(4, dtype=jnp.uint8)[None, None, :, None], (2000, 2, 1, 1))  # a ramp along width
    out = np.asarray(random_crop_flip(jax.random.key(1), images, padding=0, flip=True))
    flipped = np.all(out[:, 0, :, 0] == [3, 2, 1, 0], axis=1)
    kept = np.all(out[:, 0, :, 0] == [0, 1, 2, 3], axis=1)
    assert np.all(flipped | kept)
    assert 0.45 < flipped.mean() < 0.55
    no_aug = random_crop_flip(jax.random.key(1), images, padding=0, flip=False)
    np.testing.assert_array_equal(np.asarray(no_aug), np.asarray(images))


def test_permutation_and_gather():
    mesh = make_data_mesh(1)
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
    data = put_train_arrays(images, np.arange(10), mesh)
    key = jax.random.key(0)
    order = epoch_permutation(key, 0, 10)
    assert sorted(np.asarray(order).tolist()) == list(range(10))
    assert not np.array_equal(np.asarray(order), np.asarray(epoch_permutation(key, 1, 10)))
    np.testing.assert_array_equal(np.asarray(order), np.asarray(epoch_permutation(key, 0, 10)))
    batch_images, batch_labels = gather_batch(data, order, jnp.asarray(1), 4)
    np.testing.assert_array_equal(np.asarray(batch_labels), np.asarray(order)[4:8])
    np.testing.assert_array_equal(np.asarray(batch_images)[:, 0, 0, 0], np.asarray(order)[4:8])


def test_eval_arrays_are_padded_and_masked():
    mesh = make_data_mesh(8)
    images = np.ones((21, 4, 4, 3), np.uint8)
    split = put_eval_arrays(images, np.arange(21) % 3, 8, mesh)
    assert split.images.shape == (3, 8, 4, 4, 3) and split.mask.shape == (3, 8)
    assert float(split.mask.sum()) == 21 and np.asarray(split.mask)[-1].tolist() == [1] * 5 + [0] * 3
    assert len(split.images.sharding.device_set) == 8


def test_normalize_and_channel_stats():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (50, 6, 6, 3), dtype=np.uint8)
    mean, std = channel_stats(images, chunk=7)
    x = images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), atol=1e-6)
    out = np.asarray(normalize(jnp.asarray(images), mean, std))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_bad_train_arrays():
    with pytest.raises(ValueError, match="uint8"):
        put_train_arrays(np.zeros((4, 2, 2, 3), np.float32), np.zeros(4), make_data_mesh(1))
