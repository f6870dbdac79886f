"""The project's XLA:CPU settings, on by default: which kernels XLA runs on a CPU (the ``cpu_tuning`` config field).

XLA:CPU (jaxlib 0.10) sends most convolutions to YNNPACK fusions and leaves the others to Eigen. Measured on
ResNet20 (CIFAR-10 shapes, batch 128, float32, 2-core AMD EPYC), Eigen's convolutions are faster at every layer shape
of the network, forward and backward, and the whole train step runs about 1.4x as fast when YNNPACK keeps only the
elementwise fusions (the README's CPU table):

    --xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_ELTWISE

The flag chooses kernels, not the computation: results differ from XLA's defaults only by float32 rounding (the order
of sums), as tests/test_cpu_tuning.py checks for the forward pass, the gradients and training steps. It names
``xla_cpu`` options only, so GPU and TPU programs are unaffected. XLA aborts the process on a flag it does not know,
so ``'auto'`` sets the flag only where the installed jaxlib defines it: from 0.8.1 on (checked in the released wheels)
and while its library still holds the flag's name (a later release may rename an experimental flag).

XLA reads ``XLA_FLAGS`` once, when JAX starts its first backend, so a choice acts only before that:

- ``import selectivity_jax`` applies ``'auto'`` when JAX has not started yet (notebooks and library users get it
  without asking);
- every command applies its config's ``cpu_tuning`` with `use` before it computes anything; ``'off'`` (XLA's own
  defaults) in a process where JAX already runs with the tuning is refused with the way out.

The project never touches a choice of YNNPACK fusions the user wrote into ``XLA_FLAGS`` (nor ``'off'`` removes it).
Other formulations were measured and not kept (the README's CPU section): im2col convolutions, space-to-depth
strided convolutions, hand-written kernel gradients and BatchNorm backward, bfloat16, other XLA:CPU flags.
"""

from __future__ import annotations

import functools
import glob
import mmap
import os
import shlex
from typing import Any

import jaxlib

CHOICES = ("auto", "off")
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
        raise ValueError(f"cpu_tuning must be one of {list(CHOICES)}; got {choice!r}")
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


def backends_started() -> bool:
    """Whether JAX has started a backend in this process (after which XLA_FLAGS is read and fixed)."""
    from jax._src import xla_bridge  # JAX has no public query; the private one has kept this name since 0.4

    return xla_bridge.backends_are_initialized()


def use(choice: str) -> None:
    """Applies ``choice`` (``'auto'`` or ``'off'``) to this process's ``XLA_FLAGS``; call it before JAX computes
    anything. Once JAX has started, ``'auto'`` keeps what is in force (it tunes where it still can) and ``'off'``
    raises ValueError unless XLA's defaults are in force already."""
    current = os.environ.get("XLA_FLAGS", "")
    wanted = flags_for(choice, current)
    if wanted == " ".join(shlex.split(current)):
        return
    if backends_started():
        if choice == "auto":
            return
        raise ValueError(
            f"cpu_tuning='off' cannot act: JAX has already started in this process with XLA_FLAGS={current!r} "
            f"(the project's tuning); call selectivity_jax.cpu_tuning.use('off') before JAX computes anything, "
            f"or run the command in a fresh process")
    os.environ["XLA_FLAGS"] = wanted


def use_config(config: Any) -> None:
    """`use` with a training config's ``cpu_tuning`` (a config stored before the field existed: ``'auto'``)."""
    use(config.get("cpu_tuning", "auto"))
