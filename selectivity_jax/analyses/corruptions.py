"""Accuracy on corrupted test sets, the average case (Leavitt & Morcos, "Linking average- and worst-case perturbation
robustness via class selectivity and dimensionality"; corruptions of Hendrycks & Dietterich 2019).

Accuracy on every corruption x severity of the corrupted test set (the official one when present, else our
generated one; the source is recorded per corruption), restricted to the examples of the run's test subset; means
per family, per severity and overall, and relative to clean accuracy. Resumable per (corruption, severity) through
``analysis/corruptions.partial.json``. Data, and the helpers shared with the dimensionality analysis (picking the
corrupted examples, checking corruption settings, naming sources): `selectivity_jax.data.corrupted`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np
from matplotlib import colormaps

from selectivity_jax.analyses.base import Analysis, RunContext, RunResult, accuracy, by_alpha, resumable_items
from selectivity_jax.data import corrupted as corrupted_lib
from selectivity_jax.data.corrupted import check_corruptions, sources_note
from selectivity_jax.data.corruptions import FAMILIES
from selectivity_jax.records import CurveStat, Record, SeedStat, curve_stat, seed_stat
from selectivity_jax.report.figures import alpha_axis, new_figure, panels, run_title, wrap_caption
from selectivity_jax.report.tables import markdown_table

# Families of the official-only corruptions, as Hendrycks & Dietterich group them (FAMILIES covers the generated).
OFFICIAL_ONLY_FAMILIES = {"frost": "weather", "spatter": "weather"}
FAMILY_ORDER = ("noise", "blur", "weather", "digital", "other")


# ----------------------------------------------------------------------------------------------------------------------
# names and families
# ----------------------------------------------------------------------------------------------------------------------

def family_of(corruption: str) -> str:
    """Hendrycks & Dietterich's family of a corruption: noise, blur, weather or digital ('other' if unknown)."""
    return FAMILIES.get(corruption) or OFFICIAL_ONLY_FAMILIES.get(corruption, "other")


def corruption_names(dataset: Any, settings: ml_collections.ConfigDict) -> list[str]:
    """``settings.names`` (Hendrycks' names), or every corruption available for ``dataset`` (a run's data config)
    from ``settings.source``."""
    if settings.names:
        return [corrupted_lib.canonical_corruption(name) for name in settings.names]
    return list(corrupted_lib.available_corruptions(dataset, settings.source))


# ----------------------------------------------------------------------------------------------------------------------
# records
# ----------------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CorruptionAccuracy(Record):
    family: str
    source: str            # 'official' or 'generated' ('+'-joined when the severities came from both)
    origin: str            # what was read or how the images were made (of the last severity)
    accuracy: list[float]  # per severity
    mean: float            # over severities


@dataclasses.dataclass(frozen=True)
class FamilyAccuracy(Record):
    corruptions: list[str]
    accuracy: list[float]  # mean over the family's corruptions, per severity
    mean: float            # over its corruptions and severities


@dataclasses.dataclass(frozen=True)
class CorruptionsResult(Record):
    clean_accuracy: float
    num_examples: int
    corruptions: dict[str, CorruptionAccuracy]
    corruption_names: list[str]         # the corruptions in Hendrycks' order (JSON keys are sorted)
    family_names: list[str]             # the families present, in FAMILY_ORDER
    families: dict[str, FamilyAccuracy]
    accuracy_by_severity: list[float]   # mean over corruptions, per severity
    mean_accuracy: float                # over corruptions and severities (each pair counts once)
    relative_accuracy: float            # mean_accuracy / clean_accuracy (NaN for clean accuracy 0)
    severities: list[int]
    sources: dict[str, list[str]]       # {source: its corruptions}


