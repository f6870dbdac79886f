"""Per-class views of a run (Leavitt & Morcos, ICLR 2021, Sec. 2.2): which class each unit prefers, and how well
each class is recognised.

- Per layer: each unit's preferred class, the class of its largest class-mean response on the analysed examples
  (the class of mu_max in the selectivity index), and the histogram of preferred classes with its evenness (entropy
  over log C: 1 when units spread equally over the classes). Dead units, every class mean 0, have no preferred class
  and are counted apart unless ``count_dead_units``.
- Per-class top-1 accuracy on the run's whole test split; weighted by the class counts it is the run's test accuracy.

Across a sweep: per-class accuracy against alpha (mean ± std over seeds) and the preferred-class histograms per
alpha (mean counts over seeds, per layer). Math: `selectivity_jax.measures.classes`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import ml_collections
import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator

from selectivity_jax.analyses.base import (AlphaLayers, AlphaStats, Analysis, RunContext, RunResult, by_alpha,
                                           evaluate, layer_means, per_alpha)
from selectivity_jax.measures import classes
from selectivity_jax.records import CurveStat, Record, curve_stat
from selectivity_jax.report.figures import (alpha_axis, alpha_colorbar, alpha_colors, mean_band, new_figure, panels,
                                            run_title)
from selectivity_jax.report.tables import markdown_table

# Up to this many classes, tables and figures show each class by its index (a table column, a bar, a line with error
# bars); with more (Tiny ImageNet: 200) the tables leave per-class columns out and the preferred-class histograms
# rank the classes by their units (which class is preferred matters less than how concentrated the preference is).
MAX_NAMED_CLASSES = 20


def dead_note(count_dead_units: bool) -> str:
    """One sentence on how dead units were counted."""
    if count_dead_units:
        return ("Dead units (every class mean 0 on the analysed examples) count toward the first class "
                "(count_dead_units), as a plain argmax of their all-zero class means does.")
    return ("Dead units (every class mean 0 on the analysed examples, selectivity index 0) have no preferred class "
            "and are counted apart.")


@dataclasses.dataclass(frozen=True)
class ClassesLayer(Record):
    num_units: int
    preferred_class: list[int]  # per unit; -1 (classes.DEAD): a dead unit not counted
    counts: list[int]           # [C] units preferring each class
    dead_units: int             # units whose class means are all 0 (in counts only with count_dead_units)
    evenness: float             # entropy of counts / log C: 1 even over classes, 0 one class (NaN: no unit counted;
    #                             at most log U / log C with U < C units)


@dataclasses.dataclass(frozen=True)
class ClassesSummary(Record):
    test_accuracy: float         # class accuracies weighted by class counts: the run's test accuracy
    worst_class_accuracy: float
    best_class_accuracy: float
    class_accuracy_std: float    # standard deviation across classes (ddof 0): how unevenly classes are learned
    evenness: float              # mean over layers of the preferred-class evenness


@dataclasses.dataclass(frozen=True)
class ClassesResult(Record):
    num_classes: int
    count_dead_units: bool
    num_examples: int             # analysed examples (preferred classes)
    layer_names: list[str]        # the layers in forward order (JSON keys are sorted)
    layers: dict[str, ClassesLayer]
    test_examples: list[int]      # [C] examples of each class in the whole test split
    class_accuracy: list[float]   # [C] top-1 accuracy within each class on the whole test split (NaN: absent)
    summary: ClassesSummary


@dataclasses.dataclass(frozen=True)
class AlphaClassAccuracy(Record):
    alpha: float
    seeds: list[int]
    accuracy: CurveStat  # per class [C], mean and std over seeds


@dataclasses.dataclass(frozen=True)
class ClassesComparison(Record):
    num_classes: int
    count_dead_units: bool
    layers: list[str]
    alphas: list[AlphaStats]                  # the summary's quantities over seeds
    class_accuracy: list[AlphaClassAccuracy]
    preferred_counts: list[AlphaLayers]       # {layer: units preferring each class [C]}, mean over seeds
    dead_units: list[AlphaLayers]             # {layer: dead units}, mean over seeds


def layer_view(responses: np.ndarray, labels: np.ndarray, num_classes: int, count_dead: bool) -> ClassesLayer:
    """One layer's preferred classes, histogram and evenness from its responses [N, U] and labels [N]."""
    preferred = classes.preferred_classes(responses, labels, num_classes, count_dead)
    counts = classes.preferred_class_histogram(preferred, num_classes)
    dead = int(np.sum(classes.dead_units(classes.class_means(responses, labels, num_classes)[0])))
    return ClassesLayer(num_units=int(responses.shape[1]), preferred_class=preferred.tolist(), counts=counts.tolist(),
                        dead_units=dead, evenness=classes.histogram_evenness(counts))


