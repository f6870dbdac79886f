"""The one training loop: a config and work directories in, everything a researcher needs out.

``train_group(config, alphas, workdirs)`` trains K models that share the config and seed and differ in alpha
(Leavitt & Morcos, ICLR 2021, Sec. 2.3: loss = CE - alpha * network selectivity) inside one jitted, vmapped step;
``train_and_evaluate(config, workdir)`` is a group of one, and a sweep (selectivity_jax/sweep.py) is a sequence of
groups. Each run's directory (selectivity_jax/rundir.py) receives ``config.json``, ``metrics.jsonl`` (one line
per epoch), ``timing.jsonl`` (wall-clock seconds), ``results.json`` (final test figures), ``selectivity.npz``
(per-unit test selectivity per layer) and orbax checkpoints under ``checkpoints/``, the same whether it trained
alone or in a group.

Reliability: everything is validated (config, directories, data, batch against devices) before the first file is
written; a process holds a lock on each of its directories; running again on the same directories resumes from the
newest checkpoint that restores and ends with the same files, bit for bit (timing.jsonl aside), as an uninterrupted
run; SIGTERM saves a checkpoint (and the epoch's metrics so far) before the process exits; a non-finite loss stops
the run without saving the non-finite state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import signal
import time
from importlib import metadata
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from selectivity_jax import rundir
from selectivity_jax.data import ArraySplits, check_available, load_splits
from selectivity_jax.data.on_device import normalization_stats, put_eval_arrays, put_train_arrays
from selectivity_jax.faults import fault_point
from selectivity_jax.models import get_model, model_options
from selectivity_jax.models.vmap_conv import convolution_kernels, cpu_settings, resolve_strategy
from selectivity_jax.parallel import (batch_sharded, check_batch_size, make_data_mesh, maybe_initialize_distributed,
                                      mesh_platform, replicated)
from selectivity_jax.rundir import (CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, PARTIAL_EPOCH_FILE, RESULTS_FILE,
                                    SELECTIVITY_FILE, TIMING_FILE, DirectoryLock, write_json, write_npz)
from selectivity_jax.train.checkpoint import checkpoint_manager, prune_checkpoints, restore_newest, save_state
from selectivity_jax.train.metrics import MetricsWriter, Progress
from selectivity_jax.train.state import (TrainState, create_group_state, learning_rate_schedule, make_optimizer,
                                         stack_states, unstack_state)
from selectivity_jax.train.step import StepSpec, batch_mesh, make_evaluate, make_permutation_fn, make_train_step
from selectivity_jax.train.validation import validate_config

# Config fields (dotted paths) that do not change what a run computes, so a resumed run may differ in them, e.g.
# after the data moved to another directory, or when it resumes on another platform (steps_per_call, vmap_conv and
# cpu_tuning change how the steps run, at most float32 rounding of what they compute).
NON_RESULT_FIELDS = ("sweep", "checkpoint_every_epochs", "max_checkpoints_to_keep", "distributed", "data.data_dir",
                     "data.cache_dir", "data.download", "data.corrupted_dir", "steps_per_call", "vmap_conv",
                     "cpu_tuning")

# Fields added after runs were first stored, with the value that a stored config without them was trained with: a
# run directory written before the field existed resumes when the field is at this value.
ADDED_FIELDS = {"model.norm": "batch", "model.dropout": 0.0}

# The train-step dispatches of the loop run under this transfer guard: data, states and the epoch order are on the
# devices already, so a step that needed anything from the host would be a bug (raised, not silently slow).
HOT_LOOP_TRANSFER_GUARD = "disallow"


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


class Preempted(Exception):
    """Raised after a SIGTERM (or ``stop_after_steps``) once the checkpoint of the current step is saved."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}; checkpoint saved, run the same command again to resume")
        self.step = step


class NonFiniteLoss(ValueError):
    """Raised when a training loss is NaN or infinite; the non-finite state is not saved."""


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
    return {**ADDED_FIELDS, **flat}


