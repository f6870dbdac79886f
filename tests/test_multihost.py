"""Data parallelism across processes (the JAX multi-controller runtime of TPU pods and GPU clusters): 2 processes
on localhost with 2 CPU devices each (gloo collectives) train like 1 process with the same global batch."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")
ROOT = WORKER.parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(process_id, num_processes, port, local_devices, out):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.Popen([sys.executable, str(WORKER), str(process_id), str(num_processes), str(port),
                             str(local_devices), str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_processes_equal_one(tmp_path):
    port = _free_port()
    workers = [_launch(i, 2, port, 2, tmp_path / "two.npz") for i in range(2)]
    single = _launch(0, 1, port, 1, tmp_path / "one.npz")
    for process in workers + [single]:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
    two, one = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert (int(two["processes"]), int(two["devices"])) == (2, 4)
    assert (int(one["processes"]), int(one["devices"])) == (1, 1)
    np.testing.assert_allclose(two["losses"], one["losses"], atol=1e-5, rtol=0)
    leaves = [k for k in one.files if k.startswith("leaf")]
    assert len(leaves) > 10
    for key in leaves:
        np.testing.assert_allclose(two[key], one[key], atol=1e-5, rtol=0, err_msg=key)
