"""The CPU speed-ups (selectivity_jax/cpu/): nothing changes at import; the flags and heap settings ``'auto'`` writes
and when it may write them; results equal to XLA's defaults up to float32 rounding (forward, gradients, training
steps); forward-mode differentiation with the library's defaults; the library without the package."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from selectivity_jax.cpu import settings
from selectivity_jax.cpu import onednn_conv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNED = settings.TUNED_FLAGS[0]
# jaxlib 0.8.1 and later (what pip installs today) define the flag; older releases, which setup.cfg still allows,
# run XLA's defaults and skip the tests that need the tuning.
needs_tuning = pytest.mark.skipif(not settings.tuned_flags(), reason="this jaxlib does not define the flag")


def test_flags_for_adds_and_removes_only_the_projects_flags():
    devices = "--xla_force_host_platform_device_count=8"
    assert settings.flags_for("auto", devices) == f"{devices} {TUNED}"
    assert settings.flags_for("auto", f"{devices} {TUNED}") == f"{devices} {TUNED}"  # not twice
    assert settings.flags_for("off", f"{TUNED} {devices}") == devices
    users = f"{settings.YNN_FUSION_FLAG}=LIBRARY_FUSION_TYPE_DOT"
    assert settings.flags_for("auto", users) == users  # the user's own choice of YNNPACK fusions stays
    assert settings.flags_for("off", users) == users
    with pytest.raises(ValueError, match="cpu_tuning=.fast. .expected one of"):
        settings.flags_for("fast", "")


def test_old_jaxlib_gets_no_flag():
    """jaxlib < 0.8.1 aborts on the flag (checked in the 0.8.0 and 0.8.1 wheels): 'auto' must add nothing there."""
    assert settings.tuned_flags("0.8.0") == ()
    assert settings.tuned_flags("0.7.1") == ()
    assert settings.tuned_flags("0.8.1") == settings.TUNED_FLAGS
    assert settings.tuned_flags("0.10.2") == settings.TUNED_FLAGS
    assert settings.tuned_flags("0.10.0.dev20260101") == settings.TUNED_FLAGS
    assert settings.flags_for("auto", "", jaxlib_version="0.8.0") == ""


def test_a_jaxlib_without_the_flag_gets_none(monkeypatch):
    """XLA aborts on a flag it does not define: where the installed jaxlib's libraries lack the flag's name (a
    release that renamed it), 'auto' adds nothing."""
    assert not settings.installed_jaxlib_defines("--xla_cpu_no_such_flag_in_any_release=1")
    monkeypatch.setattr(settings, "installed_jaxlib_defines", lambda flag: False)
    assert settings.tuned_flags() == ()
    assert settings.flags_for("auto", "") == ""


def test_in_force_reads_the_flags():
    assert settings.in_force(TUNED) == "auto"
    assert settings.in_force("--xla_force_host_platform_device_count=8") == "off"
    assert settings.in_force(f"{settings.YNN_FUSION_FLAG}=LIBRARY_FUSION_TYPE_DOT") == "user"


@needs_tuning
def test_the_test_processes_run_tuned():
    """conftest applies the commands' settings before JAX starts, so the suite (and the commands it starts, which
    inherit XLA_FLAGS and apply their own) runs with them, as the commands' users do."""
    assert settings.in_force() == "auto"
    assert TUNED in os.environ["XLA_FLAGS"].split()


@needs_tuning
def test_use_before_and_after_jax_starts(monkeypatch):
    import jax

    jax.devices()  # JAX has started
    heap = []  # the heap settings asked for (not applied: this process keeps its own)
    monkeypatch.setattr(settings, "_set_heap", heap.append)
    monkeypatch.setattr(settings, "_choice", settings.choice())
    monkeypatch.setenv("XLA_FLAGS", TUNED)
    settings.use("auto")  # nothing to change
    with pytest.raises(ValueError, match="cannot act: JAX has already started"):
        settings.use("off")
    assert os.environ["XLA_FLAGS"] == TUNED  # left as it was
    assert heap == [] and settings.choice() == "auto"
    monkeypatch.setenv("XLA_FLAGS", "")
    settings.use("auto")  # after the start 'auto' keeps what is in force
    assert heap == []
    settings.use("off")  # XLA's defaults are in force: the convolutions and glibc's thresholds follow
    assert os.environ["XLA_FLAGS"] == "" and heap == [False] and settings.choice() == "off"

    monkeypatch.setattr(settings, "backends_started", lambda: False)  # as before JAX starts
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    settings.use("auto")
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {TUNED}"
    assert heap == [False, True] and settings.choice() == "auto"
    settings.use("off")
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"
    assert heap == [False, True, False] and settings.choice() == "off"


