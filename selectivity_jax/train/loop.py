"""The one training loop: a config and work directories in, everything a researcher needs out.

``train_group(config, alphas, workdirs)`` trains K models that share the config and seed and differ in alpha
(Leavitt & Morcos, ICLR 2021, Sec. 2.3: loss = CE - alpha * network selectivity) inside one jitted, vmapped step;
``train_and_evaluate(config, workdir)`` is a group of one, and a sweep (selectivity_jax/sweep.py) is a sequence of
groups. Each run's directory (selectivity_jax/rundir.py) receives ``config.json``, ``metrics.jsonl`` (one line
per epoch), ``timing.jsonl`` (wall-clock seconds), ``results.json`` (final test figures), ``selectivity.npz``
(per-unit test selectivity per layer), orbax checkpoints under ``checkpoints/`` and, with ``config.tensorboard``,
the metrics.jsonl rows as TensorBoard event files under ``tensorboard/``, the same whether it trained alone or in a
group.

Reliability: everything is validated (config, directories, data, batch against devices) before the first file is
written; a process holds a lock on each of its directories; running again on the same directories resumes from the
newest checkpoint that restores and ends with the same files, bit for bit (timing.jsonl and tensorboard/ aside), as an
uninterrupted run; SIGTERM or SIGINT (Ctrl-C) saves a checkpoint (and the epoch's metrics so far) before the process
exits; a non-finite loss stops the run without saving the non-finite state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from selectivity_jax import rundir
from selectivity_jax.data import ArraySplits, check_available, load_splits, nominal_split_sizes
from selectivity_jax.data.on_device import normalization_stats, put_eval_arrays, put_train_arrays
from selectivity_jax.faults import fault_point
from selectivity_jax.models.vmap_conv import cpu_settings
from selectivity_jax.records import EpochMetrics, Normalization, RunResults, versions
from selectivity_jax.parallel import check_batch_size, make_data_mesh, maybe_initialize_distributed
from selectivity_jax.resources import doing
from selectivity_jax.rundir import (SELECTIVITY_FILE, DirectoryLock, check_workdir, prepare_workdir,
                                    write_json, write_npz)
from selectivity_jax.train.checkpoint import (RunFiles, closing_runs, load_partial_epoch, prune_group,
                                              remove_partial_epoch, restore_group, save_group, save_partial_epoch)
from selectivity_jax.train.metrics import Progress, import_tensorboardx, summarize_evals
from selectivity_jax.train.setup import RunSetup, setup_kernels, setup_run, steps_in_next_call
from selectivity_jax.train.state import TrainState
from selectivity_jax.train.stopping import Preempted, StopRequest, StopSignals, check_finite
from selectivity_jax.train.validation import validate_config

# The train-step dispatches of the loop run under this transfer guard: data, states and the epoch order are on the
# devices already, so a step that needed anything from the host would be a bug (raised, not silently slow).
HOT_LOOP_TRANSFER_GUARD = "disallow"


# IN_FLIGHT_NOTE: JAX dispatches asynchronously, so without a wait the loop would queue a whole epoch of calls in a
# fraction of a second and notice a SIGTERM only when they had all run (an epoch: 20 minutes for a VGG16 on a CPU,
# far past a preemption's grace period). After dispatching call n the loop waits for call n - 1, which keeps the
# device busy (call n is queued behind it) and answers a SIGTERM within about two calls.


def run_config(config: ml_collections.ConfigDict, alpha: float) -> ml_collections.ConfigDict:
    """``config`` with ``alpha`` set: what one run of a group stores as its config.json."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.alpha = float(alpha)
    return config


def _concatenated(step_metrics: list[dict[str, Any]]) -> dict[str, jax.Array]:
    """The metrics of an epoch's calls ({name: [steps, K]} each) as one {name: [steps, K]}, on the devices."""
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *step_metrics)


def check_group(config: ml_collections.ConfigDict, alphas: list[float], workdirs: list[str],
                overwrite: bool = False) -> jax.sharding.Mesh:
    """The door of `train_group`: everything about a group that can be checked before a file is written (the
    config, the alphas, the work directories, the data's presence, the batch sizes against the devices and the
    training split), after starting ``jax.distributed`` where the config asks; returns the data mesh. Raises
    ValueError (or an OSError naming what is missing)."""
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
    maybe_initialize_distributed(config.get("distributed", False))
    return checked_mesh(config)


