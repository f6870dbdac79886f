"""The interface every analysis implements, and what the analyses share.

An analysis is one file of ``selectivity_jax/analyses/`` that defines ``ANALYSIS``, an instance of a subclass of
`Analysis`: its name and title, its settings (defaults and validation), ``run(context, settings) -> result`` on one
trained run, ``compare(results) -> comparison`` across the runs of a sweep, and the tables and figures of both.
Results and comparisons are `Record` dataclasses, written as JSON (``<run>/analysis/<name>.json``, envelope in
`RunResult`) and read back from it, so a finished analysis is not computed again while its settings are unchanged.

Every analysis of one run shares a `RunContext`: the restored model, a fixed class-balanced subset of the test split
(the same examples for every run of a sweep) and each layer's unit responses and selectivity on it, computed once.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable, ClassVar, Generic, Mapping, Sequence, TypeVar

import ml_collections
import numpy as np

from selectivity_jax.data import load_splits
from selectivity_jax.data.corrupted import CorruptedSplit, corrupted_subset
from selectivity_jax.data.splits import subset
from selectivity_jax.measures.attacks import to_unit_interval
from selectivity_jax.records import Record, RunResults, SeedStat, decode, seed_stat, to_jsonable
from selectivity_jax.rundir import ANALYSIS_DIR, read_json, read_run_config, read_run_results, write_json
from selectivity_jax.selectivity import selectivity_fn
from selectivity_jax.trained import TrainedRun, batched, restore_run

R = TypeVar("R", bound="Record")
C = TypeVar("C", bound="Record")
SHARED_SETTINGS = ("num_examples", "seed", "layers")  # what every analysis result depends on besides its section


# ----------------------------------------------------------------------------------------------------------------------
# one run's result, and the per-alpha aggregation over seeds
# ----------------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunResult(Generic[R]):
    """One analysis of one run: the run's identity and test numbers, the analysis' `Record`, the settings it was
    computed with and how long it took. In JSON the record's fields stand beside the envelope's; ``run_dir`` is where
    the run lies now (not stored, so a sweep directory can move)."""
    analysis: str
    alpha: float
    seed: int
    test_accuracy: float
    test_selectivity: float
    result: R
    settings: dict[str, Any]
    seconds: float
    run_dir: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"analysis": self.analysis, "alpha": self.alpha, "seed": self.seed,
                "test_accuracy": to_jsonable(self.test_accuracy),
                "test_selectivity": to_jsonable(self.test_selectivity),
                **self.result.to_json(), "settings": self.settings, "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], result_type: type[R], run_dir: str = "") -> RunResult[R]:
        return cls(analysis=data["analysis"], alpha=float(data["alpha"]), seed=int(data["seed"]),
                   test_accuracy=decode(float, data["test_accuracy"]),
                   test_selectivity=decode(float, data["test_selectivity"]), result=result_type.from_json(data),
                   settings=data["settings"], seconds=float(data["seconds"]), run_dir=run_dir)


def by_alpha(results: Sequence[RunResult[R]]) -> dict[float, list[RunResult[R]]]:
    """Results grouped by alpha (ascending), seeds in order within each."""
    grouped: dict[float, list[RunResult[R]]] = {}
    for result in sorted(results, key=lambda r: (r.alpha, r.seed)):
        grouped.setdefault(result.alpha, []).append(result)
    return grouped


@dataclasses.dataclass(frozen=True)
class AlphaStats(Record):
    """One alpha of a sweep: its seeds, the runs' test selectivity and named quantities, each over seeds."""
    alpha: float
    seeds: list[int]
    test_selectivity: SeedStat
    stats: dict[str, SeedStat]


def per_alpha(results: Sequence[RunResult[R]], values: Callable[[RunResult[R]], Mapping[str, float | None]]
              ) -> list[AlphaStats]:
    """One `AlphaStats` per alpha (ascending) of the quantities ``values(result)`` (a dict of numbers per run)."""
    rows = []
    for alpha, group in by_alpha(results).items():
        per_run = [values(result) for result in group]
        rows.append(AlphaStats(alpha=alpha, seeds=[r.seed for r in group],
                               test_selectivity=seed_stat([r.test_selectivity for r in group]),
                               stats={key: seed_stat([v[key] for v in per_run]) for key in per_run[0]}))
    return rows