def summarize_classes(class_accuracy: np.ndarray, test_examples: np.ndarray, layers: Sequence[ClassesLayer]
                      ) -> ClassesSummary:
    """The run's scalars from per-class accuracies [C], class counts [C] and the layers' views."""
    present = class_accuracy[test_examples > 0]
    evenness = [layer.evenness for layer in layers if np.isfinite(layer.evenness)]
    return ClassesSummary(test_accuracy=classes.weighted_accuracy(class_accuracy, test_examples),
                          worst_class_accuracy=float(present.min()), best_class_accuracy=float(present.max()),
                          class_accuracy_std=float(present.std()),
                          evenness=float(np.mean(evenness)) if evenness else float("nan"))


def _class_colors(num_classes: int) -> np.ndarray:
    """One colour per class: tab10 up to 10 classes, else evenly along viridis."""
    if num_classes <= 10:
        return colormaps["tab10"](np.arange(num_classes))
    return colormaps["viridis"](np.linspace(0.0, 0.95, num_classes))


def _class_ticks(ax, num_classes: int) -> None:
    """Every class index on ``ax``'s x axis up to MAX_NAMED_CLASSES classes, else a few integer ticks."""
    if num_classes <= MAX_NAMED_CLASSES:
        ax.set_xticks(range(num_classes))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))


def _histogram(counts: Sequence[float], num_classes: int) -> tuple[np.ndarray, str]:
    """(what to draw, its x label): the counts per class, or ranked in decreasing order beyond MAX_NAMED_CLASSES."""
    if num_classes <= MAX_NAMED_CLASSES:
        return np.asarray(counts), "preferred class"
    return np.sort(np.asarray(counts))[::-1], "class rank (most preferred first)"


