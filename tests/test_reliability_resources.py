"""Full disks and tight memory: one ``error:`` line naming the cause, exit 2, no temporary files left, and a clean
resume once the cause is gone (experiments/cli.py's one handler for disk and memory errors)."""

import errno
import os
import re
import resource
import subprocess
import sys

import pytest

from experiments import cli
from selectivity_jax.resources import doing
from tests.helpers import ROOT, command_env

TINY = ("--config", "configs/quickstart.py:tiny", "--config.num_epochs=2", "--config.tensorboard=False")
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


@pytest.mark.parametrize("make, expected", [
    (_wrapped_no_space, "no space left on /data/run while starting (free space and run the same command again"),
    (_tensorstore_text, "no space left on /data/run/checkpoints while writing a checkpoint (free space"),
    (_grouped_quota, "no space left on /q/f while starting"),
    (lambda: (_ for _ in ()).throw(MemoryError()), "out of memory while starting"),
    (_xla_out_of_memory, "out of memory while training"),
    (_import_under_limit, "out of memory while loading libraries"),
    (lambda: exec("with doing('loading data'): raise OSError(errno.ENOMEM, 'Cannot allocate memory')"),
     "out of memory while loading data"),
])
def test_disk_and_memory_errors_are_named(make, expected):
    message = cli.resource_error(_raised(make))
    assert message is not None and message.startswith(expected), message


def test_other_errors_are_left_to_the_other_handlers():
    assert cli.resource_error(_raised(lambda: int("x"))) is None
    assert cli.resource_error(_raised(lambda: open("/nonexistent/file"))) is None


def _train(workdir, preexec_fn=None):
    return subprocess.run([sys.executable, "-m", "experiments.train", *TINY, "--workdir", str(workdir)], cwd=ROOT,
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


def test_a_full_disk_is_one_line_leaves_no_temporary_files_and_resumes(small_tmpfs):
    workdir = small_tmpfs / "run"
    _one_error_line(_train(workdir), "no space left on ")
    assert not _temporary_files(workdir)
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_tmpfs)], check=True)
    resumed = _train(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (workdir / "results.json").exists() and not _temporary_files(workdir)


def test_out_of_memory_at_start_up_is_one_line(tmp_path):
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))  # fails while JAX's libraries load
    workdir = tmp_path / "run"
    _one_error_line(_train(workdir, limit_memory), "out of memory while ")
    assert not workdir.exists()
