"""2-D convolutions on oneDNN for XLA:CPU, under ``cpu_tuning='auto'`` (`selectivity_jax.cpu.settings`).

XLA:CPU runs convolutions on Eigen or YNNPACK; on the shapes of the papers' CIFAR ResNets the gradients of a
convolution take 1.1-2.4x as long there as on oneDNN, the library PyTorch's CPU convolutions use (measured per layer
and for the whole train step in the README's CPU section). This module runs a float32 NHWC/HWIO convolution (flax's
layout) as three XLA FFI custom calls into oneDNN (``onednn_conv.cc`` beside this file): the forward pass, the input's
cotangent (backward data) and the kernel's cotangent (backward weights), tied together by ``jax.custom_vjp``. They
compute the same convolution as ``lax.conv_general_dilated``, summed in another order: equal up to float32 rounding
(tests/test_onednn_conv.py, tests/test_cpu.py).

The handlers are compiled once per machine with the system's C++ compiler, against the oneDNN of the pip packages
``onednn-cpu-gomp`` and ``onednn-devel-cpu-gomp`` (a Linux x86-64 dependency of the project) and the XLA FFI headers
that ship with jaxlib, into the user's cache (``$XDG_CACHE_HOME/selectivity_jax`` or ``~/.cache/selectivity_jax``;
``SELECTIVITY_JAX_CACHE`` overrides it). Where any of that is missing (another OS or CPU architecture, no compiler),
`problem` says what, one warning says it once, and convolutions stay on XLA.

Under a data mesh of several devices each device convolves its slice of the batch (``jax.shard_map``; the kernel's
cotangent is summed over devices), because XLA's partitioner cannot split a custom call. Under ``jax.vmap`` the calls
run once per mapped index. Forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``) is not defined for the custom
calls: trace such a function inside `xla_convolutions` (or leave the CPU settings off, the library's default).
`supports` is what the convolution hook of `selectivity_jax.models.vmap_conv` checks before routing a convolution
here.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import site
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import filelock
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from selectivity_jax.cpu import settings
from selectivity_jax.models.vmap_conv import is_flax_2d
from selectivity_jax.parallel import DATA_AXIS

SOURCE = Path(__file__).with_suffix(".cc")
HANDLERS = {"forward": "SelectivityJaxConvForward", "backward_data": "SelectivityJaxConvBackwardData",
            "backward_weights": "SelectivityJaxConvBackwardWeights"}
ONEDNN_LIBRARY = "libdnnl.so.3"
ONEDNN_HEADER = Path("oneapi", "dnnl", "dnnl.hpp")
COMPILE_TIMEOUT_S = 600

_ON_XLA: contextvars.ContextVar[bool] = contextvars.ContextVar("selectivity_jax_convolutions_on_xla", default=False)


class ConvAttributes(NamedTuple):
    """The static attributes of one convolution, as the handlers take them."""
    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    groups: int


# ----------------------------------------------------------------------------------------------------------------------
# Building and loading the handlers.
# ----------------------------------------------------------------------------------------------------------------------

def onednn_prefix() -> Path | None:
    """The installation prefix holding oneDNN's library and headers (pip puts the packages' files under
    ``<prefix>/lib`` and ``<prefix>/include``): this environment's, or the user site's; None when neither has both."""
    for prefix in dict.fromkeys((sys.prefix, site.getuserbase())):
        root = Path(prefix)
        if (root / "lib" / ONEDNN_LIBRARY).exists() and (root / "include" / ONEDNN_HEADER).exists():
            return root
    return None


def cache_dir() -> Path:
    """Where the compiled handlers are kept (see module doc)."""
    if os.environ.get("SELECTIVITY_JAX_CACHE"):
        return Path(os.environ["SELECTIVITY_JAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "selectivity_jax"


def compile_command(prefix: Path, output: Path) -> list[str]:
    """The C++ compiler call that builds the handlers into ``output`` (compiler: ``$CXX`` or ``c++``)."""
    compiler = shlex.split(os.environ.get("CXX", "c++"))
    return [*compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{prefix / 'include'}",
            f"-I{jax.ffi.include_dir()}", str(SOURCE), f"-L{prefix / 'lib'}", f"-l:{ONEDNN_LIBRARY}",
            f"-Wl,-rpath,{prefix / 'lib'}", "-o", str(output)]


def _library_path(prefix: Path) -> Path:
    """The cached build for this source, jaxlib and oneDNN (a change of any of them builds anew)."""
    library = prefix / "lib" / ONEDNN_LIBRARY
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), jaxlib.__version__.encode(), str(library).encode(),
                                     str(library.stat().st_size).encode()])).hexdigest()[:16]
    return cache_dir() / f"onednn_conv-{key}.so"


def _build(prefix: Path, target: Path) -> None:
    """Compiles the handlers into ``target``: into a temporary file beside it, renamed when complete, under a lock
    (parallel processes build once; an interrupted build leaves no partial library)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target) + ".lock"):
        if target.exists():
            return
        handle, partial = tempfile.mkstemp(prefix=target.name + ".", suffix=".partial", dir=target.parent)
        os.close(handle)
        try:
            done = subprocess.run(compile_command(prefix, Path(partial)), capture_output=True, text=True,
                                  timeout=COMPILE_TIMEOUT_S)
            if done.returncode:
                raise RuntimeError(f"compiling {SOURCE.name} failed: {done.stderr.strip()[-2000:]}")
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.remove(partial)


