"""Orbax checkpoints of the train state (``CheckpointManager`` with the ``args`` API)."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def checkpoint_manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """A manager over ``directory`` (created if missing), keeping the newest ``max_to_keep`` steps."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save_state(manager: ocp.CheckpointManager, state: Any, *, wait: bool = False) -> None:
    """Saves ``state`` at its step (asynchronously unless ``wait``); a step already saved is skipped."""
    step = int(jax.device_get(state.step))
    if step not in manager.all_steps():
        manager.save(step, args=ocp.args.StandardSave(state), force=True)
    if wait:
        manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> Any | None:
    """The newest saved state, restored with the shapes, dtypes and shardings of ``target``; None if none."""
    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
