"""Similarity of two networks' representations of the same inputs, layer by layer: linear CKA (Kornblith, Norouzi,
Lee & Hinton, ICML 2019) and projection-weighted CCA, PWCCA (Morcos, Raghu & Bengio, NeurIPS 2018).

Both take representations as matrices ``x [M, D1]`` and ``y [M, D2]`` whose rows are the same M samples. Precision:
everything is computed in float64 NumPy on the host (inputs of any float dtype are converted), so results are exact
to about 1e-12 relative apart from what the inputs' own precision (float32 activations) brings.

Conv layers ``[N, H, W, U]`` become matrices with `layer_matrix` / `paired_layer_matrices`:

- ``conv='mean'`` (default): spatial average per channel, ``[N, U]`` (`selectivity_jax.unit_responses`, the unit
  responses the selectivity index uses);
- ``conv='positions'``: every spatial position is a sample, ``[N * P, U]`` with P positions per example; with
  ``positions_per_example=k`` a seeded random subset of k positions (without replacement) is drawn for each example,
  and with ``max_examples=m`` a seeded random subset of m examples is used first. The two networks get the SAME
  examples and the SAME positions, so their spatial sizes must agree.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import jax
import numpy as np

from selectivity_jax.selectivity import unit_responses

Array = jax.Array | np.ndarray
ConvMode = Literal["mean", "positions"]
WeightsFrom = Literal["x", "y", "smaller"]

DEFAULT_RTOL = 1e-6


def _centered_float64(matrix: Array, name: str) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a matrix [samples, features]; got shape {matrix.shape}")
    return matrix - matrix.mean(axis=0, keepdims=True)


def _check_pair(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same samples (rows); got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("similarity needs at least two samples")


def linear_cka(x: Array, y: Array) -> float:
    """Linear CKA of x [M, D1] and y [M, D2] (Kornblith et al. 2019, CKA with a linear kernel).

    With column-centered X and Y: ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``, computed from the D x D feature
    products or the M x M Gram matrices, whichever is cheaper (the two are identical). In [0, 1]; symmetric;
    invariant to orthogonal transforms and isotropic scaling of either side; NaN when a side is constant.
    """
    x, y = _centered_float64(x, "x"), _centered_float64(y, "y")
    _check_pair(x, y)
    samples, dx, dy = x.shape[0], x.shape[1], y.shape[1]
    if samples * (dx + dy) < dx * dy + dx * dx + dy * dy:
        gram_x, gram_y = x @ x.T, y @ y.T
        cross, norm_x, norm_y = np.sum(gram_x * gram_y), np.linalg.norm(gram_x), np.linalg.norm(gram_y)
    else:
        cross = np.linalg.norm(y.T @ x) ** 2
        norm_x, norm_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    if norm_x == 0 or norm_y == 0:
        return float("nan")
    return float(cross / (norm_x * norm_y))


def _orthonormal_column_space(centered: np.ndarray, rtol: float) -> np.ndarray:
    """[M, D] -> [M, r] orthonormal basis of the column space, singular values below rtol * largest dropped."""
    left, singular, _ = np.linalg.svd(centered, full_matrices=False)
    if singular.size == 0 or singular[0] == 0:
        return left[:, :0]
    return left[:, singular > rtol * singular[0]]


def _canonical_analysis(x: np.ndarray, y: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical correlations rho [k] (descending) and canonical variates of each side [M, k], unit norm."""
    basis_x, basis_y = _orthonormal_column_space(x, rtol), _orthonormal_column_space(y, rtol)
    left, rho, right_t = np.linalg.svd(basis_x.T @ basis_y, full_matrices=False)
    k = rho.size
    return np.clip(rho, 0.0, 1.0), basis_x @ left[:, :k], basis_y @ right_t[:k].T


def cca_correlations(x: Array, y: Array, *, rtol: float = DEFAULT_RTOL) -> np.ndarray:
    """Canonical correlations [min(r_x, r_y)] (descending) of x [M, D1] and y [M, D2] (CCA as in Morcos et al. 2018).

    Computed as the singular values of ``U_x^T U_y``, where U_x, U_y are orthonormal bases of the column spaces of
    the column-centered matrices, from their thin SVDs, keeping the singular directions above ``rtol`` times the
    largest singular value (r_x, r_y kept). Truncation instead of a ridge: directions at float32 noise level (dead
    units, linearly dependent units, fewer samples than units) would otherwise reach correlation ~1 or ~random.
    The default 1e-6 suits float32 activations. CCA needs M well above D1 + D2 to mean anything.
    """
    x, y = _centered_float64(x, "x"), _centered_float64(y, "y")
    _check_pair(x, y)
    return _canonical_analysis(x, y, rtol)[0]


