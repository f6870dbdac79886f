"""TPU slices by the names users rent them under, as topologies XLA compiles for without a TPU.

``libtpu`` (``pip install -e '.[tpu]'``, i.e. ``jax[tpu]`` of the installed jax) holds XLA's TPU compiler; with it
``jax.experimental.topologies.get_topology_desc`` describes a slice's devices on any host, CPU-only ones included,
and ``jax.jit(f).lower(...).compile()`` on shapes sharded over them gives the real TPU executable: its memory
analysis, its cost analysis, and the compiler's own error when the program does not fit (MaxText's
``train_compile.py`` works this way).

HBM per device is Google Cloud's published figure per chip; where the topology lists both TensorCores of a chip as
devices (v2, v3, v4), each device gets half.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tempfile

import jax
from jax.sharding import AxisType, Mesh

from selectivity_jax.parallel import DATA_AXIS

GIB = 1 << 30
INSTALL_HINT = "pip install -e '.[tpu]' (jax[tpu] of the installed jax, which brings the matching libtpu)"


@dataclasses.dataclass(frozen=True)
class Target:
    """A TPU slice: ``name`` as rented (``'v5e-1'``: Colab's TPU), its topology for libtpu, HBM per device."""
    name: str
    topology: str
    hbm_bytes: int
    chips_per_host_bounds: tuple[int, int, int] | None = None  # slices smaller than one host need them


TARGETS: dict[str, Target] = {target.name: target for target in (
    Target("v2-8", "v2:2x2", 8 * GIB),
    Target("v3-8", "v3:2x2", 16 * GIB),
    Target("v4-8", "v4:2x2x1", 16 * GIB),
    Target("v5e-1", "v5e:1x1", 16 * GIB, (1, 1, 1)),
    Target("v5e-4", "v5e:2x2", 16 * GIB),
    Target("v5e-8", "v5e:2x4", 16 * GIB),
    Target("v5p-8", "v5p:2x2x1", 95 * GIB),
    Target("v6e-1", "v6e:1x1", 32 * GIB, (1, 1, 1)),
    Target("v6e-4", "v6e:2x2", 32 * GIB),
    Target("v6e-8", "v6e:2x4", 32 * GIB),
)}


def libtpu_installed() -> bool:
    """Whether XLA's TPU compiler (the ``libtpu`` package) is installed."""
    return importlib.util.find_spec("libtpu") is not None


def check_target(name: str) -> Target:
    """The `Target` called ``name``; ValueError naming the known ones, or saying how to install libtpu."""
    if name not in TARGETS:
        raise ValueError(f"unknown TPU target {name!r}; known: {', '.join(TARGETS)}")
    if not libtpu_installed():
        raise ValueError(f"compiling for a TPU needs libtpu, which is not installed: {INSTALL_HINT}")
    return TARGETS[name]


def _quietly(fn, *args, **kwargs):
    """``fn(...)`` with file descriptor 2 sent to a temporary file: libtpu warns there that it runs on no TPU host
    (no accelerator type, no worker hostnames), which is expected here; the text is kept in an error's message."""
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            captured.seek(0)
            raise RuntimeError(f"{error} (libtpu said: {captured.read().decode(errors='replace')[-1000:]})") from error
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def target_mesh(target: Target) -> Mesh:
    """A 1-D ``'data'`` mesh (Auto axes, as `selectivity_jax.parallel.make_data_mesh`) over ``target``'s devices,
    described by libtpu on this host: programs sharded over it compile for that TPU slice."""
    from jax.experimental import topologies

    kwargs = {} if target.chips_per_host_bounds is None else {"chips_per_host_bounds": target.chips_per_host_bounds}
    topology = _quietly(topologies.get_topology_desc, topology_name=target.topology, platform="tpu", **kwargs)
    devices = topology.devices
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)
