"""Two sweeps side by side, e.g. ResNet20 with and without BatchNorm: test accuracy and network selectivity against
alpha of both overlaid (mean over seeds with the Student-t confidence interval of `tables.t_interval`) and a table of
both.

`write_comparison` writes into the first sweep's report folder, under ``against_<label of the second>/``:
``comparison.md``, ``comparison.csv`` and ``figures/accuracy_selectivity_vs_alpha.png|.svg``. The command line is
``python -m experiments.report --sweep A --against B [--labels NAME_A,NAME_B]``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from typing import Sequence

from selectivity_jax.report.figures import save_figure, sweeps_vs_alpha
from selectivity_jax.report.runs import Sweep, load_sweep
from selectivity_jax.report.tables import (CONFIDENCE_LEVEL, AlphaInterval, MeanInterval, format_interval,
                                           intervals_by_alpha, markdown_table)

COMPARISON_FIGURE = "accuracy_selectivity_vs_alpha"
COMPARISON_FOLDER_PREFIX = "against_"


@dataclasses.dataclass(frozen=True)
class SweepComparison:
    """Two loaded sweeps (the reported one first), their labels and their per-alpha intervals."""
    sweeps: tuple[Sweep, Sweep]
    labels: tuple[str, str]
    intervals: tuple[list[AlphaInterval], list[AlphaInterval]]

    @property
    def alphas(self) -> list[float]:
        """Every alpha with a finished run in either sweep, ascending."""
        return sorted({a for sweep in self.sweeps for a in sweep.alphas})

    def at(self, k: int, alpha: float) -> AlphaInterval | None:
        """Sweep ``k``'s interval at ``alpha`` (None when it has no finished run there)."""
        return next((i for i in self.intervals[k] if i.alpha == alpha), None)


@dataclasses.dataclass(frozen=True)
class ComparisonFiles:
    """What `write_comparison` wrote: the folder, the Markdown and CSV tables and the figure files."""
    folder: str
    markdown: str
    csv: str
    figures: list[str]


def default_labels(path_a: str, path_b: str) -> tuple[str, str]:
    """The sweeps' directory names, or, when those are equal, their shortest path tails that differ."""
    parts_a = os.path.normpath(os.path.abspath(path_a)).split(os.sep)
    parts_b = os.path.normpath(os.path.abspath(path_b)).split(os.sep)
    for length in range(1, max(len(parts_a), len(parts_b)) + 1):
        tail_a, tail_b = "/".join(parts_a[-length:]), "/".join(parts_b[-length:])
        if tail_a != tail_b:
            return tail_a.strip("/") or "/", tail_b.strip("/") or "/"
    raise ValueError(f"against: {path_b} is the reported sweep itself")


def check_labels(labels: Sequence[str]) -> tuple[str, str]:
    """Two distinct non-empty labels (the reported sweep's first), stripped; ValueError otherwise."""
    labels = [str(label).strip() for label in labels]
    if len(labels) != 2 or not all(labels) or labels[0] == labels[1]:
        raise ValueError(f"labels: two different names, the reported sweep's first (e.g. --labels=with_bn,without_bn), "
                         f"not {','.join(labels)!r}")
    return labels[0], labels[1]


def load_comparison(sweep_dir: str, against_dir: str, labels: Sequence[str] | None = None,
                    level: float = CONFIDENCE_LEVEL) -> SweepComparison:
    """Loads both sweeps; one-line ValueErrors when either is not a directory, has no finished run, or is the same
    directory as the other, and for bad ``labels`` (default: `default_labels`)."""
    for field, path in (("sweep", sweep_dir), ("against", against_dir)):
        if not os.path.isdir(path):
            raise ValueError(f"{field}: {path} is not a directory (expected a sweep directory)")
    if os.path.realpath(sweep_dir) == os.path.realpath(against_dir):
        raise ValueError(f"against: {against_dir} is the reported sweep itself")
    names = check_labels(labels) if labels is not None else default_labels(sweep_dir, against_dir)
    sweeps, problem = [], None
    for field, path in (("sweep", sweep_dir), ("against", against_dir)):
        try:
            sweeps.append(load_sweep(path))
        except ValueError as error:
            problem = f"{field}: {' '.join(str(error).split())}"
            break
    if problem is not None:  # raised here, outside the handler: the one line without the original as its context
        raise ValueError(problem)
    return SweepComparison(sweeps=(sweeps[0], sweeps[1]), labels=names,
                           intervals=(intervals_by_alpha(sweeps[0], level), intervals_by_alpha(sweeps[1], level)))


