"""Fault injection for the reliability tests: kill the process at a named point of a run.

The loop calls ``fault_point(name)`` at the moments a crash could hurt (a file half written, a checkpoint inside
orbax's temporary directory, ...). With the environment variable ``SELECTIVITY_JAX_FAULT=ACTION:POINT:N`` (several
separated by commas) the N-th call of ``POINT`` in the process sends the process SIGKILL (``kill``: nothing runs
after it), SIGTERM (``term``: what a scheduler's preemption sends) or SIGINT (``int``: Ctrl-C). Without the variable a call costs one
dictionary lookup.
"""

from __future__ import annotations

import collections
import os
import signal

FAULT_ENV = "SELECTIVITY_JAX_FAULT"
ACTIONS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}

# The points the loop marks, in the order a run passes them.
POINTS = (
    "start",                # train_group called, nothing checked yet
    "locked",               # the work directories are locked, config.json not yet written
    "config_written",       # config.json written, nothing trained
    "restored",             # checkpoints restored (or none), before the first step
    "step",                 # after each jitted call of training steps
    "metrics_row",          # an epoch's row appended to metrics.jsonl, before its timing row and checkpoint
    "partial_epoch",        # the metrics of an interrupted epoch stored, before its checkpoint
    "checkpoint_save",      # a checkpoint's asynchronous write started (inside orbax's temporary directory)
    "checkpoint_saved",     # a checkpoint written, before older ones are pruned
    "evaluation",           # training done, before the final test evaluation
    "selectivity_written",  # selectivity.npz written, before results.json
)

_counts: collections.Counter = collections.Counter()


def fault_point(name: str) -> None:
    """Sends this process the signal ``SELECTIVITY_JAX_FAULT`` asks for at the N-th call of ``name``."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    _counts[name] += 1
    for fault in spec.split(","):
        action, point, count = fault.split(":")
        if point == name and _counts[name] == int(count):
            os.kill(os.getpid(), ACTIONS[action])
