"""Measure the accelerator path and run the CIFAR-10 alpha grid within a time budget, in one command:

    python -m experiments.accelerator_check --workdir DIR --data_root data/cifar10-jpeg.tar.gz [--budget_minutes 8]
    python -m experiments.accelerator_check --workdir DIR --smoke        # every section at toy size, on a CPU

Writes DIR/accelerator_check.json and DIR/accelerator_check.md, and the grid's sweep report (report.md, figures/)
into DIR; see selectivity_jax/bench/accelerator_check.py for the sections. Running it again on the same DIR
resumes an unfinished grid.
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
import os

import jax
from absl import flags
from ml_collections import config_flags

from selectivity_jax.bench.accelerator_check import run_check

config_flags.DEFINE_config_file("config", "configs/cifar10_resnet20.py", "The ResNet20 training config whose "
                                "recipe and alpha grid are checked.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for the check's files and the grid's runs.")
flags.DEFINE_float("budget_minutes", 8.0, "Wall-clock budget of the whole check; the grid gets what the "
                   "measurements leave.")
flags.DEFINE_bool("smoke", False, "Every section at toy size (CPU, a few minutes).")
flags.DEFINE_string("data_root", None, "CIFAR-10 as an image folder (directory or .tar.gz with train/<class>/ and "
                    "test/<class>/), e.g. the JPEG copy; required unless --smoke.")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_arguments(argv)
    if not jax.config.jax_compilation_cache_dir:  # the sections compile the same programs again: cache them
        jax.config.update("jax_compilation_cache_dir", os.path.join(FLAGS.workdir, "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    def check() -> None:
        cli.use_cpu_settings(FLAGS.config)  # CPU programs (the smoke check) as the other commands run them
        run_check(FLAGS.config, FLAGS.workdir, budget_minutes=FLAGS.budget_minutes, smoke=FLAGS.smoke,
                  data_root=FLAGS.data_root)
    cli.run_reporting_errors(check)


if __name__ == "__main__":
    cli.run(main)
