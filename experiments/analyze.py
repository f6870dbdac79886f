"""Analyses of trained runs (README, "Analyses"), one command for all of them:

    python -m experiments.analyze --workdir RUN_OR_SWEEP_DIR --analysis corruptions,attacks,... [--config.x=...]

``--analysis`` takes analysis names and the groups ``robustness``, ``representations`` and ``all``. Writes
``analysis/<name>.json`` and figures into every finished run directory, for a sweep the comparisons across alphas
into ``<sweep>/analysis/``, and the report ``<workdir>/analysis/report.md``. Settings: configs/analysis.py.
Re-running skips what is done; corruptions and attacks also resume inside a run.
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
from absl import flags
from ml_collections import config_flags

from selectivity_jax.analyses import GROUPS, NAMES, get_analyses
from selectivity_jax.analyses.runner import run_analyses

config_flags.DEFINE_config_file("config", "configs/analysis.py", "Analysis settings (configs/analysis.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "A finished run directory, or a sweep directory of runs.")
flags.DEFINE_list("analysis", None, f"Analyses to run: {', '.join(NAMES)}, or the groups {', '.join(GROUPS)}.")
flags.mark_flags_as_required(["workdir", "analysis"])
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_arguments(argv)
    cli.run_reporting_errors(lambda: run_analyses(FLAGS.workdir, get_analyses(FLAGS.analysis), FLAGS.config))


if __name__ == "__main__":
    cli.run(main)
