"""PCA dimensionality of representations and of their change under perturbation (host-side, float64 NumPy).

Leavitt & Morcos, "Linking average- and worst-case perturbation robustness via class selectivity and
dimensionality" (dimensionality analysis: early-layer dimensionality fell as class selectivity rose, and adversarial
perturbations changed the representation along more dimensions than corruptions).

For data ``x`` [N, D] (N samples of D units), centered over samples, with PCA variances ``lambda_1 >= ... >= 0``
(squared singular values of the centered data over N - 1):

- explained variance ratio ``r_i = lambda_i / sum_j lambda_j``;
- ``n_components(threshold)``: the smallest k with ``r_1 + ... + r_k >= threshold`` (up to 1e-9, so that a spectrum
  that meets the threshold exactly is not pushed one component up by rounding);
- participation ratio ``PR = (sum_i lambda_i)^2 / sum_i lambda_i^2``, between 1 (one direction) and rank
  (isotropic), a continuous count of the directions the variance spreads over.

Data with no variance (e.g. a zero perturbation at eps = 0) has dimensionality 0: ratios all 0, ``n_components`` 0,
``PR`` 0. There is no tolerance: a change that is zero only up to rounding (float32 ``(x + c) - x``) is rounding noise
and gets its (high) dimensionality, so look at "total_variance" next to the counts.

Activations [N, ..., D] (conv maps) are reduced to unit responses [N, D] first by averaging the middle axes, as
`selectivity_jax.selectivity.unit_responses` does for class selectivity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from selectivity_jax.selectivity import unit_responses

DEFAULT_THRESHOLD = 0.95
_THRESHOLD_TOLERANCE = 1e-9


def as_samples_by_units(x: Any) -> np.ndarray:
    """[N, D] or [N, ..., D] (middle axes averaged, as `unit_responses`) -> float64 host array [N, D]."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"expected samples x units [N, D] or [N, ..., D]; got shape {x.shape}")
    if x.ndim > 2:
        x = np.asarray(unit_responses(x))
    return x.astype(np.float64)


def pca_variances(x: Any) -> np.ndarray:
    """PCA variances (eigenvalues of the sample covariance), descending: [min(N, D)] float64.

    Computed as the squared singular values of the centered data over N - 1 (an SVD, not an eigendecomposition of
    the covariance or Gram matrix, whose condition number is the square of the data's): works for N < D and N >= D.
    """
    x = as_samples_by_units(x)
    centered = x - x.mean(axis=0, keepdims=True)
    if centered.size == 0:
        return np.zeros((0,), np.float64)
    singular_values = np.linalg.svd(centered, compute_uv=False)
    return np.square(singular_values) / max(x.shape[0] - 1, 1)


def explained_variance_ratios(variances: np.ndarray) -> np.ndarray:
    """PCA variances [K] -> explained variance ratios [K] (sum 1; all 0 when the total variance is 0)."""
    variances = np.asarray(variances, np.float64)
    total = variances.sum()
    return variances / total if total > 0 else np.zeros_like(variances)


def pca_spectrum(x: Any) -> np.ndarray:
    """Explained variance ratios of the PCA of ``x`` [N, D] (or [N, ..., D]), descending: [min(N, D)] float64."""
    return explained_variance_ratios(pca_variances(x))


def n_components_for_threshold(ratios: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> int:
    """Smallest k whose cumulative explained variance ratio reaches ``threshold`` in (0, 1]; 0 for an all-zero
    spectrum."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1]; got {threshold}")
    ratios = np.asarray(ratios, np.float64)
    if ratios.size == 0 or ratios.sum() <= 0:
        return 0
    cumulative = np.cumsum(ratios)
    k = int(np.searchsorted(cumulative, threshold - _THRESHOLD_TOLERANCE, side="left")) + 1
    return min(k, ratios.size)


def participation_ratio(variances: np.ndarray) -> float:
    """``(sum lambda)^2 / sum lambda^2`` of PCA variances (scale-free, so ratios work too); 0 for no variance."""
    variances = np.asarray(variances, np.float64)
    squares = np.sum(np.square(variances))
    return float(np.sum(variances) ** 2 / squares) if squares > 0 else 0.0


def dimensionality(x: Any, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """PCA dimensionality of ``x`` [N, D] (or [N, ..., D]).

    Returns "n_components" (smallest k reaching ``threshold`` of the variance), "participation_ratio",
    "explained_variance_ratio" [min(N, D)], "total_variance" (sum of the PCA variances), "threshold",
    "num_samples", "num_units".
    """
    x = as_samples_by_units(x)
    variances = pca_variances(x)
    ratios = explained_variance_ratios(variances)
    return {"n_components": n_components_for_threshold(ratios, threshold),
            "participation_ratio": participation_ratio(variances),
            "explained_variance_ratio": ratios,
            "total_variance": float(variances.sum()),
            "threshold": float(threshold),
            "num_samples": int(x.shape[0]),
            "num_units": int(x.shape[1])}


def perturbation_dimensionality(clean: Any, perturbed: Any, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Dimensionality of the change ``perturbed - clean`` and of the clean and perturbed representations.

    Args:
      clean, perturbed: the same samples' representations, [N, D] or [N, ..., D] (middle axes are averaged first;
        as the average is linear, this equals averaging the difference of the maps).

    Returns:
      {"perturbation": dimensionality(perturbed - clean), "clean": dimensionality(clean),
       "perturbed": dimensionality(perturbed)}, each as `dimensionality` returns it.
    """
    clean, perturbed = as_samples_by_units(clean), as_samples_by_units(perturbed)
    if clean.shape != perturbed.shape:
        raise ValueError(f"clean and perturbed representations differ in shape: {clean.shape} vs {perturbed.shape}")
    return {"perturbation": dimensionality(perturbed - clean, threshold),
            "clean": dimensionality(clean, threshold),
            "perturbed": dimensionality(perturbed, threshold)}
