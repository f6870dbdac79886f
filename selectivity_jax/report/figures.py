"""The sweep figures of Leavitt & Morcos (ICLR 2021), drawn with matplotlib's Agg canvas.

Each figure function takes a `Sweep` and returns a `matplotlib.figure.Figure` without touching pyplot's global
state (nothing to close; no display needed). `save_figure` writes one as PNG and SVG. Alpha is drawn on a symlog
axis, and coloured with a diverging colormap centred at alpha = 0 (blue: selectivity discouraged, red: encouraged).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, LinearSegmentedColormap, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from selectivity_jax.report.runs import Run, Sweep
from selectivity_jax.report.tables import (CONFIDENCE_LEVEL, LAYER_SELECTIVITY_KEY, TRAINING_SELECTIVITY_KEYS,
                                           MeanInterval, dead_fractions, intervals_by_alpha, mean_std, summarize,
                                           training_curves)

# Blue (selectivity discouraged) through a mid grey that stays visible on white (alpha = 0) to red (encouraged).
ALPHA_CMAP = LinearSegmentedColormap.from_list("alpha", ["#2c4fc7", "#8c8c8c", "#c4122a"])
ALPHA_LABEL = "α  (loss = CE − α · selectivity)"
SELECTIVITY_LABEL = "network class selectivity (test)"
ACCURACY_LABEL = "test accuracy"

# File name -> caption of every figure `make_figures` draws, in report order.
FIGURE_CAPTIONS = {
    "accuracy_vs_alpha": "Test accuracy vs α",
    "selectivity_vs_alpha": "Network selectivity vs α",
    "accuracy_vs_selectivity": "Test accuracy vs network selectivity",
    "layer_selectivity": "Selectivity by layer",
    "unit_selectivity_distribution": "Distribution of unit selectivity by layer",
    "paper_accuracy_selectivity": "Selectivity and test accuracy vs α, α ≤ 0 and α ≥ 0 apart (the paper's Figs. 2-3; "
                                  "mean and 95% CI over seeds)",
    "dead_units_vs_alpha": "Fraction of dead units vs α, by layer",
    "selectivity_over_training": "Network selectivity over training, per α (metrics.jsonl holds no per-layer "
                                 "selectivity)",
}

# The paper's Fig. 2 zooms on the small negative alphas, where discouraging selectivity costs little or no accuracy:
# the inset of the alpha <= 0 accuracy panel shows the alphas with |alpha| up to this value (drawn when there are
# at least two of them).
INSET_MAX_ABS_ALPHA = 1.0


def new_figure(width: float = 6.4, height: float = 4.4) -> Figure:
    """A figure on its own Agg canvas (pyplot is not used)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def linthresh(alphas: Sequence[float]) -> float:
    """The symlog linear threshold: the smallest non-zero |alpha|, or 1."""
    nonzero = [abs(a) for a in alphas if a != 0]
    return min(nonzero) if nonzero else 1.0


def alpha_norm(alphas: Sequence[float]) -> SymLogNorm:
    """A symmetric-log colour normalisation of alpha centred at 0 (0 maps to the colormap's middle)."""
    threshold = linthresh(alphas)
    largest = max([abs(a) for a in alphas] + [threshold])
    return SymLogNorm(linthresh=threshold, linscale=1.0, vmin=-largest, vmax=largest, base=10)


def alpha_ticks(alphas: Sequence[float], max_labelled: int = 9) -> list[float]:
    """The alphas themselves when there are at most ``max_labelled`` of them; otherwise 0, the signed powers of ten
    from the symlog threshold up to the largest |alpha|, and the smallest and largest alpha."""
    values = sorted({float(a) for a in alphas})
    if len(values) <= max_labelled:
        return values
    threshold = linthresh(alphas)
    largest = max([abs(a) for a in alphas] + [threshold])
    decades = 10.0 ** np.arange(np.floor(np.log10(threshold)), np.floor(np.log10(largest)) + 1)
    return sorted({0.0, values[0], values[-1]} | {float(sign * d) for d in decades for sign in (-1, 1)})


