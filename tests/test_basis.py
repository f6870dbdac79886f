"""Selectivity in other bases (selectivity_jax.measures.basis): class-mean basis and optimised rotations recover
selectivity hidden by a rotation."""

import numpy as np
import pytest

from selectivity_jax.measures.basis import basis_analysis, class_mean_basis, optimise_rotation, rotation_from_skew
from selectivity_jax.measures.rotation import axis_aligned_selectivity, haar_rotation, rotated_selectivity


def hidden_selectivity(num_classes, units, noise=0.1, samples=1000, seed=0):
    """One-hot class codes (unit c fires for class c) plus noise, rotated by a Haar rotation and shifted to be
    non-negative: selective only in the rotated basis. Returns (unrotated, rotated, labels, rotation)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, samples)
    codes = np.abs(rng.normal(0.0, noise, (samples, units)))
    codes[np.arange(samples), labels] += 2.0
    rotation = np.asarray(haar_rotation(seed + 1, units), np.float64)
    rotated = codes @ rotation
    rotated -= rotated.min(axis=0)
    return codes.astype(np.float32), rotated.astype(np.float32), labels, rotation


def assert_orthogonal(matrix, atol=1e-5):
    matrix = np.asarray(matrix, np.float64)
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(matrix.shape[0]), atol=atol)


@pytest.mark.parametrize("num_classes, units", [(10, 10), (8, 12)])
def test_class_mean_basis_recovers_hidden_selectivity(num_classes, units):
    codes, rotated, labels, rotation = hidden_selectivity(num_classes, units)
    unrotated_si = float(axis_aligned_selectivity(codes, labels, num_classes).mean())
    hidden_si = float(axis_aligned_selectivity(rotated, labels, num_classes).mean())
    assert hidden_si < 0.7 * unrotated_si
    result = class_mean_basis(rotated, labels, num_classes)
    assert_orthogonal(result.basis)
    assert result.num_class_directions == num_classes
    np.testing.assert_array_equal(result.direction_classes[:num_classes], np.arange(num_classes))
    np.testing.assert_array_equal(result.direction_classes[num_classes:], -1)
    recovered = float(result.selectivity.mean())
    assert recovered > 0.85 * unrotated_si
    # each class direction is close to the rotated one-hot direction of its class (row c of the rotation): its
    # component in the span of the centered class means is exact, sqrt(1 - 1/C) d_c; the remaining 1/sqrt(C) lies
    # along the grand-mean direction outside that span, which is the common direction of the codes when U = C and
    # partly a noise direction when U > C (cosine 1 - 1/C if it were entirely noise).
    cosines = np.sum(np.asarray(result.basis)[:, :num_classes] * rotation[:num_classes].T, axis=0)
    if num_classes == units:  # one class per unit: the basis IS the inverse rotation, selectivity as unrotated
        assert np.all(cosines > 0.999)
        assert recovered == pytest.approx(unrotated_si, abs=0.01)
    else:
        assert np.all(cosines > 1 - 1 / num_classes - 0.1)


def test_class_mean_basis_more_classes_than_units_and_absent_classes():
    rng = np.random.default_rng(3)
    num_classes, units = 20, 6
    labels = rng.choice(np.arange(0, num_classes, 1)[rng.permutation(num_classes)[:15]], 900)
    responses = np.abs(rng.normal(size=(900, units)) + rng.normal(size=(num_classes, units))[labels]).astype(np.float32)
    result = class_mean_basis(responses, labels, num_classes)
    assert_orthogonal(result.basis)
    assert result.num_class_directions == units
    assert len(set(result.direction_classes.tolist())) == units
    assert set(result.direction_classes.tolist()) <= set(np.unique(labels).tolist())
    np.testing.assert_allclose(result.selectivity, rotated_selectivity(responses, labels, num_classes, result.basis))


def test_class_mean_basis_needs_two_classes():
    with pytest.raises(ValueError, match="two present classes"):
        class_mean_basis(np.ones((5, 3), np.float32), np.zeros(5, np.int32), 4)


@pytest.mark.parametrize("parametrisation", ["cayley", "expm"])
def test_rotation_from_skew_is_a_rotation(parametrisation):
    parameters = np.random.default_rng(0).normal(size=(5, 5)).astype(np.float32)
    rotation = np.asarray(rotation_from_skew(parameters, parametrisation), np.float64)
    assert_orthogonal(rotation)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(rotation_from_skew(np.zeros((4, 4), np.float32), parametrisation), np.eye(4))


@pytest.mark.parametrize("parametrisation", ["cayley", "expm"])
def test_optimised_rotation_never_ends_below_its_start(parametrisation):
    num_classes, units = 6, 8
    _, rotated, labels, _ = hidden_selectivity(num_classes, units, noise=0.3, samples=600, seed=4)
    start_si = float(axis_aligned_selectivity(rotated, labels, num_classes).mean())
    result = optimise_rotation(rotated, labels, num_classes, steps=60, learning_rate=2e-2,
                               parametrisation=parametrisation)
    assert result.trajectory.shape == (61,)
    assert float(result.trajectory[0]) == pytest.approx(start_si, abs=1e-6)
    final_si = float(result.selectivity.mean())
    assert final_si >= start_si
    assert final_si == pytest.approx(float(result.trajectory.max()), abs=1e-5)
    assert final_si > start_si + 0.1  # the ascent does find the hidden selectivity
    assert_orthogonal(result.rotation)
    np.testing.assert_allclose(result.selectivity, rotated_selectivity(rotated, labels, num_classes, result.rotation),
                               atol=1e-5)


def test_optimise_rotation_from_an_init_and_zero_steps():
    num_classes, units = 5, 5
    _, rotated, labels, _ = hidden_selectivity(num_classes, units, noise=0.3, samples=500, seed=5)
    init = class_mean_basis(rotated, labels, num_classes)
    unchanged = optimise_rotation(rotated, labels, num_classes, init=init.basis, steps=0)
    np.testing.assert_allclose(unchanged.rotation, init.basis, atol=1e-7)
    np.testing.assert_allclose(unchanged.selectivity, init.selectivity, atol=1e-6)
    result = optimise_rotation(rotated, labels, num_classes, init=init.basis, steps=40, learning_rate=2e-2)
    assert float(result.selectivity.mean()) >= float(init.selectivity.mean()) - 1e-6


def test_basis_analysis_reports_four_bases_with_one_rule():
    num_classes, units = 6, 8
    codes, rotated, labels, _ = hidden_selectivity(num_classes, units, noise=0.3, samples=600, seed=6)
    report = basis_analysis(rotated, labels, num_classes, steps=30, learning_rate=2e-2, negatives="rectify")
    names = ["axis_aligned", "class_mean_basis", "optimised_from_identity", "optimised_from_class_mean"]
    for name in names:
        assert isinstance(report[name], float)
        assert report[name + "_per_unit"].shape == (units,)
        assert report[name] == pytest.approx(float(report[name + "_per_unit"].mean()), abs=1e-6)
    assert report["negatives"] == "rectify"
    assert report["axis_aligned"] == pytest.approx(
        float(axis_aligned_selectivity(rotated, labels, num_classes, "rectify").mean()), abs=1e-6)
    assert report["class_mean_basis"] > report["axis_aligned"] + 0.1
    assert report["optimised_from_identity"] >= report["axis_aligned"]
    assert report["optimised_from_class_mean"] >= report["class_mean_basis"] - 1e-6
    for name in names[2:]:
        assert report[name + "_trajectory"].shape == (31,)
        assert report[name + "_rotation"].shape == (units, units)
