"""2-D convolutions on oneDNN for XLA:CPU, under ``cpu_tuning='auto'`` (`selectivity_jax.cpu.settings`).

XLA:CPU runs convolutions on Eigen or YNNPACK; on the shapes of the papers' CIFAR ResNets the gradients of a
convolution take 1.1-2.4x as long there as on oneDNN, the library PyTorch's CPU convolutions use (measured per layer
and for the whole train step in docs/speed.md). This module runs a float32 NHWC/HWIO convolution (flax's
layout) as three XLA FFI custom calls into oneDNN (``onednn_conv.cc`` beside this file): the forward pass, the input's
cotangent (backward data) and the kernel's cotangent (backward weights), tied together by ``jax.custom_vjp``. They
compute the same convolution as ``lax.conv_general_dilated``, summed in another order: equal up to float32 rounding
(tests/test_onednn_conv.py, tests/test_cpu.py).

The handlers are compiled once per machine with the system's C++ compiler, against the oneDNN of the pip packages
``onednn-cpu-gomp`` and ``onednn-devel-cpu-gomp`` (a Linux x86-64 dependency of the project) and the XLA FFI headers
that ship with jaxlib, into the user's cache (``$XDG_CACHE_HOME/selectivity_jax`` or ``~/.cache/selectivity_jax``;
``SELECTIVITY_JAX_CACHE`` overrides it), under a name that hashes everything the build is made of (source, compiler
call and version, oneDNN's headers and library, jaxlib's FFI headers, the CPU). Where any of that is missing (another
OS or CPU architecture, no compiler), `problem` says what, one warning says it once, and convolutions stay on XLA.

Only this user's own build is loaded: the cache directory is created with mode 700, and the directory and the
library must belong to this user, be writable by no one else and not be symbolic links, and the library must have the
sha256 recorded beside it at its build (``<name>.sha256``). An entry someone else could have written is refused (the
warning, XLA); a library of this user's own that fails its sha256 or does not load is rebuilt once.

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
import platform
import shlex
import shutil
import site
import stat
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
# a process waits this long for another one's build (a compilation, then hashing and renaming)
LOCK_TIMEOUT_S = COMPILE_TIMEOUT_S + 120
DIGEST_SUFFIX = ".sha256"
CPUINFO = Path("/proc/cpuinfo")

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


def _compiler() -> list[str]:
    """The C++ compiler command: ``$CXX`` (split as a shell would) or ``c++``."""
    return shlex.split(os.environ.get("CXX", "c++"))


def compile_command(prefix: Path, output: Path) -> list[str]:
    """The C++ compiler call that builds the handlers into ``output`` (compiler: ``$CXX`` or ``c++``)."""
    return [*_compiler(), "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{prefix / 'include'}",
            f"-I{jax.ffi.include_dir()}", str(SOURCE), f"-L{prefix / 'lib'}", f"-l:{ONEDNN_LIBRARY}",
            f"-Wl,-rpath,{prefix / 'lib'}", "-o", str(output)]


# --- what a cached build is made of -----------------------------------------------------------------------------------

def _file_digest(path: Path) -> str:
    """The sha256 of a file's contents, in hex."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _tree_digest(root: Path) -> str:
    """The sha256 of the names and contents of the files under ``root``, in sorted order (the same tree, the same
    digest)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}\0{_file_digest(path)}\0".encode())
    return digest.hexdigest()


def _compiler_identity(compiler: tuple[str, ...]) -> str:
    """The compiler's resolved path and what its ``--version`` prints."""
    found = shutil.which(compiler[0])
    try:
        done = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=60, check=False)
        version = f"{done.returncode}\n{done.stdout}\n{done.stderr}"
    except (OSError, subprocess.SubprocessError) as error:
        version = f"--version failed: {type(error).__name__}"  # the build then fails and says why
    return f"{os.path.realpath(found) if found else compiler[0]}\n{version}"


