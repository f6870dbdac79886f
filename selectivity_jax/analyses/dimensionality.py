"""PCA dimensionality of representations and of their perturbations (Leavitt & Morcos, "Linking average- and
worst-case perturbation robustness via class selectivity and dimensionality", dimensionality analysis).

Per layer: the dimensionality (PCA components for ``threshold`` of the variance, participation ratio) of the clean
unit responses (spatial means, as in the selectivity index), of their change under corruptions (pooled over the
chosen corruptions, and each alone) and of their change under PGD. Corrupted images are those of the run's test
subset (`RunContext.corrupted_subset`). Math: `selectivity_jax.measures.dimensionality`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from selectivity_jax.analyses.base import Analysis, RunContext, RunResult, accuracy, by_alpha, evaluate
from selectivity_jax.data import corrupted as corrupted_lib
from selectivity_jax.data.corrupted import check_corruptions, sources_note
from selectivity_jax.measures import attacks as attack_lib
from selectivity_jax.measures.attacks import NORM_LABELS, epsilon_label
from selectivity_jax.measures.dimensionality import dimensionality as pca_dimensionality
from selectivity_jax.records import Record, SeedStat, seed_stat
from selectivity_jax.report.figures import alpha_colorbar, alpha_colors, layer_axis, new_figure, panels, run_title
from selectivity_jax.report.tables import markdown_table

KINDS = ("clean", "corruption", "adversarial")
KIND_LABELS = {"clean": "clean representation", "corruption": "change under corruptions",
               "adversarial": "change under PGD"}
KIND_COLORS = {"clean": "0.25", "corruption": "C2", "adversarial": "C3"}
MEASURE_LABELS = {"n_components": "PCA components", "participation_ratio": "participation ratio"}


@dataclasses.dataclass(frozen=True)
class Dimensions(Record):
    """`selectivity_jax.measures.dimensionality.dimensionality` without the spectrum."""
    n_components: int           # PCA components for ``threshold`` of the variance
    participation_ratio: float
    total_variance: float
    threshold: float
    num_samples: int
    num_units: int


def dimensions(x: np.ndarray, threshold: float) -> Dimensions:
    """`Dimensions` of ``x`` [N, D]."""
    result = pca_dimensionality(x, threshold)
    result.pop("explained_variance_ratio")
    return Dimensions(**result)


@dataclasses.dataclass(frozen=True)
class LayerDimensionality(Record):
    clean: Dimensions
    corruption: Dimensions | None          # the changes under every corruption pooled (None: no corruptions)
    adversarial: Dimensions                # the change under PGD
    per_corruption: dict[str, Dimensions]  # the change under each corruption


@dataclasses.dataclass(frozen=True)
class DimensionalityResult(Record):
    num_examples: int
    threshold: float
    layers: dict[str, LayerDimensionality]
    layer_names: list[str]                 # forward order (JSON keys are sorted)
    corruptions: list[str]
    severity: int
    sources: dict[str, str]                # {corruption: 'official' or 'generated'}
    corrupted_accuracy: dict[str, float]   # {corruption: accuracy at ``severity``}
    norm: str
    epsilon: float
    pgd_steps: int
    adversarial_accuracy: float            # accuracy on the PGD examples


@dataclasses.dataclass(frozen=True)
class MeasureStats(Record):
    """One kind of representation at one alpha: {layer: stat over seeds} per measure."""
    n_components: dict[str, SeedStat]
    participation_ratio: dict[str, SeedStat]


@dataclasses.dataclass(frozen=True)
class AlphaDimensionality(Record):
    alpha: float
    seeds: list[int]
    test_selectivity: SeedStat
    kinds: dict[str, MeasureStats]  # {kind: ...} for the comparison's kinds


@dataclasses.dataclass(frozen=True)
class DimensionalityComparison(Record):
    alphas: list[AlphaDimensionality]
    layer_names: list[str]
    kinds: list[str]  # those of KINDS computed ('corruption' only with corruptions)
    threshold: float
    corruptions: list[str]
    severity: int
    sources: dict[str, str]
    norm: str
    epsilon: float
    pgd_steps: int


def _note(record: DimensionalityResult | DimensionalityComparison) -> str:
    note = (f"n: PCA components for {record.threshold:g} of the variance; PR: participation ratio. Adversarial "
            f"change: responses to PGD-{record.pgd_steps} {NORM_LABELS[record.norm]} examples at eps "
            f"{epsilon_label(record.epsilon, record.norm)} minus clean responses.")
    if record.corruptions:
        note += (f" Corruption change: responses to {', '.join(record.corruptions)} at severity "
                 f"{record.severity} minus clean responses, pooled. {sources_note(record.sources)}")
    return note


class Dimensionality(Analysis[DimensionalityResult, DimensionalityComparison]):
    name = "dimensionality"
    title = "Dimensionality of representations and of their perturbations"
    result_type = DimensionalityResult
    comparison_type = DimensionalityComparison

    def default_settings(self) -> ml_collections.ConfigDict:
        settings = ml_collections.ConfigDict()
        settings.threshold = 0.95  # Dimensionality = number of PCA components explaining this fraction of the
        #                            variance (the participation ratio is reported too).
        settings.corruptions = ("gaussian_noise", "defocus_blur", "fog", "contrast")  # One per family.
        settings.severity = 3      # Severity of those corruptions.
        settings.source = "auto"   # Where their images come from, as corruptions.source.
        settings.norm = "linf"     # Adversarial change: PGD under this norm ...
        settings.epsilon = 4 / 255  # ... at this budget ...
        settings.pgd_steps = 10    # ... with this many steps (step 2.5 * eps / steps, random start).
        return settings

    def check(self, settings: ml_collections.ConfigDict) -> None:
        check_corruptions(settings.corruptions, (settings.severity,), settings.source, "dimensionality")
        if (settings.norm not in attack_lib.NORMS or not np.isfinite(settings.epsilon) or not settings.epsilon >= 0
                or int(settings.pgd_steps) != settings.pgd_steps or settings.pgd_steps < 1):
            raise ValueError(f"dimensionality: norm must be one of {attack_lib.NORMS}, epsilon finite and >= 0, "
                             f"pgd_steps an integer >= 1; got {settings.norm!r}, {settings.epsilon}, "
                             f"{settings.pgd_steps}")
        if not 0 < settings.threshold <= 1:
            raise ValueError(f"dimensionality.threshold must be in (0, 1]; got {settings.threshold}")

    def run(self, context: RunContext, settings: ml_collections.ConfigDict) -> DimensionalityResult:
        images, labels = context.data
        responses_fn = context.run.responses_fn(context.layers)
        clean = evaluate(responses_fn, images, context.batch_size)
        changes, corrupted_accuracy, sources = {}, {}, {}
        for name in (corrupted_lib.canonical_corruption(c) for c in settings.corruptions):
            corrupted_images, corrupted_labels, split = context.corrupted_subset(name, settings.severity,
                                                                                 settings.source)
            perturbed = evaluate(responses_fn, corrupted_images, context.batch_size)
            changes[name] = {layer: perturbed[layer] - clean[layer] for layer in context.layers}
            corrupted_accuracy[name] = accuracy(context.run, corrupted_images, corrupted_labels, context.batch_size)
            sources[name] = split.source
        start = time.time()
        adversarial = attack_lib.adversarial_examples(
            context.run.logits_fn, images, labels, attack="pgd", norm=settings.norm, epsilons=[settings.epsilon],
            steps=settings.pgd_steps, key=jax.random.key(context.seed), batch_size=context.batch_size)
        adversarial_responses = evaluate(responses_fn, adversarial["adversarial"][0], context.batch_size)
        adversarial_accuracy = float(1 - adversarial["fooled"].mean())
        context.log(f"    PGD-{settings.pgd_steps} {settings.norm} eps {settings.epsilon:.4g}: accuracy "
                    f"{adversarial_accuracy:.3f} ({time.time() - start:.1f}s)")
        threshold = settings.threshold
        layers = {}
        for layer in context.layers:
            pooled = [change[layer] for change in changes.values()]
            layers[layer] = LayerDimensionality(
                clean=dimensions(clean[layer], threshold),
                corruption=dimensions(np.concatenate(pooled), threshold) if pooled else None,
                adversarial=dimensions(adversarial_responses[layer] - clean[layer], threshold),
                per_corruption={name: dimensions(change[layer], threshold) for name, change in changes.items()})
        return DimensionalityResult(
            num_examples=int(len(labels)), threshold=float(threshold), layers=layers, layer_names=list(layers),
            corruptions=list(changes), severity=int(settings.severity), sources=sources,
            corrupted_accuracy=corrupted_accuracy, norm=settings.norm, epsilon=float(settings.epsilon),
            pgd_steps=int(settings.pgd_steps), adversarial_accuracy=adversarial_accuracy)

    def compare(self, results: Sequence[RunResult[DimensionalityResult]], settings: ml_collections.ConfigDict
                ) -> DimensionalityComparison:
        first = results[0].result
        layers = first.layer_names
        kinds = [kind for kind in KINDS if getattr(first.layers[layers[0]], kind) is not None]

        def stats(group: Sequence[RunResult[DimensionalityResult]], kind: str, measure: str) -> dict[str, SeedStat]:
            return {layer: seed_stat([getattr(getattr(r.result.layers[layer], kind), measure) for r in group])
                    for layer in layers}

        rows = [AlphaDimensionality(alpha=alpha, seeds=[r.seed for r in group],
                                    test_selectivity=seed_stat([r.test_selectivity for r in group]),
                                    kinds={kind: MeasureStats(stats(group, kind, "n_components"),
                                                              stats(group, kind, "participation_ratio"))
                                           for kind in kinds})
                for alpha, group in by_alpha(results).items()]
        return DimensionalityComparison(
            alphas=rows, layer_names=layers, kinds=kinds, threshold=first.threshold, corruptions=first.corruptions,
            severity=first.severity, sources=first.sources, norm=first.norm, epsilon=first.epsilon,
            pgd_steps=first.pgd_steps)

    def run_table(self, result: RunResult[DimensionalityResult]) -> str:
        record = result.result
        rows = []
        for name in record.layer_names:
            layer = record.layers[name]
            cells = [getattr(layer, kind) for kind in KINDS]
            rows.append([f"`{name}`", str(layer.clean.num_units),
                         *(f"{d.n_components} / {d.participation_ratio:.2f}" if d is not None else "–"
                           for d in cells)])
        return (_note(record) + "\n\n" +
                markdown_table(["layer", "units", "clean n / PR", "corruption change n / PR",
                                "adversarial change n / PR"], rows))

    def sweep_table(self, comparison: DimensionalityComparison) -> str:
        rows = [[f"`{layer}`", *(" / ".join(f"{row.kinds[kind].participation_ratio[layer].mean:.2f}"
                                            for kind in comparison.kinds) for row in comparison.alphas)]
                for layer in comparison.layer_names]
        kinds = " / ".join(comparison.kinds)
        return (_note(comparison) + f" Cells: participation ratio of {kinds}, mean over seeds.\n\n" +
                markdown_table(["layer", *(f"α = {row.alpha:g}" for row in comparison.alphas)], rows))

    def run_figures(self, result: RunResult[DimensionalityResult]) -> dict[str, Any]:
        """'by_layer': PCA components and participation ratio per layer of the clean representation and of its
        change under corruptions and PGD."""
        record = result.result
        layers, names = record.layers, record.layer_names
        kinds = [kind for kind in KINDS if getattr(layers[names[0]], kind) is not None]
        fig, axes = panels(2, width=4.6, height=3.4)
        for ax, measure in zip(axes, MEASURE_LABELS):
            for kind in kinds:
                ax.plot(range(len(names)), [getattr(getattr(layers[n], kind), measure) for n in names], "-o",
                        markersize=3, color=KIND_COLORS[kind], label=KIND_LABELS[kind])
            layer_axis(ax, names)
            ax.set(ylabel=MEASURE_LABELS[measure])
        axes[0].legend(fontsize=7)
        fig.suptitle(run_title(result.alpha, result.seed, "Dimensionality by layer"), fontsize=10)
        return {"by_layer": fig}

    def sweep_figures(self, comparison: DimensionalityComparison) -> dict[str, Any]:
        """'by_layer': one column per kind (clean, corruption change, adversarial change), rows PCA components and
        participation ratio, one line per alpha (mean over seeds)."""
        rows = comparison.alphas
        alphas = [row.alpha for row in rows]
        norm, cmap = alpha_colors(alphas)
        layers, kinds = comparison.layer_names, comparison.kinds
        width = max(4.0, 0.3 * len(layers) + 2.0)
        fig = new_figure(width * len(kinds) + 1.0, 6.8)
        axes = fig.subplots(2, len(kinds), squeeze=False)
        for column, kind in enumerate(kinds):
            for row_index, measure in enumerate(MEASURE_LABELS):
                ax = axes[row_index, column]
                for row in rows:
                    ax.plot(range(len(layers)), [getattr(row.kinds[kind], measure)[layer].mean for layer in layers],
                            "-o", markersize=3, color=cmap(norm(row.alpha)))
                layer_axis(ax, layers)
                ax.set_ylabel(MEASURE_LABELS[measure])
                if row_index == 0:
                    ax.set_title(KIND_LABELS[kind])
        alpha_colorbar(fig, axes.ravel().tolist(), alphas)
        fig.suptitle("Dimensionality by layer, one line per α (mean over seeds)", fontsize=10)
        return {"by_layer": fig}


ANALYSIS = Dimensionality()
