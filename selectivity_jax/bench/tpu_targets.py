"""TPU slices (and an H100) by the names users rent them under, as topologies XLA compiles for without the device.

``libtpu`` (``pip install -e '.[tpu]'``, i.e. ``jax[tpu]`` of the installed jax) holds XLA's TPU compiler; with it
``jax.experimental.topologies.get_topology_desc`` describes a slice's devices on any host, CPU-only ones included,
and ``jax.jit(f).lower(...).compile()`` on shapes sharded over them gives the real TPU executable: its memory
analysis, its cost analysis, and the compiler's own error when the program does not fit (MaxText's
``train_compile.py`` works this way).

HBM per device is Google Cloud's published figure per chip; where the topology lists both TensorCores of a chip as
devices (v2, v3, v4), each device gets half.

``h100``: XLA's GPU compiler also compiles without a GPU, from a description of the device (``GpuTargetConfig``:
NVIDIA's published H100 SXM figures below). It needs the CUDA PJRT plugin of the installed jax
(``pip install jax-cuda12-pjrt==<jax> jax-cuda12-plugin==<jax>``, about 180 MB, no NVIDIA libraries), best in a
virtual environment of its own: with the plugin installed, every JAX start on a CPU host logs that it found no GPU.
Without CUDA's libraries the plugin registers only while JAX runs on the CPU alone (``JAX_PLATFORMS=cpu``, which the
compile check sets for a GPU target). XLA gives no cost analysis for such GPU programs (memory only).
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
GPU_INSTALL_HINT = ("pip install jax-cuda12-pjrt==<installed jax> jax-cuda12-plugin==<installed jax> (no NVIDIA "
                    "libraries needed; best in a virtual environment of its own)")

# NVIDIA H100 SXM (80 GB HBM3) as XLA's GpuTargetConfig describes a device: 132 SMs of 128 FP32 units at 1.98 GHz,
# compute capability 9.0, 3.35 TB/s, 50 MiB L2, 228 KiB shared memory per SM; CUDA 12.8, cuDNN 9.7.
H100_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000 l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: 84929347584 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 minor: 0 }
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 7 }
runtime_version { major: 12 minor: 8 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""


@dataclasses.dataclass(frozen=True)
class Target:
    """A TPU slice (or a GPU): ``name`` as rented (``'v5e-1'``: Colab's TPU), its topology, memory per device."""
    name: str
    topology: str
    hbm_bytes: int
    chips_per_host_bounds: tuple[int, int, int] | None = None  # slices smaller than one host need them
    platform: str = "tpu"                                      # or 'cuda'
    target_config: str = ""                                    # a GPU's GpuTargetConfig (text format)


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
    Target("h100", "1x1x1", 84929347584, platform="cuda", target_config=H100_TARGET_CONFIG),
)}


def libtpu_installed() -> bool:
    """Whether XLA's TPU compiler (the ``libtpu`` package) is installed."""
    return importlib.util.find_spec("libtpu") is not None


def cuda_plugin_installed() -> bool:
    """Whether XLA's GPU compiler (the CUDA PJRT plugin of jax) is installed."""
    return importlib.util.find_spec("jax_plugins.xla_cuda12") is not None


def check_target(name: str) -> Target:
    """The `Target` called ``name``; ValueError naming the known ones, or saying how to install its compiler."""
    if name not in TARGETS:
        raise ValueError(f"unknown TPU target {name!r}; known: {', '.join(TARGETS)}")
    target = TARGETS[name]
    if target.platform == "tpu" and not libtpu_installed():
        raise ValueError(f"compiling for a TPU needs libtpu, which is not installed: {INSTALL_HINT}")
    if target.platform == "cuda" and not cuda_plugin_installed():
        raise ValueError(f"compiling for {name} needs the CUDA PJRT plugin, which is not installed: {GPU_INSTALL_HINT}")
    return target


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
            said = captured.read().decode(errors="replace")[-1000:]
            raise ValueError(f"the compiler could not describe the target: {error} (it said: {said})") from error
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def target_mesh(target: Target) -> Mesh:
    """A 1-D ``'data'`` mesh (Auto axes, as `selectivity_jax.parallel.make_data_mesh`) over ``target``'s devices,
    described by libtpu on this host: programs sharded over it compile for that TPU slice."""
    from jax.experimental import topologies

    if target.platform == "cuda":
        topology = _quietly(topologies.get_topology_desc, platform="cuda", target_config=target.target_config,
                            topology=target.topology)
    else:
        kwargs = {} if target.chips_per_host_bounds is None else {"chips_per_host_bounds": target.chips_per_host_bounds}
        topology = _quietly(topologies.get_topology_desc, topology_name=target.topology, platform="tpu", **kwargs)
    devices = topology.devices
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)
