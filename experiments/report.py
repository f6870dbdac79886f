"""Report a sweep: python -m experiments.report --sweep DIR [--out DIR]

Reads the run directories of DIR (see selectivity_jax/report/runs.py) and writes into --out (default: DIR)
``report.md``, ``report.csv`` and ``figures/<name>.png|.svg``. Unfinished runs are listed as missing.
"""

import os
import sys

from absl import app, flags

from selectivity_jax.report.sweep_report import write_sweep_report

flags.DEFINE_string("sweep", None, "Sweep directory: one sub-directory per (alpha, seed) run.")
flags.DEFINE_string("out", None, "Output directory (default: the sweep directory).")
flags.mark_flag_as_required("sweep")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    out_dir = FLAGS.out or FLAGS.sweep
    try:
        written = write_sweep_report(FLAGS.sweep, out_dir)
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
