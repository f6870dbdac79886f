"""Sweep reports on a small fake sweep written file by file, with numbers whose means and stds are known, and on the
tiny trained sweep (fixture `tiny_sweep`).

The fake sweep: alphas -1, 0 and 100 with seeds 0 and 1, where (100, 1) is unfinished (config.json and
metrics.jsonl, no results.json), and a sweep.json that also plans alpha 10, whose two runs are absent. Each finished
run's dead-unit fractions are 0, 0.01 · seed and 0.02 · seed by layer (network: 0.01 · seed, their mean); its
metrics.jsonl logs train selectivity = test selectivity · epoch / 2 at epochs 1 and 2, and val selectivity = test
selectivity at epoch 2 only.
"""

import csv
import json
import math
import os
import pathlib
import subprocess
import sys

import shutil

import numpy as np
import pytest
from matplotlib.figure import Figure

from selectivity_jax.report import figures
from selectivity_jax.report.compare import load_comparison
from selectivity_jax.report.runs import MissingRun, load_sweep
from selectivity_jax.report.sweep_report import write_sweep_report
from selectivity_jax.rundir import run_dirname
from selectivity_jax.report.tables import (LAYER_SELECTIVITY_KEY, csv_columns, dead_fractions, intervals_by_alpha,
                                           markdown_report, mean_std, summarize, t_interval, t_quantile,
                                           training_curves, write_csv)
from selectivity_jax.rundir import read_json, write_json

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ["stage1_block0/out", "stage2_block0/out", "stage3_block0/out"]
LAYER_OFFSETS = [-0.05, 0.0, 0.05]  # per-layer selectivity = network selectivity + offset (so the mean is exact)
# (alpha, seed) -> (test accuracy, network selectivity); None: unfinished
RUNS = {(-1.0, 0): (0.80, 0.10), (-1.0, 1): (0.84, 0.14),
        (0.0, 0): (0.90, 0.40), (0.0, 1): (0.92, 0.44),
        (100.0, 0): (0.50, 0.80), (100.0, 1): None}
PLANNED = {"alphas": [-1, 0, 10, 100], "seeds": [0, 1], "config": {"model": {"name": "resnet20"}}}
SQRT2 = math.sqrt(2.0)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(sweep_dir: pathlib.Path, alpha: float, seed: int, numbers: tuple[float, float] | None) -> None:
    """One run directory as the training loop leaves it (finished when ``numbers`` is given)."""
    run_dir = sweep_dir / run_dirname(alpha, seed)
    run_dir.mkdir(parents=True)
    write_json(str(run_dir / "config.json"), {"alpha": alpha, "seed": seed, "model": {"name": "resnet20"},
                                              "data": {"name": "synthetic"}})
    selectivity = numbers[1] if numbers else 0.3
    with open(run_dir / "metrics.jsonl", "w") as f:
        for epoch in (1, 2):
            row = {"epoch": epoch, "step": 10 * epoch, "train_loss": 1.0 / epoch,
                   "train_selectivity": selectivity * epoch / 2}
            if epoch == 2:
                row.update({"val_accuracy": 0.5, "val_selectivity": selectivity})
            f.write(json.dumps(row) + "\n")
    if numbers is None:
        return
    with open(run_dir / "timing.jsonl", "w") as f:  # epoch 2 logged twice (a resume): its last row counts
        for epoch, seconds in ((1, 61.0), (2, 80.0), (2, 59.4)):
            f.write(json.dumps({"epoch": epoch, "epoch_seconds": seconds + seed}) + "\n")
        f.write(json.dumps({"step": 20, "wall_time_seconds_this_call": 500.0}) + "\n")
    accuracy, selectivity = numbers
    rng = np.random.default_rng(seed + 10)
    units = {name: np.clip(rng.normal(selectivity + offset, 0.05, size=8 * (i + 1)), 0.0, 1.0)
             for i, (name, offset) in enumerate(zip(LAYERS, LAYER_OFFSETS))}
    np.savez(run_dir / "selectivity.npz", **units)
    write_json(str(run_dir / "results.json"), {
        "test_accuracy": accuracy, "test_selectivity": selectivity, "test_dead_unit_fraction": 0.01 * seed,
        "per_layer_dead_fraction": {n: 0.01 * seed * i for i, n in enumerate(LAYERS)},
        "per_layer_selectivity": {n: selectivity + o for n, o in zip(LAYERS, LAYER_OFFSETS)},
        "layer_names": LAYERS, "alpha": alpha, "seed": seed, "model": "resnet20"})


