"""How the convolutions of a vmapped group of models run (the sweep's vmap mode), chosen per platform.

``jax.vmap`` over models that each have their own kernels turns every convolution into one grouped convolution
(``feature_group_count = K``). XLA:CPU expands a grouped kernel into a block-diagonal dense one, so K models cost
K^2 single-model convolutions (5 vmapped ResNet20s trained at 0.2x the total throughput of one); GPUs run grouped
convolutions with kernels of their own, fast for some shapes and slow for others. `conv_general_dilated` is
``lax.conv_general_dilated`` (same arguments, for ``nn.Conv``'s ``conv_general_dilated`` field) run by one of these
strategies:

- ``'grouped'``: plain ``lax.conv_general_dilated``; under vmap, one grouped convolution for the whole group.
- ``'per_model'``: under vmap, one ordinary convolution per model (forward and backward), so a group costs what its
  models cost one after another and each model's convolutions are exactly those it would run alone.
- ``'im2col'``: the input's patches (strided slices, no convolution) times the kernel as one matrix product; under
  vmap the products become one batched matmul. Equal to the others
  up to float32 summation order.

``'auto'`` (the default) is `default_strategy` of the platform the model is compiled for. The strategy in force is
set with `conv_strategy`, entered inside the traced function (the training and evaluation steps do so with their
``StepSpec.vmap_conv`` and data mesh, whose devices give the platform: a TPU topology's devices on a CPU host give a
TPU program, with no CPU-only kernel in it); it acts when the model is traced, like
`selectivity_jax.models.edit_layers`. Outside any `conv_strategy` block (a model applied on its own, as the analyses
and users do) every convolution is a single model's, for JAX's default backend (the platform an unsharded
``jax.jit`` compiles for).

A single model's convolution in a CPU program goes through the one hook into the CPU speed-ups
(`selectivity_jax.cpu`, a removable package): where its settings are on (the commands' ``cpu_tuning='auto'``) and
it takes the convolution, it runs on oneDNN; otherwise, and without the package, on XLA's kernels. With the
library's defaults every convolution is ``lax.conv_general_dilated``, so the models support every JAX
transformation (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian`` included) on every platform.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from selectivity_jax.parallel import mesh_platform

STRATEGIES = ("grouped", "per_model", "im2col")
NHWC_LAYOUT = ("NHWC", "HWIO", "NHWC")  # the layout flax's nn.Conv uses for 2-D inputs


class _Routing(NamedTuple):
    """What an active `conv_strategy` block sets: the strategy (resolved), the platform compiled for, the data mesh."""
    strategy: str
    platform: str
    batch_mesh: Mesh | None


_ROUTING: contextvars.ContextVar[_Routing | None] = contextvars.ContextVar("selectivity_jax_vmap_conv", default=None)


def default_strategy(platform: str) -> str:
    """The strategy ``'auto'`` means on ``platform`` (``'cpu'``, ``'gpu'``, ``'tpu'``): ``'per_model'`` on CPU (grouped
    convolutions cost K^2 there), ``'grouped'`` on GPU and TPU (their own grouped-convolution kernels;
    ``python -m experiments.accelerator_check`` measures every strategy on the device at hand, and
    ``python -m experiments.compile_check`` sizes them for a TPU)."""
    return "per_model" if platform == "cpu" else "grouped"


def resolve_strategy(name: str, platform: str) -> str:
    """``name`` checked, with ``'auto'`` replaced by `default_strategy` of ``platform``."""
    if name == "auto":
        return default_strategy(platform)
    if name not in STRATEGIES:
        raise ValueError(f"unknown vmap_conv strategy {name!r}; expected 'auto' or one of {list(STRATEGIES)}")
    return name


@contextlib.contextmanager
def conv_strategy(name: str, batch_mesh: Mesh | None = None, platform: str | None = None) -> Iterator[None]:
    """While active (at trace time), `conv_general_dilated` runs by strategy ``name`` (``'auto'`` or one of
    `STRATEGIES`) for ``platform`` (default: the platform of ``batch_mesh``'s devices, else JAX's default backend);
    ``batch_mesh``: the step's data mesh (None: none), over which CPU kernels split the batch."""
    platform = platform or (mesh_platform(batch_mesh) if batch_mesh is not None else jax.default_backend())
    token = _ROUTING.set(_Routing(resolve_strategy(name, platform), platform, batch_mesh))
    try:
        yield
    finally:
        _ROUTING.reset(token)


# ----------------------------------------------------------------------------------------------------------------------
# The one hook into the CPU speed-ups (selectivity_jax/cpu/: delete the package and this hook, and the library runs
# XLA's kernels everywhere).
# ----------------------------------------------------------------------------------------------------------------------

def _cpu_package() -> Any:
    """``selectivity_jax.cpu`` (its oneDNN convolutions and settings), or None where it is not installed."""
    try:
        from selectivity_jax import cpu
    except ImportError:
        return None
    return cpu


def _single_conv(lhs: jax.Array, rhs: jax.Array, conv_kwargs: dict[str, Any], platform: str,
                 batch_mesh: Mesh | None) -> jax.Array:
    """One model's convolution compiled for ``platform``: on the CPU package's kernels where it takes it (CPU
    programs only), else ``lax.conv_general_dilated``."""
    cpu = _cpu_package() if platform == "cpu" else None
    result = None if cpu is None else cpu.convolution(lhs, rhs, conv_kwargs, batch_mesh)
    return lax.conv_general_dilated(lhs, rhs, **conv_kwargs) if result is None else result


