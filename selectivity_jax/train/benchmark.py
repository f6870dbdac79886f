"""Throughput of the training and evaluation steps, measured on random data of a config's shape.

Measures three training steps that differ only in the loss: plain cross-entropy (no selectivity term), and
cross-entropy minus alpha x selectivity at alpha = 0 and at alpha != 0, so the cost of the selectivity term is the
ratio of the first to the others. Data sit on the devices as in training; every figure is timed after a warm-up
(compilation excluded) and after `block_until_ready`.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np

from selectivity_jax.data.on_device import put_eval_arrays, put_train_arrays
from selectivity_jax.parallel import make_data_mesh
from selectivity_jax.train.loop import setup_run

# Input shape and classes by data set name, for benchmarks that need no data on disk.
DATA_SHAPES = {"cifar10": ((32, 32, 3), 10), "synthetic": ((32, 32, 3), 10), "image_folder": ((32, 32, 3), 10),
               "tiny_imagenet": ((64, 64, 3), 200)}


def _time_steps(train_step, state, data, order, steps: int) -> tuple[Any, float]:
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = train_step(state, data, order)
    jax.block_until_ready((state, metrics))
    return state, time.perf_counter() - start


def _random_train_arrays(config: ml_collections.ConfigDict, mesh, num_train: int):
    image_shape, num_classes = DATA_SHAPES[config.data.name]
    num_classes = config.data.get("num_classes", num_classes) or num_classes
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num_train,) + image_shape, dtype=np.uint8)
    labels = rng.integers(0, num_classes, num_train).astype(np.int32)
    return images, labels, image_shape, num_classes


def benchmark_groups(config: ml_collections.ConfigDict, group_sizes: tuple[int, ...] = (1, 2, 4, 8, 16), *,
                     warmup_steps: int = 3, timed_steps: int = 20) -> dict[int, dict[str, float]]:
    """Images/s per model and in total when K models (different alphas) train in one vmapped step."""
    mesh = make_data_mesh(config.get("num_devices", 0))
    num_train = config.batch_size * (warmup_steps + timed_steps)
    images, labels, image_shape, num_classes = _random_train_arrays(config, mesh, num_train)
    data = put_train_arrays(images, labels, mesh)
    mean, std = (0.5,) * image_shape[-1], (0.25,) * image_shape[-1]
    results = {}
    for size in group_sizes:
        alphas = tuple(np.linspace(-1.0, 1.0, size)) if size > 1 else (0.0,)
        run = setup_run(config, num_classes=num_classes, image_shape=image_shape, num_train=num_train, mean=mean,
                        std=std, mesh=mesh, alphas=alphas)
        order = run.permutation(run.initial_state, 0)
        state, _ = _time_steps(run.train_step, run.initial_state, data, order, warmup_steps)
        _, seconds = _time_steps(run.train_step, state, data, order, timed_steps)
        per_model = timed_steps * config.batch_size / seconds
        results[size] = {"images_per_second_per_model": per_model, "images_per_second_total": per_model * size,
                         "step_ms": 1000 * seconds / timed_steps, "compilations": run.train_step._cache_size()}
    return results


def benchmark(config: ml_collections.ConfigDict, *, alpha: float = 1.0, warmup_steps: int = 3,
              timed_steps: int = 20, eval_examples: int = 2000) -> dict[str, Any]:
    """Images/s of the train step without the selectivity term, at alpha = 0 and at ``alpha``, and of evaluation."""
    mesh = make_data_mesh(config.get("num_devices", 0))
    num_train = config.batch_size * (warmup_steps + timed_steps)
    images, labels, image_shape, num_classes = _random_train_arrays(config, mesh, num_train)
    data = put_train_arrays(images, labels, mesh)
    mean, std = (0.5,) * image_shape[-1], (0.25,) * image_shape[-1]
    results: dict[str, Any] = {"model": config.model.name, "batch_size": config.batch_size,
                               "compute_dtype": config.compute_dtype, "device_kind": jax.devices()[0].device_kind,
                               "device_count": mesh.devices.size, "timed_steps": timed_steps}
    runs = {"no_selectivity_term": (0.0, False), "alpha_0": (0.0, True), f"alpha_{alpha:g}": (alpha, True)}
    for name, (run_alpha, selectivity_term) in runs.items():
        run_config = ml_collections.ConfigDict(config.to_dict())
        run_config.alpha = run_alpha
        run = setup_run(run_config, num_classes=num_classes, image_shape=image_shape, num_train=num_train,
                        mean=mean, std=std, mesh=mesh, selectivity_term=selectivity_term)
        order = run.permutation(run.initial_state, 0)
        state, _ = _time_steps(run.train_step, run.initial_state, data, order, warmup_steps)
        state, seconds = _time_steps(run.train_step, state, data, order, timed_steps)
        results[f"train_images_per_second/{name}"] = timed_steps * config.batch_size / seconds
        results[f"train_step_ms/{name}"] = 1000 * seconds / timed_steps
        results[f"train_step_compiles/{name}"] = run.train_step._cache_size()
    baseline = results["train_step_ms/no_selectivity_term"]
    results["selectivity_term_overhead"] = results[f"train_step_ms/alpha_{alpha:g}"] / baseline - 1.0
    eval_data = put_eval_arrays(images[:eval_examples], labels[:eval_examples], config.eval_batch_size, mesh)
    jax.block_until_ready(run.evaluate(state, eval_data))
    start = time.perf_counter()
    jax.block_until_ready(run.evaluate(state, eval_data))
    results["eval_images_per_second"] = eval_data.labels.size / (time.perf_counter() - start)
    return results