def check_workdir(workdir: str, config: ml_collections.ConfigDict, overwrite: bool = False) -> None:
    """Raises ValueError, writing nothing, unless ``workdir`` can take the run of ``config``: new or empty, a run
    of the same config (resumed), or, with ``overwrite``, a run or sweep directory of this project."""
    rundir.check_writable_dir(workdir)
    if overwrite:
        rundir.check_overwritable(workdir)
        return
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.isfile(path):
        stored = rundir.read_json(path)
        if not isinstance(stored, dict):
            raise ValueError(f"{path} is not a run config")
        stored, current = _comparable(stored), _comparable(json.loads(config.to_json_best_effort(sort_keys=True)))
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))  # absent = None
        if changed:
            raise ValueError(f"{workdir} holds a run with a different config (fields {changed} differ); "
                             f"use another --workdir, or --overwrite to start it afresh")
    elif os.path.isdir(workdir) and rundir.foreign_run_entries(workdir):
        raise ValueError(f"{workdir} is not empty and holds no run of this project (no {CONFIG_FILE}); "
                         "use a new or empty directory")


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, overwrite: bool = False) -> None:
    """Checks ``workdir`` (`check_workdir`), then, with ``overwrite``, deletes the project's files there, and stores
    the config. The caller holds the directory's lock."""
    check_workdir(workdir, config, overwrite)
    if overwrite:
        rundir.clear_project_dir(workdir)
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json_best_effort(sort_keys=True)))


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


# IN_FLIGHT_NOTE: JAX dispatches asynchronously, so without a wait the loop would queue a whole epoch of calls in a
# fraction of a second and notice a SIGTERM only when they had all run (an epoch: 20 minutes for a VGG16 on a CPU,
# far past a preemption's grace period). After dispatching call n the loop waits for call n - 1, which keeps the
# device busy (call n is queued behind it) and answers a SIGTERM within about two calls.


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
    check_batch_size(config.batch_size, mesh, num_train)
    check_batch_size(config.eval_batch_size, mesh, what="eval_batch_size")
    steps_per_epoch = num_train // config.batch_size
    total_steps = config.num_train_steps or int(round(config.num_epochs * steps_per_epoch))
    if total_steps <= 0:
        raise ValueError("the run has no training steps: set num_train_steps or num_epochs > 0")
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


def run_config(config: ml_collections.ConfigDict, alpha: float) -> ml_collections.ConfigDict:
    """``config`` with ``alpha`` set: what one run of a group stores as its config.json."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.alpha = float(alpha)
    return config


class _Run:
    """One run's files: work directory, checkpoint manager and metrics and timing writers."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.manager = checkpoint_manager(os.path.join(workdir, CHECKPOINT_DIR))
        self.writer = MetricsWriter(os.path.join(workdir, METRICS_FILE))
        self.timing = MetricsWriter(os.path.join(workdir, TIMING_FILE))
        self.results_path = os.path.join(workdir, RESULTS_FILE)
        self.partial_epoch_path = os.path.join(workdir, PARTIAL_EPOCH_FILE)


def _restore_run(run: _Run, target: TrainState, log: Callable[[str], None], at_most: int | None = None):
    restored = restore_newest(run.manager, target, at_most=at_most)
    for step, why in restored.skipped:
        log(f"warning: {run.workdir}: checkpoint {step} does not restore ({why}); deleted, trying an older one")
        run.manager.delete(step)
    return restored


def _restore_group(runs: list[_Run], states: TrainState, log: Callable[[str], None]) -> TrainState:
    """Newest checkpoints of a group's runs that restore, at one step for all, stacked (the initial states when no
    run has one). A run whose newest checkpoints are damaged falls back to an older one, and the others to the same
    step."""
    targets = [unstack_state(states, k) for k in range(len(runs))]
    restored = [_restore_run(run, target, log) for run, target in zip(runs, targets)]
    step = min(r.step or 0 for r in restored)
    if any((r.step or 0) != step for r in restored) and step:
        restored = [r if r.step == step else _restore_run(run, target, log, at_most=step)
                    for r, run, target in zip(restored, runs, targets)]
        if any(r.step != step for r in restored):
            raise ValueError(f"runs {[run.workdir for run in runs]} have no checkpoint at one common step; "
                             "train them in separate groups")
    for run in runs:
        for newer in [s for s in run.manager.all_steps() if s > step]:
            run.manager.delete(newer)  # newer than the step resumed from: replayed and saved again
        run.writer.truncate_after(step)
        run.timing.truncate_after(step)
    if not step:
        return states
    log(f"resuming {len(runs)} run(s) from step {step}")
    return jax.device_put(stack_states([r.state for r in restored]), jax.tree.map(lambda leaf: leaf.sharding, states))


