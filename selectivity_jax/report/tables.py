"""Per-alpha summaries of a sweep, written as CSV and as the Markdown report.

Standard deviations are sample standard deviations over seeds (ddof=1), and 0 for a single seed.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from selectivity_jax.report.runs import Sweep


@dataclasses.dataclass(frozen=True)
class AlphaSummary:
    """The finished runs at one alpha: means and sample standard deviations over seeds."""
    alpha: float
    seeds: tuple[int, ...]
    accuracy_mean: float
    accuracy_std: float
    selectivity_mean: float
    selectivity_std: float
    dead_fraction_mean: float
    layer_selectivity: dict[str, float]  # mean over seeds, per layer

    @property
    def n(self) -> int:
        return len(self.seeds)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std of a single value is 0, of none NaN."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return float(np.mean(values)), std


def summarize(sweep: Sweep) -> list[AlphaSummary]:
    """One summary per alpha with a finished run, by ascending alpha."""
    summaries = []
    for alpha in sweep.alphas:
        runs = sweep.runs_at(alpha)
        accuracy = mean_std([run.test_accuracy for run in runs])
        selectivity = mean_std([run.test_selectivity for run in runs])
        dead = [float(run.results["test_dead_unit_fraction"]) for run in runs
                if "test_dead_unit_fraction" in run.results]
        layers = {name: mean_std([run.per_layer_selectivity[name] for run in runs
                                  if name in run.per_layer_selectivity])[0] for name in sweep.layer_names}
        summaries.append(AlphaSummary(alpha=alpha, seeds=tuple(run.seed for run in runs),
                                      accuracy_mean=accuracy[0], accuracy_std=accuracy[1],
                                      selectivity_mean=selectivity[0], selectivity_std=selectivity[1],
                                      dead_fraction_mean=mean_std(dead)[0], layer_selectivity=layers))
    return summaries


def csv_columns(layer_names: Sequence[str]) -> list[str]:
    """The header of the CSV table: the fixed columns, then ``selectivity/<layer>`` per layer."""
    return (["alpha", "n", "seeds", "test_accuracy_mean", "test_accuracy_std", "test_selectivity_mean",
             "test_selectivity_std", "test_dead_unit_fraction_mean"] + [f"selectivity/{n}" for n in layer_names])


def csv_row(summary: AlphaSummary, layer_names: Sequence[str]) -> list[str]:
    """One CSV row; floats with full precision (repr), seeds joined by spaces."""
    values = [summary.accuracy_mean, summary.accuracy_std, summary.selectivity_mean, summary.selectivity_std,
              summary.dead_fraction_mean] + [summary.layer_selectivity.get(name, math.nan) for name in layer_names]
    return [f"{summary.alpha:g}", str(summary.n), " ".join(map(str, summary.seeds))] + [repr(float(v)) for v in values]


def write_csv(summaries: Sequence[AlphaSummary], layer_names: Sequence[str], path: str) -> None:
    """Writes one row per alpha under the `csv_columns` header."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(csv_columns(layer_names))
        writer.writerows(csv_row(summary, layer_names) for summary in summaries)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "r") -> str:
    """A Markdown table; the first column left-aligned, the others aligned by ``align`` ('r' or 'l')."""
    rule = [":--"] + ["--:" if align == "r" else ":--"] * (len(header) - 1)
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def summary_table(summaries: Sequence[AlphaSummary]) -> str:
    """alpha | n | test accuracy mean ± std | network selectivity mean ± std."""
    rows = [[f"{s.alpha:g}", str(s.n), _pm(s.accuracy_mean, s.accuracy_std), _pm(s.selectivity_mean, s.selectivity_std)]
            for s in summaries]
    return markdown_table(["alpha", "n", "test accuracy (mean ± std)", "network selectivity (mean ± std)"], rows)


def layer_table(summaries: Sequence[AlphaSummary], layer_names: Sequence[str]) -> str:
    """One row per layer in forward order, one column per alpha: the mean selectivity over seeds."""
    rows = [[f"`{name}`"] + [f"{s.layer_selectivity.get(name, math.nan):.3f}" for s in summaries]
            for name in layer_names]
    return markdown_table(["layer"] + [f"α = {s.alpha:g}" for s in summaries], rows)


def _values(values: Sequence[float | int]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def grid_section(sweep: Sweep) -> str:
    """The planned grid and how much of it finished."""
    return "\n".join([
        f"- Sweep directory: `{sweep.path}`",
        f"- Planned grid: {len(sweep.planned_alphas)} alphas × {len(sweep.planned_seeds)} seeds = "
        f"{sweep.num_planned} runs; alphas {_values(sweep.planned_alphas)}; seeds {_values(sweep.planned_seeds)}",
        f"- Finished: {len(sweep.runs)} runs at {len(sweep.alphas)} alphas; missing: {len(sweep.missing)}",
    ])


def missing_section(sweep: Sweep) -> str:
    """A bullet per missing (alpha, seed), or a line saying nothing is missing."""
    if not sweep.missing:
        return "None: every planned run finished."
    notes = {"unfinished": "unfinished (directory without results.json)", "absent": "absent (no run directory)"}
    lines = ["This report covers the finished runs only; these planned or started runs have no results:", ""]
    lines += [f"- alpha {m.alpha:g}, seed {m.seed}: {notes.get(m.status, m.status)}" for m in sweep.missing]
    return "\n".join(lines)


def _title(sweep: Sweep) -> str:
    dataset = (sweep.runs[0].config.get("data") or {}).get("name")
    return f"# Class-selectivity sweep: {sweep.model}" + (f" on {dataset}" if dataset else "")


def markdown_report(sweep: Sweep, summaries: Sequence[AlphaSummary], figures: Mapping[str, str]) -> str:
    """The report: title, grid, summary and per-layer tables, figures ({caption: PNG link}), missing runs."""
    parts = [
        _title(sweep), "",
        "Loss = cross-entropy − α × network class selectivity (Leavitt & Morcos, ICLR 2021). Test-set figures; "
        "mean ± sample standard deviation (ddof=1) over seeds, std 0 for a single seed.", "",
        "## Grid", "", grid_section(sweep), "",
        "## Summary", "", summary_table(summaries), "",
        "## Per-layer selectivity", "", "Mean test selectivity over seeds, layers in forward order.", "",
        layer_table(summaries, sweep.layer_names), "",
    ]
    if figures:
        parts += ["## Figures", ""]
        for caption, link in figures.items():
            parts += [f"### {caption}", "", f"![{caption}]({link})", ""]
    parts += ["## Missing runs", "", missing_section(sweep), ""]
    return "\n".join(parts)


def write_markdown(sweep: Sweep, summaries: Sequence[AlphaSummary], figures: Mapping[str, str], path: str) -> None:
    """Writes `markdown_report` to ``path``."""
    with open(path, "w") as f:
        f.write(markdown_report(sweep, summaries, figures))
