"""Class selectivity under rotations of a layer's unit basis (Bau et al., "Network Dissection", CVPR 2017, Sec. 3.2).

Network Dissection asks whether interpretability is axis-aligned: rotate a layer's representation by a random
rotation ``Q`` (Haar measure on SO(U)), interpolate from the identity to ``Q`` along ``Q^t`` for ``t`` in [0, 1] and
measure the interpretability of the rotated "units". Here the measure is the class selectivity index of
`selectivity_jax.selectivity` (Leavitt & Morcos, ICLR 2021, Sec. 2.2).

Conventions:

- ``responses [N, U]`` are unit responses (conv channels spatially averaged, `selectivity_jax.unit_responses`).
- A rotation (or any orthogonal matrix) ``Q [U, U]`` acts on the right: rotated unit ``k`` has responses
  ``responses @ Q[:, k]``, i.e. the COLUMNS of ``Q`` are the directions in unit space that become the new units.
- Negative responses. The index needs non-negative responses, rotated responses are not. `make_nonnegative` applies
  one rule per call, and every comparison in this package applies the SAME rule to the axis-aligned baseline
  (`axis_aligned_selectivity`), so a difference between rotated and axis-aligned selectivity is never a difference of
  rules:

  * ``'shift_class_means'`` (default): subtract from each unit its smallest class mean over the present classes, so
    that the lowest class mean becomes 0: the smallest constant shift that makes the index defined (it depends on
    the data through the class means only). Offset-invariant, loses no information, and no single example decides.
    It measures class contrast relative to the range of the class means, so the axis-aligned baseline rises above
    the paper's index (0.09 -> 0.40 on a low-selectivity CIFAR-10 ResNet20): the analyses report the paper's index
    beside it.
  * ``'shift'``: subtract each unit's minimum over the data, ``a[:, u] - min_n a[n, u]``: the floor is set by the
    most extreme example, so one far-negative projection pushes a rotated unit's index toward 0 (class-mean-basis
    selectivity of 0.04 on the same network).
  * ``'rectify'``: ``max(0, a)``, each direction read as a zero-bias ReLU unit would read it; the identity on
    post-ReLU responses (the baseline is the paper's index), but clipping alone makes random directions look
    selective (a Haar rotation of selective units raised the mean index from 0.57 to 0.74 in
    tests/test_rotation.py), so it does not suit the rotation analysis.
  * ``'none'``: responses are used as given (the caller guarantees they are non-negative).
"""

from __future__ import annotations

from functools import partial
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from selectivity_jax.selectivity import DEFAULT_EPS, class_sums_and_counts, selectivity_from_class_stats

Array = jax.Array
NegativesRule = Literal["shift_class_means", "shift", "rectify", "none"]

NEGATIVES_RULES: tuple[str, ...] = ("shift_class_means", "shift", "rectify", "none")
DEFAULT_NEGATIVES: NegativesRule = "shift_class_means"


def _check_rule(rule: str) -> None:
    if rule not in NEGATIVES_RULES:
        raise ValueError(f"negatives rule must be one of {NEGATIVES_RULES}; got {rule!r}")


def make_nonnegative(responses: Array, rule: NegativesRule = DEFAULT_NEGATIVES, labels: Array | None = None,
                     num_classes: int | None = None) -> Array:
    """[N, U] -> [N, U] responses made fit for the index by ``rule`` ('shift_class_means': minus the per-unit smallest
    class mean, which needs ``labels`` [N] and ``num_classes``; 'shift': minus the per-unit minimum over the N samples;
    'rectify': max(0, .); 'none': unchanged). See the module docstring for what each rule means for the index."""
    _check_rule(rule)
    responses = jnp.asarray(responses)
    if rule == "shift_class_means":
        if labels is None or num_classes is None:
            raise ValueError("the 'shift_class_means' rule needs the labels and the number of classes")
        sums, counts = class_sums_and_counts(responses.astype(jnp.float32), labels, num_classes)
        means = jnp.where((counts > 0)[:, None], sums / jnp.maximum(counts, 1.0)[:, None], jnp.inf)
        return responses - jnp.min(means, axis=0, keepdims=True).astype(responses.dtype)
    if rule == "shift":
        return responses - jnp.min(responses, axis=0, keepdims=True)
    if rule == "rectify":
        return jnp.maximum(responses, 0.0)
    return responses


