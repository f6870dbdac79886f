"""Figures of the analyses of trained runs (selectivity_jax/analysis): per run from its ``analysis/<name>.json``, and
across a sweep from the comparison JSON. Each function returns {figure name: Figure} (Agg canvas, no pyplot)."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from selectivity_jax.report.figures import (alpha_axis, alpha_colorbar, layer_axis, layers_width, alpha_colors,
                                            new_figure)

BASIS_STYLES = {"axis_aligned": ("0.3", "unit axes"), "class_mean_basis": ("C1", "class-mean basis"),
                "optimised_from_identity": ("C2", "optimised from unit axes"),
                "optimised_from_class_mean": ("C4", "optimised from class-mean basis")}

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
           title=f"Ablating {layer}\nmost selective units first (solid), random order (dashed)")
    ax.grid(alpha=0.3)
    alpha_colorbar(fig, ax, alphas)
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
        alpha_axis(ax, alphas)
    figures["summary"] = fig
    return figures


def _lines_per_alpha(fig: Figure, ax, rows: Sequence[Mapping[str, Any]], x, values) -> None:
    """One line per alpha row (alpha colours and a colour bar): ``values(row)`` against ``x``."""
    alphas = [row["alpha"] for row in rows]
    norm, cmap = alpha_colors(alphas)
    for row in rows:
        ax.plot(x, values(row), "-o", markersize=3, linewidth=1.3, color=cmap(norm(row["alpha"])))
    alpha_colorbar(fig, ax, alphas)


# ----------------------------------------------------------------------------------------------------------------------
# basis
# ----------------------------------------------------------------------------------------------------------------------

def basis_run_figures(result: Mapping[str, Any]) -> dict[str, Figure]:
    """'layers': mean unit selectivity of each layer in the four bases (grouped bars)."""
    layers = list(result["layers"])
    fig = new_figure(layers_width(layers), 4.4)
    ax = fig.add_subplot()
    width = 0.8 / len(BASIS_STYLES)
    for i, (name, (color, label)) in enumerate(BASIS_STYLES.items()):
        ax.bar(np.arange(len(layers)) + (i - 1.5) * width, [result["layers"][layer][name] for layer in layers],
               width, color=color, label=label)
    layer_axis(ax, layers)
    ax.set(ylabel="mean unit selectivity", title=_run_title(result, f"Selectivity by basis ({result['negatives']})"))
    ax.legend(fontsize=7)
    return {"layers": fig}


def basis_sweep_figures(comparison: Mapping[str, Any]) -> dict[str, Figure]:
    """'summary': mean selectivity over layers in each basis vs alpha; 'layers': the class-mean basis's and the unit
    axes' selectivity by layer, one line per alpha."""
    rows = comparison["alphas"]
    alphas = [row["alpha"] for row in rows]
    fig = new_figure()
    ax = fig.add_subplot()
    for name, (color, label) in BASIS_STYLES.items():
        _mean_band(ax, alphas, rows, name, color, label)
    alpha_axis(ax, alphas)
    ax.set(ylabel="mean unit selectivity (mean over layers)",
           title=f"Is selectivity hidden in another basis? ({comparison['negatives']})")
    ax.legend(fontsize=7)
    figures = {"summary": fig}
    layers = comparison["layers"]
    fig = new_figure(2 * layers_width(layers), 4.4)
    for ax, name in zip(fig.subplots(1, 2, sharey=True), ("axis_aligned", "class_mean_basis")):
        _lines_per_alpha(fig, ax, comparison["per_layer"][name], range(len(layers)),
                         lambda row: [row["layers"][layer] for layer in layers])
        layer_axis(ax, layers)
        ax.set(title=BASIS_STYLES[name][1], ylabel="mean unit selectivity")
    figures["layers"] = fig
    return figures


# ----------------------------------------------------------------------------------------------------------------------
# rotation
# ----------------------------------------------------------------------------------------------------------------------

