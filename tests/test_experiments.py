"""The command-line entry points, run as a user runs them (subprocesses from the repository root)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/quickstart.py:tiny"  # seconds-long quickstart on one device


def run(module, *args, **kwargs):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kwargs)


def file_states(directory):
    """{relative path: (size, mtime in ns)} of every file and directory under ``directory``."""
    states = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            stat = os.stat(path)
            states[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return states


def test_train_cli_quickstart(tmp_path):
    workdir = tmp_path / "run"
    # JAX logs "Compiling <name> ..." for each program it compiles (shown at --verbosity=0)
    log_compiles = {**os.environ, "JAX_LOG_COMPILES": "1"}
    result = run("experiments.train", "--config", TINY, "--workdir", str(workdir),
                 "--config.alpha=-1.0", "--verbosity=0", env=log_compiles)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/1" in result.stdout and "test accuracy" in result.stdout
    assert "Compiling" in result.stderr  # the signal the second call is checked by
    results = json.loads((workdir / "results.json").read_text())
    assert results["alpha"] == -1.0 and np.isfinite(results["test_selectivity"])
    assert results["cpu_tuning"] == "auto"  # the project's XLA:CPU settings, on by default
    assert json.loads((workdir / "config.json").read_text())["model"]["width"] == 4
    # the same command again: nothing compiled, loaded or written (judged by what ran, not by equal numbers)
    before = file_states(workdir)
    again = run("experiments.train", "--config", TINY, "--workdir", str(workdir),
                "--config.alpha=-1.0", "--verbosity=0", env=log_compiles)
    assert again.returncode == 0 and "already finished" in again.stdout
    assert "Compiling" not in again.stderr, again.stderr[-2000:]
    assert file_states(workdir) == before
    # another config on the same directory: refused in one line, nothing overwritten
    refused = run("experiments.train", "--config", TINY, "--workdir", str(workdir),
                  "--config.alpha=2.0")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ") and "--overwrite" in refused.stderr
    assert json.loads((workdir / "results.json").read_text()) == results


def test_train_cli_bad_batch_size_is_one_line(tmp_path):
    result = run("experiments.train", "--config", TINY, "--workdir", str(tmp_path / "x"),
                 "--config.num_devices=8", "--config.batch_size=36",
                 env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: batch_size=36 is not divisible by the 8 devices of the mesh; use a multiple of 8")


def test_sigterm_saves_a_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", "--config", TINY, "--workdir", str(workdir),
         "--config.num_epochs=500", "--config.checkpoint_every_epochs=1000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        assert process.poll() is None, process.stderr.read()[-3000:]
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert "checkpoint saved" in stderr
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[-1] >= 6  # saved at the step it reached (checkpoint_every_epochs would never save)


def test_benchmark_cli(tmp_path):
    output = tmp_path / "bench.json"
    result = run("experiments.benchmark", "--config", TINY, "--steps", "2",
                 "--output", str(output), "--config.cpu_tuning=off")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "selectivity term overhead" in result.stdout and "cpu_tuning off" in result.stdout
    figures = json.loads(output.read_text())
    assert figures["cpu_tuning"] == "off"  # the switch back to XLA's defaults acted before JAX started
    assert figures["train_step_compiles/alpha_1"] == 1
    assert all(figures[f"train_images_per_second/{k}"] > 0 for k in ("no_selectivity_term", "alpha_0", "alpha_1"))


def test_sweep_then_report_cli(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run("experiments.sweep", "--config", TINY, "--workdir", str(sweep_dir), "--mode=vmap",
                 "--config.sweep.alphas=(-2.0, 2.0)", "--config.cpu_tuning=off")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 group(s) of at most 2" in result.stdout
    for name in ("alpha_-2_seed_0", "alpha_2_seed_0"):
        results = json.loads((sweep_dir / name / "results.json").read_text())
        assert results["models_in_group"] == 2 and results["cpu_tuning"] == "off"
    report = run("experiments.report", "--sweep", str(sweep_dir))
    assert report.returncode == 0, report.stderr[-3000:]
    assert (sweep_dir / "report.md").exists() and (sweep_dir / "report.csv").exists()
    assert (sweep_dir / "figures" / "accuracy_vs_selectivity.png").read_bytes()[:4] == b"\x89PNG"
