"""Axis-aligned selectivity under random rotations (Bau et al. 2017, Sec. 3.2; Leavitt & Morcos 2021).

A layer's unit responses are rotated by Q^t, a fractional power of a Haar-random rotation Q, for t from 0 (the unit
axes) to 1 (a random basis); if selectivity were a property of the representation rather than of its axes, it would
not fall with t. The hook's sanity check: rotating a layer's units by Q and back by Q^T inside the network leaves the
accuracy as it was. Math: `selectivity_jax.measures.rotation`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib import colormaps

from selectivity_jax.analyses.base import (AlphaLayers, AlphaStats, Analysis, RunContext, RunResult, by_alpha,
                                           layer_means, per_alpha)
from selectivity_jax.measures import rotation
from selectivity_jax.records import Record
from selectivity_jax.report.figures import alpha_axis, lines_per_alpha, mean_band, new_figure, run_title
from selectivity_jax.report.tables import markdown_table
from selectivity_jax.trained import batched

NEGATIVES_NOTE = ("Rotated responses can be negative, the selectivity index needs non-negative class means: "
                  "'shift_class_means' subtracts each unit's smallest class mean (offset-invariant, no example decides "
                  "alone), 'shift' its minimum over examples, 'rectify' clips at 0.")


def rotate_units(activation: jax.Array, rotation_matrix: jax.Array) -> jax.Array:
    """[B, ..., U] -> the same map with its units rotated, ``activation @ rotation`` at every position."""
    return jnp.einsum("...u,uv->...v", activation, rotation_matrix.astype(activation.dtype),
                      precision=jax.lax.Precision.HIGHEST)


@dataclasses.dataclass(frozen=True)
class RotatedAndUndone:
    """``(logits_fn, Q, images) -> logits`` with ``layer``'s units rotated by Q and back by Q^T inside the network
    (hashable, so every run of one model shares the compiled code)."""
    layer: str

    def __call__(self, logits_fn: jax.tree_util.Partial, rotation_matrix: jax.Array, images: jax.Array) -> jax.Array:
        return logits_fn(images, edits={self.layer: lambda a: rotate_units(rotate_units(a, rotation_matrix),
                                                                           rotation_matrix.T)})


@dataclasses.dataclass(frozen=True)
class RotationLayer(Record):
    selectivity_vs_t: list[float]        # mean unit selectivity of the layer rotated by Q^t, per t
    num_units: int
    accuracy_rotated_and_undone: float   # accuracy with Q and then Q^T applied inside the network


@dataclasses.dataclass(frozen=True)
class RotationSummary(Record):
    selectivity_t0: float  # mean over layers at t = 0 (unit axes, with the negatives rule)
    selectivity_t1: float  # ... at t = 1 (a random rotation)
    paper_index: float     # the paper's index on the unit axes, without the rule


@dataclasses.dataclass(frozen=True)
class RotationResult(Record):
    t: list[float]
    negatives: str
    clean_accuracy: float
    layers: dict[str, RotationLayer]
    mean_selectivity_vs_t: list[float]  # mean over layers, per t
    summary: RotationSummary


@dataclasses.dataclass(frozen=True)
class AlphaCurve(Record):
    alpha: float
    mean_selectivity_vs_t: list[float]  # mean over seeds and layers, per t


@dataclasses.dataclass(frozen=True)
class RotationComparison(Record):
    t: list[float]
    negatives: str
    alphas: list[AlphaStats]          # the summary's quantities over seeds
    curves: list[AlphaCurve]
    layers: list[str]
    per_layer: list[AlphaLayers]      # selectivity_vs_t per layer, mean over seeds


class Rotation(Analysis[RotationResult, RotationComparison]):
    name = "rotation"
    title = "Axis-aligned selectivity under rotation (Bau et al. 2017)"
    result_type = RotationResult
    comparison_type = RotationComparison

    def default_settings(self) -> ml_collections.ConfigDict:
        settings = ml_collections.ConfigDict()
        settings.negatives = "shift_class_means"  # Rule for negative rotated responses (NEGATIVES_NOTE).
        settings.num_t = 11         # Fractions t = 0, 0.1, .., 1 of the Haar-random rotation Q (Q^t) [Bau et al.].
        settings.num_rotations = 1  # Haar rotations drawn per layer (results averaged).
        return settings

    def check(self, settings: ml_collections.ConfigDict) -> None:
        if settings.negatives not in rotation.NEGATIVES_RULES:
            raise ValueError(f"rotation.negatives must be one of {rotation.NEGATIVES_RULES}; "
                             f"got {settings.negatives!r}")
        if settings.num_t < 2 or settings.num_rotations < 1:
            raise ValueError(f"rotation.num_t must be >= 2 and rotation.num_rotations >= 1; got {settings.num_t}, "
                             f"{settings.num_rotations}")

    def run(self, context: RunContext, settings: ml_collections.ConfigDict) -> RotationResult:
        images, labels = context.data
        ts = np.linspace(0.0, 1.0, settings.num_t).tolist()
        logits_fn = context.run.logits_fn
        clean_accuracy = float(np.mean(batched(logits_fn, images, context.batch_size).argmax(-1) == labels))
        layers = {}
        for index, layer in enumerate(context.layers):
            responses = context.responses[layer]
            curves = []
            for draw in range(settings.num_rotations):
                key = jax.random.fold_in(jax.random.fold_in(jax.random.key(context.seed), index), draw)
                q = rotation.haar_rotation(key, responses.shape[1])
                curves.append([float(jnp.mean(rotation.rotated_selectivity(responses, labels, context.run.num_classes,
                                                                            q_t, settings.negatives)))
                               for q_t in rotation.fractional_rotations(q, ts)])
            undo = jax.tree_util.Partial(RotatedAndUndone(layer), logits_fn, q)
            undone_accuracy = float(np.mean(batched(undo, images, context.batch_size).argmax(-1) == labels))
            layers[layer] = RotationLayer(np.mean(curves, axis=0).tolist(), int(responses.shape[1]), undone_accuracy)
            context.log(f"    rotation of {layer}: selectivity {layers[layer].selectivity_vs_t[0]:.3f} at t = 0, "
                        f"{layers[layer].selectivity_vs_t[-1]:.3f} at t = 1; accuracy {clean_accuracy:.4f} -> "
                        f"{undone_accuracy:.4f} rotated and undone")
        mean_curve = np.mean([v.selectivity_vs_t for v in layers.values()], axis=0).tolist()
        return RotationResult(t=ts, negatives=settings.negatives, clean_accuracy=clean_accuracy, layers=layers,
                              mean_selectivity_vs_t=mean_curve,
                              summary=RotationSummary(mean_curve[0], mean_curve[-1], context.paper_index()))

    def compare(self, results: Sequence[RunResult[RotationResult]], settings: ml_collections.ConfigDict
                ) -> RotationComparison:
        first = results[0].result
        curves = [AlphaCurve(alpha, np.mean([r.result.mean_selectivity_vs_t for r in group], axis=0).tolist())
                  for alpha, group in by_alpha(results).items()]
        layers = list(first.layers)
        return RotationComparison(
            t=first.t, negatives=first.negatives, alphas=per_alpha(results, lambda r: r.result.summary.to_json()),
            curves=curves, layers=layers,
            per_layer=layer_means(results, layers, lambda r, layer: r.result.layers[layer].selectivity_vs_t))

    def run_table(self, result: RunResult[RotationResult]) -> str:
        record = result.result
        rows = [[f"`{layer}`", str(v.num_units), f"{v.selectivity_vs_t[0]:.3f}", f"{v.selectivity_vs_t[-1]:.3f}",
                 f"{record.clean_accuracy:.4f}", f"{v.accuracy_rotated_and_undone:.4f}"]
                for layer, v in record.layers.items()]
        return (f"Mean selectivity of the units rotated by Q^t, a Haar-random rotation (negative responses: "
                f"{record.negatives}); accuracy with the rotation applied and undone inside the network.\n\n" +
                markdown_table(["layer", "units", "t = 0 (unit axes)", "t = 1 (rotated)", "accuracy",
                                "accuracy, rotated and undone"], rows))

    def sweep_table(self, comparison: RotationComparison) -> str:
        rows = [[f"{row.alpha:g}", str(len(row.seeds)), row.stats["paper_index"].format(),
                 row.stats["selectivity_t0"].format(), row.stats["selectivity_t1"].format()]
                for row in comparison.alphas]
        return (f"Mean over layers of the mean unit selectivity at t = 0 (unit axes) and t = 1 (a random rotation), "
                f"responses made non-negative by '{comparison.negatives}'; 'paper index' is the unit axes without "
                f"that rule. Mean ± std over seeds.\n\n" +
                markdown_table(["alpha", "n", "paper index", "t = 0", "t = 1"], rows))

    def run_figures(self, result: RunResult[RotationResult]) -> dict[str, Any]:
        """'curves': mean unit selectivity of each layer rotated by Q^t against t, one line per layer (by depth)."""
        record = result.result
        fig = new_figure()
        ax = fig.add_subplot()
        colors = colormaps["viridis"](np.linspace(0.0, 0.9, len(record.layers)))
        for color, (layer, values) in zip(colors, record.layers.items()):
            ax.plot(record.t, values.selectivity_vs_t, "-o", markersize=3, color=color, label=layer)
        ax.set(xlabel="t (Q^t: from the unit axes, t = 0, to a random rotation, t = 1)",
               ylabel="mean unit selectivity", title=run_title(result.alpha, result.seed, "Selectivity under rotation"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        return {"curves": fig}

    def sweep_figures(self, comparison: RotationComparison) -> dict[str, Any]:
        """'curves': mean selectivity over layers against t, one line per alpha; 'summary': at t = 0 and t = 1 vs
        alpha."""
        fig = new_figure()
        ax = fig.add_subplot()
        lines_per_alpha(fig, ax, [c.alpha for c in comparison.curves], comparison.t,
                        [c.mean_selectivity_vs_t for c in comparison.curves])
        ax.set(xlabel="t (rotation Q^t)", ylabel="mean unit selectivity (mean over layers)",
               title="Axis-aligned selectivity under rotation, by α")
        ax.grid(alpha=0.3)
        figures = {"curves": fig}
        fig = new_figure()
        ax = fig.add_subplot()
        rows = comparison.alphas
        alphas = [row.alpha for row in rows]
        for key, color, label in (("selectivity_t0", "C3", "unit axes (t = 0)"),
                                  ("selectivity_t1", "0.4", "randomly rotated (t = 1)")):
            mean_band(ax, alphas, [row.stats[key].mean for row in rows], [row.stats[key].std for row in rows],
                      color, label)
        alpha_axis(ax, alphas)
        ax.set(ylabel="mean unit selectivity (mean over layers)", title="Unit axes vs a random rotation")
        ax.legend(fontsize=7)
        figures["summary"] = fig
        return figures

    # It changes layer outputs inside the forward pass (`Analysis.edits_layers`).
    edits_layers = True


ANALYSIS = Rotation()
