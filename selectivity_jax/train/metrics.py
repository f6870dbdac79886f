"""Run outputs as plain files: JSON lines of metrics, human-readable progress lines, and the host-side figures of an
evaluation pass."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping, Sequence, TextIO

import jax
import numpy as np

from selectivity_jax.records import EpochMetrics, to_jsonable


def json_line(row: Mapping[str, Any]) -> str:
    """One strict-JSON line (keys sorted) for a .jsonl file."""
    return json.dumps(to_jsonable(row), sort_keys=True, allow_nan=False) + "\n"


class MetricsWriter:
    """Appends one JSON object per line to ``path`` (readable with ``pandas.read_json(path, lines=True)``)."""

    def __init__(self, path: str):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drops lines logged after ``step`` (a resumed run replays those steps and logs them again), and a last
        line a killed process left unfinished; atomically."""
        if not os.path.exists(self.path):
            return
        kept = []
        with open(self.path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break
                if row.get("step", 0) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def write(self, row: EpochMetrics | Mapping[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json_line(row))
            f.flush()


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Prints one line per epoch: epoch, loss, accuracy, selectivity, images/s (of the whole group) and the time
    left (for a group of runs, the range over its models)."""

    def __init__(self, total_epochs: int, stream: TextIO = sys.stdout):
        self.total_epochs = total_epochs
        self.stream = stream
        self.start = time.time()
        self.epochs_done = 0

    def epoch(self, epoch: int, rows: Sequence[EpochMetrics], images_per_second: float) -> None:
        self.epochs_done += 1
        per_epoch = (time.time() - self.start) / self.epochs_done
        eta = per_epoch * (self.total_epochs - epoch)

        def field(key: str, spec: str) -> str:
            values = [getattr(row, key) for row in rows]
            low, high = min(values), max(values)
            return format(low, spec) if low == high else f"{format(low, spec)}..{format(high, spec)}"

        parts = [f"epoch {epoch}/{self.total_epochs}"]
        if len(rows) > 1:
            parts.append(f"{len(rows)} models")
        parts += [f"loss {field('train_loss', '.4f')}", f"train acc {field('train_accuracy', '.3f')}",
                  f"sel {field('train_selectivity', '.3f')}"]
        if rows[0].val_accuracy is not None:
            parts += [f"val acc {field('val_accuracy', '.3f')}", f"val sel {field('val_selectivity', '.3f')}"]
        parts += [f"{images_per_second:.0f} img/s", f"ETA {format_duration(eta)}"]
        print(" | ".join(parts), file=self.stream, flush=True)


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
