"""Throughput of the training and evaluation steps, measured on random data of a config's shape.

`time_train_step` times the jitted train step of a group of models (a single run is a group of one) exactly as the
loop calls it (``steps_per_call`` steps per call, data on the devices); `benchmark` compares the step without the
selectivity term (plain cross-entropy) with the step at alpha = 0 and at alpha != 0, so the cost of the term is
their ratio; `benchmark_groups` times vmapped groups of K models for each convolution strategy; `time_epoch` times
one whole epoch. Every figure is taken after a warm-up (compilation excluded, its time reported apart) and after
``block_until_ready``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from selectivity_jax.data import nominal_shape
from selectivity_jax.data.on_device import TrainArrays, put_eval_arrays, put_train_arrays
from selectivity_jax.models.vmap_conv import convolution_kernels, cpu_settings, resolve_strategy
from selectivity_jax.parallel import make_data_mesh, mesh_platform
from selectivity_jax.train.setup import RunSetup, setup_kernels, setup_run, steps_in_next_call, steps_per_call_of


@dataclasses.dataclass(frozen=True)
class StepTiming:
    """The timed train step of a group of ``models`` (1: a single run)."""
    models: int
    compute_dtype: str
    selectivity_term: bool
    vmap_conv: str               # the strategy in force (resolved)
    convolutions: str            # whose kernels ran them (`vmap_conv.convolution_kernels`)
    steps_per_call: int
    images_per_second: float     # all models together
    step_ms: float               # one step of the whole group
    compilations: int            # of the timed step function: 1 means no recompilation between calls
    compile_seconds: float       # first call minus a steady call

    @property
    def images_per_second_per_model(self) -> float:
        return self.images_per_second / self.models


@dataclasses.dataclass(frozen=True)
class EpochTiming:
    """Wall time of one epoch of ``num_train`` images for a group of ``models``, compilation excluded."""
    models: int
    num_train: int
    steps: int
    seconds: float
    images_per_second: float     # all models together


def random_train_data(config: ml_collections.ConfigDict, num_train: int, mesh) -> TrainArrays:
    """Random uint8 images and labels of the config's data shape, on the devices."""
    image_shape, num_classes = nominal_shape(config.data)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num_train,) + image_shape, dtype=np.uint8)
    labels = rng.integers(0, num_classes, num_train).astype(np.int32)
    return put_train_arrays(images, labels, mesh)


def _setup(config: ml_collections.ConfigDict, alphas: Sequence[float], num_train: int, mesh,
           selectivity_term: bool = True) -> RunSetup:
    image_shape, num_classes = nominal_shape(config.data)
    return setup_run(config, num_classes=num_classes, image_shape=image_shape, num_train=num_train,
                     mean=(0.5,) * image_shape[-1], std=(0.25,) * image_shape[-1], mesh=mesh, alphas=tuple(alphas),
                     selectivity_term=selectivity_term)


def _call(fn, state, data, order) -> tuple[Any, float]:
    start = time.perf_counter()
    state, metrics = fn(state, data, order)
    jax.block_until_ready((state, metrics))
    return state, time.perf_counter() - start


