"""The CPU speed-ups, in one package that can be switched off or deleted: an XLA:CPU flag, glibc heap settings and
2-D convolutions on oneDNN (`settings`, `onednn_conv` and its C++ source).

Importing it (or the library) changes nothing. The project's commands apply their config's ``cpu_tuning`` (default
``'auto'``) with `use_config` before JAX starts; in a notebook or your own script, call `enable` before JAX computes
anything. What ``'auto'`` does and costs is in `settings` (about 2.5x faster ResNet20 training on CPU; results
equal to XLA's up to float32 rounding; the heap keeps its peak size while the process lives).

The rest of the library reaches this package through one hook, in `selectivity_jax.models.vmap_conv`: a CPU
program's convolution asks `convolution` for the oneDNN result. Without this package the library runs XLA's kernels.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh

from selectivity_jax.cpu import onednn_conv
from selectivity_jax.cpu.onednn_conv import xla_convolutions
from selectivity_jax.cpu.settings import CHOICES, choice, in_force, use, use_config

__all__ = ["CHOICES", "choice", "convolution", "convolution_kernels", "enable", "in_force", "use", "use_config",
           "xla_convolutions"]


def enable() -> None:
    """Applies ``'auto'`` (`settings.use`): call it before JAX computes anything, e.g. first in a notebook."""
    use("auto")


def convolution(lhs: jax.Array, rhs: jax.Array, conv_kwargs: dict[str, Any], mesh: Mesh | None) -> jax.Array | None:
    """The hook's entry, for CPU programs: ``lax.conv_general_dilated(lhs, rhs, **conv_kwargs)`` on oneDNN (each
    device of a data ``mesh`` on its slice of the batch) where the settings send it there (``'auto'``, outside
    `xla_convolutions`, a convolution `onednn_conv.supports`, handlers built); None where XLA runs it."""
    if not (onednn_conv.supports(lhs, rhs, conv_kwargs) and onednn_conv.enabled()):
        return None
    return onednn_conv.conv_general_dilated(lhs, rhs, mesh=mesh, **conv_kwargs)


def convolution_kernels() -> str:
    """``'onednn'`` or ``'xla'``: whose kernels run the float32 convolutions of a single model in CPU programs traced
    now (for results and benchmarks)."""
    return "onednn" if onednn_conv.enabled() else "xla"
