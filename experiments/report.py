"""Report a sweep: python -m experiments.report --sweep DIR [--out DIR] [--against OTHER [--labels A,B]]

Reads the run directories of DIR (see selectivity_jax/report/runs.py) and writes into --out (default: DIR)
``report.md``, ``report.csv`` and ``figures/<name>.png|.svg``. Unfinished runs are listed as missing. With
--against, another sweep (e.g. the same model without BatchNorm) is compared with DIR: accuracy and selectivity
against alpha of both overlaid and a table of both, written into ``<out>/against_<label of OTHER>/``
(``comparison.md``, ``comparison.csv``, ``figures/``); --labels names the two sweeps (default: their directory
names).
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
import os

from absl import flags

from selectivity_jax.report.sweep_report import write_sweep_report

flags.DEFINE_string("sweep", None, "Sweep directory: one sub-directory per (alpha, seed) run.")
flags.DEFINE_string("out", None, "Output directory (default: the sweep directory).")
flags.DEFINE_string("against", None, "Another sweep directory to compare with --sweep (written into "
                    "<out>/against_<label>/).")
flags.DEFINE_list("labels", None, "With --against: the two sweeps' names, --sweep's first (default: their "
                  "directory names), e.g. with_bn,without_bn.")
flags.mark_flag_as_required("sweep")
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_arguments(argv)
    out_dir = FLAGS.out or FLAGS.sweep
    written = cli.run_reporting_errors(
        lambda: write_sweep_report(FLAGS.sweep, out_dir, against=FLAGS.against, labels=FLAGS.labels))
    print(f"report: {written['tables'][0]}")
    print(f"table: {written['tables'][1]}")
    print(f"figures ({len(written['figures'])} files): {os.path.join(out_dir, 'figures')}")
    if written["comparison"]:
        print(f"comparison: {written['comparison'][0]} (table {written['comparison'][1]}, figures in "
              f"{os.path.dirname(written['comparison'][2])})")
    if written["missing"]:
        print(f"missing runs ({len(written['missing'])}): {'; '.join(written['missing'])}")


if __name__ == "__main__":
    cli.run(main)