def time_train_step(config: ml_collections.ConfigDict, *, alphas: Sequence[float] = (1.0,),
                    selectivity_term: bool = True, warmup_steps: int = 2, timed_steps: int = 5) -> StepTiming:
    """Times the group's train step over at least ``timed_steps`` steps (whole calls of ``steps_per_call`` steps)
    after a warm-up of at least ``warmup_steps``; ``alphas``: one model per alpha."""
    mesh = make_data_mesh(config.get("num_devices", 0))
    steps_per_call = steps_per_call_of(config, mesh_platform(mesh))
    warmup_calls, timed_calls = -(-warmup_steps // steps_per_call), max(1, -(-timed_steps // steps_per_call))
    num_train = config.batch_size * steps_per_call * (warmup_calls + timed_calls + 1)
    run = _setup(config, alphas, num_train, mesh, selectivity_term)
    data = random_train_data(config, num_train, mesh)
    state = run.initial_state
    order = run.permutation(state, 0)
    state, first = _call(run.train_steps, state, data, order)
    steady = first
    for _ in range(warmup_calls):
        state, steady = _call(run.train_steps, state, data, order)
    start = time.perf_counter()
    for _ in range(timed_calls):
        state, metrics = run.train_steps(state, data, order)
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start
    steps = timed_calls * steps_per_call
    return StepTiming(models=len(alphas), compute_dtype=str(config.compute_dtype),
                      selectivity_term=selectivity_term, vmap_conv=run.spec.vmap_conv,
                      convolutions=setup_kernels(run),
                      steps_per_call=steps_per_call,
                      images_per_second=steps * config.batch_size * len(alphas) / seconds,
                      step_ms=1000 * seconds / steps, compilations=run.train_steps._cache_size(),
                      compile_seconds=max(first - steady, 0.0))


def time_epoch(config: ml_collections.ConfigDict, *, models: int = 1, num_train: int = 45_000) -> EpochTiming:
    """One epoch of ``num_train`` random images on the devices for a group of ``models``, called as the loop calls
    it (``steps_per_call`` steps per call, single steps for the rest); a first epoch compiles."""
    mesh = make_data_mesh(config.get("num_devices", 0))
    run = _setup(config, np.linspace(-1.0, 1.0, models) if models > 1 else (0.0,), num_train, mesh)
    data = random_train_data(config, num_train, mesh)

    def epoch(state, index):
        order = run.permutation(state, index)
        step = 0
        while step < run.steps_per_epoch:
            steps = steps_in_next_call(step, run.steps_per_epoch - step, run.steps_per_call)
            state, metrics = (run.train_steps if steps > 1 else run.train_step)(state, data, order)
            step += steps
        jax.block_until_ready((state, metrics))
        return state

    state = epoch(run.initial_state, 0)
    start = time.perf_counter()
    epoch(state, 1)
    seconds = time.perf_counter() - start
    return EpochTiming(models=models, num_train=num_train, steps=run.steps_per_epoch, seconds=seconds,
                       images_per_second=run.steps_per_epoch * config.batch_size * models / seconds)


def benchmark(config: ml_collections.ConfigDict, *, alpha: float = 1.0, warmup_steps: int = 3,
              timed_steps: int = 20, eval_examples: int = 2000) -> dict[str, Any]:
    """Images/s of the train step without the selectivity term, at alpha = 0 and at ``alpha``, and of evaluation
    (a flat dict, as ``experiments.benchmark --output`` writes it)."""
    mesh = make_data_mesh(config.get("num_devices", 0))
    platform = mesh_platform(mesh)
    steps_per_call = steps_per_call_of(config, platform)
    strategy = resolve_strategy(config.get("vmap_conv", "auto"), platform)
    results: dict[str, Any] = {"model": config.model.name, "batch_size": config.batch_size,
                               "compute_dtype": config.compute_dtype, "device_kind": jax.devices()[0].device_kind,
                               "platform": platform, "cpu_tuning": cpu_settings(),
                               "convolutions": convolution_kernels(strategy, platform, config.compute_dtype),
                               "device_count": mesh.devices.size, "steps_per_call": steps_per_call}
    variants = {"no_selectivity_term": (0.0, False), "alpha_0": (0.0, True), f"alpha_{alpha:g}": (alpha, True)}
    for name, (run_alpha, selectivity_term) in variants.items():
        timing = time_train_step(config, alphas=(run_alpha,), selectivity_term=selectivity_term,
                                 warmup_steps=warmup_steps, timed_steps=timed_steps)
        results[f"train_images_per_second/{name}"] = timing.images_per_second
        results[f"train_step_ms/{name}"] = timing.step_ms
        results[f"train_step_compiles/{name}"] = timing.compilations
    results["timed_steps"] = max(1, -(-timed_steps // steps_per_call)) * steps_per_call
    baseline = results["train_step_ms/no_selectivity_term"]
    results["selectivity_term_overhead"] = results[f"train_step_ms/alpha_{alpha:g}"] / baseline - 1.0
    results["eval_images_per_second"] = time_evaluation(config, eval_examples)
    return results


def time_evaluation(config: ml_collections.ConfigDict, num_examples: int = 2000) -> float:
    """Images/s of the evaluation pass (accuracy and selectivity statistics) of one model."""
    mesh = make_data_mesh(config.get("num_devices", 0))
    run = _setup(config, (0.0,), config.batch_size, mesh)
    image_shape, num_classes = nominal_shape(config.data)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (num_examples,) + image_shape, dtype=np.uint8)
    labels = rng.integers(0, num_classes, num_examples).astype(np.int32)
    eval_data = put_eval_arrays(images, labels, config.eval_batch_size, mesh)
    jax.block_until_ready(run.evaluate(run.initial_state, eval_data))
    start = time.perf_counter()
    jax.block_until_ready(run.evaluate(run.initial_state, eval_data))
    return num_examples / (time.perf_counter() - start)


def benchmark_groups(config: ml_collections.ConfigDict, group_sizes: Sequence[int] = (1, 2, 4, 8, 16),
                     strategies: Sequence[str] | None = None, *, warmup_steps: int = 2,
                     timed_steps: int = 5) -> dict[str, dict[int, StepTiming]]:
    """The train step of K models (alphas spread over [-1, 1]) in one vmapped step, for each K of ``group_sizes``
    and each convolution strategy (default: ``config.vmap_conv`` alone): {strategy: {K: StepTiming}}."""
    results: dict[str, dict[int, StepTiming]] = {}
    for strategy in strategies or (config.get("vmap_conv", "auto"),):
        strategy_config = ml_collections.ConfigDict(config.to_dict())
        strategy_config.vmap_conv = strategy
        results[resolve_strategy(strategy, mesh_platform(make_data_mesh(config.get("num_devices", 0))))] = {
            size: time_train_step(strategy_config, alphas=tuple(np.linspace(-1.0, 1.0, size)) if size > 1 else (0.0,),
                                  warmup_steps=warmup_steps, timed_steps=timed_steps)
            for size in group_sizes}
    return results


def fastest_strategy(groups: dict[str, dict[int, StepTiming]], size: int) -> str:
    """The strategy with the highest total throughput for groups of ``size``."""
    return max(groups, key=lambda strategy: groups[strategy][size].images_per_second)

