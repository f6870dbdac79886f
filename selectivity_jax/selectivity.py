"""Class selectivity index (Leavitt & Morcos, ICLR 2021, Sec. 2.2 "Class selectivity index").

For a unit ``u`` (a dense unit, or a conv channel whose response is the spatial mean of its feature map) and the
post-ReLU responses ``a[n, u]`` of the samples ``n`` of a batch or data set:

- class-conditional mean ``mu[c, u]``: mean of ``a[n, u]`` over the samples of class ``c``, for the classes PRESENT;
- ``mu_max[u]``: the largest class mean; ``mu_rest[u]``: the arithmetic mean of the class means of the OTHER present
  classes (the mean of the other classes' means, not the mean over the other samples);
- ``SI[u] = (mu_max - mu_rest) / (mu_max + mu_rest + eps)``, ``eps = 1e-7`` by default.

A dead unit (all class means zero) gets 0; fewer than two present classes gives 0 for every unit. Values and
gradients are finite everywhere. Network selectivity is the mean over layers of the mean over that layer's units;
the regularized loss of the paper (Sec. 2.3) is ``cross_entropy - alpha * network_selectivity``.

Everything is computed from per-class sums and counts (a one-hot matmul over the batch, no loop over classes). The
sums are additive, which gives three things at once: streaming over a data set (`SelectivityStats`), exactness under
data parallelism (sums are reduced over a mapped axis with ``psum``, or by the compiler over a sharded batch), and
masking of padding rows (they get a zero one-hot row).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

Array = jax.Array
Activations = Mapping[str, Array]

DEFAULT_EPS = 1e-7


def unit_responses(activation: Array) -> Array:
    """[B, ..., U] -> [B, U] float32: averages every axis between batch and units (conv: spatial mean)."""
    activation = jnp.asarray(activation)
    if activation.ndim < 2:
        raise ValueError(
            f"activations must have a batch and a unit axis, [B, ..., U]; got shape {activation.shape}")
    activation = activation.astype(jnp.float32)
    if activation.ndim > 2:
        activation = jnp.mean(activation, axis=tuple(range(1, activation.ndim - 1)))
    return activation


def _replicated_out_sharding(x: Array) -> Any:
    """`out_sharding` for a contraction over the batch axis of ``x``.

    Under an Explicit mesh a batch-sharded contraction is ambiguous and raises ``ShardingTypeError`` unless the
    output sharding is given; the class sums are small, so we ask for them replicated. Elsewhere (Auto mesh, no mesh,
    inside ``shard_map``) the compiler decides and we pass nothing.
    """
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or spec is None or getattr(mesh, "empty", True):
        return None
    explicit = {name for name, kind in zip(mesh.axis_names, mesh.axis_types)
                if kind == jax.sharding.AxisType.Explicit}
    batch_axes = spec[0] if len(spec) else None
    if batch_axes is None:
        return None
    batch_axes = batch_axes if isinstance(batch_axes, tuple) else (batch_axes,)
    if not explicit.intersection(batch_axes):
        return None
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def class_sums_and_counts(
    responses: Array,
    labels: Array,
    num_classes: int,
    mask: Array | None = None,
    axis_name: Any = None,
) -> tuple[Array, Array]:
    """Per-class sums of unit responses and per-class sample counts.

    Args:
      responses: [B, U] float unit responses (see `unit_responses`).
      labels: int [B] class labels in [0, num_classes).
      num_classes: C.
      mask: optional bool/float [B]; rows with 0 (padding) are left out.
      axis_name: mapped axis (``shard_map``/``pmap``) over which sums and counts are ``psum``-reduced.

    Returns:
      sums [C, U] float32 and counts [C] float32.
    """
    labels = jnp.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != responses.shape[0]:
        raise ValueError(
            f"labels must have shape [B] = [{responses.shape[0]}]; got {labels.shape}")
    weights = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [B, C]
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != labels.shape:
            raise ValueError(f"mask must have shape [B] = {labels.shape}; got {mask.shape}")
        weights = weights * mask.astype(jnp.float32)[:, None]
    sums = jnp.einsum("bc,bu->cu", weights, responses, precision=jax.lax.Precision.HIGHEST,
                      out_sharding=_replicated_out_sharding(responses))
    counts = jnp.sum(weights, axis=0)
    if axis_name is not None:
        sums, counts = jax.lax.psum((sums, counts), axis_name)
    return sums, counts


def selectivity_from_class_stats(sums: Array, counts: Array, eps: float = DEFAULT_EPS) -> Array:
    """Per-unit selectivity index from class sums [C, U] and counts [C] -> SI [U] (Leavitt & Morcos, Sec. 2.2)."""
    present = counts > 0                                                   # [C]
    num_present = jnp.sum(present)
    means = sums / jnp.maximum(counts, 1.0)[:, None]                       # [C, U]; absent classes -> 0
    mu_max = jnp.max(jnp.where(present[:, None], means, -jnp.inf), axis=0)
    mu_max = jnp.where(num_present > 0, mu_max, 0.0)
    others_sum = jnp.sum(jnp.where(present[:, None], means, 0.0), axis=0) - mu_max
    mu_rest = others_sum / jnp.maximum(num_present - 1, 1).astype(means.dtype)
    # Dead units (every class mean zero) and < 2 present classes give 0; the double `where` keeps the gradient of the
    # unused branch finite (a 0/eps quotient would have a 1/eps derivative).
    dead = jnp.all(jnp.where(present[:, None], means == 0, True), axis=0)
    undefined = dead | (num_present < 2)
    denominator = mu_max + mu_rest + eps
    safe_denominator = jnp.where(undefined | (denominator == 0), 1.0, denominator)
    return jnp.where(undefined, 0.0, (mu_max - mu_rest) / safe_denominator)


def network_selectivity(per_unit: Mapping[str, Array]) -> Array:
    """Mean over layers of the mean over each layer's units: dict name -> SI [U] -> scalar."""
    if not per_unit:
        raise ValueError("no layers to average: the activations dict is empty")
    return jnp.mean(jnp.stack([jnp.mean(si) for si in per_unit.values()]))