class Classes(Analysis[ClassesResult, ClassesComparison]):
    name = "classes"
    title = "Preferred classes and per-class accuracy"
    result_type = ClassesResult
    comparison_type = ClassesComparison

    def default_settings(self) -> ml_collections.ConfigDict:
        settings = ml_collections.ConfigDict()
        # False: dead units (all class means 0) have no preferred class and are counted apart (`dead_note`); True:
        # they count toward the first class, as a plain argmax would (piling them onto class 0).
        settings.count_dead_units = False
        return settings

    def check(self, settings: ml_collections.ConfigDict) -> None:
        if not isinstance(settings.count_dead_units, bool):
            raise ValueError(f"classes.count_dead_units must be True or False; got {settings.count_dead_units!r}")

    def run(self, context: RunContext, settings: ml_collections.ConfigDict) -> ClassesResult:
        num_classes = context.run.num_classes
        labels = context.data[1]
        layers = {layer: layer_view(context.responses[layer], labels, num_classes, settings.count_dead_units)
                  for layer in context.layers}
        for layer, view in layers.items():
            top = int(np.argmax(view.counts))
            context.log(f"    classes of {layer}: {view.num_units} units, {view.dead_units} dead, evenness "
                        f"{view.evenness:.3f}, most preferred class {top} ({view.counts[top]} units)")
        images, test_labels = context.test_split
        logits = evaluate(context.run.logits_fn, images, context.batch_size)
        accuracy, test_examples = classes.per_class_accuracy(logits, test_labels)
        summary = summarize_classes(accuracy, test_examples, list(layers.values()))
        context.log(f"    classes: test accuracy {summary.test_accuracy:.4f} over {len(test_labels)} examples, per "
                    f"class {summary.worst_class_accuracy:.3f} .. {summary.best_class_accuracy:.3f}")
        return ClassesResult(num_classes=num_classes, count_dead_units=bool(settings.count_dead_units),
                             num_examples=len(labels), layer_names=list(layers), layers=layers,
                             test_examples=test_examples.tolist(), class_accuracy=accuracy.tolist(), summary=summary)

    def compare(self, results: Sequence[RunResult[ClassesResult]], settings: ml_collections.ConfigDict
                ) -> ClassesComparison:
        first = results[0].result
        layers = first.layer_names
        return ClassesComparison(
            num_classes=first.num_classes, count_dead_units=first.count_dead_units, layers=layers,
            alphas=per_alpha(results, lambda r: r.result.summary.to_json()),
            class_accuracy=[AlphaClassAccuracy(alpha, [r.seed for r in group],
                                               curve_stat([r.result.class_accuracy for r in group]))
                            for alpha, group in by_alpha(results).items()],
            preferred_counts=layer_means(results, layers, lambda r, layer: r.result.layers[layer].counts),
            dead_units=layer_means(results, layers, lambda r, layer: r.result.layers[layer].dead_units))

    def run_table(self, result: RunResult[ClassesResult]) -> str:
        record = result.result
        rows = [[f"`{layer}`", str(view.num_units), str(view.dead_units), str(int(np.argmax(view.counts))),
                 str(max(view.counts)), f"{view.evenness:.3f}"]
                for layer, view in ((name, record.layers[name]) for name in record.layer_names)]
        text = (f"Preferred class of each unit (largest class-mean response) on {record.num_examples} test examples. "
                f"{dead_note(record.count_dead_units)} Evenness: entropy of the preferred-class histogram / log C "
                f"(1: units spread equally over the {record.num_classes} classes; a layer of U < C units reaches at "
                f"most log U / log C).\n\n" +
                markdown_table(["layer", "units", "dead", "most preferred class", "its units", "evenness"], rows))
        s = record.summary
        text += (f"\n\nTest accuracy per class on the whole test split ({sum(record.test_examples)} examples): "
                 f"{s.worst_class_accuracy:.3f} (worst) .. {s.best_class_accuracy:.3f} (best), std across classes "
                 f"{s.class_accuracy_std:.3f}; weighted by class counts {s.test_accuracy:.4f}.")
        if record.num_classes <= MAX_NAMED_CLASSES:
            rows = [[str(c), str(record.test_examples[c]), f"{record.class_accuracy[c]:.3f}"] +
                    [str(record.layers[name].counts[c]) for name in record.layer_names]
                    for c in range(record.num_classes)]
            text += "\n\n" + markdown_table(["class", "test examples", "accuracy"] +
                                            [f"units preferring it, `{name}`" for name in record.layer_names], rows)
        return text

    def sweep_table(self, comparison: ClassesComparison) -> str:
        rows = [[f"{row.alpha:g}", str(len(row.seeds))] + [row.stats[key].format() for key in
                                                           ("test_accuracy", "worst_class_accuracy",
                                                            "best_class_accuracy", "class_accuracy_std", "evenness")]
                for row in comparison.alphas]
        text = ("Per-class test accuracy on the whole test split (worst, best, std across classes) and how evenly the "
                "analysed layers' units spread over the classes they prefer (evenness, mean over layers: 1 = equally). "
                f"{dead_note(comparison.count_dead_units)} "
                "Mean ± std over seeds.\n\n" +
                markdown_table(["alpha", "n", "test accuracy", "worst class", "best class", "std across classes",
                                "evenness"], rows))
        if comparison.num_classes <= MAX_NAMED_CLASSES:
            rows = [[f"{row.alpha:g}"] + [f"{m:.3f} ± {s:.3f}" for m, s in zip(row.accuracy.mean, row.accuracy.std)]
                    for row in comparison.class_accuracy]
            text += ("\n\nTest accuracy per class, mean ± std over seeds.\n\n" +
                     markdown_table(["alpha"] + [f"class {c}" for c in range(comparison.num_classes)], rows))
        return text

    def run_figures(self, result: RunResult[ClassesResult]) -> dict[str, Any]:
        """'preferred': histogram of preferred classes, one panel per layer (ranked beyond MAX_NAMED_CLASSES);
        'accuracy': test accuracy per class (bars) and overall (dashed)."""
        record = result.result
        classes_axis = np.arange(record.num_classes)
        colors = _class_colors(record.num_classes)
        fig, axes = panels(len(record.layer_names))
        for ax, name in zip(axes, record.layer_names):
            view = record.layers[name]
            counts, xlabel = _histogram(view.counts, record.num_classes)
            ax.bar(classes_axis, counts, color=colors, edgecolor="0.2", linewidth=0.4)
            ax.set(title=f"{name}\n{view.dead_units}/{view.num_units} dead, evenness {view.evenness:.2f}",
                   xlabel=xlabel, ylabel="units")
            _class_ticks(ax, record.num_classes)
            ax.grid(alpha=0.3, axis="y")
        fig.suptitle(run_title(result.alpha, result.seed, "Preferred classes"))
        figures = {"preferred": fig}
        fig = new_figure(min(max(6.4, 0.25 * record.num_classes + 2.0), 14.0), 4.0)
        ax = fig.add_subplot()
        ax.bar(classes_axis, np.nan_to_num(record.class_accuracy), color=colors, edgecolor="0.2", linewidth=0.4)
        ax.axhline(record.summary.test_accuracy, color="0.2", linestyle="--", linewidth=1.0,
                   label=f"all classes {record.summary.test_accuracy:.3f}")
        ax.set(xlabel="class", ylabel="test accuracy within the class", ylim=(0, 1.02),
               title=run_title(result.alpha, result.seed, "Test accuracy per class"))
        ax.grid(alpha=0.3, axis="y")
        _class_ticks(ax, record.num_classes)
        ax.legend(fontsize=7)
        figures["accuracy"] = fig
        return figures

    def sweep_figures(self, comparison: ClassesComparison) -> dict[str, Any]:
        """'accuracy': per-class test accuracy against alpha, one line per class (mean ± std over seeds; dashed: all
        classes); 'preferred': mean units preferring each class (ranked beyond MAX_NAMED_CLASSES), one line per alpha,
        one panel per layer."""
        rows = comparison.class_accuracy
        alphas = [row.alpha for row in rows]
        fig = new_figure()
        ax = fig.add_subplot()
        for c, color in enumerate(_class_colors(comparison.num_classes)):
            means = [row.accuracy.mean[c] for row in rows]
            if comparison.num_classes <= MAX_NAMED_CLASSES:
                mean_band(ax, alphas, means, [row.accuracy.std[c] for row in rows], color, f"class {c}")
            else:
                ax.plot(alphas, means, "-", color=color, linewidth=0.7, alpha=0.6)
        overall = [row.stats["test_accuracy"] for row in comparison.alphas]
        ax.plot(alphas, [s.mean for s in overall], "--", color="0.1", linewidth=1.6, label="all classes")
        alpha_axis(ax, alphas)
        ax.set(ylabel="test accuracy within the class", ylim=(0, 1.02), title="Test accuracy per class vs α")
        ax.legend(fontsize=6, ncol=2)
        figures = {"accuracy": fig}
        norm, cmap = alpha_colors(alphas)
        fig, axes = panels(len(comparison.layers))
        for ax, layer in zip(axes, comparison.layers):
            for row in comparison.preferred_counts:
                counts, xlabel = _histogram(row.layers[layer], comparison.num_classes)
                ax.plot(range(comparison.num_classes), counts, "-o" if comparison.num_classes <= MAX_NAMED_CLASSES
                        else "-", markersize=3, linewidth=1.2, color=cmap(norm(row.alpha)))
            ax.set(title=layer, xlabel=xlabel, ylabel="units (mean over seeds)")
            _class_ticks(ax, comparison.num_classes)
            ax.grid(alpha=0.3)
        alpha_colorbar(fig, axes, alphas)
        fig.suptitle("Preferred classes by α")
        figures["preferred"] = fig
        return figures


ANALYSIS = Classes()
