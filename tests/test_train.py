"""The training loop end to end on tiny synthetic runs: outputs, resume, data parallelism, alpha's effect, errors."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import quickstart
from helpers import assert_same_run_files, with_overrides
from selectivity_jax.data import synthetic_images
from selectivity_jax.data.on_device import put_eval_arrays, put_train_arrays
from selectivity_jax.parallel import make_data_mesh
from selectivity_jax.train.checkpoint import checkpoint_manager, restore_newest
from selectivity_jax.rundir import prepare_workdir
from selectivity_jax.train.loop import train_and_evaluate
from selectivity_jax.train.setup import setup_run
from selectivity_jax.train.stopping import Preempted
from selectivity_jax.train.state import unstack_state



def tiny_config(**overrides):
    """configs/quickstart.py:tiny (240 train / 40 val / 80 test images, ResNet20 at width 4) for 2 epochs = 12
    steps, with ``overrides`` ('a.b': value)."""
    config = quickstart.get_config("tiny")
    config.num_epochs = 2.0
    return with_overrides(config, overrides)


def _quiet(_):
    pass


def record_dispatches(monkeypatch: pytest.MonkeyPatch, events: list) -> None:
    """Makes the loop's train calls append ('call', id(metrics)) and jax.block_until_ready ('wait', id(tree))."""
    from selectivity_jax.train import loop
    real_setup, real_wait = loop.setup_run, jax.block_until_ready

    def recording_setup(*args, **kwargs):
        setup = real_setup(*args, **kwargs)

        def step(*step_args):
            states, metrics = setup.train_step(*step_args)
            events.append(("call", id(metrics)))
            return states, metrics
        return dataclasses.replace(setup, train_step=step, train_steps=step)

    def recording_wait(tree):
        events.append(("wait", id(tree)))
        return real_wait(tree)

    monkeypatch.setattr(loop, "setup_run", recording_setup)
    monkeypatch.setattr(jax, "block_until_ready", recording_wait)


