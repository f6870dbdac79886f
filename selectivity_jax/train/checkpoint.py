"""Orbax checkpoints of the train state (``CheckpointManager`` with the ``args`` API)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp


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
