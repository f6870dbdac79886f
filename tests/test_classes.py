"""Preferred classes and per-class accuracy: the pure functions on planted cases with known answers
(selectivity_jax.measures.classes), and the `classes` analysis end to end on a copy of the tiny sweep."""

import json
import os
import shutil

import ml_collections
import numpy as np
import pytest

from configs import analysis as analysis_config
from helpers import with_overrides
from numpy_reference import reference_unit_selectivity
from selectivity_jax.analyses import GROUPS, NAMES, get_analyses, load
from selectivity_jax.analyses.base import RunContext, RunResult, SHARED_SETTINGS
from selectivity_jax.analyses.classes import ClassesComparison
from selectivity_jax.analyses.runner import run_analyses
from selectivity_jax.measures.classes import (DEAD, class_means, dead_units, histogram_evenness, per_class_accuracy,
                                              preferred_class_histogram, preferred_classes, weighted_accuracy)

LAYER = "stage3_block2/out"
SMALL = {"layers": (LAYER,), "num_examples": 40, "batch_size": 40}
RUNS = ("alpha_-2_seed_0", "alpha_0_seed_0", "alpha_2_seed_0")


def planted_units(num_classes=4, num_units=10, per_class=5, noise=0.0, seed=0):
    """Responses [N, U] where unit u responds only to class u % C (strength 1 + u / 10), plus optional weak
    non-negative noise on every response; labels class-balanced and shuffled."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    units = np.arange(num_units)
    responses = (labels[:, None] == units[None, :] % num_classes) * (1.0 + units / 10.0)
    responses = responses + noise * np.abs(rng.normal(size=responses.shape))
    return responses.astype(np.float32), labels


# ----------------------------------------------------------------------------------------------------------------------
# pure functions
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_planted_class_selective_units_give_the_known_histogram(noise):
    responses, labels = planted_units(noise=noise)
    preferred = preferred_classes(responses, labels, 4)
    np.testing.assert_array_equal(preferred, np.arange(10) % 4)
    # units 0, 4, 8 -> class 0; 1, 5, 9 -> class 1; 2, 6 -> class 2; 3, 7 -> class 3
    np.testing.assert_array_equal(preferred_class_histogram(preferred, 4), [3, 3, 2, 2])
    # with more classes than units prefer, the others get 0 (here 6 classes, units planted on 0..3 only)
    responses6 = np.concatenate([responses, np.zeros((2, 10), np.float32)])
    labels6 = np.concatenate([labels, [4, 5]])
    np.testing.assert_array_equal(preferred_class_histogram(preferred_classes(responses6, labels6, 6), 6),
                                  [3, 3, 2, 2, 0, 0])


def test_dead_units_are_counted_apart_unless_asked():
    responses, labels = planted_units()
    responses = np.concatenate([responses, np.zeros((len(labels), 2), np.float32)], axis=1)  # units 10, 11 dead
    preferred = preferred_classes(responses, labels, 4)
    assert preferred[10] == preferred[11] == DEAD
    np.testing.assert_array_equal(dead_units(class_means(responses, labels, 4)[0]), [False] * 10 + [True] * 2)
    np.testing.assert_array_equal(preferred_class_histogram(preferred, 4), [3, 3, 2, 2])
    counted = preferred_classes(responses, labels, 4, count_dead=True)
    assert counted[10] == counted[11] == 0
    np.testing.assert_array_equal(preferred_class_histogram(counted, 4), [5, 3, 2, 2])
    # a unit silent on the examples of class 0 (absent from labels) counts toward the first PRESENT class
    present = labels != 0
    counted = preferred_classes(responses[present], labels[present], 4, count_dead=True)
    assert counted[10] == 1 and counted[0] == 1  # unit 0 responds only to class 0: dead without it
    assert preferred_classes(responses[present], labels[present], 4)[0] == DEAD


def test_absent_classes_are_never_preferred_and_ties_go_to_the_lowest_class():
    labels = np.array([1, 1, 2, 2, 3])
    responses = np.array([[-1.0, 2.0], [-1.0, 2.0], [-3.0, 2.0], [-3.0, 2.0], [-2.0, 1.0]])
    means, counts = class_means(responses, labels, 5)
    np.testing.assert_array_equal(counts, [0, 2, 2, 1, 0])
    assert np.isnan(means[0]).all() and np.isnan(means[4]).all()
    np.testing.assert_allclose(means[1:4], [[-1.0, 2.0], [-3.0, 2.0], [-2.0, 1.0]])
    # unit 0: all means negative, class 0 and 4 absent (NaN) -> class 1; unit 1: classes 1 and 2 tie -> class 1
    np.testing.assert_array_equal(preferred_classes(responses, labels, 5), [1, 1])


def test_the_preferred_class_is_the_selectivity_index_max_class():
    """Rebuilding the index with mu_max = the preferred class' mean gives the independent reference index."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, 300)
    responses = np.abs(rng.normal(size=(300, 12))) * rng.uniform(0.5, 2.0, (6, 12))[labels]
    responses[:, 11] = 0.0  # a dead unit: index 0
    means, _ = class_means(responses, labels, 6)
    preferred = preferred_classes(responses, labels, 6)
    rebuilt = np.zeros(12)
    for u in np.flatnonzero(preferred != DEAD):
        mu_max = means[preferred[u], u]
        mu_rest = np.delete(means[:, u], preferred[u]).mean()
        rebuilt[u] = (mu_max - mu_rest) / (mu_max + mu_rest + 1e-7)
    np.testing.assert_allclose(rebuilt, reference_unit_selectivity(responses, labels, 6), rtol=1e-12, atol=1e-15)
    assert preferred[11] == DEAD and np.all(preferred[:11] >= 0)