def _alpha_label(value: float, _position=None) -> str:
    return f"{value:g}"


def alpha_colors(alphas: Sequence[float], cmap: str | Colormap = ALPHA_CMAP) -> tuple[SymLogNorm, Colormap]:
    """The (norm, colormap) pair that colours alphas."""
    return alpha_norm(alphas), colormaps[cmap] if isinstance(cmap, str) else cmap


def alpha_axis(ax, alphas: Sequence[float]) -> None:
    """Makes ``ax``'s x axis an alpha axis: symlog scale, ticks at `alpha_ticks`, a dotted line at alpha = 0."""
    ax.set_xscale("symlog", linthresh=linthresh(alphas), linscale=1.0)
    ax.set_xticks([t for t in alpha_ticks(alphas) if min(alphas) <= t <= max(alphas)])  # not widening the axis
    ax.xaxis.set_major_formatter(FuncFormatter(_alpha_label))
    ax.xaxis.set_minor_locator(NullLocator())  # symlog's minor ticks crowd, unlabelled, around the threshold
    ax.axvline(0.0, color="0.75", linewidth=0.8, linestyle=":", zorder=0)
    ax.set_xlabel(ALPHA_LABEL)
    ax.grid(alpha=0.3)


def alpha_colorbar(fig: Figure, ax, alphas: Sequence[float]) -> None:
    """A colour bar of the alpha colours (`alpha_colors`) beside ``ax`` (one axes, or a list it spans)."""
    norm, cmap = alpha_colors(alphas)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    bar.set_ticks(alpha_ticks(alphas))
    bar.ax.yaxis.set_major_formatter(FuncFormatter(_alpha_label))
    bar.ax.yaxis.set_minor_locator(NullLocator())
    bar.set_label("α")


def _runs_label(sweep: Sweep) -> str:
    seeds = sorted({run.seed for run in sweep.runs})
    return f"{len(sweep.runs)} runs, {len(sweep.alphas)} alphas, seeds {', '.join(map(str, seeds))}"


def metric_vs_alpha(sweep: Sweep, value: Callable[[Run], float], ylabel: str, title: str) -> Figure:
    """Mean ± sample std over seeds of ``value(run)`` against alpha (symlog), each seed a faint point."""
    fig = new_figure()
    ax = fig.add_subplot()
    alphas = sweep.alphas
    ax.scatter([run.alpha for run in sweep.runs], [value(run) for run in sweep.runs], s=22, color="0.3",
               alpha=0.45, linewidths=0, label="one seed", zorder=4)
    stats = np.array([mean_std([value(run) for run in sweep.runs_at(alpha)]) for alpha in alphas])
    ax.errorbar(alphas, stats[:, 0], yerr=stats[:, 1], fmt="-o", color="C0", markersize=4, capsize=3,
                linewidth=1.5, label="mean ± std over seeds", zorder=3)
    alpha_axis(ax, alphas)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{sweep.model}: {title}\n{_runs_label(sweep)}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def accuracy_vs_alpha(sweep: Sweep) -> Figure:
    """Test accuracy against alpha: mean ± std over seeds, seeds as faint points."""
    return metric_vs_alpha(sweep, lambda run: run.results.test_accuracy, ACCURACY_LABEL, "test accuracy vs α")


def selectivity_vs_alpha(sweep: Sweep) -> Figure:
    """Network selectivity (mean over layers) against alpha, same style as `accuracy_vs_alpha`."""
    return metric_vs_alpha(sweep, lambda run: run.results.test_selectivity, SELECTIVITY_LABEL, "network selectivity vs α")


