"""Are low- and high-selectivity networks computing something else? Representational similarity of every run to the
alpha = 0 run of its seed, layer by layer: linear CKA (Kornblith et al., ICML 2019) and PWCCA (Morcos, Raghu & Bengio,
NeurIPS 2018); alpha = 0 runs of different seeds against each other give the noise floor.

Each run stores its layer representations on the shared examples (the same for every run of a sweep); only the
comparison across the sweep pairs runs, so the analysis needs a sweep. Math: `selectivity_jax.measures.similarity`.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from selectivity_jax.analyses.base import Analysis, RunContext, RunResult, by_alpha
from selectivity_jax.measures import similarity
from selectivity_jax.records import Record, SeedStat, seed_stat
from selectivity_jax.report.figures import alpha_axis, layer_axis, layers_width, lines_per_alpha, new_figure
from selectivity_jax.report.tables import markdown_table
from selectivity_jax.rundir import ANALYSIS_DIR, write_npz

REPRESENTATIONS_FILE = "similarity_representations.npz"
CONV_MODES = typing.get_args(similarity.ConvMode)

LayerMeasures = dict[str, dict[str, SeedStat]]  # layer -> measure -> over seeds (or seed pairs)


@dataclasses.dataclass(frozen=True)
class SimilarityResult(Record):
    representations: str          # the npz of the layer matrices, in the run's analysis folder
    layers: dict[str, list[int]]  # each layer's matrix shape [samples, units]
    conv: str


@dataclasses.dataclass(frozen=True)
class AlphaSimilarity(Record):
    """One alpha != 0: each layer's similarity to the alpha = 0 run of the same seed."""
    alpha: float
    seeds: list[int]      # the seeds with an alpha = 0 run
    layers: LayerMeasures


@dataclasses.dataclass(frozen=True)
class SimilarityComparison(Record):
    measures: list[str]
    layers: list[str]
    alphas: list[AlphaSimilarity]
    seed_floor: LayerMeasures | None  # alpha = 0 runs of different seeds, pairwise (None: fewer than two seeds)
    floor_pairs: int
    conv: str


def load_representations(result: RunResult[SimilarityResult]) -> dict[str, np.ndarray]:
    """{layer: matrix [samples, units]} that `Similarity.run` stored for the run of ``result``."""
    with np.load(os.path.join(result.run_dir, ANALYSIS_DIR, result.result.representations)) as npz:
        return {name: npz[name] for name in npz.files}


def _over_layers(stats: LayerMeasures, layers: Sequence[str], measure: str) -> float:
    """The mean over ``layers`` of a measure's mean over seeds."""
    return float(np.mean([stats[layer][measure].mean for layer in layers]))


