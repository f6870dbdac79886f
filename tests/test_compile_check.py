"""Ahead-of-time compilation for a TPU on this CPU host with XLA's real TPU compiler (libtpu), no TPU needed.

Skipped where libtpu is not installed (``pip install -e '.[tpu]'``). The programs compiled here are tiny (a shallow CNN
of width 4 on 8x8 images) so that each TPU compilation takes seconds; CI compiles the quickstart's programs with
``python -m experiments.compile_check`` besides.
"""

import math
import os
import subprocess
import sys

import pytest

from selectivity_jax.bench import compile_check, tpu_targets
from selectivity_jax.models.vmap_conv import STRATEGIES

pytestmark = pytest.mark.skipif(not tpu_targets.libtpu_installed(),
                                reason="libtpu is not installed (pip install -e '.[tpu]')")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(strategy="auto", steps_per_call=2):
    from configs import quickstart

    config = quickstart.get_config("tiny")
    config.model.name = "shallow_cnn"
    del config.model["width"]
    config.model.features, config.model.hidden = (4, 4, 4, 4), 8
    config.data.image_size = 8
    config.vmap_conv, config.steps_per_call = strategy, steps_per_call
    return config


@pytest.fixture(scope="module")
def tpu_mesh():
    return tpu_targets.target_mesh(tpu_targets.TARGETS["v5e-1"])


def test_every_strategy_compiles_for_tpu_without_cpu_kernels(tpu_mesh):
    """A vmapped group's train call compiles for TPU v5e under each convolution strategy; no oneDNN custom call (a CPU
    kernel, the CPU host's default) enters the TPU program, whatever the host's default backend."""
    for strategy in STRATEGIES:
        lower, images, devices = compile_check.training_lowerings(tiny_config(strategy), tpu_mesh, 2)["train"]
        lowered = lower()
        assert "selectivity_jax_conv" not in lowered.as_text(), strategy
        compiled = lowered.compile()
        assert compiled.memory_analysis().argument_size_in_bytes > 0 and (images, devices) == (2 * 40, 1)


def test_platform_decisions_follow_the_mesh_not_the_host(tpu_mesh):
    """On a CPU host, a setup for TPU devices takes the TPU's defaults: grouped convolutions, 16 scanned steps per
    call; for the host's own devices the CPU's: one convolution per model, one step per call."""
    from selectivity_jax.parallel import make_data_mesh
    from selectivity_jax.train.setup import setup_run

    def setup(mesh):
        return setup_run(tiny_config(steps_per_call=0), num_classes=10, image_shape=(8, 8, 3), num_train=240,
                         mean=(0.5,) * 3, std=(0.25,) * 3, mesh=mesh, initialize=False)

    on_tpu, on_cpu = setup(tpu_mesh), setup(make_data_mesh(1))
    assert (on_tpu.spec.vmap_conv, on_tpu.steps_per_call) == ("grouped", 16)
    assert (on_cpu.spec.vmap_conv, on_cpu.steps_per_call) == ("per_model", 1)


def test_check_writes_both_files_and_reuses_what_it_compiled(tmp_path, tpu_mesh, monkeypatch):
    target = tpu_targets.TARGETS["v5e-1"]
    request = compile_check.Request(target=target, configs=(("tiny", tiny_config()),), models=(1, 2),
                                    analyses=())
    workdir = str(tmp_path / "check")
    result = compile_check.run_check(request, tpu_mesh, [], compile_check.saver(workdir), log=lambda _: None)
    assert [(r.program, r.models, r.compiled) for r in result.programs] == [
        ("train", 1, True), ("train", 2, True), ("eval", 1, True), ("eval", 2, True)]
    fit = result.fits[0]
    assert fit.bytes_one > 0 and fit.bytes_two > 0 and fit.largest_group >= 1  # (temporaries vary with K here)
    stored = compile_check.stored_programs(workdir, target)
    assert stored == result.programs  # the JSON record reads back equal
    assert "| tiny | train | 2 | grouped | float32 | yes |" in open(os.path.join(workdir, "compile_check.md")).read()

    def compile_again(*args, **kwargs):
        raise AssertionError("a recorded program was compiled again")
    monkeypatch.setattr(compile_check, "measure", compile_again)
    again = compile_check.run_check(request, tpu_mesh, stored, compile_check.saver(workdir), log=lambda _: None)
    assert again.programs == result.programs


def test_group_fit_is_the_sweeps_rule():
    """Memory grows by K=2 - K=1 per model; the largest K keeps 80% of HBM (a hand-computed case)."""
    row = lambda models, size: compile_check.ProgramCheck(  # noqa: E731
        config="c", program="train", models=models, vmap_conv="grouped", compute_dtype="float32", key=str(models),
        compiled=True, device_bytes=size)
    gib = 2 ** 30
    fits = compile_check.group_fits([row(1, 3 * gib), row(2, 5 * gib)], 16 * gib)
    assert [f.largest_group for f in fits] == [5]  # 1 GiB shared + 2 GiB a model: 1 + 2 * 5 <= 12.8 < 1 + 2 * 6
    assert compile_check.xla_estimate(row(1, 1)) == "-"  # NaN or negative estimates are not shown as times
    assert math.isnan(row(1, 1).flops_per_image)
    sharded = compile_check.ProgramCheck(config="c", program="train", models=2, vmap_conv="grouped",
                                         compute_dtype="float32", key="k", compiled=True, flops=8e9, devices=4,
                                         images_counted=16)
    assert sharded.flops_per_image == 2e9  # XLA counts one device's share: 4 devices, 16 images


def test_unknown_target_and_missing_libtpu_are_one_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="known: v2-8, v3-8"):
        tpu_targets.check_target("v9-1")
    monkeypatch.setattr(tpu_targets, "libtpu_installed", lambda: False)
    with pytest.raises(ValueError, match=r"pip install -e '\.\[tpu\]'"):
        tpu_targets.check_target("v5e-1")
    monkeypatch.setattr(tpu_targets, "cuda_plugin_installed", lambda: False)
    with pytest.raises(ValueError, match="needs the CUDA PJRT plugin.*pip install jax-cuda12-pjrt"):
        tpu_targets.check_target("h100")


def test_command_refuses_bad_input_before_writing(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases = [(["--target", "v9-1"], "unknown TPU target 'v9-1'"), (["--models", "0"], "--models takes group sizes"),
             (["--strategies", "fast"], "--strategies: unknown"),
             (["--config", "configs/nope.py"], "no config file configs/nope.py"),
             (["--workdir", str(foreign)], "holds files the compile check did not write")]
    for args, message in cases:
        done = subprocess.run([sys.executable, "-m", "experiments.compile_check",
                               "--config", "configs/quickstart.py:tiny", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], (args, done.stderr)
    assert os.listdir(foreign) == ["notes.txt"] and not os.path.exists(os.path.join(ROOT, "runs", "compile_check",
                                                                                      "v9-1"))