@partial(jax.jit, static_argnames=("num_classes", "negatives", "eps"))
def axis_aligned_selectivity(
    responses: Array,
    labels: Array,
    num_classes: int,
    negatives: NegativesRule = DEFAULT_NEGATIVES,
    eps: float = DEFAULT_EPS,
) -> Array:
    """SI [U] of ``make_nonnegative(responses [N, U], negatives)`` with labels int [N]: the baseline that rotated and
    re-based selectivities are compared with (Leavitt & Morcos, Sec. 2.2 index)."""
    _check_rule(negatives)
    responses = make_nonnegative(jnp.asarray(responses, jnp.float32), negatives, labels, num_classes)
    sums, counts = class_sums_and_counts(responses, labels, num_classes)
    return selectivity_from_class_stats(sums, counts, eps)


def rotate_responses(responses: Array, rotation: Array) -> Array:
    """[N, U] @ [U, V] -> [N, V] in full float32 precision: rotated unit k responds ``responses @ rotation[:, k]``."""
    return jnp.matmul(jnp.asarray(responses, jnp.float32), jnp.asarray(rotation, jnp.float32),
                      precision=jax.lax.Precision.HIGHEST)


@partial(jax.jit, static_argnames=("num_classes", "negatives", "eps"))
def rotated_selectivity(responses: Array, labels: Array, num_classes: int, rotation: Array,
                        negatives: NegativesRule = DEFAULT_NEGATIVES, eps: float = DEFAULT_EPS) -> Array:
    """SI per rotated unit [U]: the index of ``make_nonnegative(responses [N, U] @ rotation [U, U], negatives)``.

    Network Dissection, Sec. 3.2, with the class selectivity index as the interpretability measure. With
    ``rotation = fractional_rotation(Q, 0)`` (the identity) this equals `axis_aligned_selectivity` bit for bit.
    """
    return axis_aligned_selectivity(rotate_responses(responses, rotation), labels, num_classes, negatives, eps)


def _as_key(key_or_seed: int | Array) -> Array:
    if isinstance(key_or_seed, (int, np.integer)):
        return jax.random.key(int(key_or_seed))
    return key_or_seed


def haar_rotation(key_or_seed: int | Array, n: int, dtype: jnp.dtype = jnp.float32) -> Array:
    """A Haar-distributed random rotation Q [n, n] in SO(n) (Network Dissection, Sec. 3.2; Mezzadri 2007).

    QR of a standard Gaussian matrix G = QR; multiplying column i of Q by sign(R[i, i]) makes Q Haar on O(n); if then
    det Q = -1 the first column is negated, a measure-preserving map of that coset onto SO(n). Jit-able (``n`` static);
    ``key_or_seed`` is a JAX PRNG key or an int seed.
    """
    if n < 1:
        raise ValueError(f"n must be positive; got {n}")
    gaussian = jax.random.normal(_as_key(key_or_seed), (n, n), dtype)
    q, r = jnp.linalg.qr(gaussian)
    signs = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype)
    q = q * signs[None, :]
    det_sign, _ = jnp.linalg.slogdet(q)
    first_column_sign = jnp.where(det_sign < 0, -1.0, 1.0).astype(dtype)
    return q.at[:, 0].multiply(first_column_sign)


