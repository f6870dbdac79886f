"""Representation analyses of trained runs (README, "Analyses"):

    python -m experiments.analyze --workdir RUN_OR_SWEEP_DIR --analysis ablation[,basis,...] [--config.num_examples=N]

Writes ``analysis/<name>.json`` and figures into every finished run directory and, for a sweep, a comparison across
alphas into ``<sweep>/analysis/``. Settings: configs/analysis.py. Re-running skips what is done.
"""

from absl import app, flags
from ml_collections import config_flags

from experiments.cli import run_reporting_errors
from selectivity_jax.analysis.pipeline import run_analyses
from selectivity_jax.analysis.tasks import ANALYSES, get_analyses

config_flags.DEFINE_config_file("config", "configs/analysis.py", "Analysis settings (configs/analysis.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "A finished run directory, or a sweep directory of runs.")
flags.DEFINE_list("analysis", None, f"Analyses to run: {', '.join(ANALYSES)}.")
flags.mark_flags_as_required(["workdir", "analysis"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run_reporting_errors(lambda: run_analyses(FLAGS.workdir, get_analyses(FLAGS.analysis), FLAGS.config,
                                              report_analyses=list(ANALYSES.values())))


if __name__ == "__main__":
    app.run(main)
