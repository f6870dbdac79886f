"""Train state and optimizer (the recipe numbers come from the config; see configs/base.py)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from selectivity_jax.models import init_variables


class TrainState(train_state.TrainState):
    """Flax TrainState plus what a selectivity run needs, all pytree leaves (so a sweep can vmap over runs).

    batch_stats: BatchNorm running statistics.
    alpha: float32 [] regularization strength (loss = CE - alpha * network selectivity).
    rng: uint32 [2] raw key; data order and augmentation are pure functions of (rng, step), so resuming from a
      checkpoint replays exactly the same batches.
    """
    batch_stats: Any
    alpha: jax.Array
    rng: jax.Array


def learning_rate_schedule(base_learning_rate: float, total_steps: int, decay_at: tuple[float, ...] = (0.5, 0.75),
                           decay_factor: float = 0.1, warmup_steps: int = 0) -> optax.Schedule:
    """Piecewise-constant schedule: ``base_learning_rate`` x ``decay_factor`` at each fraction of ``total_steps``
    in ``decay_at``, after an optional linear warm-up."""
    boundaries = {int(round(f * total_steps)): decay_factor for f in decay_at}
    schedule = optax.piecewise_constant_schedule(base_learning_rate, boundaries)
    if warmup_steps > 0:
        warmup = optax.linear_schedule(0.0, base_learning_rate, warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [warmup_steps])
    return schedule


def decay_mask(params: Any) -> Any:
    """True for weight matrices and conv kernels, False for BatchNorm scales/offsets and biases (ndim <= 1)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(schedule: optax.Schedule, momentum: float, weight_decay: float,
                   nesterov: bool = False) -> optax.GradientTransformation:
    """SGD with momentum and L2 weight decay (added to the gradient, as in He et al.) on kernels only."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov),
    )


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, *, seed: int | jax.Array, alpha: float,
                       input_shape: tuple[int, ...]) -> TrainState:
    """Initializes parameters, batch statistics and optimizer state for ``seed`` (pure; jit-able)."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    variables = init_variables(model, init_key, input_shape)
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables.get("batch_stats", {}), tx=tx,
                             alpha=jnp.asarray(alpha, jnp.float32), rng=jax.random.key_data(data_key))



def stack_states(states: list[TrainState]) -> TrainState:
    """Single-model states -> one state with a leading model axis (a group; see train/step.py)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def unstack_state(states: TrainState, index: int) -> TrainState:
    """Model ``index`` of a group, as a single-model state (what a run's checkpoint holds)."""
    return jax.tree.map(lambda leaf: leaf[index], states)


def create_group_state(model: nn.Module, tx: optax.GradientTransformation, *, seed: int | jax.Array,
                       alphas: Any, input_shape: tuple[int, ...]) -> TrainState:
    """The initial state of K models that share ``seed`` (hence initialization) and differ in alpha [K]: [K, ...]."""
    alphas = jnp.asarray(alphas, jnp.float32)
    state = create_train_state(model, tx, seed=seed, alpha=0.0, input_shape=input_shape)
    states = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, alphas.shape + jnp.shape(leaf)), state)
    return states.replace(alpha=alphas)
