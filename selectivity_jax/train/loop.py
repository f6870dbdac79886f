"""The one training loop: a config and work directories in, everything a researcher needs out.

``train_group(config, alphas, workdirs)`` trains K models that share the config and seed and differ in alpha
(Leavitt & Morcos, ICLR 2021, Sec. 2.3: loss = CE - alpha * network selectivity) inside one jitted, vmapped step;
``train_and_evaluate(config, workdir)`` is a group of one, and a sweep (selectivity_jax/sweep.py) is a sequence of
groups. Each run's directory receives ``config.json``, ``metrics.jsonl`` (one line per epoch), ``results.json``
(final test figures), ``selectivity.npz`` (per-unit test selectivity per layer) and orbax checkpoints under
``checkpoints/``, the same whether it trained alone or in a group. Running again on the same directories resumes
from the newest checkpoints and ends with the same results as an uninterrupted run; SIGTERM saves checkpoints
before the process exits.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import shutil
import signal
import time
from importlib import metadata
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from selectivity_jax.data import load_splits
from selectivity_jax.data.on_device import normalization_stats, put_eval_arrays, put_train_arrays
from selectivity_jax.models import get_model
from selectivity_jax.models.vmap_conv import resolve_strategy
from selectivity_jax.parallel import (batch_sharded, check_batch_size, make_data_mesh, maybe_initialize_distributed,
                                      replicated)
from selectivity_jax.train.checkpoint import checkpoint_manager, restore_latest, save_state
from selectivity_jax.train.metrics import (CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, RESULTS_FILE, SELECTIVITY_FILE,
                                           MetricsWriter, Progress, write_json)
from selectivity_jax.train.state import (TrainState, create_group_state, learning_rate_schedule, make_optimizer,
                                         stack_states, unstack_state)
from selectivity_jax.train.step import (StepSpec, make_batch_train_step, make_evaluate, make_permutation_fn,
                                        make_train_step)

# Config fields (dotted paths) that do not change what a run computes, so a resumed run may differ in them, e.g.
# after the data moved to another directory, or when it resumes on another platform (steps_per_call and vmap_conv
# change how the steps run, at most float32 rounding of what they compute).
NON_RESULT_FIELDS = ("sweep", "checkpoint_every_epochs", "max_checkpoints_to_keep", "distributed", "data.data_dir",
                     "data.cache_dir", "data.download", "data.corrupted_dir", "steps_per_call", "vmap_conv")

# The train-step dispatches of the loop run under this transfer guard: data, states and the epoch order are on the
# devices already, so a step that needed anything from the host would be a bug (raised, not silently slow).
HOT_LOOP_TRANSFER_GUARD = "disallow"


def default_steps_per_call(backend: str | None = None) -> int:
    """Training steps per jitted call when ``config.steps_per_call`` is 0: 1 on CPU, where a step takes far longer
    than its dispatch; 16 on GPU and TPU, where a small model's step is short enough for per-call host overhead
    to matter."""
    return 1 if (backend or jax.default_backend()) == "cpu" else 16


def steps_per_call_of(config: ml_collections.ConfigDict) -> int:
    """``config.steps_per_call``, or the platform's default when it is 0 (or absent)."""
    steps = int(config.get("steps_per_call", 0))
    if steps < 0:
        raise ValueError(f"steps_per_call must be >= 0 (0: the platform's default); got {steps}")
    return steps or default_steps_per_call()


def steps_in_next_call(step_in_epoch: int, steps_left: int, steps_per_call: int) -> int:
    """How many steps the next jitted call runs, at ``step_in_epoch`` with ``steps_left`` before the loop must stop
    (epoch end, preemption): ``steps_per_call`` from each multiple of it in the epoch while that many remain, single
    steps otherwise. Two compiled step functions serve every run, and a run resumed from any checkpoint the loop
    saved calls the same chunks as an uninterrupted one."""
    if step_in_epoch % steps_per_call == 0 and steps_left >= steps_per_call:
        return steps_per_call
    return 1


