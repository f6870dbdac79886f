"""Does class selectivity move to another basis? (Leavitt & Morcos, ICLR 2021, "does selectivity shift to a different
basis").

A regulariser that lowers the selectivity of a layer's units could leave the class information as selective as before
along other directions of the same unit space. Per layer, the mean unit selectivity on the unit axes is compared with
that in three other orthonormal bases: the class-conditional mean directions, and the rotations found by gradient
ascent of the mean selectivity from the unit axes and from the class-mean basis. All four use the same rule for
negative responses, so they differ only by the basis. Math: `selectivity_jax.measures.basis`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Sequence

import ml_collections
import numpy as np

from selectivity_jax.analyses.base import (AlphaLayers, AlphaStats, Analysis, RunContext, RunResult, layer_means,
                                           per_alpha)
from selectivity_jax.measures import basis, rotation
from selectivity_jax.records import Record
from selectivity_jax.report.figures import (alpha_axis, layer_axis, layers_width, lines_per_alpha, mean_band,
                                            new_figure, run_title)
from selectivity_jax.report.tables import markdown_table

BASES = ("axis_aligned", "class_mean_basis", "optimised_from_identity", "optimised_from_class_mean")
BASIS_LABELS = {"axis_aligned": "unit axes", "class_mean_basis": "class-mean basis",
                "optimised_from_identity": "optimised (from unit axes)",
                "optimised_from_class_mean": "optimised (from class-mean basis)"}
BASIS_STYLES = {"axis_aligned": ("0.3", "unit axes"), "class_mean_basis": ("C1", "class-mean basis"),
                "optimised_from_identity": ("C2", "optimised from unit axes"),
                "optimised_from_class_mean": ("C4", "optimised from class-mean basis")}  # figures: (colour, label)
PARAMETRISATIONS = typing.get_args(basis.Parametrisation)


@dataclasses.dataclass(frozen=True)
class BasisLayer(Record):
    """One layer; the fields named after a basis (`BASES`) hold its mean unit selectivity there."""
    negatives: str                                     # the rule for negative responses (the result's, repeated)
    axis_aligned: float
    axis_aligned_per_unit: list[float]
    class_mean_basis: float
    class_mean_basis_per_unit: list[float]
    optimised_from_identity: float
    optimised_from_identity_per_unit: list[float]
    optimised_from_identity_trajectory: list[float]    # mean selectivity after each ascent step (0: the start)
    optimised_from_class_mean: float
    optimised_from_class_mean_per_unit: list[float]
    optimised_from_class_mean_trajectory: list[float]

    def selectivity(self, basis_name: str) -> float:
        """The mean unit selectivity in the basis ``basis_name`` (one of `BASES`)."""
        return getattr(self, basis_name)


@dataclasses.dataclass(frozen=True)
class BasisSummary(Record):
    """Means over layers of the mean unit selectivity in each basis (with the negatives rule)."""
    axis_aligned: float
    class_mean_basis: float
    optimised_from_identity: float
    optimised_from_class_mean: float
    paper_index: float  # the paper's index on the unit axes, without the rule


@dataclasses.dataclass(frozen=True)
class BasisResult(Record):
    negatives: str
    layers: dict[str, BasisLayer]
    summary: BasisSummary


@dataclasses.dataclass(frozen=True)
class BasisComparison(Record):
    negatives: str
    layers: list[str]
    alphas: list[AlphaStats]                   # the summary's quantities over seeds
    per_layer: dict[str, list[AlphaLayers]]    # basis -> per alpha, each layer's mean selectivity (mean over seeds)


def _plain(value: Any) -> Any:
    """Arrays of `basis.basis_analysis` as lists, the rest as it is."""
    return np.asarray(value).tolist() if isinstance(value, np.ndarray) else value


class Basis(Analysis[BasisResult, BasisComparison]):
    name = "basis"
    title = "Selectivity in other bases (Leavitt & Morcos 2021)"
    result_type = BasisResult
    comparison_type = BasisComparison

    def default_settings(self) -> ml_collections.ConfigDict:
        settings = ml_collections.ConfigDict()
        settings.negatives = "shift_class_means"  # Rule for negative responses in every basis, as rotation.negatives.
        settings.steps = 200             # Gradient-ascent steps of the optimised rotation (Adam).
        settings.learning_rate = 0.01
        settings.parametrisation = "cayley"  # Rotation = Cayley transform ('cayley') or exp ('expm') of a skew matrix.
        return settings

    def check(self, settings: ml_collections.ConfigDict) -> None:
        if settings.negatives not in rotation.NEGATIVES_RULES:
            raise ValueError(f"basis.negatives must be one of {rotation.NEGATIVES_RULES}; got {settings.negatives!r}")
        if settings.parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"basis.parametrisation must be one of {PARAMETRISATIONS}; got "
                             f"{settings.parametrisation!r}")
        if int(settings.steps) != settings.steps or settings.steps < 0:
            raise ValueError(f"basis.steps must be an integer >= 0; got {settings.steps}")
        if not (math.isfinite(settings.learning_rate) and settings.learning_rate > 0):
            raise ValueError(f"basis.learning_rate must be finite and > 0; got {settings.learning_rate}")

    def run(self, context: RunContext, settings: ml_collections.ConfigDict) -> BasisResult:
        labels = context.data[1]
        layers = {}
        for layer in context.layers:
            context.log(f"    bases of {layer} ({context.responses[layer].shape[1]} units)")
            found = basis.basis_analysis(context.responses[layer], labels, context.run.num_classes,
                                         negatives=settings.negatives, steps=settings.steps,
                                         learning_rate=settings.learning_rate,
                                         parametrisation=settings.parametrisation)
            layers[layer] = BasisLayer(**{key: _plain(value) for key, value in found.items()
                                          if not key.endswith("_rotation")})
        means = {name: float(np.mean([v.selectivity(name) for v in layers.values()])) for name in BASES}
        return BasisResult(negatives=settings.negatives, layers=layers,
                           summary=BasisSummary(**means, paper_index=context.paper_index()))

    def compare(self, results: Sequence[RunResult[BasisResult]], settings: ml_collections.ConfigDict
                ) -> BasisComparison:
        first = results[0].result
        layers = list(first.layers)
        per_layer = {name: layer_means(results, layers,
                                       lambda r, layer, name=name: r.result.layers[layer].selectivity(name))
                     for name in BASES}
        return BasisComparison(negatives=first.negatives, layers=layers,
                               alphas=per_alpha(results, lambda r: r.result.summary.to_json()), per_layer=per_layer)

    def run_table(self, result: RunResult[BasisResult]) -> str:
        record = result.result
        rows = [[f"`{layer}`", *(f"{v.selectivity(name):.3f}" for name in BASES)] for layer, v in record.layers.items()]
        rows.append(["mean", *(f"{getattr(record.summary, name):.3f}" for name in BASES)])
        return (f"Mean class selectivity of each layer's units in four bases (negative responses: "
                f"{record.negatives}).\n\n" + markdown_table(["layer", *(BASIS_LABELS[n] for n in BASES)], rows))

    def sweep_table(self, comparison: BasisComparison) -> str:
        rows = [[f"{row.alpha:g}", str(len(row.seeds)), row.stats["paper_index"].format(),
                 *(row.stats[name].format() for name in BASES)] for row in comparison.alphas]
        return (f"Mean over layers of the mean unit selectivity in each basis, responses made non-negative by "
                f"'{comparison.negatives}' in every basis (configs/analysis.py); 'paper index' is the unit axes "
                f"without that rule. Mean ± std over seeds.\n\n" +
                markdown_table(["alpha", "n", "paper index", *(BASIS_LABELS[n] for n in BASES)], rows))

    def run_figures(self, result: RunResult[BasisResult]) -> dict[str, Any]:
        """'layers': mean unit selectivity of each layer in the four bases (grouped bars)."""
        record = result.result
        layers = list(record.layers)
        fig = new_figure(layers_width(layers), 4.4)
        ax = fig.add_subplot()
        width = 0.8 / len(BASIS_STYLES)
        for i, (name, (color, label)) in enumerate(BASIS_STYLES.items()):
            ax.bar(np.arange(len(layers)) + (i - (len(BASIS_STYLES) - 1) / 2) * width,
                   [record.layers[layer].selectivity(name) for layer in layers], width, color=color, label=label)
        layer_axis(ax, layers)
        ax.set(ylabel="mean unit selectivity",
               title=run_title(result.alpha, result.seed, f"Selectivity by basis ({record.negatives})"))
        ax.legend(fontsize=7)
        return {"layers": fig}

    def sweep_figures(self, comparison: BasisComparison) -> dict[str, Any]:
        """'summary': mean selectivity over layers in each basis vs alpha; 'layers': the unit axes' and the class-mean
        basis's selectivity by layer, one line per alpha."""
        rows = comparison.alphas
        alphas = [row.alpha for row in rows]
        fig = new_figure()
        ax = fig.add_subplot()
        for name, (color, label) in BASIS_STYLES.items():
            mean_band(ax, alphas, [row.stats[name].mean for row in rows], [row.stats[name].std for row in rows],
                      color, label)
        alpha_axis(ax, alphas)
        ax.set(ylabel="mean unit selectivity (mean over layers)",
               title=f"Is selectivity hidden in another basis? ({comparison.negatives})")
        ax.legend(fontsize=7)
        figures = {"summary": fig}
        layers = comparison.layers
        fig = new_figure(2 * layers_width(layers), 4.4)
        for ax, name in zip(fig.subplots(1, 2, sharey=True), ("axis_aligned", "class_mean_basis")):
            per_layer = comparison.per_layer[name]
            lines_per_alpha(fig, ax, [row.alpha for row in per_layer], range(len(layers)),
                            [[row.layers[layer] for layer in layers] for row in per_layer])
            layer_axis(ax, layers)
            ax.set(title=BASIS_STYLES[name][1], ylabel="mean unit selectivity")
        figures["layers"] = fig
        return figures


ANALYSIS = Basis()
