"""Input-unit gradients and their variability (selectivity_jax.measures.gradients) against gradients known by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selectivity_jax.measures.gradients import gradient_variability, input_unit_gradients

SHAPE = (4, 4, 3)          # one image [H, W, C]
DIM = int(np.prod(SHAPE))


def make_weights(rng, units, dead=()):
    weights = rng.normal(size=(DIM, units)) * rng.uniform(0.2, 3.0, size=units)   # unequal column norms
    weights[:, list(dead)] = 0.0
    return weights.astype(np.float32)


def linear_units(weights):
    """responses = x.flatten() @ W: g[n, u] = w_u for every sample."""
    return lambda x: x.reshape(x.shape[0], -1) @ jnp.asarray(weights)


def quadratic_units(weights):
    """responses = (x.flatten() @ W)^2 / 2: g[n, u] = (x_n . w_u) w_u."""
    return lambda x: jnp.square(x.reshape(x.shape[0], -1) @ jnp.asarray(weights)) / 2


def reference_statistics(gradients):
    """Brute-force float64 statistics from explicit gradients [N, U, D] (every pair, no sum trick)."""
    g = np.asarray(gradients, np.float64)
    norms = np.linalg.norm(g, axis=-1)                                                   # [N, U]

    def mean_offdiagonal_cosine(vectors):                                                # [M, D] -> scalar
        vectors = vectors[np.linalg.norm(vectors, axis=-1) > 0]
        unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
        cosines = unit @ unit.T
        m = len(unit)
        return (cosines.sum() - np.trace(cosines)) / (m * (m - 1)) if m >= 2 else np.nan

    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "norm_cv_over_samples": norms.std(axis=0) / norms.mean(axis=0),
            "norm_cv_over_units": norms.std(axis=1) / norms.mean(axis=1),
            "cosine_distance_over_samples": np.array(
                [1 - mean_offdiagonal_cosine(g[:, u]) for u in range(g.shape[1])]),
            "cosine_distance_over_units": np.array([1 - mean_offdiagonal_cosine(g[n]) for n in range(g.shape[0])]),
            "gradient_norms": norms,
        }


def test_linear_layer_gradients_are_the_weight_columns():
    rng = np.random.default_rng(0)
    weights = make_weights(rng, 7)
    images = rng.uniform(size=(5,) + SHAPE).astype(np.float32)
    gradients = input_unit_gradients(linear_units(weights), images, unit_chunk_size=3)   # 3 does not divide 7
    assert gradients.shape == (5, 7) + SHAPE
    expected = np.broadcast_to(weights.T.reshape((1, 7) + SHAPE), gradients.shape)
    np.testing.assert_allclose(np.asarray(gradients), expected, rtol=1e-6, atol=1e-6)
    subset = input_unit_gradients(linear_units(weights), images, unit_indices=[6, 2], unit_chunk_size=4)
    np.testing.assert_allclose(np.asarray(subset), expected[:, [6, 2]], rtol=1e-6, atol=1e-6)


def test_linear_layer_variability():
    """Same gradient w_u for every sample: zero variability over samples; over units, the spread of W's columns."""
    rng = np.random.default_rng(1)
    weights = make_weights(rng, 9)
    images = rng.uniform(size=(11,) + SHAPE).astype(np.float32)
    result = gradient_variability(linear_units(weights), images, batch_size=4, unit_chunk_size=4)
    np.testing.assert_allclose(result["norm_cv_over_samples"], 0.0, atol=1e-7)
    np.testing.assert_allclose(result["cosine_distance_over_samples"], 0.0, atol=1e-5)

    w = weights.astype(np.float64)
    column_norms = np.linalg.norm(w, axis=0)
    unit = w / column_norms
    cosines = unit.T @ unit
    by_hand_cv = column_norms.std() / column_norms.mean()
    by_hand_distance = 1 - (cosines.sum() - np.trace(cosines)) / (9 * 8)
    np.testing.assert_allclose(result["norm_cv_over_units"], by_hand_cv, rtol=1e-5)
    np.testing.assert_allclose(result["cosine_distance_over_units"], by_hand_distance, rtol=1e-5, atol=1e-6)
    assert result["norm_cv_over_units_mean"] == pytest.approx(by_hand_cv, rel=1e-5)
    assert result["norm_cv_over_samples_mean"] == pytest.approx(0.0, abs=1e-7)
    np.testing.assert_allclose(result["mean_gradient_norm"], column_norms, rtol=1e-5)
    assert result["gradient_norms"].shape == (11, 9)
    assert (result["num_samples"], result["num_units"], result["num_units_zero_gradient"]) == (11, 9, 0)


