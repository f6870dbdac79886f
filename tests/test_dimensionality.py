"""PCA dimensionality (selectivity_jax.measures.dimensionality) on data whose spectrum is known by construction."""

import numpy as np
import pytest

from selectivity_jax.measures.dimensionality import (
    dimensionality, n_components_for_threshold, participation_ratio, pca_spectrum, pca_variances,
    perturbation_dimensionality)


def orthonormal_rows(rng, rank, dim):
    """[rank, dim] with orthonormal rows."""
    q, _ = np.linalg.qr(rng.normal(size=(dim, rank)))
    return q.T


def centered_orthogonal_columns(num_samples, rank):
    """[N, rank] with zero-mean, mutually orthogonal columns of equal norm (exactly isotropic after centering)."""
    t = np.arange(num_samples)
    columns = [np.cos(2 * np.pi * (k // 2 + 1) * t / num_samples + (np.pi / 2) * (k % 2)) for k in range(rank)]
    a = np.stack(columns, axis=1)
    return a / np.linalg.norm(a, axis=0)


@pytest.mark.parametrize("num_samples,dim,rank", [(200, 30, 5), (12, 40, 4), (50, 50, 1)])
def test_low_rank_data(num_samples, dim, rank):
    rng = np.random.default_rng(rank)
    x = rng.normal(size=(num_samples, rank)) @ rng.normal(size=(rank, dim)) + rng.normal(size=dim)  # offset: centering
    ratios = pca_spectrum(x)
    assert ratios.shape == (min(num_samples, dim),)
    assert np.all(np.diff(ratios) <= 1e-12) and ratios.sum() == pytest.approx(1.0)
    assert np.sum(ratios > 1e-10) == rank                     # exactly r directions carry variance
    result = dimensionality(x)
    assert 1 <= result["n_components"] <= rank
    assert 1.0 <= result["participation_ratio"] <= rank + 1e-9
    assert dimensionality(x, threshold=1.0)["n_components"] == rank


@pytest.mark.parametrize("num_samples,dim,rank", [(64, 20, 6), (16, 100, 7), (40, 8, 8)])
def test_isotropic_rank_r_data_has_participation_ratio_r(num_samples, dim, rank):
    rng = np.random.default_rng(0)
    x = centered_orthogonal_columns(num_samples, rank) @ orthonormal_rows(rng, rank, dim) * 3.0 + 5.0
    variances = pca_variances(x)
    np.testing.assert_allclose(variances[:rank], variances[0], rtol=1e-10)
    assert participation_ratio(variances) == pytest.approx(rank, abs=1e-6)
    result = dimensionality(x)
    assert result["participation_ratio"] == pytest.approx(rank, abs=1e-6)
    assert result["n_components"] == int(np.ceil(0.95 * rank - 1e-9))  # equal ratios 1/r each


def test_threshold_on_a_hand_set_spectrum():
    ratios = np.array([0.5, 0.3, 0.12, 0.05, 0.03])
    assert n_components_for_threshold(ratios, 0.95) == 4
    assert n_components_for_threshold(ratios, 0.9) == 3
    assert n_components_for_threshold(ratios, 0.5) == 1
    assert n_components_for_threshold(ratios, 1.0) == 5
    assert n_components_for_threshold(np.array([0.5, 0.3, 0.15, 0.05]), 0.95) == 3  # reached exactly: not 4
    assert n_components_for_threshold(np.zeros(4), 0.95) == 0
    with pytest.raises(ValueError):
        n_components_for_threshold(ratios, 0.0)


def test_data_with_a_hand_set_spectrum():
    """Orthogonal directions with variances 50, 30, 12, 5, 3 percent: 95% needs 4 components."""
    rng = np.random.default_rng(1)
    target = np.array([0.5, 0.3, 0.12, 0.05, 0.03])
    scores = centered_orthogonal_columns(100, 5) * np.sqrt(target * 99)
    x = scores @ orthonormal_rows(rng, 5, 12)
    result = dimensionality(x)
    np.testing.assert_allclose(result["explained_variance_ratio"][:5], target, atol=1e-12)
    assert result["n_components"] == 4
    assert result["total_variance"] == pytest.approx(1.0)
    assert result["participation_ratio"] == pytest.approx(1.0 / np.sum(np.square(target)))


def test_perturbation_dimensionality():
    rng = np.random.default_rng(2)
    clean = rng.normal(size=(80, 16))
    # rank-1 change: every sample moves along one direction by a different amount
    rank_one = rng.normal(size=(80, 1)) @ rng.normal(size=(1, 16))
    result = perturbation_dimensionality(clean, clean + rank_one)
    assert result["perturbation"]["n_components"] == 1
    assert result["perturbation"]["participation_ratio"] == pytest.approx(1.0)
    assert result["clean"]["n_components"] > 10            # isotropic noise spreads over most of the 16 axes
    assert set(result) == {"perturbation", "clean", "perturbed"}
    # no change, or the same shift for every sample (exact in float: dyadic values), is no variance: dimensionality 0
    dyadic = np.round(clean * 64) / 64
    for perturbed in (dyadic, dyadic + 0.5):
        change = perturbation_dimensionality(dyadic, perturbed)["perturbation"]
        assert change["n_components"] == 0 and change["participation_ratio"] == 0.0
        assert change["total_variance"] == 0.0


def test_conv_maps_are_averaged_over_space():
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(30, 4, 4, 6)).astype(np.float32)
    averaged = maps.mean(axis=(1, 2))
    np.testing.assert_allclose(pca_spectrum(maps), pca_spectrum(averaged), atol=1e-6)
    result = perturbation_dimensionality(maps, maps * 2.0)
    assert result["perturbation"]["num_units"] == 6
    np.testing.assert_allclose(result["perturbation"]["explained_variance_ratio"],
                               result["clean"]["explained_variance_ratio"], atol=1e-6)


def test_few_samples():
    assert dimensionality(np.ones((1, 5)))["n_components"] == 0           # one sample: no variance
    two = dimensionality(np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    assert two["n_components"] == 1 and two["participation_ratio"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        dimensionality(np.ones(5))