def accuracy_vs_selectivity(sweep: Sweep) -> Figure:
    """One point per run, test accuracy against network selectivity, coloured by alpha."""
    fig = new_figure()
    ax = fig.add_subplot()
    norm, cmap = alpha_colors(sweep.alphas)
    ax.scatter([run.results.test_selectivity for run in sweep.runs], [run.results.test_accuracy for run in sweep.runs],
               c=[run.alpha for run in sweep.runs], cmap=cmap, norm=norm, s=40, edgecolors="0.2", linewidths=0.5,
               zorder=2)
    alpha_colorbar(fig, ax, sweep.alphas)
    ax.set_xlabel(SELECTIVITY_LABEL)
    ax.set_ylabel(ACCURACY_LABEL)
    ax.grid(alpha=0.3)
    ax.set_title(f"{sweep.model}: test accuracy vs selectivity, one point per run\n{_runs_label(sweep)}",
                 fontsize=10)
    return fig


def layer_axis(ax, layer_names: Sequence[str]) -> None:
    """Makes ``ax``'s x axis the layers in forward order (positions 0 .. L-1, names slanted)."""
    ax.set_xticks(range(len(layer_names)), layer_names, rotation=45, ha="right", rotation_mode="anchor",
                  fontsize=8)
    ax.set_xlim(-0.6, len(layer_names) - 0.4)
    ax.set_xlabel("layer (forward order)")
    ax.grid(alpha=0.3)


def layers_width(layer_names: Sequence[str]) -> float:
    """A figure width (inches) that fits ``layer_names`` along the x axis."""
    return max(6.4, 0.42 * len(layer_names) + 2.5)


def layer_selectivity(sweep: Sweep, max_legend: int = 7) -> Figure:
    """Mean selectivity over seeds per layer against depth, one line per alpha coloured by alpha."""
    layers = sweep.layer_names
    fig = new_figure(layers_width(layers), 4.6)
    ax = fig.add_subplot()
    norm, cmap = alpha_colors(sweep.alphas)
    for summary in summarize(sweep):
        values = [summary.layer_selectivity.get(name, np.nan) for name in layers]
        ax.plot(range(len(layers)), values, "-o", markersize=3, linewidth=1.3, color=cmap(norm(summary.alpha)),
                label=f"α = {summary.alpha:g} (n={summary.n})")
    alpha_colorbar(fig, ax, sweep.alphas)
    layer_axis(ax, layers)
    ax.set_ylabel("layer selectivity (mean over units, seeds)")
    ax.set_title(f"{sweep.model}: selectivity by layer, one line per α\n{_runs_label(sweep)}", fontsize=10)
    if len(sweep.alphas) <= max_legend:
        ax.legend(fontsize=7)
    return fig


def distribution_alphas(sweep: Sweep) -> list[float]:
    """The smallest alpha, the one closest to 0 and the largest, among runs with per-unit arrays."""
    alphas = sorted({run.alpha for run in sweep.runs if run.unit_selectivity})
    if not alphas:
        return []
    return sorted({alphas[0], min(alphas, key=abs), alphas[-1]})


def pooled_units(sweep: Sweep, alpha: float, layer: str) -> np.ndarray:
    """The finite per-unit selectivities of ``layer`` over every seed at ``alpha``."""
    arrays = [np.ravel(run.unit_selectivity[layer]) for run in sweep.runs_at(alpha) if layer in run.unit_selectivity]
    pooled = np.concatenate(arrays) if arrays else np.zeros(0)
    return pooled[np.isfinite(pooled)]