def summarize_corruptions(clean_accuracy: float, num_examples: int, severities: Sequence[int],
                          corruptions: Mapping[str, CorruptionAccuracy]) -> CorruptionsResult:
    """The result from per-corruption accuracies [per severity] (in order): means per family and severity, per
    family, per severity and overall (each corruption x severity counts once), and the overall mean relative to
    clean accuracy."""
    families: dict[str, list[str]] = {}
    for name in corruptions:
        families.setdefault(family_of(name), []).append(name)
    families = {family: families[family] for family in FAMILY_ORDER if family in families}
    table = np.array([corruptions[name].accuracy for name in corruptions], np.float64)  # [C, S]
    mean = float(table.mean())
    return CorruptionsResult(
        clean_accuracy=clean_accuracy, num_examples=num_examples, corruptions=dict(corruptions),
        corruption_names=list(corruptions), family_names=list(families),
        families={family: FamilyAccuracy(names, np.mean([corruptions[n].accuracy for n in names], axis=0).tolist(),
                                         float(np.mean([corruptions[n].accuracy for n in names])))
                  for family, names in families.items()},
        accuracy_by_severity=table.mean(axis=0).tolist(), mean_accuracy=mean,
        relative_accuracy=mean / clean_accuracy if clean_accuracy > 0 else float("nan"),
        severities=list(severities),
        sources={source: [n for n, c in corruptions.items() if c.source == source]
                 for source in sorted({c.source for c in corruptions.values()})})


@dataclasses.dataclass(frozen=True)
class AccuracyStats(Record):
    mean: SeedStat       # of the mean over severities
    accuracy: CurveStat  # per severity


@dataclasses.dataclass(frozen=True)
class AlphaCorruptions(Record):
    alpha: float
    seeds: list[int]
    test_selectivity: SeedStat
    clean_accuracy: SeedStat
    mean_accuracy: SeedStat
    relative_accuracy: SeedStat
    accuracy_by_severity: CurveStat
    families: dict[str, AccuracyStats]
    corruptions: dict[str, AccuracyStats]


@dataclasses.dataclass(frozen=True)
class CorruptionsComparison(Record):
    alphas: list[AlphaCorruptions]  # over seeds
    severities: list[int]
    family_names: list[str]
    corruption_names: list[str]
    families: dict[str, list[str]]  # {family: its corruptions}
    sources: dict[str, str]         # {corruption: its sources over every run, '+'-joined}


def _severity_colors(count: int) -> list:
    """Light (mild) to dark (severe) colours for ``count`` severities."""
    cmap = colormaps["viridis_r"]
    return [cmap(0.15 + 0.75 * i / max(count - 1, 1)) for i in range(count)]