def checked_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """The config's data mesh, with both batch sizes checked against its devices and the training split's nominal
    size (`nominal_split_sizes`: without loading the data)."""
    mesh = make_data_mesh(config.get("num_devices", 0))
    check_batch_size(config.batch_size, mesh, nominal_split_sizes(config.data)[0])
    check_batch_size(config.eval_batch_size, mesh, what="eval_batch_size")
    return mesh


def train_group(config: ml_collections.ConfigDict, alphas: list[float], workdirs: list[str], *,
                overwrite: bool = False, stop_after_steps: int | None = None, splits: ArraySplits | None = None,
                log: Callable[[str], None] = print) -> list[RunResults]:
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
    mesh = check_group(config, alphas, workdirs, overwrite)
    return train_checked_group(config, alphas, workdirs, mesh, overwrite=overwrite,
                               stop_after_steps=stop_after_steps, splits=splits, log=log)


def train_checked_group(config: ml_collections.ConfigDict, alphas: list[float], workdirs: list[str],
                        mesh: jax.sharding.Mesh, *, overwrite: bool = False, stop_after_steps: int | None = None,
                        splits: ArraySplits | None = None,
                        log: Callable[[str], None] = print) -> list[RunResults]:
    """`train_group` for a group that passed `check_group` (or a sweep's door) on ``mesh``: trusts its input."""
    if not overwrite and all(map(rundir.is_finished, workdirs)):
        log(f"already finished: {', '.join(workdirs)}")
        return [rundir.read_run_results(workdir) for workdir in workdirs]
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


@dataclasses.dataclass
class _Group:
    """What the loop carries for a group of runs being trained: its config, alphas and files, its setup and mesh,
    the data (train and validation on the devices), and where to log."""
    config: ml_collections.ConfigDict
    alphas: tuple[float, ...]
    runs: list[RunFiles]
    setup: RunSetup
    mesh: jax.sharding.Mesh
    splits: ArraySplits
    train_data: Any
    val_data: Any
    log: Callable[[str], None]
    writer: bool = dataclasses.field(default_factory=lambda: jax.process_index() == 0)  # one writer on shared storage

    def is_regular_checkpoint(self, step: int) -> bool:
        """On the checkpoint cadence, or the last step: the checkpoints `prune_group` keeps."""
        every = self.config.checkpoint_every_epochs * self.setup.steps_per_epoch
        return step % every == 0 or step == self.setup.total_steps

    def save(self, states: TrainState, wait: bool = False) -> None:
        save_group(self.runs, states, self.config.max_checkpoints_to_keep, self.is_regular_checkpoint, wait=wait)


def _train_locked(config: ml_collections.ConfigDict, alphas: tuple[float, ...], workdirs: list[str], splits: Any,
                  setup: RunSetup, mesh: jax.sharding.Mesh, stop_after_steps: int | None,
                  log: Callable[[str], None]) -> list[RunResults]:
    """`train_group` once its directories are validated, locked and hold the config."""
    event_files = config.get("tensorboard", True) and jax.process_index() == 0  # one writer on shared storage
    tensorboardx = import_tensorboardx(log) if event_files else None
    runs = [RunFiles(workdir, tensorboardx) for workdir in workdirs]
    if all(os.path.exists(run.results_path) for run in runs):
        log(f"already finished: {', '.join(workdirs)}")
        return [rundir.read_run_results(run.workdir) for run in runs]
    states = restore_group(runs, setup.initial_state, log)
    fault_point("restored")
    if jax.process_index() == 0:
        for run in runs:
            run.record_call(int(states.step[0]), setup_kernels(setup))
    val_data = put_eval_arrays(*splits.val, config.eval_batch_size, mesh) if len(splits.val[1]) else None
    group = _Group(config, alphas, runs, setup, mesh, splits, put_train_arrays(*splits.train, mesh), val_data, log)
    log(f"{config.model.name}, alpha {', '.join(f'{a:g}' for a in alphas)}, seed "
        f"{config.seed}: {splits.sizes()} examples, {setup.total_steps} steps ({setup.num_epochs} epochs of "
        f"{setup.steps_per_epoch}), batch {config.batch_size} on {mesh.devices.size} {jax.devices()[0].device_kind} "
        f"device(s){' (data parallel)' if mesh.devices.size > 1 else ''}, {setup.steps_per_call} step(s) per call, "
        f"{setup.spec.vmap_conv} convolutions on {setup_kernels(setup)}; selectivity layers {setup.layer_names}")
    start_time = time.time()
    with StopSignals() as signals, closing_runs(runs), doing("training"):
        states = _train(group, states, StopRequest(signals, stop_after_steps))
    prune_group(runs, config.max_checkpoints_to_keep, group.is_regular_checkpoint)
    if group.writer:
        remove_partial_epoch(runs)  # only now: a resume from a SIGTERM's checkpoint may need it until here
    fault_point("evaluation")
    with doing("evaluating and writing results"):
        return _test_and_record(group, states, start_time)


