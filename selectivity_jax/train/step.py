"""The pure training and evaluation steps (Leavitt & Morcos, ICLR 2021, Sec. 2.3: loss = CE - alpha * SI).

Both are plain functions of (state, device arrays); `make_train_step` / `make_evaluate` close over the static
recipe (batch size, augmentation, normalization, schedules) and return jitted functions. Under a data mesh the
batch is sharded, so cross-entropy, the selectivity term and BatchNorm statistics are global-batch quantities.

Randomness is a pure function of the state: the run's key ``state.rng`` splits into streams by ``fold_in`` (0: epoch
order, folded with the epoch; 1: augmentation and 2: dropout, folded with the step), so a resumed run replays the
same bits.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from selectivity_jax.capture import apply_with_activations
from selectivity_jax.data.on_device import (EvalArrays, TrainArrays, epoch_permutation, gather_batch, normalize,
                                            random_crop_flip)
from selectivity_jax.models.vmap_conv import conv_strategy
from selectivity_jax.parallel import mesh_platform
from selectivity_jax.selectivity import SelectivityStats, selectivity_fn
from selectivity_jax.train.state import TrainState

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Static facts a step needs (hashable; none of them changes between steps)."""
    num_classes: int
    batch_size: int
    steps_per_epoch: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 4
    flip: bool = True
    alpha_warmup_steps: int = 0
    compute_dtype: Any = jnp.float32
    selectivity_term: bool = True  # False: plain cross-entropy step (the benchmark's baseline); no SI computed
    batch_sharding: Any = None     # NamedSharding that splits a batch over the 'data' mesh axis (None: no mesh)
    vmap_conv: str = "auto"        # How a group's convolutions run (selectivity_jax/models/vmap_conv.py)


def batch_mesh(spec: StepSpec) -> Any:
    """The data mesh the batch is split over (None without one), for convolutions that split it themselves."""
    return None if spec.batch_sharding is None else spec.batch_sharding.mesh


def step_platform(spec: StepSpec) -> str:
    """The platform the steps are compiled for: that of the data mesh's devices (a TPU topology's on a CPU host, for
    ahead-of-time compilation), else JAX's default backend (an unsharded ``jax.jit``'s)."""
    mesh = batch_mesh(spec)
    return jax.default_backend() if mesh is None else mesh_platform(mesh)


def alpha_in_force(alpha: Array, step: Array, warmup_steps: int) -> Array:
    """alpha, ramped linearly from 0 over the first ``warmup_steps`` steps (no ramp when 0)."""
    if warmup_steps <= 0:
        return alpha
    return alpha * jnp.minimum(1.0, (step + 1) / warmup_steps)


def data_key(state: TrainState) -> Array:
    return jax.random.wrap_key_data(state.rng)


def dropout_key(state: TrainState) -> Array:
    """The ``'dropout'`` PRNG key of step ``state.step`` of one model: stream 2 of the run's key, folded with the step
    and with the bits of the model's float32 alpha.

    A group's models share their seed, hence ``rng``, and differ in alpha, so they draw independent dropout masks;
    a run draws the same masks whatever group it trains in, and when resumed (rng, step and alpha are checkpointed).
    Unused (and compiled away) by a model without dropout.
    """
    alpha_bits = jax.lax.bitcast_convert_type(jnp.asarray(state.alpha, jnp.float32), jnp.uint32)
    key = jax.random.fold_in(jax.random.fold_in(data_key(state), 2), state.step)
    return jax.random.fold_in(key, alpha_bits)


def prepare_batch(spec: StepSpec, state: TrainState, images: Array, labels: Array) -> tuple[Array, Array]:
    """uint8 batch [B, H, W, C] -> augmented, normalized inputs of step ``state.step`` (batch-sharded)."""
    if spec.batch_sharding is not None:  # data parallelism: each device works on its slice of the batch
        images, labels = jax.lax.with_sharding_constraint((images, labels), spec.batch_sharding)
    augment_key = jax.random.fold_in(jax.random.fold_in(data_key(state), 1), state.step)
    images = random_crop_flip(augment_key, images, spec.crop_padding, spec.flip)
    return normalize(images, spec.mean, spec.std, spec.compute_dtype), labels