@dataclasses.dataclass(frozen=True)
class AlphaLayers(Record):
    """One alpha of a sweep: a per-layer quantity (a number or a curve), averaged over seeds."""
    alpha: float
    layers: dict[str, Any]


def layer_means(results: Sequence[RunResult[R]], layers: Sequence[str], value: Callable[[RunResult[R], str], Any]
                ) -> list[AlphaLayers]:
    """Per alpha (ascending): {layer: mean over seeds of ``value(result, layer)``} (elementwise for curves)."""
    return [AlphaLayers(alpha, {layer: np.mean([np.asarray(value(r, layer), np.float64) for r in group],
                                               axis=0).tolist() for layer in layers})
            for alpha, group in by_alpha(results).items()]


def analysis_settings(shared: Mapping[str, Any], name: str, section: ml_collections.ConfigDict | None
                      ) -> dict[str, Any]:
    """What an analysis result depends on, as its JSON holds it: the shared data settings and the analysis' own
    section (tuples as lists, so that a stored copy compares equal)."""
    payload = {**{key: shared[key] for key in SHARED_SETTINGS}, name: section.to_dict() if section is not None else {}}
    return json.loads(json.dumps(to_jsonable(payload)))


# ----------------------------------------------------------------------------------------------------------------------
# what the analyses of one run share
# ----------------------------------------------------------------------------------------------------------------------

