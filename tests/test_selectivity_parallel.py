"""selectivity_fn on a batch split over 8 host CPU devices equals the single-device global-batch result.

Covers the four ways a batch gets split: plain jit on an Auto mesh, jit on an Explicit mesh (`jax.make_mesh`'s
default), `jax.shard_map` and `jax.pmap` with `axis_name`. Labels are sorted so that most shards hold only one or two
classes and several hold none of some class: per-device selectivities would differ from the global one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from numpy_reference import reference_unit_selectivity
from selectivity_jax import SelectivityStats, selectivity_fn

NUM_DEVICES = 8
NUM_CLASSES = 5
BATCH = 64


@pytest.fixture(scope="module")
def data():
    assert jax.device_count() == NUM_DEVICES, "tests/conftest.py must set 8 host devices before JAX is imported"
    rng = np.random.default_rng(0)
    labels = np.sort(rng.integers(0, NUM_CLASSES, BATCH))
    gain = rng.gamma(0.5, 1.0, size=(NUM_CLASSES, 6))
    acts = {"conv": (np.maximum(rng.normal(size=(BATCH, 4, 4, 6)), 0) * gain[labels][:, None, None]).astype(np.float32),
            "dense": np.maximum(rng.normal(size=(BATCH, 9)) + labels[:, None] * 0.3, 0).astype(np.float32)}
    mask = (rng.random(BATCH) < 0.8).astype(np.float32)
    expected = selectivity_fn(acts, labels, NUM_CLASSES, mask=mask, reduce=False)
    for name in acts:  # the single-device result is itself right
        np.testing.assert_allclose(np.asarray(expected[name]),
                                   reference_unit_selectivity(acts[name], labels, NUM_CLASSES, mask), atol=1e-5)
    return acts, labels, mask, expected


def _check(result, expected):
    for name in expected:
        np.testing.assert_allclose(np.asarray(result[name]), np.asarray(expected[name]), atol=1e-6, rtol=0)


def _shards_differ_from_global(acts, labels, mask, expected):
    """Sanity check of the data: averaging per-shard selectivities would NOT give the global answer."""
    size = BATCH // NUM_DEVICES
    local = np.mean([float(selectivity_fn({k: v[i * size:(i + 1) * size] for k, v in acts.items()},
                                          labels[i * size:(i + 1) * size], NUM_CLASSES,
                                          mask=mask[i * size:(i + 1) * size])) for i in range(NUM_DEVICES)])
    global_value = np.mean([np.mean(np.asarray(v)) for v in expected.values()])
    assert abs(local - global_value) > 0.05


def test_data_has_shards_without_some_classes(data):
    acts, labels, mask, expected = data
    size = BATCH // NUM_DEVICES
    assert any(len(set(labels[i * size:(i + 1) * size])) < NUM_CLASSES for i in range(NUM_DEVICES))
    _shards_differ_from_global(acts, labels, mask, expected)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_jit_on_sharded_batch(data, axis_type):
    acts, labels, mask, expected = data
    mesh = jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(axis_type,))
    shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
    sharded_acts = {k: shard(v) for k, v in acts.items()}
    assert len(sharded_acts["conv"].sharding.device_set) == NUM_DEVICES
    fn = jax.jit(lambda a, l, m: selectivity_fn(a, l, NUM_CLASSES, mask=m, reduce=False))
    with jax.set_mesh(mesh):
        _check(fn(sharded_acts, shard(labels), shard(mask)), expected)
    _check(fn(sharded_acts, shard(labels), shard(mask)), expected)  # also without a mesh context
    # differentiable there too (the training step needs it)
    grad = jax.jit(jax.grad(lambda a: selectivity_fn(a, shard(labels), NUM_CLASSES, mask=shard(mask))))(sharded_acts)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grad.values())


def test_jit_on_explicit_mesh_streaming_stats(data):
    acts, labels, mask, expected = data
    mesh = jax.make_mesh((NUM_DEVICES,), ("data",))  # Explicit axes by default
    assert mesh.axis_types == (AxisType.Explicit,)
    shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
    stats = SelectivityStats.create(acts, NUM_CLASSES)
    with jax.set_mesh(mesh):
        stats = jax.jit(lambda s, a, l, m: s.update(a, l, m))(stats, {k: shard(v) for k, v in acts.items()},
                                                               shard(labels), shard(mask))
    _check(stats.per_unit(), expected)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_shard_map_with_axis_name(data, axis_type):
    acts, labels, mask, expected = data
    mesh = jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(axis_type,))
    shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
    acts, labels, mask = {k: shard(v) for k, v in acts.items()}, shard(labels), shard(mask)

    @jax.jit
    def fn(a, l, m):
        return jax.shard_map(
            lambda a, l, m: selectivity_fn(a, l, NUM_CLASSES, mask=m, axis_name="data", reduce=False),
            mesh=mesh, in_specs=P("data"), out_specs=P())(a, l, m)

    _check(fn(acts, labels, mask), expected)

    def stats_fn(a, l, m):
        stats = SelectivityStats.create(a, NUM_CLASSES)
        return stats.update(a, l, m, axis_name="data").per_unit()

    _check(jax.jit(jax.shard_map(stats_fn, mesh=mesh, in_specs=P("data"), out_specs=P()))(acts, labels, mask),
           expected)


def test_pmap_with_axis_name(data):
    acts, labels, mask, expected = data
    split = lambda x: x.reshape((NUM_DEVICES, -1) + x.shape[1:])
    fn = jax.pmap(lambda a, l, m: selectivity_fn(a, l, NUM_CLASSES, mask=m, axis_name="batch", reduce=False),
                  axis_name="batch")
    result = fn({k: split(v) for k, v in acts.items()}, split(labels), split(mask))
    for device in range(NUM_DEVICES):
        _check({k: v[device] for k, v in result.items()}, expected)
    scalar = jax.pmap(lambda a, l, m: selectivity_fn(a, l, NUM_CLASSES, mask=m, axis_name="batch"),
                      axis_name="batch")({k: split(v) for k, v in acts.items()}, split(labels), split(mask))
    expected_scalar = float(jnp.mean(jnp.stack([jnp.mean(v) for v in expected.values()])))
    np.testing.assert_allclose(np.asarray(scalar), expected_scalar, atol=1e-6)