def _rotation_angles(rotation: np.ndarray, atol: float) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """Real Schur form of a rotation: Q = Z T Z^T with T block-diagonal (2x2 rotation blocks and 1x1 blocks +-1).

    Returns Z [n, n] and the planes (i, j, angle) in Schur coordinates: every 2x2 block [[cos a, -sin a], [sin a,
    cos a]] gives its angle a in (-pi, pi); the 1x1 blocks equal to -1 (an even number in SO(n)) are paired in the
    order they appear, each pair a rotation by +pi in the plane of their two Schur vectors.
    """
    q = np.asarray(rotation, dtype=np.float64)
    n = q.shape[0]
    if q.ndim != 2 or q.shape != (n, n):
        raise ValueError(f"rotation must be square [n, n]; got shape {q.shape}")
    if not np.allclose(q.T @ q, np.eye(n), atol=atol, rtol=0):
        raise ValueError(f"rotation is not orthogonal within atol={atol}")
    if np.linalg.det(q) < 0:
        raise ValueError("rotation has determinant -1: it is a reflection, not in SO(n), and has no real path "
                         "Q^t from the identity")
    schur_form, schur_vectors = scipy.linalg.schur(q, output="real")
    planes: list[tuple[int, int, float]] = []
    minus_ones: list[int] = []
    i = 0
    while i < n:
        if i + 1 < n and schur_form[i + 1, i] != 0.0:
            cosine = 0.5 * (schur_form[i, i] + schur_form[i + 1, i + 1])
            sine = 0.5 * (schur_form[i + 1, i] - schur_form[i, i + 1])
            planes.append((i, i + 1, float(np.arctan2(sine, cosine))))
            i += 2
        else:
            if schur_form[i, i] < 0:
                minus_ones.append(i)
            i += 1
    if len(minus_ones) % 2:
        raise ValueError("rotation has an odd number of eigenvalues -1; it is not in SO(n) within precision")
    planes.extend((minus_ones[k], minus_ones[k + 1], float(np.pi)) for k in range(0, len(minus_ones), 2))
    return schur_vectors, planes


def _power_from_angles(schur_vectors: np.ndarray, planes: list[tuple[int, int, float]], t: float) -> np.ndarray:
    n = schur_vectors.shape[0]
    block = np.eye(n)
    for i, j, angle in planes:
        c, s = np.cos(t * angle), np.sin(t * angle)
        block[i, i], block[i, j], block[j, i], block[j, j] = c, -s, s, c
    return schur_vectors @ block @ schur_vectors.T


def fractional_rotations(rotation: Array, ts: Sequence[float], atol: float = 1e-4) -> list[Array]:
    """[Q^t for t in ts] for Q [n, n] in SO(n): a path of rotations with Q^0 = I and Q^1 = Q (Network Dissection,
    Sec. 3.2: interpolating from the identity to a random rotation).

    Construction (float64 NumPy/SciPy on the host, results cast to ``rotation``'s dtype): the real Schur form
    Q = Z T Z^T splits R^n into orthogonal planes in which Q rotates by an angle theta in (-pi, pi], plus fixed axes;
    Q^t rotates every plane by t * theta, so Q^t is in SO(n) for every real t (orthogonal to float precision) and
    Q^s Q^t = Q^(s+t). This is the principal matrix power (exp(t log Q)) wherever Q has no eigenvalue -1. An angle of
    exactly pi (eigenvalue -1, even multiplicity in SO(n)) has no principal logarithm: those eigenvectors are paired
    in Schur order and each pair rotated by +t*pi in its plane, one of several valid choices (the path then depends
    on that choice, its end points do not). ``t = 0`` returns the identity and ``t = 1`` returns ``rotation`` itself,
    both exactly. ``atol`` bounds the accepted deviation of Q^T Q from I.
    """
    rotation = jnp.asarray(rotation)
    n = rotation.shape[0]
    schur_vectors, planes = _rotation_angles(np.asarray(rotation), atol)
    out = []
    for t in ts:
        t = float(t)
        if t == 1.0:
            out.append(rotation)
        elif t == 0.0:
            out.append(jnp.eye(n, dtype=rotation.dtype))
        else:
            out.append(jnp.asarray(_power_from_angles(schur_vectors, planes, t), dtype=rotation.dtype))
    return out


def fractional_rotation(rotation: Array, t: float, atol: float = 1e-4) -> Array:
    """Q^t [n, n] for one t (see `fractional_rotations`; Q^0 = I and Q^1 = Q exactly)."""
    return fractional_rotations(rotation, [t], atol)[0]