def write_sweep(sweep_dir: pathlib.Path, with_plan: bool = True) -> pathlib.Path:
    for (alpha, seed), numbers in RUNS.items():
        write_run(sweep_dir, alpha, seed, numbers)
    if with_plan:
        write_json(str(sweep_dir / "sweep.json"), PLANNED)
    return sweep_dir


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def sweep(sweep_dir):
    return load_sweep(str(sweep_dir))


def test_run_dirname():
    assert run_dirname(-1.0, 0) == "alpha_-1_seed_0"
    assert run_dirname(0.5, 3) == "alpha_0.5_seed_3"
    assert run_dirname(100, 1) == "alpha_100_seed_1"


def test_load_sweep(sweep):
    assert [(run.alpha, run.seed) for run in sweep.runs] == [(-1, 0), (-1, 1), (0, 0), (0, 1), (100, 0)]
    assert sweep.alphas == [-1.0, 0.0, 100.0] and sweep.layer_names == LAYERS and sweep.model == "resnet20"
    assert sweep.planned_alphas == (-1.0, 0.0, 10.0, 100.0) and sweep.planned_seeds == (0, 1)
    assert sweep.missing == (MissingRun(10.0, 0, "absent"), MissingRun(10.0, 1, "absent"),
                             MissingRun(100.0, 1, "unfinished"))
    run = sweep.runs[0]
    assert sorted(run.unit_selectivity) == LAYERS and run.unit_selectivity[LAYERS[2]].shape == (24,)
    assert [row.epoch for row in run.metrics] == [1, 2]


def test_load_sweep_without_plan_uses_the_runs_found(tmp_path):
    sweep = load_sweep(str(write_sweep(tmp_path, with_plan=False)))
    assert sweep.planned_alphas == (-1.0, 0.0, 100.0)
    assert sweep.missing == (MissingRun(100.0, 1, "unfinished"),)


def test_no_finished_run_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no finished run"):
        load_sweep(str(tmp_path))
    write_run(tmp_path, 1.0, 0, None)
    with pytest.raises(ValueError, match="no finished run"):
        load_sweep(str(tmp_path))


def test_duplicate_runs_are_an_error(tmp_path):
    write_run(tmp_path, 1.0, 0, (0.5, 0.5))
    os.rename(tmp_path / run_dirname(1.0, 0), tmp_path / "copy")
    write_run(tmp_path, 1.0, 0, (0.5, 0.5))
    with pytest.raises(ValueError, match="two run directories"):
        load_sweep(str(tmp_path))


def test_mean_std_is_the_sample_std():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(SQRT2))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_summary_values(sweep):
    rows = {s.alpha: s for s in summarize(sweep)}
    assert list(rows) == [-1.0, 0.0, 100.0]
    low, zero, high = rows[-1.0], rows[0.0], rows[100.0]
    assert (low.n, zero.n, high.n) == (2, 2, 1) and high.seeds == (0,)
    assert low.accuracy_mean == pytest.approx(0.82) and low.accuracy_std == pytest.approx(0.02 * SQRT2)
    assert low.selectivity_mean == pytest.approx(0.12) and low.selectivity_std == pytest.approx(0.02 * SQRT2)
    assert zero.accuracy_mean == pytest.approx(0.91) and zero.accuracy_std == pytest.approx(0.01 * SQRT2)
    assert zero.selectivity_mean == pytest.approx(0.42) and zero.selectivity_std == pytest.approx(0.02 * SQRT2)
    assert (high.accuracy_mean, high.accuracy_std) == (pytest.approx(0.5), 0.0)
    assert (high.selectivity_mean, high.selectivity_std) == (pytest.approx(0.8), 0.0)
    assert low.dead_fraction_mean == pytest.approx(0.005)
    assert [zero.layer_selectivity[n] for n in LAYERS] == pytest.approx([0.37, 0.42, 0.47])