@needs_tuning
def test_commands_do_not_start_jax_before_applying_the_config():
    """The commands' modules (the benchmark's, with the training loop and the sweep under it; one command per
    process, absl defines each one's flags) import and validate a config without starting JAX, so that the
    command's ``--config.cpu_tuning`` can still act."""
    script = ("import experiments.benchmark, selectivity_jax.sweep, selectivity_jax.train.loop\n"
              "from configs import quickstart\n"
              "from selectivity_jax.cpu import settings\n"
              "from selectivity_jax.train.validation import validate_config\n"
              "validate_config(quickstart.get_config(), sweep=True)\n"
              "print(settings.backends_started(), settings.choice())\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "off"]


@pytest.fixture(scope="module")
def both_settings(tmp_path_factory):
    """The worker's arrays under the project's tuning and under XLA's defaults, each in a fresh process."""
    out = tmp_path_factory.mktemp("cpu_tuning")
    env = {**os.environ, "PYTHONPATH": ROOT,
           "XLA_FLAGS": settings.flags_for("off", os.environ.get("XLA_FLAGS", ""))}
    procs = {choice: subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "cpu_worker.py"), choice,
                                       str(out / f"{choice}.npz")], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                                      text=True)
             for choice in settings.CHOICES}
    for choice, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    return {choice: dict(np.load(out / f"{choice}.npz")) for choice in settings.CHOICES}


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


@pytest.mark.skipif(not settings.heap_tunable(), reason="glibc's malloc only")
def test_tuned_heap_serves_large_buffers_from_memory_it_keeps(both_settings):
    """Under glibc's defaults a 256 MiB buffer is a fresh mapping (its pages faulted in and zeroed by the kernel at
    every use); under the tuning the heap serves it."""
    assert int(both_settings["off"]["mapped_bytes"]) >= 256 * 2 ** 20
    assert int(both_settings["auto"]["mapped_bytes"]) == 0


IMPORT_EVERYTHING = """
import ctypes, importlib, json, os, pkgutil, sys
import numpy as np

def mapped_bytes():  # bytes glibc maps apart from its heap while a 256 MiB buffer lives (0: the heap serves it)
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]
    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo2
    before = mallinfo2().hblkhd
    buffer = np.ones(64 * 2 ** 20, np.float32)
    return int(mallinfo2().hblkhd - before)

before = (os.environ.get("XLA_FLAGS"), mapped_bytes())
import selectivity_jax
names = [m.name for m in pkgutil.walk_packages(selectivity_jax.__path__, "selectivity_jax.")]
for name in names:
    importlib.import_module(name)
from selectivity_jax.cpu import settings
after = (os.environ.get("XLA_FLAGS"), mapped_bytes())
print(json.dumps({"before": before, "after": after, "modules": len(names), "choice": settings.choice()}))
"""


@pytest.mark.skipif(not settings.heap_tunable(), reason="glibc's malloc only")
def test_importing_the_library_changes_nothing_in_the_process():
    """In a fresh process: XLA_FLAGS (unset, and set) and glibc's malloc behaviour (a 256 MiB buffer mapped apart
    from the heap, as glibc's defaults do) are the same before and after importing every module of the library; no
    convolution routing is chosen."""
    for flags in (None, "--xla_force_host_platform_device_count=2"):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        env.update({"PYTHONPATH": ROOT, **({"XLA_FLAGS": flags} if flags else {})})
        result = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], cwd=ROOT, capture_output=True, text=True,
                                timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        seen = json.loads(result.stdout.splitlines()[-1])
        assert seen["before"] == seen["after"] and seen["before"][0] == flags, seen
        assert seen["after"][1] >= 256 * 2 ** 20 and seen["modules"] > 50 and seen["choice"] == "off"


