"""When the training loop stops before its last step: a SIGTERM or SIGINT (Ctrl-C), or a test's step limit
(`StopRequest`), which end in `Preempted` after a checkpoint is saved, and a non-finite loss or parameter (`check_finite`), which ends in
`NonFiniteLoss` with nothing saved."""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from selectivity_jax.rundir import CHECKPOINT_DIR
from selectivity_jax.train.checkpoint import RunFiles
from selectivity_jax.train.state import TrainState


class Preempted(Exception):
    """Raised after a SIGTERM or SIGINT (``signal``; None: ``stop_after_steps``) once the checkpoint of the current
    step is saved."""

    def __init__(self, step: int, signal_number: int | None = None):
        by = f" by {signal.Signals(signal_number).name}" if signal_number else ""
        super().__init__(f"stopped{by} at step {step}; checkpoint saved, run the same command again to resume")
        self.step = step
        self.signal_number = signal_number


class NonFiniteLoss(ValueError):
    """Raised when a training loss is NaN or infinite; the non-finite state is not saved."""


# The signals that stop training with a checkpoint: a scheduler's SIGTERM and Ctrl-C's SIGINT take the same path.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Turns SIGTERM and SIGINT into a flag the loop checks between steps (main thread only; the previous handlers
    are restored on exit). ``received``: the first signal's number, None before any."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for number in STOP_SIGNALS:
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not in the main thread: no handler
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        if self.received is None:
            self.received = signum

    def __exit__(self, *exc):
        for number, previous in self._previous.items():
            signal.signal(number, previous)


@dataclasses.dataclass
class StopRequest:
    """When the loop stops early: a SIGTERM or SIGINT (`StopSignals`), or ``stop_after_steps`` steps of this call
    (tests)."""
    signals: StopSignals
    stop_after_steps: int | None
    steps_this_call: int = 0

    def steps_allowed(self, left: int) -> int:
        return left if self.stop_after_steps is None else min(left, self.stop_after_steps - self.steps_this_call)

    def stopping(self) -> bool:
        return self.signals.received is not None or (self.stop_after_steps is not None
                                       and self.steps_this_call >= self.stop_after_steps)


@jax.jit
def finite_models(params: Any) -> jax.Array:
    """[K] bool: whether every parameter of each model of a group is finite."""
    return jnp.stack([jnp.all(jnp.isfinite(leaf).reshape(leaf.shape[0], -1), axis=1)
                      for leaf in jax.tree.leaves(params)]).all(axis=0)


def check_finite(runs: list[RunFiles], alphas: tuple[float, ...], states: TrainState, per_step: dict[str, np.ndarray],
                  step: int) -> None:
    """Raises `NonFiniteLoss` (nothing saved) when a model's per-step losses or its parameters are not finite;
    ``per_step``: the epoch's metrics so far on the host ({name: [steps, K]}), its last row at ``step``."""
    losses, learning_rates = per_step["loss"], per_step["learning_rate"][:, 0]
    finite_params = np.asarray(jax.device_get(finite_models(states.params)))
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
