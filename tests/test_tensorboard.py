"""TensorBoard event files (config.tensorboard): each run of a vmapped group gets the scalars of its metrics.jsonl
rows, at their steps; switched off, or without tensorboardX, none are written and the results keep their bits; a
resumed run's repeated steps show their latest value."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from configs import quickstart
from helpers import ROOT, assert_same_run_files
from selectivity_jax.rundir import TENSORBOARD_DIR, check_workdir, prepare_workdir
from selectivity_jax.train import loop, metrics
from selectivity_jax.train.loop import train_group
from selectivity_jax.train.validation import validate_config

ALPHAS = (-1.0, 1.0)
# metrics.jsonl's fields that are no curve (step is the x axis)
BOOKKEEPING = {"epoch", "step", "models_in_group"}
CURVES = {"train_loss", "train_cross_entropy", "train_selectivity", "train_accuracy", "learning_rate", "alpha",
          "val_accuracy", "val_cross_entropy", "val_selectivity", "val_dead_unit_fraction"}


def tiny_config(tensorboard=True):
    """configs/quickstart.py:tiny: one epoch of 6 steps, validation after it."""
    config = quickstart.get_config("tiny")
    config.tensorboard = tensorboard
    return config


def train(root, tensorboard=True, log=lambda _: None):
    """A vmapped group of the tiny config at `ALPHAS` in ``root``; its run directories."""
    workdirs = [str(root / f"alpha_{alpha:g}_seed_0") for alpha in ALPHAS]
    train_group(tiny_config(tensorboard), list(ALPHAS), workdirs, log=log)
    return workdirs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny group trained with event files and without: (on, off) run directories."""
    root = tmp_path_factory.mktemp("tensorboard")
    return train(root / "on"), train(root / "off", tensorboard=False)


def read_events(run_dir):
    """[(file name, Event)] of a run's event files, files in TensorBoard's order (by name), records CRC-checked."""
    tensorboardx = metrics.import_tensorboardx(print)
    from tensorboardX.record_writer import masked_crc32c
    directory = os.path.join(run_dir, TENSORBOARD_DIR)
    events = []
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):  # TFRecord: length, its masked CRC, payload, its masked CRC
            header, (length,) = data[offset:offset + 8], struct.unpack("<Q", data[offset:offset + 8])
            payload = data[offset + 12:offset + 12 + length]
            assert struct.unpack("<I", data[offset + 8:offset + 12])[0] == masked_crc32c(header)
            assert struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])[0] == masked_crc32c(payload)
            events.append((name, tensorboardx.event.FromString(payload)))
            offset += 16 + length
    return events


def shown_scalars(events):
    """{tag: {step: value}} as TensorBoard's reader keeps them: a START event drops the points from its step on, a
    repeated step keeps its latest value."""
    shown = {}
    for _, event in events:
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            shown = {tag: {s: v for s, v in points.items() if s < event.step} for tag, points in shown.items()}
        for value in event.summary.value:
            shown.setdefault(value.tag, {})[event.step] = value.simple_value
    return shown