def _train(group: _Group, states: TrainState, stop: StopRequest) -> TrainState:
    """Epochs from the states' step to the last: train, check finiteness, evaluate, log, checkpoint; raises
    `Preempted` after saving when ``stop`` says so."""
    setup = group.setup
    step = int(states.step[0])
    progress = Progress(setup.num_epochs)
    while step < setup.total_steps:
        epoch = step // setup.steps_per_epoch
        epoch_start_step, epoch_start_time = step, time.time()
        states, step, step_metrics = _train_epoch(group, states, step, stop)
        epoch_metrics = _concatenated(step_metrics)
        per_step = jax.device_get(epoch_metrics)
        check_finite(group.runs, group.alphas, states, per_step, step)
        seconds = time.time() - epoch_start_time
        images_per_second = (step - epoch_start_step) * group.config.batch_size / seconds
        last = step >= setup.total_steps
        val = None
        if group.val_data is not None and ((epoch + 1) % group.config.eval_every_epochs == 0 or last):
            val = summarize_evals(*setup.evaluate(states, group.val_data))
        train = jax.device_get(jax.tree.map(lambda x: jnp.mean(x, axis=0), epoch_metrics))
        rows = [_epoch_row(epoch + 1, step, train, k, float(per_step["learning_rate"][-1, 0]), len(group.runs),
                           None if val is None else val[k]) for k in range(len(group.runs))]
        if group.writer:
            _write_epoch(group, rows, seconds, images_per_second)
            progress.epoch(epoch + 1, rows, images_per_second * len(group.runs))
        stopping = stop.stopping()
        if (epoch + 1) % group.config.checkpoint_every_epochs == 0 or last or stopping:
            group.save(states, wait=stopping)
        if stopping:
            raise Preempted(step, stop.signals.received)
    return states


def _train_epoch(group: _Group, states: TrainState, step: int,
                 stop: StopRequest) -> tuple[TrainState, int, list[dict[str, Any]]]:
    """The rest of the epoch at ``step`` (or until ``stop``): the states after it, its step, and the per-call metrics
    of the whole epoch ([steps, K] each, on the devices; after a SIGTERM mid-epoch, the steps before it come from the
    run directories). A stop mid-epoch saves the epoch's metrics so far and a checkpoint, then raises `Preempted`."""
    setup = group.setup
    epoch = step // setup.steps_per_epoch
    order = setup.permutation(states, epoch)
    epoch_end = min((epoch + 1) * setup.steps_per_epoch, setup.total_steps)
    step_metrics = (load_partial_epoch(group.runs, step, step - epoch * setup.steps_per_epoch, group.log)
                    if step > epoch * setup.steps_per_epoch else [])
    while step < epoch_end:
        steps = steps_in_next_call(step - epoch * setup.steps_per_epoch, stop.steps_allowed(epoch_end - step),
                                   setup.steps_per_call)
        with jax.transfer_guard(HOT_LOOP_TRANSFER_GUARD):
            states, metrics = (setup.train_steps if steps > 1 else setup.train_step)(states, group.train_data, order)
        if step_metrics:  # at most one call in flight (see IN_FLIGHT_NOTE)
            jax.block_until_ready(step_metrics[-1])
        step_metrics.append(metrics)
        step += steps
        fault_point("step")
        stop.steps_this_call += steps
        if stop.stopping() and step < epoch_end:
            per_step = jax.device_get(_concatenated(step_metrics))
            check_finite(group.runs, group.alphas, states, per_step, step)
            if group.writer:
                save_partial_epoch(group.runs, step, per_step)
            fault_point("partial_epoch")
            group.save(states, wait=True)
            raise Preempted(step, stop.signals.received)
        if stop.stopping():  # at the epoch's end: log and evaluate the epoch first, then stop
            break
    return states, step, step_metrics


