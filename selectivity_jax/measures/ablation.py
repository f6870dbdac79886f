"""Single-unit ablation (Morcos et al., "On the importance of single directions for generalization", ICLR 2018,
Sec. 2.3 and 3.3), as used by Leavitt & Morcos (ICLR 2021) to ask whether class-selective units matter.

Units of one layer are ablated cumulatively in three orders (decreasing class selectivity, increasing selectivity,
random) and test accuracy is measured after each count; separately, each unit is ablated alone and its accuracy drop
is correlated with its selectivity. Ablating unit u replaces its post-ReLU map, at every position, by

- ``'zero'``: 0 (Morcos et al.'s ablation), or
- ``'mean'``: the unit's mean response over the evaluation images (the spatial and sample mean of its map), which
  removes the unit's information while keeping its average drive to the next layer.

The ablation is applied inside the model's forward pass with `selectivity_jax.models.edit_layers`, so everything
after the layer sees it. Masks are evaluated a chunk at a time with ``jax.vmap``: one compilation for all masks,
shared by every run of the same model when ``logits_fn`` is a `jax.tree_util.Partial` such as
`TrainedRun.logits_fn`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

Array = jax.Array
LogitsFn = Callable[..., Array]   # logits_fn(images, edits={layer: fn}) -> logits [B, C], e.g. TrainedRun.logits

ORDERS = ("decreasing", "increasing", "random")
FILLS = ("zero", "mean")


def ablate_units(activation: Array, keep: Array, fill: Array) -> Array:
    """[B, ..., U] post-ReLU map with units where ``keep`` [U] is 0 replaced by ``fill`` [U] at every position."""
    keep = keep.astype(activation.dtype)
    return activation * keep + (1 - keep) * fill.astype(activation.dtype)


def ablation_orders(selectivity: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Unit indices [U] in the order they are ablated: by decreasing and increasing selectivity (ties by index) and
    a seeded random order."""
    selectivity = np.asarray(selectivity, np.float64)
    increasing = np.argsort(selectivity, kind="stable")
    decreasing = np.argsort(-selectivity, kind="stable")
    return {"decreasing": decreasing, "increasing": increasing,
            "random": np.random.default_rng(seed).permutation(len(selectivity))}


