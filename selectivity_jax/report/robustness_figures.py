"""Figures of the robustness analyses (`selectivity_jax.analysis.robustness`): per run from its
``analysis/<name>.json`` and across a sweep from the comparison JSON. Each function returns {figure name: Figure}
(Agg canvas, no pyplot); alpha is coloured and drawn on symlog axes as in `selectivity_jax.report.figures`."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from selectivity_jax.analysis.robustness import DIMENSIONALITY_KINDS, GRADIENT_STATISTICS, curve_label, sources_note
from selectivity_jax.report.analysis_figures import _grid, _run_title
from selectivity_jax.report.figures import (alpha_axis, alpha_colorbar, layer_axis, layers_width, alpha_colors,
                                            new_figure)

STATISTIC_LABELS = {"norm_cv_over_samples": "gradient-norm CV over samples",
                    "norm_cv_over_units": "gradient-norm CV over units",
                    "cosine_distance_over_samples": "cosine distance over samples",
                    "cosine_distance_over_units": "cosine distance over units"}
KIND_LABELS = {"clean": "clean representation", "corruption": "change under corruptions",
               "adversarial": "change under PGD"}
KIND_COLORS = {"clean": "0.25", "corruption": "C2", "adversarial": "C3"}
MEASURE_LABELS = {"n_components": "PCA components", "participation_ratio": "participation ratio"}


def _severity_colors(count: int) -> list:
    """Light (mild) to dark (severe) colours for ``count`` severities."""
    cmap = colormaps["viridis_r"]
    return [cmap(0.15 + 0.75 * i / max(count - 1, 1)) for i in range(count)]


def _wrap(text: str, fig: Figure) -> str:
    """A long caption broken into lines that fit the figure's width (about 13 characters per inch at 9 pt)."""
    width = int(13 * fig.get_figwidth())
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def _panels(count: int, columns: int, width: float = 4.0, height: float = 3.2) -> tuple[Figure, list]:
    """A figure with ``count`` panels in rows of ``columns`` (unused slots hidden)."""
    rows = -(-count // columns)
    fig = new_figure(width * columns, height * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _epsilon_axis(ax, norm: str) -> None:
    if norm == "linf":
        ax.set_xlabel("ε (× 1/255, L-inf)")
    else:
        ax.set_xlabel("ε (L2, pixels in [0, 1])")
    ax.grid(alpha=0.3)


def _epsilon_values(epsilons: Sequence[float], norm: str) -> np.ndarray:
    return np.asarray(epsilons) * (255.0 if norm == "linf" else 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# corruptions
# ----------------------------------------------------------------------------------------------------------------------

def corruptions_run_figures(result: Mapping[str, Any]) -> dict[str, Figure]:
    """'by_severity': accuracy vs severity, one panel per family (a line per corruption), and the family means; the
    clean accuracy dashed."""
    severities = result["severities"]
    families = {family: result["families"][family] for family in result["family_names"]}
    fig, axes = _grid(len(families) + 1)
    for ax, (family, entry) in zip(axes, families.items()):
        for name in entry["corruptions"]:
            ax.plot(severities, result["corruptions"][name]["accuracy"], "-o", markersize=3, label=name)
        ax.set(title=family)
    for index, (family, entry) in enumerate(families.items()):
        axes[-1].plot(severities, entry["accuracy"], "-o", markersize=3, color=f"C{index}", label=family)
    axes[-1].plot(severities, result["accuracy_by_severity"], "-o", color="black", markersize=3, label="all")
    axes[-1].set(title="family means")
    for ax in axes:
        ax.axhline(result["clean_accuracy"], color="0.5", linestyle="--", linewidth=0.9)
        ax.set(xlabel="severity", ylabel="accuracy", xticks=severities, ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    sources = {name: c["source"] for name, c in result["corruptions"].items()}
    fig.suptitle(_run_title(result, "Accuracy on corrupted test images (dashed: clean)") + "\n" +
                 _wrap(sources_note(sources), fig), fontsize=9)
    return {"by_severity": fig}


def corruptions_sweep_figures(comparison: Mapping[str, Any]) -> dict[str, Figure]:
    """'families_vs_alpha': accuracy vs alpha, one panel per family, one line per severity (mean ± std over seeds);
    'mean_vs_alpha': clean and mean corrupted accuracy, and their ratio, vs alpha."""
    rows = comparison["alphas"]
    alphas = [row["alpha"] for row in rows]
    severities = comparison["severities"]
    colors = _severity_colors(len(severities))
    panels = [(f"{family} ({', '.join(comparison['families'][family])})",
               [row["families"][family]["accuracy"] for row in rows]) for family in comparison["family_names"]]
    panels.append(("all corruptions", [row["accuracy_by_severity"] for row in rows]))
    fig, axes = _grid(len(panels))
    for ax, (title, curves) in zip(axes, panels):
        for index, (severity, color) in enumerate(zip(severities, colors)):
            ax.errorbar(alphas, [curve["mean"][index] for curve in curves],
                        yerr=[curve["std"][index] for curve in curves], fmt="-o", color=color, markersize=3,
                        capsize=2, label=f"severity {severity}")
        alpha_axis(ax, alphas)
        ax.set(ylabel="accuracy", ylim=(0, 1.02))
        ax.set_title(title, fontsize=8)
    axes[0].legend(fontsize=6)
    fig.suptitle("Corrupted accuracy vs α per family (mean ± std over seeds)\n" +
                 _wrap(sources_note(comparison["sources"]), fig), fontsize=9)
    figures = {"families_vs_alpha": fig}
    fig = new_figure(10.0, 4.0)
    ax_accuracy, ax_relative = fig.subplots(1, 2)
    for key, color, label in (("clean_accuracy", "0.25", "clean"), ("mean_accuracy", "C3", "corrupted (mean)")):
        ax_accuracy.errorbar(alphas, [row[key]["mean"] for row in rows], yerr=[row[key]["std"] for row in rows],
                             fmt="-o", color=color, markersize=4, capsize=3, label=label)
    ax_accuracy.set(ylabel="accuracy", title="Clean and mean corrupted accuracy")
    ax_accuracy.legend(fontsize=7)
    ax_relative.errorbar(alphas, [row["relative_accuracy"]["mean"] for row in rows],
                         yerr=[row["relative_accuracy"]["std"] for row in rows], fmt="-o", color="C3", markersize=4,
                         capsize=3)
    ax_relative.set(ylabel="corrupted / clean accuracy", title="Relative corrupted accuracy")
    for ax in (ax_accuracy, ax_relative):
        alpha_axis(ax, alphas)
    fig.suptitle(_wrap(sources_note(comparison["sources"]), fig), fontsize=8)
    figures["mean_vs_alpha"] = fig
    return figures


# ----------------------------------------------------------------------------------------------------------------------
# attacks
# ----------------------------------------------------------------------------------------------------------------------

def attacks_run_figures(result: Mapping[str, Any]) -> dict[str, Figure]:
    """'accuracy_vs_epsilon': one panel per norm, one line per attack."""
    norms = [norm for norm in ("linf", "l2") if any(c["norm"] == norm for c in result["curves"].values())]
    fig, axes = _grid(len(norms), width=4.2, height=3.2)
    for ax, norm in zip(axes, norms):
        curves = [result["curves"][key] for key in result["curve_names"]]
        for index, curve in enumerate(c for c in curves if c["norm"] == norm):
            ax.plot(_epsilon_values(curve["epsilons"], norm), curve["accuracy"], "-o", markersize=3,
                    color=f"C{index}", label=curve_label(curve))
        _epsilon_axis(ax, norm)
        ax.set(ylabel="accuracy under attack", ylim=(0, 1.02))
        ax.legend(fontsize=7)
    fig.suptitle(_run_title(result, "White-box attacks"), fontsize=10)
    return {"accuracy_vs_epsilon": fig}


def attacks_sweep_figures(comparison: Mapping[str, Any]) -> dict[str, Figure]:
    """'accuracy_vs_epsilon': one panel per attack (columns) and norm (rows), one line per alpha (mean ± std over
    seeds)."""
    rows = comparison["alphas"]
    alphas = [row["alpha"] for row in rows]
    norm_of_alpha, cmap = alpha_colors(alphas)
    curves = comparison["curves"]
    by_norm: dict[str, list[str]] = {}
    for key in comparison["curve_names"]:
        by_norm.setdefault(curves[key]["norm"], []).append(key)
    columns = max(len(keys) for keys in by_norm.values())
    fig = new_figure(3.6 * columns + 1.0, 3.0 * len(by_norm))
    grid = fig.subplots(len(by_norm), columns, squeeze=False)
    panels = [(grid[r, c], key) for r, keys in enumerate(by_norm.values()) for c, key in enumerate(keys)]
    for r, keys in enumerate(by_norm.values()):
        for ax in grid[r, len(keys):]:
            ax.set_visible(False)
    axes = [ax for ax, _ in panels]
    for ax, key in panels:
        curve = curves[key]
        x = _epsilon_values(curve["epsilons"], curve["norm"])
        for row in rows:
            ax.errorbar(x, row["curves"][key]["mean"], yerr=row["curves"][key]["std"], fmt="-o", markersize=3,
                        capsize=2, color=cmap(norm_of_alpha(row["alpha"])))
        _epsilon_axis(ax, curve["norm"])
        ax.set(title=curve_label(curve), ylabel="accuracy under attack", ylim=(0, 1.02))
    alpha_colorbar(fig, axes, alphas)
    fig.suptitle("Accuracy under attack vs ε, one line per α (mean ± std over seeds)", fontsize=10)
    return {"accuracy_vs_epsilon": fig}


# ----------------------------------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------------------------------

def gradients_run_figures(result: Mapping[str, Any]) -> dict[str, Figure]:
    """'by_layer': the four variability statistics per layer; 'units': each analysed unit's gradient-norm CV over
    samples vs its class selectivity, one panel per layer."""
    layers = result["layers"]
    names = result["layer_names"]
    fig, axes = _panels(len(GRADIENT_STATISTICS), 2, width=max(4.2, 0.35 * len(names) + 1.5))
    for ax, statistic in zip(axes, GRADIENT_STATISTICS):
        ax.plot(range(len(names)), [layers[n][f"{statistic}_mean"] for n in names], "-o", markersize=3, color="C0")
        layer_axis(ax, names)
        ax.set(ylabel=STATISTIC_LABELS[statistic])
    fig.suptitle(_run_title(result, "Input-unit gradient variability by layer"), fontsize=10)
    figures = {"by_layer": fig}
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        ax.scatter(layers[name]["unit_selectivity"], layers[name]["norm_cv_over_samples"], s=10, color="C2",
                   edgecolors="none")
        ax.set(title=name, xlabel="unit class selectivity", ylabel="gradient-norm CV over samples")
        ax.grid(alpha=0.3)
    fig.suptitle(_run_title(result, "Per-unit gradient variability vs selectivity"), fontsize=10)
    figures["units"] = fig
    return figures


def gradients_sweep_figures(comparison: Mapping[str, Any]) -> dict[str, Figure]:
    """'variability_vs_selectivity': each statistic (mean over layers) vs network selectivity, one point per run
    coloured by alpha; 'by_layer': gradient-norm CV over samples per layer, one line per alpha (seed mean)."""
    runs = comparison["runs"]
    alphas = sorted({run["alpha"] for run in runs})
    norm, cmap = alpha_colors(alphas)
    fig, axes = _panels(len(GRADIENT_STATISTICS), 2)
    for ax, statistic in zip(axes, GRADIENT_STATISTICS):
        ax.scatter([run["network_selectivity"] for run in runs], [run[f"{statistic}_mean"] for run in runs],
                   c=[run["alpha"] for run in runs], cmap=cmap, norm=norm, s=40, edgecolors="0.2", linewidths=0.5)
        ax.set(xlabel="network class selectivity (analysed subset)", ylabel=STATISTIC_LABELS[statistic])
        ax.grid(alpha=0.3)
    alpha_colorbar(fig, axes, alphas)
    fig.suptitle("Input-unit gradient variability (mean over layers) vs selectivity, one point per run", fontsize=10)
    figures = {"variability_vs_selectivity": fig}
    layers = comparison["layer_names"]
    fig = new_figure(layers_width(layers), 4.4)
    ax = fig.add_subplot()
    for row in comparison["alphas"]:
        ax.plot(range(len(layers)), [row["layers"][layer]["norm_cv_over_samples"]["mean"] for layer in layers],
                "-o", markersize=3, color=cmap(norm(row["alpha"])))
    layer_axis(ax, layers)
    ax.set(ylabel=STATISTIC_LABELS["norm_cv_over_samples"], title="Gradient variability by layer, one line per α")
    alpha_colorbar(fig, ax, alphas)
    figures["by_layer"] = fig
    return figures


# ----------------------------------------------------------------------------------------------------------------------
# dimensionality
# ----------------------------------------------------------------------------------------------------------------------

def dimensionality_run_figures(result: Mapping[str, Any]) -> dict[str, Figure]:
    """'by_layer': PCA components and participation ratio per layer of the clean representation and of its change
    under corruptions and PGD."""
    layers = result["layers"]
    names = result["layer_names"]
    kinds = [kind for kind in DIMENSIONALITY_KINDS if layers[names[0]][kind] is not None]
    fig, axes = _grid(2, width=4.6, height=3.4)
    for ax, measure in zip(axes, MEASURE_LABELS):
        for kind in kinds:
            ax.plot(range(len(names)), [layers[n][kind][measure] for n in names], "-o", markersize=3,
                    color=KIND_COLORS[kind], label=KIND_LABELS[kind])
        layer_axis(ax, names)
        ax.set(ylabel=MEASURE_LABELS[measure])
    axes[0].legend(fontsize=7)
    fig.suptitle(_run_title(result, "Dimensionality by layer"), fontsize=10)
    return {"by_layer": fig}


def dimensionality_sweep_figures(comparison: Mapping[str, Any]) -> dict[str, Figure]:
    """'by_layer': one column per kind (clean, corruption change, adversarial change), rows PCA components and
    participation ratio, one line per alpha (mean over seeds)."""
    rows = comparison["alphas"]
    alphas = [row["alpha"] for row in rows]
    norm, cmap = alpha_colors(alphas)
    layers = comparison["layer_names"]
    kinds = comparison["kinds"]
    width = max(4.0, 0.3 * len(layers) + 2.0)
    fig = new_figure(width * len(kinds) + 1.0, 6.8)
    axes = fig.subplots(2, len(kinds), squeeze=False)
    for column, kind in enumerate(kinds):
        for row_index, measure in enumerate(MEASURE_LABELS):
            ax = axes[row_index, column]
            for row in rows:
                ax.plot(range(len(layers)), [row[kind][measure][layer]["mean"] for layer in layers], "-o",
                        markersize=3, color=cmap(norm(row["alpha"])))
            layer_axis(ax, layers)
            ax.set_ylabel(MEASURE_LABELS[measure])
            if row_index == 0:
                ax.set_title(KIND_LABELS[kind])
    alpha_colorbar(fig, axes.ravel().tolist(), alphas)
    fig.suptitle("Dimensionality by layer, one line per α (mean over seeds)", fontsize=10)
    return {"by_layer": fig}
