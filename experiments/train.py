"""Train one model at one alpha: python -m experiments.train --config configs/quickstart.py --workdir DIR

Any config field can be overridden, e.g. ``--config.alpha=-1.0 --config.seed=3``. Running the same command on
the same DIR resumes; ``--overwrite`` starts afresh. See selectivity_jax/train/loop.py for what DIR receives.
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
from absl import flags
from ml_collections import config_flags

from selectivity_jax.train.loop import train_and_evaluate

config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("overwrite", False, "Delete the work directory first instead of resuming.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_arguments(argv)
    def train() -> None:
        cli.use_cpu_settings(FLAGS.config)
        train_and_evaluate(FLAGS.config, FLAGS.workdir, overwrite=FLAGS.overwrite)
    cli.run_reporting_errors(train)


if __name__ == "__main__":
    cli.run(main)
