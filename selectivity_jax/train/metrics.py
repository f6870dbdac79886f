"""Run outputs as plain files: JSON lines of metrics, JSON results, and human-readable progress lines."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping, TextIO

import numpy as np


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
    """Prints one line per epoch: epoch, loss, accuracy, selectivity, images/s and the time left."""

    def __init__(self, total_epochs: int, stream: TextIO = sys.stdout):
        self.total_epochs = total_epochs
        self.stream = stream
        self.start = time.time()
        self.epochs_done = 0

    def epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        self.epochs_done += 1
        per_epoch = (time.time() - self.start) / self.epochs_done
        eta = per_epoch * (self.total_epochs - epoch)
        parts = [f"epoch {epoch}/{self.total_epochs}", f"loss {row['train_loss']:.4f}",
                 f"train acc {row['train_accuracy']:.3f}", f"sel {row['train_selectivity']:.3f}"]
        if "val_accuracy" in row:
            parts += [f"val acc {row['val_accuracy']:.3f}", f"val sel {row['val_selectivity']:.3f}"]
        parts += [f"{row['images_per_second']:.0f} img/s", f"ETA {format_duration(eta)}"]
        print(" | ".join(parts), file=self.stream, flush=True)