def test_quadratic_layer_variability_matches_brute_force():
    """g[n, u] = (x_n . w_u) w_u: the norm varies with |x_n . w_u| and the direction flips with its sign."""
    rng = np.random.default_rng(2)
    weights = make_weights(rng, 6)
    images = rng.uniform(size=(13,) + SHAPE).astype(np.float32)
    projections = images.reshape(13, -1).astype(np.float64) @ weights.astype(np.float64)           # [N, U]
    by_hand = projections[:, :, None] * weights.T.astype(np.float64)[None]                          # [N, U, D]
    gradients = input_unit_gradients(quadratic_units(weights), images)
    np.testing.assert_allclose(np.asarray(gradients).reshape(13, 6, -1), by_hand, rtol=1e-4, atol=1e-5)

    result = gradient_variability(quadratic_units(weights), images, batch_size=5, unit_chunk_size=4)
    expected = reference_statistics(by_hand)
    for name in ("norm_cv_over_samples", "norm_cv_over_units", "cosine_distance_over_samples",
                 "cosine_distance_over_units"):
        np.testing.assert_allclose(result[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(result["gradient_norms"], expected["gradient_norms"], rtol=1e-4)
    # the norm CV over samples is the CV of |x_n . w_u|, and the variability is really there
    np.testing.assert_allclose(result["norm_cv_over_samples"],
                               np.abs(projections).std(axis=0) / np.abs(projections).mean(axis=0), rtol=1e-4)
    assert np.all(result["norm_cv_over_samples"] > 0.05)
    assert np.any(result["cosine_distance_over_samples"] > 0.1)


def test_batches_chunks_and_unit_subsets_agree():
    rng = np.random.default_rng(3)
    weights = make_weights(rng, 8)
    images = (rng.uniform(size=(10,) + SHAPE) * 255).astype(np.uint8)        # uint8 in, [0, 1] pixel space inside
    units_fn = quadratic_units(weights)
    whole = gradient_variability(units_fn, images, batch_size=10, unit_chunk_size=8)
    pieces = gradient_variability(units_fn, images, batch_size=3, unit_chunk_size=3)
    for name in ("norm_cv_over_samples", "norm_cv_over_units", "cosine_distance_over_samples",
                 "cosine_distance_over_units", "gradient_norms"):
        np.testing.assert_allclose(pieces[name], whole[name], rtol=1e-5, atol=1e-6, err_msg=name)
    subset = gradient_variability(units_fn, images, batch_size=4, max_units=3, key=jax.random.key(5))
    assert len(subset["unit_indices"]) == 3 and np.all(np.diff(subset["unit_indices"]) > 0)
    for name in ("norm_cv_over_samples", "cosine_distance_over_samples"):      # per-unit values do not depend on
        np.testing.assert_allclose(subset[name], whole[name][subset["unit_indices"]], rtol=1e-5, atol=1e-6)
    expected = reference_statistics(np.asarray(input_unit_gradients(units_fn, images)).reshape(10, 8, -1))
    np.testing.assert_allclose(whole["cosine_distance_over_units"], expected["cosine_distance_over_units"],
                               rtol=1e-4, atol=1e-5)


def test_dead_units_are_reported_not_averaged():
    rng = np.random.default_rng(4)
    weights = make_weights(rng, 5, dead=(1,))
    images = rng.uniform(size=(6,) + SHAPE).astype(np.float32)
    result = gradient_variability(quadratic_units(weights), images, batch_size=6)
    assert result["num_units_zero_gradient"] == 1
    assert np.isnan(result["norm_cv_over_samples"][1]) and np.isnan(result["cosine_distance_over_samples"][1])
    assert np.all(np.isfinite(np.delete(result["norm_cv_over_samples"], 1)))
    assert np.isfinite(result["norm_cv_over_samples_mean"])
    assert result["norm_cv_over_samples_mean"] == pytest.approx(np.mean(np.delete(result["norm_cv_over_samples"], 1)))


def test_conv_layer_gradients_match_per_sample_jacobian():
    """A conv layer with spatial-mean responses (the caller's units_fn) against jax.jacrev of one sample."""
    rng = np.random.default_rng(5)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 5)).astype(np.float32))

    def units_fn(x):
        maps = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.mean(jax.nn.relu(maps), axis=(1, 2))

    images = rng.uniform(size=(3, 6, 6, 3)).astype(np.float32)
    gradients = input_unit_gradients(units_fn, images, unit_chunk_size=2)
    for n in range(3):
        jacobian = jax.jacrev(lambda x: units_fn(x[None])[0])(jnp.asarray(images[n]))      # [U, H, W, C]
        np.testing.assert_allclose(np.asarray(gradients[n]), np.asarray(jacobian), rtol=1e-5, atol=1e-6)
    result = gradient_variability(units_fn, images, batch_size=2)
    assert result["norm_cv_over_samples"].shape == (5,) and np.all(np.isfinite(result["norm_cv_over_samples"]))
