"""Typed results with JSON round trips, and statistics over seeds: what analyses return and reports read back.

A `Record` is a dataclass whose instances go to JSON (``to_json``) and come back (``from_json``) field by field after
its type hints, so results travel between computation, files, tables and figures as typed values, not nested dicts
keyed by strings. `to_jsonable` is the project's one JSON encoder (rundir's atomic writes and the metrics lines use
it); `versions` is the one list of library versions a record states.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import types
import typing
from importlib import metadata
from typing import Any, Mapping, Sequence

import numpy as np


# ----------------------------------------------------------------------------------------------------------------------

def to_jsonable(value: Any) -> Any:
    """The one JSON encoder of the project: a `Record` -> its fields, mappings and sequences element-wise, numpy/jax
    scalars and arrays -> Python numbers and lists, NaN and infinities -> None (JSON null), so that every file the
    project writes is strict JSON."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        value = np.asarray(value)
        return to_jsonable(value.item() if value.ndim == 0 else value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def decode(kind: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as an instance of the type hint ``kind`` (null as NaN for ``float``)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any or value is None and kind is not float:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in args if arg is not type(None)]
        return decode(options[0], value) if len(options) == 1 else value
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.from_json(value)
    if origin in (list, Sequence):
        return [decode(args[0] if args else Any, item) for item in value]
    if origin is tuple:
        item_kind = args[0] if args else Any
        return tuple(decode(item_kind, item) for item in value)
    if origin in (dict, Mapping):
        return {key: decode(args[1] if args else Any, item) for key, item in value.items()}
    if kind is float:
        return math.nan if value is None else float(value)
    return value


class Record:
    """A dataclass mixin: ``to_json()`` gives a JSON-able dict (non-finite floats as null, arrays as lists) and
    ``from_json(data)`` rebuilds the instance from it, field by field after the type hints (nested records, lists,
    tuples, dicts with string keys, ``X | None``; a null float reads back as NaN)."""

    # Fields left out of the JSON while they are None (a record whose file omits what did not happen).
    OMITTED_WHEN_NONE: typing.ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        return {field.name: to_jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)
                if not (field.name in self.OMITTED_WHEN_NONE and getattr(self, field.name) is None)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]):
        hints = typing.get_type_hints(cls)
        return cls(**{field.name: decode(hints[field.name], data[field.name])
                      for field in dataclasses.fields(cls) if field.name in data})


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std of a single value is 0, of none NaN."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return float(np.mean(values)), std


@dataclasses.dataclass(frozen=True)
class SeedStat(Record):
    """Mean, standard deviation (ddof 1; 0 for one value) and count of a quantity over seeds."""
    mean: float
    std: float
    n: int

    def format(self, digits: int = 3) -> str:
        """'mean ± std'."""
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def seed_stat(values: Sequence[float | None]) -> SeedStat:
    """`SeedStat` of the finite ``values`` (NaN mean and std for none)."""
    finite = np.asarray([float(v) for v in values if v is not None and np.isfinite(v)], np.float64)
    mean, std = mean_std(finite)
    return SeedStat(mean, std, len(finite))


@dataclasses.dataclass(frozen=True)
class CurveStat(Record):
    """Element-wise mean and standard deviation over seeds of equally long curves."""
    mean: list[float]
    std: list[float]


def curve_stat(curves: Sequence[Sequence[float]]) -> CurveStat:
    stats = [seed_stat(column) for column in zip(*curves)]
    return CurveStat([s.mean for s in stats], [s.std for s in stats])


# ----------------------------------------------------------------------------------------------------------------------
# What a training run stores (`selectivity_jax.train.loop` writes them; `selectivity_jax.rundir` reads them back).

# The version of what a run stores, written as ``schema_version`` into config.json and results.json. Files without it
# are version 1 (written before the field existed); `selectivity_jax.rundir.upgrade` reads every older version as
# the current one.
SCHEMA_VERSION = 2

@dataclasses.dataclass(frozen=True)
class EpochMetrics(Record):
    """One ``metrics.jsonl`` row: a model's training means over an epoch (loss = cross-entropy - alpha * selectivity,
    Sec. 2 of Leavitt & Morcos 2021), the learning rate of its last step and, when validation ran, the validation
    figures (left out of the row otherwise)."""
    epoch: int
    step: int
    train_loss: float | None = None             # None: a column that rows of an older run lack
    train_cross_entropy: float | None = None
    train_selectivity: float | None = None
    train_accuracy: float | None = None
    alpha: float | None = None
    learning_rate: float | None = None
    models_in_group: int | None = None
    val_accuracy: float | None = None
    val_cross_entropy: float | None = None
    val_selectivity: float | None = None
    val_layer_selectivity: dict[str, float] | None = None      # {layer: mean selectivity of its units}
    val_dead_unit_fraction: float | None = None

    OMITTED_WHEN_NONE = ("val_accuracy", "val_cross_entropy", "val_selectivity", "val_layer_selectivity",
                         "val_dead_unit_fraction")


@dataclasses.dataclass(frozen=True)
class Normalization(Record):
    """Per-channel mean and standard deviation in [0, 1] pixel units that the model's inputs were normalised by."""
    mean: list[float]
    std: list[float]


@dataclasses.dataclass(frozen=True)
class RunResults(Record):
    """A finished run's ``results.json``: test figures (network selectivity = mean over layers of the mean over units,
    per layer too), what ran (model, steps, devices, convolution kernels, versions) and what restoring the model needs
    besides ``config.json`` and the checkpoint. Fields that runs of an older schema lack are None
    (`selectivity_jax.rundir.upgrade`); read back, a record is of the current schema."""
    alpha: float
    seed: int
    model: str
    test_accuracy: float
    test_selectivity: float
    per_layer_selectivity: dict[str, float]
    layer_names: list[str]
    test_cross_entropy: float | None = None
    test_examples: int | None = None
    test_dead_unit_fraction: float | None = None
    per_layer_dead_fraction: dict[str, float] | None = None
    val_accuracy: float | None = None
    val_selectivity: float | None = None
    steps: int | None = None
    epochs: int | None = None
    split_sizes: dict[str, int] | None = None
    models_in_group: int | None = None
    device_kind: str | None = None
    device_count: int | None = None
    process_count: int | None = None
    vmap_conv: str | None = None
    cpu_tuning: str | None = None
    convolutions: str | None = None                 # whose kernels ran the convolutions ('onednn', 'xla', ...)
    versions: dict[str, str] | None = None
    num_classes: int | None = None
    image_shape: list[int] | None = None
    normalization: Normalization | None = None
    schema_version: int = SCHEMA_VERSION

    OMITTED_WHEN_NONE = ("val_accuracy", "val_selectivity")


# The libraries whose versions every run records (results.json), in that order after Python's.
VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tensorflow-datasets")


def versions(*extra_packages: str) -> dict[str, str]:
    """{'python': version, package: version, ...}: Python, then the installed ones of `VERSIONED_PACKAGES` and then of
    ``extra_packages``, in that order (a package that is not installed is left out; one named twice counts once)."""
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES + extra_packages:
        try:
            found.setdefault(package, metadata.version(package))
        except metadata.PackageNotFoundError:
            pass
    return found


def format_duration(seconds: float) -> str:
    """A wall time as people read it: '4m07s', '1h05m' ('?' when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
