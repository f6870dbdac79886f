"""Sweeps: vmapped groups equal separate runs, finished runs are skipped, groups are planned per seed and step."""

import functools
import json
import os

import jax
import numpy as np
import pytest

from selectivity_jax import sweep as sweep_module
from selectivity_jax.data import load_splits
from selectivity_jax.report import load_sweep
from selectivity_jax.train import loop
from selectivity_jax.sweep import DEFAULT_MAX_GROUP, default_group_size, plan_groups, run_sweep, train_step_bytes
from selectivity_jax.parallel import make_data_mesh
from selectivity_jax.train.checkpoint import checkpoint_manager, restore_newest
from selectivity_jax.rundir import run_dirname
from helpers import TINY_SWEEP_ALPHAS, tiny_sweep_config

ALPHAS = TINY_SWEEP_ALPHAS


sweep_config = tiny_sweep_config


def _quiet(_):
    pass


def _final_state(run_dir):
    from selectivity_jax.train.state import unstack_state
    from selectivity_jax.parallel import make_data_mesh
    from selectivity_jax.train.setup import setup_run
    template = unstack_state(setup_run(sweep_config(), num_classes=10, image_shape=(32, 32, 3), num_train=240,
                                       mean=(0.5,) * 3, std=(0.25,) * 3, mesh=make_data_mesh(1)).initial_state, 0)
    return restore_newest(checkpoint_manager(os.path.join(run_dir, "checkpoints")), template).state


@pytest.fixture(scope="module")
def sweeps(tiny_sweeps):
    return tiny_sweeps


def test_vmap_equals_serial(sweeps):
    root, vmap, serial = sweeps
    assert [r["alpha"] for r in vmap] == list(ALPHAS) == [r["alpha"] for r in serial]
    assert [r["models_in_group"] for r in vmap] == [3, 3, 3] and [r["models_in_group"] for r in serial] == [1, 1, 1]
    # On CPU a vmapped group runs each model's convolutions as plain ones (models/vmap_conv.py), so a model trains
    # in a group as it does alone, up to float32 rounding of the other vmapped ops, which six training steps carry
    # on: bitwise equal under XLA's defaults on jax 0.10; under the project's CPU tuning (oneDNN convolutions)
    # measured up to 6e-6 in the parameters and 1e-5 in the test cross-entropy. A wrong model's kernel is order 1.
    for a, b in zip(vmap, serial):
        for key in ("test_accuracy", "val_accuracy", "test_cross_entropy", "test_selectivity", "val_selectivity"):
            assert a[key] == pytest.approx(b[key], abs=3e-5), key
        for layer in a["per_layer_selectivity"]:
            assert a["per_layer_selectivity"][layer] == pytest.approx(b["per_layer_selectivity"][layer], abs=3e-5)
    for alpha in ALPHAS:
        v = _final_state(str(root / "vmap" / run_dirname(alpha, 0)))
        s = _final_state(str(root / "serial" / run_dirname(alpha, 0)))
        assert float(v.alpha) == alpha and int(v.step) == int(s.step) == 6
        worst = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                    for x, y in zip(jax.tree.leaves((v.params, v.batch_stats)),
                                    jax.tree.leaves((s.params, s.batch_stats))))
        assert worst < 3e-5, (alpha, worst)
        vrows = [json.loads(l) for l in open(root / "vmap" / run_dirname(alpha, 0) / "metrics.jsonl")]
        srows = [json.loads(l) for l in open(root / "serial" / run_dirname(alpha, 0) / "metrics.jsonl")]
        for key in ("train_loss", "train_selectivity", "val_accuracy"):
            assert vrows[0][key] == pytest.approx(srows[0][key], abs=1e-6), key
    # alpha acts per model inside the group: the runs differ from each other
    assert len({round(r["test_selectivity"], 6) for r in vmap}) == 3


