"""Linear CKA and PWCCA on cases with known answers (selectivity_jax.measures.similarity)."""

import numpy as np
import pytest

from selectivity_jax.measures.rotation import haar_rotation
from selectivity_jax.measures.similarity import (cca_correlations, layer_matrix, layer_similarity, layerwise_similarity,
                                                 linear_cka, paired_layer_matrices, pwcca)


def correlated_features(samples=500, units=12, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(samples, 4))
    x = latent @ rng.normal(size=(4, units)) + 0.5 * rng.normal(size=(samples, units))
    return x.astype(np.float32), rng


@pytest.mark.parametrize("samples, units", [(400, 12), (30, 80)])  # feature-space and Gram-matrix paths
def test_identical_representations_give_one(samples, units):
    x, _ = correlated_features(samples, units)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    if samples > units:
        assert pwcca(x, x) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("samples, units", [(400, 12), (30, 80)])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(samples, units):
    x, rng = correlated_features(samples, units)
    q = np.asarray(haar_rotation(1, units), np.float64)
    assert linear_cka(x, 3.7 * (x @ q)) == pytest.approx(1.0, abs=1e-6)
    y = x[:, : units // 2] + rng.normal(size=(samples, units // 2))
    reference = linear_cka(x, y)
    assert 0.05 < reference < 0.95
    assert linear_cka(x @ q, 0.01 * y) == pytest.approx(reference, abs=1e-6)
    assert linear_cka(y, x) == pytest.approx(reference, abs=1e-12)  # symmetric
    assert linear_cka(x + 5.0, y - 2.0) == pytest.approx(reference, abs=1e-6)  # columns are centered


def test_cka_matches_the_gram_matrix_definition():
    x, rng = correlated_features(60, 7)
    y = rng.normal(size=(60, 5)) + x[:, :5]
    centering = np.eye(60) - np.ones((60, 60)) / 60
    gram_x, gram_y = centering @ (x @ x.T) @ centering, centering @ (y @ y.T) @ centering
    hsic = lambda a, b: np.sum(a * b)  # noqa: E731  (HSIC up to the (n-1)^-2 factor, which cancels)
    expected = hsic(gram_x, gram_y) / np.sqrt(hsic(gram_x, gram_x) * hsic(gram_y, gram_y))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-6)


def test_independent_random_matrices_give_small_cka():
    # For independent isotropic Gaussian X [N, D1], Y [N, D2], N >> D: ||Y^T X||_F^2 ~ N D1 D2 and
    # ||X^T X||_F ~ N sqrt(D1), so CKA ~ sqrt(D1 D2) / N; we allow 3x that.
    rng = np.random.default_rng(0)
    samples, d1, d2 = 4000, 16, 24
    x, y = rng.normal(size=(samples, d1)), rng.normal(size=(samples, d2))
    value = linear_cka(x, y)
    assert 0.0 <= value < 3 * np.sqrt(d1 * d2) / samples
    assert pwcca(x, y) < 0.1  # and canonical correlations of independent data are small, ~ sqrt(D / N)


def test_pwcca_invariant_to_invertible_linear_maps():
    x, rng = correlated_features(500, 12)
    mixing = rng.normal(size=(12, 12)) + 3 * np.eye(12)
    assert abs(np.linalg.det(mixing)) > 1e-3
    assert pwcca(x, x @ mixing) == pytest.approx(1.0, abs=1e-6)
    assert pwcca(x @ mixing, x, weights_from="y") == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(cca_correlations(x, x @ mixing), np.ones(12), atol=1e-6)


def test_pwcca_weights_and_truncation():
    rng = np.random.default_rng(1)
    shared = rng.normal(size=(800, 3))
    x = np.concatenate([shared, rng.normal(size=(800, 3))], axis=1)
    # y holds the shared part plus a dead unit and a duplicated unit: both are dropped by the rtol truncation
    y = np.concatenate([shared @ rng.normal(size=(3, 3)), np.zeros((800, 1)), shared[:, :1]], axis=1)
    rho = cca_correlations(x, y)
    assert rho.shape == (3,)
    np.testing.assert_allclose(rho, 1.0, atol=1e-9)
    assert pwcca(y, x) == pytest.approx(1.0, abs=1e-9)          # every direction of y is in x
    assert pwcca(x, y, weights_from="smaller") == pytest.approx(1.0, abs=1e-9)
    # from x's side, the canonical pairs only cover x's shared half: weights over those three pairs only, all rho = 1
    assert pwcca(x, y) == pytest.approx(1.0, abs=1e-9)
    # a partly shared y: PWCCA lies between the smallest and largest canonical correlation
    z = shared + 0.8 * rng.normal(size=(800, 3))
    rho = cca_correlations(x, z)
    assert rho.min() <= pwcca(x, z) <= rho.max()
    with pytest.raises(ValueError, match="weights_from"):
        pwcca(x, z, weights_from="both")


def orthonormal_centered_columns(samples, count, seed):
    """[samples, count] columns with zero mean, unit norm and orthogonal to each other (QR of centered noise)."""
    noise = np.random.default_rng(seed).normal(size=(samples, count))
    return np.linalg.qr(noise - noise.mean(0))[0]


