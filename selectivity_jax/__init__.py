"""selectivity_jax: class-selectivity measurement and regularization for JAX/Flax.

Leavitt & Morcos, "Selectivity considered harmful: evaluating the causal impact of class selectivity in DNNs",
ICLR 2021. The public API is re-exported here; see `selectivity_jax.selectivity` for the definition.

Importing the package, or any of its modules, changes nothing outside it: no environment variable, no allocator
setting, no convolution routing. The CPU speed-ups of the project's commands are one call away
(``selectivity_jax.cpu.enable()``, before JAX computes anything; see `selectivity_jax.cpu`).
"""

from selectivity_jax.capture import (
    ReLU,
    apply_with_activations,
    capture_activations,
    flatten_intermediates,
    is_relu_module,
    nnx_activations,
    strip_intermediates,
)
from selectivity_jax.selectivity import (
    SelectivityStats,
    class_sums_and_counts,
    network_selectivity,
    selectivity_fn,
    selectivity_from_class_stats,
    unit_responses,
)

__version__ = "0.1.0"

__all__ = [
    "ReLU",
    "SelectivityStats",
    "apply_with_activations",
    "capture_activations",
    "class_sums_and_counts",
    "flatten_intermediates",
    "is_relu_module",
    "network_selectivity",
    "nnx_activations",
    "selectivity_fn",
    "selectivity_from_class_stats",
    "strip_intermediates",
    "unit_responses",
]
