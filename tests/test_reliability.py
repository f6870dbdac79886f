"""Reliability (docs/reliability.md), one table per kind of failure; each case checks the exit status, one
``error:`` line without a traceback, the directory tree hashed before and after, and a bitwise resume where a run
continues:

- bad input to every command, directories that lie (run outputs without config.json, newer schemas), misspelled
  fields, over-long paths: `_bad_inputs` (one line, nothing changed on disk);
- two processes on one directory, a stale lock, a damaged newest checkpoint, a non-finite loss, damaged logs;
- Ctrl-C anywhere: `CTRL_C` (SIGINT takes SIGTERM's path: one line, exit 130, bitwise resume);
- library calls the index is not defined on: `NOT_DEFINED` (eager ValueError; checkify under jit);
- data that changed under the image-folder cache: `EDITS`; images of every Pillow mode: `FILE_CASES`,
  `MEMORY_CASES`, `REFUSED`;
- full disks and tight memory: `RESOURCE_ERRORS`, and a real full tmpfs and a real memory limit.

Kill -9 and SIGTERM at the loop's named moments are tests/test_fault_injection.py."""

import errno
import hashlib
import io
import json
import os
import pathlib
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
import warnings
import zlib

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from experiments import cli
from helpers import (ROOT, assert_same_run_files, command_env, expect_outcome, run_command,  # noqa: I001
                     with_overrides)
from selectivity_jax import selectivity_fn
from selectivity_jax.data import image_folder, load_image_folder, load_image_folder_splits, load_splits
from selectivity_jax.data.image_folder import decode_image, to_rgb
from selectivity_jax.resources import doing
from selectivity_jax.rundir import DirectoryLock, run_dirname
from selectivity_jax.train.loop import train_and_evaluate
from test_data import _tar, _write_tree

TINY = "configs/quickstart.py:tiny"  # 6 steps per epoch, batch 40, ResNet20 at width 4, one device
TWO_EPOCHS = ("--config.num_epochs=2",)


def _train(workdir, fault=None):
    return run_command("experiments.train", "--config", TINY, "--workdir", str(workdir), *TWO_EPOCHS, fault=fault)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> pathlib.Path:
    """A run of `_train` that nothing interrupted: the bits every interrupted run here must end with."""
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    expect_outcome(_train(workdir))
    return workdir


def test_second_process_on_a_directory_is_refused(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "experiments.train", "--config", TINY, "--workdir", str(workdir),
                              *TWO_EPOCHS], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=command_env())
    owner = workdir / ".lock.owner"
    deadline = time.time() + 120
    while not owner.exists() and time.time() < deadline:
        assert first.poll() is None, first.stderr.read()[-3000:]
        time.sleep(0.1)
    first.send_signal(signal.SIGSTOP)  # holds the lock, paused: the second surely starts while it works
    try:
        second = _train(workdir)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stderr.strip().splitlines()[-1].startswith(f"error: {workdir} is in use by pid {first.pid} on ")
    _, stderr = first.communicate(timeout=240)
    assert first.returncode == 0, stderr[-3000:]
    assert_same_run_files(str(workdir), str(uninterrupted))


def test_stale_lock_is_taken_over_with_a_warning(tmp_path):
    """A process killed while holding a lock leaves its .lock.owner; the operating system released the lock."""
    (tmp_path / ".lock.owner").write_text(json.dumps({"pid": 999999, "host": "gone", "since": "earlier"}))
    lines = []
    with DirectoryLock(str(tmp_path), lines.append):
        owner = json.loads((tmp_path / ".lock.owner").read_text())
        assert owner["pid"] == os.getpid()
        with pytest.raises(ValueError, match=f"is in use by pid {os.getpid()} on "):
            with DirectoryLock(str(tmp_path)):
                pass
    assert len(lines) == 1 and "taking over the lock" in lines[0] and "pid 999999 on gone" in lines[0]
    assert not (tmp_path / ".lock.owner").exists()


def _tiny(**overrides):
    from configs import quickstart
    config = quickstart.get_config("tiny")
    config.num_epochs = 2.0
    return with_overrides(config, overrides)


def test_damaged_newest_checkpoint_falls_back_to_an_older_one(tmp_path):
    reference = str(tmp_path / "reference")
    expected = train_and_evaluate(_tiny(), reference, log=lambda _: None)
    workdir = tmp_path / "damaged"
    from selectivity_jax.train.stopping import Preempted
    with pytest.raises(Preempted):
        train_and_evaluate(_tiny(), str(workdir), stop_after_steps=9, log=lambda _: None)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [6, 9]
    for path in (workdir / "checkpoints" / "9").rglob("*"):  # garble every file of the newest checkpoint
        if path.is_file():
            path.write_bytes(b"\0garbage" * 3)
    lines = []
    resumed = train_and_evaluate(_tiny(), str(workdir), log=lines.append)
    assert any("checkpoint 9 does not restore" in line for line in lines), lines
    assert any("resuming 1 run(s) from step 6" in line for line in lines), lines
    assert resumed == expected
    assert_same_run_files(str(workdir), reference)


def test_non_finite_loss_stops_without_saving(tmp_path):
    workdir = tmp_path / "diverges"
    with pytest.raises(ValueError, match=r"non-finite at step \d+ \(alpha 0, learning rate 1e\+30\).*last finite "
                                         r"checkpoint: none"):
        train_and_evaluate(_tiny(learning_rate=1e30), str(workdir), log=lambda _: None)
    assert not (workdir / "results.json").exists() and not (workdir / "metrics.jsonl").exists()
    assert not [p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]


# --- bad input ------------------------------------------------------------------------------------------------------