def unit_selectivity_distribution(sweep: Sweep, alphas: Sequence[float] | None = None) -> Figure:
    """Per-layer box plots of the per-unit selectivity pooled over seeds, a box per chosen alpha side by side.

    Boxes span the quartiles with the median marked; whiskers reach the 5th and 95th percentiles. ``alphas``
    defaults to `distribution_alphas` (min, closest to 0, max). Raises ValueError when no run has per-unit arrays.
    """
    alphas = list(alphas) if alphas is not None else distribution_alphas(sweep)
    if not alphas:
        raise ValueError("no finished run has per-unit selectivity (selectivity.npz)")
    layers = sweep.layer_names
    fig = new_figure(layers_width(layers), 4.6)
    ax = fig.add_subplot()
    norm, cmap = alpha_colors(sweep.alphas)
    width = 0.8 / len(alphas)
    handles = []
    for j, alpha in enumerate(alphas):
        color = cmap(norm(alpha))
        data = [(i, pooled_units(sweep, alpha, name)) for i, name in enumerate(layers)]
        data = [(i, units) for i, units in data if units.size]
        if data:
            offset = (j - (len(alphas) - 1) / 2) * width
            ax.boxplot([units for _, units in data], positions=[i + offset for i, _ in data],
                       widths=0.9 * width, whis=(5, 95), showfliers=False, patch_artist=True,
                       boxprops={"facecolor": color, "edgecolor": "0.2", "linewidth": 0.7},
                       medianprops={"color": "black", "linewidth": 1.0},
                       whiskerprops={"color": "0.3", "linewidth": 0.7}, capprops={"color": "0.3", "linewidth": 0.7})
        seeds = len(sweep.runs_at(alpha))
        label = f"α = {alpha:g} ({seeds} seed{'s' if seeds != 1 else ''} pooled)"
        handles.append(Patch(facecolor=color, edgecolor="0.2", label=label))
    layer_axis(ax, layers)
    ax.set_ylabel("unit class selectivity index (test)")
    ax.legend(handles=handles, fontsize=7)
    ax.set_title(f"{sweep.model}: per-unit selectivity by layer, seeds pooled\n"
                 "box: quartiles and median; whiskers: 5th-95th percentile", fontsize=10)
    return fig


def split_at_zero(alphas: Sequence[float]) -> tuple[list[float], list[float]]:
    """(alphas <= 0, alphas >= 0), each ascending: alpha = 0, the unregularized baseline, is in both halves (as in
    the paper's Figs. 2 and 3)."""
    values = sorted({float(a) for a in alphas})
    return [a for a in values if a <= 0], [a for a in values if a >= 0]


def _ci_label(level: float) -> str:
    return f"mean over seeds, {100 * level:g}% CI (Student t; none for one seed)"


def interval_line(ax, alphas: Sequence[float], intervals: Sequence[MeanInterval], color, label: str | None = None,
                  marker_colors: Sequence | None = None) -> None:
    """Means over seeds against alpha joined by a line, markers (``marker_colors``: one colour per point, default
    ``color``) and confidence-interval error bars at the points with an interval (two or more seeds)."""
    means = [interval.mean for interval in intervals]
    ax.plot(alphas, means, "-", color=color, linewidth=1.5, label=label, zorder=2)
    ax.scatter(alphas, means, color=list(marker_colors) if marker_colors is not None else color, s=26,
               edgecolors="0.2", linewidths=0.5, zorder=4)
    bars = [(a, i) for a, i in zip(alphas, intervals) if i.n >= 2 and np.isfinite(i.half_width)]
    if bars:
        ax.errorbar([a for a, _ in bars], [i.mean for _, i in bars], yerr=[i.half_width for _, i in bars],
                    fmt="none", ecolor=color, elinewidth=1.0, capsize=3, zorder=3)


def _empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.4")


