"""Train a config's whole alpha x seed grid:

    python -m experiments.sweep --config configs/quickstart.py --workdir runs/quickstart_sweep [--mode=serial]

Re-running the same command skips finished runs and resumes unfinished ones. Then:
`python -m experiments.report --sweep runs/quickstart_sweep`.
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
from absl import flags
from ml_collections import config_flags

from selectivity_jax.sweep import MODES, run_sweep

config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py) with config.sweep.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Sweep directory: one sub-directory per (alpha, seed).")
flags.DEFINE_enum("mode", None, MODES, "vmap: K models of one seed per jitted step; serial: one after another. "
                  "Default: vmap on an accelerator, serial on CPU (where a group trains no faster).")
flags.DEFINE_integer("group_size", 0, "Models per vmapped group (0: automatic: all alphas of a seed, at most 16, "
                     "and as many as the compiled step fits in 80% of one device's memory).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_arguments(argv)
    def sweep() -> None:
        cli.use_cpu_settings(FLAGS.config)
        run_sweep(FLAGS.config, FLAGS.workdir, mode=FLAGS.mode, group_size=FLAGS.group_size)
    cli.run_reporting_errors(sweep)
    print(f"done; report with: python -m experiments.report --sweep {FLAGS.workdir}")


if __name__ == "__main__":
    cli.run(main)
