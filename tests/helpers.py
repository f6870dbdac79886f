"""Helpers the test modules share (plain functions; fixtures live in conftest.py). Importing this module changes
nothing in the environment, so subprocess workers (tests/multihost_worker.py) may import the test modules that use
it."""

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
