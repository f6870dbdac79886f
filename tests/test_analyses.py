"""The representation analyses end to end on a tiny trained sweep: every JSON, figure and report, resumption, and
the hook's sanity check (rotating a layer and rotating it back leaves the accuracy unchanged)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import analysis as analysis_config
from helpers import with_overrides
from selectivity_jax.analysis.pipeline import run_analyses
from selectivity_jax.analysis.tasks import ANALYSES, get_analyses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("stage3_block2/out",)
SMALL = {"layers": LAYERS, "num_examples": 40, "batch_size": 40, "basis.steps": 5, "rotation.num_t": 3,
         "rs.steps": 4, "rs.max_units": 4, "rs.grid_units": 2, "ablation.num_points": 3}


def small_config():
    return with_overrides(analysis_config.get_config(), SMALL)


@pytest.fixture(scope="module")
def analysed(tiny_sweep):
    lines = []
    out = run_analyses(str(tiny_sweep), get_analyses(list(ANALYSES)), small_config(), log=lines.append,
                       report_analyses=list(ANALYSES.values()))
    return tiny_sweep, out, lines


def test_every_analysis_writes_json_figures_and_report(analysed):
    sweep, out, _ = analysed
    for run in ("alpha_-2_seed_0", "alpha_0_seed_0", "alpha_2_seed_0"):
        files = set(os.listdir(sweep / run / "analysis"))
        assert {f"{name}.json" for name in ANALYSES} <= files
        for figure in ("ablation_curves", "ablation_importance", "basis_layers", "rotation_curves", "rs_spearman",
                       "rs_grid"):
            assert f"{figure}.png" in files and f"{figure}.svg" in files, figure
    files = set(os.listdir(sweep / "analysis"))
    for figure in ("ablation_curves", "ablation_summary", "basis_summary", "basis_layers", "rotation_curves",
                   "rotation_summary", "similarity_layers", "similarity_summary", "rs_spearman", "rs_summary"):
        assert f"{figure}.png" in files, figure
    report = (sweep / "analysis" / "report.md").read_text()
    for analysis in ANALYSES.values():
        assert f"## {analysis.title}" in report
    for png in (line[line.index("(") + 1:-1] for line in report.splitlines() if line.startswith("![")):
        assert (sweep / "analysis" / png).exists()


def test_results_hold_what_the_analyses_promise(analysed):
    sweep, out, _ = analysed
    result = out["runs"][str(sweep / "alpha_0_seed_0")]
    accuracy = result["rotation"]["clean_accuracy"]
    for layer in LAYERS:
        rotation = result["rotation"]["layers"][layer]
        assert rotation["accuracy_rotated_and_undone"] == pytest.approx(accuracy, abs=1e-9)
        assert len(rotation["selectivity_vs_t"]) == 3
        basis = result["basis"]["layers"][layer]
        # the optimised bases never end below their starting points
        assert basis["optimised_from_identity"] >= basis["axis_aligned"] - 1e-6
        assert basis["optimised_from_class_mean"] >= basis["class_mean_basis"] - 1e-6
        rs = result["rs"]["layers"][layer]
        assert all(0.0 <= v <= 1.0 for v in rs["am"]["rs"]) and len(rs["units"]) == 4
    ablation = result["ablation"]["layers"][LAYERS[-1]]
    assert ablation["accuracy_decreasing"][0] == ablation["clean_accuracy"] == pytest.approx(accuracy)
    similarity = json.loads((sweep / "analysis" / "similarity.json").read_text())
    assert [row["alpha"] for row in similarity["alphas"]] == [-2.0, 2.0]
    for row in similarity["alphas"]:
        for layer in LAYERS:
            assert 0.0 <= row["layers"][layer]["cka"]["mean"] <= 1.0 + 1e-9


def test_second_call_skips_what_is_done_and_changed_settings_recompute(analysed):
    sweep, _, first_lines = analysed
    lines = []
    run_analyses(str(sweep), get_analyses("ablation,rotation"), small_config(), log=lines.append)
    assert sum("done before" in line for line in lines) == 6
    config = small_config()
    config.rotation.num_t = 2
    lines = []
    run_analyses(str(sweep / "alpha_0_seed_0"), get_analyses("rotation"), config, log=lines.append)
    assert any("rotation: computing" in line for line in lines)
    result = json.loads((sweep / "alpha_0_seed_0" / "analysis" / "rotation.json").read_text())
    assert result["t"] == [0.0, 1.0]


def test_cli_errors(analysed):
    sweep, _, _ = analysed
    for args, message in ((["--analysis", "nonsense"], "unknown analyses"),
                          (["--analysis", "similarity"], "compares the runs of a sweep")):
        workdir = str(sweep / "alpha_0_seed_0") if "similarity" in args else str(sweep)
        result = subprocess.run([sys.executable, "-m", "experiments.analyze", "--workdir", workdir, *args],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr
