"""Run outputs as plain files: JSON lines of metrics, JSON results, and human-readable progress lines."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping, Sequence, TextIO

import numpy as np

# The files of a run directory (written by selectivity_jax/train/loop.py) and of a sweep directory.
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
SELECTIVITY_FILE = "selectivity.npz"
CHECKPOINT_DIR = "checkpoints"
SWEEP_FILE = "sweep.json"


def run_dirname(alpha: float, seed: int) -> str:
    """The directory of one run inside a sweep directory, e.g. ``alpha_-1_seed_0`` or ``alpha_0.5_seed_3``."""
    return f"alpha_{alpha:g}_seed_{seed}"


def to_jsonable(value: Any) -> Any:
    """numpy/jax scalars and arrays -> Python numbers and lists (NaN/inf stay floats)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        value = np.asarray(value)
        return value.item() if value.ndim == 0 else value.tolist()
    return value


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Writes ``payload`` atomically (temp file + rename), so a killed run never leaves half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(to_jsonable(payload), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsWriter:
    """Appends one JSON object per line to ``path`` (readable with ``pandas.read_json(path, lines=True)``)."""

    def __init__(self, path: str):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drops lines logged after ``step`` (a resumed run replays those steps and logs them again)."""
        kept = [row for row in read_jsonl(self.path) if row.get("step", 0) <= step]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(row, sort_keys=True) + "\n" for row in kept)

    def write(self, row: Mapping[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(to_jsonable(row), sort_keys=True) + "\n")
            f.flush()


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Prints one line per epoch: epoch, loss, accuracy, selectivity, images/s and the time left (for a group of
    runs, the range over its models)."""

    def __init__(self, total_epochs: int, stream: TextIO = sys.stdout):
        self.total_epochs = total_epochs
        self.stream = stream
        self.start = time.time()
        self.epochs_done = 0

    def epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        self.epochs_done += 1
        per_epoch = (time.time() - self.start) / self.epochs_done
        eta = per_epoch * (self.total_epochs - epoch)

        def field(key: str, spec: str) -> str:
            values = [row[key] for row in rows]
            low, high = min(values), max(values)
            return format(low, spec) if low == high else f"{format(low, spec)}..{format(high, spec)}"

        parts = [f"epoch {epoch}/{self.total_epochs}"]
        if len(rows) > 1:
            parts.append(f"{len(rows)} models")
        parts += [f"loss {field('train_loss', '.4f')}", f"train acc {field('train_accuracy', '.3f')}",
                  f"sel {field('train_selectivity', '.3f')}"]
        if "val_accuracy" in rows[0]:
            parts += [f"val acc {field('val_accuracy', '.3f')}", f"val sel {field('val_selectivity', '.3f')}"]
        images_per_second = rows[0]["images_per_second"] * len(rows)
        parts += [f"{images_per_second:.0f} img/s", f"ETA {format_duration(eta)}"]
        print(" | ".join(parts), file=self.stream, flush=True)
