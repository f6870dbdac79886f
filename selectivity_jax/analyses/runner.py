"""Runs analyses over a run directory or a whole sweep: one JSON and figures per analysis per run, then a comparison
across the alphas of a sweep and one Markdown report. Resumable: an analysis whose JSON exists with the same
settings is read back instead of computed again.

Layout (``<name>`` is one of `selectivity_jax.analyses.NAMES`):

- ``<run>/analysis/<name>.json`` and ``<run>/analysis/<name>_<figure>.png|svg``;
- ``<sweep>/analysis/<name>.json`` (the comparison) and ``<sweep>/analysis/<name>_<figure>.png|svg``;
- ``<workdir>/analysis/report.md``: the summary table and figures of every analysis done so far;
- with `compare_models`, runs of different models side by side: ``<out>/models.md`` and ``<out>/<name>_<figure>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from selectivity_jax import analyses as registry
from selectivity_jax.analyses.base import SHARED_SETTINGS, Analysis, RunContext, RunResult, analysis_settings
from selectivity_jax.rundir import (ANALYSIS_DIR, DirectoryLock, find_finished_runs, read_json, read_run_config,
                                    write_json)
from selectivity_jax.trained import TrainedRun

REPORT_FILE = "report.md"
MODELS_FILE = "models.md"


@dataclasses.dataclass(frozen=True)
class AnalysisOutcome:
    """What `run_analyses` did: every run's results ({run_dir: {name: RunResult}}), each sweep comparison written
    ({name: JSON path}) and the report's path."""
    runs: dict[str, dict[str, RunResult]]
    comparisons: dict[str, str]
    report: str


def check_settings(config: ml_collections.ConfigDict, analyses: Sequence[Analysis]) -> None:
    """ValueError (one line) for settings the analyses cannot run with, before anything is loaded or written."""
    if config.num_examples < 0 or config.batch_size < 1:
        raise ValueError(f"num_examples must be >= 0 and batch_size >= 1; got {config.num_examples}, "
                         f"{config.batch_size}")
    for analysis in analyses:
        if analysis.name not in config:
            raise ValueError(f"the analysis settings have no section {analysis.name!r} (configs/analysis.py)")
        analysis.check(config[analysis.name])


def _save_figures(figures: dict[str, Any], directory: str, name: str) -> list[str]:
    from selectivity_jax.report.figures import save_figure
    paths = []
    for figure_name, figure in figures.items():
        paths += save_figure(figure, os.path.join(directory, f"{name}_{figure_name}"))
    return paths


def analyze_run(context: RunContext, analyses: Sequence[Analysis], config: ml_collections.ConfigDict
                ) -> dict[str, RunResult]:
    """Computes (or reads back) each analysis of one run; writes its JSON and figures; returns {name: RunResult}."""
    log, run_dir = context.log, context.run_dir
    out_dir = os.path.join(run_dir, ANALYSIS_DIR)
    os.makedirs(out_dir, exist_ok=True)
    results = {}
    for analysis in analyses:
        path = os.path.join(out_dir, f"{analysis.name}.json")
        settings = analysis_settings(config, analysis.name, config[analysis.name])
        if os.path.exists(path):
            stored = read_json(path)
            if stored.get("settings") == settings:
                log(f"  {analysis.name}: done before, {path}")
                results[analysis.name] = RunResult.from_json(stored, analysis.result_type, run_dir)
                continue
        start = time.time()
        log(f"  {analysis.name}: computing ...")
        computed = analysis.run(context, config[analysis.name])
        run_results = context.results
        result = RunResult(analysis=analysis.name, alpha=float(run_results.alpha), seed=int(run_results.seed),
                           test_accuracy=run_results.test_accuracy,
                           test_selectivity=run_results.test_selectivity, result=computed, settings=settings,
                           seconds=time.time() - start, run_dir=run_dir)
        _save_figures(analysis.run_figures(result), out_dir, analysis.name)
        write_json(path, result.to_json())  # last: a JSON on disk means the analysis and its figures are complete
        log(f"  {analysis.name}: {time.time() - start:.1f}s, {path}")
        results[analysis.name] = result
    return results