def _prune_group(runs: list[_Run], config: ml_collections.ConfigDict, setup: RunSetup) -> None:
    """Waits for the runs' checkpoint writes, then keeps what `prune_checkpoints` says: the newest
    ``max_checkpoints_to_keep`` on the cadence of ``checkpoint_every_epochs`` (and at the last step), and the newest
    one when a SIGTERM saved it off the cadence."""
    every = config.checkpoint_every_epochs * setup.steps_per_epoch
    for run in runs:
        run.manager.wait_until_finished()
        fault_point("checkpoint_saved")
        if jax.process_index() == 0:
            prune_checkpoints(run.manager, config.max_checkpoints_to_keep,
                              lambda step: step % every == 0 or step == setup.total_steps)


def _save_group(runs: list[_Run], states: TrainState, config: ml_collections.ConfigDict, setup: RunSetup,
                wait: bool = False) -> None:
    _prune_group(runs, config, setup)  # the previous save (asynchronous) has long finished by now
    for k, run in enumerate(runs):
        save_state(run.manager, unstack_state(states, k))
        fault_point("checkpoint_save")
    if wait:
        _prune_group(runs, config, setup)


def _concatenated(step_metrics: list[dict[str, Any]]) -> dict[str, jax.Array]:
    """The metrics of an epoch's calls ({name: [steps, K]} each) as one {name: [steps, K]}, on the devices."""
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *step_metrics)


@jax.jit
def _finite_models(params: Any) -> jax.Array:
    """[K] bool: whether every parameter of each model of a group is finite."""
    return jnp.stack([jnp.all(jnp.isfinite(leaf).reshape(leaf.shape[0], -1), axis=1)
                      for leaf in jax.tree.leaves(params)]).all(axis=0)


def _check_finite(runs: list[_Run], alphas: tuple[float, ...], states: TrainState, per_step: dict[str, np.ndarray],
                  step: int) -> None:
    """Raises `NonFiniteLoss` (nothing saved) when a model's per-step losses or its parameters are not finite;
    ``per_step``: the epoch's metrics so far on the host ({name: [steps, K]}), its last row at ``step``."""
    losses, learning_rates = per_step["loss"], per_step["learning_rate"][:, 0]
    finite_params = np.asarray(jax.device_get(_finite_models(states.params)))
    for k, run in enumerate(runs):
        bad = np.flatnonzero(~np.isfinite(losses[:, k]))
        if not len(bad) and finite_params[k]:
            continue
        index = int(bad[0]) if len(bad) else len(losses) - 1
        first_step = step - len(losses)
        saved = list(run.manager.all_steps())
        last = f"checkpoint {max(saved)} in {os.path.join(run.workdir, CHECKPOINT_DIR)}" if saved else "none"
        raise NonFiniteLoss(
            f"{run.workdir}: the loss became non-finite at step {first_step + index + 1} (alpha {alphas[k]:g}, "
            f"learning rate {float(learning_rates[index]):g}); the state was not saved, last finite checkpoint: "
            f"{last}. Lower learning_rate or |alpha| (or add lr_warmup_epochs / alpha_warmup_epochs) and start "
            "afresh with --overwrite")


def _save_partial_epoch(runs: list[_Run], step: int, metrics: dict[str, np.ndarray]) -> None:
    """Stores each run's per-step metrics ({name: [steps, K]}) of the unfinished epoch, so that the resumed run's
    row for the epoch averages every step of it, as an uninterrupted run's does."""
    for k, run in enumerate(runs):
        write_npz(run.partial_epoch_path, {"step": np.asarray(step), **{name: np.asarray(value[:, k])
                                                                         for name, value in metrics.items()}})


def _load_partial_epoch(runs: list[_Run], step: int, steps_done: int,
                        log: Callable[[str], None]) -> list[dict[str, np.ndarray]]:
    """The per-step metrics [steps_done, K] `_save_partial_epoch` stored at ``step`` ([] when not all runs have
    them: the epoch's row then averages the steps after the resume only, with a warning)."""
    parts = []
    for run in runs:
        try:
            with np.load(run.partial_epoch_path) as stored:
                part = {name: stored[name] for name in stored.files}
        except (OSError, ValueError):
            part = None
        if part is None or int(part.pop("step")) != step or any(len(v) != steps_done for v in part.values()):
            log(f"warning: {run.workdir}: no metrics of the steps before {step} in this epoch; its metrics.jsonl "
                "row averages the steps after the resume only")
            return []
        parts.append(part)
    return [{name: np.stack([part[name] for part in parts], axis=1) for name in parts[0]}]


def _remove_partial_epoch(runs: list[_Run]) -> None:
    for run in runs:
        if os.path.exists(run.partial_epoch_path):
            os.remove(run.partial_epoch_path)


