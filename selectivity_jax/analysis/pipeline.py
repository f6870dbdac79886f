"""Runs analyses over a run directory or a whole sweep: one JSON and figures per analysis per run, then a comparison
across the alphas of a sweep. Resumable: an analysis whose JSON exists with the same settings is not computed again.

Layout (``<name>`` is an analysis of `selectivity_jax.analysis.tasks.ANALYSES`):

- ``<run>/analysis/<name>.json`` and ``<run>/analysis/<name>_<figure>.png|svg``;
- ``<sweep>/analysis/<name>.json`` (per-alpha comparison) and ``<sweep>/analysis/<name>_<figure>.png|svg``;
- a Markdown report, ``<workdir>/analysis/<report>.md``, with each analysis' summary table and its figures.

Every analysis of one run shares a `RunContext`: the restored model, a fixed class-balanced subset of the test split
(the same examples for every run of a sweep) and each layer's unit responses and selectivity on it, computed once.
"""

from __future__ import annotations

import dataclasses
import functools
import contextlib
import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from selectivity_jax.analysis.trained import TrainedRun, batched, load_trained_run
from selectivity_jax.data.splits import subset
from selectivity_jax.report.runs import find_run_dirs
from selectivity_jax.report.tables import mean_std
from selectivity_jax.selectivity import selectivity_fn
from selectivity_jax.rundir import CONFIG_FILE, RESULTS_FILE, DirectoryLock, read_json
from selectivity_jax.train.metrics import to_jsonable, write_json

ANALYSIS_DIR = "analysis"


class RunContext:
    """One finished run and what its analyses share, each computed on first use."""

    def __init__(self, run_dir: str, config: ml_collections.ConfigDict, log: Callable[[str], None] = print):
        self.run_dir = run_dir
        self.config = config
        self.log = log

    @functools.cached_property
    def run(self) -> TrainedRun:
        start = time.time()
        run = load_trained_run(self.run_dir, cache_dir=self.config.get("cache_dir"))
        self.log(f"  loaded {self.run_dir} (alpha {run.alpha:g}, seed {run.seed}) in {time.time() - start:.1f}s")
        return run

    @property
    def results(self) -> dict[str, Any]:
        with open(os.path.join(self.run_dir, RESULTS_FILE)) as f:
            return json.load(f)

    @functools.cached_property
    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images [N, H, W, C], labels [N]): ``config.num_examples`` test examples, about equally many per
        class, chosen by ``config.seed`` from the labels alone (so the same for every run of a sweep)."""
        images, labels = self.run.splits.test
        return subset(images, labels, self.config.num_examples, self.config.seed)

    @property
    def layers(self) -> list[str]:
        """The layers to analyse: ``config.layers``, or the run's selectivity layers."""
        layers = list(self.config.layers) or self.run.layer_names
        unknown = [name for name in layers if name not in self.run.model.all_relu_names()]
        if unknown:
            raise ValueError(f"unknown layers {unknown}; the model's post-ReLU points are "
                             f"{self.run.model.all_relu_names()}")
        return layers

    @functools.cached_property
    def responses(self) -> dict[str, np.ndarray]:
        """{layer: unit responses [N, U]} on `data` (conv channels spatially averaged)."""
        return batched(self.run.responses_fn(self.layers), self.data[0], self.config.batch_size)

    @functools.cached_property
    def selectivity(self) -> dict[str, np.ndarray]:
        """{layer: class selectivity index [U]} on `data`."""
        per_unit = selectivity_fn(self.responses, self.data[1], self.run.num_classes, reduce=False)
        return {name: np.asarray(si, np.float64) for name, si in per_unit.items()}


@dataclasses.dataclass(frozen=True)
class Analysis:
    """One analysis: ``compute(context, settings) -> JSON-able dict`` per run, ``figures(result)`` per run,
    ``compare(per_run_results) -> dict`` and ``compare_figures(comparison)`` across a sweep (each optional but
    compute). ``needs_sweep``: the analysis compares runs with each other and means nothing for one run alone."""
    name: str
    compute: Callable[[RunContext, ml_collections.ConfigDict], dict[str, Any]]
    figures: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    compare: Callable[[list[dict[str, Any]], ml_collections.ConfigDict], dict[str, Any]] | None = None
    compare_figures: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    needs_sweep: bool = False
    title: str = ""
    run_table: Callable[[dict[str, Any]], str] | None = None    # Markdown summary of one run's result
    sweep_table: Callable[[dict[str, Any]], str] | None = None  # Markdown summary of a sweep comparison