def test_csv(sweep, tmp_path):
    path = tmp_path / "report.csv"
    write_csv(summarize(sweep), sweep.layer_names, str(path))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == csv_columns(LAYERS)
    assert reader.fieldnames[:7] == ["alpha", "n", "seeds", "test_accuracy_mean", "test_accuracy_std",
                                     "test_selectivity_mean", "test_selectivity_std"]
    assert [(r["alpha"], r["n"], r["seeds"]) for r in rows] == [("-1", "2", "0 1"), ("0", "2", "0 1"),
                                                                 ("100", "1", "0")]
    assert float(rows[0]["test_accuracy_mean"]) == pytest.approx(0.82)
    assert float(rows[0]["test_accuracy_std"]) == pytest.approx(0.02 * SQRT2)
    assert float(rows[2]["test_selectivity_std"]) == 0.0
    assert float(rows[1][f"selectivity/{LAYERS[2]}"]) == pytest.approx(0.47)


def test_markdown_report(sweep):
    text = markdown_report(sweep, summarize(sweep), {"Test accuracy vs α": "figures/accuracy_vs_alpha.png"})
    assert text.startswith("# Class-selectivity sweep: resnet20 on synthetic")
    assert "| -1 | 2 | 0.8200 ± 0.0283 | 0.1200 ± 0.0283 |" in text
    assert "| 100 | 1 | 0.5000 ± 0.0000 | 0.8000 ± 0.0000 |" in text
    assert "4 alphas × 2 seeds = 8 runs" in text and "Finished: 5 runs" in text
    assert "| `stage3_block0/out` | 0.170 | 0.470 | 0.850 |" in text
    runs = text.split("## Runs")[1].split("##")[0]  # older results name neither steps nor devices nor validation
    assert "| -1 | 0 | 0.8000 | 0.1000 | — | ? | ? x ? | 2m00s (1m00s) |" in runs
    assert "| 0 | 1 | 0.9200 | 0.4400 | — | ? | ? x ? | 2m02s (1m01s) |" in runs and runs.count("\n| ") == 7  # header, rule, 5 runs
    assert "![Test accuracy vs α](figures/accuracy_vs_alpha.png)" in text
    missing = text.split("## Missing runs")[1]
    for line in ("alpha 10, seed 0: absent", "alpha 10, seed 1: absent", "alpha 100, seed 1: unfinished"):
        assert line in missing


def test_figure_functions_return_figures(sweep):
    made = [figures.accuracy_vs_alpha(sweep), figures.selectivity_vs_alpha(sweep),
            figures.accuracy_vs_selectivity(sweep), figures.layer_selectivity(sweep),
            figures.unit_selectivity_distribution(sweep), figures.unit_selectivity_distribution(sweep, [0.0])]
    assert all(isinstance(fig, Figure) and fig.axes for fig in made)
    assert figures.distribution_alphas(sweep) == [-1.0, 0.0, 100.0]
    assert list(figures.make_figures(sweep)) == list(figures.FIGURE_CAPTIONS)
    assert figures.pooled_units(sweep, -1.0, LAYERS[0]).shape == (16,)  # two seeds of 8 units


def test_a_single_run_has_std_zero_and_draws(tmp_path):
    write_run(tmp_path, 0.0, 0, (0.9, 0.4))
    sweep = load_sweep(str(tmp_path))
    (summary,) = summarize(sweep)
    assert (summary.n, summary.accuracy_std, summary.selectivity_std) == (1, 0.0, 0.0)
    for fig in figures.make_figures(sweep).values():
        fig.canvas.draw()