def test_pwcca_weights_each_canonical_pair_by_its_sides_projections():
    """A case with a known answer (Morcos et al. 2018, Sec. 3.2): x's units are A-mixtures of e1, e2; y's units are
    B-mixtures of e1 and cos(t) e2 + sin(t) e3 (e_i orthonormal, centered). The canonical pairs are (e1, e1) with
    rho 1 and (e2, cos(t) e2 + sin(t) e3) with rho cos(t); the canonical variates are the e's, so the weight of pair i
    from x's side is sum_j |<e_i, x_j>| = sum_j |A_ij|, and from y's side sum_j |B_ij|."""
    e = orthonormal_centered_columns(600, 3, seed=2)
    c, s = 0.5, np.sqrt(1 - 0.25)
    a = np.array([[1.0, -2.0, 0.5], [4.0, 1.0, -3.0]])       # row sums of |A|: 3.5, 8
    b = np.array([[3.0, 2.0], [-0.5, 0.25]])                 # row sums of |B|: 5, 0.75
    x = e[:, :2] @ a
    y = np.stack([e[:, 0], c * e[:, 1] + s * e[:, 2]], axis=1) @ b
    np.testing.assert_allclose(cca_correlations(x, y), [1.0, c], atol=1e-12)
    from_x = (3.5 * 1.0 + 8.0 * c) / (3.5 + 8.0)             # 0.652...
    from_y = (5.0 * 1.0 + 0.75 * c) / (5.0 + 0.75)           # 0.934...
    assert pwcca(x, y) == pytest.approx(from_x, abs=1e-12)
    assert pwcca(x, y, weights_from="y") == pytest.approx(from_y, abs=1e-12)
    assert pwcca(y, x) == pytest.approx(from_y, abs=1e-12)   # x's side of pwcca(y, x) is y
    assert pwcca(x, y, weights_from="smaller") == pytest.approx(from_x, abs=1e-12)  # equal ranks: x
    # the unweighted mean (0.75) and the other side's weights are far from either answer
    assert abs(from_x - (1.0 + c) / 2) > 0.05 and abs(from_y - from_x) > 0.25
    # 'smaller' picks the side with fewer kept dimensions: y with a third, independent direction has rank 3
    y3 = np.concatenate([y, orthonormal_centered_columns(600, 1, seed=3)], axis=1)
    assert pwcca(y3, x, weights_from="smaller") == pytest.approx(pwcca(y3, x, weights_from="y"), abs=1e-12)


def test_conv_layers_mean_and_sampled_positions():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 4, 4, 6)).astype(np.float32)
    b = a @ rng.normal(size=(6, 6)).astype(np.float32)
    x, y = paired_layer_matrices(a, b)
    assert x.shape == (50, 6) and x.dtype == np.float64
    np.testing.assert_allclose(x, a.mean(axis=(1, 2)), atol=1e-6)
    x, y = paired_layer_matrices(a, b, conv="positions")
    assert x.shape == (50 * 16, 6)
    np.testing.assert_allclose(x, a.reshape(-1, 6), atol=0)
    x, y = paired_layer_matrices(a, b, conv="positions", positions_per_example=5, max_examples=20, seed=3)
    assert x.shape == y.shape == (100, 6)
    # the same examples and positions on both sides: y is still x @ the mixing matrix
    assert pwcca(x, y) == pytest.approx(1.0, abs=1e-5)
    again, _ = paired_layer_matrices(a, b, conv="positions", positions_per_example=5, max_examples=20, seed=3)
    np.testing.assert_array_equal(x, again)
    other, _ = paired_layer_matrices(a, b, conv="positions", positions_per_example=5, max_examples=20, seed=4)
    assert not np.array_equal(x, other)
    rows = {tuple(row) for row in a.reshape(-1, 6).astype(np.float64)}
    assert all(tuple(row) in rows for row in x)  # sampled rows are real positions, without replacement per example
    assert len({tuple(row) for row in x}) == 100
    assert layer_matrix(a).shape == (50, 6)
    with pytest.raises(ValueError, match="spatial shape"):
        paired_layer_matrices(a, a[:, :2], conv="positions")


def test_layer_and_layerwise_similarity():
    x, rng = correlated_features(300, 8)
    acts_x = {"conv": np.repeat(x[:, None, None, :], 2, axis=1), "dense": x}
    acts_y = {"dense": x @ rng.normal(size=(8, 8)), "conv": acts_x["conv"] * 2.0, "extra": x}
    result = layerwise_similarity(acts_x, acts_y)
    assert list(result) == ["conv", "dense"]
    assert result["conv"]["cka"] == pytest.approx(1.0, abs=1e-9)
    assert result["dense"]["pwcca"] == pytest.approx(1.0, abs=1e-5)
    assert set(layer_similarity(x, x, measures=("cka",))) == {"cka"}
    with pytest.raises(ValueError, match="unknown measures"):
        layer_similarity(x, x, measures=("svcca",))
