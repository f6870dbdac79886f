"""Checks of a training config made before a run writes anything: one ValueError naming every problem found.

`validate_config` checks what the config alone decides (field types, finite numbers, ranges, model, layer, data set
and strategy names, the sweep grid); the data's presence is checked by ``data.check_available`` and the batch
against the devices by ``parallel.check_batch_size``, both before the loop writes its first file.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import ml_collections

from selectivity_jax.data import SOURCES
from selectivity_jax.data.on_device import is_unset
from selectivity_jax.models import MODELS, NORMS, get_model
from selectivity_jax.models.vmap_conv import STRATEGIES

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
CPU_TUNING_CHOICES = ("auto", "off")  # the commands' CPU settings (selectivity_jax/cpu/settings.py, CHOICES)
MAX_SEED = 2 ** 32 - 1  # seeds are uint32


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Problems:
    """Collects what is wrong with a config, by dotted field path."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.found: list[str] = []

    def get(self, path: str) -> Any:
        node: Any = self.config
        for part in path.split("."):
            if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
                raise KeyError(path)
            node = node[part]
        return node

    def check(self, path: str, ok: Callable[[Any], bool], expected: str, *, optional: bool = False) -> None:
        try:
            value = self.get(path)
        except KeyError:
            if not optional:
                self.found.append(f"{path} is missing")
            return
        try:
            good = ok(value)
        except (TypeError, ValueError):
            good = False
        if not good:
            self.found.append(f"{path}={_as_given(value)!r} (expected {expected})")

    def number(self, path: str, low: float | None = None, high: float | None = None, *, integer: bool = False,
               optional: bool = False, above: bool = False) -> None:
        def ok(value: Any) -> bool:
            if not (_is_integer(value) if integer else _is_number(value)) or not math.isfinite(value):
                return False
            if low is not None and (value <= low if above else value < low):
                return False
            return high is None or value <= high
        kind = "an integer" if integer else "a finite number"
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if above else '>='} {low:g}")
        if high is not None:
            bounds.append(f"<= {high:g}")
        self.check(path, ok, kind + (" " + " and ".join(bounds) if bounds else ""), optional=optional)


def _as_given(value: Any) -> Any:
    """The value as the command line gave it: a tuple the flag parser could not read as Python literals (e.g. one
    holding nan) arrives as a one-item tuple of its text, shown as that text."""
    if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], str) and value[0].startswith("("):
        return value[0]
    return value


def _finite_sequence(value: Any, *, positive: bool = False) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_number(v) and math.isfinite(v)
                                                                          for v in value)
            and (not positive or all(v > 0 for v in value)))


def _model_problem(config: ml_collections.ConfigDict, build: bool = True) -> str | None:
    """Whether the model builds from ``config.model`` and its selectivity layers resolve (no parameters made);
    ``build=False``: the name and width only."""
    name = config.model.get("name")
    if not isinstance(name, str) or name.lower() not in MODELS:
        return f"model.name={name!r} (expected one of {sorted(MODELS)})"
    width = config.model.get("width")
    if width is not None and not (_is_integer(width) and width >= 1):
        return f"model.width={width!r} (expected an integer >= 1)"
    if not build:
        return None
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model.to_dict().items()
              if k != "name" and v is not None}
    try:
        get_model(name, num_classes=2, **kwargs).selectivity_layer_names()
    except (TypeError, ValueError) as error:
        return f"model: {error}"
    return None


def _check_data(problems: _Problems, config: ml_collections.ConfigDict) -> None:
    problems.check("data.name", lambda v: v in SOURCES, f"one of {sorted(SOURCES)}")
    for field in ("num_val", "val_per_class", "train_subset", "test_subset"):
        problems.number(f"data.{field}", 0, integer=True, optional=True)
    mean, std = config.data.get("mean"), config.data.get("std")
    mean, std = (None if is_unset(mean) else mean), (None if is_unset(std) else std)
    if (mean is None) != (std is None):
        problems.found.append("data.mean and data.std must be set together (or both None: computed from the "
                              "training images)")
    elif mean is not None:
        problems.check("data.mean", _finite_sequence, "a tuple of finite numbers, one per channel")
        problems.check("data.std", lambda v: _finite_sequence(v, positive=True),
                       "a tuple of positive numbers, one per channel")
        if _finite_sequence(mean) and _finite_sequence(std) and len(mean) != len(std):
            problems.found.append(f"data.mean has {len(mean)} channels but data.std {len(std)}")
    problems.number("augment.crop_padding", 0, integer=True)
    problems.check("augment.flip", lambda v: isinstance(v, bool), "True or False")


