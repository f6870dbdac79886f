"""Every config loads, builds its model, and carries the alpha grid and seeds the training issue asks for; the
newer CIFAR10 configs train a step at tiny size."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from selectivity_jax.models import get_model
from selectivity_jax.train.validation import validate_config

CONFIGS = ["cifar10_resnet20", "cifar10_vgg16", "tiny_imagenet_resnet18", "tiny_imagenet_resnet50", "quickstart",
           "cifar10_jpeg_resnet20", "cifar10_jpeg_resnet20_full", "cifar10_resnet32", "cifar10_resnet56",
           "cifar10_shallow_cnn", "cifar10_mlp"]
# The CIFAR10 configs with the symmetric 19-value grid and 5 seeds.
CIFAR_CONFIGS = ["cifar10_resnet20", "cifar10_vgg16", "cifar10_resnet32", "cifar10_resnet56", "cifar10_shallow_cnn",
                 "cifar10_mlp"]
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
    grids = {name: importlib.import_module(f"configs.{name}").get_config().sweep
             for name in CIFAR_CONFIGS + ["tiny_imagenet_resnet18", "tiny_imagenet_resnet50"]}
    for name in CIFAR_CONFIGS:
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
    for depth in (32, 56):
        deeper = importlib.import_module(f"configs.cifar10_resnet{depth}").get_config()
        assert deeper.model.name == f"resnet{depth}" and deeper.to_dict() == {
            **resnet20.to_dict(), "model": {**resnet20.model.to_dict(), "name": f"resnet{depth}"}}
    for name in ("cifar10_shallow_cnn", "cifar10_mlp"):
        chen = importlib.import_module(f"configs.{name}").get_config()
        assert (chen.num_train_steps, chen.num_epochs) == (0, 100)  # Chen et al.: 100 epochs
        assert (chen.model.norm, chen.model.dropout) == ("batch", 0.0)
        validate_config(chen, sweep=True)


def tiny_size(name, **model):
    """Config ``name`` on configs/quickstart.py:tiny's data and batch (240 synthetic 32x32 training images, batch
    40), with the model fields ``model`` set (narrower layers)."""
    from configs import quickstart
    config = importlib.import_module(f"configs.{name}").get_config()
    tiny = quickstart.get_config("tiny")
    config.data = tiny.data
    for field in ("batch_size", "lr_base_batch_size", "eval_batch_size", "num_devices"):
        config[field] = tiny[field]
    config.model.update(model)
    validate_config(config)
    return config


def tiny_setup(config, alphas):
    from selectivity_jax.data import synthetic_images
    from selectivity_jax.data.on_device import put_train_arrays
    from selectivity_jax.parallel import make_data_mesh
    from selectivity_jax.train.setup import setup_run
    mesh = make_data_mesh(1)
    images, labels = synthetic_images(10, 24, seed=0)
    run = setup_run(config, num_classes=10, image_shape=(32, 32, 3), num_train=240, mean=(0.5,) * 3,
                    std=(0.25,) * 3, mesh=mesh, alphas=alphas, initialize=False)
    return run, put_train_arrays(images, labels, mesh)


def numpy_states(abstract, alphas):
    """Initial group states of the shapes of ``abstract`` with NumPy random parameters, unit BN statistics and zero
    optimizer state, seed 0: what `setup_run` initializes, without compiling the random initializers (slow on
    XLA:CPU; the models' own initialization is tested in tests/test_models.py)."""
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: jnp.asarray(rng.normal(0.0, 0.1, leaf.shape), leaf.dtype), abstract.params)
    batch_stats = jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.full(leaf.shape, float(path[-1].key == "var"), leaf.dtype), abstract.batch_stats)
    zeros = lambda tree: jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), tree)
    key = jax.random.key_data(jax.random.key(0))
    return abstract.replace(step=zeros(abstract.step), params=params, opt_state=zeros(abstract.opt_state),
                            batch_stats=batch_stats, alpha=jnp.asarray(alphas, jnp.float32),
                            rng=jnp.broadcast_to(key, (len(alphas),) + key.shape))


@pytest.mark.parametrize("name, model, alphas", [
    # One model: a vmapped group's convolutions run once per model on CPU, and compile as many times.
    ("cifar10_shallow_cnn", {"features": (4, 4, 8, 8), "hidden": 8, "dropout": 0.5}, (-1.0,)),
    ("cifar10_mlp", {"hidden": (8, 16, 32, 32), "norm": "none", "dropout": 0.3}, (-1.0, 1.0)),
])
def test_chen_configs_train_a_step_at_tiny_size(name, model, alphas):
    run, data = tiny_setup(tiny_size(name, **model), alphas)
    states = numpy_states(run.initial_state, alphas)
    before = jax.tree.map(np.asarray, states)  # the step donates its input
    after, metrics = run.train_step(states, data, run.permutation(states, 0))
    assert np.asarray(after.step).tolist() == [1] * len(alphas) and metrics["loss"].shape == (1, len(alphas))
    for key in ("loss", "cross_entropy", "selectivity", "accuracy"):
        assert np.all(np.isfinite(np.asarray(metrics[key]))), key
    assert 0 < float(metrics["selectivity"].min()) < 1
    assert jax.tree.structure(after.batch_stats) == jax.tree.structure(before.batch_stats)
    assert (not after.batch_stats) == (model.get("norm") == "none")
    for old, new in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params), strict=True):
        assert not np.array_equal(old, np.asarray(new))
    if len(alphas) == 2:
        # The group's models start equal and see one batch: alpha alone cannot change their first cross-entropy,
        # their dropout masks (keys folded with alpha) do.
        ce = np.asarray(metrics["cross_entropy"][0])
        assert ce[0] != ce[1]