def rotation_run_figures(result: Mapping[str, Any]) -> dict[str, Figure]:
    """'curves': mean unit selectivity of each layer rotated by Q^t against t, one line per layer (by depth)."""
    fig = new_figure()
    ax = fig.add_subplot()
    colors = colormaps["viridis"](np.linspace(0.0, 0.9, len(result["layers"])))
    for color, (layer, values) in zip(colors, result["layers"].items()):
        ax.plot(result["t"], values["selectivity_vs_t"], "-o", markersize=3, color=color, label=layer)
    ax.set(xlabel="t (Q^t: from the unit axes, t = 0, to a random rotation, t = 1)",
           ylabel="mean unit selectivity", title=_run_title(result, "Selectivity under rotation"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return {"curves": fig}


def rotation_sweep_figures(comparison: Mapping[str, Any]) -> dict[str, Figure]:
    """'curves': mean selectivity over layers against t, one line per alpha; 'summary': at t = 0 and t = 1 vs alpha."""
    fig = new_figure()
    ax = fig.add_subplot()
    _lines_per_alpha(fig, ax, comparison["curves"], comparison["t"], lambda row: row["mean_selectivity_vs_t"])
    ax.set(xlabel="t (rotation Q^t)", ylabel="mean unit selectivity (mean over layers)",
           title="Axis-aligned selectivity under rotation, by α")
    ax.grid(alpha=0.3)
    figures = {"curves": fig}
    fig = new_figure()
    ax = fig.add_subplot()
    alphas = [row["alpha"] for row in comparison["alphas"]]
    _mean_band(ax, alphas, comparison["alphas"], "selectivity_t0", "C3", "unit axes (t = 0)")
    _mean_band(ax, alphas, comparison["alphas"], "selectivity_t1", "0.4", "randomly rotated (t = 1)")
    alpha_axis(ax, alphas)
    ax.set(ylabel="mean unit selectivity (mean over layers)", title="Unit axes vs a random rotation")
    ax.legend(fontsize=7)
    figures["summary"] = fig
    return figures


# ----------------------------------------------------------------------------------------------------------------------
# similarity
# ----------------------------------------------------------------------------------------------------------------------

def similarity_sweep_figures(comparison: Mapping[str, Any]) -> dict[str, Figure]:
    """'layers': each measure by layer, one line per alpha, the seed-to-seed floor at alpha = 0 in grey;
    'summary': the mean over layers vs alpha."""
    layers, measures, floor = comparison["layers"], comparison["measures"], comparison["seed_floor"]
    figures = {}
    if comparison["alphas"]:
        fig = new_figure(len(measures) * layers_width(layers), 4.4)
        for ax, measure in zip(np.atleast_1d(fig.subplots(1, len(measures), sharey=True)), measures):
            _lines_per_alpha(fig, ax, comparison["alphas"], range(len(layers)),
                             lambda row: [row["layers"][layer][measure]["mean"] for layer in layers])
            if floor:
                means = np.array([floor[layer][measure]["mean"] for layer in layers])
                stds = np.array([floor[layer][measure]["std"] for layer in layers])
                ax.fill_between(range(len(layers)), means - stds, means + stds, color="0.85", zorder=0)
                ax.plot(range(len(layers)), means, "--", color="0.5", label="α = 0, seed vs seed")
                ax.legend(fontsize=7)
            layer_axis(ax, layers)
            ax.set(title=f"{measure.upper()} with α = 0 (same seed)", ylabel="similarity", ylim=(0, 1.02))
        figures["layers"] = fig
        fig = new_figure()
        ax = fig.add_subplot()
        alphas = [row["alpha"] for row in comparison["alphas"]]
        for i, measure in enumerate(measures):
            means = [np.mean([row["layers"][layer][measure]["mean"] for layer in layers])
                     for row in comparison["alphas"]]
            ax.plot(alphas, means, "-o", color=f"C{i}", label=measure.upper())
            if floor:
                ax.axhline(np.mean([floor[layer][measure]["mean"] for layer in layers]), color=f"C{i}",
                           linestyle="--", linewidth=0.9, label=f"{measure.upper()} seed floor")
        alpha_axis(ax, alphas)
        ax.set(ylabel="similarity to α = 0 (mean over layers)", ylim=(0, 1.02),
               title="Do low- and high-selectivity networks compute the same thing?")
        ax.legend(fontsize=7)
        figures["summary"] = fig
    return figures


# ----------------------------------------------------------------------------------------------------------------------
# rs
# ----------------------------------------------------------------------------------------------------------------------

def _image_grid(result: Mapping[str, Any], layer_names: Sequence[str]) -> Figure:
    """Generated inputs of the most and least selective units of ``layer_names``: one row per layer and objective."""
    count = result["grid_units"]
    with np.load(os.path.join(result["run_dir"], "analysis", result["images"])) as npz:
        images = {name: npz[name] for name in npz.files}
    rows = [(layer, objective) for layer in layer_names for objective in result["objectives"]]
    fig = new_figure(1.2 * 2 * count + 0.5, 1.35 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), 2 * count, squeeze=False)
    for (layer, objective), row_axes in zip(rows, axes):
        selectivity = np.asarray(result["layers"][layer]["selectivity"])
        order = np.argsort(-selectivity, kind="stable")
        chosen = list(order[:count]) + list(order[::-1][:count][::-1])
        for position, (ax, k) in enumerate(zip(row_axes, chosen)):
            ax.imshow(np.clip(images[f"{layer}|{objective}"][k], 0.0, 1.0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"SI {selectivity[k]:.2f}", fontsize=6)
            if position == 0:
                ax.set_ylabel(f"{layer}\n{objective.upper()}", fontsize=6)
    fig.suptitle(_run_title(result, f"Generated inputs: {count} most (left) and {count} least (right) selective "
                                    f"units"), fontsize=9)
    return fig


def rs_run_figures(result: Mapping[str, Any]) -> dict[str, Figure]:
    """'spearman': Spearman rho of RS and selectivity by layer, per objective; 'grid': AM/IAM inputs of the most
    and least selective units of the first and last layers."""
    layers = list(result["layers"])
    fig = new_figure(layers_width(layers), 4.2)
    ax = fig.add_subplot()
    for i, objective in enumerate(result["objectives"]):
        ax.plot(range(len(layers)), [result["layers"][layer][objective]["spearman"] for layer in layers], "-o",
                color=f"C{i}", label=objective.upper())
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    layer_axis(ax, layers)
    ax.set(ylabel="Spearman ρ (RS, selectivity)", ylim=(-1.02, 1.02),
           title=_run_title(result, "Representative Substitution vs selectivity"))
    ax.legend(fontsize=7)
    figures = {"spearman": fig, "grid": _image_grid(result, sorted({layers[0], layers[-1]}, key=layers.index))}
    return figures


def rs_sweep_figures(comparison: Mapping[str, Any]) -> dict[str, Figure]:
    """'spearman': Spearman rho of RS and selectivity by layer, one line per alpha, a panel per objective;
    'summary': mean RS and mean rho vs alpha."""
    layers, objectives = comparison["layers"], comparison["objectives"]
    fig = new_figure(len(objectives) * layers_width(layers), 4.2)
    for ax, objective in zip(np.atleast_1d(fig.subplots(1, len(objectives), sharey=True)), objectives):
        _lines_per_alpha(fig, ax, comparison["spearman_by_layer"][objective], range(len(layers)),
                         lambda row: [row["layers"][layer]["mean"] for layer in layers])
        ax.axhline(0.0, color="0.7", linewidth=0.8)
        layer_axis(ax, layers)
        ax.set(title=f"{objective.upper()}: Spearman ρ (RS, selectivity)", ylim=(-1.02, 1.02))
    figures = {"spearman": fig}
    fig = new_figure(10.0, 3.8)
    ax_rs, ax_rho = fig.subplots(1, 2)
    alphas = [row["alpha"] for row in comparison["alphas"]]
    for i, objective in enumerate(objectives):
        _mean_band(ax_rs, alphas, comparison["alphas"], f"{objective}_mean_rs", f"C{i}", objective.upper())
        _mean_band(ax_rho, alphas, comparison["alphas"], f"{objective}_spearman", f"C{i}", objective.upper())
    ax_rs.set(ylabel="mean Representative Substitution", title="RS by α")
    ax_rho.set(ylabel="Spearman ρ (RS, selectivity)", title="RS vs selectivity by α")
    ax_rho.axhline(0.0, color="0.7", linewidth=0.8)
    for ax in (ax_rs, ax_rho):
        alpha_axis(ax, alphas)
        ax.legend(fontsize=7)
    figures["summary"] = fig
    return figures
