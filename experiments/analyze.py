"""Analyses of trained runs (README, "Analyses of trained networks"; docs/analyses.md), one command for all of them:

    python -m experiments.analyze --workdir RUN_OR_SWEEP_DIR --analysis corruptions,attacks,... [--config.x=...]
    python -m experiments.analyze --models RUN_A,RUN_B,... [--labels A,B,...] --out DIR --analysis rs

``--analysis`` takes analysis names and the groups ``robustness``, ``representations`` and ``all``. Writes
``analysis/<name>.json`` and figures into every finished run directory, for a sweep the comparisons across alphas
into ``<sweep>/analysis/``, and the report ``<workdir>/analysis/report.md``. Settings: configs/analysis.py.
Re-running skips what is done; corruptions and attacks also resume inside a run. ``--models`` puts runs of
different models, each analysed before, side by side (``<out>/models.md`` and figures; rs: Chen et al.'s Fig. 3b).
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
from absl import flags
from ml_collections import config_flags

from selectivity_jax.analyses import GROUPS, NAMES, get_analyses
from selectivity_jax.analyses.runner import compare_models, run_analyses

config_flags.DEFINE_config_file("config", "configs/analysis.py", "Analysis settings (configs/analysis.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "A finished run directory, or a sweep directory of runs.")
flags.DEFINE_list("analysis", None, f"Analyses to run: {', '.join(NAMES)}, or the groups {', '.join(GROUPS)}.")
flags.DEFINE_list("models", None, "Instead of --workdir: run directories of different models, each analysed before "
                  "with --analysis, to compare side by side.")
flags.DEFINE_list("labels", None, "With --models: a name per run (default: the runs' model names).")
flags.DEFINE_string("out", None, "With --models: the output directory.")
flags.mark_flags_as_required(["analysis"])
FLAGS = flags.FLAGS


def analyze() -> None:
    cli.use_cpu_settings()
    if (FLAGS.workdir is None) == (FLAGS.models is None):
        raise ValueError("pass either --workdir (analyse a run or a sweep) or --models (compare analysed runs)")
    if FLAGS.models is None:
        if FLAGS.labels is not None or FLAGS.out is not None:
            raise ValueError("--labels and --out go with --models")
        run_analyses(FLAGS.workdir, get_analyses(FLAGS.analysis), FLAGS.config)
    else:
        if FLAGS.out is None:
            raise ValueError("--models needs --out, the directory for the comparison")
        compare_models(FLAGS.models, get_analyses(FLAGS.analysis), FLAGS.out, FLAGS.labels)


def main(argv):
    cli.no_extra_arguments(argv)
    cli.run_reporting_errors(analyze)


if __name__ == "__main__":
    cli.run(main)