def find_runs(workdir: str) -> tuple[bool, list[str]]:
    """(is_sweep, finished run directories): ``workdir`` is one run (it holds config.json) or a sweep of runs."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"{workdir} is not a directory")
    if os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        if not os.path.exists(os.path.join(workdir, RESULTS_FILE)):
            raise ValueError(f"{workdir} has not finished training (no {RESULTS_FILE})")
        return False, [workdir]
    found = find_run_dirs(workdir)
    finished = [path for _, path in sorted(found.items()) if os.path.exists(os.path.join(path, RESULTS_FILE))]
    if not finished:
        raise ValueError(f"{workdir} holds no finished run ({len(found)} run directories, none with {RESULTS_FILE})")
    return True, finished


def analysis_settings(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
    """What an analysis result depends on: the shared data settings and the analysis' own section."""
    shared = {key: config[key] for key in ("num_examples", "seed", "layers")}
    section = config[name].to_dict() if name in config else {}
    return json.loads(json.dumps(to_jsonable({**shared, name: section})))



Section = tuple[str, Callable[[dict[str, Any]], str] | None, dict[str, Any], list[str]]


def write_report(path: str, title: str, sections: Sequence[Section]) -> str:
    """A Markdown report; each section is (heading, table function or None, result, PNG paths linked relative)."""
    lines = [f"# {title}", ""]
    for heading, table, result, pngs in sections:
        lines += [f"## {heading}", ""]
        if table is not None:
            lines += [table(result), ""]
        for png in pngs:
            name = os.path.splitext(os.path.basename(png))[0]
            lines += [f"![{name}]({os.path.relpath(png, os.path.dirname(path))})", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _save_figures(figures: Mapping[str, Any], directory: str, prefix: str) -> list[str]:
    from selectivity_jax.report.figures import save_figure  # matplotlib only when drawing
    paths = []
    for figure_name, figure in figures.items():
        paths += save_figure(figure, os.path.join(directory, f"{prefix}_{figure_name}"))
    return paths


def analyze_run(run_dir: str, analyses: Sequence[Analysis], config: ml_collections.ConfigDict, *,
                log: Callable[[str], None] = print, context: RunContext | None = None) -> dict[str, dict[str, Any]]:
    """Computes (or reads back) each analysis of one run; writes its JSON and figures; returns the results, each
    with the ``run_dir`` it belongs to (in memory only, so a sweep directory can move)."""
    context = context or RunContext(run_dir, config, log)
    out_dir = os.path.join(run_dir, ANALYSIS_DIR)
    os.makedirs(out_dir, exist_ok=True)
    results = {}
    for analysis in analyses:
        path = os.path.join(out_dir, f"{analysis.name}.json")
        settings = analysis_settings(config, analysis.name)
        if os.path.exists(path) and read_json(path).get("settings") == settings:
            log(f"  {analysis.name}: done before, {path}")
            results[analysis.name] = {**read_json(path), "run_dir": run_dir}
            continue
        start = time.time()
        log(f"  {analysis.name}: computing ...")
        run_results = context.results
        result = {"analysis": analysis.name, "alpha": float(run_results["alpha"]), "seed": int(run_results["seed"]),
                  "test_accuracy": run_results["test_accuracy"], "test_selectivity": run_results["test_selectivity"],
                  **analysis.compute(context, config), "settings": settings,
                  "seconds": time.time() - start}
        result = to_jsonable(result)
        if analysis.figures is not None:
            _save_figures(analysis.figures({**result, "run_dir": run_dir}), out_dir, analysis.name)
        write_json(path, result)  # last: a JSON on disk means the analysis and its figures are complete
        log(f"  {analysis.name}: {time.time() - start:.1f}s, {path}")
        results[analysis.name] = {**result, "run_dir": run_dir}  # where the run is, for comparisons (not stored)
    return results


def figure_paths(directory: str, name: str) -> list[str]:
    """The PNG figures of analysis ``name`` in ``directory`` (``<name>_<figure>.png``), sorted."""
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.startswith(name + "_") and f.endswith(".png"))


def compare_runs(sweep_dir: str, analysis: Analysis, per_run: list[dict[str, Any]],
                 config: ml_collections.ConfigDict) -> tuple[str, list[str]]:
    """The sweep-level comparison of one analysis: JSON and figures in ``<sweep>/analysis/``."""
    out_dir = os.path.join(sweep_dir, ANALYSIS_DIR)
    os.makedirs(out_dir, exist_ok=True)
    comparison = to_jsonable(analysis.compare(per_run, config))
    paths = _save_figures(analysis.compare_figures(comparison), out_dir, analysis.name) \
        if analysis.compare_figures is not None else []
    path = os.path.join(out_dir, f"{analysis.name}.json")
    write_json(path, comparison)
    return path, paths


