"""The oneDNN convolutions of the CPU default (selectivity_jax/cpu/onednn_conv.py): equal to lax's convolution up
to float32 rounding (values and both gradients, every stride, padding and group count a model uses, vmapped, split
over a data mesh), deterministic, chosen only where they apply, and a clear fallback where they cannot be built."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from selectivity_jax import cpu
from selectivity_jax.cpu import onednn_conv, settings
from selectivity_jax.models.vmap_conv import conv_general_dilated, conv_strategy
from selectivity_jax.parallel import make_data_mesh

needs_onednn = pytest.mark.skipif(onednn_conv.problem() is not None,
                                  reason=f"oneDNN convolutions unavailable: {onednn_conv.problem()}")
DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# (input [N, H, W, C], kernel [KH, KW, C / groups, O], strides, padding, groups): the ResNet shapes (3x3 'SAME' at
# stride 1 and 2 on even and odd sizes, 1x1 stride-2 projections), explicit asymmetric and 'VALID' padding, groups
CASES = [((4, 8, 8, 3), (3, 3, 3, 8), (1, 1), "SAME", 1),
         ((4, 9, 9, 8), (3, 3, 8, 16), (2, 2), "SAME", 1),
         ((4, 8, 8, 8), (1, 1, 8, 16), (2, 2), "SAME", 1),
         ((3, 9, 7, 6), (3, 2, 6, 5), (2, 1), ((2, 0), (1, 3)), 1),
         ((3, 7, 7, 4), (3, 3, 4, 4), (1, 1), "VALID", 1),
         ((2, 6, 6, 8), (3, 3, 2, 12), (1, 1), "SAME", 4)]


def operands(case, seed=0):
    lhs_shape, rhs_shape, *_ = case
    key = jax.random.key(seed)
    return (jax.random.normal(jax.random.fold_in(key, 0), lhs_shape),
            jax.random.normal(jax.random.fold_in(key, 1), rhs_shape) * 0.3)


def conv_kwargs(case):
    _, _, strides, padding, groups = case
    return dict(window_strides=strides, padding=padding, dimension_numbers=DIMENSIONS, feature_group_count=groups)


def value_and_grads(conv, lhs, rhs):
    # a non-linear loss, so that the cotangent reaching the convolution differs per element
    return jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k))), argnums=(0, 1)))(lhs, rhs)


def assert_close(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.max(np.abs(expected)))


@needs_onednn
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}s{c[2]}{c[3]}g{c[4]}".replace(" ", ""))
def test_equals_lax_values_and_gradients(case):
    lhs, rhs = operands(case)
    kwargs = conv_kwargs(case)
    assert onednn_conv.supports(lhs, rhs, kwargs)
    ours = functools.partial(onednn_conv.conv_general_dilated, **kwargs)
    reference = functools.partial(lax.conv_general_dilated, **kwargs)
    assert_close(jax.jit(ours)(lhs, rhs), jax.jit(reference)(lhs, rhs))
    (value, grads), (expected_value, expected_grads) = value_and_grads(ours, lhs, rhs), value_and_grads(
        reference, lhs, rhs)
    assert_close(value, expected_value)
    for grad, expected in zip(grads, expected_grads):
        assert_close(grad, expected)
    # the comparison can fail: the same convolution with the kernel flipped is far off
    with pytest.raises(AssertionError):
        assert_close(jax.jit(ours)(lhs, rhs[::-1, ::-1] + 0.1), jax.jit(reference)(lhs, rhs))


@needs_onednn
def test_deterministic():
    """Resume is bitwise only if the same inputs give the same bits: two calls of every handler agree exactly."""
    case = CASES[1]
    lhs, rhs = operands(case)
    ours = functools.partial(onednn_conv.conv_general_dilated, **conv_kwargs(case))
    first, second = value_and_grads(ours, lhs, rhs), value_and_grads(ours, lhs + 0.0, rhs + 0.0)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@needs_onednn
def test_vmapped_equals_per_model():
    """Under vmap (models with their own kernels, as in a sweep group) each index is its own convolution."""
    case = CASES[1]
    lhs, rhs = operands(case)
    kernels = jnp.stack([rhs, -2.0 * rhs, rhs[::-1]])
    ours = functools.partial(onednn_conv.conv_general_dilated, **conv_kwargs(case))
    batched = jax.jit(jax.vmap(jax.grad(lambda k, x: jnp.sum(jnp.sin(ours(x, k)))), in_axes=(0, None)))(kernels, lhs)
    for k in range(3):
        expected = value_and_grads(ours, lhs, kernels[k])[1][1]
        np.testing.assert_array_equal(np.asarray(batched[k]), np.asarray(expected))


@needs_onednn
def test_split_over_a_data_mesh_equals_one_device():
    """Under the steps' data mesh (8 host devices) each device convolves its slice of the batch and the kernel's
    gradient is summed over devices: the same values and gradients as lax's convolution on the whole batch."""
    mesh = make_data_mesh(8)
    case = ((16, 8, 8, 4), (3, 3, 4, 8), (1, 1), "SAME", 1)
    lhs, rhs = operands(case)
    kwargs = conv_kwargs(case)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

    def split(x, k):
        return onednn_conv.conv_general_dilated(x, k, mesh=mesh, **kwargs)

    (value, grads) = value_and_grads(split, jax.device_put(lhs, sharding), rhs)
    (expected_value, expected_grads) = value_and_grads(functools.partial(lax.conv_general_dilated, **kwargs), lhs, rhs)
    assert_close(value, expected_value)
    for grad, expected in zip(grads, expected_grads):
        assert_close(grad, expected)
    assert "selectivity_jax_conv_forward" in jax.jit(split).lower(jax.device_put(lhs, sharding), rhs).as_text()


