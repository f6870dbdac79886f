"""The accelerator check's planning and page (the command itself runs at toy size in .ci/run: --smoke)."""

import dataclasses

import pytest

from configs import cifar10_resnet20
from selectivity_jax.bench import accelerator_check as ac
from selectivity_jax.bench.step_timing import EpochTiming, StepTiming


def test_plan_epochs_fits_the_budget():
    # 19 models x 2 s per model-epoch = 38 s per grid epoch; 2 groups compile 2 x 2 x 10 s = 40 s
    assert ac.plan_epochs(600.0, 2.0, 19, 2, 10.0, safety=1.0) == (600 - 40) // 38
    epochs = ac.plan_epochs(600.0, 2.0, 19, 2, 10.0, safety=1.25)
    assert 1.25 * (40 + epochs * 38) <= 600 < 1.25 * (40 + (epochs + 1) * 38)
    assert ac.plan_epochs(30.0, 2.0, 19, 2, 10.0, safety=1.25) == 0  # not even one epoch


def test_grid_alphas_keep_the_ends():
    config = cifar10_resnet20.get_config()
    assert ac.grid_alphas(config, ac.FULL) == list(config.sweep.alphas) and len(config.sweep.alphas) == 19
    assert ac.grid_alphas(config, ac.SMOKE) == [-100.0, 100.0]
    assert ac.grid_alphas(config, dataclasses.replace(ac.SMOKE, grid_alphas=3)) == [-100.0, 0.0, 100.0]


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path):
    base = cifar10_resnet20.get_config()
    workdir = tmp_path / "check"
    with pytest.raises(ValueError, match="--data_root"):
        ac.run_check(base, str(workdir))
    with pytest.raises(ValueError, match="does not exist"):
        ac.run_check(base, str(workdir), data_root=str(tmp_path / "missing.tar.gz"))
    with pytest.raises(ValueError, match="budget_minutes"):
        ac.run_check(base, str(workdir), smoke=True, budget_minutes=0)
    base.model.name = "vgg16"
    with pytest.raises(ValueError, match="PyTorch twin"):
        ac.run_check(base, str(workdir), smoke=True)
    assert not workdir.exists()


def _timing(models, ips, dtype="float32", term=True, strategy="grouped"):
    return StepTiming(models=models, compute_dtype=dtype, selectivity_term=term, vmap_conv=strategy,
                      convolutions="xla", steps_per_call=16, images_per_second=ips, step_ms=1000 * 128 * models / ips, compilations=1,
                      compile_seconds=3.0)


def test_markdown_has_every_section(tmp_path):
    check = ac.AcceleratorCheck(smoke=False, budget_minutes=8.0)
    check.environment = ac.Environment("gpu", "NVIDIA H200", 1, 1, 140 * 2 ** 30, 16, {"jax": "0.11"})
    check.train_steps = [_timing(1, 20000.0, d, t) for d in ("float32", "bfloat16") for t in (False, True)]
    check.groups = {s: {1: _timing(1, 20000.0, strategy=s), 16: _timing(16, 200000.0, strategy=s)}
                    for s in ("grouped", "per_model")}
    check.default_strategy, check.fastest_strategy = "grouped", "per_model"
    check.epochs = [EpochTiming(1, 45000, 351, 2.5, 18000.0)]
    check.torch = [ac.TorchRow("eager", True, 5000.0, 25.6)]
    check.grid = ac.GridResult("DIR/grid_30ep", [-1.0, 0.0], 30, 10, "per_model", 400.0, 380.0,
                               {"-1": 0.91, "0": 0.92}, {"-1": 0.1, "0": 0.25}, ["figures/accuracy_vs_alpha.png"])
    page = ac.markdown(check)
    for heading in ("## 1. Environment", "## 2. ResNet20 train step", "## 3. vmapped groups", "## 4. One epoch",
                    "## 5. PyTorch reference", "## 6. The alpha grid"):
        assert heading in page
    assert "They differ" in page and "10.00x" in page          # 16 models at 10x one
    assert "JAX float32 / PyTorch eager, with the selectivity term: **4.00x**" in page
    ac.write_check(check, str(tmp_path))
    assert (tmp_path / ac.JSON_FILE).exists() and (tmp_path / ac.MARKDOWN_FILE).read_text() == page