class Preempted(Exception):
    """Raised after a SIGTERM (or ``stop_after_steps``) once the checkpoint of the current step is saved."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}; checkpoint saved, run the same command again to resume")
        self.step = step


def _comparable(config: dict) -> dict[str, Any]:
    """The config flattened to {dotted path: value}, without `NON_RESULT_FIELDS`."""
    flat: dict[str, Any] = {}

    def visit(node: dict, prefix: str) -> None:
        for key, value in node.items():
            path = prefix + key
            if path in NON_RESULT_FIELDS:
                continue
            if isinstance(value, dict):
                visit(value, path + ".")
            else:
                flat[path] = value
    visit(config, "")
    return flat


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, overwrite: bool = False) -> None:
    """Creates ``workdir`` and stores the config; refuses a directory that holds a different config."""
    config_json = json.loads(config.to_json_best_effort(sort_keys=True))
    path = os.path.join(workdir, CONFIG_FILE)
    if overwrite and os.path.isdir(workdir):
        shutil.rmtree(workdir)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        stored, current = _comparable(stored), _comparable(config_json)
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))  # absent = None
        if changed:
            raise ValueError(f"{workdir} holds a run with a different config (fields {changed} differ); "
                             f"use another --workdir, or --overwrite to start it afresh")
    os.makedirs(workdir, exist_ok=True)
    write_json(path, config_json)


def summarize_evals(totals: dict, stats) -> list[dict[str, Any]]:
    """Host-side figures of one `make_evaluate` pass, one dict per model of the group."""
    totals = jax.device_get(totals)
    per_layer = jax.device_get(jax.vmap(lambda model_stats: model_stats.per_layer())(stats))
    dead = jax.device_get(jax.vmap(lambda model_stats: model_stats.dead_fraction())(stats))
    summaries = []
    for k in range(len(totals["count"])):
        count = float(totals["count"][k])
        layers = {name: float(value[k]) for name, value in per_layer.items()}
        dead_k = {name: float(value[k]) for name, value in dead.items()}
        summaries.append({"accuracy": float(totals["correct"][k]) / count,
                          "cross_entropy": float(totals["cross_entropy"][k]) / count,
                          "selectivity": float(np.mean(list(layers.values()))), "per_layer_selectivity": layers,
                          "dead_unit_fraction": float(np.mean(list(dead_k.values()))),
                          "per_layer_dead_fraction": dead_k, "count": int(count)})
    return summaries


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tensorflow-datasets"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop checks between steps (main thread only; restored on exit)."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not in the main thread: no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


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
    batch_train_step: Callable
    permutation: Callable
    evaluate: Callable


def setup_run(config: ml_collections.ConfigDict, *, num_classes: int, image_shape: tuple[int, ...], num_train: int,
              mean: Any, std: Any, mesh: jax.sharding.Mesh, alphas: tuple[float, ...] | None = None,
              selectivity_term: bool = True) -> RunSetup:
    """Builds the model, learning-rate schedule, optimizer, jitted steps and the replicated initial states of a
    group of runs at ``alphas`` (default: ``(config.alpha,)``, a single run)."""
    steps_per_call = steps_per_call_of(config)
    vmap_conv = config.get("vmap_conv", "auto")
    resolve_strategy(vmap_conv)  # refuses an unknown name
    check_batch_size(config.batch_size, mesh, num_train)
    check_batch_size(config.eval_batch_size, mesh, what="eval_batch_size")
    steps_per_epoch = num_train // config.batch_size
    total_steps = config.num_train_steps or int(round(config.num_epochs * steps_per_epoch))
    if total_steps <= 0:
        raise ValueError("the run has no training steps: set num_train_steps or num_epochs > 0")
    alphas = tuple(float(a) for a in (alphas if alphas is not None else (config.alpha,)))
    model_kwargs = {k: tuple(v) if isinstance(v, list) else v
                    for k, v in config.model.to_dict().items() if k != "name" and v is not None}
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
    states = parts.init(jnp.asarray(config.seed, jnp.uint32), jnp.asarray(alphas, jnp.float32))
    return RunSetup(model=parts.model, layer_names=parts.model.selectivity_layer_names(), spec=spec,
                    schedule=parts.schedule, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                    num_epochs=math.ceil(total_steps / steps_per_epoch), initial_state=states,
                    train_step=parts.train_step, train_steps=parts.train_steps, steps_per_call=steps_per_call,
                    batch_train_step=parts.batch_train_step, permutation=parts.permutation, evaluate=parts.evaluate)


class _Parts(NamedTuple):
    model: Any
    schedule: Callable
    init: Callable
    train_step: Callable
    train_steps: Callable
    batch_train_step: Callable
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
                  batch_train_step=make_batch_train_step(spec, schedule),
                  permutation=make_permutation_fn(num_train), evaluate=make_evaluate(spec))


def run_config(config: ml_collections.ConfigDict, alpha: float) -> ml_collections.ConfigDict:
    """``config`` with ``alpha`` set: what one run of a group stores as its config.json."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.alpha = float(alpha)
    return config


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


class _Run:
    """One run's files: work directory, checkpoint manager and metrics writer."""

    def __init__(self, workdir: str, max_to_keep: int):
        self.workdir = workdir
        self.manager = checkpoint_manager(os.path.join(workdir, CHECKPOINT_DIR), max_to_keep)
        self.writer = MetricsWriter(os.path.join(workdir, METRICS_FILE))
        self.results_path = os.path.join(workdir, RESULTS_FILE)