def compare_runs(sweep_dir: str, analysis: Analysis, results: Sequence[RunResult],
                 config: ml_collections.ConfigDict) -> str | None:
    """The sweep-level comparison of one analysis: JSON and figures in ``<sweep>/analysis/`` (None: it has none)."""
    comparison = analysis.compare(results, config[analysis.name])
    if comparison is None:
        return None
    out_dir = os.path.join(sweep_dir, ANALYSIS_DIR)
    _save_figures(analysis.sweep_figures(comparison), out_dir, analysis.name)
    path = os.path.join(out_dir, f"{analysis.name}.json")
    write_json(path, {"analysis": analysis.name, **comparison.to_json()})
    return path


def figure_paths(directory: str, name: str) -> list[str]:
    """The PNG figures of analysis ``name`` in ``directory`` (``<name>_<figure>.png``), sorted."""
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.startswith(name + "_") and f.endswith(".png"))


def write_report(workdir: str, is_sweep: bool) -> str:
    """``<workdir>/analysis/report.md``: a section per analysis with results in ``<workdir>/analysis/`` (a sweep's
    comparisons, or one run's results), its table and its figures."""
    out_dir = os.path.join(workdir, ANALYSIS_DIR)
    path = os.path.join(out_dir, REPORT_FILE)
    name = os.path.basename(os.path.normpath(workdir))
    lines = [f"# Analyses of the {'sweep' if is_sweep else 'run'} {name}", ""]
    present = [name for name in registry.NAMES if os.path.exists(os.path.join(out_dir, f"{name}.json"))]
    for analysis in map(registry.load, present):
        json_path = os.path.join(out_dir, f"{analysis.name}.json")
        if analysis.needs_sweep and not is_sweep:
            continue
        stored = read_json(json_path)
        if is_sweep:
            table = analysis.sweep_table(analysis.comparison_type.from_json(stored))
        else:
            table = analysis.run_table(RunResult.from_json(stored, analysis.result_type, workdir))
        lines += [f"## {analysis.title}", ""] + ([table, ""] if table else [])
        for png in figure_paths(out_dir, analysis.name):
            lines += [f"![{os.path.splitext(os.path.basename(png))[0]}]({os.path.relpath(png, out_dir)})", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


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
                 log: Callable[[str], None] = print) -> AnalysisOutcome:
    """Every analysis on every finished run of ``workdir`` (a run or a sweep), then the sweep comparisons and the
    report ``<workdir>/analysis/report.md``. Settings (configs/analysis.py) are checked before anything is loaded;
    the ``analysis/`` folders are locked meanwhile (`analysis_locks`)."""
    is_sweep, run_dirs = find_finished_runs(workdir)
    lone = [a.name for a in analyses if a.needs_sweep]
    if lone and not is_sweep:
        raise ValueError(f"{', '.join(lone)} compares the runs of a sweep: pass a sweep directory, not one run")
    check_settings(config, analyses)
    alphas = [float(read_run_config(run_dir)["alpha"]) for run_dir in run_dirs]
    for analysis in analyses:
        analysis.check_runs(alphas)
    shared = ml_collections.ConfigDict({key: config[key] for key in (*SHARED_SETTINGS, "batch_size", "cache_dir")})
    with analysis_locks(workdir, run_dirs, log):
        log(f"{len(run_dirs)} run(s) in {workdir}; analyses {', '.join(a.name for a in analyses)}")
        per_run: dict[str, dict[str, RunResult]] = {}
        for index, run_dir in enumerate(run_dirs):
            log(f"run {index + 1}/{len(run_dirs)}: {run_dir}")
            per_run[run_dir] = analyze_run(RunContext(run_dir, shared, log), analyses, config)
        comparisons = {}
        if is_sweep:
            for analysis in analyses:
                path = compare_runs(workdir, analysis, [per_run[run_dir][analysis.name] for run_dir in run_dirs],
                                    config)
                if path is not None:
                    comparisons[analysis.name] = path
                    log(f"{analysis.name}: comparison across the sweep in {path}")
        report = write_report(workdir, is_sweep)
        log(f"report: {report}")
    return AnalysisOutcome(runs=per_run, comparisons=comparisons, report=report)


def _check_editable(model: TrainedRun, analyses: Sequence[Analysis], layers: Sequence[str]) -> None:
    """Refuses, before any work, analyses that edit layers (ablation, rotation) of a `from_flax` model whose layers
    are sown values: the edits reach module outputs through ``flax.linen.intercept_methods``, not sown values."""
    editing = [a.name for a in analyses if a.edits_layers]
    sown = [name for name in layers if name in getattr(model.model, "sown", ())]
    if editing and sown:
        raise ValueError(f"{', '.join(editing)} edit layer outputs, which reach module outputs only; {sown} are sown "
                         f"values: write those ReLUs as modules (x = selectivity_jax.ReLU(name='relu1')(x) instead of "
                         f"nn.relu and sow) to analyse them with {', '.join(editing)}, or leave them out (layers)")


