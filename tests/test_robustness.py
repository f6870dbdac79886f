"""Robustness analyses (corruptions, attacks, gradients, dimensionality): the analyze command on the tiny sweep,
resuming, values pinned, alignment of the corrupted subset with the clean one, eps = 0 as the clean point, one-line
errors."""

import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import analysis as analysis_config
from helpers import assert_regression_pins
from selectivity_jax.analyses import get_analyses
from selectivity_jax.analyses.attacks import attack_curve, attack_curves
from selectivity_jax.analyses.base import RunContext
from selectivity_jax.analyses.corruptions import CorruptionAccuracy, summarize_corruptions
from selectivity_jax.analyses.runner import run_analyses
from selectivity_jax.trained import batched
from selectivity_jax.data.corrupted import corrupted_split
from selectivity_jax.data.splits import stratified_order

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTIONS = ("corruptions", "attacks", "gradients", "dimensionality")
LAYERS = ("stem/relu", "stage1_block0/out")  # forward order, not alphabetical: the results must keep it
NUM_EXAMPLES = 40
EPSILON = 4 / 255
# Tiny settings: 40 of the 80 test images, 2 layers, 2 corruptions x 2 severities, PGD (2 steps) at one L-inf eps,
# the same for the attacks and the dimensionality analysis (one compiled PGD program for both).
TINY_FLAGS = (f"--config.num_examples={NUM_EXAMPLES}", f"--config.layers={LAYERS!r}",
              "--config.corruptions.names=('gaussian_noise','contrast')", "--config.corruptions.severities=(1,3)",
              "--config.attacks.attacks=('pgd',)", "--config.attacks.norms=('linf',)",
              f"--config.attacks.linf_epsilons=({EPSILON!r},)", "--config.attacks.pgd_steps=(2,)",
              "--config.gradients.num_examples=20", "--config.gradients.max_units=4",
              "--config.dimensionality.corruptions=('gaussian_noise','contrast')",
              f"--config.dimensionality.epsilon={EPSILON!r}", "--config.dimensionality.pgd_steps=2")


def tiny_config():
    """configs/analysis.py with the values of TINY_FLAGS."""
    config = analysis_config.get_config()
    config.num_examples = NUM_EXAMPLES
    config.layers = LAYERS
    config.corruptions.names = ("gaussian_noise", "contrast")
    config.corruptions.severities = (1, 3)
    config.attacks.attacks = ("pgd",)
    config.attacks.norms = ("linf",)
    config.attacks.linf_epsilons = (EPSILON,)
    config.attacks.pgd_steps = (2,)
    config.gradients.num_examples = 20
    config.gradients.max_units = 4
    config.dimensionality.corruptions = ("gaussian_noise", "contrast")
    config.dimensionality.epsilon = EPSILON
    config.dimensionality.pgd_steps = 2
    return config


# Regression pins (copied from the code's own output, not independent references: they catch a change of
# behaviour) of the alpha = 0 and alpha = 2 runs with TINY_FLAGS, one table per kernel path of the CPU convolutions
# (helpers.kernel_path; oneDNN's and XLA's kernels round differently; the adversarial ratio moves most, PGD follows
# the gradients' signs). A key is (run directory, analysis, path into its JSON).
RUNS = ("alpha_0_seed_0", "alpha_2_seed_0")
PINNED_VALUES = (("corruptions", "mean_accuracy"), ("gradients", "summary", "norm_cv_over_units_mean"),
                 ("gradients", "summary", "cosine_distance_over_samples_mean"),
                 ("dimensionality", "layers", LAYERS[-1], "clean", "participation_ratio"),
                 ("dimensionality", "layers", LAYERS[-1], "corruption", "participation_ratio"),
                 ("dimensionality", "layers", LAYERS[-1], "adversarial", "participation_ratio"))