def _check_optimization(problems: _Problems, config: ml_collections.ConfigDict) -> None:
    problems.number("batch_size", 1, integer=True)
    problems.number("eval_batch_size", 1, integer=True)
    problems.number("learning_rate", 0)
    problems.number("lr_base_batch_size", 1, integer=True)
    problems.check("lr_decay_at", lambda v: isinstance(v, (list, tuple)) and all(
        _is_number(x) and 0 <= x <= 1 for x in v), "a tuple of fractions of training in [0, 1]")
    problems.number("lr_decay_factor", 0)
    problems.number("lr_warmup_epochs", 0)
    problems.number("momentum", 0)
    problems.number("weight_decay", 0)
    problems.check("nesterov", lambda v: isinstance(v, bool), "True or False", optional=True)
    problems.number("num_train_steps", 0, integer=True)
    problems.number("num_epochs", 0)
    if not problems.found and not config.num_train_steps and not config.num_epochs > 0:
        problems.found.append("the run has no training steps: set num_train_steps or num_epochs > 0")


def _check_execution(problems: _Problems) -> None:
    problems.check("compute_dtype", lambda v: v in COMPUTE_DTYPES, f"one of {list(COMPUTE_DTYPES)}")
    problems.number("steps_per_call", 0, integer=True, optional=True)
    problems.check("vmap_conv", lambda v: v in STRATEGIES + ("auto",), f"one of {list(STRATEGIES + ('auto',))}",
                   optional=True)
    problems.check("cpu_tuning", lambda v: v in CPU_TUNING_CHOICES, f"one of {list(CPU_TUNING_CHOICES)}",
                   optional=True)
    for field in ("eval_every_epochs", "checkpoint_every_epochs", "max_checkpoints_to_keep"):
        problems.number(field, 1, integer=True)
    problems.number("num_devices", 0, integer=True)
    problems.check("distributed", lambda v: isinstance(v, bool), "True or False", optional=True)
    problems.check("tensorboard", lambda v: isinstance(v, bool), "True or False", optional=True)


def _check_model(problems: _Problems, config: ml_collections.ConfigDict) -> None:
    found_before = len(problems.found)
    problems.check("model.norm", lambda v: v in NORMS, f"one of {list(NORMS)}", optional=True)
    problems.check("model.dropout", lambda v: _is_number(v) and 0 <= v < 1, "a rate >= 0 and < 1", optional=True)
    model_problem = _model_problem(config, build=len(problems.found) == found_before)  # a bad norm is said once
    if model_problem:
        problems.found.append(model_problem)


def _check_sweep(problems: _Problems) -> None:
    problems.check("sweep.alphas", lambda v: _finite_sequence(v) and len(set(v)) == len(v),
                   "a non-empty tuple of distinct finite numbers")
    problems.check("sweep.seeds", lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(
        _is_integer(s) and 0 <= s <= MAX_SEED for s in v) and len(set(v)) == len(v),
        "a non-empty tuple of distinct integer seeds >= 0")


def validate_config(config: ml_collections.ConfigDict, *, sweep: bool = False) -> None:
    """Raises one ValueError listing every problem of a training ``config`` (configs/base.py); ``sweep`` also
    checks ``config.sweep``'s grid."""
    problems = _Problems(config)
    problems.number("seed", 0, MAX_SEED, integer=True)
    problems.number("alpha")
    problems.number("alpha_warmup_epochs", 0)
    _check_data(problems, config)
    _check_optimization(problems, config)
    _check_execution(problems)
    _check_model(problems, config)
    if sweep:
        _check_sweep(problems)
    if problems.found:
        raise ValueError("invalid config: " + "; ".join(problems.found))
