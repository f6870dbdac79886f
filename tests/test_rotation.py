"""Haar rotations, fractional rotations Q^t and selectivity of rotated units (selectivity_jax.measures.rotation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpy_reference import reference_unit_selectivity
from selectivity_jax.measures.rotation import (axis_aligned_selectivity, fractional_rotation, fractional_rotations,
                                               haar_rotation, make_nonnegative, rotated_selectivity)


def selective_responses(seed=0, num_classes=6, units=9, samples=600):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, samples)
    responses = np.abs(rng.normal(0.0, 0.2, (samples, units)))
    responses[np.arange(samples), labels % units] += 1.5
    return responses.astype(np.float32), labels, num_classes


def assert_rotation(q, atol=1e-5):
    q = np.asarray(q, np.float64)
    np.testing.assert_allclose(q.T @ q, np.eye(q.shape[0]), atol=atol)
    assert np.linalg.det(q) == pytest.approx(1.0, abs=10 * atol)


@pytest.mark.parametrize("n", [1, 2, 5, 32])
def test_haar_rotation_is_a_rotation_and_deterministic(n):
    q = haar_rotation(3, n)
    assert q.shape == (n, n) and q.dtype == jnp.float32
    assert_rotation(q)
    np.testing.assert_array_equal(q, haar_rotation(jax.random.key(3), n))
    assert not np.allclose(q, haar_rotation(4, n)) or n == 1


def test_haar_rotation_moments():
    # For Haar measure on SO(n), n >= 3: E[tr Q] = 0 and E[tr(Q)^2] = 1 (the defining representation is irreducible),
    # and every entry has mean 0 and variance 1/n.
    n, samples = 3, 4000
    qs = np.asarray(jax.vmap(lambda k: haar_rotation(k, n))(jax.random.split(jax.random.key(0), samples)))
    assert np.all(np.linalg.det(qs) > 0)
    traces = np.trace(qs, axis1=1, axis2=2)
    assert abs(traces.mean()) < 4 / np.sqrt(samples)
    assert traces.var() + traces.mean() ** 2 == pytest.approx(1.0, abs=0.1)
    np.testing.assert_allclose(qs.mean(axis=0), 0.0, atol=4 / np.sqrt(samples * n))
    np.testing.assert_allclose((qs ** 2).mean(axis=0), 1 / n, atol=0.03)


def test_fractional_rotation_end_points_are_exact():
    q = haar_rotation(0, 7)
    assert fractional_rotation(q, 1.0) is q or np.array_equal(fractional_rotation(q, 1.0), q)
    np.testing.assert_array_equal(fractional_rotation(q, 1), q)
    identity = fractional_rotation(q, 0.0)
    np.testing.assert_array_equal(identity, np.eye(7, dtype=np.float32))
    assert identity.dtype == q.dtype


def test_fractional_rotation_is_a_one_parameter_group():
    q = haar_rotation(1, 8)
    ts = np.linspace(0.0, 1.0, 11)
    path = fractional_rotations(q, ts)
    for q_t in path:
        assert_rotation(q_t)
    half = np.asarray(fractional_rotation(q, 0.5), np.float64)
    np.testing.assert_allclose(half @ half, q, atol=1e-5)
    np.testing.assert_allclose(np.asarray(path[3], np.float64) @ np.asarray(path[7], np.float64), q, atol=1e-5)
    # continuous: small steps in t give small steps in Q^t
    steps = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(path[:-1], path[1:])]
    assert max(steps) < 0.6


def test_fractional_rotation_of_a_plane_rotation_scales_the_angle():
    angle = 2.5
    q = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for t in (0.2, 0.5, 0.9):
        expected = np.array([[np.cos(t * angle), -np.sin(t * angle)], [np.sin(t * angle), np.cos(t * angle)]])
        np.testing.assert_allclose(fractional_rotation(jnp.asarray(q), t), expected, atol=1e-6)


def test_fractional_rotation_with_angle_pi():
    # diag(-1, -1, 1) (a half turn) and a 4-d rotation with eigenvalue -1 twice among other angles
    half_turn = np.diag([-1.0, -1.0, 1.0])
    root = np.asarray(fractional_rotation(jnp.asarray(half_turn), 0.5), np.float64)
    assert_rotation(root)
    np.testing.assert_allclose(root @ root, half_turn, atol=1e-6)
    basis = np.asarray(haar_rotation(5, 5), np.float64)
    block = np.eye(5)
    block[:2, :2] = -np.eye(2)
    block[2:4, 2:4] = [[np.cos(1.0), -np.sin(1.0)], [np.sin(1.0), np.cos(1.0)]]
    q = basis @ block @ basis.T
    path = fractional_rotations(jnp.asarray(q, jnp.float32), [0.25, 0.5, 0.75])
    for q_t in path:
        assert_rotation(q_t)
    np.testing.assert_allclose(np.asarray(path[0], np.float64) @ np.asarray(path[2], np.float64), q, atol=1e-5)


def test_fractional_rotation_rejects_reflections_and_non_orthogonal():
    with pytest.raises(ValueError, match="determinant"):
        fractional_rotation(jnp.diag(jnp.array([-1.0, 1.0, 1.0])), 0.5)
    with pytest.raises(ValueError, match="orthogonal"):
        fractional_rotation(jnp.array([[1.0, 0.5], [0.0, 1.0]]), 0.5)


def test_make_nonnegative_rules():
    x = jnp.array([[-1.0, 2.0], [3.0, 0.5], [1.0, -4.0]])
    np.testing.assert_array_equal(make_nonnegative(x, "shift"), [[0.0, 6.0], [4.0, 4.5], [2.0, 0.0]])
    np.testing.assert_array_equal(make_nonnegative(x, "rectify"), [[0.0, 2.0], [3.0, 0.5], [1.0, 0.0]])
    np.testing.assert_array_equal(make_nonnegative(x, "none"), x)
    # class 0 = rows 0 and 1 (means 1, 1.25), class 1 = row 2 (means 1, -4); class 2 absent: the smallest class
    # means (1, -4) become 0
    labels = jnp.array([0, 0, 1])
    np.testing.assert_allclose(make_nonnegative(x, "shift_class_means", labels, 3),
                               [[-2.0, 6.0], [2.0, 4.5], [0.0, 0.0]])
    with pytest.raises(ValueError, match="needs the labels"):
        make_nonnegative(x, "shift_class_means")
    with pytest.raises(ValueError, match="negatives rule"):
        make_nonnegative(x, "clip")


def test_shift_class_means_ignores_offsets_and_single_outliers():
    responses, labels, num_classes = selective_responses()
    base = axis_aligned_selectivity(responses, labels, num_classes, "shift_class_means")
    offset = axis_aligned_selectivity(responses - 3.0, labels, num_classes, "shift_class_means")
    np.testing.assert_allclose(np.asarray(offset), np.asarray(base), atol=1e-4)  # float32 rounding of the offset
    # one far-negative example barely moves a class mean, but sets the floor of the sample-minimum shift
    outlier = jnp.asarray(responses).at[0].add(-50.0)
    robust = axis_aligned_selectivity(outlier, labels, num_classes, "shift_class_means")
    fragile = axis_aligned_selectivity(outlier, labels, num_classes, "shift")
    assert float(jnp.mean(fragile)) < 0.5 * float(jnp.mean(base)) < float(jnp.mean(robust))


@pytest.mark.parametrize("negatives", ["shift_class_means", "shift", "rectify"])
def test_rotation_by_q0_changes_nothing(negatives):
    responses, labels, num_classes = selective_responses()
    q0 = fractional_rotation(haar_rotation(2, responses.shape[1]), 0.0)
    rotated = rotated_selectivity(responses, labels, num_classes, q0, negatives=negatives)
    np.testing.assert_array_equal(rotated, axis_aligned_selectivity(responses, labels, num_classes, negatives))


def test_baseline_rules_against_the_reference_index():
    responses, labels, num_classes = selective_responses(seed=1)
    # rectify leaves post-ReLU responses alone: the paper's index exactly
    np.testing.assert_allclose(axis_aligned_selectivity(responses, labels, num_classes, "rectify"),
                               reference_unit_selectivity(responses, labels, num_classes), atol=1e-5)
    # shift is the index of the responses minus each unit's minimum
    shifted = responses - responses.min(axis=0)
    np.testing.assert_allclose(axis_aligned_selectivity(responses, labels, num_classes, "shift"),
                               reference_unit_selectivity(shifted, labels, num_classes), atol=1e-5)


def test_rotated_selectivity_of_a_permutation_permutes_and_rotating_back_restores():
    responses, labels, num_classes = selective_responses(seed=2)
    units = responses.shape[1]
    baseline = np.asarray(axis_aligned_selectivity(responses, labels, num_classes))
    order = np.random.default_rng(0).permutation(units)
    permutation = np.eye(units, dtype=np.float32)[:, order]
    np.testing.assert_allclose(rotated_selectivity(responses, labels, num_classes, permutation), baseline[order],
                               atol=1e-6)
    q = haar_rotation(7, units)
    rotated = np.asarray(responses @ np.asarray(q))
    rotated_si = np.asarray(axis_aligned_selectivity(rotated, labels, num_classes))
    assert rotated_si.mean() < 0.7 * baseline.mean()  # a random rotation mixes the class-selective units
    np.testing.assert_allclose(rotated_selectivity(rotated, labels, num_classes, q.T), baseline, atol=2e-4)
    # rotated_selectivity rotates, then applies the rule: shift of the rotated responses, not of the originals
    np.testing.assert_allclose(rotated_selectivity(responses, labels, num_classes, q), rotated_si, atol=1e-6)