def cumulative_masks(order: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """float32 [len(counts), U] keep-masks: row i ablates the first ``counts[i]`` units of ``order``."""
    masks = np.ones((len(counts), len(order)), np.float32)
    for row, count in enumerate(counts):
        masks[row, order[:count]] = 0.0
    return masks


def accuracy_under_masks(logits_fn: LogitsFn, layer: str, masks: np.ndarray, images: np.ndarray,
                         labels: np.ndarray, *, fill: np.ndarray, batch_size: int = 250,
                         masks_per_call: int = 8) -> np.ndarray:
    """Accuracy [M] of the model on (images, labels) with ``layer``'s units ablated by each keep-mask of ``masks``
    [M, U] (0 = ablated, replaced by ``fill`` [U]). One jitted, vmapped function serves every mask and batch."""
    masks = np.asarray(masks, np.float32)
    fill = jnp.asarray(fill, jnp.float32)
    logits_fn = logits_fn if isinstance(logits_fn, jax.tree_util.Partial) else jax.tree_util.Partial(logits_fn)
    num_masks = len(masks)
    padded = -(-num_masks // masks_per_call) * masks_per_call
    masks = np.concatenate([masks, np.ones((padded - num_masks, masks.shape[1]), np.float32)])
    correct = np.zeros(padded)
    for start in range(0, len(labels), batch_size):
        batch, batch_labels = images[start:start + batch_size], labels[start:start + batch_size]
        valid = np.ones(batch_size, np.float32)
        if len(batch_labels) < batch_size:  # pad the last batch: one compilation
            valid[len(batch_labels):] = 0.0
            extra = batch_size - len(batch_labels)
            batch = np.concatenate([batch, np.repeat(batch[-1:], extra, axis=0)])
            batch_labels = np.concatenate([batch_labels, np.repeat(batch_labels[-1:], extra)])
        for chunk in range(0, padded, masks_per_call):
            correct[chunk:chunk + masks_per_call] += np.asarray(_correct_counts(
                logits_fn, masks[chunk:chunk + masks_per_call], fill, batch, batch_labels, valid, layer=layer))
    return correct[:num_masks] / len(labels)


@functools.partial(jax.jit, static_argnames=("layer",))
def _correct_counts(logits_fn: jax.tree_util.Partial, masks: Array, fill: Array, images: Array, labels: Array,
                    valid: Array, *, layer: str) -> Array:
    """Correct predictions [M] on one batch with ``layer`` ablated by each keep-mask of ``masks`` [M, U]."""
    def one_mask(keep):
        logits = logits_fn(images, edits={layer: lambda a: ablate_units(a, keep, fill)})
        return jnp.sum((jnp.argmax(logits, -1) == labels) * valid)
    return jax.vmap(one_mask)(masks)


def unit_fill(responses: np.ndarray, fill: str) -> np.ndarray:
    """The value [U] an ablated unit takes: zeros, or the mean of ``responses`` [N, U] over the data (``'mean'``)."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}; got {fill!r}")
    responses = np.asarray(responses, np.float64)
    return np.zeros(responses.shape[1], np.float32) if fill == "zero" else responses.mean(0).astype(np.float32)


def ablation_counts(num_units: int, num_points: int) -> list[int]:
    """About ``num_points`` evenly spaced unit counts from 0 to ``num_units`` (both included)."""
    return sorted({int(round(c)) for c in np.linspace(0, num_units, max(2, num_points))})


def layer_ablation(logits_fn: LogitsFn, layer: str, selectivity: np.ndarray, responses: np.ndarray,
                   images: np.ndarray, labels: np.ndarray, *, fill: str = "zero", num_points: int = 11,
                   single_units: bool = True, seed: int = 0, batch_size: int = 250,
                   masks_per_call: int = 8) -> dict[str, Any]:
    """The ablation analysis of one layer.

    Args:
      logits_fn: ``logits_fn(images, edits=...) -> logits [B, C]`` (e.g. `TrainedRun.logits`).
      layer: the post-ReLU point to ablate; selectivity: its per-unit class selectivity [U]; responses: its unit
        responses [N, U] on ``images`` (for ``fill='mean'``).
      images, labels: the evaluation data (uint8 or [0, 1] float, [N, H, W, C]; int [N]).

    Returns a JSON-able dict: ``counts``; accuracy after ablating that many units in each of `ORDERS`; with
    ``single_units``, the accuracy drop of each unit ablated alone and its Spearman and Pearson correlation with
    selectivity (a positive correlation means selective units matter more).
    """
    selectivity = np.asarray(selectivity, np.float64)
    num_units = len(selectivity)
    fill_values = unit_fill(responses, fill)
    counts = ablation_counts(num_units, num_points)
    orders = ablation_orders(selectivity, seed)
    masks = [cumulative_masks(orders[name], counts) for name in ORDERS]
    if single_units:
        masks.append(1.0 - np.eye(num_units, dtype=np.float32))
    accuracy = accuracy_under_masks(logits_fn, layer, np.concatenate(masks), images, labels, fill=fill_values,
                                    batch_size=batch_size, masks_per_call=masks_per_call)
    result: dict[str, Any] = {"layer": layer, "fill": fill, "num_units": num_units, "counts": counts,
                              "clean_accuracy": float(accuracy[0]), "num_examples": int(len(labels)),
                              "orders": {name: orders[name].tolist() for name in ORDERS}}
    for i, name in enumerate(ORDERS):
        result[f"accuracy_{name}"] = accuracy[i * len(counts):(i + 1) * len(counts)].tolist()
    if single_units:
        drops = accuracy[0] - accuracy[len(ORDERS) * len(counts):]
        result["single_unit_drop"] = drops.tolist()
        result.update(selectivity_drop_correlation(selectivity, drops))
    return result


def selectivity_drop_correlation(selectivity: np.ndarray, drops: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson correlation (with p-values) between unit selectivity [U] and the accuracy drop [U] of
    ablating each unit alone; NaN when either is constant."""
    selectivity, drops = np.asarray(selectivity, np.float64), np.asarray(drops, np.float64)
    if np.ptp(selectivity) == 0 or np.ptp(drops) == 0:
        return {"spearman": float("nan"), "spearman_p": float("nan"), "pearson": float("nan"),
                "pearson_p": float("nan")}
    spearman = stats.spearmanr(selectivity, drops)
    pearson = stats.pearsonr(selectivity, drops)
    return {"spearman": float(spearman.statistic), "spearman_p": float(spearman.pvalue),
            "pearson": float(pearson.statistic), "pearson_p": float(pearson.pvalue)}


def area_under_curve(counts: Sequence[int], accuracy: Sequence[float]) -> float:
    """Mean accuracy over the ablated fraction 0..1 (trapezoid rule): one number per order for sweep comparisons."""
    counts = np.asarray(counts, np.float64)
    return float(np.trapezoid(np.asarray(accuracy, np.float64), counts / counts[-1]))


def summarize_ablation(per_layer: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Across a run's layers: mean area under each order's curve and mean selectivity-drop correlation."""
    summary: dict[str, Any] = {}
    for name in ORDERS:
        summary[f"auc_{name}"] = float(np.mean([area_under_curve(r["counts"], r[f"accuracy_{name}"])
                                                for r in per_layer.values()]))
    rhos = [r["spearman"] for r in per_layer.values() if "spearman" in r and np.isfinite(r["spearman"])]
    summary["mean_spearman"] = float(np.mean(rhos)) if rhos else float("nan")
    return summary