@functools.lru_cache(maxsize=None)
def problem() -> str | None:
    """None once the handlers are built, loaded and registered with XLA:CPU (on first call); otherwise why not."""
    prefix = onednn_prefix()
    if prefix is None:
        return ("oneDNN is not installed (the pip packages onednn-cpu-gomp and onednn-devel-cpu-gomp, a dependency "
                "of the project on Linux x86-64)")
    compiler = shlex.split(os.environ.get("CXX", "c++"))[:1]
    if not compiler or shutil.which(compiler[0]) is None:
        return "no C++ compiler found ($CXX or c++) to build the oneDNN convolutions"
    target = _library_path(prefix)
    try:
        if not target.exists():
            _build(prefix, target)
        library = ctypes.CDLL(str(target))
        for name, symbol in HANDLERS.items():
            jax.ffi.register_ffi_target(f"selectivity_jax_conv_{name}", jax.ffi.pycapsule(getattr(library, symbol)),
                                        platform="cpu")
    except (OSError, RuntimeError, AttributeError, subprocess.TimeoutExpired) as error:
        return f"the oneDNN convolutions could not be built or loaded: {error}"
    return None


def available() -> bool:
    """Whether the oneDNN convolutions can run here (builds them on first call); warns once when they cannot."""
    reason = problem()
    if reason is not None:
        _warn_once(reason)
    return reason is None


def enabled() -> bool:
    """Whether single-model convolutions of CPU programs traced now run on oneDNN: with ``cpu_tuning='auto'``
    (`settings.choice`), outside `xla_convolutions`, where the handlers are available. Programs for other platforms
    never do (the hook in `selectivity_jax.models.vmap_conv`)."""
    return settings.choice() == "auto" and not _ON_XLA.get() and available()


@contextlib.contextmanager
def xla_convolutions() -> Iterator[None]:
    """While active (at trace time), convolutions run on XLA's kernels even under ``cpu_tuning='auto'``: for
    forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``), which the oneDNN calls do not
    define."""
    token = _ON_XLA.set(True)
    try:
        yield
    finally:
        _ON_XLA.reset(token)