def test_histogram_evenness():
    assert histogram_evenness([2, 2, 2, 2]) == pytest.approx(1.0)
    assert histogram_evenness([5, 0, 0, 0]) == 0.0
    p = np.array([3, 3, 2, 2]) / 10
    assert histogram_evenness([3, 3, 2, 2]) == pytest.approx(-(p * np.log(p)).sum() / np.log(4), rel=1e-12)
    assert np.isnan(histogram_evenness([0, 0, 0])) and np.isnan(histogram_evenness([4]))


def test_per_class_accuracy_of_planted_logits():
    # class 0: 3 of 4 right; class 1: 0 of 2; class 2: 5 of 5; class 3: absent
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    predicted = np.array([0, 0, 0, 2, 0, 3, 2, 2, 2, 2, 2])
    logits = np.eye(4)[predicted] * 2.0 + np.random.default_rng(0).uniform(0.0, 0.5, (11, 4))
    accuracy, counts = per_class_accuracy(logits, labels)
    np.testing.assert_array_equal(counts, [4, 2, 5, 0])
    np.testing.assert_allclose(accuracy[:3], [0.75, 0.0, 1.0])
    assert np.isnan(accuracy[3])
    assert weighted_accuracy(accuracy, counts) == pytest.approx(8 / 11) == np.mean(predicted == labels)


def test_bad_input_is_refused_with_the_field_named():
    with pytest.raises(ValueError, match="labels must be integers in"):
        class_means(np.zeros((3, 2)), [0, 1, 4], 4)
    with pytest.raises(ValueError, match="labels must have shape"):
        per_class_accuracy(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="responses must be a matrix"):
        preferred_classes(np.zeros(3), [0, 1, 1], 2)
    with pytest.raises(ValueError, match="labels is empty"):
        preferred_classes(np.zeros((0, 3)), np.zeros(0, int), 2)
    with pytest.raises(ValueError, match="preferred classes must be in"):
        preferred_class_histogram([0, 5], 3)
    with pytest.raises(ValueError, match="classes.count_dead_units"):
        load("classes").check(ml_collections.ConfigDict({"count_dead_units": 1}))


# ----------------------------------------------------------------------------------------------------------------------
# the analysis end to end
# ----------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def analysed(tiny_sweep, tmp_path_factory):
    sweep = tmp_path_factory.mktemp("classes") / "sweep"
    shutil.copytree(tiny_sweep, sweep, ignore=shutil.ignore_patterns("analysis"))
    config = with_overrides(analysis_config.get_config(), SMALL)
    out = run_analyses(str(sweep), get_analyses("classes"), config, log=lambda _: None)
    return sweep, config, out


def test_registered_in_the_representations_group():
    assert "classes" in NAMES and "classes" in GROUPS["representations"]
    assert analysis_config.get_config().classes.to_dict() == {"count_dead_units": False}