def comparison_folder(out_dir: str, comparison: SweepComparison) -> str:
    """``out_dir/against_<label of the second sweep>`` (characters other than letters, digits, '.', '_' and '-'
    become '_')."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", comparison.labels[1]).strip("_.") or "other"
    return os.path.join(out_dir, COMPARISON_FOLDER_PREFIX + slug)


def _difference(a: MeanInterval | None, b: MeanInterval | None) -> str:
    if a is None or b is None or not (math.isfinite(a.mean) and math.isfinite(b.mean)):
        return "—"
    return f"{b.mean - a.mean:+.4f}"


def comparison_table(comparison: SweepComparison, level: float = CONFIDENCE_LEVEL) -> str:
    """One row per alpha of either sweep: seeds of each, test accuracy and network selectivity of each (mean ±
    confidence-interval half width) and the difference of the means (second − first); '—' where a sweep has no run."""
    a, b = comparison.labels
    rows = []
    for alpha in comparison.alphas:
        first, second = comparison.at(0, alpha), comparison.at(1, alpha)
        cells = [f"{alpha:g}", f"{first.n if first else 0} / {second.n if second else 0}"]
        for metric in ("accuracy", "selectivity"):
            values = [getattr(i, metric) if i else None for i in (first, second)]
            cells += [format_interval(v) if v else "—" for v in values] + [_difference(*values)]
        rows.append(cells)
    percent = f"{100 * level:g}% CI"
    return markdown_table(["alpha", f"n ({a} / {b})", f"accuracy {a} (± {percent})", f"accuracy {b} (± {percent})",
                           f"Δ accuracy ({b} − {a})", f"selectivity {a} (± {percent})",
                           f"selectivity {b} (± {percent})", f"Δ selectivity ({b} − {a})"], rows)


def csv_columns(labels: Sequence[str]) -> list[str]:
    """alpha, then per sweep ``<label>/n``, ``<label>/test_accuracy_mean|_ci`` and ``<label>/test_selectivity_mean|_ci``
    (``_ci``: the confidence-interval half width, empty for one seed)."""
    return ["alpha"] + [f"{label}/{column}" for label in labels
                        for column in ("n", "test_accuracy_mean", "test_accuracy_ci", "test_selectivity_mean",
                                       "test_selectivity_ci")]


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ""


def write_csv(comparison: SweepComparison, path: str) -> None:
    """One row per alpha of either sweep under `csv_columns` (empty cells where a sweep has no run)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(csv_columns(comparison.labels))
        for alpha in comparison.alphas:
            row = [f"{alpha:g}"]
            for k in range(2):
                i = comparison.at(k, alpha)
                row += ([str(i.n), _number(i.accuracy.mean), _number(i.accuracy.half_width),
                         _number(i.selectivity.mean), _number(i.selectivity.half_width)] if i else [""] * 5)
            writer.writerow(row)


def _sweep_line(label: str, sweep: Sweep) -> str:
    return (f"- **{label}**: `{sweep.path}`; {sweep.model}; {len(sweep.runs)} finished runs at {len(sweep.alphas)} "
            f"alphas; missing: {len(sweep.missing)}")


def comparison_markdown(comparison: SweepComparison, figure_link: str, level: float = CONFIDENCE_LEVEL) -> str:
    """The comparison report: the two sweeps, the table and the figure."""
    a, b = comparison.labels
    return "\n".join([
        f"# Sweep comparison: {a} vs {b}", "",
        _sweep_line(a, comparison.sweeps[0]), _sweep_line(b, comparison.sweeps[1]), "",
        f"Test set; mean over seeds ± the half width of the {100 * level:g}% Student-t confidence interval "
        "(t · s / sqrt(n), n − 1 degrees of freedom; none for a single seed). Δ: difference of the means.", "",
        comparison_table(comparison, level), "",
        "## Test accuracy and network selectivity vs α", "",
        f"![{a} vs {b}]({figure_link})", "",
    ])


def write_comparison(comparison: SweepComparison, out_dir: str, level: float = CONFIDENCE_LEVEL) -> ComparisonFiles:
    """Writes `comparison_markdown`, the CSV table and the overlay figure into `comparison_folder`."""
    folder = comparison_folder(out_dir, comparison)
    os.makedirs(folder, exist_ok=True)
    figure_paths = save_figure(sweeps_vs_alpha(comparison.sweeps, comparison.labels, level),
                               os.path.join(folder, "figures", COMPARISON_FIGURE))
    markdown_path, csv_path = os.path.join(folder, "comparison.md"), os.path.join(folder, "comparison.csv")
    with open(markdown_path, "w") as f:
        f.write(comparison_markdown(comparison, os.path.relpath(figure_paths[0], folder), level))
    write_csv(comparison, csv_path)
    return ComparisonFiles(folder=folder, markdown=markdown_path, csv=csv_path, figures=figure_paths)