def zoom_inset(ax, alphas: Sequence[float], intervals: Sequence[MeanInterval], colors: Sequence, color,
               max_abs_alpha: float = INSET_MAX_ABS_ALPHA):
    """An inset in the lower right of ``ax`` (linear alpha axis) of the points with |alpha| <= ``max_abs_alpha``,
    their alpha span shaded on ``ax``; None (nothing drawn) when fewer than two points are that close to 0."""
    near = [k for k, a in enumerate(alphas) if abs(a) <= max_abs_alpha]
    if len(near) < 2:
        return None
    inset = ax.inset_axes([0.5, 0.07, 0.47, 0.42])
    interval_line(inset, [alphas[k] for k in near], [intervals[k] for k in near], color,
                  marker_colors=[colors[k] for k in near])
    inset.set_xticks([alphas[k] for k in near] if len(near) <= 6 else inset.get_xticks())
    inset.xaxis.set_major_formatter(FuncFormatter(_alpha_label))
    inset.tick_params(labelsize=7)
    inset.grid(alpha=0.3)
    inset.set_title(f"zoom: |α| ≤ {max_abs_alpha:g}", fontsize=7, pad=2)
    ax.axvspan(alphas[near[0]], alphas[near[-1]], color="0.85", alpha=0.5, zorder=0, linewidth=0)  # the zoomed span
    return inset


def paper_accuracy_selectivity(sweep: Sweep, level: float = CONFIDENCE_LEVEL,
                               inset_max_abs_alpha: float = INSET_MAX_ABS_ALPHA) -> Figure:
    """The layout of Leavitt & Morcos (2021) Figs. 2 (α ≤ 0, selectivity discouraged) and 3 (α ≥ 0, encouraged)
    side by side: network selectivity (top row) and test accuracy (bottom row) against α, the mean over seeds with
    its Student-t confidence interval, points coloured by α; α = 0 in both columns; the α ≤ 0 accuracy panel has a
    zoomed inset near α = 0 (`zoom_inset`). Rows share their y axis."""
    intervals = {interval.alpha: interval for interval in intervals_by_alpha(sweep, level)}
    norm, cmap = alpha_colors(sweep.alphas)
    fig = new_figure(11.0, 7.8)
    axes = fig.subplots(2, 2, sharey="row")
    halves = [("α ≤ 0: selectivity discouraged", split_at_zero(sweep.alphas)[0]),
              ("α ≥ 0: selectivity encouraged", split_at_zero(sweep.alphas)[1])]
    rows = [("selectivity", SELECTIVITY_LABEL), ("accuracy", ACCURACY_LABEL)]
    for column, (heading, alphas) in enumerate(halves):
        colors = [cmap(norm(a)) for a in alphas]
        for row, (metric, ylabel) in enumerate(rows):
            ax = axes[row][column]
            if row == 0:
                ax.set_title(heading, fontsize=10)
            if column == 0:
                ax.set_ylabel(ylabel)
            if not alphas:
                _empty_panel(ax, "no finished run on this side of α = 0")
                continue
            values = [getattr(intervals[a], metric) for a in alphas]
            interval_line(ax, alphas, values, "0.35", label=_ci_label(level), marker_colors=colors)
            alpha_axis(ax, alphas)
            if metric == "accuracy" and column == 0:
                zoom_inset(ax, alphas, values, colors, "0.35", inset_max_abs_alpha)
    handles, labels = next((found for found in (ax.get_legend_handles_labels() for ax in axes[0]) if found[0]),
                           ([], []))
    if handles:
        fig.legend(handles, labels, loc="outside lower center", fontsize=8)
    fig.suptitle(f"{sweep.model}: selectivity and test accuracy vs α (the paper's Figs. 2-3)\n"
                 f"{_runs_label(sweep)}", fontsize=10)
    return fig


