"""The report of a sweep directory as files: ``report.md``, ``report.csv`` and ``figures/<name>.png|.svg``."""

from __future__ import annotations

import os

from selectivity_jax.report.figures import FIGURE_CAPTIONS, make_figures, save_figure
from selectivity_jax.report.runs import load_sweep
from selectivity_jax.report.tables import summarize, write_csv, write_markdown


def write_sweep_report(sweep_dir: str, out_dir: str | None = None) -> dict[str, list[str]]:
    """Writes the report of ``sweep_dir`` into ``out_dir`` (default: the sweep directory).

    Returns the paths written ('tables': report.md and report.csv, 'figures') and the missing runs ('missing').
    """
    out_dir = out_dir or sweep_dir
    sweep = load_sweep(sweep_dir)
    summaries = summarize(sweep)
    os.makedirs(out_dir, exist_ok=True)
    figure_paths, links = [], {}
    for name, fig in make_figures(sweep).items():
        paths = save_figure(fig, os.path.join(out_dir, "figures", name))
        figure_paths += paths
        links[FIGURE_CAPTIONS[name]] = os.path.relpath(paths[0], out_dir)
    csv_path, md_path = os.path.join(out_dir, "report.csv"), os.path.join(out_dir, "report.md")
    write_csv(summaries, sweep.layer_names, csv_path)
    write_markdown(sweep, summaries, links, md_path)
    missing = [f"alpha {m.alpha:g} seed {m.seed} ({m.status})" for m in sweep.missing]
    return {"tables": [md_path, csv_path], "figures": figure_paths, "missing": missing}