def _cpu_identity() -> str:
    """The CPU architecture and, where ``CPUINFO`` is readable (Linux), the instruction-set flags it lists first."""
    flags = ""
    with contextlib.suppress(OSError), open(CPUINFO, encoding="utf-8", errors="replace") as file:
        line = next((line for line in file if line.startswith(("flags", "Features"))), "")
        flags = " ".join(sorted(set(line.partition(":")[2].split())))
    return f"{platform.machine()}\n{flags}"


@functools.cache
def _build_key(prefix: Path, compiler: tuple[str, ...], command: tuple[str, ...]) -> str:
    """A digest of everything that goes into the build, computed once per process: the source, the compiler call
    and the compiler's identity, oneDNN's headers and library, jaxlib's version and FFI headers, the CPU."""
    parts = [SOURCE.read_bytes(), "\0".join(command).encode(), _compiler_identity(compiler).encode(),
             _tree_digest(prefix / "include" / ONEDNN_HEADER.parent).encode(),
             _file_digest(prefix / "lib" / ONEDNN_LIBRARY).encode(), jaxlib.__version__.encode(),
             _tree_digest(Path(jax.ffi.include_dir())).encode(), _cpu_identity().encode()]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())  # fixed-size pieces: no two inputs run together alike
    return digest.hexdigest()


def _library_path(prefix: Path) -> Path:
    """The cached build of this source with this compiler, oneDNN, jaxlib and CPU (a change of any of them, see
    `_build_key`, builds anew)."""
    compiler = tuple(_compiler())
    command = tuple(compile_command(prefix, Path("onednn_conv.so")))  # where the output goes is no part of it
    return cache_dir() / f"onednn_conv-{_build_key(prefix, compiler, command)[:16]}.so"


def _digest_path(library: Path) -> Path:
    """Where the sha256 of ``library`` is recorded at its build."""
    return library.with_name(library.name + DIGEST_SUFFIX)


# --- a cache only this user can write ---------------------------------------------------------------------------------

class UnsafeCacheError(RuntimeError):
    """A cache entry that someone other than this user could have written: refused (never loaded, never rebuilt
    over)."""


def _current_uid() -> int:
    """The user that the cache directory and its files must belong to: this process's."""
    return os.getuid()


def _check_private(path: Path, kind: str) -> None:
    """Raises `UnsafeCacheError` unless ``path`` itself (a link is not followed) is a ``kind`` ('directory' or
    'file') of this user that neither its group nor others may write."""
    info = os.lstat(path)
    is_kind = stat.S_ISDIR if kind == "directory" else stat.S_ISREG
    if stat.S_ISLNK(info.st_mode):
        why = "is a symbolic link"
    elif info.st_uid != _current_uid():
        why = f"belongs to uid {info.st_uid}, not to this user (uid {_current_uid()})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        why = f"is writable by group or others (mode {stat.filemode(info.st_mode)})"
    elif not is_kind(info.st_mode):
        why = f"is not a {'directory' if kind == 'directory' else 'regular file'}"
    else:
        return
    raise UnsafeCacheError(f"refused the cache {kind} {path}: it {why}; remove it, or set SELECTIVITY_JAX_CACHE to a "
                           "directory that only you can write")


def _private_cache_dir() -> Path:
    """`cache_dir`, created with mode 700 where missing; `UnsafeCacheError` where someone else could write in it."""
    directory = cache_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(directory, "directory")
    return directory


def _verified(target: Path) -> str | None:
    """None when ``target`` has the sha256 recorded at its build; otherwise why not (it is then rebuilt). Raises
    `UnsafeCacheError` where the file or its record is not this user's alone (it is then refused)."""
    _check_private(target, "file")
    record = _digest_path(target)
    if not os.path.lexists(record):
        return f"{target} has no recorded sha256 ({record.name})"
    _check_private(record, "file")
    recorded, actual = record.read_text(encoding="ascii", errors="replace").strip(), _file_digest(target)
    return None if actual == recorded else f"{target} has sha256 {actual}, not the {recorded} recorded at its build"


