"""Activation capture from Flax models the project did not write (linen and NNX)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from numpy_reference import reference_network_selectivity
from selectivity_jax import (ReLU, apply_with_activations, capture_activations, nnx_activations, selectivity_fn,
                             strip_intermediates)

NUM_CLASSES = 4


class PlainReluCNN(nn.Module):
    """A user's CNN written the usual way: ReLUs are plain function calls."""
    sow_relus: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        if self.sow_relus:
            self.sow("intermediates", "relu1", x)  # the one-line change that makes the ReLU visible
        x = nn.BatchNorm(use_running_average=not train, name="bn")(nn.Conv(16, (3, 3), strides=2, name="conv2")(x))
        x = nn.relu(x)
        if self.sow_relus:
            self.sow("intermediates", "relu2", x)
        return nn.Dense(NUM_CLASSES, name="head")(x.mean(axis=(1, 2)))


class Relu(nn.Module):  # a user's own ReLU module, matched by class name
    @nn.compact
    def __call__(self, x):
        return jnp.maximum(x, 0)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return ReLU(name="relu")(nn.Dense(6, name="dense")(x))


class ModuleReluMLP(nn.Module):
    """ReLUs as modules: one of ours (inside a submodule), one of the user's own."""

    @nn.compact
    def __call__(self, x):
        x = Block(name="block1")(x)
        x = Relu(name="act2")(nn.Dense(5, name="dense2")(x))
        return nn.Dense(NUM_CLASSES, name="head")(x)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.normal(size=(12, 8, 8, 3)).astype(np.float32), rng.integers(0, NUM_CLASSES, 12)


def test_plain_relu_calls_are_invisible_and_the_error_says_what_to_do(images):
    x, _ = images
    model = PlainReluCNN()
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="sow"):
        capture_activations(model.apply, variables, x)


def test_sow_line_makes_plain_relus_visible(images):
    x, labels = images
    model = PlainReluCNN(sow_relus=True)
    variables = model.init(jax.random.key(0), x)
    assert set(variables) == {"params", "batch_stats"}  # init leaves 'intermediates' out
    acts = capture_activations(model.apply, variables, x)
    assert list(acts) == ["relu1", "relu2"]
    assert acts["relu1"].shape == (12, 8, 8, 8) and acts["relu2"].shape == (12, 4, 4, 16)
    # independent check: the captured values are relu(conv1(x)) read through capture_intermediates of the Conv
    _, state = model.apply(variables, x, capture_intermediates=lambda m, _: m.name == "conv1", mutable=True)
    np.testing.assert_allclose(np.asarray(acts["relu1"]),
                               np.maximum(np.asarray(state["intermediates"]["conv1"]["__call__"][0]), 0), atol=1e-6)
    value = float(selectivity_fn(acts, labels, NUM_CLASSES))
    expected = reference_network_selectivity({k: np.asarray(v) for k, v in acts.items()}, labels, NUM_CLASSES)
    assert value == pytest.approx(expected, abs=1e-5)


def test_relu_modules_captured_by_default_filter(images):
    x, labels = images
    flat = x.reshape(12, -1)[:, :10]
    model = ModuleReluMLP()
    variables = model.init(jax.random.key(1), flat)
    acts = capture_activations(model.apply, variables, flat)
    assert list(acts) == ["block1/relu", "act2"]
    assert acts["block1/relu"].shape == (12, 6) and float(jnp.min(acts["act2"])) >= 0
    # regex and type filters pick a subset; True captures every module output
    assert list(capture_activations(model.apply, variables, flat, filter=r"^block1/")) == ["block1/dense",
                                                                                          "block1/relu"]
    assert list(capture_activations(model.apply, variables, flat, filter=ReLU)) == ["block1/relu"]
    assert "head" in capture_activations(model.apply, variables, flat, filter=True)
    with pytest.raises(TypeError, match="filter"):
        capture_activations(model.apply, variables, flat, filter=3)


def test_module_called_twice_gets_indexed_names():
    class Twice(nn.Module):
        @nn.compact
        def __call__(self, x):
            relu = ReLU(name="relu")
            return relu(nn.Dense(3)(relu(x)))

    x = np.ones((2, 3), np.float32)
    model = Twice()
    acts = capture_activations(model.apply, model.init(jax.random.key(0), x), x)
    assert list(acts) == ["relu_0", "relu_1"]


def test_training_step_with_batch_stats_and_selectivity(images):
    """The README's pattern: one forward pass gives logits, activations and new batch statistics."""
    x, labels = images
    model = PlainReluCNN(sow_relus=True)
    variables = model.init(jax.random.key(0), x)
    params, batch_stats = variables["params"], variables["batch_stats"]
    tx = optax.sgd(0.05)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, batch_stats, opt_state, x, labels, alpha):
        def loss_fn(params):
            logits, acts, state = apply_with_activations(
                model.apply, {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            si = selectivity_fn(acts, labels, NUM_CLASSES)
            return ce - alpha * si, (state, si)

        (loss, (state, si)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), state["batch_stats"], opt_state, si

    new_params, new_stats, _, si = train_step(params, batch_stats, opt_state, x, labels, -1.0)
    assert np.isfinite(float(si))
    assert set(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), batch_stats, new_stats))) == {True}
    assert jax.tree.structure(new_params) == jax.tree.structure(params)


def test_custom_sow_collection_kept_out_of_variables(images):
    class Sower(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(7)(x))
            self.sow("selectivity", "hidden", h)
            return nn.Dense(NUM_CLASSES)(h)

    x = images[0].reshape(12, -1)
    model = Sower()
    variables = model.init(jax.random.key(0), x)
    assert "selectivity" in variables  # linen's init returns custom sow collections ...
    variables = strip_intermediates(variables, collections=("selectivity",))
    assert set(variables) == {"params"}  # ... which must not end up in parameters or train state
    _, acts, state = apply_with_activations(model.apply, variables, x, filter=None, collection="selectivity")
    assert list(acts) == ["hidden"] and acts["hidden"].shape == (12, 7) and state == {}


class NNXNet(nnx.Module):
    """A Flax NNX model that sows its post-ReLU activations."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.head = nnx.Linear(16, NUM_CLASSES, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv(x))
        self.sow(nnx.Intermediate, "conv_relu", x)
        x = nnx.relu(self.hidden(x.mean(axis=(1, 2))))
        self.sow(nnx.Intermediate, "hidden_relu", x)
        return self.head(x)


def test_nnx_capture(images):
    x, labels = images
    model = NNXNet(nnx.Rngs(0))
    logits, acts = nnx_activations(model, x)
    assert logits.shape == (12, NUM_CLASSES)
    assert list(acts) == ["conv_relu", "hidden_relu"] and acts["hidden_relu"].shape == (12, 16)
    np.testing.assert_allclose(np.asarray(acts["conv_relu"]), np.maximum(np.asarray(model.conv(x)), 0), atol=1e-6)
    value = float(selectivity_fn(acts, labels, NUM_CLASSES))
    expected = reference_network_selectivity({k: np.asarray(v) for k, v in acts.items()}, labels, NUM_CLASSES)
    assert value == pytest.approx(expected, abs=1e-5)

    # and differentiable inside an NNX training step
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, labels):
        def loss_fn(model):
            logits, acts = nnx_activations(model, x)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return ce + 1.0 * selectivity_fn(acts, labels, NUM_CLASSES)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    before = np.asarray(model.hidden.kernel[...]).copy()
    assert np.isfinite(float(train_step(model, optimizer, x, labels)))
    assert not np.allclose(before, np.asarray(model.hidden.kernel[...]))