FORWARD_MODE = """
import jax, jax.numpy as jnp, numpy as np
from selectivity_jax.models import get_model, init_variables
model = get_model("resnet20", num_classes=10, width=4)
x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)
variables = init_variables(model, 0, x.shape)
f = lambda x: model.apply(variables, x, train=False)
_, tangent = jax.jvp(f, (x,), (jnp.ones_like(x),))
jacobian = jax.jacfwd(lambda x: f(x).sum())(x)
reverse = jax.grad(lambda x: f(x).sum())(x)
print(float(jnp.abs(tangent.sum() - jnp.vdot(reverse, jnp.ones_like(x)))), float(jnp.abs(jacobian - reverse).max()))
"""


def test_forward_mode_works_with_the_library_defaults():
    """jax.jvp and jax.jacfwd through a ResNet20 on CPU in a fresh process (the library's defaults: XLA's
    convolutions) agree with reverse mode."""
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": settings.flags_for("off", os.environ.get("XLA_FLAGS", ""))}
    result = subprocess.run([sys.executable, "-c", FORWARD_MODE], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    jvp_gap, jacobian_gap = map(float, result.stdout.split())
    assert jvp_gap < 1e-3 and jacobian_gap < 1e-4


@pytest.mark.skipif(onednn_conv.problem() is not None, reason="oneDNN convolutions unavailable")
def test_forward_mode_under_the_commands_settings_needs_xla_convolutions():
    """With oneDNN routing on (this suite, as the commands), forward mode is refused by the custom calls and works
    inside `cpu.xla_convolutions`."""
    import jax
    import jax.numpy as jnp

    from selectivity_jax import cpu
    from selectivity_jax.models import get_model, init_variables

    model = get_model("resnet20", num_classes=10, width=4)
    x = jnp.ones((2, 8, 8, 3), jnp.float32)
    variables = init_variables(model, 0, x.shape)
    f = lambda x: model.apply(variables, x, train=False)  # noqa: E731
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(f, (x,), (x,))
    with cpu.xla_convolutions():
        assert jax.jvp(f, (x,), (x,))[1].shape == (2, 10)


WITHOUT_THE_PACKAGE = """
import json, sys
sys.modules["selectivity_jax.cpu"] = None  # as if the folder were deleted: importing it raises ImportError
from configs import quickstart
from selectivity_jax.train.loop import train_and_evaluate
results = train_and_evaluate(quickstart.get_config("tiny"), sys.argv[1], log=lambda _: None)
print(json.dumps({k: getattr(results, k) for k in ("convolutions", "cpu_tuning", "test_accuracy")}))
"""


def test_the_library_trains_without_the_cpu_package(tmp_path):
    """With selectivity_jax.cpu hidden, quickstart:tiny trains through the library on XLA's kernels."""
    result = subprocess.run([sys.executable, "-c", WITHOUT_THE_PACKAGE, str(tmp_path / "run")], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.splitlines()[-1])
    assert results["convolutions"] == "xla" and results["cpu_tuning"] == "absent" and results["test_accuracy"] >= 0


def test_heap_is_left_alone_on_accelerator_hosts(monkeypatch):
    """The heap setting helps CPU work (measured); where JAX_PLATFORMS names an accelerator first, or a GPU/TPU
    device file exists, 'auto' leaves glibc's heap as it is."""
    monkeypatch.setenv("JAX_PLATFORMS", "tpu,cpu")
    assert settings.accelerator_host()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert not settings.accelerator_host()
    heap = []
    monkeypatch.setattr(settings, "_set_heap", heap.append)
    monkeypatch.setattr(settings, "backends_started", lambda: False)
    monkeypatch.setattr(settings, "_choice", settings.choice())
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    settings.use("auto")
    assert heap == [False]