class Similarity(Analysis[SimilarityResult, SimilarityComparison]):
    name = "similarity"
    title = "Representational similarity to alpha = 0 (CKA, PWCCA)"
    result_type = SimilarityResult
    comparison_type = SimilarityComparison
    needs_sweep = True

    def default_settings(self) -> ml_collections.ConfigDict:
        settings = ml_collections.ConfigDict()
        settings.measures = ("cka", "pwcca")  # Per-layer measures against alpha = 0 (same seed).
        settings.conv = "mean"      # Conv maps: spatial mean per channel ('mean') or positions as samples.
        settings.positions_per_example = 4  # With conv='positions': positions drawn per example (same for all).
        return settings

    def check(self, settings: ml_collections.ConfigDict) -> None:
        measures = tuple(settings.measures)
        if not measures or any(m not in similarity.MEASURES for m in measures):
            raise ValueError(f"similarity.measures must be a non-empty selection of {tuple(similarity.MEASURES)}; "
                             f"got {measures}")
        if settings.conv not in CONV_MODES:
            raise ValueError(f"similarity.conv must be one of {CONV_MODES}; got {settings.conv!r}")
        count = settings.positions_per_example
        if count is not None and (int(count) != count or count < 1):
            raise ValueError(f"similarity.positions_per_example must be an integer >= 1 (or None: all); got {count}")

    def run(self, context: RunContext, settings: ml_collections.ConfigDict) -> SimilarityResult:
        """Stores the run's layer representations on the shared examples; the comparison pairs runs."""
        if settings.conv == "mean":
            matrices = {layer: context.responses[layer] for layer in context.layers}
        else:
            images = context.data[0]
            parts = []
            for index, start in enumerate(range(0, len(images), context.batch_size)):
                acts = context.run.activations(images[start:start + context.batch_size], context.layers)[1]
                parts.append({layer: similarity.layer_matrix(np.asarray(a), conv=settings.conv,
                                                             positions_per_example=settings.positions_per_example,
                                                             seed=context.seed + index)
                              for layer, a in acts.items()})
            matrices = {layer: np.concatenate([p[layer] for p in parts]) for layer in context.layers}
        write_npz(context.output_path(REPRESENTATIONS_FILE),
                  {layer: np.asarray(m, np.float32) for layer, m in matrices.items()})
        shapes = {layer: list(m.shape) for layer, m in matrices.items()}
        context.log(f"    similarity: representations {shapes} ({settings.conv})")
        return SimilarityResult(representations=REPRESENTATIONS_FILE, layers=shapes, conv=settings.conv)

    def check_runs(self, alphas: Sequence[float]) -> None:
        if 0.0 not in alphas:
            raise ValueError("similarity compares every run with the alpha = 0 run of its seed: the sweep has no "
                             "finished alpha = 0 run")

    def compare(self, results: Sequence[RunResult[SimilarityResult]], settings: ml_collections.ConfigDict
                ) -> SimilarityComparison:
        """Each run against the alpha = 0 run of its seed, and alpha = 0 runs of different seeds against each other
        (the noise floor), per layer and measure."""
        measures = list(settings.measures)
        self.check_runs([r.alpha for r in results])
        reference = {r.seed for r in results if r.alpha == 0.0}
        layers = list(results[0].result.layers)
        loaded = {(r.alpha, r.seed): load_representations(r) for r in results}

        def measure(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
            return similarity.layerwise_similarity(x, y, measures=tuple(measures))

        def over_pairs(pairs: Sequence[dict[str, dict[str, float]]]) -> LayerMeasures:
            return {layer: {m: seed_stat([p[layer][m] for p in pairs]) for m in measures} for layer in layers}

        rows = []
        for alpha, group in by_alpha(results).items():
            if alpha == 0.0:
                continue
            seeds = [r.seed for r in group if r.seed in reference]
            if seeds:
                pairs = [measure(loaded[(alpha, seed)], loaded[(0.0, seed)]) for seed in seeds]
                rows.append(AlphaSimilarity(alpha, seeds, over_pairs(pairs)))
        seeds = sorted(reference)
        floor_pairs = [measure(loaded[(0.0, a)], loaded[(0.0, b)]) for i, a in enumerate(seeds) for b in seeds[i + 1:]]
        return SimilarityComparison(measures=measures, layers=layers, alphas=rows,
                                    seed_floor=over_pairs(floor_pairs) if floor_pairs else None,
                                    floor_pairs=len(floor_pairs), conv=settings.conv)

    def sweep_table(self, comparison: SimilarityComparison) -> str:
        measures, layers = comparison.measures, comparison.layers
        rows = [[f"{row.alpha:g}", str(len(row.seeds)),
                 *(f"{_over_layers(row.layers, layers, m):.3f}" for m in measures)] for row in comparison.alphas]
        if comparison.seed_floor:
            rows.append([f"0 vs 0, other seed ({comparison.floor_pairs} pairs)", "",
                         *(f"{_over_layers(comparison.seed_floor, layers, m):.3f}" for m in measures)])
        return ("Similarity to the alpha = 0 network of the same seed, mean over layers (1 = the same representation "
                "up to the measure's invariances); the last row is the seed-to-seed floor at alpha = 0.\n\n" +
                markdown_table(["alpha", "n", *(m.upper() for m in measures)], rows))

    def sweep_figures(self, comparison: SimilarityComparison) -> dict[str, Any]:
        """'layers': each measure by layer, one line per alpha, the seed-to-seed floor at alpha = 0 in grey;
        'summary': the mean over layers vs alpha. Neither without an alpha != 0 compared."""
        layers, measures, floor = comparison.layers, comparison.measures, comparison.seed_floor
        rows = comparison.alphas
        if not rows:
            return {}
        alphas = [row.alpha for row in rows]
        positions = range(len(layers))
        fig = new_figure(len(measures) * layers_width(layers), 4.4)
        for ax, measure in zip(np.atleast_1d(fig.subplots(1, len(measures), sharey=True)), measures):
            lines_per_alpha(fig, ax, alphas, positions,
                            [[row.layers[layer][measure].mean for layer in layers] for row in rows])
            if floor:
                means = np.array([floor[layer][measure].mean for layer in layers])
                stds = np.array([floor[layer][measure].std for layer in layers])
                ax.fill_between(positions, means - stds, means + stds, color="0.85", zorder=0)
                ax.plot(positions, means, "--", color="0.5", label="α = 0, seed vs seed")
                ax.legend(fontsize=7)
            layer_axis(ax, layers)
            ax.set(title=f"{measure.upper()} with α = 0 (same seed)", ylabel="similarity", ylim=(0, 1.02))
        figures = {"layers": fig}
        fig = new_figure()
        ax = fig.add_subplot()
        for i, measure in enumerate(measures):
            ax.plot(alphas, [_over_layers(row.layers, layers, measure) for row in rows], "-o", color=f"C{i}",
                    label=measure.upper())
            if floor:
                ax.axhline(_over_layers(floor, layers, measure), color=f"C{i}", linestyle="--", linewidth=0.9,
                           label=f"{measure.upper()} seed floor")
        alpha_axis(ax, alphas)
        ax.set(ylabel="similarity to α = 0 (mean over layers)", ylim=(0, 1.02),
               title="Do low- and high-selectivity networks compute the same thing?")
        ax.legend(fontsize=7)
        figures["summary"] = fig
        return figures


ANALYSIS = Similarity()
