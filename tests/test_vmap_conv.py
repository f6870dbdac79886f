"""The per-model convolution of vmapped groups: the same values and gradients as lax's, and no grouped convolution
in the program on CPU."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from selectivity_jax.models.vmap_conv import conv_general_dilated, per_index_under_vmap

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def two_layer_loss(conv, kernels, x):
    for kernel, stride in zip(kernels, (1, 2)):
        x = jax.nn.relu(conv(x, kernel, (stride, stride), "SAME", dimension_numbers=DIMENSIONS))
    return jnp.mean(x ** 2)


def model_group(num_models=3):
    key = jax.random.key(0)
    kernels = [jax.random.normal(jax.random.fold_in(key, 1), (num_models, 3, 3, 3, 8)) * 0.3,
               jax.random.normal(jax.random.fold_in(key, 2), (num_models, 3, 3, 8, 4)) * 0.3]
    return kernels, jax.random.normal(jax.random.fold_in(key, 3), (6, 8, 8, 3))


def test_vmapped_values_and_gradients_equal_lax():
    kernels, x = model_group()
    outputs = {}
    for name, conv in (("lax", lax.conv_general_dilated), ("per_model", conv_general_dilated)):
        # in_axes None for x: the group's models share their batch, as in a sweep group
        step = jax.jit(jax.vmap(jax.value_and_grad(functools.partial(two_layer_loss, conv)), in_axes=(0, None)))
        outputs[name] = step(kernels, x)
    for a, b in zip(jax.tree.leaves(outputs["lax"]), jax.tree.leaves(outputs["per_model"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # and each model's result is what that model computes alone
    for k in range(3):
        alone = jax.value_and_grad(functools.partial(two_layer_loss, conv_general_dilated))([w[k] for w in kernels], x)
        np.testing.assert_allclose(float(alone[0]), float(outputs["per_model"][0][k]), rtol=1e-6)


def test_no_grouped_convolution_under_vmap_on_cpu():
    kernels, x = model_group()
    for conv, grouped_expected in ((lax.conv_general_dilated, True), (conv_general_dilated, False)):
        grad_fn = jax.vmap(jax.grad(functools.partial(two_layer_loss, conv)), in_axes=(0, None))
        hlo = jax.jit(grad_fn).lower(kernels, x).as_text()
        assert ("feature_group_count = 3" in hlo) == grouped_expected, conv


def test_flax_conv_with_it_initializes_and_applies_like_the_default():
    x = jnp.ones((2, 8, 8, 3))
    plain, per_model = nn.Conv(4, (3, 3)), nn.Conv(4, (3, 3), conv_general_dilated=conv_general_dilated)
    variables = plain.init(jax.random.key(0), x)
    np.testing.assert_allclose(np.asarray(per_model.apply(variables, x)), np.asarray(plain.apply(variables, x)),
                               rtol=1e-6)


def test_per_index_under_vmap_passes_unbatched_arguments_through():
    calls = []

    def add(a, b):
        calls.append((a.shape, b.shape))
        return a + b

    out = jax.vmap(per_index_under_vmap(add), in_axes=(0, None))(jnp.arange(6.0).reshape(3, 2), jnp.ones(2))
    np.testing.assert_array_equal(np.asarray(out), np.arange(6.0).reshape(3, 2) + 1)
    # traced once per mapped index (plus once by custom_vmap for the output shape), never with the [3, 2] batch
    assert len(calls) >= 3 and set(calls) == {((2,), (2,))}
