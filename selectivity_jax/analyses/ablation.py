"""Single-unit ablation (Morcos et al., "On the importance of single directions for generalization", ICLR 2018), as
used by Leavitt & Morcos (ICLR 2021) to ask whether class-selective units matter.

A layer's units are ablated cumulatively in three orders (most selective first, least selective first, random) and
the accuracy is measured after each count; with ``single_units`` each unit is also ablated alone and its accuracy
drop correlated with its selectivity. Math: `selectivity_jax.measures.ablation`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import ml_collections
import numpy as np

from selectivity_jax.analyses.base import AlphaStats, Analysis, RunContext, RunResult, by_alpha, per_alpha
from selectivity_jax.measures import ablation
from selectivity_jax.records import Record
from selectivity_jax.report.figures import (alpha_axis, alpha_colorbar, alpha_colors, mean_band, new_figure, panels,
                                            run_title)
from selectivity_jax.report.tables import markdown_table

ORDER_STYLES = {"decreasing": ("C3", "-", "most selective first"), "increasing": ("C0", "-", "least selective first"),
                "random": ("0.45", "--", "random order")}
SINGLE_UNIT_FIELDS = ("single_unit_drop", "spearman", "spearman_p", "pearson", "pearson_p")


@dataclasses.dataclass(frozen=True)
class AblationLayer(Record):
    layer: str
    fill: str
    num_units: int
    counts: list[int]                  # numbers of units ablated, where the curves are measured
    clean_accuracy: float
    num_examples: int
    orders: dict[str, list[int]]       # {order: unit indices in the order they are ablated}
    accuracy_decreasing: list[float]   # accuracy per count, most selective units ablated first
    accuracy_increasing: list[float]   # ... least selective first
    accuracy_random: list[float]       # ... in a seeded random order
    selectivity: list[float]           # per unit
    # With single_units only (absent from the JSON otherwise): each unit's accuracy drop when ablated alone and its
    # correlations with selectivity (NaN when either is constant).
    single_unit_drop: list[float] | None = None
    spearman: float = math.nan
    spearman_p: float = math.nan
    pearson: float = math.nan
    pearson_p: float = math.nan

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.single_unit_drop is None:
            for key in SINGLE_UNIT_FIELDS:
                del data[key]
        return data

    def accuracy(self, order: str) -> list[float]:
        """The cumulative curve of one of `ablation.ORDERS`."""
        return getattr(self, f"accuracy_{order}")

    def auc(self, order: str) -> float:
        """Mean accuracy over the ablated fraction of the units (area under the curve)."""
        return ablation.area_under_curve(self.counts, self.accuracy(order))


@dataclasses.dataclass(frozen=True)
class AblationSummary(Record):
    auc_decreasing: float  # mean over layers of the area under the curve, most selective first
    auc_increasing: float
    auc_random: float
    mean_spearman: float   # mean over layers of Spearman rho (selectivity, single-unit drop)


@dataclasses.dataclass(frozen=True)
class AblationResult(Record):
    layers: dict[str, AblationLayer]
    summary: AblationSummary


@dataclasses.dataclass(frozen=True)
class AlphaAblation(Record):
    stats: AlphaStats                          # seeds, test selectivity and the summary's quantities over seeds
    curves: dict[str, dict[str, list[float]]]  # {layer: {order: accuracy per count}}, mean over seeds
    counts: dict[str, list[int]]               # {layer: numbers of units ablated}


@dataclasses.dataclass(frozen=True)
class AblationComparison(Record):
    alphas: list[AlphaAblation]
    layers: list[str]


class Ablation(Analysis[AblationResult, AblationComparison]):
    name = "ablation"
    title = "Unit ablation (Morcos et al. 2018)"
    result_type = AblationResult
    comparison_type = AblationComparison

    def default_settings(self) -> ml_collections.ConfigDict:
        settings = ml_collections.ConfigDict()
        settings.fill = "zero"         # An ablated unit's map becomes 0 [Morcos et al.] or 'mean' (its mean response).
        settings.num_points = 11       # Unit counts at which the cumulative curves are measured (0 .. all units).
        settings.single_units = True   # Also ablate each unit alone: accuracy drop vs selectivity.
        settings.masks_per_call = 8    # Ablation masks evaluated together in one vmapped call (speed only).
        return settings

    def check(self, settings: ml_collections.ConfigDict) -> None:
        if settings.fill not in ablation.FILLS:
            raise ValueError(f"ablation.fill must be one of {ablation.FILLS}; got {settings.fill!r}")
        if settings.num_points < 2 or settings.masks_per_call < 1:
            raise ValueError(f"ablation.num_points must be >= 2 and ablation.masks_per_call >= 1; got "
                             f"{settings.num_points}, {settings.masks_per_call}")
        if not isinstance(settings.single_units, bool):
            raise ValueError(f"ablation.single_units must be True or False; got {settings.single_units!r}")

    def run(self, context: RunContext, settings: ml_collections.ConfigDict) -> AblationResult:
        images, labels = context.data
        layers = {}
        for layer in context.layers:
            context.log(f"    ablation of {layer} ({context.responses[layer].shape[1]} units)")
            measured = ablation.layer_ablation(
                context.run.logits_fn, layer, context.selectivity[layer], context.responses[layer], images, labels,
                fill=settings.fill, num_points=settings.num_points, single_units=settings.single_units,
                seed=context.seed, batch_size=context.batch_size, masks_per_call=settings.masks_per_call)
            layers[layer] = AblationLayer(**measured, selectivity=context.selectivity[layer].tolist())
        summary = ablation.summarize_ablation({layer: dataclasses.asdict(v) for layer, v in layers.items()})
        return AblationResult(layers=layers, summary=AblationSummary(**summary))

    def compare(self, results: Sequence[RunResult[AblationResult]], settings: ml_collections.ConfigDict
                ) -> AblationComparison:
        stats = per_alpha(results, lambda r: r.result.summary.to_json())
        rows = []
        for row, group in zip(stats, by_alpha(results).values()):
            first = group[0].result.layers
            curves = {layer: {order: np.mean([r.result.layers[layer].accuracy(order) for r in group],
                                             axis=0).tolist() for order in ablation.ORDERS} for layer in first}
            rows.append(AlphaAblation(row, curves, {layer: v.counts for layer, v in first.items()}))
        return AblationComparison(alphas=rows, layers=list(results[0].result.layers))

    def run_table(self, result: RunResult[AblationResult]) -> str:
        rows = [[f"`{name}`", str(v.num_units), f"{v.clean_accuracy:.3f}",
                 *(f"{v.auc(order):.3f}" for order in ablation.ORDERS), f"{v.spearman:.2f}"]
                for name, v in result.result.layers.items()]
        return markdown_table(["layer", "units", "accuracy", "AUC most selective first", "AUC least selective first",
                               "AUC random", "Spearman ρ (selectivity, drop)"], rows)

    def sweep_table(self, comparison: AblationComparison) -> str:
        rows = [[f"{row.stats.alpha:g}", str(len(row.stats.seeds)), row.stats.test_selectivity.format(),
                 *(row.stats.stats[f"auc_{order}"].format() for order in ablation.ORDERS),
                 row.stats.stats["mean_spearman"].format(2)]
                for row in comparison.alphas]
        return ("Mean accuracy over the ablated fraction of each layer's units (area under the curve), averaged over "
                "layers; mean ± std over seeds.\n\n" +
                markdown_table(["alpha", "n", "test selectivity", "AUC most selective first",
                                "AUC least selective first", "AUC random", "Spearman ρ"], rows))

    def run_figures(self, result: RunResult[AblationResult]) -> dict[str, Any]:
        """'curves': test accuracy vs fraction of a layer's units ablated, per order, one panel per layer;
        'importance': each unit's accuracy drop when ablated alone vs its selectivity, one panel per layer."""
        layers = result.result.layers
        first = next(iter(layers.values()))
        fig, axes = panels(len(layers))
        for ax, (name, layer) in zip(axes, layers.items()):
            fraction = np.asarray(layer.counts) / layer.num_units
            for order, (color, style, label) in ORDER_STYLES.items():
                ax.plot(fraction, layer.accuracy(order), style, color=color, marker="o", markersize=3, label=label)
            ax.set(title=name, xlabel="fraction of units ablated", ylabel="test accuracy", ylim=(0, 1.02))
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(run_title(result.alpha, result.seed, f"Cumulative ablation ({first.fill} fill)"))
        figures = {"curves": fig}
        if first.single_unit_drop is not None:
            fig, axes = panels(len(layers))
            for ax, (name, layer) in zip(axes, layers.items()):
                ax.scatter(layer.selectivity, layer.single_unit_drop, s=10, color="C2", edgecolors="none")
                ax.axhline(0.0, color="0.7", linewidth=0.8)
                ax.set(title=f"{name}  (Spearman ρ = {layer.spearman:.2f})", xlabel="unit class selectivity",
                       ylabel="accuracy drop")
                ax.grid(alpha=0.3)
            fig.suptitle(run_title(result.alpha, result.seed, "Accuracy drop when one unit is ablated"))
            figures["importance"] = fig
        return figures

    def sweep_figures(self, comparison: AblationComparison) -> dict[str, Any]:
        """'curves': the deepest layer's curves, most selective units first, one line per alpha (seed mean; dashed:
        random order); 'summary': area under the curves and the selectivity-importance correlation vs alpha."""
        rows = comparison.alphas
        alphas = [row.stats.alpha for row in rows]
        norm, cmap = alpha_colors(alphas)
        layer = comparison.layers[-1]
        fig = new_figure()
        ax = fig.add_subplot()
        for row in rows:
            fraction = np.asarray(row.counts[layer]) / row.counts[layer][-1]
            color = cmap(norm(row.stats.alpha))
            ax.plot(fraction, row.curves[layer]["decreasing"], "-o", color=color, markersize=3)
            ax.plot(fraction, row.curves[layer]["random"], "--", color=color, linewidth=0.9)
        ax.set(xlabel=f"fraction of {layer}'s units ablated", ylabel="test accuracy", ylim=(0, 1.02),
               title=f"Ablating {layer}\nmost selective units first (solid), random order (dashed)")
        ax.grid(alpha=0.3)
        alpha_colorbar(fig, ax, alphas)
        figures = {"curves": fig}
        fig = new_figure(10.0, 3.8)
        ax_auc, ax_rho = fig.subplots(1, 2)
        stats = [row.stats.stats for row in rows]
        for order, (color, _, label) in ORDER_STYLES.items():
            key = f"auc_{order}"
            mean_band(ax_auc, alphas, [s[key].mean for s in stats], [s[key].std for s in stats], color, label)
        ax_auc.set(ylabel="mean accuracy over ablated fraction", title="Area under the ablation curves")
        ax_auc.legend(fontsize=7)
        mean_band(ax_rho, alphas, [s["mean_spearman"].mean for s in stats], [s["mean_spearman"].std for s in stats],
                  "C2", "mean over layers")
        ax_rho.axhline(0.0, color="0.7", linewidth=0.8)
        ax_rho.set(ylabel="Spearman ρ (selectivity, drop)", title="Do selective units matter more?")
        for ax in (ax_auc, ax_rho):
            alpha_axis(ax, alphas)
        figures["summary"] = fig
        return figures

    # It changes layer outputs inside the forward pass (`Analysis.edits_layers`).
    edits_layers = True


ANALYSIS = Ablation()