def _flat_responses(activations: Activations) -> tuple[list[str], list[int], Array]:
    """Concatenates the unit responses of all layers: ([names], [units per layer], [B, sum U])."""
    if not isinstance(activations, Mapping) or not activations:
        raise ValueError("activations must be a non-empty dict name -> array [B, ..., U]")
    names = list(activations)
    responses = [unit_responses(activations[name]) for name in names]
    batch = {r.shape[0] for r in responses}
    if len(batch) != 1:
        raise ValueError(f"all activations must share the batch size; got {dict(zip(names, batch))}")
    return names, [r.shape[1] for r in responses], jnp.concatenate(responses, axis=1)


def _split_units(names: list[str], units: list[int], flat: Array) -> dict[str, Array]:
    out, start = {}, 0
    for name, size in zip(names, units):
        out[name] = flat[..., start:start + size]
        start += size
    return out


def _input_problems(activations: Activations, labels: Array, num_classes: int,
                    mask: Array | None) -> list[tuple[Array, str]]:
    """(condition that must hold, what is wrong otherwise) for the array inputs of `selectivity_fn`: labels are whole
    numbers in [0, num_classes) on the rows that count (mask != 0), responses are non-negative (post-ReLU)."""
    labels = jnp.asarray(labels)
    counted = jnp.ones(labels.shape, bool) if mask is None else jnp.asarray(mask) != 0
    problems = [(jnp.all(~counted | ((labels >= 0) & (labels < num_classes))),
                 f"labels must lie in [0, num_classes={num_classes})"),
                (jnp.all(~counted | (labels == jnp.round(labels))), "labels must be whole numbers (class indices)")]
    for name, activation in activations.items():
        problems.append((jnp.all(jnp.asarray(activation) >= 0),
                         f"activations[{name!r}] has negative values: the index is defined on post-ReLU responses "
                         "(non-negative); pass the ReLU's output"))
    return problems


def _check_num_classes(num_classes: Any) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")


def check_inputs(activations: Activations, labels: Array, num_classes: int, mask: Array | None = None, *,
                 checked: bool = False) -> None:
    """Raises ValueError for input the index is not defined on. ``num_classes`` is always checked; the arrays are
    checked when they hold values (eager calls). Under ``jit`` they are traced, and their values are checked only
    with ``checked=True``, through `jax.experimental.checkify` (run the function under ``checkify.checkify`` and
    ``err.throw()``); otherwise out-of-range labels count for no class and negative responses are used as they are."""
    _check_num_classes(num_classes)
    arrays = [labels, *activations.values()] + ([] if mask is None else [mask])
    traced = any(isinstance(x, jax.core.Tracer) for x in arrays)
    if traced and not checked:
        return
    for holds, message in _input_problems(activations, labels, num_classes, mask):
        if traced:
            checkify.check(holds, message)
        elif not bool(holds):
            raise ValueError(message)


