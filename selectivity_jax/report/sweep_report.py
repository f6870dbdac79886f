"""The report of a sweep directory as files: ``report.md``, ``report.csv`` and ``figures/<name>.png|.svg``, and with
another sweep to compare against, ``against_<label>/`` (`selectivity_jax.report.compare`)."""

from __future__ import annotations

import os
from typing import Sequence

from selectivity_jax.report.compare import load_comparison, write_comparison
from selectivity_jax.report.figures import FIGURE_CAPTIONS, make_figures, save_figure
from selectivity_jax.report.runs import load_sweep
from selectivity_jax.report.tables import summarize, write_csv, write_markdown


def write_sweep_report(sweep_dir: str, out_dir: str | None = None, against: str | None = None,
                       labels: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Writes the report of ``sweep_dir`` into ``out_dir`` (default: the sweep directory); with ``against`` (another
    sweep directory) also the comparison of both into ``out_dir/against_<label>/``, linked from report.md
    (``labels``: the two sweeps' names, default their directory names).

    Returns the paths written ('tables': report.md and report.csv, 'figures', 'comparison': its Markdown, CSV and
    figure files, empty without ``against``) and the missing runs ('missing'). Bad input (either sweep missing or
    without a finished run, ``labels`` without ``against``) raises before anything is written.
    """
    if labels is not None and against is None:
        raise ValueError("labels: names the two sweeps of a comparison, so it needs against (--against)")
    out_dir = out_dir or sweep_dir
    comparison = load_comparison(sweep_dir, against, labels) if against is not None else None
    sweep = comparison.sweeps[0] if comparison is not None else load_sweep(sweep_dir)
    summaries = summarize(sweep)
    os.makedirs(out_dir, exist_ok=True)
    figure_paths, links = [], {}
    for name, fig in make_figures(sweep).items():
        paths = save_figure(fig, os.path.join(out_dir, "figures", name))
        figure_paths += paths
        links[FIGURE_CAPTIONS[name]] = os.path.relpath(paths[0], out_dir)
    comparison_paths, comparison_links = [], {}
    if comparison is not None:
        written = write_comparison(comparison, out_dir)
        comparison_paths = [written.markdown, written.csv] + written.figures
        comparison_links[comparison.labels[1]] = os.path.relpath(written.markdown, out_dir)
    csv_path, md_path = os.path.join(out_dir, "report.csv"), os.path.join(out_dir, "report.md")
    write_csv(summaries, sweep.layer_names, csv_path)
    write_markdown(sweep, summaries, links, md_path, comparison_links)
    missing = [f"alpha {m.alpha:g} seed {m.seed} ({m.status})" for m in sweep.missing]
    return {"tables": [md_path, csv_path], "figures": figure_paths, "comparison": comparison_paths,
            "missing": missing}
