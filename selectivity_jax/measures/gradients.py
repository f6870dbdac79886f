"""Input-unit gradients and their variability across samples and across units.

Leavitt & Morcos, "Linking average- and worst-case perturbation robustness via class selectivity and
dimensionality" (input-unit gradient analysis: the gradient of a unit's response with respect to the input was more
variable across samples and units in high-selectivity networks).

A layer is ``units_fn(images) -> responses [B, U]`` (images float32 [B, ...] in pixel space [0, 1]; a conv channel's
response is the spatial mean of its post-ReLU map), e.g. ``jax.tree_util.Partial(apply_fn, variables)`` (see
`selectivity_jax.measures.attacks.jittable` on closures). Samples must not interact (batch norm in inference mode).

The input-unit gradient of sample ``n`` and unit ``u`` is ``g[n, u] = d responses[n, u] / d images[n]``, an array
shaped like one image ([H, W, C]), flattened below to a vector of ``D`` values. With ``nu[n, u] = ||g[n, u]||_2``
(its L2 norm) and population statistics (``std`` with ddof 0), over the N samples and the U analysed units:

- ``norm_cv_over_samples[u] = std_n nu[n, u] / mean_n nu[n, u]``: coefficient of variation over samples of the
  gradient norm of unit u (how much a unit's sensitivity to its input changes from one sample to another);
- ``norm_cv_over_units[n] = std_u nu[n, u] / mean_u nu[n, u]``: coefficient of variation over units of sample n's
  gradient norms (how unequally the units of the layer respond to small input changes at that sample);
- ``cosine_distance_over_samples[u] = 1 - mean_{n != m} cos(g[n, u], g[m, u])``, the mean over ordered pairs of
  distinct samples whose gradient is non-zero: variability of the gradient's DIRECTION across samples (0: every
  sample has the same gradient direction; 1: orthogonal on average; at most 2);
- ``cosine_distance_over_units[n] = 1 - mean_{u != v} cos(g[n, u], g[n, v])`` over pairs of distinct units with a
  non-zero gradient at sample n.

A ratio with a zero mean (a unit whose gradient is zero at every sample, e.g. a dead ReLU unit) and a cosine mean
with fewer than two non-zero gradients are NaN; the scalar summaries are NaN-ignoring means and the numbers of such
units/samples are reported. All four are scale-free: multiplying the images' scale or a unit's response by a constant
leaves them unchanged. The mean pairwise cosine is computed exactly from sums of unit vectors,
``sum_{n != m} cos = ||sum_n g_hat[n]||^2 - N'`` (``N'`` non-zero gradients), so a data set is streamed in batches
with O(U x D) memory and every pair of samples counts, not only pairs inside a batch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from selectivity_jax.measures.attacks import jittable, pad_to, padded_batches, to_unit_interval

Array = jax.Array
UnitsFn = Callable[[Array], Array]


def _unit_chunks(unit_indices: Array, chunk_size: int) -> tuple[Array, Array]:
    """[K] unit indices -> ([num_chunks, chunk_size] indices padded with index 0, [num_chunks, chunk_size] valid)."""
    count = unit_indices.shape[0]
    num_chunks = -(-count // chunk_size)
    padding = num_chunks * chunk_size - count
    padded = jnp.concatenate([unit_indices, jnp.zeros((padding,), unit_indices.dtype)])
    valid = jnp.arange(num_chunks * chunk_size) < count
    return padded.reshape(num_chunks, chunk_size), valid.reshape(num_chunks, chunk_size)


def _chunk_gradients(pullback: Callable[[Array], tuple[Array]], num_units: int, batch: int,
                     chunk_indices: Array) -> Array:
    """Gradients of the units ``chunk_indices`` [k] for every sample: [k, B, ...] (one vjp per unit, vmapped).

    The cotangent of unit u is one-hot on u for every sample; as samples do not interact, the vjp of sample n is the
    gradient of responses[n, u] with respect to images[n] alone.
    """
    one_hot = jax.nn.one_hot(chunk_indices, num_units, dtype=jnp.float32)                # [k, U]
    cotangents = jnp.broadcast_to(one_hot[:, None, :], (chunk_indices.shape[0], batch, num_units))
    (gradients,) = jax.vmap(pullback)(cotangents)
    return gradients


def _responses_and_pullback(units_fn: UnitsFn, images: Array) -> tuple[Array, Callable[[Array], tuple[Array]]]:
    def float_responses(x: Array) -> Array:
        responses = units_fn(x)
        if responses.ndim != 2 or responses.shape[0] != x.shape[0]:
            raise ValueError(f"units_fn must return responses [B, U] = [{x.shape[0]}, U]; got {responses.shape}")
        return responses.astype(jnp.float32)

    return jax.vjp(float_responses, images)


@functools.partial(jax.jit, static_argnames=("unit_chunk_size",))
def _gradients_of_units(units_fn: jax.tree_util.Partial, images: Array, unit_indices: Array,
                        unit_chunk_size: int) -> Array:
    images = images.astype(jnp.float32)
    responses, pullback = _responses_and_pullback(units_fn, images)
    chunks, _ = _unit_chunks(unit_indices, unit_chunk_size)
    per_chunk = functools.partial(_chunk_gradients, pullback, responses.shape[1], images.shape[0])
    gradients = jax.lax.map(per_chunk, chunks)                                           # [chunks, k, B, ...]
    gradients = gradients.reshape((-1,) + images.shape)[:unit_indices.shape[0]]           # [K, B, ...]
    return jnp.moveaxis(gradients, 0, 1)


def _chunk_size(requested: int, num_units: int) -> int:
    if requested < 1:
        raise ValueError(f"unit_chunk_size must be positive; got {requested}")
    if num_units < 1:
        raise ValueError("no units to differentiate")
    return min(requested, num_units)


def _default_unit_indices(units_fn: UnitsFn, images: Array) -> np.ndarray:
    """All units: range(U), with U read from the output shape of ``units_fn`` (no computation)."""
    spec = jax.eval_shape(units_fn, jax.ShapeDtypeStruct(images.shape, jnp.float32))
    if len(spec.shape) != 2:
        raise ValueError(f"units_fn must return responses [B, U]; got shape {spec.shape}")
    return np.arange(spec.shape[1])


def input_unit_gradients(units_fn: UnitsFn, images: Any, unit_indices: Sequence[int] | Array | None = None, *,
                         unit_chunk_size: int = 16) -> Array:
    """``g[n, u] = d responses[n, u] / d images[n]`` for one batch: [B, U, ...] (e.g. [B, U, H, W, C]), float32.

    Args:
      units_fn: images float32 [B, ...] in [0, 1] -> responses [B, U].
      images: uint8 [B, ...] (divided by 255; gradients are then per unit of [0, 1] pixel value) or float in [0, 1].
      unit_indices: the units to differentiate, [K] (default: all U); the result has K in place of U.
      unit_chunk_size: units per vmapped chunk (peak memory ~ chunk x B x image); chunks run in a ``lax.map``.
    """
    images = jnp.asarray(to_unit_interval(images))
    if unit_indices is None:
        unit_indices = _default_unit_indices(units_fn, images)
    unit_indices = jnp.asarray(unit_indices, jnp.int32).reshape(-1)
    return _gradients_of_units(jittable(units_fn), images, unit_indices,
                               unit_chunk_size=_chunk_size(unit_chunk_size, unit_indices.shape[0]))


@functools.partial(jax.jit, static_argnames=("unit_chunk_size",))
def _batch_gradient_sums(units_fn: jax.tree_util.Partial, images: Array, sample_mask: Array, unit_indices: Array,
                         unit_direction_sums: Array, unit_chunk_size: int) -> tuple[Array, Array, Array]:
    """One batch -> (gradient norms [B, K], updated per-unit sums of unit gradients [K, D], per-sample sums [B, D]).

    Padding samples (``sample_mask`` False) and padding units are left out of the sums; zero gradients have no
    direction and are left out too.
    """
    images = images.astype(jnp.float32)
    batch = images.shape[0]
    responses, pullback = _responses_and_pullback(units_fn, images)
    chunks, chunk_valid = _unit_chunks(unit_indices, unit_chunk_size)

    def chunk_sums(sample_sums: Array, chunk: tuple[Array, Array]) -> tuple[Array, tuple[Array, Array]]:
        indices, valid = chunk
        gradients = _chunk_gradients(pullback, responses.shape[1], batch, indices).reshape(len(indices), batch, -1)
        norms = jnp.sqrt(jnp.sum(jnp.square(gradients), axis=-1))                          # [k, B]
        directions = gradients / jnp.where(norms > 0, norms, 1.0)[..., None]              # [k, B, D]
        nonzero = norms > 0
        over_samples = (nonzero & sample_mask[None, :]).astype(jnp.float32)
        over_units = (nonzero & valid[:, None]).astype(jnp.float32)
        unit_sums = jnp.einsum("kb,kbd->kd", over_samples, directions, precision=jax.lax.Precision.HIGHEST)
        sample_sums = sample_sums + jnp.einsum("kb,kbd->bd", over_units, directions,
                                               precision=jax.lax.Precision.HIGHEST)
        return sample_sums, (norms, unit_sums)

    dimension = int(np.prod(images.shape[1:]))
    sample_sums, (norms, unit_sums) = jax.lax.scan(
        chunk_sums, jnp.zeros((batch, dimension), jnp.float32), (chunks, chunk_valid))
    count = unit_indices.shape[0]
    norms = norms.reshape(-1, batch)[:count].T                                             # [B, K]
    unit_sums = unit_sums.reshape(-1, dimension)[:count]
    return norms, unit_direction_sums + unit_sums, sample_sums


def _coefficient_of_variation(values: np.ndarray, axis: int) -> np.ndarray:
    """std / mean along ``axis`` (float64, ddof 0); NaN where the mean is 0."""
    mean = values.mean(axis=axis)
    std = values.std(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, std / np.where(mean > 0, mean, 1.0), np.nan)


def _mean_pairwise_cosine(direction_sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean cosine over ordered pairs of distinct unit vectors from their sum [M, D] and count [M]; NaN if < 2."""
    squared = np.sum(np.square(direction_sums.astype(np.float64)), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts >= 2, (squared - counts) / np.maximum(counts * (counts - 1), 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _analysed_units(units_fn: UnitsFn, images: np.ndarray, max_units: int | None, key: Array | None) -> np.ndarray:
    """The K unit indices analysed: all U, or ``max_units`` of them drawn without replacement by ``key``, sorted."""
    unit_indices = _default_unit_indices(units_fn, images)
    if max_units is not None and max_units < len(unit_indices):
        if max_units < 1:
            raise ValueError(f"max_units must be positive; got {max_units}")
        key = jax.random.key(0) if key is None else key
        unit_indices = np.sort(np.asarray(jax.random.choice(key, unit_indices, (max_units,), replace=False)))
    return unit_indices


def _streamed_gradients(units_fn: UnitsFn, images: np.ndarray, unit_indices: np.ndarray, batch_size: int,
                        unit_chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over the data set in padded batches -> (gradient norms [N, K] float64, per-unit mean pairwise cosine
    over samples [K], per-sample mean pairwise cosine over units [N]); O(K x D) memory (module docstring)."""
    model = jittable(units_fn)
    chunk_size = _chunk_size(unit_chunk_size, len(unit_indices))
    device_units = jnp.asarray(unit_indices, jnp.int32)
    unit_sums = jnp.zeros((len(unit_indices), int(np.prod(images.shape[1:]))), jnp.float32)
    norms, sample_cosines = [], []
    for start, valid in padded_batches(images.shape[0], batch_size):
        batch = pad_to(images[start:start + valid], batch_size)
        mask = jnp.arange(batch_size) < valid
        batch_norms, unit_sums, sample_sums = _batch_gradient_sums(
            model, jnp.asarray(batch), mask, device_units, unit_sums, unit_chunk_size=chunk_size)
        batch_norms = np.asarray(batch_norms, np.float64)[:valid]
        norms.append(batch_norms)
        sample_cosines.append(_mean_pairwise_cosine(np.asarray(sample_sums)[:valid], np.sum(batch_norms > 0, axis=1)))
    norms = np.concatenate(norms)                                                          # [N, K]
    unit_cosine = _mean_pairwise_cosine(np.asarray(unit_sums), np.sum(norms > 0, axis=0))
    return norms, unit_cosine, np.concatenate(sample_cosines)


def gradient_variability(units_fn: UnitsFn, images: Any, *, batch_size: int, max_units: int | None = None,
                         key: Array | None = None, unit_chunk_size: int = 16) -> dict[str, Any]:
    """Variability of the input-unit gradients of one layer over a data set (statistics in the module docstring).

    Args:
      units_fn: images float32 [B, ...] in [0, 1] -> responses [B, U].
      images: [N, ...] uint8 (divided by 255) or float in [0, 1].
      batch_size: samples per jitted call (the last batch is padded; peak memory ~ unit_chunk_size x batch x image).
      max_units: analyse a random subset of this many units (sorted indices, drawn with ``key``; default: all).
      key: PRNG key for the unit subset; None -> ``jax.random.key(0)``.
      unit_chunk_size: units differentiated together (vmapped) inside a batch.

    Returns:
      per unit [K]: "unit_indices", "norm_cv_over_samples", "cosine_distance_over_samples", "mean_gradient_norm";
      per sample [N]: "norm_cv_over_units", "cosine_distance_over_units"; "gradient_norms" [N, K] float32;
      scalars (NaN-ignoring means): "norm_cv_over_samples_mean" (over units), "norm_cv_over_units_mean" (over
      samples), "cosine_distance_over_samples_mean", "cosine_distance_over_units_mean"; "num_samples", "num_units",
      "num_units_zero_gradient" (units whose gradient is zero at every sample).
    """
    images = to_unit_interval(images)
    if images.ndim < 2 or images.shape[0] < 1:
        raise ValueError(f"images must be [N, ...] with N >= 1; got shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    batch_size = min(batch_size, images.shape[0])
    unit_indices = _analysed_units(units_fn, images[:batch_size], max_units, key)
    norms, unit_cosine, sample_cosine = _streamed_gradients(units_fn, images, unit_indices, batch_size,
                                                            unit_chunk_size)
    per_unit_cv = _coefficient_of_variation(norms, axis=0)
    per_sample_cv = _coefficient_of_variation(norms, axis=1)
    unit_distance, sample_distance = 1.0 - unit_cosine, 1.0 - sample_cosine
    return {
        "unit_indices": np.asarray(unit_indices),
        "norm_cv_over_samples": per_unit_cv,
        "cosine_distance_over_samples": unit_distance,
        "mean_gradient_norm": norms.mean(axis=0),
        "norm_cv_over_units": per_sample_cv,
        "cosine_distance_over_units": sample_distance,
        "gradient_norms": norms.astype(np.float32),
        "norm_cv_over_samples_mean": _nanmean(per_unit_cv),
        "norm_cv_over_units_mean": _nanmean(per_sample_cv),
        "cosine_distance_over_samples_mean": _nanmean(unit_distance),
        "cosine_distance_over_units_mean": _nanmean(sample_distance),
        "num_samples": int(norms.shape[0]),
        "num_units": int(norms.shape[1]),
        "num_units_zero_gradient": int(np.sum(np.all(norms == 0, axis=0))),
    }
