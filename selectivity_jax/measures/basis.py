"""Does class selectivity shift to a different basis? (Leavitt & Morcos, ICLR 2021, section "does selectivity shift to
a different basis").

A regulariser that lowers the selectivity of a layer's units could leave the class information as selective as before
along other directions of the same unit space. For one layer we compare the mean class selectivity of its units (the
axis-aligned basis) with the highest mean selectivity found in other orthonormal bases of the same space:

(a) `class_mean_basis`: the class-conditional mean directions, orthonormalised and completed to a basis;
(b) `optimise_rotation`: gradient ascent of the mean selectivity over rotations, from the identity and from (a).

`basis_analysis` runs all four. Every selectivity here, the axis-aligned baseline included, is computed by
`selectivity_jax.measures.rotation.rotated_selectivity` with one rule for negative responses (default
``'shift_class_means'``, see `selectivity_jax.measures.rotation`), so the four numbers differ only by the basis.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg

from selectivity_jax.measures.rotation import (DEFAULT_NEGATIVES, NegativesRule, _check_rule, axis_aligned_selectivity,
                                               rotate_responses, rotated_selectivity)
from selectivity_jax.selectivity import DEFAULT_EPS, class_sums_and_counts

Array = jax.Array
Parametrisation = Literal["cayley", "expm"]


class ClassMeanBasis(NamedTuple):
    """Result of `class_mean_basis`.

    basis: [U, U] float32 orthogonal matrix; column k is direction k (new unit k responds ``responses @ basis[:, k]``).
    direction_classes: int [U]: the class whose centered mean defines direction k, -1 for the completion directions.
    num_class_directions: r, the number of class-mean directions (the first r columns).
    selectivity: [U] SI of the responses projected onto the basis.
    """

    basis: Array
    direction_classes: np.ndarray
    num_class_directions: int
    selectivity: Array


class OptimisedRotation(NamedTuple):
    """Result of `optimise_rotation`.

    rotation: [U, U] float32 orthogonal matrix (init @ R(A) at the best step); columns are the new units' directions.
    trajectory: [steps + 1] mean SI after k = 0..steps updates (entry 0: the starting point).
    selectivity: [U] per-unit SI at ``rotation``.
    best_step: the k whose iterate is returned (mean SI = trajectory[best_step] = max(trajectory)).
    """

    rotation: Array
    trajectory: Array
    selectivity: Array
    best_step: Array


def _orient(directions: np.ndarray, centered_means: np.ndarray) -> np.ndarray:
    """Flips each column [U, k] so that its largest absolute centered class-mean projection is positive."""
    projections = centered_means @ directions                              # [C', k]
    flip = np.max(projections, axis=0) < -np.min(projections, axis=0)
    return np.where(flip[None, :], -directions, directions)


def _orthonormal_complement(vectors: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
    """[U, r] orthonormal columns -> [U, U - r] orthonormal columns orthogonal to them; when ``first`` [U] has a
    component outside their span, the first complement column is that component's direction."""
    units, rank = vectors.shape
    candidates = [vectors]
    if first is not None:
        residual = first - vectors @ (vectors.T @ first)
        if np.linalg.norm(residual) > 1e-8 * max(np.linalg.norm(first), 1e-300):
            candidates.append(residual[:, None] / np.linalg.norm(residual))
    full_q, _ = scipy.linalg.qr(np.concatenate(candidates, axis=1), mode="full")
    complement = full_q[:, rank:]
    if len(candidates) == 2:  # QR may have flipped the sign of the residual column: point it along ``first``
        complement[:, 0] *= np.sign(complement[:, 0] @ candidates[1][:, 0]) or 1.0
    return complement


