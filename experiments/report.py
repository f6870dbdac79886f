"""Report a sweep: python -m experiments.report --sweep DIR [--out DIR]

Reads the run directories of DIR (see selectivity_jax/report/runs.py) and writes into --out (default: DIR)
``report.md``, ``report.csv`` and ``figures/<name>.png|.svg``. Unfinished runs are listed as missing.
"""

import os
import sys

from absl import app, flags

from selectivity_jax.report.figures import FIGURE_CAPTIONS, make_figures, save_figure
from selectivity_jax.report.runs import load_sweep
from selectivity_jax.report.tables import summarize, write_csv, write_markdown

flags.DEFINE_string("sweep", None, "Sweep directory: one sub-directory per (alpha, seed) run.")
flags.DEFINE_string("out", None, "Output directory (default: the sweep directory).")
flags.mark_flag_as_required("sweep")
FLAGS = flags.FLAGS


def write_report(sweep_dir: str, out_dir: str) -> dict[str, list[str]]:
    """Writes the report of ``sweep_dir`` into ``out_dir``.

    Returns the paths written ('tables': report.md and report.csv, 'figures') and the missing runs ('missing').
    """
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    out_dir = FLAGS.out or FLAGS.sweep
    try:
        written = write_report(FLAGS.sweep, out_dir)
    except (ValueError, FileNotFoundError) as error:  # bad input: one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"report: {written['tables'][0]}")
    print(f"table: {written['tables'][1]}")
    print(f"figures ({len(written['figures'])} files): {os.path.join(out_dir, 'figures')}")
    if written["missing"]:
        print(f"missing runs ({len(written['missing'])}): {'; '.join(written['missing'])}")


if __name__ == "__main__":
    app.run(main)
