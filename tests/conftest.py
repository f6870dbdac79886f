"""Test set-up: 8 host CPU devices for the data-parallel tests (must be set before JAX is imported), the commands' CPU
settings, a persistent compilation cache for the session, and the tiny trained sweeps that several test modules
share.

The compilation cache (a temporary directory, removed at the end) lets the command-line, notebook and multi-process
tests, which start fresh Python processes, reuse what earlier tests compiled: the same tiny programs compile once.
"""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="selectivity_jax_tests_jax_cache_")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _COMPILATION_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_sessionfinish(session, exitstatus):
    del session, exitstatus
    shutil.rmtree(_COMPILATION_CACHE, ignore_errors=True)

import pytest  # noqa: E402  (after the XLA flags: pytest does not import JAX)

from selectivity_jax import cpu  # noqa: E402

# The suite runs under the commands' CPU settings (oneDNN convolutions, heap, XLA:CPU flag), as the commands' users do;
# importing the library changes nothing (tests/test_cpu.py checks that in fresh processes).
cpu.enable()

from helpers import tiny_sweep_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sweeps(tmp_path_factory, worker_id):
    """The tiny sweep trained twice, vmapped and serial, once per test session (shared by the pytest-xdist workers,
    the first one to need it trains it): (root, vmap results, serial results); the sweeps are ``root / 'vmap'`` and
    ``root / 'serial'``."""
    import filelock

    from selectivity_jax.rundir import RESULTS_FILE, read_json, run_dirname
    from selectivity_jax.sweep import run_sweep

    if worker_id == "master":  # no workers: this session's own directory
        root = tmp_path_factory.mktemp("tiny_sweeps")
    else:  # the session's directory all workers share
        root = tmp_path_factory.getbasetemp().parent / "tiny_sweeps"
    config = tiny_sweep_config()
    with filelock.FileLock(f"{root}.lock"):
        if not (root / "trained").exists():
            quiet = lambda _: None
            run_sweep(config, str(root / "vmap"), mode="vmap", log=quiet)
            run_sweep(config, str(root / "serial"), mode="serial", log=quiet)
            (root / "trained").touch()
    results = lambda mode: [read_json(str(root / mode / run_dirname(alpha, seed) / RESULTS_FILE))
                            for seed in config.sweep.seeds for alpha in config.sweep.alphas]
    return root, results("vmap"), results("serial")


@pytest.fixture(scope="session")
def tiny_sweep(tiny_sweeps):
    """A finished sweep directory (the serial one of `tiny_sweeps`) for the analysis tests."""
    return tiny_sweeps[0] / "serial"