def _centered_class_directions(sums: np.ndarray, counts: np.ndarray
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 1 of `class_mean_basis`, from class sums [C, U] and counts [C] (float64) -> (present classes [C'], grand
    mean of the class means [U], centered class means [C', U], their unit directions [C', U] (zero rows stay 0))."""
    present = np.flatnonzero(counts > 0)
    if present.size < 2:
        raise ValueError(f"the class-mean basis needs at least two present classes; got {present.size}")
    means = sums[present] / counts[present, None]                           # [C', U]
    grand_mean = means.mean(axis=0)
    centered = means - grand_mean[None, :]
    norms = np.linalg.norm(centered, axis=1)
    if not np.any(norms > 0):
        raise ValueError("all present classes have the same mean response: there are no class-mean directions")
    directions = centered / np.where(norms > 0, norms, 1.0)[:, None]
    return present, grand_mean, centered, directions


def _picked_classes(directions: np.ndarray, units: int) -> np.ndarray:
    """Step 2 of `class_mean_basis`: indices into the C' directions [C', U]; all if C' <= U, else the U that QR with
    column pivoting picks first, sorted."""
    if directions.shape[0] <= units:
        return np.arange(directions.shape[0])
    _, _, pivots = scipy.linalg.qr(directions.T, mode="economic", pivoting=True)
    return np.sort(pivots[:units])


def _loewdin_frame(directions: np.ndarray, grand_mean: np.ndarray, rtol: float) -> np.ndarray:
    """Step 3 of `class_mean_basis`: the k picked unit directions [k, U] -> the nearest orthonormal frame [U, k],
    rank-deficient directions lifted out of their span (along ``grand_mean`` first), each oriented to its class."""
    left, singular, right_t = np.linalg.svd(directions.T, full_matrices=False)  # [U, k], [k], [k, k]
    rank = int(np.sum(singular > rtol * singular[0]))
    frame = left[:, :rank] @ right_t[:rank]                                 # [U, k]
    if rank < directions.shape[0]:
        lift = _orthonormal_complement(left[:, :rank], first=grand_mean)[:, :directions.shape[0] - rank]
        frame = frame + lift @ right_t[rank:]
    return np.where((np.sum(frame * directions.T, axis=0) < 0)[None, :], -frame, frame)


def class_mean_basis(
    responses: Array,
    labels: Array,
    num_classes: int,
    *,
    negatives: NegativesRule = DEFAULT_NEGATIVES,
    rtol: float = 1e-6,
    eps: float = DEFAULT_EPS,
) -> ClassMeanBasis:
    """The class-conditional mean basis of a layer and the selectivity in it (Leavitt & Morcos, "does selectivity
    shift to a different basis").

    Construction, in float64 on the host, from responses [N, U] and labels int [N]:

    1. class means ``mu[c]`` [U] over the C' PRESENT classes, centered by their unweighted average ``m`` (the grand
       mean of class means): ``d[c] = mu[c] - m``, each normalised to unit length (every class counts the same, as in
       the index). Centering removes the direction common to all classes, which would otherwise dominate non-negative
       responses and carries no class contrast (the 'shift' rule is blind to it);
    2. the classes that get a direction: all C' if C' <= U; otherwise the U classes picked first by QR with column
       pivoting of the [U, C'] matrix of the ``d[c]`` (greedy: the class least explained by those already picked);
    3. symmetric (Loewdin) orthonormalisation of the k picked ``d[c]``: the orthonormal [U, k] frame W nearest to
       them, i.e. maximising sum_c cos(W[:, c], d[c]): the polar factor of the SVD ``D = A S B^T``, ``W = A B^T``.
       Directions with singular value below ``rtol`` times the largest are rank deficient (the centered means of all
       C' classes span at most C' - 1 dimensions) and the polar factor is not unique there: those right singular
       vectors are mapped to unit directions orthogonal to the span, first the component of ``m`` outside the span
       (the common direction), then the orthogonal complement. So one-hot class codes ``mu[c] = a q_c + m`` with
       orthonormal ``q_c`` give back ``W[:, c] = q_c`` exactly when ``U = C'``. Each direction is oriented towards its
       class (``W[:, c] . d[c] >= 0``);
    4. completed to an orthonormal basis of R^U by the orthogonal complement (full QR), each completion direction
       oriented so that its largest absolute centered class-mean projection is positive.

    The basis is orthogonal with determinant +1 or -1. Its selectivity is `rotated_selectivity` of the responses as
    given (not centered) with the ``negatives`` rule.
    """
    responses32 = jnp.asarray(responses, jnp.float32)
    sums, counts = class_sums_and_counts(responses32, labels, num_classes)
    present, grand_mean, centered, directions = _centered_class_directions(np.asarray(sums, np.float64),
                                                                           np.asarray(counts, np.float64))
    units = responses32.shape[1]
    picked = _picked_classes(directions, units)
    frame = _loewdin_frame(directions[picked], grand_mean, rtol)
    completion = _orient(_orthonormal_complement(frame), centered)
    basis = jnp.asarray(np.concatenate([frame, completion], axis=1), jnp.float32)
    direction_classes = np.concatenate([present[picked], np.full(units - picked.size, -1)]).astype(np.int64)
    return ClassMeanBasis(basis=basis, direction_classes=direction_classes, num_class_directions=int(picked.size),
                          selectivity=rotated_selectivity(responses32, labels, num_classes, basis, negatives, eps))


def _skew(parameters: Array) -> Array:
    upper = jnp.triu(parameters, k=1)
    return upper - upper.T


def rotation_from_skew(parameters: Array, parametrisation: Parametrisation = "cayley") -> Array:
    """[U, U] unconstrained parameters -> rotation in SO(U) from the skew-symmetric A = triu(P, 1) - triu(P, 1)^T.

    'cayley': R = (I - A)^{-1} (I + A) (Cayley transform; every rotation without eigenvalue -1 is reached);
    'expm': R = exp(A) (matrix exponential; onto SO(U)). Both give R = I at P = 0 and are differentiable.
    """
    a = _skew(parameters)
    if parametrisation == "cayley":
        eye = jnp.eye(a.shape[0], dtype=a.dtype)
        return jnp.linalg.solve(eye - a, eye + a)
    if parametrisation == "expm":
        return jax.scipy.linalg.expm(a)
    raise ValueError(f"parametrisation must be 'cayley' or 'expm'; got {parametrisation!r}")


@partial(jax.jit, static_argnames=("num_classes", "steps", "parametrisation", "negatives", "eps"))
def _ascend(responses: Array, labels: Array, init: Array, learning_rate: Array, *, num_classes: int, steps: int,
            parametrisation: Parametrisation, negatives: NegativesRule, eps: float) -> tuple[Array, ...]:
    optimizer = optax.adam(learning_rate)

    def rotation_of(parameters: Array) -> Array:
        return jnp.matmul(init, rotation_from_skew(parameters, parametrisation), precision=jax.lax.Precision.HIGHEST)

    def mean_selectivity(parameters: Array) -> Array:
        rotated = rotate_responses(responses, rotation_of(parameters))
        return jnp.mean(axis_aligned_selectivity(rotated, labels, num_classes, negatives, eps))

    value_and_grad = jax.value_and_grad(mean_selectivity)

    def step(carry: tuple[Any, ...], index: Array) -> tuple[tuple[Any, ...], Array]:
        parameters, opt_state, best_value, best_parameters, best_step = carry
        value, gradient = value_and_grad(parameters)
        better = value > best_value
        best_value = jnp.where(better, value, best_value)
        best_parameters = jnp.where(better, parameters, best_parameters)
        best_step = jnp.where(better, index, best_step)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, gradient), opt_state, parameters)
        return (optax.apply_updates(parameters, updates), opt_state, best_value, best_parameters, best_step), value

    parameters = jnp.zeros_like(init)
    carry = (parameters, optimizer.init(parameters), jnp.array(-jnp.inf, jnp.float32), parameters,
             jnp.array(0, jnp.int32))
    (parameters, _, best_value, best_parameters, best_step), values = jax.lax.scan(
        step, carry, jnp.arange(steps, dtype=jnp.int32))
    final_value = mean_selectivity(parameters)
    better = final_value > best_value
    best_parameters = jnp.where(better, parameters, best_parameters)
    best_step = jnp.where(better, steps, best_step)
    rotation = rotation_of(best_parameters)
    per_unit = axis_aligned_selectivity(rotate_responses(responses, rotation), labels, num_classes, negatives, eps)
    return rotation, jnp.append(values, final_value), per_unit, best_step


def optimise_rotation(
    responses: Array,
    labels: Array,
    num_classes: int,
    *,
    init: Array | None = None,
    steps: int = 200,
    learning_rate: float = 1e-2,
    parametrisation: Parametrisation = "cayley",
    negatives: NegativesRule = DEFAULT_NEGATIVES,
    eps: float = DEFAULT_EPS,
) -> OptimisedRotation:
    """Gradient ascent of the mean class selectivity over rotations of the unit basis (Leavitt & Morcos, "does
    selectivity shift to a different basis").

    Maximises ``mean_u SI[u]`` of ``make_nonnegative(responses [N, U] @ init @ R(A), negatives)`` over the skew
    parameters A of `rotation_from_skew` (Cayley or matrix exponential), from A = 0 (the rotation ``init``, default
    the identity; the class-mean basis of `class_mean_basis` is the other start), with Adam on the full data set
    (full batch) for ``steps`` steps, in one jitted ``lax.scan``. Parametrising around ``init`` keeps the result
    orthogonal to float32 precision whatever the number of steps. Returns the BEST iterate of the trajectory, the
    start included, so the result is never below the starting point.
    """
    _check_rule(negatives)
    responses = jnp.asarray(responses, jnp.float32)
    units = responses.shape[1]
    init = jnp.eye(units, dtype=jnp.float32) if init is None else jnp.asarray(init, jnp.float32)
    if init.shape != (units, units):
        raise ValueError(f"init must be [U, U] = [{units}, {units}]; got {init.shape}")
    if steps < 0:
        raise ValueError(f"steps must be non-negative; got {steps}")
    rotation, trajectory, per_unit, best_step = _ascend(
        responses, jnp.asarray(labels), init, jnp.asarray(learning_rate, jnp.float32), num_classes=num_classes,
        steps=steps, parametrisation=parametrisation, negatives=negatives, eps=eps)
    return OptimisedRotation(rotation=rotation, trajectory=trajectory, selectivity=per_unit, best_step=best_step)


def basis_analysis(
    responses: Array,
    labels: Array,
    num_classes: int,
    *,
    negatives: NegativesRule = DEFAULT_NEGATIVES,
    steps: int = 200,
    learning_rate: float = 1e-2,
    parametrisation: Parametrisation = "cayley",
    rtol: float = 1e-6,
    eps: float = DEFAULT_EPS,
) -> dict[str, Any]:
    """Mean class selectivity of one layer in four bases (Leavitt & Morcos, "does selectivity shift to a different
    basis"), all with the same ``negatives`` rule.

    Returns a dict with, for ``name`` in 'axis_aligned', 'class_mean_basis', 'optimised_from_identity',
    'optimised_from_class_mean': ``name`` -> mean SI (float) and ``name + '_per_unit'`` -> SI [U] (np.ndarray); for
    the last three also ``name + '_rotation'`` -> [U, U] basis (np.ndarray), for the optimised ones
    ``name + '_trajectory'`` -> [steps + 1] mean SI (np.ndarray); and 'negatives' -> the rule.
    """
    responses = jnp.asarray(responses, jnp.float32)
    labels = jnp.asarray(labels)
    optimise = partial(optimise_rotation, responses, labels, num_classes, steps=steps, learning_rate=learning_rate,
                       parametrisation=parametrisation, negatives=negatives, eps=eps)
    class_mean = class_mean_basis(responses, labels, num_classes, negatives=negatives, rtol=rtol, eps=eps)
    from_identity = optimise()
    from_class_mean = optimise(init=class_mean.basis)
    out: dict[str, Any] = {"negatives": negatives}
    per_unit = {
        "axis_aligned": axis_aligned_selectivity(responses, labels, num_classes, negatives, eps),
        "class_mean_basis": class_mean.selectivity,
        "optimised_from_identity": from_identity.selectivity,
        "optimised_from_class_mean": from_class_mean.selectivity,
    }
    for name, si in per_unit.items():
        out[name] = float(jnp.mean(si))
        out[name + "_per_unit"] = np.asarray(si)
    out["class_mean_basis_rotation"] = np.asarray(class_mean.basis)
    for name, result in (("optimised_from_identity", from_identity), ("optimised_from_class_mean", from_class_mean)):
        out[name + "_rotation"] = np.asarray(result.rotation)
        out[name + "_trajectory"] = np.asarray(result.trajectory)
    return out
