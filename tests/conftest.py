"""Test set-up: 8 host CPU devices for the data-parallel tests (must be set before JAX is imported)."""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402  (after the XLA flags: pytest does not import JAX)


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """A finished sweep of configs/quickstart.py:tiny (alphas -5, 0, 5; seed 0; 2 epochs = 12 steps per run) for the
    analysis tests; trained once per test session."""
    from configs import quickstart
    from selectivity_jax.sweep import run_sweep

    config = quickstart.get_config("tiny")
    config.num_epochs = 2.0
    sweep_dir = tmp_path_factory.mktemp("tiny_sweep")
    run_sweep(config, str(sweep_dir), mode="serial", log=lambda _: None)
    return sweep_dir
