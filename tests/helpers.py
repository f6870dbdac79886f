"""Helpers the test modules share (plain functions; fixtures live in conftest.py). Importing this module changes
nothing in the environment, so subprocess workers (tests/multihost_worker.py) may import the test modules that use
it."""

import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from configs import quickstart


def with_overrides(config, overrides):
    """``config`` with each ``{'a.b': value}`` of ``overrides`` set (dotted paths into nested ConfigDicts)."""
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


TINY_SWEEP_ALPHAS = (-2.0, 0.0, 2.0)


def tiny_sweep_config():
    """configs/quickstart.py:tiny (1 epoch = 6 steps of batch 40, ResNet20 at width 4) at alphas -2, 0, 2 with a small
    learning rate, seed 0."""
    config = quickstart.get_config("tiny")
    config.learning_rate = 0.002
    config.sweep.alphas = TINY_SWEEP_ALPHAS
    config.sweep.seeds = (0,)
    return config


# Files of a run directory whose bits may differ between two runs of the same config: wall-clock seconds, and the
# lock (present or not after a killed process).
VARYING_FILES = {"timing.jsonl", ".lock", ".lock.owner"}
# ... and the TensorBoard event files (wall-clock times; one more file after each resume): tests/test_tensorboard.py
# compares their scalars with metrics.jsonl instead.
VARYING_DIRS = {"tensorboard"}
# What the analyses add to a run directory (the shared tiny sweeps may hold them): not training's outputs.
ANALYSIS_OUTPUTS = {"analysis", "robustness.json"}


def run_files(run_dir):
    """{relative path: bytes} of every file training wrote into a run directory, outside checkpoints/, but
    `VARYING_FILES`."""
    files = {}
    for root, dirs, names in os.walk(run_dir):
        rel_root = os.path.relpath(root, run_dir)
        if rel_root.split(os.sep)[0] in {"checkpoints"} | ANALYSIS_OUTPUTS | VARYING_DIRS:
            continue
        if rel_root == ".":
            names = [name for name in names if name not in ANALYSIS_OUTPUTS]
        for name in names:
            if name not in VARYING_FILES:
                with open(os.path.join(root, name), "rb") as f:
                    files[os.path.normpath(os.path.join(rel_root, name))] = f.read()
    return files


def checkpoint_arrays(run_dir):
    """{step: [arrays of the saved train state]} of a run directory's checkpoints (orbax metadata holds times)."""
    directory = os.path.join(run_dir, "checkpoints")
    steps = sorted(int(name) for name in os.listdir(directory) if name.isdigit())
    checkpointer = ocp.PyTreeCheckpointer()
    return {step: [np.asarray(leaf) for leaf in
                   jax.tree.leaves(checkpointer.restore(os.path.join(directory, str(step), "default")))]
            for step in steps}


def assert_same_run_files(run_dir, reference_dir, differing=()):
    """Every output file of ``run_dir`` has the bits of ``reference_dir``'s (timing and ``differing`` aside), and both
    keep the same checkpoints with bitwise equal arrays."""
    files, reference = run_files(run_dir), run_files(reference_dir)
    assert sorted(files) == sorted(reference)
    for name in set(reference) - set(differing):
        assert files[name] == reference[name], name
    arrays, reference_arrays = checkpoint_arrays(run_dir), checkpoint_arrays(reference_dir)
    assert sorted(arrays) == sorted(reference_arrays)
    for step in reference_arrays:
        assert len(arrays[step]) == len(reference_arrays[step])
        for x, y in zip(arrays[step], reference_arrays[step]):
            np.testing.assert_array_equal(x, y)


ROOT = pathlib.Path(__file__).resolve().parents[1]
FAULT_ENV = "SELECTIVITY_JAX_FAULT"  # selectivity_jax/faults.py


def command_env(fault=None):
    """The environment of a command run by the tests (the session's compilation cache included, see conftest.py),
    with ``fault`` as its SELECTIVITY_JAX_FAULT."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return env


def run_command(module, *args, fault=None, timeout=300):
    """``python -m module args`` from the repository root, as a user runs it."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=command_env(fault))


def expect_outcome(result, fault=None):
    """The process ended as ``fault`` says: SIGKILL (-9) when it holds a kill, else exit 130 and one line for a
    SIGINT, exit 143 and one line for a SIGTERM, else success."""
    if fault and "kill:" in fault:
        assert result.returncode == -signal.SIGKILL, (fault, result.returncode, result.stderr[-2000:])
    elif fault:
        name = "SIGINT" if "int:" in fault else "SIGTERM"
        assert result.returncode == 128 + getattr(signal, name), (fault, result.returncode, result.stderr[-2000:])
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"stopped by {name}"), result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-3000:]


def kernel_path() -> str:
    """Whose kernels run the CPU convolutions in this session: 'onednn', or 'xla' where the C++ extension cannot be
    built (no compiler, another OS). Training and the analyses round differently on each, so regression pins of
    trained values are kept per kernel path."""
    from selectivity_jax import cpu
    return cpu.convolution_kernels()


def assert_regression_pins(pins, read):
    """Checks regression pins ``{kernel path: {key: value}}`` (values copied from the code's own output, to catch a
    change of behaviour, not independent references) against ``read(key)``; on a mismatch, fails listing every
    pinned value of this kernel path as measured now, ready to paste after a deliberate change."""
    path = kernel_path()
    measured = {key: read(key) for key in pins[path]}
    wrong = [key for key, expected in pins[path].items()
             if expected is None or not np.isclose(measured[key], expected, rtol=1e-5, atol=1e-7)]
    listing = "\n".join(f"    {key!r}: {measured[key]!r}," for key in pins[path])
    assert not wrong, f"regression pins of the {path!r} kernels differ at {wrong}; measured now:\n{listing}"