PINS = {
    "onednn": {
        ('alpha_0_seed_0', 'corruptions', 'mean_accuracy'): 0.11250000000000002,
        ('alpha_0_seed_0', 'gradients', 'summary', 'norm_cv_over_units_mean'): 0.2629644285136847,
        ('alpha_0_seed_0', 'gradients', 'summary', 'cosine_distance_over_samples_mean'): 0.803329708713781,
        ('alpha_0_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'clean', 'participation_ratio'): 1.1015985816158185,
        ('alpha_0_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'corruption', 'participation_ratio'): 1.0084129878134807,
        ('alpha_0_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'adversarial', 'participation_ratio'): 1.0548511809206964,
        ('alpha_2_seed_0', 'corruptions', 'mean_accuracy'): 0.11250000000000002,
        ('alpha_2_seed_0', 'gradients', 'summary', 'norm_cv_over_units_mean'): 0.26328630076079573,
        ('alpha_2_seed_0', 'gradients', 'summary', 'cosine_distance_over_samples_mean'): 0.7989682241970053,
        ('alpha_2_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'clean', 'participation_ratio'): 1.0933631588772985,
        ('alpha_2_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'corruption', 'participation_ratio'): 1.0085159848290213,
        ('alpha_2_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'adversarial', 'participation_ratio'): 1.0602586328062742,
    },
    "xla": {
        ('alpha_0_seed_0', 'corruptions', 'mean_accuracy'): 0.11250000000000002,
        ('alpha_0_seed_0', 'gradients', 'summary', 'norm_cv_over_units_mean'): 0.26295267825911606,
        ('alpha_0_seed_0', 'gradients', 'summary', 'cosine_distance_over_samples_mean'): 0.8033281082080175,
        ('alpha_0_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'clean', 'participation_ratio'): 1.1015983873361692,
        ('alpha_0_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'corruption', 'participation_ratio'): 1.0084130055718172,
        ('alpha_0_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'adversarial', 'participation_ratio'): 1.0566032895860211,
        ('alpha_2_seed_0', 'corruptions', 'mean_accuracy'): 0.11250000000000002,
        ('alpha_2_seed_0', 'gradients', 'summary', 'norm_cv_over_units_mean'): 0.2632863694863572,
        ('alpha_2_seed_0', 'gradients', 'summary', 'cosine_distance_over_samples_mean'): 0.7989683606158005,
        ('alpha_2_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'clean', 'participation_ratio'): 1.093362872522913,
        ('alpha_2_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'corruption', 'participation_ratio'): 1.0085159726921753,
        ('alpha_2_seed_0', 'dimensionality', 'layers', 'stage1_block0/out', 'adversarial', 'participation_ratio'): 1.060421451257464,
    },
}


def robustness_cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.analyze", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def partial_path(run_dir, name):
    return pathlib.Path(run_dir) / "analysis" / f"{name}.partial.json"


@pytest.fixture(scope="module")
def analysed(tiny_sweep, tmp_path_factory):
    """A copy of the tiny sweep after one run of the command with every section: (sweep dir, completed process)."""
    sweep = tmp_path_factory.mktemp("robustness") / "sweep"
    shutil.copytree(tiny_sweep, sweep, ignore=shutil.ignore_patterns("analysis"))
    result = robustness_cli("--workdir", str(sweep), "--analysis", "robustness", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep, result


def run_dirs(sweep):
    return sorted(path for path in sweep.iterdir() if (path / "results.json").exists())


def test_command_writes_results_figures_and_report(analysed):
    sweep, result = analysed
    assert "corruptions 5/5 contrast/3" in result.stdout and "attacks 1/1 pgd2_linf" in result.stdout
    runs = run_dirs(sweep)
    assert len(runs) == 3
    for run in runs:
        merged = {name: json.loads((run / "analysis" / f"{name}.json").read_text()) for name in SECTIONS}
        corruptions = merged["corruptions"]
        assert corruptions["corruption_names"] == ["gaussian_noise", "contrast"]
        assert corruptions["family_names"] == ["noise", "digital"]
        assert {c["source"] for c in corruptions["corruptions"].values()} == {"generated"}
        table = np.array([corruptions["corruptions"][n]["accuracy"] for n in corruptions["corruption_names"]])
        assert corruptions["mean_accuracy"] == pytest.approx(table.mean())
        assert corruptions["relative_accuracy"] == pytest.approx(table.mean() / corruptions["clean_accuracy"])
        assert merged["attacks"]["curve_names"] == ["pgd2_linf"]
        assert merged["gradients"]["layer_names"] == list(LAYERS)
        assert len(merged["gradients"]["layers"][LAYERS[0]]["norm_cv_over_samples"]) == 4
        dims = merged["dimensionality"]["layers"][LAYERS[-1]]
        assert all(dims[kind]["n_components"] >= 1 for kind in ("clean", "corruption", "adversarial"))
        assert dims["corruption"]["num_samples"] == 2 * NUM_EXAMPLES  # the two corruptions' changes pooled
        for png in ("corruptions_by_severity", "attacks_accuracy_vs_epsilon", "gradients_by_layer",
                    "gradients_units", "dimensionality_by_layer"):
            assert (run / "analysis" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert (run / "analysis" / "corruptions.partial.json").exists()
    comparisons = {name: json.loads((sweep / "analysis" / f"{name}.json").read_text()) for name in SECTIONS}
    assert [row["stats"]["alpha"] for row in comparisons["attacks"]["alphas"]] == [-2.0, 0.0, 2.0]
    assert len(comparisons["gradients"]["runs"]) == 3
    for png in ("corruptions_families_vs_alpha", "corruptions_mean_vs_alpha", "attacks_accuracy_vs_epsilon",
                "gradients_variability_vs_selectivity", "gradients_by_layer", "dimensionality_by_layer"):
        assert (sweep / "analysis" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    report = (sweep / "analysis" / "report.md").read_text()
    for heading in ("Corruption robustness", "Adversarial robustness", "gradient variability", "Dimensionality"):
        assert heading in report
    assert "generated" in report and "corruptions_families_vs_alpha.png" in report


def test_values_are_pinned(analysed):
    sweep, _ = analysed

    def read(key):
        run, name, *path = key
        value = json.loads((sweep / run / "analysis" / f"{name}.json").read_text())
        for part in path:
            value = value[part]
        return value
    assert_regression_pins(PINS, read)


def test_second_command_skips_what_is_done_and_resumes(analysed):
    sweep, _ = analysed
    before = {(run.name, name): (run / "analysis" / f"{name}.json").read_text()
              for run in run_dirs(sweep) for name in SECTIONS}
    resumed = sweep / "alpha_2_seed_0" / "analysis"
    finished = json.loads((resumed / "corruptions.json").read_text())
    (resumed / "corruptions.json").unlink()  # as if stopped after its last corruption: all items in the partial file
    again = robustness_cli("--workdir", str(sweep), "--analysis", "robustness", *TINY_FLAGS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before") == 3 * len(SECTIONS)
    assert "corruptions: 5/5 done before, read from" in again.stdout and again.stdout.count("computing") == 1
    assert "corruptions 1/5" not in again.stdout and "restored" not in again.stdout  # no item computed or model
    redone = json.loads((resumed / "corruptions.json").read_text())
    assert {**redone, "seconds": None} == {**finished, "seconds": None}
    after = {(run.name, name): (run / "analysis" / f"{name}.json").read_text()
             for run in run_dirs(sweep) for name in SECTIONS}
    assert {k: v for k, v in after.items() if k != ("alpha_2_seed_0", "corruptions")} == {
        k: v for k, v in before.items() if k != ("alpha_2_seed_0", "corruptions")}
    partial = json.loads(partial_path(resumed.parent, "corruptions").read_text())
    assert partial["settings"] == finished["settings"] and len(partial["items"]) == 5


def test_corruptions_resume_inside_a_run(analysed):
    sweep, _ = analysed
    run = sweep / "alpha_0_seed_0"
    finished = json.loads((run / "analysis" / "corruptions.json").read_text())
    (run / "analysis" / "corruptions.json").unlink()
    partial_file = partial_path(run, "corruptions")
    partial = json.loads(partial_file.read_text())
    del partial["items"]["contrast/3"]  # as if stopped before the last corruption
    partial_file.write_text(json.dumps(partial))
    logged = []
    run_analyses(str(run), get_analyses("corruptions"), tiny_config(), log=logged.append)
    assert any("corruptions: 4/5 done before" in line for line in logged), logged
    assert [line for line in logged if line.startswith("    corruptions ")] == [
        line for line in logged if line.startswith("    corruptions 5/5 contrast/3: accuracy")]
    assert {**json.loads((run / "analysis" / "corruptions.json").read_text()), "seconds": 0} == {
        **finished, "seconds": 0}


def test_clean_point_and_corrupted_subset_alignment(analysed):
    sweep, _ = analysed
    context = RunContext(str(sweep / "alpha_0_seed_0"), tiny_config(), log=lambda _: None)
    images, labels = context.data
    accuracy = float(np.mean(batched(context.run.logits, images, 40).argmax(-1) == labels))
    result = {name: json.loads((sweep / "alpha_0_seed_0" / "analysis" / f"{name}.json").read_text())
              for name in SECTIONS}
    for curve in result["attacks"]["curves"].values():
        assert curve["epsilons"] == pytest.approx([0.0, EPSILON])
        assert curve["accuracy"][0] == pytest.approx(accuracy, abs=1e-12) and curve["accuracy"][1] <= accuracy
    assert result["corruptions"]["clean_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    spec = attack_curves(tiny_config().attacks)["pgd2_linf"]
    only_clean = attack_curve(context.run.logits_fn, images, labels, dataclasses.replace(spec, epsilons=[0.0]),
                              key=None, batch_size=16)
    assert only_clean.accuracy == pytest.approx([accuracy], abs=1e-12)
    # the subset of the corrupted split holds the corruptions of the clean subset's examples, in the same order
    test_images, test_labels = context.test_split
    indices = np.sort(stratified_order(test_labels, context.seed)[:NUM_EXAMPLES])
    np.testing.assert_array_equal(images, test_images[indices])
    corrupted_images, corrupted_labels, split = context.corrupted_subset("contrast", 1, "auto")
    full = corrupted_split(context.run.config.data, "contrast", 1)
    assert split.source == "generated" and len(full.labels) == len(test_labels) > NUM_EXAMPLES
    np.testing.assert_array_equal(corrupted_labels, labels)
    np.testing.assert_array_equal(corrupted_images, full.images[indices])
    # contrast is an affine change of each image: it stays correlated with its own clean image only
    flat_clean = images.reshape(len(images), -1).astype(np.float64)
    flat_corrupted = corrupted_images.reshape(len(images), -1).astype(np.float64)
    correlation = np.corrcoef(flat_clean, flat_corrupted)[:len(images), len(images):]
    assert np.all(np.diag(correlation) > 0.99)
    assert np.all(np.diag(correlation) > np.max(correlation - 2 * np.eye(len(images)), axis=1))


def test_summaries_and_curves():
    corruption = lambda family, accuracy, source: CorruptionAccuracy(family, source, "", accuracy, np.mean(accuracy))
    corruptions = {"gaussian_noise": corruption("noise", [0.8, 0.4], "generated"),
                   "shot_noise": corruption("noise", [0.6, 0.2], "generated"),
                   "frost": corruption("weather", [0.5, 0.5], "official")}
    summary = summarize_corruptions(0.9, 40, (1, 3), corruptions)
    assert summary.family_names == ["noise", "weather"]
    assert summary.families["noise"].accuracy == pytest.approx([0.7, 0.3])
    assert summary.mean_accuracy == pytest.approx(0.5) and summary.relative_accuracy == pytest.approx(0.5 / 0.9)
    assert summary.sources == {"generated": ["gaussian_noise", "shot_noise"], "official": ["frost"]}
    curves = attack_curves(analysis_config.get_config().attacks)
    assert list(curves) == ["fgsm_linf", "pgd10_linf", "pgd40_linf", "fgsm_l2", "pgd10_l2", "pgd40_l2"]
    assert curves["pgd40_linf"].epsilons == pytest.approx([0, 1 / 255, 2 / 255, 4 / 255, 8 / 255])
    assert curves["pgd40_linf"].steps == 40 and curves["fgsm_l2"].epsilons[0] == 0.0


def test_bad_input_is_one_line(tmp_path, analysed):
    sweep, _ = analysed
    unknown = robustness_cli("--workdir", str(sweep), "--analysis", "corruptions,robustnes")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1].startswith("error: unknown analysis 'robustnes'; known: ")
    config = tiny_config()
    robustness = get_analyses("robustness")
    with pytest.raises(ValueError, match="nowhere is not a directory"):
        run_analyses(str(tmp_path / "nowhere"), robustness, config)
    with pytest.raises(ValueError, match="no finished run"):
        run_analyses(str(tmp_path), robustness, config)
    config.corruptions.names = ("gaussian_noise", "rain")
    with pytest.raises(ValueError, match=r"unknown corruptions \['rain'\]"):
        run_analyses(str(sweep), get_analyses("corruptions"), config)