class RunContext:
    """One finished run and what its analyses share, each computed on first use.

    ``shared``: the shared settings of configs/analysis.py (num_examples, seed, layers, batch_size, cache_dir).
    A run directory's model is restored on first use; a model trained elsewhere (`selectivity_jax.trained.from_flax`)
    comes as ``run`` with its ``test_split``, and ``run_dir`` is then where its analyses are written.
    """

    def __init__(self, run_dir: str, shared: ml_collections.ConfigDict, log: Callable[[str], None] = print, *,
                 run: TrainedRun | None = None, test_split: tuple[np.ndarray, np.ndarray] | None = None):
        self.run_dir = run_dir
        self.shared = shared
        self.log = log
        self.model_given = run is not None  # a model trained elsewhere: no config.json or results.json to read
        if run is not None:
            if test_split is None:
                raise ValueError("a model given without a run directory needs its test split (images, labels)")
            self.run, self.test_split = run, (np.asarray(test_split[0]), np.asarray(test_split[1]))

    @property
    def batch_size(self) -> int:
        return int(self.shared.batch_size)

    @property
    def seed(self) -> int:
        return int(self.shared.seed)

    @functools.cached_property
    def run(self) -> TrainedRun:
        start = time.time()
        run = restore_run(self.run_dir)
        self.log(f"  restored {self.run_dir} (alpha {run.alpha:g}, seed {run.seed}) in {time.time() - start:.1f}s")
        return run

    @functools.cached_property
    def config(self) -> ml_collections.ConfigDict:
        """The run's config.json (read without restoring the model)."""
        if self.model_given:
            return self.run.config
        return ml_collections.ConfigDict(read_run_config(self.run_dir))

    @functools.cached_property
    def results(self) -> RunResults:
        """The run's results.json; for a model given as ``run``, its alpha, seed, and test accuracy and selectivity
        (of its analysed layers) on the whole test split."""
        if not self.model_given:
            return read_run_results(self.run_dir)
        images, labels = self.test_split
        responses = batched(self.run.responses_fn(self.layers), images, self.batch_size)
        return RunResults(alpha=self.run.alpha, seed=self.run.seed, model=str(self.config.get("name", "model")),
                          test_accuracy=accuracy(self.run, images, labels, self.batch_size),
                          test_selectivity=float(selectivity_fn(responses, labels, self.run.num_classes)),
                          per_layer_selectivity={}, layer_names=list(self.layers))

    @property
    def data_config(self) -> ml_collections.ConfigDict:
        """The run's data config, with the shared ``cache_dir`` (decoded and generated corrupted sets) when set."""
        if not self.config.get("data") or "name" not in self.config.data:
            raise ValueError("this analysis needs the model's data set: pass data=<a data config> to from_flax")
        config = ml_collections.ConfigDict(self.config.data.to_dict())
        if self.shared.get("cache_dir"):
            config.cache_dir = self.shared.cache_dir
        return config

    @functools.cached_property
    def test_split(self) -> tuple[np.ndarray, np.ndarray]:
        """The run's whole test split: (uint8 images [N, H, W, C], labels [N])."""
        return load_splits(self.data_config, seed=self.config.seed).test

    @functools.cached_property
    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images [N, H, W, C], labels [N]): ``shared.num_examples`` test examples, about equally many per
        class, chosen by ``shared.seed`` from the labels alone (so the same for every run of a sweep)."""
        images, labels = self.test_split
        return subset(images, labels, self.shared.num_examples, self.shared.seed)

    def corrupted_subset(self, corruption: str, severity: int, source: str
                         ) -> tuple[np.ndarray, np.ndarray, CorruptedSplit]:
        """(images, labels, split) of one corruption at ``severity`` from ``source``, restricted to the examples of
        `data`, in the same order (`selectivity_jax.data.corrupted.corrupted_subset`; checked)."""
        images, labels, split = corrupted_subset(self.data_config, corruption, severity, source=source,
                                                 test_labels=self.test_split[1], num_examples=self.shared.num_examples,
                                                 seed=self.shared.seed)
        if not np.array_equal(labels, self.data[1]):
            raise ValueError(f"the {corruption} subset does not pick the examples of the clean subset")
        return images, labels, split

    @property
    def layers(self) -> list[str]:
        """The layers to analyse: ``shared.layers``, or the run's selectivity layers."""
        layers = list(self.shared.layers) or self.run.layer_names
        unknown = [name for name in layers if name not in self.run.model.all_relu_names()]
        if unknown:
            raise ValueError(f"unknown layers {unknown}; the model's post-ReLU points are "
                             f"{self.run.model.all_relu_names()}")
        return layers

    @functools.cached_property
    def responses(self) -> dict[str, np.ndarray]:
        """{layer: unit responses [N, U]} on `data` (conv channels spatially averaged)."""
        return batched(self.run.responses_fn(self.layers), self.data[0], self.batch_size)

    @functools.cached_property
    def selectivity(self) -> dict[str, np.ndarray]:
        """{layer: class selectivity index [U]} on `data`."""
        per_unit = selectivity_fn(self.responses, self.data[1], self.run.num_classes, reduce=False)
        return {name: np.asarray(si, np.float64) for name, si in per_unit.items()}

    def paper_index(self) -> float:
        """Mean over the analysed layers of the mean unit selectivity: the paper's index on the unit axes, on `data`
        (post-ReLU responses are non-negative, so no rule for negative responses is needed)."""
        return float(np.mean([self.selectivity[layer].mean() for layer in self.layers]))

    def output_path(self, file_name: str) -> str:
        """Where an analysis keeps a file of its own (arrays, partial results): ``<run>/analysis/<file_name>``."""
        directory = os.path.join(self.run_dir, ANALYSIS_DIR)
        os.makedirs(directory, exist_ok=True)
        return os.path.join(directory, file_name)


def evaluate(fn: Any, images: np.ndarray, batch_size: int) -> Any:
    """`batched` ``fn`` (a `TrainedRun` pytree function: compiled once per sweep) on images scaled to [0, 1] on the
    host, as the attacks scale them, so clean numbers here and under attack see the same inputs."""
    return batched(fn, to_unit_interval(images), min(batch_size, len(images)))


def accuracy(run: TrainedRun, images: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    """Top-1 accuracy of the run on (images, labels)."""
    logits = evaluate(run.logits_fn, images, batch_size)
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))