def check_group(config: ml_collections.ConfigDict, alphas: list[float], workdirs: list[str],
                overwrite: bool = False) -> None:
    """Everything about a group that can be checked before a file is written: the config, the alphas, the work
    directories, the batch against the devices and the data's presence; raises ValueError (or an OSError naming
    what is missing)."""
    if len(alphas) != len(workdirs) or not alphas:
        raise ValueError(f"need one work directory per alpha; got {len(alphas)} alphas, {len(workdirs)} directories")
    validate_config(config)
    if not all(isinstance(a, (int, float)) and math.isfinite(a) for a in alphas):
        raise ValueError(f"alphas must be finite numbers; got {list(alphas)}")
    if len({os.path.realpath(w) for w in workdirs}) != len(workdirs):
        raise ValueError(f"the work directories of a group must differ; got {workdirs}")
    for alpha, workdir in zip(alphas, workdirs):
        check_workdir(workdir, run_config(config, alpha), overwrite)
    check_available(config.data)


def train_group(config: ml_collections.ConfigDict, alphas: list[float], workdirs: list[str], *,
                overwrite: bool = False, stop_after_steps: int | None = None, splits: ArraySplits | None = None,
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Trains K runs (one per alpha, all with ``config``'s other fields) together and returns their results.

    Args:
      config: see configs/base.py; ``config.alpha`` is replaced by each run's alpha.
      alphas, workdirs: one per run; an existing directory with the same config is resumed.
      overwrite: delete the project's files in the directories first (refused for other directories).
      stop_after_steps: simulate a preemption after this many steps in this call (tests): save and raise
        `Preempted`, as a SIGTERM does.
      splits: the data, when the caller has loaded it already (``load_splits(config.data, config.seed)``).
    """
    fault_point("start")
    check_group(config, alphas, workdirs, overwrite)
    maybe_initialize_distributed(config.get("distributed", False))
    if not overwrite and all(map(rundir.is_finished, workdirs)):
        log(f"already finished: {', '.join(workdirs)}")
        return [rundir.read_run_results(workdir) for workdir in workdirs]

    mesh = make_data_mesh(config.get("num_devices", 0))
    check_batch_size(config.batch_size, mesh)
    check_batch_size(config.eval_batch_size, mesh, what="eval_batch_size")
    splits = splits or load_splits(config.data, seed=config.seed)
    train_images, train_labels = splits.train
    mean, std = normalization_stats(config.data, train_images)
    if len(mean) != train_images.shape[-1]:
        raise ValueError(f"data.mean has {len(mean)} channels; the images have {train_images.shape[-1]}")
    setup = setup_run(config, num_classes=splits.num_classes, image_shape=splits.image_shape,
                      num_train=len(train_labels), mean=mean, std=std, mesh=mesh, alphas=tuple(alphas))
    with contextlib.ExitStack() as locks:
        if jax.process_index() == 0:  # one holder on shared storage
            for workdir in workdirs:
                locks.enter_context(DirectoryLock(workdir, log))
            fault_point("locked")
            for alpha, workdir in zip(alphas, workdirs):
                prepare_workdir(workdir, run_config(config, alpha), overwrite)
            fault_point("config_written")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("selectivity_jax: work directories ready")
        return _train_locked(config, tuple(float(a) for a in alphas), workdirs, splits, setup, mesh,
                             stop_after_steps, log)


def _train_locked(config: ml_collections.ConfigDict, alphas: tuple[float, ...], workdirs: list[str], splits: Any,
                  setup: RunSetup, mesh: jax.sharding.Mesh, stop_after_steps: int | None,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    """`train_group` once its directories are validated, locked and hold the config."""
    runs = [_Run(workdir) for workdir in workdirs]
    if all(os.path.exists(run.results_path) for run in runs):
        log(f"already finished: {', '.join(workdirs)}")
        return [rundir.read_json(run.results_path) for run in runs]
    total_steps, steps_per_epoch, num_epochs = setup.total_steps, setup.steps_per_epoch, setup.num_epochs
    states = _restore_group(runs, setup.initial_state, log)
    step = int(states.step[0])
    fault_point("restored")
    writer = jax.process_index() == 0  # one writer on shared storage

    train_data = put_train_arrays(*splits.train, mesh)
    val_data = put_eval_arrays(*splits.val, config.eval_batch_size, mesh) if len(splits.val[1]) else None
    log(f"{config.model.name}, alpha {', '.join(f'{a:g}' for a in alphas)}, seed "
        f"{config.seed}: {splits.sizes()} examples, {total_steps} steps ({num_epochs} epochs of {steps_per_epoch}), "
        f"batch {config.batch_size} on {mesh.devices.size} {jax.devices()[0].device_kind} device(s)"
        f"{' (data parallel)' if mesh.devices.size > 1 else ''}, {setup.steps_per_call} step(s) per call, "
        f"{setup.spec.vmap_conv} convolutions on {setup_kernels(setup)}; "
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
            # per call: metrics [steps, K], kept on the devices until the epoch ends (after a SIGTERM mid-epoch,
            # the steps before it come from the run directories)
            step_metrics = (_load_partial_epoch(runs, step, step - epoch * steps_per_epoch, log)
                            if step > epoch * steps_per_epoch else [])
            stopping = False
            while step < epoch_end:
                left = epoch_end - step
                if stop_after_steps is not None:
                    left = min(left, stop_after_steps - steps_this_call)
                steps = steps_in_next_call(step - epoch * steps_per_epoch, left, setup.steps_per_call)
                with jax.transfer_guard(HOT_LOOP_TRANSFER_GUARD):
                    states, metrics = (setup.train_steps if steps > 1 else setup.train_step)(states, train_data, order)
                if step_metrics:  # at most one call in flight (see IN_FLIGHT_NOTE)
                    jax.block_until_ready(step_metrics[-1])
                step_metrics.append(metrics)
                step += steps
                fault_point("step")
                steps_this_call += steps
                stopping = sigterm.raised or (stop_after_steps is not None and steps_this_call >= stop_after_steps)
                if stopping and step < epoch_end:
                    per_step = jax.device_get(_concatenated(step_metrics))
                    _check_finite(runs, alphas, states, per_step, step)
                    if writer:
                        _save_partial_epoch(runs, step, per_step)
                    fault_point("partial_epoch")
                    _save_group(runs, states, config, setup, wait=True)
                    raise Preempted(step)
                if stopping:  # at the epoch's end: log and evaluate the epoch first, then stop below
                    break
            epoch_metrics = _concatenated(step_metrics)
            per_step = jax.device_get(epoch_metrics)
            _check_finite(runs, alphas, states, per_step, step)
            train = jax.device_get(jax.tree.map(lambda x: jnp.mean(x, axis=0), epoch_metrics))
            learning_rate = float(per_step["learning_rate"][-1, 0])
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
                       "learning_rate": learning_rate, "models_in_group": len(runs)}
                if val is not None:
                    row.update({"val_accuracy": val[k]["accuracy"], "val_cross_entropy": val[k]["cross_entropy"],
                                "val_selectivity": val[k]["selectivity"],
                                "val_layer_selectivity": val[k]["per_layer_selectivity"],
                                "val_dead_unit_fraction": val[k]["dead_unit_fraction"]})
                if writer:
                    run.writer.write(row)
                    fault_point("metrics_row")
                    run.timing.write({"epoch": epoch + 1, "step": step, "epoch_seconds": seconds,
                                      "images_per_second": images_per_second, "models_in_group": len(runs)})
                rows.append(row)
            if writer:
                progress.epoch(epoch + 1, rows, images_per_second * len(runs))
            if (epoch + 1) % config.checkpoint_every_epochs == 0 or last or stopping:
                _save_group(runs, states, config, setup, wait=stopping)
            if stopping:
                raise Preempted(step)
    _prune_group(runs, config, setup)
    if writer:
        _remove_partial_epoch(runs)  # only now: a resume from a SIGTERM's checkpoint may need it until here
    fault_point("evaluation")

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
            "models_in_group": len(runs), "device_kind": jax.devices()[0].device_kind,
            "device_count": mesh.devices.size, "vmap_conv": setup.spec.vmap_conv,
            "cpu_tuning": cpu_settings(), "convolutions": setup_kernels(setup),
            "process_count": jax.process_count(), "versions": _library_versions(),
            # what restoring the model needs besides config.json and the checkpoint (`trained.restore_run`)
            "num_classes": splits.num_classes, "image_shape": list(splits.image_shape),
            "normalization": {"mean": list(setup.spec.mean), "std": list(setup.spec.std)},
        }
        if vals is not None:
            results.update({"val_accuracy": vals[k]["accuracy"], "val_selectivity": vals[k]["selectivity"]})
        if writer:
            write_npz(os.path.join(run.workdir, SELECTIVITY_FILE),
                      {name: np.asarray(per_unit[name][k]) for name in setup.layer_names})
            fault_point("selectivity_written")
            run.timing.write({"step": total_steps, "wall_time_seconds_this_call": time.time() - start_time})
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