def test_supports_only_what_the_handlers_compute():
    lhs, rhs = operands(CASES[0])
    kwargs = conv_kwargs(CASES[0])
    assert onednn_conv.supports(lhs, rhs, kwargs)
    assert not onednn_conv.supports(lhs.astype(jnp.bfloat16), rhs.astype(jnp.bfloat16), kwargs)
    assert not onednn_conv.supports(lhs, rhs, {**kwargs, "rhs_dilation": (2, 2)})
    assert not onednn_conv.supports(lhs, rhs, {**kwargs, "lhs_dilation": (2, 2)})
    assert not onednn_conv.supports(lhs, rhs, {**kwargs, "padding": ((-1, 1), (1, 1))})
    assert not onednn_conv.supports(lhs, rhs, {**kwargs, "dimension_numbers": ("NCHW", "OIHW", "NCHW")})
    assert not onednn_conv.supports(lhs[0], rhs, kwargs)  # not 2-D with a batch


@needs_onednn
def test_routed_by_the_cpu_tuning_choice(monkeypatch):
    """'auto' (the commands' setting; conftest applies it to the suite) sends a model's convolutions to oneDNN,
    'off' (the library's default) and `cpu.xla_convolutions` to lax; what is routed shows in the program, and both
    compute the same values. Programs for another platform never get them."""
    case = CASES[1]
    lhs, rhs = operands(case)

    def traced_model():  # a new function per trace: jit would reuse the trace of the same one
        def model(x, k):
            with conv_strategy("per_model"):
                return conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=DIMENSIONS)
        return jax.jit(model)

    def for_gpu(x, k):
        with conv_strategy("per_model", platform="gpu"):
            return conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=DIMENSIONS)

    assert settings.choice() == "auto" and cpu.convolution_kernels() == "onednn"
    routed, tuned = traced_model().lower(lhs, rhs).as_text(), traced_model()(lhs, rhs)
    assert "selectivity_jax_conv" not in jax.jit(for_gpu).lower(lhs, rhs).as_text()
    with cpu.xla_convolutions():
        assert "selectivity_jax_conv" not in traced_model().lower(lhs, rhs).as_text()
    monkeypatch.setattr(settings, "_choice", "off")
    assert cpu.convolution(lhs, rhs, conv_kwargs(case), None) is None and cpu.convolution_kernels() == "xla"
    plain, untuned = traced_model().lower(lhs, rhs).as_text(), traced_model()(lhs, rhs)
    assert "selectivity_jax_conv_forward" in routed and "selectivity_jax_conv_forward" not in plain
    assert_close(tuned, untuned)


@needs_onednn
@pytest.mark.parametrize("strategy, dtype", [("per_model", jnp.float32), ("per_model", jnp.bfloat16),
                                             ("im2col", jnp.float32), ("grouped", jnp.float32)])
def test_recorded_kernels_are_those_in_the_program(strategy, dtype):
    """What results.json and the first log line name (`vmap_conv.convolution_kernels`) is what the compiled program
    calls: oneDNN for float32 per-model convolutions only, XLA's for other dtypes and strategies."""
    from selectivity_jax.models.vmap_conv import convolution_kernels
    lhs, rhs = (a.astype(dtype) for a in operands(CASES[1]))

    def model(x, k):
        with conv_strategy(strategy, platform="cpu"):
            return conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=DIMENSIONS)

    assert settings.choice() == "auto"
    calls_onednn = "selectivity_jax_conv" in jax.jit(model).lower(lhs, rhs).as_text()
    assert calls_onednn == (strategy == "per_model" and dtype == jnp.float32)
    assert convolution_kernels(strategy, "cpu", dtype) == ("onednn" if calls_onednn else "xla")


def test_unavailable_falls_back_with_one_warning(monkeypatch):
    """Without oneDNN (another platform) the reason is given once and convolutions stay on lax."""
    monkeypatch.setattr(onednn_conv, "onednn_prefix", lambda: None)
    onednn_conv.problem.cache_clear()
    onednn_conv._warn_once.cache_clear()
    try:
        assert "oneDNN is not installed" in onednn_conv.problem()
        lhs, rhs = operands(CASES[0])
        with pytest.warns(RuntimeWarning, match="convolutions run on XLA"):
            assert cpu.convolution(lhs, rhs, conv_kwargs(CASES[0]), None) is None
        assert cpu.convolution_kernels() == "xla"
    finally:
        onednn_conv.problem.cache_clear()
        onednn_conv._warn_once.cache_clear()


@needs_onednn
def test_build_is_cached_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """A build goes to a temporary file renamed when complete; a failed one leaves nothing behind; a second call
    finds the build."""
    monkeypatch.setenv("SELECTIVITY_JAX_CACHE", str(tmp_path))
    prefix = onednn_conv.onednn_prefix()
    target = onednn_conv._library_path(prefix)
    assert target.parent == tmp_path
    monkeypatch.setenv("CXX", "false")  # a compiler that fails
    with pytest.raises(RuntimeError, match="compiling onednn_conv.cc failed"):
        onednn_conv._build(prefix, target)
    assert not target.exists() and not list(tmp_path.glob("*.partial"))
    monkeypatch.delenv("CXX")
    onednn_conv._build(prefix, target)
    built = target.stat().st_mtime_ns
    onednn_conv._build(prefix, target)
    assert target.stat().st_mtime_ns == built and not list(tmp_path.glob("*.partial"))