@pytest.fixture(scope="module")
def dispatches():
    """What the loop dispatched and waited for while `finished_run` trained (`record_dispatches`)."""
    return []


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, dispatches):
    workdir = str(tmp_path_factory.mktemp("run"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        record_dispatches(monkeypatch, dispatches)
        return workdir, train_and_evaluate(tiny_config(), workdir, log=_quiet)


def test_run_writes_everything(finished_run):
    workdir, results = finished_run
    assert sorted(os.listdir(workdir)) == [".lock", "checkpoints", "config.json", "metrics.jsonl", "results.json",
                                           "selectivity.npz", "tensorboard", "timing.jsonl"]
    with open(os.path.join(workdir, "results.json")) as f:
        stored = json.load(f)
    for key in ("test_accuracy", "test_selectivity", "test_cross_entropy", "test_dead_unit_fraction"):
        assert np.isfinite(stored[key]), key
    assert 0.0 <= stored["test_accuracy"] <= 1.0 and 0.0 < stored["test_selectivity"] < 1.0
    assert list(stored["per_layer_selectivity"]) == sorted(stored["layer_names"])
    assert len(stored["layer_names"]) == 9 and stored["test_examples"] == 80
    assert stored["split_sizes"] == {"train": 240, "val": 40, "test": 80}
    assert stored["versions"]["jax"] == jax.__version__ and stored["device_count"] == 1
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2] and [r["step"] for r in rows] == [6, 12]
    for key in ("train_loss", "train_cross_entropy", "train_selectivity", "alpha", "learning_rate",
                "val_accuracy", "val_selectivity"):
        assert all(np.isfinite(r[key]) for r in rows), key
    timing = [json.loads(line) for line in open(os.path.join(workdir, "timing.jsonl"))]
    assert [r["step"] for r in timing] == [0, 6, 12, 12] and all(r["images_per_second"] > 0 for r in timing[1:3])
    assert timing[0] == {"step": 0, "convolutions": stored["convolutions"]}  # the call's kernels, from its first step
    assert timing[-1]["wall_time_seconds_this_call"] > 0
    per_unit = np.load(os.path.join(workdir, "selectivity.npz"))
    assert sorted(per_unit.files) == sorted(stored["layer_names"])
    assert per_unit["stage3_block2/out"].shape == (16,)  # width 4 x 4 channels in stage 3
    np.testing.assert_allclose(np.mean([per_unit[k].mean() for k in per_unit.files]), stored["test_selectivity"],
                               atol=1e-6)
    assert json.load(open(os.path.join(workdir, "config.json")))["alpha"] == 0.0


def test_finished_run_is_not_trained_again(finished_run):
    workdir, results = finished_run
    again = train_and_evaluate(tiny_config(), workdir, log=_quiet)
    assert again.to_json() == results.to_json()


def test_resume_after_interruption_gives_identical_results(finished_run, tmp_path):
    workdir, uninterrupted = finished_run
    resumed_dir = str(tmp_path / "resumed")
    with pytest.raises(Preempted):
        train_and_evaluate(tiny_config(), resumed_dir, stop_after_steps=4, log=_quiet)  # mid-epoch 1
    with pytest.raises(Preempted):
        train_and_evaluate(tiny_config(), resumed_dir, stop_after_steps=5, log=_quiet)  # mid-epoch 2
    resumed = train_and_evaluate(tiny_config(), resumed_dir, log=_quiet)
    assert resumed == uninterrupted
    # bitwise identical parameters
    template = setup_run(tiny_config(), num_classes=10, image_shape=(32, 32, 3), num_train=240,
                         mean=(0.5,) * 3, std=(0.25,) * 3, mesh=make_data_mesh(1)).initial_state
    template = unstack_state(template, 0)
    a = restore_newest(checkpoint_manager(os.path.join(workdir, "checkpoints")), template).state
    b = restore_newest(checkpoint_manager(os.path.join(resumed_dir, "checkpoints")), template).state
    assert int(a.step) == int(b.step) == 12
    for x, y in zip(jax.tree.leaves((a.params, a.batch_stats, a.opt_state)),
                    jax.tree.leaves((b.params, b.batch_stats, b.opt_state))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert_same_run_files(resumed_dir, workdir)  # metrics.jsonl too: the interrupted epochs average all their steps


def test_different_config_refused_and_overwrite(finished_run, tmp_path):
    workdir, _ = finished_run
    with pytest.raises(ValueError, match=r"different config \(fields \['alpha'\]"):
        prepare_workdir(workdir, tiny_config(alpha=1.0))
    with pytest.raises(ValueError, match=r"fields \['model.width'\]"):  # nested fields are compared too
        prepare_workdir(workdir, tiny_config(**{"model.width": 8}))
    # where the data lives does not change the run: the same run resumes from another data or cache directory
    prepare_workdir(workdir, tiny_config(**{"data.data_dir": str(tmp_path), "data.cache_dir": str(tmp_path)}))
    fresh = str(tmp_path / "fresh")
    prepare_workdir(fresh, tiny_config())
    os.makedirs(os.path.join(fresh, "checkpoints", "3"))
    prepare_workdir(fresh, tiny_config(alpha=1.0), overwrite=True)  # the project's files only: deleted
    assert os.listdir(fresh) == ["config.json"]
    open(os.path.join(fresh, "notes.txt"), "w").close()  # a file the project did not write: never deleted
    with pytest.raises(ValueError, match=r"--overwrite refuses to delete .* \(notes.txt\)"):
        prepare_workdir(fresh, tiny_config(), overwrite=True)
    assert sorted(os.listdir(fresh)) == ["config.json", "notes.txt"]


def _setup_random(num_devices):
    # alpha != 0 so the selectivity term's gradient is part of the comparison. A small learning rate: 1 and 8
    # devices sum in different orders, and float32 gradient noise (~1e-4 absolute for conv kernels, sums over
    # 40 x 32 x 32 positions) times a large learning rate would swamp the 1e-5 comparison after three steps.
    config = tiny_config(num_devices=num_devices, batch_size=40, alpha=-1.0, learning_rate=0.002)
    mesh = make_data_mesh(num_devices)
    images, labels = synthetic_images(10, 24, seed=0)
    run = setup_run(config, num_classes=10, image_shape=(32, 32, 3), num_train=240, mean=(0.5,) * 3,
                    std=(0.25,) * 3, mesh=mesh)
    return run, put_train_arrays(images, labels, mesh)


def test_each_device_computes_its_slice_of_the_batch():
    """Data parallelism for real: the compiled step convolves 40 / 8 = 5 images per device and all-reduces."""
    run, data = _setup_random(8)
    hlo = run.train_step.lower(run.initial_state, data, run.permutation(run.initial_state, 0)).compile().as_text()
    assert "f32[5,32,32," in hlo and "f32[40,32,32," not in hlo
    assert "all-reduce" in hlo


def _three_steps(num_devices):
    run, data = _setup_random(num_devices)
    state = run.initial_state
    order = run.permutation(state, 0)
    losses = []
    for _ in range(3):
        state, metrics = run.train_step(state, data, order)
        losses.append(float(metrics["loss"][0, 0]))  # metrics [steps, models]: one step of one model
    assert run.train_step._cache_size() == 1  # no recompilation between steps
    return losses, state


def test_eight_devices_equal_one_device():
    assert jax.device_count() == 8
    losses_1, state_1 = _three_steps(1)
    losses_8, state_8 = _three_steps(8)
    assert len(state_8.params["stem"]["conv"]["kernel"].sharding.device_set) == 8
    np.testing.assert_allclose(losses_8, losses_1, atol=1e-5, rtol=0)
    for x, y in zip(jax.tree.leaves((state_1.params, state_1.batch_stats)),
                    jax.tree.leaves((state_8.params, state_8.batch_stats))):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-5, rtol=0)


def test_steps_per_call_gives_identical_files(finished_run, tmp_path):
    """4 steps per call (6 steps per epoch: 4 + 1 + 1), stopped after epoch 1 and resumed, write the bits of 1."""
    workdir, uninterrupted = finished_run
    other = str(tmp_path / "four")
    with pytest.raises(Preempted, match="step 6"):
        train_and_evaluate(tiny_config(steps_per_call=4), other, stop_after_steps=6, log=_quiet)
    results = train_and_evaluate(tiny_config(steps_per_call=4), other, log=_quiet)
    assert results == uninterrupted
    assert_same_run_files(other, workdir, differing=("config.json",))  # it records steps_per_call


def test_scanned_steps_equal_single_steps_within_rounding():
    """The accelerators' path (one lax.scan per call), run on CPU: the same training as single-step calls up to
    float32 rounding, one compiled loop, metrics [steps, models]."""
    from selectivity_jax.train.step import make_train_step
    config = tiny_config(learning_rate=0.002, alpha=-1.0)
    mesh = make_data_mesh(1)
    images, labels = synthetic_images(10, 24, seed=0)
    run = setup_run(config, num_classes=10, image_shape=(32, 32, 3), num_train=240, mean=(0.5,) * 3,
                    std=(0.25,) * 3, mesh=mesh)
    data = put_train_arrays(images, labels, mesh)
    scanned = make_train_step(run.spec, run.schedule, 3, scan=True)
    order = run.permutation(run.initial_state, 0)
    assert "stablehlo.while" in scanned.lower(run.initial_state, data, order).as_text()
    single = jax.tree.map(jnp.copy, run.initial_state)
    losses = []
    for _ in range(3):
        single, metrics = run.train_step(single, data, order)
        losses.append(float(metrics["loss"][0, 0]))
    state, metrics = scanned(run.initial_state, data, order)
    assert metrics["loss"].shape == (3, 1) and int(state.step[0]) == 3 and scanned._cache_size() == 1
    np.testing.assert_allclose(np.asarray(metrics["loss"][:, 0]), losses, rtol=1e-5)
    for x, y in zip(jax.tree.leaves((state.params, state.batch_stats)),
                    jax.tree.leaves((single.params, single.batch_stats))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=0)


def test_calls_are_aligned_to_the_epoch():
    from selectivity_jax.train.setup import steps_in_next_call
    chunks, step = [], 0
    while step < 11:  # an epoch of 11 steps at 4 per call
        chunks.append(steps_in_next_call(step, 11 - step, 4))
        step += chunks[-1]
    assert chunks == [4, 4, 1, 1, 1]
    # a run resumed at step 2 (stopped there by the test hook) takes single steps until it rejoins the chunks at 4
    assert [steps_in_next_call(s, 11 - s, 4) for s in (2, 3, 4)] == [1, 1, 4]


def test_train_steps_stay_on_device_donate_their_state_and_compile_once():
    """The hot path: several steps per call with no host transfer (transfer guard), the state's buffers donated,
    one compilation however often it is called; evaluation likewise."""
    config = tiny_config(steps_per_call=3, learning_rate=0.002)
    mesh = make_data_mesh(1)
    images, labels = synthetic_images(10, 24, seed=0)
    run = setup_run(config, num_classes=10, image_shape=(32, 32, 3), num_train=240, mean=(0.5,) * 3,
                    std=(0.25,) * 3, mesh=mesh)
    data = put_train_arrays(images, labels, mesh)
    eval_data = put_eval_arrays(images[:80], labels[:80], 40, mesh)
    state = run.initial_state
    order = run.permutation(state, 0)
    with jax.transfer_guard("disallow"):
        for _ in range(2):
            previous = state
            state, metrics = run.train_steps(state, data, order)
            assert all(leaf.is_deleted() for leaf in jax.tree.leaves(previous.params))
        totals, _ = run.evaluate(state, eval_data)
        jax.block_until_ready(totals)
    assert run.steps_per_call == 3 and metrics["loss"].shape == (3, 1)
    assert int(state.step[0]) == 6
    assert run.train_steps._cache_size() == 1
    with pytest.raises(Exception, match="[Dd]isallowed"):  # the guard does catch a host array
        with jax.transfer_guard("disallow"):
            run.train_steps(state, data, np.asarray(order))


def test_the_loop_keeps_at_most_one_call_in_flight(finished_run, dispatches):
    """JAX dispatches asynchronously: unless the loop waits, it queues a whole epoch of calls and sees a SIGTERM only
    after they have all run. After dispatching call n it waits for call n - 1's results (IN_FLIGHT_NOTE)."""
    calls = [i for i, (kind, _) in enumerate(dispatches) if kind == "call"]
    assert len(calls) == 12  # 2 epochs of 6 steps, one step per call on CPU
    for previous, current in zip(calls, calls[1:]):
        if current != calls[6]:  # not across the epoch boundary, where the epoch's metrics are read anyway
            assert dispatches[current + 1] == ("wait", dispatches[previous][1])  # call n - 1 waited for after call n


def test_alpha_moves_test_selectivity(tmp_path):
    """Done-when of the training issue, on a short run: alpha < 0 lowers selectivity, alpha > 0 raises it."""
    selectivity = {}
    for alpha in (-5.0, 0.0, 5.0):
        results = train_and_evaluate(tiny_config(alpha=alpha, num_epochs=3.0), str(tmp_path / f"a{alpha}"),
                                     log=_quiet)
        selectivity[alpha] = results.test_selectivity
    assert selectivity[-5.0] < 0.5 * selectivity[0.0] < selectivity[0.0] < selectivity[5.0], selectivity


@pytest.mark.parametrize("overrides,message", [
    ({"batch_size": 36, "num_devices": 8}, "not divisible by the 8 devices"),
    ({"batch_size": 400}, "larger than the 240 training examples"),
    ({"eval_batch_size": 44, "num_devices": 8}, "eval_batch_size=44 is not divisible"),
    ({"num_devices": 9}, "num_devices=9"),
    ({"model.name": "resnet21"}, r"model.name='resnet21' \(expected one of"),
])
def test_bad_inputs_give_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(tiny_config(**overrides), str(tmp_path / "bad"), log=_quiet)
    assert not os.path.exists(tmp_path / "bad")  # refused before anything was written
