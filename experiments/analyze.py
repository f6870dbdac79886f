"""Representation analyses of trained runs (README, "Analyses"):

    python -m experiments.analyze --workdir RUN_OR_SWEEP_DIR --analysis ablation[,basis,...] [--config.num_examples=N]

Writes ``analysis/<name>.json`` and figures into every finished run directory and, for a sweep, a comparison across
alphas into ``<sweep>/analysis/``. Settings: configs/analysis.py. Re-running skips what is done.
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
from absl import flags
from ml_collections import config_flags

from selectivity_jax.analysis.pipeline import run_analyses
from selectivity_jax.analysis.tasks import ANALYSES, get_analyses

config_flags.DEFINE_config_file("config", "configs/analysis.py", "Analysis settings (configs/analysis.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "A finished run directory, or a sweep directory of runs.")
flags.DEFINE_list("analysis", None, f"Analyses to run: {', '.join(ANALYSES)}.")
flags.mark_flags_as_required(["workdir", "analysis"])
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_arguments(argv)
    cli.run_reporting_errors(lambda: run_analyses(FLAGS.workdir, get_analyses(FLAGS.analysis), FLAGS.config,
                                              report_analyses=list(ANALYSES.values())))


if __name__ == "__main__":
    cli.run(main)
