"""The project's XLA:CPU settings (selectivity_jax/cpu_tuning.py): the flags it writes, when it may write them, and
results equal to XLA's defaults up to float32 rounding (forward, gradients, training steps)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from selectivity_jax import cpu_tuning
from selectivity_jax.models import onednn_conv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNED = cpu_tuning.TUNED_FLAGS[0]
# jaxlib 0.8.1 and later (what pip installs today) define the flag; older releases, which setup.cfg still allows,
# run XLA's defaults and skip the tests that need the tuning.
needs_tuning = pytest.mark.skipif(not cpu_tuning.tuned_flags(), reason="this jaxlib does not define the flag")


def test_flags_for_adds_and_removes_only_the_projects_flags():
    devices = "--xla_force_host_platform_device_count=8"
    assert cpu_tuning.flags_for("auto", devices) == f"{devices} {TUNED}"
    assert cpu_tuning.flags_for("auto", f"{devices} {TUNED}") == f"{devices} {TUNED}"  # not twice
    assert cpu_tuning.flags_for("off", f"{TUNED} {devices}") == devices
    users = f"{cpu_tuning.YNN_FUSION_FLAG}=LIBRARY_FUSION_TYPE_DOT"
    assert cpu_tuning.flags_for("auto", users) == users  # the user's own choice of YNNPACK fusions stays
    assert cpu_tuning.flags_for("off", users) == users
    with pytest.raises(ValueError, match="cpu_tuning must be one of"):
        cpu_tuning.flags_for("fast", "")


def test_old_jaxlib_gets_no_flag():
    """jaxlib < 0.8.1 aborts on the flag (checked in the 0.8.0 and 0.8.1 wheels): 'auto' must add nothing there."""
    assert cpu_tuning.tuned_flags("0.8.0") == ()
    assert cpu_tuning.tuned_flags("0.7.1") == ()
    assert cpu_tuning.tuned_flags("0.8.1") == cpu_tuning.TUNED_FLAGS
    assert cpu_tuning.tuned_flags("0.10.2") == cpu_tuning.TUNED_FLAGS
    assert cpu_tuning.tuned_flags("0.10.0.dev20260101") == cpu_tuning.TUNED_FLAGS
    assert cpu_tuning.flags_for("auto", "", jaxlib_version="0.8.0") == ""


def test_a_jaxlib_without_the_flag_gets_none(monkeypatch):
    """XLA aborts on a flag it does not define: where the installed jaxlib's libraries lack the flag's name (a
    release that renamed it), 'auto' adds nothing."""
    assert not cpu_tuning.installed_jaxlib_defines("--xla_cpu_no_such_flag_in_any_release=1")
    monkeypatch.setattr(cpu_tuning, "installed_jaxlib_defines", lambda flag: False)
    assert cpu_tuning.tuned_flags() == ()
    assert cpu_tuning.flags_for("auto", "") == ""


def test_in_force_reads_the_flags():
    assert cpu_tuning.in_force(TUNED) == "auto"
    assert cpu_tuning.in_force("--xla_force_host_platform_device_count=8") == "off"
    assert cpu_tuning.in_force(f"{cpu_tuning.YNN_FUSION_FLAG}=LIBRARY_FUSION_TYPE_DOT") == "user"


@needs_tuning
def test_the_test_processes_run_tuned():
    """conftest imports the package before JAX starts, so the suite (and the commands it starts, which inherit
    XLA_FLAGS) runs with the project's tuning, as users do."""
    assert cpu_tuning.in_force() == "auto"
    assert TUNED in os.environ["XLA_FLAGS"].split()


@needs_tuning
def test_use_before_and_after_jax_starts(monkeypatch):
    import jax

    jax.devices()  # JAX has started
    heap = []  # the heap settings asked for (not applied: this process keeps its own)
    monkeypatch.setattr(cpu_tuning, "_set_heap", heap.append)
    monkeypatch.setattr(cpu_tuning, "_choice", cpu_tuning.choice())
    monkeypatch.setenv("XLA_FLAGS", TUNED)
    cpu_tuning.use("auto")  # nothing to change
    with pytest.raises(ValueError, match="cannot act: JAX has already started"):
        cpu_tuning.use("off")
    assert os.environ["XLA_FLAGS"] == TUNED  # left as it was
    assert heap == [] and cpu_tuning.choice() == "auto"
    monkeypatch.setenv("XLA_FLAGS", "")
    cpu_tuning.use("auto")  # after the start 'auto' keeps what is in force
    assert heap == []
    cpu_tuning.use("off")  # XLA's defaults are in force: the convolutions and glibc's thresholds follow
    assert os.environ["XLA_FLAGS"] == "" and heap == [False] and cpu_tuning.choice() == "off"

    monkeypatch.setattr(cpu_tuning, "backends_started", lambda: False)  # as before JAX starts
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    cpu_tuning.use("auto")
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {TUNED}"
    assert heap == [False, True] and cpu_tuning.choice() == "auto"
    cpu_tuning.use("off")
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"
    assert heap == [False, True, False] and cpu_tuning.choice() == "off"


