"""Check once, at the door: one `experiments.train` and one `experiments.sweep` run call each validation of their
input once (per run directory and per batch size), however many groups the sweep trains."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/quickstart.py:tiny"


def check_counts(*args):
    """{check: calls} of one command run under tests/count_checks.py."""
    done = subprocess.run([sys.executable, "tests/count_checks.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [line for line in done.stdout.splitlines() if line.startswith("CHECK_COUNTS ")][-1]
    return json.loads(line.split(" ", 1)[1])


def test_train_checks_its_input_once(tmp_path):
    counts = check_counts("experiments.train", "--config", TINY, "--workdir", str(tmp_path / "run"),
                          "--config.num_epochs=1")
    assert counts == {"check_available": 1, "check_batch_size[batch_size]": 1, "check_batch_size[eval_batch_size]": 1,
                      "check_workdir[run]": 1, "maybe_initialize_distributed": 1, "use_config": 1,
                      "validate_config": 1}


@pytest.mark.parametrize("mode", ["serial"])
def test_sweep_checks_its_input_once_for_all_groups(tmp_path, mode):
    counts = check_counts("experiments.sweep", "--config", TINY, "--workdir", str(tmp_path / "sweep"), f"--mode={mode}",
                          "--config.sweep.alphas=(-1.0,1.0)", "--config.sweep.seeds=(0,)", "--config.num_epochs=1")
    assert counts == {"check_available": 1, "check_batch_size[batch_size]": 1, "check_batch_size[eval_batch_size]": 1,
                      "check_workdir[alpha_-1_seed_0]": 1, "check_workdir[alpha_1_seed_0]": 1,
                      "maybe_initialize_distributed": 1, "use_config": 1, "validate_config": 1}