def test_alpha_acts_in_its_direction_in_groups_and_alone(sweeps):
    """The paper's loss, CE - alpha * SI (Leavitt & Morcos 2021, Eq. 2), read back from what each run logged, and its
    direction: at a fixed seed (same initialization and data) a larger alpha gives a more selective network, in a
    vmapped group as alone. A sign error in the loss or alphas handed to the wrong models of a group break these."""
    root, vmap, serial = sweeps
    for mode in ("vmap", "serial"):
        selectivity = []
        for alpha in ALPHAS:
            rows = [json.loads(line) for line in open(root / mode / run_dirname(alpha, 0) / "metrics.jsonl")]
            for row in rows:
                assert row["alpha"] == alpha
                assert row["train_loss"] == pytest.approx(
                    row["train_cross_entropy"] - alpha * row["train_selectivity"], abs=1e-5), (mode, alpha)
            selectivity.append((rows[-1]["train_selectivity"], rows[-1]["val_selectivity"]))
        for kind, values in zip(("train", "val"), zip(*selectivity)):
            assert list(values) == sorted(values) and len(set(values)) == len(values), (mode, kind, values)
    for results in (vmap, serial):
        values = [r["test_selectivity"] for r in results]
        assert values == sorted(values), values


def test_finished_sweep_is_skipped_and_reported(sweeps):
    root, vmap, _ = sweeps
    lines = []
    again = run_sweep(sweep_config(), str(root / "vmap"), mode="vmap", log=lines.append)
    assert "3 finished, 0 group(s)" in lines[0]
    assert [r.test_accuracy for r in again] == [r["test_accuracy"] for r in vmap]
    sweep = load_sweep(str(root / "vmap"))
    assert len(sweep.runs) == 3 and not sweep.missing


def test_plan_groups(tmp_path):
    config = sweep_config()
    config.sweep.alphas = (-1.0, 0.0, 1.0, 2.0, 3.0)
    config.sweep.seeds = (0, 1)
    groups = plan_groups(config, str(tmp_path), 2)
    assert groups == [(0, [-1.0, 0.0]), (0, [1.0, 2.0]), (0, [3.0]), (1, [-1.0, 0.0]), (1, [1.0, 2.0]), (1, [3.0])]
    finished = tmp_path / run_dirname(0.0, 0)
    finished.mkdir()
    (finished / "results.json").write_text("{}")
    resumed = tmp_path / run_dirname(2.0, 0) / "checkpoints" / "12"
    resumed.mkdir(parents=True)
    groups = plan_groups(config, str(tmp_path), 4)
    assert groups[:2] == [(0, [-1.0, 1.0, 3.0]), (0, [2.0])]  # the run at step 12 is grouped apart


def test_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        run_sweep(sweep_config(), str(tmp_path), mode="parallel")


def test_default_group_size_fits_the_memory_it_is_given():
    config = sweep_config()
    data = load_splits(config.data, seed=config.seed)
    mesh = make_data_mesh(config.num_devices)
    loads = []
    splits = lambda: loads.append(1) or data
    one, two = train_step_bytes(config, 1, data, mesh), train_step_bytes(config, 2, data, mesh)
    per_model = two - one
    assert per_model > 0.4 * one  # each model brings its own activations; the shared data is small here
    shared = one - per_model
    size = functools.partial(default_group_size, config, mesh=mesh)
    assert size(5, splits, bytes_limit=shared + 2.5 * per_model, headroom=1.0) == 2
    assert size(5, splits, bytes_limit=shared + 100 * per_model, headroom=1.0) == 5
    assert size(40, splits, bytes_limit=shared + 100 * per_model, headroom=1.0) == DEFAULT_MAX_GROUP
    assert size(5, splits, bytes_limit=one // 2) == 1  # never less than one model
    assert len(loads) == 4  # the data once per measurement, ...
    assert size(7, splits) == 7  # ... none on CPU, which reports no memory limit: the cap alone
    assert len(loads) == 4


def test_automatic_group_size_hands_its_data_to_the_first_group(tmp_path, monkeypatch):
    """A measured group size loads the data once, and the seed's first group trains on that copy."""
    config = sweep_config()
    config.sweep.alphas, config.num_train_steps = (0.0, 1.0), 1
    loads = []

    def counting(data_config, seed):
        loads.append(seed)
        return load_splits(data_config, seed=seed)

    measured = lambda config, num_alphas, splits, **_: len(splits().train[1]) and 2  # as if memory were measured
    monkeypatch.setattr(sweep_module, "load_splits", counting)
    monkeypatch.setattr(loop, "load_splits", counting)
    monkeypatch.setattr(sweep_module, "default_group_size", measured)
    results = run_sweep(config, str(tmp_path / "sweep"), mode="vmap", log=lambda _: None)
    assert [r.models_in_group for r in results] == [2, 2] and loads == [0]
