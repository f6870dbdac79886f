"""Device mesh and shardings for data-parallel training (one mesh axis, ``'data'``).

The mesh uses Auto axes: ``jax.jit`` with `NamedSharding` inputs then gives global-batch semantics to the loss, the
selectivity term and BatchNorm statistics (the compiler inserts the reductions), with no hand-written collectives.
The batch is sharded over ``'data'``; parameters, optimizer state and the (small) training set are replicated.
"""

from __future__ import annotations


import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed(enabled: bool) -> None:
    """Starts the JAX multi-controller runtime (TPU pods, GPU clusters) when ``enabled``; idempotent."""
    if enabled and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def make_data_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D Auto mesh over the first ``num_devices`` devices (0 = all, across all processes)."""
    devices = jax.devices()
    if num_devices < 0 or num_devices > len(devices):
        raise ValueError(f"num_devices={num_devices} but {len(devices)} devices are visible")
    devices = devices[:num_devices] if num_devices else devices
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def dividing_device_count(*batch_sizes: int) -> int:
    """The most devices (up to all) that split every one of ``batch_sizes`` evenly, for ``config.num_devices`` on
    machines whose device count does not divide the batch (e.g. 5 of a TPU v2-8's 8 cores for batch 100)."""
    return max(d for d in range(1, jax.device_count() + 1) if all(size % d == 0 for size in batch_sizes))


def mesh_platform(mesh: Mesh) -> str:
    """The platform (``'cpu'``, ``'gpu'``, ``'tpu'``) of ``mesh``'s devices: what a program sharded over it is compiled
    for, and so what decides everything platform-specific (convolution strategy and kernels, steps per call). A TPU
    topology's devices on a CPU host (ahead-of-time compilation) give ``'tpu'``."""
    return mesh.devices.flat[0].platform


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Sharding that splits axis ``batch_axis`` over the ``'data'`` mesh axis."""
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, num_examples: int | None = None, what: str = "batch_size") -> None:
    """One-line errors for batch sizes the mesh cannot split or the data cannot fill."""
    devices = mesh.devices.size
    if batch_size <= 0 or batch_size % devices:
        raise ValueError(f"{what}={batch_size} is not divisible by the {devices} devices of the mesh; "
                         f"use a multiple of {devices}")
    if num_examples is not None and num_examples < batch_size:
        raise ValueError(f"{what}={batch_size} is larger than the {num_examples} training examples; "
                         f"lower it or use more data")
