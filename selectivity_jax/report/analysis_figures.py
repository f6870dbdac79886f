"""Figures of the analyses of trained runs (selectivity_jax/analysis): per run from its ``analysis/<name>.json``, and
across a sweep from the comparison JSON. Each function returns {figure name: Figure} (Agg canvas, no pyplot)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from selectivity_jax.report.figures import _alpha_axis, _alpha_colorbar, alpha_colors, new_figure

ORDER_STYLES = {"decreasing": ("C3", "-", "most selective first"), "increasing": ("C0", "-", "least selective first"),
                "random": ("0.45", "--", "random order")}


def _run_title(result: Mapping[str, Any], what: str) -> str:
    return f"{what}: α = {result['alpha']:g}, seed {result['seed']}"


def _grid(count: int, width: float = 3.2, height: float = 2.6) -> tuple[Figure, list]:
    columns = min(3, count)
    rows = math.ceil(count / columns)
    fig = new_figure(width * columns, height * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _mean_band(ax, x, rows: Sequence[Mapping[str, Any]], key: str, color, label: str) -> None:
    means = np.array([row[key]["mean"] for row in rows])
    stds = np.array([row[key]["std"] for row in rows])
    ax.errorbar(x, means, yerr=stds, fmt="-o", color=color, markersize=4, capsize=3, label=label)


# ----------------------------------------------------------------------------------------------------------------------
# ablation
# ----------------------------------------------------------------------------------------------------------------------

def ablation_run_figures(result: Mapping[str, Any]) -> dict[str, Figure]:
    """'curves': test accuracy vs fraction of a layer's units ablated, per order, one panel per layer;
    'importance': each unit's accuracy drop when ablated alone vs its selectivity, one panel per layer."""
    layers = result["layers"]
    figures = {}
    fig, axes = _grid(len(layers))
    for ax, (name, layer) in zip(axes, layers.items()):
        fraction = np.asarray(layer["counts"]) / layer["num_units"]
        for order, (color, style, label) in ORDER_STYLES.items():
            ax.plot(fraction, layer[f"accuracy_{order}"], style, color=color, marker="o", markersize=3, label=label)
        ax.set(title=name, xlabel="fraction of units ablated", ylabel="test accuracy", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(_run_title(result, f"Cumulative ablation ({next(iter(layers.values()))['fill']} fill)"))
    figures["curves"] = fig
    if "single_unit_drop" in next(iter(layers.values())):
        fig, axes = _grid(len(layers))
        for ax, (name, layer) in zip(axes, layers.items()):
            ax.scatter(layer["selectivity"], layer["single_unit_drop"], s=10, color="C2", edgecolors="none")
            ax.axhline(0.0, color="0.7", linewidth=0.8)
            ax.set(title=f"{name}  (Spearman ρ = {layer['spearman']:.2f})", xlabel="unit class selectivity",
                   ylabel="accuracy drop")
            ax.grid(alpha=0.3)
        fig.suptitle(_run_title(result, "Accuracy drop when one unit is ablated"))
        figures["importance"] = fig
    return figures


def ablation_sweep_figures(comparison: Mapping[str, Any]) -> dict[str, Figure]:
    """'curves': the deepest layer's curves, most selective units first, one line per alpha (seed mean; dashed:
    random order); 'summary': area under the curves and the selectivity-importance correlation vs alpha."""
    rows = comparison["alphas"]
    alphas = [row["alpha"] for row in rows]
    norm, cmap = alpha_colors(alphas)
    layer = comparison["layers"][-1]
    fig = new_figure()
    ax = fig.add_subplot()
    for row in rows:
        fraction = np.asarray(row["counts"][layer]) / row["counts"][layer][-1]
        color = cmap(norm(row["alpha"]))
        ax.plot(fraction, row["curves"][layer]["decreasing"], "-o", color=color, markersize=3)
        ax.plot(fraction, row["curves"][layer]["random"], "--", color=color, linewidth=0.9)
    ax.set(xlabel=f"fraction of {layer}'s units ablated", ylabel="test accuracy", ylim=(0, 1.02),
           title=f"Ablation of {layer}: most selective first (solid), random (dashed)")
    ax.grid(alpha=0.3)
    _alpha_colorbar(fig, ax, alphas)
    figures = {"curves": fig}
    fig = new_figure(10.0, 3.8)
    ax_auc, ax_rho = fig.subplots(1, 2)
    for order, (color, _, label) in ORDER_STYLES.items():
        _mean_band(ax_auc, alphas, rows, f"auc_{order}", color, label)
    ax_auc.set(ylabel="mean accuracy over ablated fraction", title="Area under the ablation curves")
    ax_auc.legend(fontsize=7)
    _mean_band(ax_rho, alphas, rows, "mean_spearman", "C2", "mean over layers")
    ax_rho.axhline(0.0, color="0.7", linewidth=0.8)
    ax_rho.set(ylabel="Spearman ρ (selectivity, drop)", title="Do selective units matter more?")
    for ax in (ax_auc, ax_rho):
        _alpha_axis(ax, alphas)
    figures["summary"] = fig
    return figures
