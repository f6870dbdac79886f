"""The CPU settings: ``'auto'`` (the project's commands' default, ``config.cpu_tuning``) or ``'off'`` (the library's
default: nothing changed).

Nothing here acts at import. The commands apply their config's choice with `use_config` before JAX starts; a user of
the library asks for it with ``selectivity_jax.cpu.enable()`` (= ``use('auto')``) before JAX computes anything.

``'auto'`` does three things, each measured on ResNet20 (CIFAR-10 shapes, batch 128, float32, 2-core AMD EPYC;
docs/speed.md):

1. convolutions of CPU programs run on oneDNN (`selectivity_jax.cpu.onednn_conv`; this module records the choice,
   `choice`, and the models read it when they are traced);
2. on a host whose work runs on the CPU (no GPU or TPU device file, ``JAX_PLATFORMS`` not naming another platform
   first), the process's heap keeps the memory it frees (glibc's malloc, Linux): one arena for all threads, buffers
   up to `HEAP_KEEP_BYTES` from the heap and not trimmed back. With glibc's defaults every XLA:CPU execution maps its
   large temporary buffers afresh and the kernel zeroes each page on first touch: a third of a ResNet20 train step
   went to page faults (``perf``). The cost: the heap then stays at its peak size while the process lives;
3. an XLA:CPU flag (below) for the convolutions oneDNN does not take (other dtypes, the ``'grouped'`` and
   ``'im2col'`` vmap strategies, machines without oneDNN).

XLA:CPU (jaxlib 0.10) sends most convolutions to YNNPACK fusions and leaves the others to Eigen. Measured on
ResNet20 with XLA's convolutions, Eigen's are faster at every layer shape of the network, forward and backward, and
the whole train step runs about 1.4x as fast when YNNPACK keeps only the elementwise fusions:

    --xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_ELTWISE

The flag chooses kernels, not the computation: results differ from XLA's defaults only by float32 rounding (the order
of sums), as tests/test_cpu.py checks for the forward pass, the gradients and training steps. It names ``xla_cpu``
options only, so GPU and TPU programs are unaffected. XLA aborts the process on a flag it does not know, so
``'auto'`` sets the flag only where the installed jaxlib defines it: from 0.8.1 on (checked in the released wheels)
and while its library still holds the flag's name (a later release may rename an experimental flag).

XLA reads ``XLA_FLAGS`` once, when JAX starts its first backend, and threads keep the heap arena they started with,
so the flag and the heap settings act only before JAX starts (the convolutions follow `use` at any time); ``'off'``
in a process where JAX already runs with the flag is refused with the way out. The project never touches a choice of
YNNPACK fusions the user wrote into ``XLA_FLAGS`` (nor ``'off'`` removes it). Other formulations were measured and
not kept (docs/speed.md): im2col convolutions, space-to-depth strided convolutions, hand-written kernel
gradients and BatchNorm backward, bfloat16, other XLA:CPU flags, oneDNN's OpenMP threads sleeping instead of
spinning between calls.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import mmap
import os
import platform
import shlex
from typing import Any

import jaxlib

CHOICES = ("auto", "off")
_choice = "off"  # the choice `use` last applied; the convolutions follow it when a model is traced

# glibc's mallopt(3) parameters, and the values of 'auto' and of 'off'. glibc starts at 128 KiB thresholds and raises
# them as large buffers are freed, up to 32 MiB (mmap) and 64 MiB (trim) on 64-bit; mallopt cannot restore that
# adaptation, so 'off' after 'auto' sets the values it reaches (arena count 0: glibc's own rule).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
HEAP_KEEP_BYTES = 1 << 30  # buffers up to 1 GiB come from the heap, and up to 1 GiB of free memory stays in it
TUNED_HEAP = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, HEAP_KEEP_BYTES), (M_TRIM_THRESHOLD, HEAP_KEEP_BYTES))
DEFAULT_HEAP = ((M_ARENA_MAX, 0), (M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 64 << 20))
_heap_tuned = False
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
TUNED_FLAGS = (f"{YNN_FUSION_FLAG}=LIBRARY_FUSION_TYPE_ELTWISE",)
FIRST_JAXLIB_WITH_FLAGS = (0, 8, 1)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


@functools.lru_cache(maxsize=None)
def installed_jaxlib_defines(flag: str) -> bool:
    """Whether one of the installed jaxlib's shared libraries holds the name of XLA flag ``flag`` (``--name=...``):
    the flag definitions are compiled in, so a renamed or removed flag is absent (about 20 ms, once)."""
    name = flag.split("=", 1)[0].lstrip("-").encode()
    libraries = sorted(glob.glob(os.path.join(os.path.dirname(jaxlib.__file__), "*.so")), key=os.path.getsize,
                       reverse=True)
    for path in libraries:
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if data.find(name) >= 0:
                    return True
        except (OSError, ValueError):  # unreadable or empty: look in the others
            continue
    return False


def tuned_flags(jaxlib_version: str | None = None) -> tuple[str, ...]:
    """The XLA flags of ``'auto'`` for ``jaxlib_version`` (default: the installed jaxlib, whose libraries must also
    define them); () before jaxlib 0.8.1."""
    if _version_tuple(jaxlib_version or jaxlib.__version__) < FIRST_JAXLIB_WITH_FLAGS:
        return ()
    if jaxlib_version is None and not all(installed_jaxlib_defines(flag) for flag in TUNED_FLAGS):
        return ()
    return TUNED_FLAGS


def _user_chose_ynn(tokens: list[str]) -> bool:
    """True when ``XLA_FLAGS`` chooses YNNPACK's fusions with a value other than the project's."""
    return any(t.startswith(YNN_FUSION_FLAG) and t not in TUNED_FLAGS for t in tokens)


def flags_for(choice: str, xla_flags: str, jaxlib_version: str | None = None) -> str:
    """``xla_flags`` (an ``XLA_FLAGS`` value) with the project's flags added (``'auto'``) or removed (``'off'``);
    a YNNPACK fusion choice of the user's stays as it is."""
    if choice not in CHOICES:
        raise ValueError(f"cpu_tuning={choice!r} (expected one of {list(CHOICES)})")
    tokens = [t for t in shlex.split(xla_flags) if t not in TUNED_FLAGS]
    if choice == "auto" and not _user_chose_ynn(tokens):
        tokens += tuned_flags(jaxlib_version)
    return " ".join(tokens)


