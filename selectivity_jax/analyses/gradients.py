"""Variability of input-unit gradients (Leavitt & Morcos, "Linking average- and worst-case perturbation robustness
via class selectivity and dimensionality": the gradient of a unit's response with respect to the input was more
variable across samples and units in high-selectivity networks).

Per layer, on a class-balanced subset of the analysed examples and a random subset of the units: the coefficient of
variation of the gradient norms over samples and over units, and the mean cosine distance of the gradients over
samples and over units, beside the layer's selectivity, for "variability vs selectivity". Per-unit and per-sample
values are kept, the [N, K] gradient norms are not. Math: `selectivity_jax.measures.gradients`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from selectivity_jax.analyses.base import Analysis, RunContext, RunResult, by_alpha
from selectivity_jax.data.splits import subset
from selectivity_jax.measures.gradients import gradient_variability
from selectivity_jax.records import Record, SeedStat, seed_stat
from selectivity_jax.report.figures import (alpha_colorbar, alpha_colors, layer_axis, layers_width, new_figure, panels,
                                            run_title)
from selectivity_jax.report.tables import markdown_table

GRADIENT_STATISTICS = ("norm_cv_over_samples", "norm_cv_over_units", "cosine_distance_over_samples",
                       "cosine_distance_over_units")
STATISTIC_LABELS = {"norm_cv_over_samples": "gradient-norm CV over samples",
                    "norm_cv_over_units": "gradient-norm CV over units",
                    "cosine_distance_over_samples": "cosine distance over samples",
                    "cosine_distance_over_units": "cosine distance over units"}
STATISTIC_HEADERS = ["norm CV over samples", "norm CV over units", "cosine distance over samples",
                     "cosine distance over units"]


@dataclasses.dataclass(frozen=True)
class GradientSummary(Record):
    """The four statistics as NaN-ignoring means (over units, samples, or the layers of a summary)."""
    norm_cv_over_samples_mean: float
    norm_cv_over_units_mean: float
    cosine_distance_over_samples_mean: float
    cosine_distance_over_units_mean: float

    def statistic(self, name: str) -> float:
        """The mean of one of `GRADIENT_STATISTICS`."""
        return getattr(self, f"{name}_mean")


@dataclasses.dataclass(frozen=True)
class GradientLayer(GradientSummary):
    unit_indices: list[int]                    # the analysed units [K]
    norm_cv_over_samples: list[float]          # per unit [K]
    cosine_distance_over_samples: list[float]  # per unit [K]
    mean_gradient_norm: list[float]            # per unit [K]
    norm_cv_over_units: list[float]            # per sample [N]
    cosine_distance_over_units: list[float]    # per sample [N]
    num_samples: int
    num_units: int
    num_units_zero_gradient: int               # units whose gradient is zero at every sample
    selectivity: float                         # mean selectivity of all the layer's units (NaN-ignoring)
    unit_selectivity: list[float]              # selectivity of the analysed units [K]


@dataclasses.dataclass(frozen=True)
class GradientsResult(Record):
    num_examples: int
    layers: dict[str, GradientLayer]
    layer_names: list[str]        # forward order
    summary: GradientSummary      # NaN-ignoring means over layers
    network_selectivity: float    # mean over layers of the layers' selectivity (on the analysed subset)


@dataclasses.dataclass(frozen=True)
class GradientRun(Record):
    """One run of a sweep: a point of "variability vs selectivity"."""
    alpha: float
    seed: int
    network_selectivity: float
    test_selectivity: float
    summary: GradientSummary


@dataclasses.dataclass(frozen=True)
class GradientsAlpha(Record):
    alpha: float
    seeds: list[int]
    stats: dict[str, SeedStat]               # network_selectivity and each summary mean, over seeds
    layers: dict[str, dict[str, SeedStat]]   # {layer: {selectivity or a statistic's mean: over seeds}}


@dataclasses.dataclass(frozen=True)
class GradientsComparison(Record):
    runs: list[GradientRun]
    alphas: list[GradientsAlpha]
    layer_names: list[str]


def _layer_stats(results: Sequence[RunResult[GradientsResult]], layer: str) -> dict[str, SeedStat]:
    layers = [r.result.layers[layer] for r in results]
    return {"selectivity": seed_stat([v.selectivity for v in layers]),
            **{s: seed_stat([v.statistic(s) for v in layers]) for s in GRADIENT_STATISTICS}}


class Gradients(Analysis[GradientsResult, GradientsComparison]):
    name = "gradients"
    title = "Input-unit gradient variability"
    result_type = GradientsResult
    comparison_type = GradientsComparison

    def default_settings(self) -> ml_collections.ConfigDict:
        settings = ml_collections.ConfigDict()
        settings.num_examples = 200   # Examples differentiated: a class-balanced subset of the analysed ones.
        settings.max_units = 32       # Units per layer, a random subset drawn by seed (0: every unit).
        settings.unit_chunk_size = 16  # Units differentiated together in one vmapped call (speed/memory only).
        return settings

    def check(self, settings: ml_collections.ConfigDict) -> None:
        if settings.max_units < 0 or settings.num_examples < 0:
            raise ValueError("gradients.max_units and gradients.num_examples must be >= 0")
        if settings.unit_chunk_size < 1:
            raise ValueError(f"gradients.unit_chunk_size must be >= 1; got {settings.unit_chunk_size}")

    def run(self, context: RunContext, settings: ml_collections.ConfigDict) -> GradientsResult:
        images, labels = subset(*context.data, settings.num_examples, context.seed)
        layers = {}
        for layer in context.layers:
            start = time.time()
            variability = gradient_variability(context.run.units_fn(layer), images,
                                               batch_size=min(context.batch_size, len(images)),
                                               max_units=settings.max_units or None, key=jax.random.key(context.seed),
                                               unit_chunk_size=settings.unit_chunk_size)
            selectivity = context.selectivity[layer]
            layers[layer] = GradientLayer(
                **{field.name: np.asarray(variability[field.name]).tolist()
                   for field in dataclasses.fields(GradientLayer) if field.name in variability},
                selectivity=float(np.nanmean(selectivity)),
                unit_selectivity=selectivity[variability["unit_indices"]].tolist())
            context.log(f"    gradients {layer} ({variability['num_units']} units): norm CV over samples "
                        f"{variability['norm_cv_over_samples_mean']:.3f} ({time.time() - start:.1f}s)")
        summary = GradientSummary(**{f"{s}_mean": float(np.nanmean([v.statistic(s) for v in layers.values()]))
                                     for s in GRADIENT_STATISTICS})
        return GradientsResult(num_examples=int(len(labels)), layers=layers, layer_names=list(layers),
                               summary=summary,
                               network_selectivity=float(np.mean([v.selectivity for v in layers.values()])))

    def compare(self, results: Sequence[RunResult[GradientsResult]], settings: ml_collections.ConfigDict
                ) -> GradientsComparison:
        runs = [GradientRun(r.alpha, r.seed, r.result.network_selectivity, r.test_selectivity, r.result.summary)
                for r in results]
        layers = results[0].result.layer_names
        rows = [GradientsAlpha(
            alpha=alpha, seeds=[r.seed for r in group],
            stats={"network_selectivity": seed_stat([r.result.network_selectivity for r in group]),
                   **{f"{s}_mean": seed_stat([r.result.summary.statistic(s) for r in group])
                      for s in GRADIENT_STATISTICS}},
            layers={layer: _layer_stats(group, layer) for layer in layers})
            for alpha, group in by_alpha(results).items()]
        return GradientsComparison(runs=runs, alphas=rows, layer_names=layers)

    def run_table(self, result: RunResult[GradientsResult]) -> str:
        record = result.result
        rows = [[f"`{name}`", str(layer.num_units), f"{layer.selectivity:.3f}",
                 *(f"{layer.statistic(s):.3f}" for s in GRADIENT_STATISTICS)]
                for name, layer in ((name, record.layers[name]) for name in record.layer_names)]
        return (f"Input-unit gradients on {record.num_examples} test examples; NaN-ignoring means over units or "
                "samples.\n\n" + markdown_table(["layer", "units", "selectivity", *STATISTIC_HEADERS], rows))

    def sweep_table(self, comparison: GradientsComparison) -> str:
        rows = [[f"{row.alpha:g}", str(len(row.seeds)), row.stats["network_selectivity"].format(),
                 *(row.stats[f"{s}_mean"].format() for s in GRADIENT_STATISTICS)] for row in comparison.alphas]
        return ("Input-unit gradient variability, mean over layers; mean ± std over seeds.\n\n" +
                markdown_table(["alpha", "n", "selectivity (subset)", *STATISTIC_HEADERS], rows))

    def run_figures(self, result: RunResult[GradientsResult]) -> dict[str, Any]:
        """'by_layer': the four variability statistics per layer; 'units': each analysed unit's gradient-norm CV
        over samples vs its class selectivity, one panel per layer."""
        record = result.result
        names = record.layer_names
        fig, axes = panels(len(GRADIENT_STATISTICS), 2, width=max(4.2, 0.35 * len(names) + 1.5), height=3.2)
        for ax, statistic in zip(axes, GRADIENT_STATISTICS):
            ax.plot(range(len(names)), [record.layers[n].statistic(statistic) for n in names], "-o", markersize=3,
                    color="C0")
            layer_axis(ax, names)
            ax.set(ylabel=STATISTIC_LABELS[statistic])
        fig.suptitle(run_title(result.alpha, result.seed, "Input-unit gradient variability by layer"), fontsize=10)
        figures = {"by_layer": fig}
        fig, axes = panels(len(names))
        for ax, name in zip(axes, names):
            ax.scatter(record.layers[name].unit_selectivity, record.layers[name].norm_cv_over_samples, s=10,
                       color="C2", edgecolors="none")
            ax.set(title=name, xlabel="unit class selectivity", ylabel="gradient-norm CV over samples")
            ax.grid(alpha=0.3)
        fig.suptitle(run_title(result.alpha, result.seed, "Per-unit gradient variability vs selectivity"),
                     fontsize=10)
        figures["units"] = fig
        return figures

    def sweep_figures(self, comparison: GradientsComparison) -> dict[str, Any]:
        """'variability_vs_selectivity': each statistic (mean over layers) vs network selectivity, one point per run
        coloured by alpha; 'by_layer': gradient-norm CV over samples per layer, one line per alpha (seed mean)."""
        runs = comparison.runs
        alphas = sorted({run.alpha for run in runs})
        norm, cmap = alpha_colors(alphas)
        fig, axes = panels(len(GRADIENT_STATISTICS), 2, width=4.0, height=3.2)
        for ax, statistic in zip(axes, GRADIENT_STATISTICS):
            ax.scatter([run.network_selectivity for run in runs], [run.summary.statistic(statistic) for run in runs],
                       c=[run.alpha for run in runs], cmap=cmap, norm=norm, s=40, edgecolors="0.2", linewidths=0.5)
            ax.set(xlabel="network class selectivity (analysed subset)", ylabel=STATISTIC_LABELS[statistic])
            ax.grid(alpha=0.3)
        alpha_colorbar(fig, axes, alphas)
        fig.suptitle("Input-unit gradient variability (mean over layers) vs selectivity, one point per run",
                     fontsize=10)
        figures = {"variability_vs_selectivity": fig}
        layers = comparison.layer_names
        fig = new_figure(layers_width(layers), 4.4)
        ax = fig.add_subplot()
        for row in comparison.alphas:
            ax.plot(range(len(layers)), [row.layers[layer]["norm_cv_over_samples"].mean for layer in layers],
                    "-o", markersize=3, color=cmap(norm(row.alpha)))
        layer_axis(ax, layers)
        ax.set(ylabel=STATISTIC_LABELS["norm_cv_over_samples"], title="Gradient variability by layer, one line per α")
        alpha_colorbar(fig, ax, alphas)
        figures["by_layer"] = fig
        return figures


ANALYSIS = Gradients()
