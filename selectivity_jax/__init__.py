"""selectivity_jax: class-selectivity measurement and regularization for JAX/Flax.

Leavitt & Morcos, "Selectivity considered harmful: evaluating the causal impact of class selectivity in DNNs",
ICLR 2021. The public API is re-exported here; see `selectivity_jax.selectivity` for the definition.

Importing the package applies the project's XLA:CPU settings when JAX has not started yet (`selectivity_jax.cpu_tuning`:
faster convolutions on CPU, results equal up to float32 rounding; ``cpu_tuning.use('off')`` before JAX computes
anything goes back to XLA's defaults).
"""

from selectivity_jax import cpu_tuning

cpu_tuning.use("auto")  # first: before any module below could start JAX

from selectivity_jax.capture import (  # noqa: E402
    ReLU,
    apply_with_activations,
    capture_activations,
    flatten_intermediates,
    is_relu_module,
    nnx_activations,
    strip_intermediates,
)
from selectivity_jax.selectivity import (  # noqa: E402
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
