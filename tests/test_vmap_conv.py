"""The convolution strategies of vmapped groups (grouped, per-model, im2col): the same values and gradients as lax's,
no grouped convolution in the program where the strategy avoids it, and a group of models trained with each
strategy equal to the same models trained alone."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from selectivity_jax.models.vmap_conv import (STRATEGIES, conv_general_dilated, conv_strategy, default_strategy,
                                              per_index_under_vmap)

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def layers_loss(conv, kernels, x):
    # 3x3 stride 1, 1x1 stride 2 and 3x3 stride 2 on an odd size: the shapes and paddings a ResNet has
    for kernel, stride in zip(kernels, (1, 2, 2)):
        x = jax.nn.relu(conv(x, kernel, (stride, stride), "SAME", dimension_numbers=DIMENSIONS))
    return jnp.mean(x ** 2)


def model_group(num_models=3):
    key = jax.random.key(0)
    kernels = [jax.random.normal(jax.random.fold_in(key, 1), (num_models, 3, 3, 3, 8)) * 0.3,
               jax.random.normal(jax.random.fold_in(key, 2), (num_models, 1, 1, 8, 6)) * 0.3,
               jax.random.normal(jax.random.fold_in(key, 4), (num_models, 3, 3, 6, 4)) * 0.3]
    return kernels, jax.random.normal(jax.random.fold_in(key, 3), (6, 9, 9, 3))


def vmapped_value_and_grad(strategy):
    def fn(kernels, x):
        with conv_strategy(strategy):
            # in_axes None for x: the group's models share their batch, as in a sweep group
            return jax.vmap(jax.value_and_grad(functools.partial(layers_loss, conv_general_dilated)),
                            in_axes=(0, None))(kernels, x)
    return jax.jit(fn)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_vmapped_values_and_gradients_equal_lax(strategy):
    kernels, x = model_group()
    reference = jax.vmap(jax.value_and_grad(functools.partial(layers_loss, lax.conv_general_dilated)),
                         in_axes=(0, None))(kernels, x)
    outputs = vmapped_value_and_grad(strategy)(kernels, x)
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(outputs)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    # and each model's result is what that model computes alone
    for k in range(3):
        alone = jax.value_and_grad(functools.partial(layers_loss, lax.conv_general_dilated))(
            [w[k] for w in kernels], x)
        np.testing.assert_allclose(float(outputs[0][k]), float(alone[0]), rtol=1e-6)


@pytest.mark.parametrize("strategy,grouped_expected", [("grouped", True), ("per_model", False), ("im2col", False)])
def test_grouped_convolution_only_where_the_strategy_asks_for_it(strategy, grouped_expected):
    kernels, x = model_group()
    hlo = vmapped_value_and_grad(strategy).lower(kernels, x).as_text()
    assert ("feature_group_count = 3" in hlo) == grouped_expected, strategy
    assert ("dot_general" in hlo) == (strategy == "im2col")


def test_strategy_names():
    assert default_strategy("cpu") == "per_model" and default_strategy("gpu") == "grouped"
    with pytest.raises(ValueError, match="unknown vmap_conv strategy 'fast'"):
        with conv_strategy("fast"):
            pass


def test_flax_conv_with_it_initializes_and_applies_like_the_default():
    x = jnp.ones((2, 8, 8, 3))
    plain, ours = nn.Conv(4, (3, 3)), nn.Conv(4, (3, 3), conv_general_dilated=conv_general_dilated)
    variables = plain.init(jax.random.key(0), x)
    for strategy in STRATEGIES:
        with conv_strategy(strategy):
            np.testing.assert_allclose(np.asarray(ours.apply(variables, x)), np.asarray(plain.apply(variables, x)),
                                       rtol=1e-5, atol=1e-6)


def test_per_index_under_vmap_passes_unbatched_arguments_through():
    calls = []

    def add(a, b):
        calls.append((a.shape, b.shape))
        return a + b

    out = jax.vmap(per_index_under_vmap(add), in_axes=(0, None))(jnp.arange(6.0).reshape(3, 2), jnp.ones(2))
    np.testing.assert_array_equal(np.asarray(out), np.arange(6.0).reshape(3, 2) + 1)
    # traced once per mapped index (plus once by custom_vmap for the output shape), never with the [3, 2] batch
    assert len(calls) >= 3 and set(calls) == {((2,), (2,))}


@pytest.mark.parametrize("strategy", ["grouped", "im2col"])
def test_group_trained_with_each_strategy_equals_models_trained_alone(strategy):
    """Two training steps of a group of 2 ResNet20s (alphas -1, 1) equal those of each model alone. (per_model, the
    CPU default, is compared with separate runs over whole sweeps in tests/test_sweep.py.)"""
    from selectivity_jax.data import synthetic_images
    from selectivity_jax.data.on_device import put_train_arrays
    from selectivity_jax.parallel import make_data_mesh
    from selectivity_jax.train.setup import setup_run
    from helpers import with_overrides
    from configs import quickstart

    mesh = make_data_mesh(1)
    images, labels = synthetic_images(10, 24, seed=0)
    data = put_train_arrays(images, labels, mesh)

    def two_steps(alphas, vmap_conv):
        config = with_overrides(quickstart.get_config("tiny"), {"vmap_conv": vmap_conv, "learning_rate": 0.002})
        run = setup_run(config, num_classes=10, image_shape=(32, 32, 3), num_train=240, mean=(0.5,) * 3,
                        std=(0.25,) * 3, mesh=mesh, alphas=alphas)
        state, order = run.initial_state, run.permutation(run.initial_state, 0)
        for _ in range(2):
            state, metrics = run.train_step(state, data, order)
        return state, metrics

    group, group_metrics = two_steps((-1.0, 1.0), strategy)
    for k, alpha in enumerate((-1.0, 1.0)):
        alone, alone_metrics = two_steps((alpha,), "auto")
        np.testing.assert_allclose(np.asarray(group_metrics["loss"][:, k]), np.asarray(alone_metrics["loss"][:, 0]),
                                   rtol=1e-5)
        for x, y in zip(jax.tree.leaves((group.params, group.batch_stats)),
                        jax.tree.leaves((alone.params, alone.batch_stats))):
            # float32 rounding: im2col's matmul sums in another order than the convolution kernels
            np.testing.assert_allclose(np.asarray(x[k]), np.asarray(y[0]), atol=1e-5, rtol=0)