def dead_units_vs_alpha(sweep: Sweep, layer_cmap: str = "viridis") -> Figure:
    """The fraction of dead units (never active on the test set) against alpha, mean over seeds: one line per layer
    coloured by depth (``layer_cmap``), the network's (mean over layers) in black."""
    dead = dead_fractions(sweep)
    fig = new_figure(8.4, 4.8)
    ax = fig.add_subplot()
    colors = colormaps[layer_cmap](np.linspace(0.0, 0.9, max(len(dead.layers), 1)))
    for name, color in zip(dead.layers, colors):
        ax.plot(dead.alphas, dead.per_layer[name], "-o", markersize=3, linewidth=1.0, color=color, label=name)
    ax.plot(dead.alphas, dead.network, "-s", markersize=4, linewidth=2.0, color="black",
            label="network (mean over layers)")
    alpha_axis(ax, dead.alphas)
    ax.set_ylim(bottom=-0.01)  # a fraction: nothing below 0 to show
    ax.set_ylabel("fraction of dead units (test)")
    if dead.empty:
        _empty_panel(ax, "no run recorded dead-unit fractions (results.json)")
    else:
        fig.legend(loc="outside right upper", fontsize=7)
    ax.set_title(f"{sweep.model}: dead units vs α, mean over seeds\n{_runs_label(sweep)}", fontsize=10)
    return fig


def _same_y_range(axes: Sequence[Any]) -> None:
    """One y range for ``axes``: the union of their data ranges."""
    drawn = [ax for ax in axes if ax.lines]
    if drawn:
        low, high = min(ax.get_ylim()[0] for ax in drawn), max(ax.get_ylim()[1] for ax in drawn)
        for ax in drawn:
            ax.set_ylim(low, high)


def selectivity_over_training(sweep: Sweep) -> Figure:
    """Selectivity per epoch from each run's metrics.jsonl, one line per alpha coloured by alpha (mean over seeds):
    a panel per column of `TRAINING_SELECTIVITY_KEYS` (network selectivity on train batches and on the validation
    split), then, where the runs logged it (`LAYER_SELECTIVITY_KEY`), a panel per layer on the validation split."""
    layer_panels = [(LAYER_SELECTIVITY_KEY, f"validation, {name}", name) for name in sweep.layer_names
                    if training_curves(sweep, LAYER_SELECTIVITY_KEY, name)]
    rows = [(key, what, None) for key, what in TRAINING_SELECTIVITY_KEYS.items()] + layer_panels
    size = {"columns": 3, "width": 3.6, "height": 3.0} if layer_panels else {"columns": 2, "width": 4.8, "height": 3.9}
    fig, axes = panels(len(rows), **size)
    norm, cmap = alpha_colors(sweep.alphas)
    for ax, (key, what, layer) in zip(axes, rows):
        curves = training_curves(sweep, key, layer)
        for curve in curves:  # a run that logged one epoch is a point: drawn large enough to see its colour
            ax.plot(curve.epochs, curve.values, "-o", markersize=3 if len(curve.epochs) > 1 else 7, linewidth=1.3,
                    color=cmap(norm(curve.alpha)))
        if curves:  # half an epoch either side, so that a single epoch gets an integer tick
            ax.set_xlim(min(c.epochs[0] for c in curves) - 0.5, max(c.epochs[-1] for c in curves) + 0.5)
        else:
            _empty_panel(ax, f"no {key} in metrics.jsonl")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.set_ylabel("network selectivity" if layer is None else "layer selectivity")
        ax.set_title(f"{key}: {what}" if layer is None else what, fontsize=9 if layer is None else 8)
        ax.grid(alpha=0.3)
    _same_y_range(axes[len(TRAINING_SELECTIVITY_KEYS):])  # the layers' panels compare at a glance
    alpha_colorbar(fig, axes, sweep.alphas)  # one bar for every panel, not squeezed beside the last
    fig.suptitle(f"{sweep.model}: selectivity during training, mean over seeds\n"
                 f"{_runs_label(sweep)}", fontsize=10)
    return fig


