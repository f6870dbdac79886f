"""selectivity_fn and SelectivityStats against the float64 NumPy reference (tests/numpy_reference.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from numpy_reference import reference_network_selectivity, reference_unit_selectivity
from selectivity_jax import SelectivityStats, selectivity_fn

ATOL = 1e-5


def random_activations(rng, shape, labels, num_classes, dead_units=2):
    """Post-ReLU-like activations with class structure (so SI spans [0, 1]) and some dead units."""
    units = shape[-1]
    class_gain = rng.gamma(0.5, 1.0, size=(num_classes, units))
    gain = class_gain[labels].reshape((shape[0],) + (1,) * (len(shape) - 2) + (units,))
    a = np.maximum(rng.normal(size=shape) + 0.5, 0.0) * gain
    a[..., :dead_units] = 0.0
    return a.astype(np.float32)


CASES = {
    # name: (num_classes, batch, layer shapes, label sampler)
    "dense_2_classes": (2, 64, [(64, 17)], lambda r, b, c: r.integers(0, c, b)),
    "conv_and_dense_10": (10, 96, [(96, 5, 5, 8), (96, 12)], lambda r, b, c: r.integers(0, c, b)),
    "missing_classes": (10, 50, [(50, 3, 3, 6), (50, 9)], lambda r, b, c: r.choice([1, 4, 7], b)),
    "single_class": (10, 20, [(20, 4, 4, 5)], lambda r, b, c: np.full(b, 3)),
    "200_classes": (200, 900, [(900, 2, 2, 16), (900, 32)], lambda r, b, c: r.integers(0, c, b)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("use_mask", [False, True])
def test_matches_numpy_reference(case, use_mask):
    num_classes, batch, shapes, sample = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    labels = sample(rng, batch, num_classes)
    acts = {f"layer{i}": random_activations(rng, s, labels, num_classes) for i, s in enumerate(shapes)}
    mask = (rng.random(batch) < 0.7) if use_mask else None
    if use_mask:  # padding rows hold garbage that must not count
        for a in acts.values():
            a[~mask] = 1e3
    per_unit = selectivity_fn(acts, labels, num_classes, mask=mask, reduce=False)
    assert list(per_unit) == list(acts)
    for name, a in acts.items():
        expected = reference_unit_selectivity(a, labels, num_classes, mask)
        np.testing.assert_allclose(np.asarray(per_unit[name]), expected, atol=ATOL, rtol=0)
    network = float(selectivity_fn(acts, labels, num_classes, mask=mask))
    assert network == pytest.approx(reference_network_selectivity(acts, labels, num_classes, mask), abs=ATOL)
    if case != "single_class":
        assert 0.05 < network < 0.95  # the data really exercises the formula


def test_float_mask_and_bf16_activations():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 40)
    acts = random_activations(rng, (40, 6, 6, 8), labels, 5)
    mask = (rng.random(40) < 0.5)
    got = selectivity_fn({"a": jnp.asarray(acts, jnp.bfloat16)}, labels, 5, mask=mask.astype(np.float32),
                         reduce=False)["a"]
    assert got.dtype == jnp.float32
    expected = reference_unit_selectivity(np.asarray(jnp.asarray(acts, jnp.bfloat16), np.float32), labels, 5, mask)
    np.testing.assert_allclose(np.asarray(got), expected, atol=ATOL, rtol=0)


def test_known_cases_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    one_class_only = np.array([[3.0], [1.0], [0.0], [0.0], [0.0], [0.0]])  # active for class 0 only -> 1
    same_for_all = np.full((6, 1), 2.5)                                     # identical responses -> 0
    dead = np.zeros((6, 1))                                                 # dead -> 0
    # means 4, 1, 1 -> (4 - 1) / (4 + 1) = 0.6; the mean of the other classes' MEANS, not of their samples
    graded = np.array([[4.0], [4.0], [0.0], [2.0], [1.0], [1.0]])
    acts = {"one": one_class_only, "same": same_for_all, "dead": dead, "graded": graded}
    si = selectivity_fn(acts, labels, 3, reduce=False)
    assert float(si["one"][0]) == pytest.approx(1.0, abs=1e-6)
    assert float(si["same"][0]) == pytest.approx(0.0, abs=1e-7)
    assert float(si["dead"][0]) == 0.0
    assert float(si["graded"][0]) == pytest.approx(0.6, abs=1e-6)
    # mean of class means vs mean of samples differ when classes are unbalanced: 2 samples of class 1, 1 of class 2
    unbalanced = selectivity_fn({"a": np.array([[6.0], [0.0], [0.0], [3.0]])}, np.array([0, 1, 1, 2]), 3)
    assert float(unbalanced) == pytest.approx((6 - 1.5) / (6 + 1.5 + 1e-7), abs=1e-6)
    # network selectivity = mean over layers of the mean over units
    two_layers = {"a": np.concatenate([one_class_only, same_for_all], 1), "b": graded}
    assert float(selectivity_fn(two_layers, labels, 3)) == pytest.approx((0.5 + 0.6) / 2, abs=1e-6)


def test_fewer_than_two_classes_and_empty_mask_give_zero():
    acts = {"a": np.abs(np.random.default_rng(1).normal(size=(8, 4))).astype(np.float32)}
    assert np.all(np.asarray(selectivity_fn(acts, np.full(8, 2), 4, reduce=False)["a"]) == 0)
    assert float(selectivity_fn(acts, np.arange(8) % 4, 4, mask=np.zeros(8))) == 0.0


@pytest.mark.parametrize("labels,mask", [
    (np.array([0, 0, 1, 1, 2, 2, 3, 3]), None),          # all classes
    (np.full(8, 1), None),                                # one present class
    (np.array([0, 0, 1, 1, 2, 2, 3, 3]), np.zeros(8)),  # nothing present
    (np.array([0, 1, 0, 1, 0, 1, 0, 1]), None),          # two classes, zero responses for units 0-1
])
def test_gradients_finite(labels, mask):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 3, 3, 6)).astype(np.float32)
    x[..., :2] = -1.0  # dead after the ReLU

    def loss(pre):
        return selectivity_fn({"conv": jax.nn.relu(pre), "dense": jax.nn.relu(pre[:, 0, 0])}, labels, 4, mask=mask)

    value, grad = jax.jit(jax.value_and_grad(loss))(x)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(grad)))
    dead_grad = jax.grad(lambda a: selectivity_fn({"a": a}, labels, 4, mask=mask))(np.zeros((8, 5), np.float32))
    assert np.all(np.isfinite(np.asarray(dead_grad)))


def _mlp_problem(seed=0, n=256, dim=16, hidden=32, classes=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centers = rng.normal(size=(classes, dim))
    x = (centers[labels] + 0.8 * rng.normal(size=(n, dim))).astype(np.float32)
    key1, key2 = jax.random.split(jax.random.key(seed))
    params = {"w1": jax.random.normal(key1, (dim, hidden)) / np.sqrt(dim), "b1": jnp.full((hidden,), 0.1),
              "w2": jax.random.normal(key2, (hidden, classes)) / np.sqrt(hidden)}

    def forward(p):
        h = jax.nn.relu(x @ p["w1"] + p["b1"])
        return h @ p["w2"], {"hidden": h}

    return params, forward, labels, classes


@pytest.mark.parametrize("alpha", [-2.0, 2.0])
def test_regularizer_moves_selectivity_in_the_direction_of_alpha(alpha):
    params, forward, labels, classes = _mlp_problem()

    def loss_fn(p):
        logits, acts = forward(p)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return ce - alpha * selectivity_fn(acts, labels, classes)

    def selectivity(p):
        return float(selectivity_fn(forward(p)[1], labels, classes))

    opt = optax.sgd(0.1)
    opt_state = opt.init(params)

    @jax.jit
    def step(p, s):
        grads = jax.grad(loss_fn)(p)
        updates, s = opt.update(grads, s)
        return optax.apply_updates(p, updates), s

    before = selectivity(params)
    for _ in range(30):
        params, opt_state = step(params, opt_state)
    after = selectivity(params)
    if alpha < 0:
        assert after < before - 0.02, (before, after)
    else:
        assert after > before + 0.02, (before, after)


def test_streaming_over_uneven_batches_equals_one_shot():
    rng = np.random.default_rng(3)
    n, classes = 203, 7
    labels = rng.integers(0, classes - 1, n)  # the last class never appears
    acts = {"conv": random_activations(rng, (n, 4, 4, 6), labels, classes),
            "dense": random_activations(rng, (n, 10), labels, classes)}
    mask = rng.random(n) < 0.9
    stats = SelectivityStats.create({k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in acts.items()}, classes)
    update = jax.jit(lambda s, a, l, m: s.update(a, l, m))
    for start, stop in [(0, 1), (1, 50), (50, 51), (51, 140), (140, 203)]:
        batch = {k: v[start:stop] for k, v in acts.items()}
        stats = update(stats, batch, labels[start:stop], mask[start:stop])
    one_shot = selectivity_fn(acts, labels, classes, mask=mask, reduce=False)
    streamed = stats.per_unit()
    for name in acts:
        np.testing.assert_allclose(np.asarray(streamed[name]), np.asarray(one_shot[name]), atol=1e-6, rtol=0)
        np.testing.assert_allclose(np.asarray(streamed[name]),
                                   reference_unit_selectivity(acts[name], labels, classes, mask), atol=ATOL, rtol=0)
    assert float(stats.mean()) == pytest.approx(float(selectivity_fn(acts, labels, classes, mask=mask)), abs=1e-6)
    per_layer = stats.per_layer()
    assert float(per_layer["dense"]) == pytest.approx(float(np.mean(np.asarray(one_shot["dense"]))), abs=1e-6)
    assert float(stats.counts.sum()) == mask.sum()
    assert float(stats.dead_fraction()["dense"]) == pytest.approx(0.2)  # 2 of 10 units are dead


def test_stats_merge_equals_single_pass():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 30)
    acts = {"a": random_activations(rng, (30, 5), labels, 3)}
    empty = SelectivityStats.create(acts, 3)
    halves = empty.update({"a": acts["a"][:10]}, labels[:10]).merge(empty.update({"a": acts["a"][10:]}, labels[10:]))
    np.testing.assert_allclose(np.asarray(halves.per_unit()["a"]),
                               np.asarray(empty.update(acts, labels).per_unit()["a"]), atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    acts = {"a": np.ones((4, 3), np.float32)}
    with pytest.raises(ValueError, match="non-empty dict"):
        selectivity_fn({}, np.zeros(4, int), 2)
    with pytest.raises(ValueError, match="labels must have shape"):
        selectivity_fn(acts, np.zeros(5, int), 2)
    with pytest.raises(ValueError, match="mask must have shape"):
        selectivity_fn(acts, np.zeros(4, int), 2, mask=np.ones(3))
    with pytest.raises(ValueError, match=r"\[B, ..., U\]"):
        selectivity_fn({"a": np.ones(4)}, np.zeros(4, int), 2)
    with pytest.raises(ValueError, match="differ"):
        SelectivityStats.create(acts, 2).update({"b": acts["a"]}, np.zeros(4, int))