def _tree_hash(root: pathlib.Path) -> str:
    """A hash of every path, kind and content under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
        elif path.is_dir():
            digest.update(b"/")
    return digest.hexdigest()


def _png(size=(8, 8), color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _decompression_bomb() -> bytes:
    """A valid little PNG whose header claims 30000 x 30000 pixels: Pillow refuses it on opening."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big"))
    header = (30000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(
        b"IEND", b"")


def _image_folder(root: pathlib.Path, classes=("a", "b"), bomb=False) -> pathlib.Path:
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                (folder / f"{i}.png").write_bytes(_png(color=(40 * c, 10 * i, 0)))
    if bomb:
        (root / "train" / classes[0] / "9.png").write_bytes(_decompression_bomb())
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """What the bad-input cases point at: a finished run, a sweep holding it, image folders and archives."""
    base = tmp_path_factory.mktemp("inputs")
    sweep = base / "sweep"
    run = sweep / run_dirname(0.0, 0)
    train_and_evaluate(_tiny(num_epochs=1.0), str(run), log=lambda _: None)
    (sweep / "sweep.json").write_text(json.dumps({"alphas": [0.0], "seeds": [0], "mode": "serial"}))
    broken_sweep = base / "broken_sweep"
    shutil.copytree(sweep, broken_sweep)
    (broken_sweep / run_dirname(0.0, 0) / "results.json").write_text("{not json")
    for name, (file, mode, text) in (("cut_metrics", ("metrics.jsonl", "a", '{"epoch": 1, "st')),
                                     ("listed_results", ("results.json", "w", "[]"))):
        shutil.copytree(sweep, base / name)
        with open(base / name / run_dirname(0.0, 0) / file, mode) as f:
            f.write(text)
    orphan = base / "orphan_checkpoints"  # a run's files whose config.json was deleted
    shutil.copytree(run, orphan)
    (orphan / "config.json").unlink()
    unfinished = base / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((run / "config.json").read_text())
    _image_folder(base / "one_class", classes=("only",))
    _image_folder(base / "bomb", bomb=True)
    folder = _image_folder(base / "good")
    with tarfile.open(base / "good.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="good")
    data = (base / "good.tar.gz").read_bytes()
    (base / "truncated.tar.gz").write_bytes(data[:len(data) // 2])
    (base / "garbage.tar.gz").write_bytes(b"this is not an archive" * 50)
    (base / "a_file").write_text("not a directory")
    (base / "user_dir").mkdir()
    (base / "user_dir" / "thesis.tex").write_text("precious")
    return base


def _folder_data(root):
    return ["--config.data.name=image_folder", f"--config.data.root={root}", "--config.data.num_val=0",
            "--config.batch_size=2", "--config.lr_base_batch_size=2", "--config.eval_batch_size=2"]


def _bad_inputs(base):
    """(command, arguments, what the error line says) for bad inputs across the commands."""
    new = str(base / "new_run")
    train = lambda *args, workdir=new: ["--config", TINY, "--workdir", workdir, *args]  # noqa: E731
    tfds = str(base / "tfds")
    run = str(base / "sweep" / run_dirname(0.0, 0))
    return [
        ("experiments.train", train("--config.model.name=resnet2O"), "model.name='resnet2O'"),
        ("experiments.train", train("--config.foo=1"), "no field 'foo'"),
        ("experiments.train", train("--config.data.datadir=x"),
         "--config.data.datadir: the config has no field 'datadir'; did you mean --config.data.data_dir?"),
        ("experiments.train", train("--config.dat.data_dir=x"),
         "--config.dat: the config has no field 'dat'; did you mean --config.data?"),
        ("experiments.train", ["--config", "configs/nope.py", "--workdir", new], "configs/nope.py"),
        ("experiments.train", train("--config.compute_dtype=float13"), "compute_dtype='float13'"),
        ("experiments.train", train("--config.cpu_tuning=fast"), "cpu_tuning='fast'"),
        ("experiments.train", train("--config.alpha=nan"), "alpha=nan"),
        ("experiments.train", train("--config.learning_rate=inf"), "learning_rate=inf"),
        ("experiments.train", train("--config.weight_decay=-1e-4"), "weight_decay=-0.0001"),
        ("experiments.train", train("--config.data.mean=None"), "data.mean"),
        ("experiments.train", train("--config.lr_decay_at=(1.5,)"), "lr_decay_at"),
        ("experiments.train", train("--config.batch_size=0"), "batch_size=0"),
        ("experiments.train", train("--config.num_epochs=0.01"),
         "num_epochs=0.01 of 6 steps per epoch rounds to 0 steps; set num_epochs > 0.0833"),
        ("experiments.train", train(workdir=str(base / ("x" * 300) / "run")), "is longer than 255 bytes"),
        ("experiments.train", train("--config.batch_size=400"), "larger than the 240 training examples"),
        ("experiments.train", train("--config.num_devices=9"), "num_devices=9"),
        ("experiments.train", train("--config.model.selectivity_layers=bogus"), "selectivity_layers"),
        ("experiments.train", train("--config.alpha=1/0"), "division by zero"),
        ("experiments.train", train("--config.seed=-1"), "seed=-1"),
        ("experiments.train", train("--config.data.name=image_folder", f"--config.data.root={base}/none"),
         "does not exist"),
        ("experiments.train", train("--config.data.name=cifar10", "--config.data.download=False",
                                    f"--config.data.data_dir={tfds}"), "cifar-10-binary.tar.gz"),
        ("experiments.train", train("--config.data.name=tiny_imagenet", "--config.data.download=False",
                                    f"--config.data.data_dir={tfds}"), "tiny-imagenet-200.zip"),
        ("experiments.train", train(*_folder_data(base / "one_class")), "at least 2"),
        ("experiments.train", train(*_folder_data(base / "bomb")), "decompression bomb"),
        ("experiments.train", train(*_folder_data(base / "truncated.tar.gz")), "cannot read the archive"),
        ("experiments.train", train(*_folder_data(base / "garbage.tar.gz")), "cannot read the archive"),
        ("experiments.train", train(workdir=str(base / "a_file")), "is not a directory"),
        ("experiments.train", train(workdir=str(base / "a_file" / "run")), "is not a directory"),
        ("experiments.train", train(workdir=str(base / "user_dir")), "holds no run of this project"),
        ("experiments.train", train("--overwrite", workdir=str(base / "user_dir")),
         "--overwrite refuses to delete"),
        ("experiments.train", train("--config.alpha=1.0", workdir=run), "different config"),
        ("experiments.train", train("stray"), "unexpected arguments: stray"),
        ("experiments.sweep", ["--config", TINY, "--workdir", str(base / "new_sweep"), "--config.sweep.alphas=()"],
         "sweep.alphas"),
        ("experiments.sweep", ["--config", TINY, "--workdir", str(base / "new_sweep"),
                               "--config.sweep.seeds=(0,0)"], "sweep.seeds"),
        ("experiments.sweep", ["--config", TINY, "--workdir", str(base / "new_sweep"), "--mode=bogus"], "mode"),
        ("experiments.sweep", ["--config", TINY, "--workdir", str(base / "new_sweep"),
                               "--config.sweep.alphas=(-1.0,nan,1.0)"], "sweep.alphas='(-1.0,nan,1.0)' (expected"),
        ("experiments.sweep", ["--config", TINY, "--workdir", str(base / "new_sweep"), "--config.cpu_tuning=on"],
         "cpu_tuning='on'"),
        ("experiments.sweep", ["--config", TINY, "--workdir", str(base / "new_sweep"), "--group_size=-1"],
         "group_size"),
        ("experiments.sweep", ["--config", TINY, "--workdir", str(base / "user_dir")], "not a sweep directory"),
        ("experiments.report", ["--sweep", str(base / "missing")], "is not a directory"),
        ("experiments.report", ["--sweep", str(base / "a_file")], "is not a directory"),
        ("experiments.report", ["--sweep", str(base / "broken_sweep")], "is not valid JSON"),
        ("experiments.report", ["--sweep", str(base / "cut_metrics")],
         f"{base / 'cut_metrics' / run_dirname(0.0, 0) / 'metrics.jsonl'}: line 2 is not valid JSON"),
        ("experiments.report", ["--sweep", str(base / "listed_results")],
         f"{base / 'listed_results' / run_dirname(0.0, 0) / 'results.json'}: the results.json holds list"),
        ("experiments.train", train(workdir=str(base / "orphan_checkpoints")),
         "holds a run's checkpoints, metrics.jsonl, results.json, selectivity.npz, tensorboard, timing.jsonl but "
         "no config.json"),
        ("experiments.analyze", ["--workdir", str(base / "missing"), "--analysis", "ablation"], "is not a directory"),
        ("experiments.analyze", ["--workdir", run, "--analysis", "bogus"], "bogus"),
        ("experiments.analyze", ["--workdir", str(base / "unfinished"), "--analysis", "ablation"], "unfinished"),
        ("experiments.analyze", ["--workdir", run, "--analysis", "robustness",
                                 "--config.attacks.linf_epsilons=(2/0,)"], "division by zero"),
        ("experiments.analyze", ["--workdir", run, "--analysis", "attacks", "--config.attacks.norms=('l3',)"],
         "attacks.norms"),
        ("experiments.analyze", ["--workdir", run, "--analysis", "similarity"], "compares the runs of a sweep"),
        ("experiments.analyze", ["--workdir", run, "--analysis", ","], "no analysis named"),
        ("experiments.analyze", ["--analysis", "rs"], "either --workdir"),
        ("experiments.analyze", ["--workdir", run, "--models", f"{run},{run}", "--analysis", "rs"], "either --workdir"),
        ("experiments.analyze", ["--models", f"{run},{run}", "--analysis", "rs"], "needs --out"),
        ("experiments.analyze", ["--models", run, "--analysis", "rs", "--out", str(base / "cmp")], "at least two"),
        ("experiments.analyze", ["--models", f"{run},{run}", "--analysis", "rs", "--out", str(base / "cmp")],
         "one distinct label"),
        ("experiments.analyze", ["--models", f"{run},{run}", "--labels", "a,b", "--analysis", "rs", "--out",
                                 str(base / "cmp")], "has no rs result"),
        ("experiments.analyze", ["--models", f"{run},{run}", "--labels", "a,b", "--analysis", "ablation", "--out",
                                 str(base / "cmp")], "no comparison across models"),
        ("experiments.benchmark", ["--config", TINY, "--config.model.name=bogus"], "model.name='bogus'"),
    ]


def test_bad_inputs_are_one_line_and_change_nothing(inputs, tmp_path):
    cases = _bad_inputs(inputs)
    assert len(cases) >= 30
    by_module: dict[str, list[int]] = {}
    for index, (module, _, _) in enumerate(cases):
        by_module.setdefault(module, []).append(index)
    before = _tree_hash(inputs)
    outcomes = {}
    for module, indices in by_module.items():
        cases_path, results_path = tmp_path / f"{module}.json", tmp_path / f"{module}.out.json"
        cases_path.write_text(json.dumps([cases[i][1] for i in indices]))
        result = subprocess.run([sys.executable, "tests/cli_cases.py", module, str(cases_path), str(results_path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=300, env=command_env())
        assert result.returncode == 0, result.stderr[-3000:]
        outcomes.update(zip(indices, json.loads(results_path.read_text())))
    failures = []
    for index, (module, args, expected) in enumerate(cases):
        outcome = outcomes[index]
        lines = [line for line in outcome["stderr"].splitlines() if line.strip()]
        error_lines = [line for line in lines if line.startswith("error: ")]
        if (outcome["exit"] != 2 or len(error_lines) != 1 or "Traceback" in outcome["stderr"]
                or expected not in error_lines[0]):
            failures.append(f"{module} {' '.join(args)}: exit {outcome['exit']}, stderr {outcome['stderr'][-600:]!r}")
    assert not failures, "\n".join(failures)
    assert _tree_hash(inputs) == before  # nothing written, created or deleted
    assert not (inputs / "tfds").exists() and not (inputs / "new_run").exists()


def test_numbers_written_as_fractions():
    handler = signal.getsignal(signal.SIGTERM)
    try:
        from experiments.cli import numbers_written_as_fractions  # installs its SIGTERM handler: restored below
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert numbers_written_as_fractions(["--config.attacks.epsilons=(2/255, 8/255)", "--config.alpha=1/4",
                                         "--config.data.root=/data/1/2x", "--workdir=a/2"]) == [
        f"--config.attacks.epsilons=({2 / 255!r}, {8 / 255!r})", "--config.alpha=0.25",
        "--config.data.root=/data/1/2x", "--workdir=a/2"]
    assert np.isclose(float(numbers_written_as_fractions(["--config.x=2/255"])[0].split("=")[1]), 2 / 255)


def test_analysis_of_a_directory_in_use_is_refused(inputs):
    from selectivity_jax.analyses import get_analyses
    from selectivity_jax.analyses.runner import run_analyses
    from configs import analysis
    run = inputs / "sweep" / run_dirname(0.0, 0)
    with DirectoryLock(str(run / "analysis")):
        with pytest.raises(ValueError, match=f"{run / 'analysis'} is in use by pid {os.getpid()}"):
            run_analyses(str(inputs / "sweep"), get_analyses(["ablation"]), analysis.get_config(), log=lambda _: None)


def test_runs_stored_before_a_field_existed_resume(tmp_path):
    """A config.json written before model.norm and model.dropout existed (schema 1) is the default config's run;
    another value of a new field is a different run; a config of a newer schema is refused."""
    from selectivity_jax.rundir import check_workdir
    config = _tiny()
    stored = json.loads(config.to_json_best_effort(sort_keys=True))
    del stored["model"]["norm"], stored["model"]["dropout"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    check_workdir(str(tmp_path), config)
    config.model.dropout = 0.5
    with pytest.raises(ValueError, match=r"fields \['model.dropout'\] differ"):
        check_workdir(str(tmp_path), config)
    from selectivity_jax.rundir import SCHEMA_VERSION, read_run_config
    assert read_run_config(str(tmp_path))["model"]["norm"] == "batch"  # schema 1 read as the current schema
    stored["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="written by a newer selectivity_jax"):
        check_workdir(str(tmp_path), config)


def test_what_a_kill_leaves_is_the_projects(tmp_path):
    """A kill during a directory's first write leaves temporary files: the run resumes there, --overwrite may
    delete them; a file of the user's, even inside a run directory of a sweep, is never deleted."""
    from selectivity_jax.rundir import check_overwritable
    from selectivity_jax.sweep import check_sweep_dir
    from selectivity_jax.rundir import check_workdir
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json.tmp").write_text('{"alpha": ')
    (run / ".lock").touch()
    check_workdir(str(run), _tiny())
    check_overwritable(str(run))
    sweep = tmp_path / "sweep"
    (sweep / run_dirname(0.0, 0)).mkdir(parents=True)
    (sweep / "sweep.json.tmp").touch()
    check_sweep_dir(str(sweep))
    check_overwritable(str(sweep))
    (sweep / run_dirname(0.0, 0) / "notes.txt").touch()
    with pytest.raises(ValueError, match=r"did not write \(alpha_0_seed_0\)"):
        check_overwritable(str(sweep))
    (run / "notes.txt").touch()
    with pytest.raises(ValueError, match="holds no run of this project"):
        check_workdir(str(run), _tiny())


def test_a_cut_last_log_line_is_repaired_and_other_damage_named(tmp_path):
    """On resume, a metrics.jsonl line a kill cut short is dropped with a warning (the replay logs it again); a line
    that is not JSON with lines after it is damage no replay repairs: one error naming the file and the line."""
    from selectivity_jax.train.metrics import MetricsWriter
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"epoch": e, "step": 6 * e}) + "\n" for e in (1, 2, 3)]
    path.write_text("".join(rows) + '{"epoch": 4, "st')
    warnings = []
    MetricsWriter(str(path)).truncate_after(12, warnings.append)
    assert path.read_text() == "".join(rows[:2])
    assert len(warnings) == 1 and "last line was cut" in warnings[0] and str(path) in warnings[0]
    path.write_text(rows[0] + '{"epoch": 2, "st\n' + rows[2])
    with pytest.raises(ValueError, match=f"{path}: line 2 is not valid JSON and lines follow it"):
        MetricsWriter(str(path)).truncate_after(18, warnings.append)
    assert path.read_text() == rows[0] + '{"epoch": 2, "st\n' + rows[2]  # left as it was


def test_results_name_the_kernels_of_every_call(tmp_path, monkeypatch):
    """A run resumed on other convolution kernels (e.g. the oneDNN cache became unusable) computes other float32
    roundings: results.json names each call's kernels from its first step, not only the last call's."""
    from selectivity_jax.train import loop
    from selectivity_jax.train.stopping import Preempted
    workdir = tmp_path / "run"
    with pytest.raises(Preempted):
        train_and_evaluate(_tiny(), str(workdir), stop_after_steps=3, log=lambda _: None)
    rows = [json.loads(line) for line in open(workdir / "timing.jsonl")]
    (first,) = [row["convolutions"] for row in rows if "convolutions" in row]
    monkeypatch.setattr(loop, "setup_kernels", lambda setup: "other")
    results = train_and_evaluate(_tiny(), str(workdir), log=lambda _: None)
    assert results.convolutions == f"{first} from step 0, other from step 3"
    assert json.loads((workdir / "results.json").read_text())["convolutions"] == results.convolutions


# --- Ctrl-C ---------------------------------------------------------------------------------------------------------

# One process per case, each resuming the previous one's directory (6 steps per epoch, checkpoints at 6 and 12).
CTRL_C = (
    "int:restored:1",         # before the first step, while it compiles
    "int:step:3",             # training (step 3)
    "int:checkpoint_save:1",  # inside checkpoint 6's write (orbax's temporary directory)
    "int:evaluation:1",       # the final test evaluation
)


def test_ctrl_c_anywhere_is_one_line_exit_130_and_resumes_bitwise(tmp_path, uninterrupted):
    resumed = tmp_path / "resumed"
    for fault in CTRL_C:
        result = _train(resumed, fault)
        expect_outcome(result, fault)  # exit 130, "stopped by SIGINT ...", no traceback
        if fault == "int:step:3":  # inside the loop: the current step is checkpointed, as for a SIGTERM
            assert "at step 3; checkpoint saved" in result.stderr.splitlines()[-1], result.stderr[-2000:]
            assert (resumed / "checkpoints" / "3").is_dir()
    expect_outcome(_train(resumed))
    assert_same_run_files(str(resumed), str(uninterrupted))


# --- library calls --------------------------------------------------------------------------------------------------

NOT_DEFINED = [
    (np.array([0, 1, 2, 3]), 3, None, r"labels must lie in \[0, num_classes=3\)"),
    (np.array([0, -1, 1, 1]), 3, None, r"labels must lie in \[0, num_classes=3\)"),
    (np.array([0.0, 1.5, 1.0, 2.0]), 3, None, "labels must be whole numbers"),
    (np.array([0, 1, 1, 0]), 0, None, "num_classes must be a positive int; got 0"),
    (np.array([0, 1, 1, 0]), 2.0, None, "num_classes must be a positive int; got 2.0"),
    (np.array([0, 1, 1, 0]), 2, {"pre_relu": np.array([[1.0], [-0.5], [2.0], [0.0]], np.float32)},
     r"activations\['pre_relu'\] has negative values"),
]


@pytest.mark.parametrize("labels, num_classes, acts, message", NOT_DEFINED)
def test_input_the_index_is_not_defined_on_raises(labels, num_classes, acts, message):
    """Eager calls refuse what would otherwise return a number: out-of-range or fractional labels, no classes,
    pre-ReLU responses (issue 27)."""
    acts = acts or {"a": np.abs(np.random.default_rng(0).normal(size=(4, 3))).astype(np.float32)}
    with pytest.raises(ValueError, match=message):
        selectivity_fn(acts, labels, num_classes)


def test_padding_rows_may_hold_any_label_and_jit_checks_only_when_asked():
    from jax.experimental import checkify
    acts = {"a": np.abs(np.random.default_rng(1).normal(size=(4, 3))).astype(np.float32)}
    padded = np.array([0, 1, 1, -1])  # the last row is padding (mask 0): its label is not a class
    mask = np.array([1, 1, 1, 0])
    assert np.isfinite(float(selectivity_fn(acts, padded, 2, mask=mask)))
    bad = np.array([0, 1, 5, 1])
    traced = jax.jit(lambda a, y: selectivity_fn(a, y, 2))  # documented: traced values are not checked by default
    assert np.isfinite(float(traced(acts, bad)))
    checked = jax.jit(checkify.checkify(lambda a, y: selectivity_fn(a, y, 2, checked=True)))
    error, _ = checked(acts, bad)
    with pytest.raises(checkify.JaxRuntimeError, match=r"labels must lie in \[0, num_classes=2\)"):
        error.throw()
    error, value = checked(acts, np.array([0, 1, 1, 0]))
    error.throw()  # nothing wrong: no error
    assert float(value) == pytest.approx(float(selectivity_fn(acts, np.array([0, 1, 1, 0]), 2)))


# --- the cache sees every change ----------------------------------------------------------------------------------


def _stored_png(path: pathlib.Path, pixels: np.ndarray) -> None:
    """Writes an uncompressed PNG: its size depends only on the image's shape, not on its pixels."""
    Image.fromarray(pixels).save(path, format="PNG", compress_level=0)


def _stored_tree(root: pathlib.Path) -> pathlib.Path:
    """`test_data._write_tree`'s tree (3 classes, 4 train and 2 test images each), re-saved uncompressed."""
    _write_tree(root)
    for path in root.rglob("*.png"):
        _stored_png(path, np.asarray(Image.open(path)))
    return root


def _config(root: pathlib.Path, cache: pathlib.Path) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(name="image_folder", root=str(root), cache_dir=str(cache), num_val=0))


def _load(root: pathlib.Path, cache: pathlib.Path) -> dict:
    """{split: (images, labels, class names)} through load_splits with a cache dir."""
    splits = load_splits(_config(root, cache), seed=0)
    return {name: (*getattr(splits, name), splits.class_names) for name in ("train", "test")}


def _assert_equal(actual: dict, expected: dict) -> None:
    for split in ("train", "test"):
        assert actual[split][2] == expected[split][2]
        np.testing.assert_array_equal(actual[split][0], expected[split][0])
        np.testing.assert_array_equal(actual[split][1], expected[split][1])


def _same(a: dict, b: dict) -> bool:
    return all(a[s][2] == b[s][2] and a[s][0].shape == b[s][0].shape and np.array_equal(a[s][0], b[s][0])
               and np.array_equal(a[s][1], b[s][1]) for s in ("train", "test"))


def _new_pixels(path: pathlib.Path) -> np.ndarray:
    return 255 - np.asarray(Image.open(path))


def _edit_new_mtime(root: pathlib.Path) -> None:
    path = root / "train" / "ant" / "00.png"
    before = path.stat()
    _stored_png(path, _new_pixels(path))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))


def _edit_same_size_and_mtime(root: pathlib.Path) -> None:
    """New pixels, the same size, the mtime set back: only the status-change time (ctime) tells."""
    path = root / "train" / "ant" / "00.png"
    before = path.stat()
    _stored_png(path, _new_pixels(path))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    while path.stat().st_ctime_ns == before.st_ctime_ns:  # the clock's tick may not have passed yet
        time.sleep(0.01)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _add(root: pathlib.Path) -> None:
    _stored_png(root / "train" / "bee" / "09.png", np.full((8, 8, 3), 7, np.uint8))


def _remove(root: pathlib.Path) -> None:
    (root / "test" / "cat" / "01.png").unlink()


def _rename(root: pathlib.Path) -> None:
    (root / "train" / "ant" / "00.png").rename(root / "train" / "ant" / "zz.png")  # sorts last now


def _move_between_classes(root: pathlib.Path) -> None:
    (root / "train" / "ant" / "00.png").rename(root / "train" / "bee" / "ant_00.png")


def _rename_class(root: pathlib.Path) -> None:
    for split in ("train", "test"):
        (root / split / "cat").rename(root / split / "cow")


EDITS = [_edit_new_mtime, _edit_same_size_and_mtime, _add, _remove, _rename, _move_between_classes, _rename_class]


@pytest.mark.parametrize("edit", EDITS, ids=lambda edit: edit.__name__.strip("_"))
def test_directory_cache_sees_the_edit(tmp_path, edit):
    root, cache = _stored_tree(tmp_path / "tree"), tmp_path / "cache"
    before = _load(root, cache)
    _assert_equal(before, load_image_folder_splits(root))
    edit(root)
    after = _load(root, cache)
    _assert_equal(after, load_image_folder_splits(root))  # what an uncached read gives now
    assert not _same(after, before)


def test_directory_cache_sees_an_empty_class_folder(tmp_path):
    root, cache = _stored_tree(tmp_path / "tree"), tmp_path / "cache"
    _load(root, cache)
    (root / "train" / "dog").mkdir()
    with pytest.raises(ValueError, match="hold no images"):
        _load(root, cache)


@pytest.mark.parametrize("name, same_size", [("tree.tar.gz", False), ("tree.tar", True)])
def test_archive_cache_sees_a_replaced_archive(tmp_path, name, same_size):
    """An archive replaced under the same name with its mtime set back (and, uncompressed, the same size)."""
    tree, cache = _stored_tree(tmp_path / "tree"), tmp_path / "cache"
    archive = _tar(tree, tmp_path / name, "top")
    before_stat = archive.stat()
    before = _load(archive, cache)
    _assert_equal(before, load_image_folder_splits(tree))
    path = tree / "test" / "bee" / "01.png"
    mtime = path.stat().st_mtime_ns
    _stored_png(path, _new_pixels(path))
    os.utime(path, ns=(mtime, mtime))  # the same member header: only the member's bytes differ
    _tar(tree, archive, "top")
    os.utime(archive, ns=(before_stat.st_atime_ns, before_stat.st_mtime_ns))
    if same_size:  # every member the same size: the uncompressed archive is too
        assert archive.stat().st_size == before_stat.st_size
    after = _load(archive, cache)
    _assert_equal(after, load_image_folder_splits(tree))
    assert not _same(after, before)


@pytest.mark.parametrize("kind", ["directory", "archive"])
def test_warm_cache_is_reused_without_decoding(tmp_path, monkeypatch, kind):
    tree = _stored_tree(tmp_path / "tree")
    root = tree if kind == "directory" else _tar(tree, tmp_path / "tree.tar.gz", None)
    calls = []
    decode = image_folder.decode_image
    monkeypatch.setattr(image_folder, "decode_image", lambda *args, **kw: calls.append(1) or decode(*args, **kw))
    first = _load(root, tmp_path / "cache")
    assert len(calls) == 18
    (tree / "train" / "ant" / "notes.txt").write_text("edited: not an image, not read")
    _assert_equal(_load(root, tmp_path / "cache"), first)
    assert len(calls) == 18  # nothing decoded again
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_cache_under_the_old_key_is_never_read_nor_deleted(tmp_path):
    """The key before issue 27 hashed the root's path, size and mtime only: a file there is stale by design."""
    root, cache = _stored_tree(tmp_path / "tree"), tmp_path / "cache"
    stat = os.stat(root)
    identity = f"{os.path.abspath(root)}|{stat.st_size}|{stat.st_mtime_ns}|None"
    old = cache / f"image_folder_tree_{hashlib.sha1(identity.encode()).hexdigest()[:12]}.npz"
    cache.mkdir()
    zeros = np.zeros((2, 8, 8, 3), np.uint8)
    np.savez(old, train_images=zeros, train_labels=np.array([0, 1], np.int32), test_images=zeros,
             test_labels=np.array([0, 1], np.int32), class_names=np.asarray(["x", "y"]))
    content = old.read_bytes()
    _assert_equal(_load(root, cache), load_image_folder_splits(root))
    assert old.read_bytes() == content


# --- every Pillow mode decodes right, or is refused ---------------------------------------------------------------

RNG = np.random.default_rng(0)
GREY16 = np.array([[0, 1, 128, 129, 255, 256, 257], [32767, 32768, 51200, 65278, 65279, 65534, 65535]], np.uint16)
PALETTE = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90], [200, 210, 220]], np.uint8)
INDICES = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=-1)