def run_report(*args):
    return subprocess.run([sys.executable, "-m", "experiments.report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_writes_report_and_figures(sweep_dir, tmp_path):
    out = tmp_path / "out"
    result = run_report("--sweep", str(sweep_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(out / "report.md") in result.stdout and "missing runs (3)" in result.stdout
    for name in figures.FIGURE_CAPTIONS:
        png, svg = out / "figures" / f"{name}.png", out / "figures" / f"{name}.svg"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
        assert b"<svg" in svg.read_bytes()[:2000]
    text = (out / "report.md").read_text()
    assert "](figures/layer_selectivity.png)" in text and "alpha 100, seed 1: unfinished" in text
    with open(out / "report.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 4  # header + 3 alphas


def test_cli_without_finished_runs_is_one_error_line(tmp_path):
    write_run(tmp_path, 1.0, 0, None)
    result = run_report("--sweep", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: no finished run in ")
    assert not (tmp_path / "report.md").exists()


def test_alpha_ticks_label_small_grids_fully_and_large_grids_by_decade():
    from configs.base import CIFAR10_ALPHAS, TINY_IMAGENET_ALPHAS
    from selectivity_jax.report.figures import alpha_ticks
    assert alpha_ticks([5.0, -5.0, 0.0, -1.0, 1.0, 1.0]) == [-5.0, -1.0, 0.0, 1.0, 5.0]
    assert alpha_ticks(CIFAR10_ALPHAS) == [-100.0, -10.0, -1.0, -0.1, 0.0, 0.1, 1.0, 10.0, 100.0]
    assert alpha_ticks(TINY_IMAGENET_ALPHAS) == [-5.0, -1.0, -0.1, 0.0, 0.1, 1.0, 5.0]


# ----------------------------------------------------------------------------------------------------------------------
# confidence intervals, the paper's figure layout, dead units, selectivity over training, sweep comparisons
# ----------------------------------------------------------------------------------------------------------------------

def test_t_quantiles_match_the_table():
    # two-sided 95% critical values of Student's t from a printed table (e.g. NIST/SEMATECH e-Handbook, 1.3.6.7.2)
    table = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 30: 2.042}
    assert {dof: round(t_quantile(0.95, dof), 3) for dof in table} == table
    assert round(t_quantile(0.99, 4), 3) == 4.604
    for level, dof in ((1.0, 3), (0.0, 3), (0.95, 0)):
        with pytest.raises(ValueError, match="^(level|dof): "):
            t_quantile(level, dof)


def test_t_interval_by_hand():
    values = [0.80, 0.84, 0.90]
    mean = (0.80 + 0.84 + 0.90) / 3
    std = math.sqrt(((0.80 - mean) ** 2 + (0.84 - mean) ** 2 + (0.90 - mean) ** 2) / 2)
    interval = t_interval(values)
    assert interval.n == 3 and interval.mean == pytest.approx(mean)
    assert interval.half_width == pytest.approx(4.302652729749464 * std / math.sqrt(3))  # t_{0.975, 2}
    assert interval.half_width == pytest.approx(0.12503, abs=1e-5)
    assert (interval.low, interval.high) == (pytest.approx(mean - 0.12503, abs=1e-5),
                                             pytest.approx(mean + 0.12503, abs=1e-5))
    one = t_interval([0.5, math.nan])  # non-finite values are left out: one seed, no interval
    assert (one.n, one.mean) == (1, 0.5) and math.isnan(one.half_width)
    none = t_interval([])
    assert none.n == 0 and math.isnan(none.mean) and math.isnan(none.half_width)


def test_intervals_by_alpha(sweep):
    rows = {i.alpha: i for i in intervals_by_alpha(sweep)}
    # alpha -1: accuracies 0.80, 0.84 -> s = 0.02 · sqrt(2), half width t_{0.975,1} · s / sqrt(2) = 12.7062 · 0.02
    assert rows[-1.0].accuracy.mean == pytest.approx(0.82)
    assert rows[-1.0].accuracy.half_width == pytest.approx(12.706205 * 0.02, rel=1e-6)
    assert rows[0.0].selectivity.half_width == pytest.approx(12.706205 * 0.02, rel=1e-6)
    assert rows[100.0].n == 1 and math.isnan(rows[100.0].accuracy.half_width)


def test_split_at_zero_puts_zero_in_both_halves():
    assert figures.split_at_zero([100, -1, 0, -1.0, 0.5]) == ([-1.0, 0.0], [0.0, 0.5, 100.0])
    assert figures.split_at_zero([1, 2]) == ([], [1.0, 2.0])
    assert figures.split_at_zero([-3, 0]) == ([-3.0, 0.0], [0.0])


def _bars(ax):
    """{alpha: (low, high)} of the confidence-interval error bars drawn on ``ax``."""
    bars = {}
    for container in ax.containers:
        for segment in container.lines[2][0].get_segments():
            bars[float(segment[0][0])] = (float(segment[0][1]), float(segment[1][1]))
    return bars


def test_paper_figure_layout(sweep):
    fig = figures.paper_accuracy_selectivity(sweep)
    (sel_left, sel_right), (acc_left, acc_right) = np.reshape(fig.axes[:4], (2, 2))
    for left, right, value in ((sel_left, sel_right, "selectivity"), (acc_left, acc_right, "accuracy")):
        assert list(left.get_lines()[0].get_xdata()) == [-1.0, 0.0]
        assert list(right.get_lines()[0].get_xdata()) == [0.0, 100.0]
    assert list(acc_left.get_lines()[0].get_ydata()) == pytest.approx([0.82, 0.91])
    assert list(sel_right.get_lines()[0].get_ydata()) == pytest.approx([0.42, 0.8])
    # 95% t intervals where there are two seeds; none at alpha 100 (one seed)
    half = 12.706205 * 0.02
    assert _bars(acc_left)[-1.0] == (pytest.approx(0.82 - half, rel=1e-6), pytest.approx(0.82 + half, rel=1e-6))
    assert sorted(_bars(acc_right)) == [0.0]
    # the zoomed inset (|alpha| <= 1) on the alpha <= 0 accuracy panel only
    (inset,) = acc_left.child_axes
    assert list(inset.get_lines()[0].get_xdata()) == [-1.0, 0.0]
    assert not acc_right.child_axes and not sel_left.child_axes
    assert not figures.paper_accuracy_selectivity(sweep, inset_max_abs_alpha=0.5).axes[2].child_axes
    fig.canvas.draw()
    for ax in fig.axes[:4]:  # every tick on an alpha axis is labelled (symlog's minor ticks left out)
        assert len(ax.xaxis.get_minorticklocs()) == 0
        assert all(label.get_text() for label in ax.get_xticklabels())


def test_dead_units_figure_of_the_fake_sweep(sweep):
    dead = dead_fractions(sweep)
    assert dead.alphas == [-1.0, 0.0, 100.0] and dead.layers == LAYERS and not dead.empty
    assert [dead.per_layer[n][0] for n in LAYERS] == pytest.approx([0.0, 0.005, 0.01])  # seeds 0 and 1
    assert dead.network == pytest.approx([0.005, 0.005, 0.0])
    lines = {line.get_label(): list(line.get_ydata()) for line in figures.dead_units_vs_alpha(sweep).axes[0].lines}
    assert lines[LAYERS[2]] == pytest.approx([0.01, 0.01, 0.0])
    assert lines["network (mean over layers)"] == pytest.approx(dead.network)


def test_selectivity_over_training_of_the_fake_sweep(sweep):
    train = {c.alpha: c for c in training_curves(sweep, "train_selectivity")}
    val = {c.alpha: c for c in training_curves(sweep, "val_selectivity")}
    assert (train[-1.0].epochs, train[-1.0].values) == ([1, 2], pytest.approx([0.06, 0.12]))
    assert (val[-1.0].epochs, val[-1.0].values) == ([2], pytest.approx([0.12]))
    assert train[100.0].values == pytest.approx([0.4, 0.8]) and train[100.0].seeds == 1  # the unfinished seed left out
    assert training_curves(sweep, "no_such_column") == []
    fig = figures.selectivity_over_training(sweep)
    train_ax, val_ax = fig.axes[:2]
    assert [list(line.get_ydata()) for line in train_ax.lines] == [pytest.approx(c.values) for c in train.values()]
    assert [list(line.get_xdata()) for line in val_ax.lines] == [[2], [2], [2]]


def test_dead_units_and_training_curves_of_the_tiny_sweep_match_its_files(tiny_sweep):
    sweep = load_sweep(str(tiny_sweep))
    results = {run.alpha: read_json(os.path.join(run.path, "results.json")) for run in sweep.runs}
    dead = dead_fractions(sweep)
    assert dead.layers == results[0.0]["layer_names"] and dead.alphas == sorted(results)
    for name in dead.layers:  # one seed: the figure's values are the files' values
        assert dead.per_layer[name] == [results[a]["per_layer_dead_fraction"][name] for a in dead.alphas]
    assert dead.network == [results[a]["test_dead_unit_fraction"] for a in dead.alphas]
    lines = {line.get_label(): list(line.get_ydata()) for line in figures.dead_units_vs_alpha(sweep).axes[0].lines}
    assert {name: lines[name] for name in dead.layers} == dead.per_layer
    assert lines["network (mean over layers)"] == dead.network
    for curve in training_curves(sweep, "val_selectivity"):
        (run,) = sweep.runs_at(curve.alpha)
        rows = [json.loads(line) for line in open(os.path.join(run.path, "metrics.jsonl"))]
        assert curve.epochs == [row["epoch"] for row in rows if "val_selectivity" in row]
        assert curve.values == [row["val_selectivity"] for row in rows if "val_selectivity" in row]
    assert [c.alpha for c in training_curves(sweep, "val_selectivity")] == sweep.alphas
    # per layer on the validation split: the rows' values, whose mean over layers is the network selectivity
    for name in dead.layers:
        for curve in training_curves(sweep, LAYER_SELECTIVITY_KEY, name):
            (run,) = sweep.runs_at(curve.alpha)
            rows = [json.loads(line) for line in open(os.path.join(run.path, "metrics.jsonl"))]
            assert curve.values == [row[LAYER_SELECTIVITY_KEY][name] for row in rows if "val_selectivity" in row]
    for run in sweep.runs:
        for row in run.metrics:
            if row.val_selectivity is not None:
                assert np.mean(list(row.val_layer_selectivity.values())) == pytest.approx(row.val_selectivity)
    fig = figures.selectivity_over_training(sweep)
    titles = [ax.get_title() for ax in fig.axes]
    assert [t for t in titles if t.startswith("validation, ")] == [f"validation, {name}" for name in dead.layers]
    fig.canvas.draw()  # one colour bar beside all the panels, not squeezed beside the last one
    *panels, bar = fig.axes
    drawn = [ax for ax in panels if ax.get_visible()]  # the grid's unused slots are hidden
    network_panels = len(figures.TRAINING_SELECTIVITY_KEYS)
    assert bar.get_ylabel() == "α" and len(drawn) == network_panels + len(dead.layers)
    span = max(ax.get_position().y1 for ax in drawn) - min(ax.get_position().y0 for ax in drawn)
    assert bar.get_position().height > 0.8 * span
    layer_axes = drawn[network_panels:]  # the layers' panels share one y range; a single epoch is a visible point
    assert len({ax.get_ylim() for ax in layer_axes}) == 1
    assert all(line.get_markersize() == (7 if len(line.get_xdata()) == 1 else 3) for ax in layer_axes
               for line in ax.lines)


def test_cli_against_writes_the_report_and_the_comparison(tiny_sweep, tmp_path):
    other = tmp_path / "sweeps" / "without_bn"  # a copy of the tiny sweep: accuracy 0.5 everywhere, alpha 2 unfinished
    shutil.copytree(tiny_sweep, other, ignore=shutil.ignore_patterns("checkpoints", "analysis"))
    for alpha in (-2.0, 0.0):
        path = other / run_dirname(alpha, 0) / "results.json"
        write_json(str(path), {**read_json(str(path)), "test_accuracy": 0.5})
    os.remove(other / run_dirname(2.0, 0) / "results.json")
    out = tmp_path / "out"
    result = run_report("--sweep", str(tiny_sweep), "--out", str(out), "--against", str(other),
                        "--labels", "with_bn,without_bn")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = out / "against_without_bn"
    assert f"comparison: {folder / 'comparison.md'}" in result.stdout
    for name in figures.FIGURE_CAPTIONS:  # every figure of the report, the new ones included, as PNG and SVG
        png, svg = out / "figures" / f"{name}.png", out / "figures" / f"{name}.svg"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000, name
        assert b"<svg" in svg.read_bytes()[:2000]
    assert (folder / "figures" / "accuracy_selectivity_vs_alpha.png").read_bytes()[:8] == PNG_MAGIC
    report = (out / "report.md").read_text()
    assert "](figures/paper_accuracy_selectivity.png)" in report and "## Dead units" in report
    assert "[against without_bn](against_without_bn/comparison.md)" in report
    mine = {run.alpha: run.results.test_accuracy for run in load_sweep(str(tiny_sweep)).runs}
    with open(folder / "comparison.csv", newline="") as f:
        rows = {row["alpha"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["-2", "0", "2"]
    assert [float(rows[a]["with_bn/test_accuracy_mean"]) for a in rows] == pytest.approx(list(mine.values()))
    assert [rows[a]["without_bn/test_accuracy_mean"] for a in rows] == ["0.5", "0.5", ""]
    assert rows["0"]["with_bn/n"] == "1" and rows["0"]["with_bn/test_accuracy_ci"] == ""  # one seed: no interval
    text = (folder / "comparison.md").read_text()
    assert text.startswith("# Sweep comparison: with_bn vs without_bn")
    assert f"| 0 | 1 / 1 | {mine[0.0]:.4f} (no interval) | 0.5000 (no interval) | {0.5 - mine[0.0]:+.4f} |" in text
    assert f"| 2 | 1 / 0 | {mine[2.0]:.4f} (no interval) | — | — |" in text


def test_against_errors_are_one_line(tiny_sweep, tmp_path):
    result = run_report("--sweep", str(tiny_sweep), "--out", str(tmp_path / "out"), "--against",
                        str(tmp_path / "absent"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"error: against: {tmp_path / 'absent'} is not a directory "
                                                      "(expected a sweep directory)")
    assert not (tmp_path / "out").exists()  # nothing written
    unfinished = tmp_path / "unfinished"
    write_run(unfinished, 1.0, 0, None)
    with pytest.raises(ValueError, match=r"^against: no finished run in ") as error:
        load_comparison(str(tiny_sweep), str(unfinished))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="is the reported sweep itself"):
        load_comparison(str(tiny_sweep), str(tiny_sweep) + "/")
    with pytest.raises(ValueError, match="^labels: "):
        load_comparison(str(tiny_sweep), str(unfinished), labels=["only_one"])
    with pytest.raises(ValueError, match="^labels: .*--against"):
        write_sweep_report(str(tiny_sweep), str(tmp_path / "out"), labels=["a", "b"])
    assert not (tmp_path / "out").exists()


def test_comparison_default_labels_tell_same_named_sweeps_apart(sweep_dir, tmp_path):
    from selectivity_jax.report.compare import default_labels
    assert default_labels("/runs/with_bn", "/runs/without_bn/") == ("with_bn", "without_bn")
    assert default_labels("/a/bn/sweep", "/b/bn/sweep") == ("a/bn/sweep", "b/bn/sweep")
    copy = tmp_path / "copy" / sweep_dir.name
    shutil.copytree(sweep_dir, copy)
    comparison = load_comparison(str(sweep_dir), str(copy))
    assert comparison.labels == (f"{sweep_dir.parent.name}/{sweep_dir.name}", f"copy/{sweep_dir.name}")
    assert comparison.alphas == [-1.0, 0.0, 100.0]
    assert figures.sweeps_vs_alpha(comparison.sweeps, comparison.labels).axes[0].get_legend() is not None