def analyze_model(model: TrainedRun, test_split: tuple[np.ndarray, np.ndarray], analyses: Sequence[Analysis],
                  config: ml_collections.ConfigDict, out_dir: str, *, log: Callable[[str], None] = print
                  ) -> dict[str, RunResult]:
    """The analyses of a model trained anywhere (`selectivity_jax.trained.from_flax`) on its test split (uint8
    images [N, H, W, C] or float in [0, 1], labels [N]): ``<out_dir>/analysis/<name>.json`` and figures, resumable
    by settings as for a run directory, and ``<out_dir>/analysis/report.md``. Analyses that compare runs of a sweep
    (similarity) need run directories."""
    lone = [a.name for a in analyses if a.needs_sweep]
    if lone:
        raise ValueError(f"{', '.join(lone)} compares the runs of a sweep: train them as a sweep of run directories")
    check_settings(config, analyses)
    _check_editable(model, analyses, list(config.layers) or list(model.layer_names))
    shared = ml_collections.ConfigDict({key: config[key] for key in (*SHARED_SETTINGS, "batch_size", "cache_dir")})
    os.makedirs(out_dir, exist_ok=True)
    with analysis_locks(out_dir, [], log):
        results = analyze_run(RunContext(out_dir, shared, log, run=model, test_split=test_split), analyses, config)
        log(f"report: {write_report(out_dir, is_sweep=False)}")
    return results


def compare_models(run_dirs: Sequence[str], analyses: Sequence[Analysis], out_dir: str,
                   labels: Sequence[str] | None = None, *, log: Callable[[str], None] = print) -> str:
    """Runs of different models side by side (e.g. Chen et al.'s RS by depth for their CNN, MLP and VGG16): reads
    each run's ``analysis/<name>.json`` (computed before, with each model's own layers) and writes the analyses'
    `Analysis.compare_models` table and figures into ``out_dir`` (``models.md``, ``<name>_<figure>.png|svg``).
    ``labels`` default to the runs' model names. Everything is checked before anything is written."""
    if len(run_dirs) < 2:
        raise ValueError(f"comparing models needs at least two run directories; got {len(run_dirs)}")
    for run_dir in run_dirs:
        is_sweep, _ = find_finished_runs(run_dir)
        if is_sweep:
            raise ValueError(f"{run_dir} is a sweep: pass one run directory per model, e.g. {run_dir}/alpha_0_seed_0")
    if labels is None:
        labels = [str(read_run_config(run_dir)["model"]["name"]) for run_dir in run_dirs]
    if len(labels) != len(run_dirs) or len(set(labels)) != len(labels):
        raise ValueError(f"need one distinct label per run directory ({len(run_dirs)}); got {list(labels)}: "
                         "name them with --labels")
    missing = [a.name for a in analyses if type(a).compare_models is Analysis.compare_models]
    if missing:
        raise ValueError(f"{', '.join(missing)} has no comparison across models")
    results: dict[str, dict[str, RunResult]] = {}
    for analysis in analyses:
        results[analysis.name] = {}
        for label, run_dir in zip(labels, run_dirs):
            path = os.path.join(run_dir, ANALYSIS_DIR, f"{analysis.name}.json")
            if not os.path.exists(path):
                raise ValueError(f"{run_dir} has no {analysis.name} result: run python -m experiments.analyze "
                                 f"--workdir {run_dir} --analysis {analysis.name} first")
            results[analysis.name][label] = RunResult.from_json(read_json(path), analysis.result_type, run_dir)
    views = {analysis.name: analysis.compare_models(results[analysis.name]) for analysis in analyses}
    os.makedirs(out_dir, exist_ok=True)
    lines = [f"# {', '.join(labels)}", "", *(f"- {label}: `{run_dir}`" for label, run_dir in zip(labels, run_dirs)), ""]
    for analysis in analyses:
        view = views[analysis.name]
        lines += [f"## {analysis.title}", "", view.table, ""]
        for path in _save_figures(view.figures, out_dir, analysis.name):
            if path.endswith(".png"):
                lines += [f"![{os.path.splitext(os.path.basename(path))[0]}]({os.path.basename(path)})", ""]
    path = os.path.join(out_dir, MODELS_FILE)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    log(f"models compared: {path}")
    return path
