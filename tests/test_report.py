"""Sweep reports on a small fake sweep written file by file, with numbers whose means and stds are known.

The fake sweep: alphas -1, 0 and 100 with seeds 0 and 1, where (100, 1) is unfinished (config.json and
metrics.jsonl, no results.json), and a sweep.json that also plans alpha 10, whose two runs are absent.
"""

import csv
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from selectivity_jax.report import figures
from selectivity_jax.report.runs import MissingRun, load_sweep
from selectivity_jax.rundir import run_dirname
from selectivity_jax.report.tables import csv_columns, markdown_report, mean_std, summarize, write_csv
from selectivity_jax.rundir import write_json

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
    with open(run_dir / "metrics.jsonl", "w") as f:
        for epoch in (1, 2):
            f.write(json.dumps({"epoch": epoch, "step": 10 * epoch, "train_loss": 1.0 / epoch,
                                "val_accuracy": 0.5, "val_selectivity": 0.3}) + "\n")
    if numbers is None:
        return
    accuracy, selectivity = numbers
    rng = np.random.default_rng(seed + 10)
    units = {name: np.clip(rng.normal(selectivity + offset, 0.05, size=8 * (i + 1)), 0.0, 1.0)
             for i, (name, offset) in enumerate(zip(LAYERS, LAYER_OFFSETS))}
    np.savez(run_dir / "selectivity.npz", **units)
    write_json(str(run_dir / "results.json"), {
        "test_accuracy": accuracy, "test_selectivity": selectivity, "test_dead_unit_fraction": 0.01 * seed,
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
    assert [row["epoch"] for row in run.metrics] == [1, 2]


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