# --- building and loading ---------------------------------------------------------------------------------------------

def _compile(prefix: Path, output: Path) -> None:
    """Runs `compile_command` into ``output``; RuntimeError with the compiler's message where it fails."""
    done = subprocess.run(compile_command(prefix, output), capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"compiling {SOURCE.name} failed: {done.stderr.strip()[-2000:]}")


def _temporary_beside(path: Path) -> str:
    """A new empty file (mode 600) in ``path``'s directory, to be renamed to ``path`` once complete."""
    handle, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    os.close(handle)
    return name


def _compile_and_record(prefix: Path, target: Path) -> None:
    """Compiles into a temporary file, records its sha256, then renames both into place (record first: a library
    at ``target`` always has its record); nothing partial is left behind."""
    partial, record = _temporary_beside(target), _temporary_beside(_digest_path(target))
    try:
        _compile(prefix, Path(partial))
        os.chmod(partial, 0o700)  # the linker creates the file under the umask, which may let the group write
        Path(record).write_text(_file_digest(Path(partial)) + "\n", encoding="ascii")
        os.replace(record, _digest_path(target))
        os.replace(partial, target)
    finally:
        for path in (partial, record):
            if os.path.exists(path):
                os.remove(path)


def _build(prefix: Path, target: Path, replace: bool = False) -> None:
    """Builds the handlers into ``target`` under a lock (parallel processes build once), unless it exists and not
    ``replace``. RuntimeError where another process holds the lock longer than a build may take."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = filelock.FileLock(str(target) + ".lock", timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except filelock.Timeout as error:
        raise RuntimeError(f"another process has held the build lock {lock.lock_file} for {LOCK_TIMEOUT_S:g} s, "
                           f"longer than a build may take ({COMPILE_TIMEOUT_S} s)") from error
    try:
        if replace or not os.path.lexists(target):
            _compile_and_record(prefix, target)
    finally:
        lock.release()


def _load(prefix: Path) -> ctypes.CDLL:
    """The handlers' library from the private cache: built where missing; rebuilt once where it fails its recorded
    sha256 or does not load (this user's own file: a build cut short, a damaged disk); `UnsafeCacheError` where
    someone else could have written it."""
    _private_cache_dir()
    target = _library_path(prefix)
    if not os.path.lexists(target):
        _build(prefix, target)
    why = _verified(target)
    if why is None:
        try:
            return ctypes.CDLL(str(target))
        except OSError as error:
            why = f"{target} does not load ({error})"
    _build(prefix, target, replace=True)
    why_again = _verified(target)
    if why_again is not None:
        raise RuntimeError(f"{why}; rebuilt, {why_again}")
    try:
        return ctypes.CDLL(str(target))
    except OSError as error:
        raise RuntimeError(f"{why}; rebuilt, it does not load either ({error})") from error


def _register(library: ctypes.CDLL) -> None:
    """Registers the library's handlers with XLA:CPU (XLA refuses other handlers under the same names later)."""
    for name, symbol in HANDLERS.items():
        jax.ffi.register_ffi_target(f"selectivity_jax_conv_{name}", jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")


@functools.lru_cache(maxsize=None)
def problem() -> str | None:
    """None once the handlers are built, loaded and registered with XLA:CPU (on first call); otherwise why not."""
    prefix = onednn_prefix()
    if prefix is None:
        return ("oneDNN is not installed (the pip packages onednn-cpu-gomp and onednn-devel-cpu-gomp, a dependency "
                "of the project on Linux x86-64)")
    compiler = _compiler()[:1]
    if not compiler or shutil.which(compiler[0]) is None:
        return "no C++ compiler found ($CXX or c++) to build the oneDNN convolutions"
    try:
        _register(_load(prefix))
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
