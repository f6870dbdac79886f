"""Robustness analyses of trained runs (Leavitt & Morcos, "Linking average- and worst-case perturbation robustness
via class selectivity and dimensionality"):

    python -m experiments.robustness --workdir RUN_OR_SWEEP_DIR [--only corruptions,attacks,gradients,dimensionality]
        [--config configs/analysis.py] [--config.attacks.pgd_steps='(10,)'] ...

Writes ``analysis/<name>.json`` and figures into every finished run directory, ``<run>/robustness.json`` (every
robustness analysis done so far) and, for a sweep, the comparisons across alphas into ``<sweep>/analysis/`` and
``<sweep>/robustness.json``, with the report ``<workdir>/analysis/robustness.md``. Settings: configs/analysis.py.
Re-running skips what is done; corruptions and attacks also resume inside a run (``analysis/<name>.partial.json``).
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
from absl import flags
from ml_collections import config_flags

from selectivity_jax.analysis.robustness import ROBUSTNESS_ANALYSES, run_robustness

config_flags.DEFINE_config_file("config", "configs/analysis.py", "Analysis settings (configs/analysis.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "A finished run directory, or a sweep directory of runs.")
flags.DEFINE_list("only", list(ROBUSTNESS_ANALYSES),
                  f"Analyses to run (default all): {', '.join(ROBUSTNESS_ANALYSES)}.")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_arguments(argv)
    cli.run_reporting_errors(lambda: run_robustness(FLAGS.workdir, FLAGS.only, FLAGS.config))


if __name__ == "__main__":
    cli.run(main)
