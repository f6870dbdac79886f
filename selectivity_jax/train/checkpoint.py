"""Orbax checkpoints of the train state (``CheckpointManager`` with the ``args`` API), and a group's runs' files:
checkpoints restored at one common step, saved and pruned together, the metrics of an interrupted epoch."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp

from selectivity_jax.faults import fault_point
from selectivity_jax.records import EpochMetrics
from selectivity_jax.resources import doing
from selectivity_jax.rundir import (CHECKPOINT_DIR, METRICS_FILE, PARTIAL_EPOCH_FILE, RESULTS_FILE, TENSORBOARD_DIR,
                                    TIMING_FILE, read_jsonl, write_npz)
from selectivity_jax.train.metrics import MetricsWriter, TensorBoardWriter, TensorBoardX
from selectivity_jax.train.state import TrainState, stack_states, unstack_state


def checkpoint_manager(directory: str, *, create: bool = True) -> ocp.CheckpointManager:
    """A manager over ``directory`` (created if missing and ``create``); it deletes nothing itself: the loop keeps
    what `prune_checkpoints` says."""
    options = ocp.CheckpointManagerOptions(max_to_keep=None, create=create)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def prune_checkpoints(manager: ocp.CheckpointManager, max_to_keep: int, is_regular: Callable[[int], bool]) -> None:
    """Keeps the newest ``max_to_keep`` regular checkpoints (``is_regular(step)``: on the run's checkpoint cadence)
    and the newest checkpoint when it is not regular (saved by a SIGTERM); deletes the others. So a run resumed
    from any checkpoint keeps the same steps as an uninterrupted one."""
    steps = sorted(manager.all_steps())
    regular = [step for step in steps if is_regular(step)]
    keep = set(regular[-max_to_keep:]) | ({steps[-1]} if steps else set())
    for step in steps:
        if step not in keep:
            manager.delete(step)


def save_state(manager: ocp.CheckpointManager, state: Any, *, wait: bool = False) -> None:
    """Saves ``state`` at its step (asynchronously unless ``wait``); a step already saved is skipped."""
    step = int(jax.device_get(state.step))
    if step not in manager.all_steps():
        manager.save(step, args=ocp.args.StandardSave(state), force=True)
    if wait:
        manager.wait_until_finished()


@dataclasses.dataclass(frozen=True)
class Restored:
    """What `restore_newest` found: the state (None when no checkpoint restored) and the checkpoints it skipped,
    as (step, why) newest first."""
    state: Any | None
    skipped: tuple[tuple[int, str], ...] = ()

    @property
    def step(self) -> int | None:
        return None if self.state is None else int(jax.device_get(self.state.step))


def restore_newest(manager: ocp.CheckpointManager, target: Any | None, *, at_most: int | None = None) -> Restored:
    """The newest checkpoint (at a step <= ``at_most`` when given) that restores, with the shapes, dtypes and
    shardings of ``target`` (None: the saved tree as nested dicts, without building a state to restore into); a
    checkpoint that fails to restore (truncated, garbled, half-written) is skipped and the next older one tried."""
    abstract = None if target is None else jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    skipped = []
    for step in sorted(manager.all_steps(), reverse=True):
        if at_most is not None and step > at_most:
            continue
        try:
            return Restored(manager.restore(step, args=ocp.args.StandardRestore(abstract)), tuple(skipped))
        except Exception as error:  # noqa: BLE001 - orbax/tensorstore raise many types for a damaged checkpoint
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            skipped.append((step, reason[:200]))
    return Restored(None, tuple(skipped))


# ----------------------------------------------------------------------------------------------------------------------
# A group's runs: checkpoints restored at one common step, saved and pruned together, and the per-step metrics of an
# epoch a SIGTERM interrupted.
# ----------------------------------------------------------------------------------------------------------------------

class RunFiles:
    """One run's files: work directory, checkpoint manager, metrics and timing writers and, given ``tensorboardx``
    (`metrics.import_tensorboardx`), the TensorBoard writer of the metrics rows (else None)."""

    def __init__(self, workdir: str, tensorboardx: TensorBoardX | None = None):
        self.workdir = workdir
        self.manager = checkpoint_manager(os.path.join(workdir, CHECKPOINT_DIR))
        self.writer = MetricsWriter(os.path.join(workdir, METRICS_FILE))
        self.timing = MetricsWriter(os.path.join(workdir, TIMING_FILE))
        self.tensorboard = (TensorBoardWriter(os.path.join(workdir, TENSORBOARD_DIR), tensorboardx)
                            if tensorboardx is not None else None)
        self.results_path = os.path.join(workdir, RESULTS_FILE)
        self.partial_epoch_path = os.path.join(workdir, PARTIAL_EPOCH_FILE)

    def record_call(self, step: int, kernels: str) -> None:
        """Notes in timing.jsonl whose kernels run the convolutions of the call that starts at ``step``."""
        self.timing.write({"step": step, "convolutions": kernels})

    def kernels_of_all_calls(self, current: str) -> str:
        """Whose kernels ran the run's convolutions: ``current`` when every call (`record_call`) used them, else
        each call's from its first step, e.g. 'onednn from step 0, xla from step 1002' (a resume on other kernels
        computes other float32 roundings than an uninterrupted run)."""
        calls: dict[int, str] = {}
        for row in read_jsonl(self.timing.path):
            if "convolutions" in row:
                calls[int(row["step"])] = str(row["convolutions"])  # of calls starting at one step, the last
        steps = sorted(calls)
        if all(calls[step] == current for step in steps):
            return current
        changes = [step for i, step in enumerate(steps) if i == 0 or calls[step] != calls[steps[i - 1]]]
        return ", ".join(f"{calls[step]} from step {step}" for step in changes)

    def write_row(self, row: EpochMetrics) -> None:
        """Appends an epoch's `EpochMetrics` row to metrics.jsonl and, when on, to the TensorBoard event file."""
        self.writer.write(row)
        if self.tensorboard is not None:
            self.tensorboard.write(row)


