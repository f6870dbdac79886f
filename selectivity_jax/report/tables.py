"""Per-alpha summaries of a sweep, written as CSV and as the Markdown report.

Standard deviations are sample standard deviations over seeds (ddof=1), and 0 for a single seed. Confidence
intervals (the paper's figures, Leavitt & Morcos 2021, Figs. 2-3) are two-sided Student-t intervals of the mean over
seeds: mean ± t_{(1+level)/2, n-1} · s / sqrt(n); a single seed has none.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from selectivity_jax.records import EpochMetrics, format_duration, mean_std
from selectivity_jax.report.runs import Run, Sweep

# The confidence level of the intervals over seeds in the figures: the paper's 95% intervals.
CONFIDENCE_LEVEL = 0.95


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


def t_quantile(level: float, dof: int) -> float:
    """The two-sided Student-t critical value: the (1 + level) / 2 quantile with ``dof`` degrees of freedom."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: a confidence level strictly between 0 and 1, not {level}")
    if dof < 1:
        raise ValueError(f"dof: at least 1 degree of freedom, not {dof}")
    return float(stats.t.ppf(0.5 + level / 2.0, dof))


@dataclasses.dataclass(frozen=True)
class MeanInterval:
    """The mean of ``n`` values over seeds and the half width of its confidence interval (NaN for n < 2: no
    interval; the mean is NaN for n = 0)."""
    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def t_interval(values: Sequence[float], level: float = CONFIDENCE_LEVEL) -> MeanInterval:
    """Mean of the finite ``values`` and the half width t_{(1+level)/2, n-1} · s / sqrt(n) (s: sample std)."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(finite.size)
    if n == 0:
        return MeanInterval(math.nan, math.nan, 0)
    if n == 1:
        return MeanInterval(float(finite[0]), math.nan, 1)
    half_width = t_quantile(level, n - 1) * float(np.std(finite, ddof=1)) / math.sqrt(n)
    return MeanInterval(float(np.mean(finite)), half_width, n)


@dataclasses.dataclass(frozen=True)
class AlphaInterval:
    """Test accuracy and network selectivity at one alpha: mean over seeds with its confidence interval."""
    alpha: float
    accuracy: MeanInterval
    selectivity: MeanInterval

    @property
    def n(self) -> int:
        return self.accuracy.n


def intervals_by_alpha(sweep: Sweep, level: float = CONFIDENCE_LEVEL) -> list[AlphaInterval]:
    """One `AlphaInterval` per alpha with a finished run, by ascending alpha."""
    return [AlphaInterval(alpha, t_interval([run.results.test_accuracy for run in sweep.runs_at(alpha)], level),
                          t_interval([run.results.test_selectivity for run in sweep.runs_at(alpha)], level))
            for alpha in sweep.alphas]


@dataclasses.dataclass(frozen=True)
class DeadFractions:
    """The fraction of dead units (never active on the test set) against alpha, means over seeds: ``per_layer``
    [layer][A] from results.json's ``per_layer_dead_fraction`` and ``network`` [A] from ``test_dead_unit_fraction``
    (the mean over layers); NaN where no run at that alpha recorded it."""
    alphas: list[float]
    layers: list[str]
    per_layer: dict[str, list[float]]
    network: list[float]

    @property
    def empty(self) -> bool:
        """True when not one run recorded a dead-unit fraction."""
        values = self.network + [v for line in self.per_layer.values() for v in line]
        return not any(math.isfinite(v) for v in values)


def _mean_of_finite(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def dead_fractions(sweep: Sweep) -> DeadFractions:
    """`DeadFractions` of the sweep's finished runs, layers in forward order."""
    def per_layer(run: Run) -> dict[str, float]:
        return {k: float(v) for k, v in (run.results.per_layer_dead_fraction or {}).items()}

    def network(run: Run) -> float:
        value = run.results.test_dead_unit_fraction
        return math.nan if value is None else float(value)

    alphas, layers = sweep.alphas, sweep.layer_names
    return DeadFractions(
        alphas=alphas, layers=layers,
        per_layer={name: [_mean_of_finite([per_layer(run).get(name, math.nan) for run in sweep.runs_at(alpha)])
                          for alpha in alphas] for name in layers},
        network=[_mean_of_finite([network(run) for run in sweep.runs_at(alpha)]) for alpha in alphas])