def convolution_kernels(strategy: str, platform: str, dtype: Any) -> str:
    """``'onednn'`` or ``'xla'``: whose kernels run a model's convolutions under ``strategy`` (resolved) in a program
    for ``platform`` computing in ``dtype`` (what results and benchmarks record: the CPU package takes float32
    ``'per_model'`` convolutions of CPU programs only)."""
    cpu = _cpu_package()
    if cpu is None or platform != "cpu" or strategy != "per_model" or jnp.dtype(dtype) != jnp.float32:
        return "xla"
    return cpu.convolution_kernels()


def cpu_settings() -> str:
    """The CPU settings in force (``'auto'``, ``'off'``, ``'user'``: `selectivity_jax.cpu.in_force`), or
    ``'absent'`` without the CPU package (for results and benchmarks)."""
    cpu = _cpu_package()
    return "absent" if cpu is None else cpu.in_force()


def per_index_under_vmap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` whose batching rule loops over the mapped axis (``fn`` once per index, results stacked) instead of
    vectorizing ``fn``'s primitives. Unbatched arguments are passed as they are to every call."""
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        outs = [wrapped(*[arg[k] if batched else arg for arg, batched in zip(args, in_batched)])
                for k in range(axis_size)]
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
        return stacked, jax.tree.map(lambda _: True, stacked)

    return wrapped


def _per_model_conv(lhs: jax.Array, rhs: jax.Array, routing: _Routing, **conv_kwargs: Any) -> jax.Array:
    """The convolution with forward and backward pass each run per mapped index under vmap (see module doc), each a
    single model's (`_single_conv`)."""
    def plain(lhs, rhs):
        return _single_conv(lhs, rhs, conv_kwargs, routing.platform, routing.batch_mesh)

    forward = per_index_under_vmap(plain)
    backward = per_index_under_vmap(lambda lhs, rhs, cotangent: jax.vjp(plain, lhs, rhs)[1](cotangent))

    @jax.custom_vjp
    def conv(lhs, rhs):
        return forward(lhs, rhs)

    conv.defvjp(lambda lhs, rhs: (forward(lhs, rhs), (lhs, rhs)),
                lambda residuals, cotangent: backward(*residuals, cotangent))
    return conv(lhs, rhs)


def is_flax_2d(lhs: jax.Array, rhs: jax.Array, conv_kwargs: dict[str, Any]) -> bool:
    """True for an undilated 2-D convolution without batch groups in flax's NHWC / HWIO layout (arguments as
    ``lax.conv_general_dilated`` takes them)."""
    if lhs.ndim != 4 or rhs.ndim != 4 or conv_kwargs.get("batch_group_count", 1) != 1:
        return False
    if any(d not in (None, (1, 1), [1, 1]) for d in (conv_kwargs.get("lhs_dilation"), conv_kwargs.get("rhs_dilation"))):
        return False
    given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, conv_kwargs.get("dimension_numbers"))
    return given == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC_LAYOUT)


def _is_plain_nhwc(lhs: jax.Array, rhs: jax.Array, conv_kwargs: dict[str, Any]) -> bool:
    """True for an ungrouped, undilated 2-D convolution in flax's NHWC / HWIO layout (what `_im2col_conv`
    handles)."""
    return conv_kwargs["feature_group_count"] == 1 and is_flax_2d(lhs, rhs, conv_kwargs)


def _im2col_conv(lhs: jax.Array, rhs: jax.Array, **conv_kwargs: Any) -> jax.Array:
    """[B, H, W, C] x [kh, kw, C, O] -> [B, H', W', O] as patches [B, H', W', kh*kw*C] (strided slices of the padded
    input, spatial-major like the kernel's HWIO order) times the kernel reshaped to [kh*kw*C, O]."""
    if not _is_plain_nhwc(lhs, rhs, conv_kwargs):
        return lax.conv_general_dilated(lhs, rhs, **conv_kwargs)
    kh, kw, channels, features = rhs.shape
    strides = tuple(conv_kwargs["window_strides"])
    padding = conv_kwargs["padding"]
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), strides, padding)
    padded = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    out_h = (padded.shape[1] - kh) // strides[0] + 1
    out_w = (padded.shape[2] - kw) // strides[1] + 1
    patches = jnp.concatenate([
        lax.slice(padded, (0, i, j, 0),
                  (padded.shape[0], i + strides[0] * (out_h - 1) + 1, j + strides[1] * (out_w - 1) + 1, channels),
                  (1, strides[0], strides[1], 1))
        for i in range(kh) for j in range(kw)], axis=-1)
    kernel = rhs.reshape(kh * kw * channels, features)
    return lax.dot_general(patches, kernel, (((3,), (0,)), ((), ())), precision=conv_kwargs["precision"],
                           preferred_element_type=conv_kwargs["preferred_element_type"])


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any, lhs_dilation: Any = None,
                         rhs_dilation: Any = None, dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
    """``lax.conv_general_dilated`` (same arguments) run by the strategy in force (see module doc); for ``nn.Conv``'s
    ``conv_general_dilated`` field."""
    conv_kwargs = dict(window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
                       rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                       feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                       precision=precision, preferred_element_type=preferred_element_type)
    routing = _ROUTING.get()
    if routing is None:  # a model applied on its own: one model's convolution for the default backend
        return _single_conv(lhs, rhs, conv_kwargs, jax.default_backend(), None)
    if routing.strategy == "per_model":
        return _per_model_conv(lhs, rhs, routing, **conv_kwargs)
    if routing.strategy == "im2col":
        return _im2col_conv(lhs, rhs, **conv_kwargs)
    return lax.conv_general_dilated(lhs, rhs, **conv_kwargs)