def accumulator_scalars(run_dir):
    """{tag: {step: value}} as TensorBoard's own Python reader gives them; None when tensorboard is not installed."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    accumulator = EventAccumulator(os.path.join(run_dir, TENSORBOARD_DIR))
    accumulator.Reload()
    return {tag: {event.step: event.value for event in accumulator.Scalars(tag)}
            for tag in accumulator.Tags()["scalars"]}


def expected_scalars(run_dir):
    """{tag: {step: value}} of a run's metrics.jsonl rows, each value at float32 (TensorBoard's precision)."""
    expected = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for row in map(json.loads, f):
            for key, value in row.items():
                items = value.items() if isinstance(value, dict) else [(None, value)]
                for layer, number in ([] if key in BOOKKEEPING else items):
                    tag = key if layer is None else f"{key}/{layer}"
                    expected.setdefault(tag, {})[row["step"]] = float(np.float32(number))
    return expected


def test_each_run_gets_its_metrics_rows_as_scalars(trained):
    on, _ = trained
    for alpha, run_dir in zip(ALPHAS, on):
        shown, expected = shown_scalars(read_events(run_dir)), expected_scalars(run_dir)
        assert shown == expected  # every tag, step and value, exactly (at float32)
        assert accumulator_scalars(run_dir) in (None, expected)
        layers = {tag for tag in shown if tag.startswith("val_layer_selectivity/")}
        assert set(shown) - layers == CURVES and len(layers) == 9
        assert shown["alpha"] == {6: alpha}  # each model into its own run's directory


def test_switched_off_writes_no_event_files_and_the_same_results(trained):
    on, off = trained
    for on_dir, off_dir in zip(on, off):
        assert os.path.isdir(os.path.join(on_dir, TENSORBOARD_DIR))
        assert not os.path.exists(os.path.join(off_dir, TENSORBOARD_DIR))
        assert_same_run_files(off_dir, on_dir, differing=("config.json",))  # results, metrics.jsonl, checkpoints
        with open(os.path.join(on_dir, "config.json"), "rb") as f_on, open(os.path.join(off_dir, "config.json"),
                                                                              "rb") as f_off:
            assert f_on.read().replace(b'"tensorboard": true', b'"tensorboard": false') == f_off.read()


def test_resumed_run_shows_the_latest_value_of_a_repeated_step(tmp_path, monkeypatch):
    """Killed after the first run's epoch row (event file flushed), before any checkpoint: the resume replays the
    epoch, metrics.jsonl is cut back, and the event files, which cannot be cut, show the replayed values."""
    closed, real_close = [], metrics.TensorBoardWriter.close

    def crash(name):
        if name == "metrics_row":
            raise RuntimeError("injected crash")

    def close(writer):
        closed.append(writer.directory)
        real_close(writer)
    monkeypatch.setattr(loop, "fault_point", crash)
    monkeypatch.setattr(metrics.TensorBoardWriter, "close", close)
    with pytest.raises(RuntimeError, match="injected crash"):
        train(tmp_path)
    first, second = [str(tmp_path / f"alpha_{alpha:g}_seed_0") for alpha in ALPHAS]
    assert len(closed) == 2  # closed on the exception's way out
    assert [event.step for _, event in read_events(first) if event.summary.value] == [6]
    assert not os.path.exists(os.path.join(second, TENSORBOARD_DIR))  # no row: no event file
    monkeypatch.setattr(loop, "fault_point", lambda name: None)
    train(tmp_path)
    events = read_events(first)
    assert len({name for name, _ in events}) == 2
    assert [event.step for _, event in events if event.summary.value] == [6, 6]  # step 6 written twice
    # each training call's file starts at the step after the one restored (0 both times): a START event there
    assert [(name, event.step) for name, event in events if event.HasField("session_log")] == [
        (name, 1) for name in sorted({name for name, _ in events})]
    for run_dir in (first, second):
        assert shown_scalars(read_events(run_dir)) == expected_scalars(run_dir)
        assert accumulator_scalars(run_dir) in (None, expected_scalars(run_dir))


def test_without_tensorboardx_training_works_with_one_warning(tmp_path, monkeypatch):
    for name in [name for name in sys.modules if name.split(".")[0] == "tensorboardX"] + ["tensorboardX"]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if it were not installed
    lines = []
    workdirs = train(tmp_path, log=lines.append)
    assert len([line for line in lines if "tensorboardX" in line]) == 1
    assert [line for line in lines if "tensorboardX" in line][0].startswith("warning: ")
    for run_dir in workdirs:
        assert os.path.exists(os.path.join(run_dir, "results.json"))
        assert not os.path.exists(os.path.join(run_dir, TENSORBOARD_DIR))


def test_importing_the_library_leaves_tensorboardx_out():
    """The library imports tensorboardX only for a run that writes event files, and keeps torch out of that import."""
    code = ("import sys; import selectivity_jax.train.loop, selectivity_jax.sweep; "
            "assert 'tensorboardX' not in sys.modules; from selectivity_jax.train.metrics import import_tensorboardx; "
            "assert import_tensorboardx(print) is not None; "
            "assert 'tensorboardX' in sys.modules and 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_field_is_a_checked_bool_that_changes_no_result(tmp_path):
    config = tiny_config()
    del config["tensorboard"]
    config.tensorboard = "yes"  # (the ConfigDict refuses a str for the bool field; a config built by hand need not)
    with pytest.raises(ValueError, match=r"tensorboard='yes' \(expected True or False\)"):
        validate_config(config)
    older = tiny_config()
    del older["tensorboard"]  # a run stored before the field existed
    prepare_workdir(str(tmp_path), older)
    for tensorboard in (True, False):
        check_workdir(str(tmp_path), tiny_config(tensorboard))  # resumes: not refused as a different config
