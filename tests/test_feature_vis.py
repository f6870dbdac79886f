"""Activation maximisation, Representative Substitution and its correlation with selectivity
(selectivity_jax.analysis.feature_vis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selectivity_jax.analysis.feature_vis import (activation_maximisation, gaussian_blur, representative_substitution,
                                                  representative_substitution_from_responses,
                                                  rs_selectivity_correlation)

IMAGE_SHAPE = (4, 4, 3)
UNITS = 5
L2 = 0.5


@pytest.fixture(scope="module")
def linear_layer():
    """units_fn(x) = x.flatten() @ W: for the objective w_u . x - l2 ||x||^2 the maximiser is w_u / (2 l2)."""
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(int(np.prod(IMAGE_SHAPE)), UNITS)), jnp.float32)
    return weights, lambda images: images.reshape(images.shape[0], -1) @ weights


def test_am_reaches_the_analytic_optimum_of_a_linear_unit(linear_layer):
    weights, units_fn = linear_layer
    images = activation_maximisation(units_fn, IMAGE_SHAPE, steps=300, learning_rate=0.1, l2=L2)
    assert images.shape == (UNITS, *IMAGE_SHAPE)
    optimum = np.asarray(weights).T.reshape(UNITS, *IMAGE_SHAPE) / (2 * L2)
    np.testing.assert_allclose(images, optimum, atol=1e-3)


def test_iam_reaches_the_analytic_optimum_of_a_linear_unit(linear_layer):
    weights, units_fn = linear_layer
    images = activation_maximisation(units_fn, IMAGE_SHAPE, objective="iam", steps=300, learning_rate=0.1, l2=L2)
    w = np.asarray(weights).T                                              # [U, D]
    contrast = w - (w.sum(axis=0, keepdims=True) - w) / (UNITS - 1)         # w_i - mean_{j != i} w_j
    np.testing.assert_allclose(images, contrast.reshape(UNITS, *IMAGE_SHAPE) / (2 * L2), atol=1e-3)


def test_all_units_at_once_equal_per_unit_runs(linear_layer):
    _, units_fn = linear_layer
    options = dict(steps=20, learning_rate=0.05, l2=0.1, jitter=1, blur_every=5, blur_sigma=0.7, key=3)
    together = activation_maximisation(units_fn, IMAGE_SHAPE, **options)
    alone = activation_maximisation(units_fn, IMAGE_SHAPE, unit_indices=[3], **options)
    assert alone.shape == (1, *IMAGE_SHAPE)
    np.testing.assert_allclose(alone[0], together[3], atol=1e-6)


def test_am_on_a_small_conv_layer_raises_the_unit_and_respects_the_range():
    kernel = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 3, 6)), jnp.float32)

    def units_fn(images):
        features = jax.lax.conv_general_dilated(images, kernel, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.mean(jax.nn.relu(features), axis=(1, 2))

    images = activation_maximisation(units_fn, (8, 8, 3), objective="iam", steps=50, learning_rate=0.05, jitter=2,
                                     l2=1e-3, blur_every=5, blur_sigma=0.5, value_range=(-1.0, 1.0), key=0)
    assert images.shape == (6, 8, 8, 3) and bool(jnp.all(jnp.isfinite(images)))
    assert float(jnp.max(jnp.abs(images))) <= 1.0
    responses = units_fn(images)                                           # [6 images, 6 units]
    noise = units_fn(0.01 * jax.random.normal(jax.random.key(0), (6, 8, 8, 3)))
    assert bool(jnp.all(jnp.diagonal(responses) > jnp.diagonal(noise)))
    # each image drives its own unit above the mean of the others (the IAM objective)
    others = (jnp.sum(responses, axis=1) - jnp.diagonal(responses)) / 5
    assert bool(jnp.all(jnp.diagonal(responses) > others))


def test_gaussian_blur():
    constant = jnp.full((6, 5, 2), 3.0)
    np.testing.assert_allclose(gaussian_blur(constant, 1.0), constant, rtol=1e-6)
    impulse = jnp.zeros((9, 9, 1)).at[4, 4, 0].set(1.0)
    blurred = np.asarray(gaussian_blur(impulse, 0.8))[..., 0]
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5)
    assert blurred[4, 4] == blurred.max() < 1.0
    np.testing.assert_allclose(blurred, blurred.T, atol=1e-7)
    np.testing.assert_allclose(blurred, blurred[::-1], atol=1e-7)


def test_representative_substitution_by_hand():
    responses = jnp.array([
        [5.0, 1.0, 2.0, 3.0],   # image for unit 0: nobody beats it            -> 0
        [1.5, 1.0, 0.2, 0.1],   # image for unit 1: one of three others beats  -> 1/3
        [4.0, 3.0, 2.0, 5.0],   # image for unit 2: all three others beat it   -> 1
        [1.0, 1.0, 1.0, 1.0],   # image for unit 3: ties do not count          -> 0
    ])
    rs = representative_substitution_from_responses(responses, [0, 1, 2, 3])
    np.testing.assert_allclose(rs, [0.0, 1 / 3, 1.0, 0.0], atol=1e-7)
    # images made for other units than their row number
    np.testing.assert_allclose(representative_substitution_from_responses(responses[:2], [3, 0]), [1 / 3, 0.0],
                               atol=1e-7)


def test_representative_substitution_through_units_fn(linear_layer):
    _, units_fn = linear_layer
    images = jnp.asarray(np.random.default_rng(2).normal(size=(UNITS, *IMAGE_SHAPE)), jnp.float32)
    expected = representative_substitution_from_responses(units_fn(images), np.arange(UNITS))
    np.testing.assert_array_equal(representative_substitution(units_fn, images), expected)
    np.testing.assert_array_equal(representative_substitution(units_fn, images, batch_size=2), expected)
    subset = representative_substitution(units_fn, images[:2], unit_indices=[4, 2])
    np.testing.assert_array_equal(subset, representative_substitution_from_responses(units_fn(images[:2]), [4, 2]))


def test_rs_selectivity_correlation():
    rs = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    assert rs_selectivity_correlation(rs, np.array([0.9, 0.7, 0.5, 0.2, 0.1])).rho == pytest.approx(-1.0)
    result = rs_selectivity_correlation(rs, np.array([0.1, 0.3, 0.2, 0.5, 0.9]))
    assert result.rho == pytest.approx(0.9) and 0 < result.pvalue < 0.1
    assert np.isnan(rs_selectivity_correlation(rs, np.full(5, 0.3)).rho)
    with pytest.raises(ValueError, match="one value per unit"):
        rs_selectivity_correlation(rs, np.zeros(4))
