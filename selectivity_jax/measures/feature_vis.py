"""Activation maximisation and Representative Substitution (Chen et al.).

- Activation maximisation (AM; Erhan et al. 2009, Simonyan et al. 2014, with the jitter of Mordvintsev et al. 2015
  and the L2 and Gaussian-blur regularisers of Yosinski et al. 2015): for unit i of a layer, the input x that
  maximises ``r_i(x) - l2 * ||x||^2`` by gradient ascent from small noise. Inhibition AM (IAM) maximises the unit's
  response against the other units of the layer instead, ``r_i(x) - mean_{j != i} r_j(x) - l2 * ||x||^2``.
- Representative Substitution (RS; Chen et al., Eq. 4): with x_i unit i's generated input, RS(i) =
  |{j : r_j(x_i) > r_i(x_i)}| / |{x}|, the number of units of the layer that respond to x_i more than unit i itself
  (strictly: ties do not count), divided by the number of units of the layer, |{x}| = U (one generated input per
  unit; denominator 'units'). The project's earlier variant divides by the U - 1 other units instead ('others'), so
  that RS reaches 1 when every other unit responds more; under Eq. 4 RS is at most (U - 1) / U. RS near 0: the input
  generated for unit i represents unit i; RS near 1: other units respond to it more than unit i does. The units
  counted are unit i's substitutes (`substitutes`; Chen et al. Fig. 2 shows their IAM inputs beside unit i's).

A layer is given as ``units_fn(images [B, H, W, C]) -> responses [B, U]`` (float32 images in the model's input
space; a dense layer's responses as they are, a conv map's channels spatially averaged). ``units_fn`` must treat the
examples of a batch independently (a model in evaluation mode): the units are optimised in parallel with
``jax.vmap``, each on its own batch of one.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

Array = jax.Array
UnitsFn = Callable[[Array], Array]
Objective = Literal["am", "iam"]
Denominator = Literal["units", "others"]
DENOMINATORS = ("units", "others")  # RS divides its count by U (Chen et al. Eq. 4) or by the U - 1 other units


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_blur(image: Array, sigma: float) -> Array:
    """[H, W, C] -> [H, W, C]: separable Gaussian blur (std ``sigma`` pixels, kernel radius ceil(3 sigma)) of each
    channel, edges padded by reflection (so a constant image stays constant)."""
    kernel = jnp.asarray(_gaussian_kernel(sigma))
    radius = (kernel.shape[0] - 1) // 2

    def blur_axis(x: Array, axis: int) -> Array:
        padding = [(0, 0)] * x.ndim
        padding[axis] = (radius, radius)
        padded = jnp.pad(x, padding, mode="reflect" if x.shape[axis] > radius else "edge")
        size = x.shape[axis]
        return sum(kernel[k] * jax.lax.slice_in_dim(padded, k, k + size, axis=axis) for k in range(kernel.shape[0]))

    return blur_axis(blur_axis(image, 0), 1)


def _num_units(units_fn: UnitsFn, image_shape: Sequence[int]) -> int:
    spec = jax.eval_shape(units_fn, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    if len(spec.shape) != 2:
        raise ValueError(f"units_fn must return responses [B, U]; got shape {spec.shape}")
    return int(spec.shape[1])


def unit_objective(responses: Array, unit: Array, objective: Objective) -> Array:
    """responses [U], unit index -> 'am': r_unit; 'iam': r_unit - mean of the other U - 1 responses."""
    own = responses[unit]
    if objective == "am":
        return own
    if objective == "iam":
        others = responses.shape[0] - 1
        return own - (jnp.sum(responses) - own) / max(others, 1)
    raise ValueError(f"objective must be 'am' or 'iam'; got {objective!r}")


def activation_maximisation(
    units_fn: UnitsFn,
    image_shape: Sequence[int],
    *,
    unit_indices: Sequence[int] | Array | None = None,
    objective: Objective = "am",
    steps: int = 256,
    learning_rate: float = 0.05,
    jitter: int = 0,
    l2: float = 0.0,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    key: int | Array = 0,
    init_scale: float = 0.01,
    value_range: tuple[float, float] | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> Array:
    """Inputs that maximise each unit of a layer (AM or IAM, see the module docstring) -> images [U', H, W, C].

    Args:
      units_fn: images [B, H, W, C] -> responses [B, U] (one layer, conv channels spatially averaged).
      image_shape: (H, W, C).
      unit_indices: the U' units to optimise (default: all U, in order).
      objective: 'am' maximises ``r_i(x)``; 'iam' maximises ``r_i(x) - mean_{j != i} r_j(x)`` over all U units.
      steps, learning_rate: gradient ascent with Adam (or ``optimizer``, which then ignores ``learning_rate``).
      jitter: before each forward pass the image is rolled by random integer offsets in [-jitter, jitter] along H and
        W (the gradient flows back through the roll).
      l2: the objective subtracts ``l2 * sum(x ** 2)``.
      blur_every, blur_sigma: every ``blur_every`` steps (0: never) the image is blurred by `gaussian_blur`.
      key: PRNG key or int seed; unit i uses ``fold_in(key, i)`` for its initial noise and jitter, so its result does
        not depend on which other units are optimised alongside.
      init_scale: the start is ``init_scale * N(0, 1)`` noise.
      value_range: (low, high) to clip the image to after each step (None: no clipping).

    All units are optimised at once, ``jax.vmap`` over units of one jitted ``lax.scan`` over steps.
    """
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C); got {image_shape}")
    if objective not in ("am", "iam"):
        raise ValueError(f"objective must be 'am' or 'iam'; got {objective!r}")
    units_fn = units_fn if isinstance(units_fn, jax.tree_util.Partial) else jax.tree_util.Partial(units_fn)
    num_units = _num_units(units_fn, image_shape)
    units = jnp.arange(num_units) if unit_indices is None else jnp.asarray(unit_indices, jnp.int32).reshape(-1)
    base_key = jax.random.key(int(key)) if isinstance(key, (int, np.integer)) else key
    optimizer = _adam(float(learning_rate)) if optimizer is None else optimizer
    settings = _AmSettings(image_shape=image_shape, objective=objective, steps=int(steps), jitter=int(jitter),
                           l2=float(l2), blur_every=int(blur_every), blur_sigma=float(blur_sigma),
                           init_scale=float(init_scale),
                           value_range=None if value_range is None else tuple(float(v) for v in value_range),
                           optimizer=optimizer)
    return _optimise_units(units_fn, units, base_key, settings=settings)


@functools.lru_cache(maxsize=None)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    """One Adam transformation per learning rate, so that equal settings hash equal (one compilation)."""
    return optax.adam(learning_rate)


class _AmSettings(NamedTuple):
    """The static settings of `activation_maximisation` (hashable: the jit cache key with ``units_fn``'s type)."""
    image_shape: tuple[int, ...]
    objective: str
    steps: int
    jitter: int
    l2: float
    blur_every: int
    blur_sigma: float
    init_scale: float
    value_range: tuple[float, float] | None
    optimizer: optax.GradientTransformation


@functools.partial(jax.jit, static_argnames=("settings",))
def _optimise_units(units_fn: jax.tree_util.Partial, units: Array, base_key: Array, *,
                    settings: _AmSettings) -> Array:
    """All units' generated inputs [U', H, W, C]: ``jax.vmap`` over units of a ``lax.scan`` of ascent steps."""
    optimizer = settings.optimizer

    def penalised_objective(image: Array, unit: Array, step_key: Array) -> Array:
        shifted = image
        if settings.jitter > 0:
            offsets = jax.random.randint(step_key, (2,), -settings.jitter, settings.jitter + 1)
            shifted = jnp.roll(image, (offsets[0], offsets[1]), axis=(0, 1))
        responses = units_fn(shifted[None])[0]
        return unit_objective(responses, unit, settings.objective) - settings.l2 * jnp.sum(image ** 2)

    gradient_of = jax.grad(penalised_objective)

    def optimise_unit(unit: Array) -> Array:
        unit_key = jax.random.fold_in(base_key, unit)
        init_key, loop_key = jax.random.split(unit_key)
        image = settings.init_scale * jax.random.normal(init_key, settings.image_shape, jnp.float32)

        def step(carry: tuple[Array, optax.OptState], index: Array) -> tuple[tuple[Array, optax.OptState], None]:
            image, opt_state = carry
            gradient = gradient_of(image, unit, jax.random.fold_in(loop_key, index))
            updates, opt_state = optimizer.update(-gradient, opt_state, image)  # ascent
            image = optax.apply_updates(image, updates)
            if settings.blur_every > 0:
                image = jax.lax.cond((index + 1) % settings.blur_every == 0,
                                     lambda x: gaussian_blur(x, settings.blur_sigma), lambda x: x, image)
            if settings.value_range is not None:
                image = jnp.clip(image, settings.value_range[0], settings.value_range[1])
            return (image, opt_state), None

        (image, _), _ = jax.lax.scan(step, (image, optimizer.init(image)), jnp.arange(settings.steps))
        return image

    return jax.vmap(optimise_unit)(units)


def representative_substitution_from_responses(responses: Array, unit_indices: Sequence[int] | Array,
                                               denominator: Denominator = "units") -> Array:
    """RS [U'] from responses [U', U] of the layer's U units to the U' generated inputs, input k made for unit
    ``unit_indices[k]`` (Chen et al., Eq. 4): the number of units j with ``responses[k, j] > responses[k, unit]``
    (strictly; ties do not count), divided by U (``denominator='units'``, the paper's |{x}|) or by the U - 1 other
    units (``'others'``). Dense layers and spatially averaged conv maps alike: only the [U', U] matrix matters."""
    if denominator not in DENOMINATORS:
        raise ValueError(f"denominator must be one of {DENOMINATORS}; got {denominator!r}")
    responses = jnp.asarray(responses)
    units = jnp.asarray(unit_indices, jnp.int32).reshape(-1)
    if responses.ndim != 2 or responses.shape[0] != units.shape[0]:
        raise ValueError(f"responses must be [U', U] with U' = {units.shape[0]}; got {responses.shape}")
    if responses.shape[1] < 2:
        raise ValueError("Representative Substitution needs a layer of at least two units")
    own = jnp.take_along_axis(responses, units[:, None], axis=1)           # [U', 1]
    exceeds = responses > own                                              # own column is never > itself
    count = responses.shape[1] if denominator == "units" else responses.shape[1] - 1
    return jnp.sum(exceeds, axis=1).astype(jnp.float32) / count


def generated_responses(units_fn: UnitsFn, images: Array, *, batch_size: int | None = None) -> Array:
    """Responses [U', U] of all U units of the layer to the U' generated ``images [U', H, W, C]``, through
    ``units_fn`` in batches of ``batch_size`` (default: all at once): the matrix RS counts in (row k: input k)."""
    images = jnp.asarray(images, jnp.float32)
    count = images.shape[0]
    batch_size = count if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    return jnp.concatenate([units_fn(images[start:start + batch_size]) for start in range(0, count, batch_size)],
                           axis=0)


def representative_substitution(
    units_fn: UnitsFn,
    am_images: Array,
    *,
    unit_indices: Sequence[int] | Array | None = None,
    batch_size: int | None = None,
    denominator: Denominator = "units",
) -> Array:
    """RS [U'] of the units for which ``am_images [U', H, W, C]`` were generated (default: image k for unit k).

    RS(i) = the number of units of the layer whose response to unit i's generated input exceeds unit i's own,
    divided by U (``denominator='units'``, Chen et al. Eq. 4) or by U - 1 (``'others'``); the responses are
    `generated_responses` (batches of ``batch_size``, default all at once).
    """
    count = jnp.shape(am_images)[0]
    units = jnp.arange(count) if unit_indices is None else jnp.asarray(unit_indices, jnp.int32).reshape(-1)
    responses = generated_responses(units_fn, am_images, batch_size=batch_size)
    return representative_substitution_from_responses(responses, units, denominator)


def substitutes(responses: np.ndarray, unit: int) -> np.ndarray:
    """Unit ``unit``'s substitutes: the indices j of the units whose response ``responses[j]`` (one row [U] of
    `generated_responses`, the layer's responses to the input generated for ``unit``) exceeds the unit's own, most
    responsive first (ties in index order). Their count is RS(unit) times the denominator (Chen et al., Fig. 2)."""
    responses = np.asarray(responses).reshape(-1)
    if not 0 <= int(unit) < responses.shape[0]:
        raise ValueError(f"unit must index the {responses.shape[0]} responses; got {unit}")
    above = np.flatnonzero(responses > responses[int(unit)])
    return above[np.argsort(-responses[above], kind="stable")]


class SpearmanCorrelation(NamedTuple):
    """Spearman rank correlation and its two-sided p-value (NaN when either input is constant)."""

    rho: float
    pvalue: float


def rs_selectivity_correlation(rs: Array, selectivity: Array) -> SpearmanCorrelation:
    """Spearman rho (and two-sided p-value, scipy.stats.spearmanr) between RS [U] and class selectivity [U] of the
    same units (Chen et al. relate RS to class selectivity; here with the Leavitt & Morcos index)."""
    rs, selectivity = np.asarray(rs, np.float64).reshape(-1), np.asarray(selectivity, np.float64).reshape(-1)
    if rs.shape != selectivity.shape:
        raise ValueError(f"rs and selectivity must have one value per unit; got {rs.shape} and {selectivity.shape}")
    if rs.size < 3 or np.all(rs == rs[0]) or np.all(selectivity == selectivity[0]):
        return SpearmanCorrelation(float("nan"), float("nan"))
    result = scipy.stats.spearmanr(rs, selectivity)
    return SpearmanCorrelation(float(result.statistic), float(result.pvalue))