def resumable_items(context: RunContext, name: str, section: ml_collections.ConfigDict, keys: Sequence[str],
                    compute_item: Callable[[str], dict[str, Any]], describe: Callable[[dict[str, Any]], str]
                    ) -> dict[str, dict[str, Any]]:
    """``{key: compute_item(key)}``, each item saved to ``<run>/analysis/<name>.partial.json`` as soon as it is done
    and read back from there (while the analysis' settings, `analysis_settings` of its ``section``, are unchanged)
    instead of computed again; progress logged per item."""
    settings = analysis_settings(context.shared, name, section)
    path = context.output_path(f"{name}.partial.json")
    done: dict[str, dict[str, Any]] = {}
    if os.path.exists(path):
        stored = read_json(path)
        if stored.get("settings") == settings:
            done = stored["items"]
    resumed = [key for key in keys if key in done]
    if resumed:
        context.log(f"    {name}: {len(resumed)}/{len(keys)} done before, read from {path}")
    for index, key in enumerate(keys):
        if key in done:
            continue
        start = time.time()
        done[key] = to_jsonable(compute_item(key))
        write_json(path, {"settings": settings, "items": done})
        context.log(f"    {name} {index + 1}/{len(keys)} {key}: {describe(done[key])} ({time.time() - start:.1f}s)")
    return {key: done[key] for key in keys}


# ----------------------------------------------------------------------------------------------------------------------
# the interface
# ----------------------------------------------------------------------------------------------------------------------

class Analysis(abc.ABC, Generic[R, C]):
    """One analysis. Subclasses set the class attributes and implement `run`; the rest is optional.

    - ``name``: the file name and the section of configs/analysis.py holding its settings;
    - ``title``: the report heading; ``needs_sweep``: it only compares runs (nothing to say about one run alone);
    - ``edits_layers``: it changes layer outputs inside the forward pass (`selectivity_jax.models.edit_layers`);
    - ``result_type`` / ``comparison_type``: the `Record` classes `run` and `compare` return.
    """
    name: ClassVar[str]
    title: ClassVar[str]
    result_type: ClassVar[type]
    comparison_type: ClassVar[type | None] = None
    needs_sweep: ClassVar[bool] = False
    edits_layers: ClassVar[bool] = False

    @abc.abstractmethod
    def default_settings(self) -> ml_collections.ConfigDict:
        """This analysis' section of configs/analysis.py, each field explained once."""

    def check(self, settings: ml_collections.ConfigDict) -> None:
        """Raises ValueError (one line) for settings the analysis cannot run with, before any model is loaded."""

    def check_runs(self, alphas: Sequence[float]) -> None:
        """Raises ValueError (one line) when the finished runs, by alpha, cannot be analysed or compared."""

    @abc.abstractmethod
    def run(self, context: RunContext, settings: ml_collections.ConfigDict) -> R:
        """The analysis of one run."""

    def compare(self, results: Sequence[RunResult[R]], settings: ml_collections.ConfigDict) -> C | None:
        """The comparison across the runs of a sweep (None: the analysis has none)."""
        return None

    def run_table(self, result: RunResult[R]) -> str | None:
        """Markdown summary of one run's result for the report."""
        return None

    def sweep_table(self, comparison: C) -> str | None:
        """Markdown summary of a sweep's comparison for the report."""
        return None

    def run_figures(self, result: RunResult[R]) -> dict[str, Any]:
        """{figure name: matplotlib Figure} of one run (saved as ``<run>/analysis/<name>_<figure>.png|svg``)."""
        return {}

    def sweep_figures(self, comparison: C) -> dict[str, Any]:
        """{figure name: Figure} of a sweep's comparison (``<sweep>/analysis/<name>_<figure>.png|svg``)."""
        return {}

    def compare_models(self, results: Mapping[str, RunResult[R]]) -> ModelsView | None:
        """The comparison of runs of different models ({label: one run's result}, e.g. Chen et al.'s Fig. 3b);
        None: the analysis has none."""
        return None


@dataclasses.dataclass(frozen=True)
class ModelsView:
    """What `Analysis.compare_models` shows: a Markdown table and {figure name: Figure}."""
    table: str
    figures: dict[str, Any]