def test_writes_json_figures_comparison_and_report(analysed):
    sweep, _, out = analysed
    for run in RUNS:
        files = set(os.listdir(sweep / run / "analysis"))
        assert "classes.json" in files
        for figure in ("classes_preferred", "classes_accuracy"):
            assert {f"{figure}.png", f"{figure}.svg"} <= files, (run, figure)
    sweep_files = set(os.listdir(sweep / "analysis"))
    assert {"classes.json", "classes_accuracy.png", "classes_preferred.png"} <= sweep_files
    assert set(out.comparisons) == {"classes"}
    report = (sweep / "analysis" / "report.md").read_text()
    assert f"## {load('classes').title}" in report and "| worst class |" in report
    assert "![classes_accuracy](classes_accuracy.png)" in report


def test_per_class_accuracy_weighs_up_to_the_run_test_accuracy(analysed):
    sweep, _, out = analysed
    for run in RUNS:
        run_results = json.loads((sweep / run / "results.json").read_text())
        result = out.runs[str(sweep / run)]["classes"].result
        accuracy, counts = np.asarray(result.class_accuracy), np.asarray(result.test_examples)
        assert result.num_classes == run_results["num_classes"] == len(accuracy) == 10
        assert counts.sum() == run_results["test_examples"] == 80 and np.all(counts == 8)
        assert np.all((accuracy >= 0) & (accuracy <= 1))
        np.testing.assert_allclose(accuracy * 8, np.round(accuracy * 8), atol=1e-12)  # k of 8 right per class
        assert (accuracy * counts).sum() / counts.sum() == pytest.approx(run_results["test_accuracy"], abs=1e-6)
        assert result.summary.test_accuracy == pytest.approx(run_results["test_accuracy"], abs=1e-6)
        assert result.summary.worst_class_accuracy == accuracy.min()


def test_preferred_classes_match_the_run_responses(analysed):
    sweep, config, out = analysed
    run_dir = str(sweep / "alpha_0_seed_0")
    result = out.runs[run_dir]["classes"].result
    layer = result.layers[LAYER]
    assert result.layer_names == [LAYER] and result.num_examples == 40 and not result.count_dead_units
    preferred = np.asarray(layer.preferred_class)
    assert len(preferred) == layer.num_units
    np.testing.assert_array_equal(layer.counts, np.bincount(preferred[preferred >= 0], minlength=10))
    assert sum(layer.counts) + layer.dead_units == layer.num_units == np.sum(preferred != DEAD) + layer.dead_units
    # independently: the argmax of the class-mean responses on the shared examples, alive units only
    shared = ml_collections.ConfigDict({key: config[key] for key in (*SHARED_SETTINGS, "batch_size", "cache_dir")})
    context = RunContext(run_dir, shared, log=lambda _: None)
    responses, labels = np.asarray(context.responses[LAYER], np.float64), context.data[1]
    means = np.stack([responses[labels == c].mean(axis=0) for c in range(10)])
    alive = ~np.all(means == 0, axis=0)
    np.testing.assert_array_equal(preferred[alive], np.argmax(means, axis=0)[alive])
    assert np.all(preferred[~alive] == DEAD)
    # the stored JSON reads back as the result computed
    stored = json.loads((sweep / "alpha_0_seed_0" / "analysis" / "classes.json").read_text())
    read = RunResult.from_json(stored, load("classes").result_type, run_dir)
    assert read.to_json() == out.runs[run_dir]["classes"].to_json() == stored


def test_comparison_is_the_runs_by_alpha(analysed):
    sweep, _, out = analysed
    stored = json.loads((sweep / "analysis" / "classes.json").read_text())
    comparison = ClassesComparison.from_json(stored)
    assert comparison.layers == [LAYER] and comparison.num_classes == 10
    assert [row.alpha for row in comparison.class_accuracy] == [-2.0, 0.0, 2.0]
    for row, counts, dead, run in zip(comparison.class_accuracy, comparison.preferred_counts, comparison.dead_units,
                                      RUNS):
        result = out.runs[str(sweep / run)]["classes"].result
        assert row.seeds == [0] and row.accuracy.mean == result.class_accuracy and row.accuracy.std == [0.0] * 10
        assert counts.layers[LAYER] == result.layers[LAYER].counts
        assert dead.layers[LAYER] == result.layers[LAYER].dead_units
    for row, run in zip(comparison.alphas, RUNS):
        summary = out.runs[str(sweep / run)]["classes"].result.summary
        assert row.stats["test_accuracy"].mean == summary.test_accuracy and row.stats["evenness"].n == (
            1 if np.isfinite(summary.evenness) else 0)