def selectivity_fn(
    activations: Activations,
    labels: Array,
    num_classes: int,
    *,
    mask: Array | None = None,
    axis_name: Any = None,
    eps: float = DEFAULT_EPS,
    reduce: bool = True,
    checked: bool = False,
) -> Array | dict[str, Array]:
    """Class selectivity of a batch (Leavitt & Morcos, ICLR 2021, Sec. 2.2); pure, differentiable, jit-able.

    Args:
      activations: dict name -> post-ReLU array [B, ..., U]; axes between batch and units are averaged.
      labels: int [B].
      num_classes: number of classes C.
      mask: optional bool/float [B]; padding rows (0) are ignored.
      axis_name: when called inside ``shard_map``/``pmap``, the mapped batch axis: class sums and counts are reduced
        over it, so the result equals the single-device result on the global batch.
      eps: denominator stabilizer.
      reduce: True -> scalar network selectivity (mean over layers of mean over units); False -> dict name -> SI [U].
      checked: also check traced inputs under ``jit`` with `jax.experimental.checkify` (see `check_inputs`); eager
        calls are always checked: labels outside [0, C) or not whole, negative responses, C < 1 raise ValueError.
    """
    _check_num_classes(num_classes)
    names, units, responses = _flat_responses(activations)
    sums, counts = class_sums_and_counts(responses, labels, num_classes, mask=mask, axis_name=axis_name)
    check_inputs(activations, labels, num_classes, mask, checked=checked)  # values, once the shapes were checked
    per_unit = _split_units(names, units, selectivity_from_class_stats(sums, counts, eps))
    return network_selectivity(per_unit) if reduce else per_unit


@flax.struct.dataclass
class SelectivityStats:
    """Streaming class sums and counts over a data set: memory O(classes x units), independent of sample count.

    ``stats = SelectivityStats.create(first_batch_or_spec, num_classes)``; ``stats = stats.update(acts, labels)``
    (pure, jit-able); then ``per_unit()``, ``per_layer()``, ``mean()``. Folding batches of any sizes gives the same
    numbers as `selectivity_fn` on the concatenated data.
    """

    sums: dict[str, Array]          # name -> [C, U] float32 sums of unit responses per class
    counts: Array                   # [C] float32 samples per class
    eps: float = flax.struct.field(pytree_node=False, default=DEFAULT_EPS)

    @classmethod
    def create(cls, activations: Mapping[str, Any], num_classes: int, eps: float = DEFAULT_EPS) -> "SelectivityStats":
        """Empty stats shaped like ``activations`` (arrays or `jax.ShapeDtypeStruct`s [B, ..., U]; only U is used)."""
        if not isinstance(activations, Mapping) or not activations:
            raise ValueError("activations must be a non-empty dict name -> array or ShapeDtypeStruct [B, ..., U]")
        _check_num_classes(num_classes)
        sums = {}
        for name, spec in activations.items():
            shape = tuple(spec.shape)
            if len(shape) < 2:
                raise ValueError(f"activation {name!r} must be [B, ..., U]; got shape {shape}")
            sums[name] = jnp.zeros((num_classes, shape[-1]), jnp.float32)
        return cls(sums=sums, counts=jnp.zeros((num_classes,), jnp.float32), eps=eps)

    @property
    def num_classes(self) -> int:
        return self.counts.shape[0]

    def update(self, activations: Activations, labels: Array, mask: Array | None = None,
               axis_name: Any = None) -> "SelectivityStats":
        """Adds a batch: dict name -> [B, ..., U], labels int [B], optional mask [B]."""
        if set(activations) != set(self.sums):
            raise ValueError(f"activation names {sorted(activations)} differ from the stats' {sorted(self.sums)}")
        names, units, responses = _flat_responses({name: activations[name] for name in self.sums})
        sums, counts = class_sums_and_counts(responses, labels, self.num_classes, mask=mask, axis_name=axis_name)
        batch_sums = _split_units(names, units, sums)
        return self.replace(sums={name: self.sums[name] + batch_sums[name] for name in names},
                            counts=self.counts + counts)

    def merge(self, other: "SelectivityStats") -> "SelectivityStats":
        """Sum of two accumulators (e.g. from different hosts or data shards)."""
        return self.replace(sums=jax.tree.map(jnp.add, self.sums, other.sums), counts=self.counts + other.counts)

    def class_means(self) -> dict[str, Array]:
        """name -> [C, U] class-conditional mean responses (0 for absent classes)."""
        return {name: s / jnp.maximum(self.counts, 1.0)[:, None] for name, s in self.sums.items()}

    def per_unit(self) -> dict[str, Array]:
        """name -> SI [U]."""
        return {name: selectivity_from_class_stats(s, self.counts, self.eps) for name, s in self.sums.items()}

    def per_layer(self) -> dict[str, Array]:
        """name -> mean SI over the layer's units (scalar)."""
        return {name: jnp.mean(si) for name, si in self.per_unit().items()}

    def mean(self) -> Array:
        """Network selectivity: mean over layers of the per-layer mean (a 0-d array; ``float()`` it on the host)."""
        return network_selectivity(self.per_unit())

    def dead_fraction(self) -> dict[str, Array]:
        """name -> fraction of units whose class means are all zero over the data seen."""
        return {name: jnp.mean(jnp.all(s == 0, axis=0).astype(jnp.float32)) for name, s in self.sums.items()}