def _restore_group(runs: list[_Run], states: TrainState, log: Callable[[str], None]) -> TrainState:
    """Newest checkpoints of a group's runs, stacked; all runs must stand at the same step (or none saved)."""
    restored = [restore_latest(run.manager, unstack_state(states, k)) for k, run in enumerate(runs)]
    steps = {None if state is None else int(state.step) for state in restored}
    if steps == {None}:
        for run in runs:
            if os.path.exists(run.writer.path):
                os.remove(run.writer.path)
        return states
    if len(steps) > 1:
        raise ValueError(f"runs {[run.workdir for run in runs]} stand at different steps {sorted(map(str, steps))}; "
                         f"train them in separate groups")
    step = steps.pop()
    for run in runs:
        run.writer.truncate_after(step)
    log(f"resuming {len(runs)} run(s) from step {step}")
    return jax.device_put(stack_states(restored), jax.tree.map(lambda leaf: leaf.sharding, states))


def _save_group(runs: list[_Run], states: TrainState, wait: bool = False) -> None:
    for k, run in enumerate(runs):
        save_state(run.manager, unstack_state(states, k))
    if wait:
        for run in runs:
            run.manager.wait_until_finished()


def train_group(config: ml_collections.ConfigDict, alphas: list[float], workdirs: list[str], *,
                overwrite: bool = False, stop_after_steps: int | None = None,
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Trains K runs (one per alpha, all with ``config``'s other fields) together and returns their results.

    Args:
      config: see configs/base.py; ``config.alpha`` is replaced by each run's alpha.
      alphas, workdirs: one per run; an existing directory with the same config is resumed.
      overwrite: delete the directories first.
      stop_after_steps: simulate a preemption after this many steps in this call (tests): save and raise
        `Preempted`, as a SIGTERM does.
    """
    if len(alphas) != len(workdirs) or not alphas:
        raise ValueError(f"need one work directory per alpha; got {len(alphas)} alphas, {len(workdirs)} directories")
    maybe_initialize_distributed(config.get("distributed", False))
    for alpha, workdir in zip(alphas, workdirs):
        prepare_workdir(workdir, run_config(config, alpha), overwrite)
    runs = [_Run(workdir, config.max_checkpoints_to_keep) for workdir in workdirs]
    if all(os.path.exists(run.results_path) for run in runs):
        log(f"already finished: {', '.join(workdirs)}")
        return [_read_json(run.results_path) for run in runs]

    mesh = make_data_mesh(config.get("num_devices", 0))
    splits = load_splits(config.data, seed=config.seed)
    train_images, train_labels = splits.train
    mean, std = normalization_stats(config.data, train_images)
    setup = setup_run(config, num_classes=splits.num_classes, image_shape=splits.image_shape,
                      num_train=len(train_labels), mean=mean, std=std, mesh=mesh, alphas=tuple(alphas))
    total_steps, steps_per_epoch, num_epochs = setup.total_steps, setup.steps_per_epoch, setup.num_epochs
    states = _restore_group(runs, setup.initial_state, log)
    step = int(states.step[0])

    train_data = put_train_arrays(train_images, train_labels, mesh)
    val_data = put_eval_arrays(*splits.val, config.eval_batch_size, mesh) if len(splits.val[1]) else None
    log(f"{config.model.name}, alpha {', '.join(f'{a:g}' for a in alphas)}, seed "
        f"{config.seed}: {splits.sizes()} examples, {total_steps} steps ({num_epochs} epochs of {steps_per_epoch}), "
        f"batch {config.batch_size} on {mesh.devices.size} {jax.devices()[0].device_kind} device(s)"
        f"{' (data parallel)' if mesh.devices.size > 1 else ''}, {setup.steps_per_call} step(s) per call, "
        f"{resolve_strategy(setup.spec.vmap_conv)} "
        f"convolutions; "
        f"selectivity layers {setup.layer_names}")

    progress = Progress(num_epochs)
    start_time = time.time()
    steps_this_call = 0
    with _SigtermFlag() as sigterm:
        while step < total_steps:
            epoch = step // steps_per_epoch
            order = setup.permutation(states, epoch)
            epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
            epoch_start_step, epoch_start_time = step, time.time()
            step_metrics = []  # per call: metrics [steps, K], kept on the devices until the epoch ends
            stopping = False
            while step < epoch_end:
                left = epoch_end - step
                if stop_after_steps is not None:
                    left = min(left, stop_after_steps - steps_this_call)
                steps = steps_in_next_call(step - epoch * steps_per_epoch, left, setup.steps_per_call)
                with jax.transfer_guard(HOT_LOOP_TRANSFER_GUARD):
                    states, metrics = (setup.train_steps if steps > 1 else setup.train_step)(states, train_data, order)
                step_metrics.append(metrics)
                step += steps
                steps_this_call += steps
                stopping = sigterm.raised or (stop_after_steps is not None and steps_this_call >= stop_after_steps)
                if stopping and step < epoch_end:
                    _save_group(runs, states, wait=True)
                    raise Preempted(step)
                if stopping:  # at the epoch's end: log and evaluate the epoch first, then stop below
                    break
            train = jax.device_get(jax.tree.map(lambda *xs: jnp.mean(jnp.concatenate(xs), axis=0), *step_metrics))
            learning_rate = float(jax.device_get(step_metrics[-1]["learning_rate"])[-1, 0])
            seconds = time.time() - epoch_start_time
            images_per_second = (step - epoch_start_step) * config.batch_size / seconds
            last = step >= total_steps
            val = None
            if val_data is not None and ((epoch + 1) % config.eval_every_epochs == 0 or last):
                val = summarize_evals(*setup.evaluate(states, val_data))
            rows = []
            for k, run in enumerate(runs):
                row = {"epoch": epoch + 1, "step": step, "train_loss": train["loss"][k],
                       "train_cross_entropy": train["cross_entropy"][k], "train_selectivity": train["selectivity"][k],
                       "train_accuracy": train["accuracy"][k], "alpha": train["alpha"][k],
                       "learning_rate": learning_rate, "images_per_second": images_per_second,
                       "models_in_group": len(runs), "epoch_seconds": seconds}
                if val is not None:
                    row.update({"val_accuracy": val[k]["accuracy"], "val_cross_entropy": val[k]["cross_entropy"],
                                "val_selectivity": val[k]["selectivity"],
                                "val_dead_unit_fraction": val[k]["dead_unit_fraction"]})
                if jax.process_index() == 0:  # one writer on shared storage
                    run.writer.write(row)
                rows.append(row)
            if jax.process_index() == 0:
                progress.epoch(epoch + 1, rows)
            if (epoch + 1) % config.checkpoint_every_epochs == 0 or last or stopping:
                _save_group(runs, states, wait=stopping)
            if stopping:
                raise Preempted(step)
    for run in runs:
        run.manager.wait_until_finished()

    test_data = put_eval_arrays(*splits.test, config.eval_batch_size, mesh)
    test_totals, test_stats = setup.evaluate(states, test_data)
    tests = summarize_evals(test_totals, test_stats)
    vals = summarize_evals(*setup.evaluate(states, val_data)) if val_data is not None else None
    per_unit = jax.device_get(jax.vmap(lambda model_stats: model_stats.per_unit())(test_stats))
    all_results = []
    for k, (alpha, run) in enumerate(zip(alphas, runs)):
        test = tests[k]
        results = {
            "test_accuracy": test["accuracy"], "test_cross_entropy": test["cross_entropy"],
            "test_selectivity": test["selectivity"], "per_layer_selectivity": test["per_layer_selectivity"],
            "test_dead_unit_fraction": test["dead_unit_fraction"],
            "per_layer_dead_fraction": test["per_layer_dead_fraction"], "test_examples": test["count"],
            "layer_names": setup.layer_names, "alpha": float(alpha), "seed": config.seed,
            "model": config.model.name, "steps": total_steps, "epochs": num_epochs, "split_sizes": splits.sizes(),
            "models_in_group": len(runs), "wall_time_seconds_this_call": time.time() - start_time,
            "device_kind": jax.devices()[0].device_kind, "device_count": mesh.devices.size,
            "vmap_conv": resolve_strategy(setup.spec.vmap_conv),
            "process_count": jax.process_count(), "versions": _library_versions(),
        }
        if vals is not None:
            results.update({"val_accuracy": vals[k]["accuracy"], "val_selectivity": vals[k]["selectivity"]})
        if jax.process_index() == 0:
            np.savez(os.path.join(run.workdir, SELECTIVITY_FILE),
                     **{name: np.asarray(per_unit[name][k]) for name in setup.layer_names})
            write_json(run.results_path, results)
        log(f"alpha {alpha:g}: test accuracy {results['test_accuracy']:.4f}, test selectivity "
            f"{results['test_selectivity']:.4f}; results in {run.results_path}")
        all_results.append(results)
    return all_results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False,
                       stop_after_steps: int | None = None,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains one run at ``config.alpha`` into ``workdir`` (a group of one) and returns its results."""
    return train_group(config, [config.alpha], [workdir], overwrite=overwrite, stop_after_steps=stop_after_steps,
                       log=log)[0]