def _scaled16(values: np.ndarray) -> np.ndarray:
    """The 8-bit value of 16-bit grey: round(v / 257), computed in float64."""
    return _grey(np.round(values.astype(np.float64) / 257))


def _saved(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _raw_png(samples: np.ndarray, color_type: int, depth: int, extra: bytes = b"") -> bytes:
    """A PNG written by hand (16-bit colour, 2-bit grey, a grey tRNS: what Pillow cannot write) from [H, W, C]
    samples."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    height, width = samples.shape[:2]
    if depth in (8, 16):
        rows = [row.astype(">u2" if depth == 16 else np.uint8).tobytes() for row in samples]
    else:  # depth 2, one channel, width a multiple of 4
        quads = samples.reshape(height, width // 4, 4).astype(np.uint8)
        rows = [(q[:, 0] << 6 | q[:, 1] << 4 | q[:, 2] << 2 | q[:, 3]).tobytes() for q in quads]
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra
            + chunk(b"IDAT", zlib.compress(b"".join(b"\0" + row for row in rows))) + chunk(b"IEND", b""))


def _trns(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + b"tRNS" + data + struct.pack(">I", zlib.crc32(b"tRNS" + data))


def _palette_image() -> Image.Image:
    image = Image.frombytes("P", INDICES.shape[::-1], INDICES.tobytes())
    image.putpalette(PALETTE.ravel().tolist())
    return image


def _frombytes(mode: str, values: np.ndarray) -> Image.Image:
    return Image.frombytes(mode, values.shape[1::-1], np.ascontiguousarray(values).tobytes())


BITS = RNG.random((3, 8)) > 0.5
GREY = RNG.integers(0, 256, (3, 5), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (3, 5, 4), dtype=np.uint8)
CMYK = RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (2, 4, 4), dtype=np.uint16)
GREY2 = RNG.integers(0, 4, (2, 8))
CMYK_JPEG = _saved(_frombytes("CMYK", CMYK), "JPEG", quality=95)


def _cmyk_expected() -> np.ndarray:
    """Pillow's CMYK -> RGB formula (no ICC profile) on the samples as the JPEG stores them (lossy)."""
    c, m, y, k = np.moveaxis(np.asarray(Image.open(io.BytesIO(CMYK_JPEG)), np.float64), -1, 0)
    return np.round(np.stack([(255 - c) * (255 - k), (255 - m) * (255 - k), (255 - y) * (255 - k)], -1) / 255)

# (case, the mode Pillow opens the file in, file bytes, expected uint8 RGB). Alpha and transparency are dropped.
FILE_CASES = [
    ("1", "1", lambda: _saved(Image.fromarray(BITS)), lambda: _grey(np.where(BITS, 255, 0))),
    ("L", "L", lambda: _saved(Image.fromarray(GREY)), lambda: _grey(GREY)),
    ("L 2-bit", "L", lambda: _raw_png(GREY2[..., None], 0, 2), lambda: _grey(GREY2 * 85)),
    ("L tRNS", "L", lambda: _raw_png(GREY[..., None], 0, 8, _trns(bytes([0, GREY[0, 0]]))), lambda: _grey(GREY)),
    ("LA", "LA", lambda: _saved(_frombytes("LA", RGBA[..., :2])), lambda: _grey(RGBA[..., 0])),
    ("RGB", "RGB", lambda: _saved(_frombytes("RGB", RGBA[..., :3])), lambda: RGBA[..., :3]),
    ("RGB tRNS", "RGB", lambda: _saved(_frombytes("RGB", RGBA[..., :3]), transparency=tuple(RGBA[0, 0, :3].tolist())),
     lambda: RGBA[..., :3]),
    ("RGBA", "RGBA", lambda: _saved(_frombytes("RGBA", RGBA)), lambda: RGBA[..., :3]),
    ("P", "P", lambda: _saved(_palette_image()), lambda: PALETTE[INDICES]),
    ("P transparent index", "P", lambda: _saved(_palette_image(), transparency=1), lambda: PALETTE[INDICES]),
    ("P alpha per entry", "P", lambda: _saved(_palette_image(), transparency=bytes([255, 0, 128, 255])),
     lambda: PALETTE[INDICES]),
    ("CMYK JPEG", "CMYK", lambda: CMYK_JPEG, _cmyk_expected),
    ("I;16", "I;16", lambda: _saved(Image.fromarray(GREY16)), lambda: _scaled16(GREY16)),
    ("I;16 tRNS", "I;16", lambda: _raw_png(GREY16[..., None], 0, 16, _trns(b"\xff\xff")), lambda: _scaled16(GREY16)),
    ("RGB 16-bit", "RGB", lambda: _raw_png(RGB16[..., :3], 2, 16), lambda: RGB16[..., :3] >> 8),  # Pillow: high byte
    ("RGBA 16-bit", "RGBA", lambda: _raw_png(RGB16, 6, 16), lambda: RGB16[..., :3] >> 8),
    ("LA 16-bit", "RGBA", lambda: _raw_png(RGB16[..., :2], 4, 16), lambda: _grey(RGB16[..., 0] >> 8)),
]


@pytest.mark.parametrize("case, mode, data, expected", FILE_CASES, ids=[case[0] for case in FILE_CASES])
def test_file_modes_decode_to_the_right_rgb(case, mode, data, expected):
    data = data()
    assert Image.open(io.BytesIO(data)).mode == mode  # the case holds the mode it names
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's warnings too (a palette with alpha straight to RGB warns)
        decoded = decode_image(data, case)
    assert decoded.dtype == np.uint8 and decoded.shape == expected().shape
    np.testing.assert_array_equal(decoded, expected())


def _pa_image() -> Image.Image:
    image = _frombytes("PA", np.stack([INDICES, np.full_like(INDICES, 9)], -1))
    image.putpalette(PALETTE.ravel().tolist())
    return image


# Images made in memory (modes no JPEG or PNG opens in): (case, image, declared maximum, expected uint8 RGB).
MEMORY_CASES = [
    ("I;16B", lambda: _frombytes("I;16B", GREY16.astype(">u2")), None, lambda: _scaled16(GREY16)),
    ("I;16L", lambda: _frombytes("I;16L", GREY16.astype("<u2")), None, lambda: _scaled16(GREY16)),
    ("I declared 16-bit", lambda: _frombytes("I", GREY16.astype(np.int32)), 65535, lambda: _scaled16(GREY16)),
    ("RGBX", lambda: _frombytes("RGBX", RGBA), None, lambda: RGBA[..., :3]),
    ("PA", _pa_image, None, lambda: PALETTE[INDICES]),
]


@pytest.mark.parametrize("case, image, maximum, expected", MEMORY_CASES, ids=[case[0] for case in MEMORY_CASES])
def test_memory_modes_convert_to_the_right_rgb(case, image, maximum, expected):
    converted = np.asarray(to_rgb(image(), case, maximum))
    assert converted.dtype == np.uint8
    np.testing.assert_array_equal(converted, expected())


REFUSED = [
    ("F", lambda: _frombytes("F", RNG.random((2, 3)).astype(np.float32)), None, "floating point"),
    ("I", lambda: _frombytes("I", GREY16.astype(np.int32)), None, "without a declared range"),
    ("I", lambda: _frombytes("I", np.array([[0, 70000]], np.int32)), 65535, "outside its declared range"),
    ("La", lambda: Image.new("La", (2, 2)), None, "no faithful conversion"),
    ("RGBa", lambda: Image.new("RGBa", (2, 2)), None, "no faithful conversion"),
    ("LAB", lambda: Image.new("LAB", (2, 2)), None, "no faithful conversion"),
    ("HSV", lambda: Image.new("HSV", (2, 2)), None, "no faithful conversion"),
    ("YCbCr", lambda: Image.new("YCbCr", (2, 2)), None, "no faithful conversion"),  # a JPEG opens as RGB
]


@pytest.mark.parametrize("mode, image, maximum, why", REFUSED, ids=[f"{c[0]}-{c[3]}" for c in REFUSED])
def test_modes_without_a_faithful_conversion_are_refused(mode, image, maximum, why):
    with pytest.raises(ValueError, match=rf"some/dir/x\.png.*'{mode}'.*{why}"):
        to_rgb(image(), "some/dir/x.png", maximum)


def _sixteen_bit_folder(root: pathlib.Path) -> pathlib.Path:
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True)
        Image.fromarray(GREY16).save(root / "train" / name / "x.png")
    return root


