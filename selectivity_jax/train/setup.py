"""What a group of runs derives from its config before training: model, learning-rate schedule, optimizer, the
jitted train, permutation and evaluation functions (built once per recipe and reused), and the initial states.

Everything platform-specific (steps per call, the convolution strategy, whose kernels run the convolutions) follows
the platform of the mesh the steps are compiled for (`selectivity_jax.parallel.mesh_platform`), which may be a TPU
topology's on a CPU host (`selectivity_jax.bench.compile_check`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from selectivity_jax.models import get_model, model_options
from selectivity_jax.models.vmap_conv import convolution_kernels, resolve_strategy
from selectivity_jax.parallel import batch_sharded, mesh_platform, replicated
from selectivity_jax.train.state import TrainState, create_group_state, learning_rate_schedule, make_optimizer
from selectivity_jax.train.step import StepSpec, batch_mesh, make_evaluate, make_permutation_fn, make_train_step


def default_steps_per_call(platform: str) -> int:
    """Training steps per jitted call on ``platform`` when ``config.steps_per_call`` is 0: 1 on CPU, where a step takes
    far longer than its dispatch; 16 on GPU and TPU, where a small model's step is short enough for per-call host
    overhead to matter."""
    return 1 if platform == "cpu" else 16


def steps_per_call_of(config: ml_collections.ConfigDict, platform: str) -> int:
    """``config.steps_per_call``, or ``platform``'s default when it is 0 (or absent)."""
    steps = int(config.get("steps_per_call", 0))
    if steps < 0:
        raise ValueError(f"steps_per_call must be >= 0 (0: the platform's default); got {steps}")
    return steps or default_steps_per_call(platform)


def steps_in_next_call(step_in_epoch: int, steps_left: int, steps_per_call: int) -> int:
    """How many steps the next jitted call runs, at ``step_in_epoch`` with ``steps_left`` before the loop must stop
    (epoch end, preemption): ``steps_per_call`` from each multiple of it in the epoch while that many remain, single
    steps otherwise. Two compiled step functions serve every run, and a run resumed from any checkpoint the loop
    saved calls the same chunks as an uninterrupted one."""
    if step_in_epoch % steps_per_call == 0 and steps_left >= steps_per_call:
        return steps_per_call
    return 1


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """Everything a group of runs derives from its config: model, schedule, jitted steps and initial states."""
    model: Any
    layer_names: list[str]
    spec: StepSpec
    schedule: Callable
    steps_per_epoch: int
    total_steps: int
    num_epochs: int
    initial_state: TrainState  # [K, ...]: one model per alpha
    train_step: Callable   # one step per call: train_step(states, data, order) -> (states, metrics [1, K])
    train_steps: Callable  # steps_per_call steps per call (the same function when steps_per_call == 1)
    steps_per_call: int
    permutation: Callable
    evaluate: Callable