def sweeps_vs_alpha(sweeps: Sequence[Sweep], labels: Sequence[str], level: float = CONFIDENCE_LEVEL) -> Figure:
    """Test accuracy (left) and network selectivity (right) against alpha of several sweeps overlaid, one colour
    per sweep (``labels[k]`` names ``sweeps[k]``): mean over seeds with its Student-t confidence interval."""
    if len(labels) != len(sweeps):
        raise ValueError(f"labels: one per sweep, got {len(labels)} for {len(sweeps)} sweeps")
    fig, axes = panels(2, columns=2, width=5.4, height=4.4)
    every_alpha = sorted({a for sweep in sweeps for a in sweep.alphas})
    for k, (sweep, label) in enumerate(zip(sweeps, labels)):
        intervals = intervals_by_alpha(sweep, level)
        alphas = [interval.alpha for interval in intervals]
        for ax, metric in zip(axes, ("accuracy", "selectivity")):
            interval_line(ax, alphas, [getattr(i, metric) for i in intervals], f"C{k}",
                          label=f"{label} ({sweep.model}, {len(sweep.runs)} runs)")
    for ax, ylabel in zip(axes, (ACCURACY_LABEL, SELECTIVITY_LABEL)):
        alpha_axis(ax, every_alpha)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.suptitle(f"{' vs '.join(labels)}: {_ci_label(level)}", fontsize=10)
    return fig


def make_figures(sweep: Sweep) -> dict[str, Figure]:
    """Every figure of `FIGURE_CAPTIONS` by file name; the distribution only when per-unit arrays exist."""
    figures = {"accuracy_vs_alpha": accuracy_vs_alpha(sweep), "selectivity_vs_alpha": selectivity_vs_alpha(sweep),
               "accuracy_vs_selectivity": accuracy_vs_selectivity(sweep), "layer_selectivity": layer_selectivity(sweep)}
    if distribution_alphas(sweep):
        figures["unit_selectivity_distribution"] = unit_selectivity_distribution(sweep)
    figures.update({"paper_accuracy_selectivity": paper_accuracy_selectivity(sweep),
                    "dead_units_vs_alpha": dead_units_vs_alpha(sweep),
                    "selectivity_over_training": selectivity_over_training(sweep)})
    return figures


def save_figure(fig: Figure, path_without_ext: str, dpi: int = 150) -> list[str]:
    """Writes ``path_without_ext``.png and .svg (creating the directory) and returns both paths."""
    directory = os.path.dirname(path_without_ext)
    if directory:
        os.makedirs(directory, exist_ok=True)
    paths = [f"{path_without_ext}.png", f"{path_without_ext}.svg"]
    for path in paths:
        fig.savefig(path, dpi=dpi)
    return paths


# ----------------------------------------------------------------------------------------------------------------------
# helpers of the analyses' figures (selectivity_jax.analyses)
# ----------------------------------------------------------------------------------------------------------------------

def run_title(alpha: float, seed: int, what: str) -> str:
    """'<what>: α = <alpha>, seed <seed>', the title of one run's figure."""
    return f"{what}: α = {alpha:g}, seed {seed}"


def panels(count: int, columns: int = 3, width: float = 3.2, height: float = 2.6) -> tuple[Figure, list]:
    """A figure with ``count`` panels in rows of at most ``columns`` (unused slots hidden): (figure, axes)."""
    columns = min(columns, count)
    rows = -(-count // columns)
    fig = new_figure(width * columns, height * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def wrap_caption(text: str, fig: Figure) -> str:
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


def mean_band(ax, x: Sequence[float], means: Sequence[float], stds: Sequence[float], color, label: str) -> None:
    """Means with error bars of one standard deviation (over seeds), one point per x."""
    ax.errorbar(x, np.asarray(means), yerr=np.asarray(stds), fmt="-o", color=color, markersize=4, capsize=3,
                label=label)


def lines_per_alpha(fig: Figure, ax, alphas: Sequence[float], x: Sequence[float],
                    values: Sequence[Sequence[float]]) -> None:
    """One line per alpha (alpha colours and a colour bar): ``values[i]`` against ``x`` for ``alphas[i]``."""
    norm, cmap = alpha_colors(alphas)
    for alpha, line in zip(alphas, values):
        ax.plot(x, line, "-o", markersize=3, linewidth=1.3, color=cmap(norm(alpha)))
    alpha_colorbar(fig, ax, alphas)