# The metrics.jsonl columns of network selectivity (mean over layers) during training. train: mean over the epoch's
# training batches; val: on the validation split, at evaluation epochs only.
TRAINING_SELECTIVITY_KEYS = {"train_selectivity": "train batches (mean over the epoch)",
                             "val_selectivity": "validation split"}
# The metrics.jsonl column of per-layer selectivity on the validation split ({layer: value}; runs trained before it
# was logged have none).
LAYER_SELECTIVITY_KEY = "val_layer_selectivity"


@dataclasses.dataclass(frozen=True)
class TrainingCurve:
    """One metrics.jsonl column per epoch at one alpha: ``values[e]`` is the mean over the seeds that logged it at
    ``epochs[e]``; ``seeds``: the number of finished runs at this alpha."""
    alpha: float
    epochs: list[int]
    values: list[float]
    seeds: int


def epoch_rows(run: Run) -> dict[int, EpochMetrics]:
    """The metrics.jsonl rows of a run by epoch (the last row of an epoch when a resumed run logged it twice)."""
    return {int(row.epoch): row for row in run.metrics}


def training_curves(sweep: Sweep, key: str, layer: str | None = None) -> list[TrainingCurve]:
    """Per alpha (ascending), the mean over seeds of metrics.jsonl's ``key`` per epoch (with ``layer``, of
    ``row[key][layer]``, e.g. `LAYER_SELECTIVITY_KEY`), epochs where some seed logged it; alphas where none did are
    left out."""
    curves = []
    for alpha in sweep.alphas:
        by_epoch: dict[int, list[float]] = {}
        runs = sweep.runs_at(alpha)
        for run in runs:
            for epoch, row in epoch_rows(run).items():
                value = getattr(row, key, None)
                if layer is not None:
                    value = value.get(layer) if isinstance(value, dict) else None
                if value is not None and math.isfinite(float(value)):
                    by_epoch.setdefault(epoch, []).append(float(value))
        if by_epoch:
            epochs = sorted(by_epoch)
            curves.append(TrainingCurve(alpha, epochs, [float(np.mean(by_epoch[e])) for e in epochs], len(runs)))
    return curves


def summarize(sweep: Sweep) -> list[AlphaSummary]:
    """One summary per alpha with a finished run, by ascending alpha."""
    summaries = []
    for alpha in sweep.alphas:
        runs = sweep.runs_at(alpha)
        accuracy = mean_std([run.results.test_accuracy for run in runs])
        selectivity = mean_std([run.results.test_selectivity for run in runs])
        dead = [float(run.results.test_dead_unit_fraction) for run in runs
                if run.results.test_dead_unit_fraction is not None]
        layers = {name: mean_std([run.results.per_layer_selectivity[name] for run in runs
                                  if name in run.results.per_layer_selectivity])[0] for name in sweep.layer_names}
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


def runs_table(sweep: Sweep) -> str:
    """One row per finished run: its test (and validation) accuracy and selectivity, steps, the device, and the
    wall-clock training time (sum over epochs of timing.jsonl's last row per epoch, and the median epoch: an epoch
    resumed mid-way counts from the resume, which the median ignores)."""
    rows = []
    for run in sweep.runs:
        results, times = run.results, list(run.epoch_seconds.values())
        validation = (f"{results.val_accuracy:.4f} / {results.val_selectivity:.4f}"
                      if results.val_accuracy is not None else "—")
        rows.append([f"{run.alpha:g}", str(run.seed), f"{run.results.test_accuracy:.4f}", f"{run.results.test_selectivity:.4f}",
                     validation, str(results.steps if results.steps is not None else "?"),
                     f"{results.device_count or '?'} x {results.device_kind or '?'}",
                     f"{format_duration(sum(times))} ({format_duration(float(np.median(times)))})" if times else "—"])
    return markdown_table(["alpha", "seed", "test accuracy", "test selectivity", "validation accuracy / selectivity",
                           "steps", "devices", "training time (median epoch)"], rows)