def setup_run(config: ml_collections.ConfigDict, *, num_classes: int, image_shape: tuple[int, ...], num_train: int,
              mean: Any, std: Any, mesh: jax.sharding.Mesh, alphas: tuple[float, ...] | None = None,
              selectivity_term: bool = True, initialize: bool = True) -> RunSetup:
    """Builds the model, learning-rate schedule, optimizer, jitted steps and the replicated initial states of a
    group of runs at ``alphas`` (default: ``(config.alpha,)``, a single run); ``initialize=False``: the states' shapes
    only (`jax.ShapeDtypeStruct`s, with their shardings), enough to compile and measure the steps. Everything
    platform-specific follows ``mesh``'s devices (`mesh_platform`), which may be a TPU topology's on a CPU host."""
    platform = mesh_platform(mesh)
    steps_per_call = steps_per_call_of(config, platform)
    vmap_conv = resolve_strategy(config.get("vmap_conv", "auto"), platform)
    steps_per_epoch = num_train // config.batch_size
    total_steps = config.num_train_steps or int(round(config.num_epochs * steps_per_epoch))
    if total_steps <= 0:
        raise ValueError(f"the run has no training steps: num_epochs={config.num_epochs:g} of {steps_per_epoch} "
                         f"steps per epoch rounds to 0 steps; set num_epochs > {0.5 / max(steps_per_epoch, 1):.3g} "
                         "or num_train_steps >= 1")
    alphas = tuple(float(a) for a in (alphas if alphas is not None else (config.alpha,)))
    model_kwargs = model_options(config.model)
    learning_rate = config.learning_rate * config.batch_size / config.lr_base_batch_size
    schedule_args = (learning_rate, total_steps, tuple(config.lr_decay_at), config.lr_decay_factor,
                     int(config.lr_warmup_epochs * steps_per_epoch))
    optimizer_args = (config.momentum, config.weight_decay, config.get("nesterov", False))
    spec = StepSpec(num_classes=num_classes, batch_size=config.batch_size, steps_per_epoch=steps_per_epoch,
                    mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                    crop_padding=config.augment.crop_padding, flip=config.augment.flip,
                    alpha_warmup_steps=int(config.alpha_warmup_epochs * steps_per_epoch),
                    compute_dtype=jnp.dtype(config.compute_dtype), selectivity_term=selectivity_term,
                    batch_sharding=batch_sharded(mesh), vmap_conv=vmap_conv)
    parts = _compiled_parts(config.model.name, tuple(sorted(model_kwargs.items())), spec, schedule_args,
                            optimizer_args, (1,) + tuple(image_shape), replicated(mesh), num_train, steps_per_call)
    init_args = (jnp.asarray(config.seed, jnp.uint32), jnp.asarray(alphas, jnp.float32))
    states = parts.init(*init_args) if initialize else jax.eval_shape(parts.init, *init_args)
    return RunSetup(model=parts.model, layer_names=parts.model.selectivity_layer_names(), spec=spec,
                    schedule=parts.schedule, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                    num_epochs=math.ceil(total_steps / steps_per_epoch), initial_state=states,
                    train_step=parts.train_step, train_steps=parts.train_steps, steps_per_call=steps_per_call,
                    permutation=parts.permutation, evaluate=parts.evaluate)


def setup_kernels(setup: RunSetup) -> str:
    """Whose kernels run the convolutions of ``setup``'s steps (`vmap_conv.convolution_kernels`)."""
    return convolution_kernels(setup.spec.vmap_conv, mesh_platform(batch_mesh(setup.spec)), setup.spec.compute_dtype)


class _Parts(NamedTuple):
    model: Any
    schedule: Callable
    init: Callable
    train_step: Callable
    train_steps: Callable
    permutation: Callable
    evaluate: Callable


@functools.lru_cache(maxsize=8)
def _compiled_parts(model_name: str, model_kwargs: tuple, spec: StepSpec, schedule_args: tuple,
                    optimizer_args: tuple, input_shape: tuple[int, ...], state_sharding: Any,
                    num_train: int, steps_per_call: int) -> _Parts:
    """Model, optimizer and jitted functions for one recipe, built once: the runs of a serial sweep (or a resumed
    run) that differ only in alpha and seed reuse the compiled steps instead of compiling them again."""
    model = get_model(model_name, num_classes=spec.num_classes, dtype=spec.compute_dtype, **dict(model_kwargs))
    schedule = learning_rate_schedule(*schedule_args)
    tx = make_optimizer(schedule, *optimizer_args)
    init = jax.jit(lambda seed, alphas: create_group_state(model, tx, seed=seed, alphas=alphas,
                                                           input_shape=input_shape),
                   out_shardings=state_sharding)
    train_step = make_train_step(spec, schedule)
    train_steps = (make_train_step(spec, schedule, steps_per_call, single_step=train_step) if steps_per_call > 1
                   else train_step)
    return _Parts(model=model, schedule=schedule, init=init, train_step=train_step, train_steps=train_steps,
                  permutation=make_permutation_fn(num_train), evaluate=make_evaluate(spec))