def sgd_update(spec: StepSpec, schedule: optax.Schedule, state: TrainState, x: Array,
               labels: Array) -> tuple[TrainState, dict[str, Array]]:
    """One step of one model on prepared inputs: loss = CE - alpha * network selectivity, gradient, update.

    A model without BatchNorm (``norm='none'``) has empty ``batch_stats``, kept as they are.
    """
    alpha = alpha_in_force(state.alpha, state.step, spec.alpha_warmup_steps)
    rngs = {"dropout": dropout_key(state)}

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        if spec.selectivity_term:
            logits, acts, new_state = apply_with_activations(
                state.apply_fn, variables, x, train=True, filter=None, mutable=["batch_stats"], rngs=rngs)
            selectivity = selectivity_fn(acts, labels, spec.num_classes)
        else:
            logits, new_state = state.apply_fn(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
            selectivity = jnp.full((), jnp.nan)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()
        loss = ce - alpha * selectivity if spec.selectivity_term else ce
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        return loss, (new_state.get("batch_stats", state.batch_stats), ce, selectivity, accuracy)

    (loss, (batch_stats, ce, selectivity, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = {"loss": loss, "cross_entropy": ce, "selectivity": selectivity, "accuracy": accuracy,
               "alpha": alpha, "learning_rate": jnp.asarray(schedule(state.step), jnp.float32)}
    return new_state, metrics


def first_model(states: TrainState) -> TrainState:
    """Model 0 of a group (states with a leading model axis)."""
    return jax.tree.map(lambda leaf: leaf[0], states)


def _group_update(spec: StepSpec, schedule: optax.Schedule, states: TrainState, images: Array,
                  labels: Array) -> tuple[TrainState, dict[str, Array]]:
    """A step of every model of a group on one uint8 batch.

    A group's models share their seed (so their data order and augmentation, which depend on seed and step only)
    and differ in alpha: the batch is prepared once, and ``jax.vmap`` runs the update of each model, its
    convolutions run by the strategy ``spec.vmap_conv``. A group of one is a single run.
    """
    x, labels = prepare_batch(spec, first_model(states), images, labels)
    with conv_strategy(spec.vmap_conv, batch_mesh(spec)):
        return jax.vmap(functools.partial(sgd_update, spec, schedule), in_axes=(0, None, None))(states, x, labels)


class _DispatchedSteps:
    """``num_steps`` calls of a one-step function as one callable with the scanned steps' signature and output
    (metrics [num_steps, K]); ``_cache_size`` is the one-step function's."""

    def __init__(self, one_step: Callable, num_steps: int):
        self.one_step, self.num_steps = one_step, num_steps

    def __call__(self, states: TrainState, data: TrainArrays, permutation: Array) -> tuple[TrainState, dict]:
        metrics = []
        for _ in range(self.num_steps):
            states, step_metrics = self.one_step(states, data, permutation)
            metrics.append(step_metrics)
        return states, jax.tree.map(lambda *xs: jnp.concatenate(xs), *metrics)

    def _cache_size(self) -> int:
        return self.one_step._cache_size()


def make_train_step(spec: StepSpec, schedule: optax.Schedule, num_steps: int = 1, *, scan: bool | None = None,
                    single_step: Callable | None = None) -> Callable[[TrainState, TrainArrays, Array],
                                                          tuple[TrainState, dict[str, Array]]]:
    """``train_steps(states, data, permutation) -> (states, metrics)``: ``num_steps`` consecutive steps of a group
    for data held on device. States have a leading model axis, metrics the axes [num_steps, K]. Step ``s`` trains on
    batch ``s % steps_per_epoch`` of the epoch order ``permutation`` (see `make_permutation_fn`), so the steps of
    one call must lie in one epoch. The states are donated: their buffers are reused for the result.

    ``scan`` (default: on every platform but CPU, `step_platform`): the steps run in one jitted ``lax.scan``, which
    spares the host a dispatch per step (the ``steps_per_call`` config field). On CPU a step takes far longer than its
    dispatch, and XLA:CPU runs a step inside a loop about 30x slower (and rounds differently), so there the steps are
    dispatched one by one and give the bits of single-step calls. A scanned chain may differ from single steps in the
    last bits; runs stay bitwise reproducible for a fixed ``steps_per_call``, since the loop aligns its calls to the
    epoch (`selectivity_jax.train.loop.steps_in_next_call`). ``single_step``: the spec's one-step function, if
    already built, for the dispatched steps to reuse (no second compilation).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}")
    if scan is None:
        scan = step_platform(spec) != "cpu"
    if num_steps > 1 and not scan:
        return _DispatchedSteps(single_step or make_train_step(spec, schedule), num_steps)

    def one_step(data: TrainArrays, permutation: Array, states: TrainState, _) -> tuple[TrainState, dict]:
        step_in_epoch = states.step[0] % spec.steps_per_epoch
        images, labels = gather_batch(data, permutation, step_in_epoch, spec.batch_size)
        return _group_update(spec, schedule, states, images, labels)

    def train_steps(states: TrainState, data: TrainArrays, permutation: Array) -> tuple[TrainState, dict[str, Array]]:
        if num_steps == 1:
            states, metrics = one_step(data, permutation, states, None)
            return states, jax.tree.map(lambda x: x[None], metrics)
        return jax.lax.scan(functools.partial(one_step, data, permutation), states, length=num_steps)

    return jax.jit(train_steps, donate_argnums=0)


def make_permutation_fn(num_examples: int) -> Callable[[TrainState, Array], Array]:
    """``permutation(states, epoch)`` -> int32 [N], the example order of ``epoch`` for a group (jitted)."""
    return jax.jit(lambda states, epoch: epoch_permutation(
        jax.random.fold_in(data_key(first_model(states)), 0), epoch, num_examples))


def make_evaluate(spec: StepSpec) -> Callable[[TrainState, EvalArrays], tuple[dict, Any]]:
    """``evaluate(states, split) -> (totals, SelectivityStats)`` over a whole split in one jitted scan, for every
    model of a group (results have a leading model axis).

    The statistics cover the layers the model sows (its ``selectivity_layer_names()``).

    totals: ``correct`` and ``cross_entropy`` sums and ``count`` over the real (unmasked) examples; padding rows
    are masked out, so nothing depends on the evaluation batch size.
    """

    def evaluate(state: TrainState, split: EvalArrays) -> tuple[dict[str, Array], SelectivityStats]:
        variables = {"params": state.params, "batch_stats": state.batch_stats}

        def body(carry, batch):
            totals, stats = carry
            images, labels, mask = batch
            x = normalize(images, spec.mean, spec.std, spec.compute_dtype)
            with conv_strategy(spec.vmap_conv, batch_mesh(spec)):
                logits, acts, _ = apply_with_activations(state.apply_fn, variables, x, train=False, filter=None)
            logits = logits.astype(jnp.float32)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            totals = {"correct": totals["correct"] + jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
                      "cross_entropy": totals["cross_entropy"] + jnp.sum(ce * mask),
                      "count": totals["count"] + jnp.sum(mask)}
            return (totals, stats.update(acts, labels, mask)), None

        shapes = jax.eval_shape(lambda: apply_with_activations(
            state.apply_fn, variables, normalize(split.images[0], spec.mean, spec.std, spec.compute_dtype),
            train=False, filter=None)[1])
        empty_stats = SelectivityStats.create(shapes, spec.num_classes)
        zeros = {"correct": jnp.zeros(()), "cross_entropy": jnp.zeros(()), "count": jnp.zeros(())}
        (totals, stats), _ = jax.lax.scan(
            body, (zeros, empty_stats),
            (split.images, split.labels, split.mask))
        return totals, stats

    return jax.jit(jax.vmap(evaluate, in_axes=(0, None)))
