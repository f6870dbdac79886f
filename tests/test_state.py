"""The optimizer and schedule of train/state.py against their definitions: L2 weight decay on kernels only (He et al.
2016, as configs/base.py states: not on BatchNorm parameters or biases), the piecewise-constant learning rate, and
the alpha warm-up ramp of train/step.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selectivity_jax.models import get_model, init_variables
from selectivity_jax.train.state import learning_rate_schedule, make_optimizer
from selectivity_jax.train.step import alpha_in_force


def test_weight_decay_reaches_kernels_only():
    """With zero gradients and no momentum, SGD's first update is -lr * wd * parameter for a kernel (conv or dense)
    and exactly 0 for a bias or a BatchNorm scale or offset."""
    model = get_model("resnet20", num_classes=10, width=4)
    params = init_variables(model, jax.random.key(0), (1, 32, 32, 3))["params"]
    learning_rate, weight_decay = 0.5, 0.1
    optimizer = make_optimizer(lambda step: learning_rate, momentum=0.0, weight_decay=weight_decay)
    updates, _ = optimizer.update(jax.tree.map(jnp.zeros_like, params), optimizer.init(params), params)
    checked = {"kernel": 0, "other": 0}
    for path, update in jax.tree_util.tree_leaves_with_path(updates):
        name = jax.tree_util.keystr(path)
        parameter = np.asarray(_at(params, path))
        if name.endswith("['kernel']"):
            np.testing.assert_allclose(update, -learning_rate * weight_decay * parameter, rtol=1e-6, err_msg=name)
            checked["kernel"] += 1
        else:
            assert name.endswith(("['bias']", "['scale']")), name
            np.testing.assert_array_equal(update, 0.0, err_msg=name)
            checked["other"] += 1
    assert checked["kernel"] >= 20 and checked["other"] >= 20, checked


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def test_learning_rate_steps_down_at_the_decay_fractions():
    schedule = learning_rate_schedule(0.1, 100, (0.5, 0.75), 0.1)
    values = [float(schedule(step)) for step in (0, 49, 50, 74, 75, 99)]
    np.testing.assert_allclose(values, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    warm = learning_rate_schedule(0.1, 100, (0.5,), 0.1, warmup_steps=10)
    np.testing.assert_allclose([float(warm(s)) for s in (0, 5, 10, 60)], [0.0, 0.05, 0.1, 0.01], rtol=1e-6)


def test_alpha_warm_up_ramps_linearly_from_the_first_step():
    """The first step trains at alpha / warmup_steps, step warmup_steps - 1 (the last of the ramp) at alpha."""
    ramp = alpha_in_force(jnp.float32(-2.0), jnp.arange(6), 4)
    np.testing.assert_allclose(ramp, [-0.5, -1.0, -1.5, -2.0, -2.0, -2.0], rtol=1e-6)
    assert float(alpha_in_force(jnp.float32(3.0), jnp.int32(0), 0)) == pytest.approx(3.0)  # no ramp
