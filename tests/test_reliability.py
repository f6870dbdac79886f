"""Reliability (docs/reliability.md): bad input to every command refused in one line with nothing changed on
disk; two processes on one directory; a stale lock; a damaged newest checkpoint; a non-finite loss. Fault injection
is tests/test_fault_injection.py."""

import hashlib
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import (ROOT, assert_same_run_files, command_env, expect_outcome, run_command,  # noqa: I001
                     with_overrides)
from selectivity_jax.rundir import DirectoryLock, run_dirname
from selectivity_jax.train.loop import train_and_evaluate

TINY = "configs/quickstart.py:tiny"  # 6 steps per epoch, batch 40, ResNet20 at width 4, one device
TWO_EPOCHS = ("--config.num_epochs=2",)


def _train(workdir, fault=None):
    return run_command("experiments.train", "--config", TINY, "--workdir", str(workdir), *TWO_EPOCHS, fault=fault)


def test_second_process_on_a_directory_is_refused(tmp_path):
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
    lone = tmp_path / "lone"
    expect_outcome(_train(lone))
    assert_same_run_files(str(workdir), str(lone))


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