def test_16_bit_png_folder_is_scaled_not_white(tmp_path):
    images, _, _ = load_image_folder(_sixteen_bit_folder(tmp_path), "train")
    np.testing.assert_array_equal(images, np.stack([_scaled16(GREY16)] * 2))


def test_16_bit_png_opened_as_32_bit_int_by_older_pillow(tmp_path, monkeypatch):
    """Older Pillow versions open 16-bit grey PNGs as 'I': the PNG's declared depth gives the range."""
    monkeypatch.setitem(PngImagePlugin._MODES, (16, 0), ("I", "I;16B"))
    root = _sixteen_bit_folder(tmp_path)
    assert Image.open(root / "train" / "a" / "x.png").mode == "I"
    images, _, _ = load_image_folder(root, "train")
    np.testing.assert_array_equal(images, np.stack([_scaled16(GREY16)] * 2))


def test_refused_image_is_one_error_line(tmp_path, monkeypatch, capsys):
    """A refused image reaches a command's user as one ``error:`` line naming the file, exit status 2."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        from experiments.cli import run_reporting_errors  # installs its SIGTERM handler: restored below
    finally:
        signal.signal(signal.SIGTERM, handler)
    monkeypatch.setitem(PngImagePlugin._MODES, (16, 0), ("I", "I;16B"))
    monkeypatch.setattr(image_folder, "_declared_maximum", lambda image: None)  # an 'I' image of unknown range
    root = _sixteen_bit_folder(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_errors(lambda: load_image_folder(root, "train"))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: image \S*train/[ab]/x\.png: Pillow mode 'I' ", lines[0]), lines


# --- full disks and tight memory ----------------------------------------------------------------------------------

TINY_ARGS = ("--config", TINY, *TWO_EPOCHS)  # `_train`'s run
TEMPORARY = re.compile(r"\.tmp$|\.orbax-checkpoint-tmp")


def _raised(make):
    """The exception ``make`` raises (built inside an ``except`` so that its chain is Python's own)."""
    try:
        make()
    except BaseException as error:  # noqa: BLE001
        return error
    raise AssertionError("nothing raised")


def _wrapped_no_space():
    try:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/results.json.tmp")
    except OSError as error:
        raise ValueError("saving failed") from error


def _tensorstore_text():
    with doing("writing a checkpoint", "/data/run/checkpoints"):
        raise ValueError('RESOURCE_EXHAUSTED: Error writing local file "/data/run/checkpoints/6.orbax-checkpoint-tmp/'
                         'default.orbax-checkpoint-tmp/_sharding": Failed to write 30273 bytes to file 5: No space '
                         "left on device [os_error_code='28']")


def _xla_out_of_memory():
    with doing("training"):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1073741824 bytes.")


def _grouped_quota():
    raise ExceptionGroup("save threads", [RuntimeError("x"), OSError(errno.EDQUOT, "Disk quota exceeded", "/q/f")])


def _import_under_limit():
    raise ImportError("libXau.so.6: failed to map segment from shared object")


RESOURCE_ERRORS = [
    (_wrapped_no_space, "no space left on /data/run while starting (free space and run the same command again"),
    (_tensorstore_text, "no space left on /data/run/checkpoints while writing a checkpoint (free space"),
    (_grouped_quota, "no space left on /q/f while starting"),
    (lambda: (_ for _ in ()).throw(MemoryError()), "out of memory while starting"),
    (_xla_out_of_memory, "out of memory while training"),
    (_import_under_limit, "out of memory while loading libraries"),
    (lambda: exec("with doing('loading data'): raise OSError(errno.ENOMEM, 'Cannot allocate memory')"),
     "out of memory while loading data"),
]


@pytest.mark.parametrize("make, expected", RESOURCE_ERRORS)
def test_disk_and_memory_errors_are_named(make, expected):
    message = cli.resource_error(_raised(make))
    assert message is not None and message.startswith(expected), message


def test_an_internal_kernel_failure_under_a_memory_limit_is_named_as_memory(monkeypatch):
    """XLA's CPU kernels report a failed allocation as INTERNAL with no word of memory (seen at a 1 GiB limit):
    under an address-space limit the line names memory and the limit; without one it stays a bug report."""
    def kernel_failure():
        with doing("training"):
            raise RuntimeError("INTERNAL: YNNPACK operation failed\n")
    monkeypatch.setattr(cli, "_address_space_limit", lambda: 1 << 30)
    message = cli.resource_error(_raised(kernel_failure))
    assert message is not None and message.startswith(
        "out of memory while training, most likely: XLA failed with 'INTERNAL: YNNPACK operation failed' under this "
        "process's address-space limit of 1024 MiB"), message
    monkeypatch.setattr(cli, "_address_space_limit", lambda: None)
    assert cli.resource_error(_raised(kernel_failure)) is None


def test_other_errors_are_left_to_the_other_handlers():
    assert cli.resource_error(_raised(lambda: int("x"))) is None
    assert cli.resource_error(_raised(lambda: open("/nonexistent/file"))) is None


def _train_limited(workdir, preexec_fn=None):
    return subprocess.run([sys.executable, "-m", "experiments.train", *TINY_ARGS, "--workdir", str(workdir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240, env=command_env(), preexec_fn=preexec_fn)


def _one_error_line(result, cause):
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and cause in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) < 5, result.stderr[-3000:]


def _temporary_files(directory):
    return [os.path.join(parent, name) for parent, dirs, files in os.walk(directory) for name in dirs + files
            if TEMPORARY.search(name)]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 200 KiB tmpfs (too small for a tiny run's first checkpoint), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip() or made.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_leaves_no_temporary_files_and_resumes_bitwise(small_tmpfs, uninterrupted):
    """The first checkpoint does not fit: one line, the failed write's files gone (the user's files beside the run,
    a ``.tmp`` among them, untouched); once the disk grows, the same command ends with an uninterrupted run's bits."""
    users = small_tmpfs / "users"
    users.mkdir()
    (users / "draft.tmp").write_text("the user's")
    before = _tree_hash(users)
    workdir = small_tmpfs / "run"
    _one_error_line(_train_limited(workdir), "no space left on ")
    assert not _temporary_files(workdir) and _tree_hash(users) == before
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_tmpfs)], check=True)
    resumed = _train_limited(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not _temporary_files(workdir)
    assert_same_run_files(str(workdir), str(uninterrupted))


def test_out_of_memory_at_start_up_is_one_line(tmp_path):
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))  # fails while JAX's libraries load
    workdir = tmp_path / "run"
    _one_error_line(_train_limited(workdir, limit_memory), "out of memory while ")
    assert not workdir.exists()