def pwcca(x: Array, y: Array, *, weights_from: WeightsFrom = "x", rtol: float = DEFAULT_RTOL) -> float:
    """Projection-weighted CCA of x [M, D1] and y [M, D2] (Morcos, Raghu & Bengio 2018, projection weighting).

    ``sum_i alpha_i rho_i / sum_i alpha_i`` over the canonical pairs i (`cca_correlations`, same ``rtol``
    truncation), with ``alpha_i = sum_j |<h_i, z_j>|``: h_i the unit-norm canonical variate of one side, z_j the
    column-centered responses of that side's units (the weight of a canonical direction is how much of the units'
    activity it accounts for). Which side: ``weights_from='x'`` (default; the paper's formula for comparing layer x
    to y), ``'y'``, or ``'smaller'`` (the side with fewer kept dimensions, x on ties; the choice of the authors'
    reference code). PWCCA is therefore not symmetric. 1 for y = x @ A with A invertible; NaN when a side is
    constant.
    """
    x, y = _centered_float64(x, "x"), _centered_float64(y, "y")
    _check_pair(x, y)
    if weights_from not in ("x", "y", "smaller"):
        raise ValueError(f"weights_from must be 'x', 'y' or 'smaller'; got {weights_from!r}")
    rho, variates_x, variates_y = _canonical_analysis(x, y, rtol)
    if rho.size == 0:
        return float("nan")
    if weights_from == "smaller":
        rank_x = _orthonormal_column_space(x, rtol).shape[1]
        rank_y = _orthonormal_column_space(y, rtol).shape[1]
        weights_from = "x" if rank_x <= rank_y else "y"
    variates, units = (variates_x, x) if weights_from == "x" else (variates_y, y)
    weights = np.sum(np.abs(variates.T @ units), axis=1)                   # [k]
    return float(np.sum(weights * rho) / np.sum(weights))


def _sample_rows(activations: np.ndarray, example_index: np.ndarray, position_index: np.ndarray | None) -> np.ndarray:
    """[N, ..., U] -> [len(example_index) * positions, U] float64 rows (positions of each example in order)."""
    units = activations.shape[-1]
    flat = np.asarray(activations, np.float64).reshape(activations.shape[0], -1, units)[example_index]  # [n, P, U]
    if position_index is not None:
        flat = np.take_along_axis(flat, position_index[:, :, None], axis=1)
    return flat.reshape(-1, units)


def paired_layer_matrices(
    activations_x: Array,
    activations_y: Array,
    *,
    conv: ConvMode = "mean",
    positions_per_example: int | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Two layers' activations on the same N inputs, [N, ..., U1] and [N, ..., U2] -> float64 x [M, U1], y [M, U2].

    Dense layers ([N, U]) are used as they are (only ``max_examples`` applies). Conv layers: see the module docstring
    ('mean': M = N; 'positions': M = n * k, the same n examples and k positions per example on both sides, drawn with
    ``numpy.random.default_rng(seed)``: first the examples, then the positions of each example).
    """
    activations_x, activations_y = np.asarray(activations_x), np.asarray(activations_y)
    if activations_x.shape[0] != activations_y.shape[0]:
        raise ValueError(f"both layers must see the same inputs; got {activations_x.shape[0]} and "
                         f"{activations_y.shape[0]} examples")
    if conv not in ("mean", "positions"):
        raise ValueError(f"conv must be 'mean' or 'positions'; got {conv!r}")
    rng = np.random.default_rng(seed)
    examples = activations_x.shape[0]
    example_index = np.arange(examples)
    if max_examples is not None and max_examples < examples:
        example_index = np.sort(rng.choice(examples, size=max_examples, replace=False))
    if conv == "mean" or (activations_x.ndim == 2 and activations_y.ndim == 2):
        x = np.asarray(unit_responses(activations_x[example_index]), np.float64)
        y = np.asarray(unit_responses(activations_y[example_index]), np.float64)
        return x, y
    if activations_x.shape[1:-1] != activations_y.shape[1:-1]:
        raise ValueError(f"conv='positions' needs the same spatial shape on both sides; got {activations_x.shape[1:-1]}"
                         f" and {activations_y.shape[1:-1]} (use conv='mean')")
    positions = int(np.prod(activations_x.shape[1:-1]))
    position_index = None
    if positions_per_example is not None and positions_per_example < positions:
        scores = rng.random((example_index.size, positions))
        position_index = np.sort(np.argsort(scores, axis=1)[:, :positions_per_example], axis=1)
    return (_sample_rows(activations_x, example_index, position_index),
            _sample_rows(activations_y, example_index, position_index))


def layer_matrix(activations: Array, **kwargs: Any) -> np.ndarray:
    """One layer's activations [N, ..., U] -> float64 [M, U] with the options of `paired_layer_matrices`."""
    return paired_layer_matrices(activations, activations, **kwargs)[0]


MEASURES = {"cka": linear_cka, "pwcca": pwcca}


def layer_similarity(
    activations_x: Array,
    activations_y: Array,
    *,
    measures: Sequence[str] = ("cka", "pwcca"),
    conv: ConvMode = "mean",
    positions_per_example: int | None = None,
    max_examples: int | None = None,
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
    weights_from: WeightsFrom = "x",
) -> dict[str, float]:
    """Similarity of one layer of two networks on the same inputs: measure name ('cka', 'pwcca') -> value."""
    unknown = set(measures) - set(MEASURES)
    if unknown:
        raise ValueError(f"unknown measures {sorted(unknown)}; known: {sorted(MEASURES)}")
    x, y = paired_layer_matrices(activations_x, activations_y, conv=conv, positions_per_example=positions_per_example,
                                 max_examples=max_examples, seed=seed)
    out = {}
    for name in measures:
        out[name] = linear_cka(x, y) if name == "cka" else pwcca(x, y, weights_from=weights_from, rtol=rtol)
    return out


def layerwise_similarity(
    activations_x: Mapping[str, Array],
    activations_y: Mapping[str, Array],
    **kwargs: Any,
) -> dict[str, dict[str, float]]:
    """For the layers both dicts name (in ``activations_x``'s order): layer -> `layer_similarity` (same kwargs)."""
    return {name: layer_similarity(activations_x[name], activations_y[name], **kwargs)
            for name in activations_x if name in activations_y}