@functools.lru_cache(maxsize=None)
def _warn_once(reason: str) -> None:
    warnings.warn(f"{reason}; convolutions run on XLA's CPU kernels (slower; results equal up to float32 rounding)",
                  RuntimeWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------------------------------
# The convolution.
# ----------------------------------------------------------------------------------------------------------------------

def _explicit_padding(lhs_shape: tuple[int, ...], rhs_shape: tuple[int, ...], strides: tuple[int, int],
                      padding: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        return tuple(tuple(p) for p in lax.padtype_to_pads(lhs_shape[1:3], rhs_shape[:2], strides, padding))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def supports(lhs: jax.Array, rhs: jax.Array, conv_kwargs: dict[str, Any]) -> bool:
    """Whether this ``lax.conv_general_dilated`` call (arguments as `conv_general_dilated` takes them) is one the
    handlers compute: float32, `is_flax_2d`, non-negative padding."""
    if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32 or not is_flax_2d(lhs, rhs, conv_kwargs):
        return False
    if conv_kwargs.get("preferred_element_type") not in (None, jnp.float32, np.float32):
        return False
    try:
        padding = _explicit_padding(lhs.shape, rhs.shape, tuple(conv_kwargs["window_strides"]), conv_kwargs["padding"])
    except (TypeError, ValueError):
        return False
    return min(min(p) for p in padding) >= 0


def _output_shape(lhs_shape: tuple[int, ...], rhs_shape: tuple[int, ...], attrs: ConvAttributes) -> tuple[int, ...]:
    n, h, w, _ = lhs_shape
    kh, kw, _, features = rhs_shape
    return (n, (h + attrs.pad_top + attrs.pad_bottom - kh) // attrs.stride_h + 1,
            (w + attrs.pad_left + attrs.pad_right - kw) // attrs.stride_w + 1, features)


def _call(handler: str, shape: tuple[int, ...], first: jax.Array, second: jax.Array, attrs: ConvAttributes,
          mesh: Mesh | None) -> jax.Array:
    """One handler on (first, second), whose result has the global ``shape``. With a ``mesh``, each device calls it on
    its slice of the batch: the output and the input's cotangent are split like the batch, the kernel's cotangent is
    summed over devices."""
    devices = 1 if mesh is None else mesh.size
    batch_result = handler != "backward_weights"
    local_shape = (shape[0] // devices, *shape[1:]) if batch_result else shape
    call = jax.ffi.ffi_call(f"selectivity_jax_conv_{handler}", jax.ShapeDtypeStruct(local_shape, jnp.float32),
                            vmap_method="sequential")
    attributes = {name: np.int64(value) for name, value in attrs._asdict().items()}
    if mesh is None:
        return call(first, second, **attributes)

    def per_device(first, second):
        result = call(first, second, **attributes)
        return result if batch_result else jax.lax.psum(result, DATA_AXIS)

    batch = P(DATA_AXIS)
    return jax.shard_map(per_device, mesh=mesh, in_specs=(batch, batch if handler == "backward_weights" else P()),
                         out_specs=batch if batch_result else P(), check_vma=False)(first, second)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(lhs: jax.Array, rhs: jax.Array, attrs: ConvAttributes, mesh: Mesh | None) -> jax.Array:
    return _call("forward", _output_shape(lhs.shape, rhs.shape, attrs), lhs, rhs, attrs, mesh)


def _conv_forward(lhs, rhs, attrs, mesh):
    return _conv(lhs, rhs, attrs, mesh), (lhs, rhs)


def _conv_backward(attrs, mesh, residuals, cotangent):
    lhs, rhs = residuals
    return (_call("backward_data", lhs.shape, cotangent, rhs, attrs, mesh),
            _call("backward_weights", rhs.shape, lhs, cotangent, attrs, mesh))


_conv.defvjp(_conv_forward, _conv_backward)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any,
                         feature_group_count: int = 1, *, mesh: Mesh | None = None, **unused: Any) -> jax.Array:
    """``lax.conv_general_dilated`` on oneDNN for a call `supports` accepts (its other arguments are the defaults
    `supports` requires): [N, H, W, C] x [KH, KW, C / groups, O] -> [N, H', W', O]; with a data ``mesh`` each device
    convolves its slice of the batch. RuntimeError where the handlers are not available (`problem`)."""
    if problem() is not None:
        raise RuntimeError(problem())
    strides = tuple(int(s) for s in window_strides)
    pads = _explicit_padding(lhs.shape, rhs.shape, strides, padding)
    if rhs.shape[:2] == (1, 1) and strides != (1, 1):
        # a strided 1x1 convolution reads every s-th pixel: that subsample, convolved at stride 1 (oneDNN 3.2's
        # kernel gradient of strided 1x1 convolutions corrupts memory on some shapes, e.g. 64x64x4 -> 8 at batch 2)
        lhs = jnp.pad(lhs, ((0, 0), pads[0], pads[1], (0, 0)))[:, ::strides[0], ::strides[1], :]
        strides, pads = (1, 1), ((0, 0), (0, 0))
    attrs = ConvAttributes(strides[0], strides[1], pads[0][0], pads[0][1], pads[1][0], pads[1][1],
                           int(feature_group_count))
    if mesh is not None and (mesh.size == 1 or lhs.shape[0] % mesh.size):
        mesh = None  # one device, or a batch the mesh cannot split: XLA places the whole convolution
    return _conv(lhs, rhs, attrs, mesh)
