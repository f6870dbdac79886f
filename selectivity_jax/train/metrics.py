"""Run outputs as plain files: JSON lines of metrics, their curves as TensorBoard event files, human-readable progress
lines, and the host-side figures of an evaluation pass."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence, TextIO

import jax
import numpy as np

from selectivity_jax.records import EpochMetrics, format_duration, to_jsonable


def json_line(row: Mapping[str, Any]) -> str:
    """One strict-JSON line (keys sorted) for a .jsonl file."""
    return json.dumps(to_jsonable(row), sort_keys=True, allow_nan=False) + "\n"


class MetricsWriter:
    """Appends one JSON object per line to ``path`` (read back with ``[json.loads(line) for line in open(path)]``)."""

    def __init__(self, path: str):
        self.path = path

    def truncate_after(self, step: int, log: Callable[[str], None] = print) -> None:
        """Drops lines logged after ``step`` (a resumed run replays those steps and logs them again), and, with a
        warning, a last line a killed process left unfinished; atomically. Any other line that is not JSON is damage
        no replay repairs: a ValueError naming the file and the line."""
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        kept = []
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number < len(lines):
                    raise ValueError(f"{self.path}: line {number} is not valid JSON and lines follow it: the file was "
                                     "damaged after it was written; restore it, or start afresh with --overwrite"
                                     ) from None
                log(f"warning: {self.path}: its last line was cut by a process that was killed; dropped, the "
                    "resumed run logs it again")
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


# ----------------------------------------------------------------------------------------------------------------------
# TensorBoard: the metrics.jsonl rows as scalars in event files, written with tensorboardX (no TensorFlow), imported
# only when a run writes them (the library's import leaves it out).
# ----------------------------------------------------------------------------------------------------------------------

# Fields of a metrics.jsonl row that are bookkeeping, not curves (``step`` is the curves' x axis).
NOT_CURVES = frozenset({"epoch", "step", "models_in_group"})


@dataclasses.dataclass(frozen=True)
class TensorBoardX:
    """The parts of tensorboardX that `TensorBoardWriter` uses: its synchronous event-file writer and the protos."""
    events_writer: type
    event: type
    session_log: type
    summary: type


def import_tensorboardx(log: Callable[[str], None]) -> TensorBoardX | None:
    """tensorboardX's parts, imported now; None, with one warning line through ``log``, when it does not import."""
    blocked = "torch" not in sys.modules
    if blocked:  # tensorboardX's writer module imports torch when installed (type hints only): not into training
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
    except Exception as error:  # noqa: BLE001 - missing, or broken (e.g. a protobuf it does not support)
        log(f"warning: no TensorBoard event files: tensorboardX does not import ({type(error).__name__}: {error}); "
            "pip install 'tensorboardX>=2.6', or --config.tensorboard=False")
        return None
    finally:
        if blocked and sys.modules.get("torch", False) is None:
            del sys.modules["torch"]
    return TensorBoardX(EventsWriter, Event, SessionLog, Summary)


def tensorboard_scalars(row: EpochMetrics) -> dict[str, float]:
    """The curves of a metrics.jsonl row, by tag: every numeric field but `NOT_CURVES` (train_*, alpha,
    learning_rate, val_* when validation ran) and ``val_layer_selectivity/<layer>``."""
    scalars: dict[str, float] = {}
    for field in dataclasses.fields(row):
        value = getattr(row, field.name)
        if field.name in NOT_CURVES or value is None:
            continue
        if isinstance(value, Mapping):
            scalars.update({f"{field.name}/{key}": float(item) for key, item in value.items()})
        else:
            scalars[field.name] = float(value)
    return scalars


class TensorBoardWriter:
    """Writes a run's metrics.jsonl rows as TensorBoard scalars (`tensorboard_scalars`, float32 as TensorBoard stores
    them, at the row's step) into an event file of ``directory``, flushed after each row so the curves are live.

    Each training call of the run adds its own event file (created with its first row). tensorboardX's
    SummaryWriter is not used: it hands events to a thread whose flush does not wait for them; the loop writes one row
    an epoch, synchronously, with the record writer under it.

    A resumed run cannot truncate event files as metrics.jsonl is truncated (`MetricsWriter.truncate_after`); it writes
    into the same directory, and its new file starts with a START event at the first step it will log again
    (`resume_from`). TensorBoard then shows the latest value of a repeated step: the data server drops a series'
    points from a repeated step on, the Python reader (EventAccumulator) every point from the START event's step on.
    """

    def __init__(self, directory: str, tensorboardx: TensorBoardX):
        self.directory = directory
        self.tbx = tensorboardx
        self.purge_step: int | None = None
        self._file: Any = None

    def resume_from(self, step: int) -> None:
        """The run continues after ``step`` (the rows up to it are kept): later points of older files are replaced."""
        self.purge_step = step + 1

    def _open(self) -> Any:
        os.makedirs(self.directory, exist_ok=True)
        # the suffix orders two files of one second and host by creation, and keeps the second from overwriting the
        # first (tensorboardX names a file by the second it was created in and the host)
        events = self.tbx.events_writer(os.path.join(self.directory, "events"), f".{time.time_ns()}")
        if self.purge_step is not None:
            events.write_event(self.tbx.event(wall_time=time.time(), step=self.purge_step,
                                              session_log=self.tbx.session_log(status=self.tbx.session_log.START)))
        return events

    def write(self, row: EpochMetrics) -> None:
        if self._file is None:
            self._file = self._open()
        summary = self.tbx.summary(value=[self.tbx.summary.Value(tag=tag, simple_value=value)
                                          for tag, value in tensorboard_scalars(row).items()])
        self._file.write_event(self.tbx.event(wall_time=time.time(), step=int(row.step), summary=summary))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


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