def layer_table(summaries: Sequence[AlphaSummary], layer_names: Sequence[str]) -> str:
    """One row per layer in forward order, one column per alpha: the mean selectivity over seeds."""
    rows = [[f"`{name}`"] + [f"{s.layer_selectivity.get(name, math.nan):.3f}" for s in summaries]
            for name in layer_names]
    return markdown_table(["layer"] + [f"α = {s.alpha:g}" for s in summaries], rows)


def format_interval(interval: MeanInterval, digits: int = 4) -> str:
    """'mean ± half width', or 'mean (no interval)' for one seed, '—' for none."""
    if interval.n == 0:
        return "—"
    if not math.isfinite(interval.half_width):
        return f"{interval.mean:.{digits}f} (no interval)"
    return f"{interval.mean:.{digits}f} ± {interval.half_width:.{digits}f}"


def interval_table(intervals: Sequence[AlphaInterval], level: float = CONFIDENCE_LEVEL) -> str:
    """alpha | n | test accuracy mean ± CI half width | network selectivity mean ± CI half width."""
    percent = f"{100 * level:g}%"
    rows = [[f"{i.alpha:g}", str(i.n), format_interval(i.accuracy), format_interval(i.selectivity)]
            for i in intervals]
    return markdown_table(["alpha", "n", f"test accuracy (mean ± {percent} CI)",
                           f"network selectivity (mean ± {percent} CI)"], rows)


def dead_unit_table(dead: DeadFractions) -> str:
    """One row per layer in forward order and a last row for the network, one column per alpha: the mean fraction
    of dead units over seeds."""
    def cells(values: Sequence[float]) -> list[str]:
        return [f"{v:.3f}" if math.isfinite(v) else "—" for v in values]

    rows = [[f"`{name}`"] + cells(dead.per_layer[name]) for name in dead.layers]
    rows.append(["network (mean over layers)"] + cells(dead.network))
    return markdown_table(["layer"] + [f"α = {a:g}" for a in dead.alphas], rows)


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


def markdown_report(sweep: Sweep, summaries: Sequence[AlphaSummary], figures: Mapping[str, str],
                    comparisons: Mapping[str, str] | None = None) -> str:
    """The report: title, grid, summary, confidence-interval, per-layer and dead-unit tables, figures ({caption: PNG
    link}), comparisons with other sweeps ({label: link}), missing runs."""
    parts = [
        _title(sweep), "",
        "Loss = cross-entropy − α × network class selectivity (Leavitt & Morcos, ICLR 2021). Test-set figures; "
        "mean ± sample standard deviation (ddof=1) over seeds, std 0 for a single seed.", "",
        "## Grid", "", grid_section(sweep), "",
        "## Summary", "", summary_table(summaries), "",
        f"## Confidence intervals ({100 * CONFIDENCE_LEVEL:g}%)", "",
        "Mean over seeds ± the half width of the Student-t interval t · s / sqrt(n) (n seeds, n − 1 degrees of "
        "freedom), as in the paper's figures; a single seed has no interval.", "",
        interval_table(intervals_by_alpha(sweep)), "",
        "## Runs", "", runs_table(sweep), "",
        "## Per-layer selectivity", "", "Mean test selectivity over seeds, layers in forward order.", "",
        layer_table(summaries, sweep.layer_names), "",
        "## Dead units", "",
        "Fraction of units never active on the test set, mean over seeds (results.json: per_layer_dead_fraction, "
        "test_dead_unit_fraction).", "",
        dead_unit_table(dead_fractions(sweep)), "",
    ]
    if figures:
        parts += ["## Figures", ""]
        for caption, link in figures.items():
            parts += [f"### {caption}", "", f"![{caption}]({link})", ""]
    if comparisons:
        parts += ["## Comparisons", ""]
        parts += [f"- [against {label}]({link})" for label, link in comparisons.items()] + [""]
    parts += ["## Missing runs", "", missing_section(sweep), ""]
    return "\n".join(parts)


def write_markdown(sweep: Sweep, summaries: Sequence[AlphaSummary], figures: Mapping[str, str], path: str,
                   comparisons: Mapping[str, str] | None = None) -> None:
    """Writes `markdown_report` to ``path``."""
    with open(path, "w") as f:
        f.write(markdown_report(sweep, summaries, figures, comparisons))