def _epoch_row(epoch: int, step: int, train: dict[str, np.ndarray], k: int, learning_rate: float, group_size: int,
               val: dict[str, Any] | None) -> EpochMetrics:
    """Model k's metrics.jsonl row of an epoch: the training means, the learning rate, and validation if it ran."""
    validation = {} if val is None else {
        "val_accuracy": val["accuracy"], "val_cross_entropy": val["cross_entropy"],
        "val_selectivity": val["selectivity"], "val_layer_selectivity": val["per_layer_selectivity"],
        "val_dead_unit_fraction": val["dead_unit_fraction"]}
    return EpochMetrics(epoch=epoch, step=step, train_loss=train["loss"][k],
                        train_cross_entropy=train["cross_entropy"][k], train_selectivity=train["selectivity"][k],
                        train_accuracy=train["accuracy"][k], alpha=train["alpha"][k], learning_rate=learning_rate,
                        models_in_group=group_size, **validation)


def _write_epoch(group: _Group, rows: list[EpochMetrics], seconds: float, images_per_second: float) -> None:
    for run, row in zip(group.runs, rows):
        run.write_row(row)
        fault_point("metrics_row")
        run.timing.write({"epoch": row.epoch, "step": row.step, "epoch_seconds": seconds,
                          "images_per_second": images_per_second, "models_in_group": len(group.runs)})


def _test_and_record(group: _Group, states: TrainState, start_time: float) -> list[RunResults]:
    """Evaluates the trained group on the test split (and validation), writes each run's selectivity.npz, timing
    and results.json (last: its presence marks the run finished) and returns the results."""
    setup, config = group.setup, group.config
    test_data = put_eval_arrays(*group.splits.test, config.eval_batch_size, group.mesh)
    test_totals, test_stats = setup.evaluate(states, test_data)
    tests = summarize_evals(test_totals, test_stats)
    vals = summarize_evals(*setup.evaluate(states, group.val_data)) if group.val_data is not None else None
    per_unit = jax.device_get(jax.vmap(lambda model_stats: model_stats.per_unit())(test_stats))
    all_results = []
    for k, (alpha, run) in enumerate(zip(group.alphas, group.runs)):
        results = _run_results(group, alpha, tests[k], None if vals is None else vals[k], run)
        if group.writer:
            write_npz(os.path.join(run.workdir, SELECTIVITY_FILE),
                      {name: np.asarray(per_unit[name][k]) for name in setup.layer_names})
            fault_point("selectivity_written")
            run.timing.write({"step": setup.total_steps, "wall_time_seconds_this_call": time.time() - start_time})
            write_json(run.results_path, results)
        group.log(f"alpha {alpha:g}: test accuracy {results.test_accuracy:.4f}, test selectivity "
                  f"{results.test_selectivity:.4f}; results in {run.results_path}")
        all_results.append(results)
    return all_results


def _run_results(group: _Group, alpha: float, test: dict[str, Any], val: dict[str, Any] | None,
                 run_files: RunFiles) -> RunResults:
    """One run's results.json: the test figures, what ran (model, steps, devices, kernels, versions) and what
    restoring the model needs besides config.json and the checkpoint (`trained.restore_run`)."""
    setup, config, splits = group.setup, group.config, group.splits
    return RunResults(
        alpha=float(alpha), seed=config.seed, model=config.model.name, test_accuracy=test["accuracy"],
        test_selectivity=test["selectivity"], per_layer_selectivity=test["per_layer_selectivity"],
        layer_names=setup.layer_names, test_cross_entropy=test["cross_entropy"], test_examples=test["count"],
        test_dead_unit_fraction=test["dead_unit_fraction"], per_layer_dead_fraction=test["per_layer_dead_fraction"],
        val_accuracy=val and val["accuracy"], val_selectivity=val and val["selectivity"],
        steps=setup.total_steps, epochs=setup.num_epochs, split_sizes=splits.sizes(), models_in_group=len(group.runs),
        device_kind=jax.devices()[0].device_kind, device_count=group.mesh.devices.size,
        process_count=jax.process_count(), vmap_conv=setup.spec.vmap_conv, cpu_tuning=cpu_settings(),
        convolutions=run_files.kernels_of_all_calls(setup_kernels(setup)), versions=versions(), num_classes=splits.num_classes,
        image_shape=list(splits.image_shape), normalization=Normalization(list(setup.spec.mean), list(setup.spec.std)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False,
                       stop_after_steps: int | None = None,
                       log: Callable[[str], None] = print) -> RunResults:
    """Trains one run at ``config.alpha`` into ``workdir`` (a group of one) and returns its results."""
    return train_group(config, [config.alpha], [workdir], overwrite=overwrite, stop_after_steps=stop_after_steps,
                       log=log)[0]
