"""Restoring a finished run for the analyses: the restored model reproduces the run's own test figures, with or
without the normalisation recorded in results.json."""

import json
import shutil

import jax
import numpy as np
import pytest

from selectivity_jax import selectivity_fn
from selectivity_jax.trained import batched, load_test_split, restore_run, to_pixels


@pytest.fixture(scope="module")
def run(tiny_sweep):
    return restore_run(str(tiny_sweep / "alpha_-2_seed_0"))


def test_restored_run_reproduces_its_test_figures(run):
    images, labels = load_test_split(run.config)
    assert run.alpha == -2.0 and run.seed == 0 and run.num_classes == 10
    logits = batched(run.logits, images, 32)  # 80 test images: the last batch is padded
    assert logits.shape == (80, 10)
    assert np.mean(logits.argmax(-1) == labels) == pytest.approx(run.results.test_accuracy, abs=1e-9)
    responses = batched(run.responses, images, 32)
    assert list(responses) == run.layer_names == run.results.layer_names
    per_layer = selectivity_fn(responses, labels, run.num_classes, reduce=False)
    for name, value in run.results.per_layer_selectivity.items():
        assert float(per_layer[name].mean()) == pytest.approx(value, abs=1e-5), name


def test_inputs_are_pixels_and_layers_can_be_chosen(run):
    images = load_test_split(run.config)[0][:4]
    np.testing.assert_allclose(np.asarray(run.logits(images)), np.asarray(run.logits(to_pixels(images))))
    responses = run.responses(images, layers=("stem/relu", "stage2_block0/relu1"))
    assert {k: v.shape for k, v in responses.items()} == {"stem/relu": (4, 4), "stage2_block0/relu1": (4, 8)}
    assert run.units_fn("stage3_block2/out")(images).shape == (4, 16)


def test_runs_without_recorded_normalization_recover_it_from_their_data(run, tiny_sweep, tmp_path):
    """Runs trained before results.json recorded the classes and the normalisation restore to the same model."""
    older = tmp_path / "older"
    shutil.copytree(tiny_sweep / "alpha_-2_seed_0", older, ignore=shutil.ignore_patterns("analysis"))
    results = json.loads((older / "results.json").read_text())
    assert results["num_classes"] == 10 and len(results["normalization"]["mean"]) == 3
    del results["num_classes"], results["normalization"], results["schema_version"]
    (older / "results.json").write_text(json.dumps(results))
    restored = restore_run(str(older))
    assert (restored.mean, restored.std, restored.num_classes) == (run.mean, run.std, run.num_classes)
    for a, b in zip(jax.tree.leaves(restored.variables), jax.tree.leaves(run.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_not_a_finished_run(tmp_path, tiny_sweep):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        restore_run(str(tmp_path))
    (tmp_path / "config.json").write_text((tiny_sweep / "alpha_0_seed_0" / "config.json").read_text())
    with pytest.raises(ValueError, match="has not finished training"):
        restore_run(str(tmp_path))
    (tmp_path / "results.json").write_text((tiny_sweep / "alpha_0_seed_0" / "results.json").read_text())
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        restore_run(str(tmp_path))
