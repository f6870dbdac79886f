"""Every config loads, builds its model, and carries the alpha grid and seeds the training issue asks for."""

import importlib

import pytest

from configs import base
from selectivity_jax.models import get_model

CONFIGS = ["cifar10_resnet20", "cifar10_vgg16", "tiny_imagenet_resnet18", "tiny_imagenet_resnet50", "quickstart",
           "cifar10_jpeg_resnet20"]
CIFAR_GRID = (-100, -30, -10, -5, -2, -1, -0.5, -0.2, -0.1, 0, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 100)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_builds_model(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    model = get_model(config.model.name, num_classes=10, **kwargs)
    assert model.selectivity_layer_names()
    assert config.batch_size > 0 and config.eval_batch_size > 0
    assert 0.0 in config.sweep.alphas


def test_grids_and_seeds():
    grids = {name: importlib.import_module(f"configs.{name}").get_config().sweep for name in CONFIGS[:4]}
    for name in ("cifar10_resnet20", "cifar10_vgg16"):
        assert tuple(grids[name].alphas) == CIFAR_GRID
        assert tuple(grids[name].seeds) == (0, 1, 2, 3, 4)
    for name in ("tiny_imagenet_resnet18", "tiny_imagenet_resnet50"):
        alphas = tuple(grids[name].alphas)
        assert max(alphas) == 5 and min(alphas) == -5 and alphas == tuple(sorted(alphas))
        assert set(alphas) == {-a for a in alphas}  # symmetric
    assert len(grids["tiny_imagenet_resnet18"].seeds) == 5 and len(grids["tiny_imagenet_resnet50"].seeds) == 3
    assert base.CIFAR10_ALPHAS == CIFAR_GRID


def test_recipes():
    resnet20 = importlib.import_module("configs.cifar10_resnet20").get_config()
    assert (resnet20.num_train_steps, resnet20.learning_rate, resnet20.batch_size) == (64000, 0.1, 128)
    assert tuple(resnet20.lr_decay_at) == (0.5, 0.75) and resnet20.weight_decay == 1e-4
    assert resnet20.data.num_val == 5000
    tiny = importlib.import_module("configs.tiny_imagenet_resnet18").get_config()
    assert (tiny.num_epochs, tiny.batch_size, tiny.data.val_per_class) == (90, 256, 50)
    assert [round(f * 90) for f in tiny.lr_decay_at] == [30, 60]