@needs_tuning
def test_commands_do_not_start_jax_before_applying_the_config():
    """The commands' modules (the benchmark's, with the training loop and the sweep under it; one command per
    process, absl defines each one's flags) import and validate a config without starting JAX, so that
    ``--config.cpu_tuning=off`` can still act."""
    script = ("import experiments.benchmark, selectivity_jax.sweep, selectivity_jax.train.loop\n"
              "from configs import quickstart\n"
              "from selectivity_jax import cpu_tuning\n"
              "from selectivity_jax.train.validation import validate_config\n"
              "validate_config(quickstart.get_config(), sweep=True)\n"
              "print(cpu_tuning.backends_started(), cpu_tuning.in_force())\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "auto"]


@pytest.fixture(scope="module")
def both_settings(tmp_path_factory):
    """The worker's arrays under the project's tuning and under XLA's defaults, each in a fresh process."""
    out = tmp_path_factory.mktemp("cpu_tuning")
    env = {**os.environ, "PYTHONPATH": ROOT,
           "XLA_FLAGS": cpu_tuning.flags_for("off", os.environ.get("XLA_FLAGS", ""))}
    procs = {choice: subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "cpu_tuning_worker.py"), choice,
                                       str(out / f"{choice}.npz")], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                                      text=True)
             for choice in cpu_tuning.CHOICES}
    for choice, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    return {choice: dict(np.load(out / f"{choice}.npz")) for choice in cpu_tuning.CHOICES}


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _group(arrays, prefix):
    return {k: v for k, v in arrays.items() if k.startswith(prefix + "/")}


@needs_tuning
def test_tuned_equals_xla_defaults_up_to_float32_rounding(both_settings):
    """Forward pass, gradients and three training steps of a ResNet20 (width 8, batch 32, BatchNorm in training
    mode, selectivity term at alpha = 1) under the tuning and under XLA's defaults.

    The bounds are float32 rounding of this computation: each setting's gradients differ from a float64 computation
    by up to 1.5e-3 (relative, per parameter; BatchNorm's backward subtracts near-equal means), and measured
    between the settings: logits 1e-7, gradients 8e-4 per parameter (2e-4 overall), the update after three steps
    4e-3 overall. A wrong kernel or layout would differ by order 1."""
    tuned, plain = both_settings["auto"], both_settings["off"]
    assert str(tuned["in_force"]) == "auto" and str(plain["in_force"]) == "off"
    assert str(plain["kernels"]) == "xla"
    assert str(tuned["kernels"]) == ("onednn" if onednn_conv.problem() is None else "xla")
    assert tuned.keys() == plain.keys()
    assert np.max(np.abs(tuned["logits"] - plain["logits"])) <= 1e-5 * np.max(np.abs(plain["logits"]))
    for name, grad in _group(plain, "grads").items():
        assert _relative(tuned[name], grad) < 1e-2, name
    flat = lambda arrays, prefix: np.concatenate([v.ravel() for v in _group(arrays, prefix).values()])
    assert _relative(flat(tuned, "grads"), flat(plain, "grads")) < 2e-3
    update = lambda arrays: flat(arrays, "trained") - flat(arrays, "initial")
    assert _relative(update(tuned), update(plain)) < 2e-2
    # the setting acts: other kernels, other rounding somewhere
    assert not all(np.array_equal(tuned[k], plain[k]) for k in plain if k not in ("in_force", "kernels",
                                                                                    "mapped_bytes"))


@pytest.mark.skipif(not cpu_tuning.heap_tunable(), reason="glibc's malloc only")
def test_tuned_heap_serves_large_buffers_from_memory_it_keeps(both_settings):
    """Under glibc's defaults a 256 MiB buffer is a fresh mapping (its pages faulted in and zeroed by the kernel at
    every use); under the tuning the heap serves it."""
    assert int(both_settings["off"]["mapped_bytes"]) >= 256 * 2 ** 20
    assert int(both_settings["auto"]["mapped_bytes"]) == 0