def analysis_locks(workdir: str, run_dirs: Sequence[str], log: Callable[[str], None] = print) -> contextlib.ExitStack:
    """Locks the ``analysis/`` folders of ``workdir`` and of its runs (`rundir.DirectoryLock`) for one process; a
    second analysis of any of them is refused, training elsewhere is not."""
    stack = contextlib.ExitStack()
    try:
        for directory in sorted({workdir, *run_dirs}):
            stack.enter_context(DirectoryLock(os.path.join(directory, ANALYSIS_DIR), log))
    except BaseException:
        stack.close()
        raise
    return stack


def run_analyses(workdir: str, analyses: Sequence[Analysis], config: ml_collections.ConfigDict, *,
                 report: str = "report", report_analyses: Sequence[Analysis] = (),
                 log: Callable[[str], None] = print, lock: bool = True) -> dict[str, Any]:
    """Every analysis on every finished run of ``workdir`` (a run or a sweep), then the sweep comparisons and the
    Markdown report ``<workdir>/analysis/<report>.md``, which covers ``analyses`` and whichever of
    ``report_analyses`` an earlier call left results of. ``lock``: hold `analysis_locks` meanwhile (False: the
    caller holds them).

    Returns {'runs': {run_dir: {name: result}}, 'comparisons': {name: (json path, figure paths)}, 'report': path}.
    """
    is_sweep, run_dirs = find_runs(workdir)
    lone = [a.name for a in analyses if a.needs_sweep]
    if lone and not is_sweep:
        raise ValueError(f"{', '.join(lone)} compares the runs of a sweep: pass a sweep directory, not one run")
    with analysis_locks(workdir, run_dirs, log) if lock else contextlib.nullcontext():
        return _run_analyses_locked(workdir, is_sweep, run_dirs, analyses, config, report, report_analyses, log)


def _run_analyses_locked(workdir: str, is_sweep: bool, run_dirs: list[str], analyses: Sequence[Analysis],
                         config: ml_collections.ConfigDict, report: str, report_analyses: Sequence[Analysis],
                         log: Callable[[str], None]) -> dict[str, Any]:
    log(f"{len(run_dirs)} run(s) in {workdir}; analyses {', '.join(a.name for a in analyses)}")
    per_run: dict[str, dict[str, Any]] = {}
    for index, run_dir in enumerate(run_dirs):
        log(f"run {index + 1}/{len(run_dirs)}: {run_dir}")
        per_run[run_dir] = analyze_run(run_dir, analyses, config, log=log)
    comparisons = {}
    if is_sweep:
        for analysis in analyses:
            if analysis.compare is not None:
                comparisons[analysis.name] = compare_runs(
                    workdir, analysis, [per_run[run_dir][analysis.name] for run_dir in run_dirs], config)
                log(f"{analysis.name}: comparison across the sweep in {comparisons[analysis.name][0]}")
    out_dir = os.path.join(workdir, ANALYSIS_DIR)
    reported = list(analyses) + [a for a in report_analyses if a.name not in {b.name for b in analyses}]
    sections = []
    for analysis in reported:
        path = os.path.join(out_dir, f"{analysis.name}.json")
        if os.path.exists(path) and (is_sweep or not analysis.needs_sweep):
            sections.append((analysis.title or analysis.name, analysis.sweep_table if is_sweep else analysis.run_table,
                             read_json(path), figure_paths(out_dir, analysis.name)))
    name = os.path.basename(os.path.normpath(workdir))
    title = f"Analyses of the sweep {name}" if is_sweep else f"Analyses of the run {name}"
    path = write_report(os.path.join(out_dir, f"{report}.md"), title, sections)
    log(f"report: {path}")
    return {"runs": per_run, "comparisons": comparisons, "report": path}


def seed_stat(values: Sequence[float | None]) -> dict[str, float]:
    """{'mean', 'std' (ddof 1; 0 for one value), 'n'} over seeds of the finite values (NaN mean and std for none)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    mean, std = mean_std(finite)
    return {"mean": mean, "std": std, "n": len(finite)}


def format_stat(stat: Mapping[str, float], digits: int = 3) -> str:
    """'mean ± std' of a `seed_stat`."""
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def by_alpha(per_run: Sequence[Mapping[str, Any]]) -> dict[float, list[Mapping[str, Any]]]:
    """Per-run results grouped by alpha (ascending), seeds in order."""
    grouped: dict[float, list[Mapping[str, Any]]] = {}
    for result in sorted(per_run, key=lambda r: (r["alpha"], r["seed"])):
        grouped.setdefault(float(result["alpha"]), []).append(result)
    return grouped