def in_force(xla_flags: str | None = None) -> str:
    """What ``XLA_FLAGS`` (default: this process's) sets: ``'auto'`` (the project's flags), ``'off'`` (XLA's
    defaults) or ``'user'`` (the user's own choice of YNNPACK fusions)."""
    tokens = shlex.split(os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags)
    if _user_chose_ynn(tokens):
        return "user"
    return "auto" if all(flag in tokens for flag in TUNED_FLAGS) and tuned_flags() else "off"


@functools.lru_cache(maxsize=None)
def _glibc() -> Any:
    """glibc (for mallopt), or None elsewhere (macOS, musl)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def heap_tunable() -> bool:
    """Whether this process's heap takes the settings of 'auto' (glibc's malloc)."""
    return _glibc() is not None


def _set_heap(tuned: bool) -> None:
    """Applies the heap settings of 'auto' (``tuned``) or of 'off' (glibc's adapted defaults), where they are not in
    force already."""
    global _heap_tuned
    if heap_tunable() and tuned != _heap_tuned:
        for parameter, value in TUNED_HEAP if tuned else DEFAULT_HEAP:
            _glibc().mallopt(parameter, value)
        _heap_tuned = tuned


def backends_started() -> bool:
    """Whether JAX has started a backend in this process (after which XLA_FLAGS is read and fixed)."""
    from jax._src import xla_bridge  # JAX has no public query; the private one has kept this name since 0.4

    return xla_bridge.backends_are_initialized()


def choice() -> str:
    """The choice `use` last applied (``'off'`` until then): whether models traced from now on run their CPU
    convolutions on oneDNN (``'auto'``) or on XLA (``'off'``)."""
    return _choice


def accelerator_host() -> bool:
    """Whether this host's work runs on an accelerator, told without starting JAX: ``JAX_PLATFORMS`` names another
    platform first, or a GPU (``/dev/nvidia0``...) or TPU (``/dev/accel0``..., ``/dev/vfio/0``...) device file
    exists. The heap setting is kept for hosts where it was measured to help: CPU ones."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() != "cpu"
    return any(glob.glob(pattern) for pattern in ("/dev/nvidia[0-9]*", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*"))


def use(choice: str) -> None:
    """Applies ``choice`` (``'auto'`` or ``'off'``): to this process's ``XLA_FLAGS`` and heap, which acts before JAX
    computes anything, and to the convolutions of models traced from now on. Once JAX has started, ``'auto'`` keeps
    the flags and heap in force, and ``'off'`` raises ValueError unless XLA's defaults are in force already (it then
    restores glibc's heap thresholds)."""
    global _choice
    current = os.environ.get("XLA_FLAGS", "")
    wanted = flags_for(choice, current)
    started = backends_started()
    if wanted != " ".join(shlex.split(current)) and started and choice == "off":
        raise ValueError(
            f"cpu_tuning='off' cannot act: JAX has already started in this process with XLA_FLAGS={current!r} "
            f"(the project's tuning); call selectivity_jax.cpu.use('off') before JAX computes anything, "
            f"or run the command in a fresh process")
    if not started and wanted != " ".join(shlex.split(current)):
        os.environ["XLA_FLAGS"] = wanted
    if not started or choice == "off":  # glibc's thresholds act at once; 'auto' after the start keeps the heap
        _set_heap(choice == "auto" and not accelerator_host())
    _choice = choice


def use_config(config: Any) -> None:
    """`use` with a command's config's ``cpu_tuning`` (a config without the field: ``'auto'``, the commands'
    default)."""
    use(config.get("cpu_tuning", "auto"))