@contextlib.contextmanager
def closing_runs(runs: list[RunFiles]) -> Iterator[list[RunFiles]]:
    """Closes the runs' TensorBoard event files when the block ends, however it ends (a SIGTERM's `Preempted`, a
    non-finite loss, an error); on an error, first lets checkpoint writes under way end, so that no thread of
    orbax's writes in the directory once its lock is released (the lock then removes failed writes' files)."""
    try:
        yield runs
    except BaseException:
        for run in runs:
            try:
                run.manager.wait_until_finished()
            except Exception:  # noqa: BLE001 - e.g. the same full disk; the error under way is the one reported
                pass
        raise
    finally:
        for run in runs:
            if run.tensorboard is not None:
                run.tensorboard.close()


def _restore_run(run: RunFiles, target: TrainState, log: Callable[[str], None], at_most: int | None = None):
    restored = restore_newest(run.manager, target, at_most=at_most)
    for step, why in restored.skipped:
        log(f"warning: {run.workdir}: checkpoint {step} does not restore ({why}); deleted, trying an older one")
        run.manager.delete(step)
    return restored


def restore_group(runs: list[RunFiles], states: TrainState, log: Callable[[str], None]) -> TrainState:
    """Newest checkpoints of a group's runs that restore, at one step for all, stacked (the initial ``states`` [K, ...]
    when no run has one). A run whose newest checkpoints are damaged falls back to an older one, and the others to the
    same step; checkpoints and log rows after that step are dropped (replayed and written again)."""
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
        run.writer.truncate_after(step, log)
        run.timing.truncate_after(step, log)
        if run.tensorboard is not None:  # event files cannot be truncated: see `TensorBoardWriter`
            run.tensorboard.resume_from(step)
    if not step:
        return states
    log(f"resuming {len(runs)} run(s) from step {step}")
    return jax.device_put(stack_states([r.state for r in restored]), jax.tree.map(lambda leaf: leaf.sharding, states))


def prune_group(runs: list[RunFiles], max_to_keep: int, is_regular: Callable[[int], bool]) -> None:
    """Waits for the runs' checkpoint writes, then keeps what `prune_checkpoints` says (``is_regular(step)``: on the
    checkpoint cadence, or the last step)."""
    for run in runs:
        with doing("writing a checkpoint", os.path.join(run.workdir, CHECKPOINT_DIR)):
            run.manager.wait_until_finished()
        fault_point("checkpoint_saved")
        if jax.process_index() == 0:
            prune_checkpoints(run.manager, max_to_keep, is_regular)


def save_group(runs: list[RunFiles], states: TrainState, max_to_keep: int, is_regular: Callable[[int], bool],
               wait: bool = False) -> None:
    """Saves each model of ``states`` [K, ...] into its run (asynchronously; ``wait``: finished and pruned)."""
    prune_group(runs, max_to_keep, is_regular)  # the previous save (asynchronous) has long finished by now
    for k, run in enumerate(runs):
        with doing("writing a checkpoint", os.path.join(run.workdir, CHECKPOINT_DIR)):
            save_state(run.manager, unstack_state(states, k))
        fault_point("checkpoint_save")
    if wait:
        prune_group(runs, max_to_keep, is_regular)


def save_partial_epoch(runs: list[RunFiles], step: int, metrics: dict[str, np.ndarray]) -> None:
    """Stores each run's per-step metrics ({name: [steps, K]}) of the unfinished epoch, so that the resumed run's
    row for the epoch averages every step of it, as an uninterrupted run's does."""
    for k, run in enumerate(runs):
        write_npz(run.partial_epoch_path, {"step": np.asarray(step), **{name: np.asarray(value[:, k])
                                                                         for name, value in metrics.items()}})


def load_partial_epoch(runs: list[RunFiles], step: int, steps_done: int,
                        log: Callable[[str], None]) -> list[dict[str, np.ndarray]]:
    """The per-step metrics [steps_done, K] `save_partial_epoch` stored at ``step`` ([] when not all runs have
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


def remove_partial_epoch(runs: list[RunFiles]) -> None:
    for run in runs:
        if os.path.exists(run.partial_epoch_path):
            os.remove(run.partial_epoch_path)