class Corruptions(Analysis[CorruptionsResult, CorruptionsComparison]):
    name = "corruptions"
    title = "Corruption robustness (average case)"
    result_type = CorruptionsResult
    comparison_type = CorruptionsComparison

    def default_settings(self) -> ml_collections.ConfigDict:
        settings = ml_collections.ConfigDict()
        settings.names = ()                  # Corruptions evaluated (empty: every one available for the data set).
        settings.severities = (1, 2, 3, 4, 5)  # Severity levels evaluated (all five of the benchmarks).
        settings.source = "auto"             # 'official' (CIFAR-10-C / Tiny-ImageNet-C files), 'generated' (our
        #                                      generator), 'auto' (official when present, else generated); recorded
        #                                      per corruption.
        return settings

    def check(self, settings: ml_collections.ConfigDict) -> None:
        check_corruptions(settings.names, settings.severities, settings.source, "corruptions")
        if not settings.severities:
            raise ValueError("corruptions.severities is empty")

    def run(self, context: RunContext, settings: ml_collections.ConfigDict) -> CorruptionsResult:
        names = corruption_names(context.data_config, settings)
        severities = [int(severity) for severity in settings.severities]
        pairs = {f"{name}/{severity}": (name, severity) for name in names for severity in severities}

        def one(key: str) -> dict[str, Any]:
            if key == "clean":
                return {"accuracy": accuracy(context.run, *context.data, context.batch_size), "source": "clean",
                        "num_examples": len(context.data[1])}
            name, severity = pairs[key]
            images, labels, split = context.corrupted_subset(name, severity, settings.source)
            return {"accuracy": accuracy(context.run, images, labels, context.batch_size), "source": split.source,
                    "origin": split.origin}

        context.log(f"    {len(names)} corruptions x {len(severities)} severities")
        items = resumable_items(context, self.name, settings, ["clean", *pairs],
                                one, lambda item: f"accuracy {item['accuracy']:.3f} ({item['source']})")
        corruptions = {}
        for name in names:
            per_severity = [items[f"{name}/{severity}"] for severity in severities]
            accuracies = [item["accuracy"] for item in per_severity]
            corruptions[name] = CorruptionAccuracy(
                family=family_of(name), source="+".join(sorted({item["source"] for item in per_severity})),
                origin=per_severity[-1]["origin"], accuracy=accuracies, mean=float(np.mean(accuracies)))
        clean = items["clean"]
        return summarize_corruptions(clean["accuracy"], clean["num_examples"], severities, corruptions)

    def compare(self, results: Sequence[RunResult[CorruptionsResult]], settings: ml_collections.ConfigDict
                ) -> CorruptionsComparison:
        first = results[0].result

        def accuracy_stats(entries: Sequence[CorruptionAccuracy | FamilyAccuracy]) -> AccuracyStats:
            return AccuracyStats(seed_stat([e.mean for e in entries]), curve_stat([e.accuracy for e in entries]))

        rows = []
        for alpha, group in by_alpha(results).items():
            records = [r.result for r in group]
            rows.append(AlphaCorruptions(
                alpha=alpha, seeds=[r.seed for r in group],
                test_selectivity=seed_stat([r.test_selectivity for r in group]),
                clean_accuracy=seed_stat([r.clean_accuracy for r in records]),
                mean_accuracy=seed_stat([r.mean_accuracy for r in records]),
                relative_accuracy=seed_stat([r.relative_accuracy for r in records]),
                accuracy_by_severity=curve_stat([r.accuracy_by_severity for r in records]),
                families={family: accuracy_stats([r.families[family] for r in records])
                          for family in first.family_names},
                corruptions={name: accuracy_stats([r.corruptions[name] for r in records])
                             for name in first.corruption_names}))
        sources: dict[str, set[str]] = {}
        for result in results:
            for name, corruption in result.result.corruptions.items():
                sources.setdefault(name, set()).add(corruption.source)
        return CorruptionsComparison(
            alphas=rows, severities=first.severities, family_names=first.family_names,
            corruption_names=first.corruption_names,
            families={family: first.families[family].corruptions for family in first.family_names},
            sources={name: "+".join(sorted(found)) for name, found in sources.items()})

    def run_table(self, result: RunResult[CorruptionsResult]) -> str:
        record = result.result
        corruptions, families = record.corruptions, record.families
        rows = [[f"{name} ({corruptions[name].family})", *(f"{a:.3f}" for a in corruptions[name].accuracy),
                 f"{corruptions[name].mean:.3f}"] for name in record.corruption_names]
        rows += [[f"**{family}**", *(f"{a:.3f}" for a in families[family].accuracy), f"{families[family].mean:.3f}"]
                 for family in record.family_names]
        rows.append(["**all**", *(f"{a:.3f}" for a in record.accuracy_by_severity), f"{record.mean_accuracy:.3f}"])
        return (f"Clean accuracy {record.clean_accuracy:.3f} on {record.num_examples} test examples; mean corrupted "
                f"accuracy {record.mean_accuracy:.3f} ({record.relative_accuracy:.3f} of clean). "
                f"{sources_note({n: c.source for n, c in corruptions.items()})}\n\n" +
                markdown_table(["corruption", *(f"severity {s}" for s in record.severities), "mean"], rows))

    def sweep_table(self, comparison: CorruptionsComparison) -> str:
        rows = [[f"{row.alpha:g}", str(len(row.seeds)), row.test_selectivity.format(), row.clean_accuracy.format(),
                 row.mean_accuracy.format(), row.relative_accuracy.format(),
                 *(row.families[family].mean.format() for family in comparison.family_names)]
                for row in comparison.alphas]
        return (f"Accuracy on the corrupted test subset, mean over severities {comparison.severities}; mean ± std "
                f"over seeds. {sources_note(comparison.sources)}\n\n" +
                markdown_table(["alpha", "n", "test selectivity", "clean accuracy", "corrupted accuracy",
                                "corrupted / clean", *comparison.family_names], rows))

    def run_figures(self, result: RunResult[CorruptionsResult]) -> dict[str, Any]:
        """'by_severity': accuracy vs severity, one panel per family (a line per corruption), and the family means;
        the clean accuracy dashed."""
        record = result.result
        severities = record.severities
        families = {family: record.families[family] for family in record.family_names}
        fig, axes = panels(len(families) + 1)
        for ax, (family, entry) in zip(axes, families.items()):
            for name in entry.corruptions:
                ax.plot(severities, record.corruptions[name].accuracy, "-o", markersize=3, label=name)
            ax.set(title=family)
        for index, (family, entry) in enumerate(families.items()):
            axes[-1].plot(severities, entry.accuracy, "-o", markersize=3, color=f"C{index}", label=family)
        axes[-1].plot(severities, record.accuracy_by_severity, "-o", color="black", markersize=3, label="all")
        axes[-1].set(title="family means")
        for ax in axes:
            ax.axhline(record.clean_accuracy, color="0.5", linestyle="--", linewidth=0.9)
            ax.set(xlabel="severity", ylabel="accuracy", xticks=severities, ylim=(0, 1.02))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        sources = {name: c.source for name, c in record.corruptions.items()}
        fig.suptitle(run_title(result.alpha, result.seed, "Accuracy on corrupted test images (dashed: clean)") +
                     "\n" + wrap_caption(sources_note(sources), fig), fontsize=9)
        return {"by_severity": fig}

    def sweep_figures(self, comparison: CorruptionsComparison) -> dict[str, Any]:
        """'families_vs_alpha': accuracy vs alpha, one panel per family, one line per severity (mean ± std over
        seeds); 'mean_vs_alpha': clean and mean corrupted accuracy, and their ratio, vs alpha."""
        rows = comparison.alphas
        alphas = [row.alpha for row in rows]
        severities = comparison.severities
        colors = _severity_colors(len(severities))
        curves = [(f"{family} ({', '.join(comparison.families[family])})",
                   [row.families[family].accuracy for row in rows]) for family in comparison.family_names]
        curves.append(("all corruptions", [row.accuracy_by_severity for row in rows]))
        fig, axes = panels(len(curves))
        for ax, (title, per_alpha) in zip(axes, curves):
            for index, (severity, color) in enumerate(zip(severities, colors)):
                ax.errorbar(alphas, [curve.mean[index] for curve in per_alpha],
                            yerr=[curve.std[index] for curve in per_alpha], fmt="-o", color=color, markersize=3,
                            capsize=2, label=f"severity {severity}")
            alpha_axis(ax, alphas)
            ax.set(ylabel="accuracy", ylim=(0, 1.02))
            ax.set_title(title, fontsize=8)
        axes[0].legend(fontsize=6)
        fig.suptitle("Corrupted accuracy vs α per family (mean ± std over seeds)\n" +
                     wrap_caption(sources_note(comparison.sources), fig), fontsize=9)
        figures = {"families_vs_alpha": fig}
        fig = new_figure(10.0, 4.0)
        ax_accuracy, ax_relative = fig.subplots(1, 2)
        for stats, color, label in (([row.clean_accuracy for row in rows], "0.25", "clean"),
                                    ([row.mean_accuracy for row in rows], "C3", "corrupted (mean)")):
            ax_accuracy.errorbar(alphas, [s.mean for s in stats], yerr=[s.std for s in stats], fmt="-o", color=color,
                                 markersize=4, capsize=3, label=label)
        ax_accuracy.set(ylabel="accuracy", title="Clean and mean corrupted accuracy")
        ax_accuracy.legend(fontsize=7)
        ax_relative.errorbar(alphas, [row.relative_accuracy.mean for row in rows],
                             yerr=[row.relative_accuracy.std for row in rows], fmt="-o", color="C3", markersize=4,
                             capsize=3)
        ax_relative.set(ylabel="corrupted / clean accuracy", title="Relative corrupted accuracy")
        for ax in (ax_accuracy, ax_relative):
            alpha_axis(ax, alphas)
        fig.suptitle(wrap_caption(sources_note(comparison.sources), fig), fontsize=8)
        figures["mean_vs_alpha"] = fig
        return figures


ANALYSIS = Corruptions()
