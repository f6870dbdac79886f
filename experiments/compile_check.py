"""Compile the project's programs for a TPU slice ahead of time, on any machine (no TPU needed):

    python -m experiments.compile_check --target v5e-1 [--config configs/cifar10_resnet20.py ...] [--models 1,2,16]
        [--strategies auto|all|grouped,...] [--dtypes float32|all] [--analyses forward,attacks,gradients|none]
        [--workdir DIR]

Needs libtpu (``pip install -e '.[tpu]'``). Prints a line per program as it goes and writes DIR/compile_check.json and
DIR/compile_check.md (default DIR: runs/compile_check/<target>); a rerun reuses every program already compiled for
the same target, config, code and versions. See selectivity_jax/bench/compile_check.py for the programs and figures.
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
import glob
import importlib.util
import os

import jax
import ml_collections
from absl import flags

from selectivity_jax.bench import compile_check, tpu_targets
from selectivity_jax.models.vmap_conv import STRATEGIES
from selectivity_jax.train.validation import validate_config

NOT_TRAINING_CONFIGS = ("base.py", "analysis.py", "__init__.py")

flags.DEFINE_string("target", "v5e-1", f"TPU slice: {', '.join(tpu_targets.TARGETS)}.")
flags.DEFINE_multi_string("config", None, "Training config file, optionally with a variant "
                          "(configs/quickstart.py:tiny); repeat for several (default: every training config in "
                          "configs/).")
flags.DEFINE_list("models", ["1", "2"], "Group sizes K to compile the train and eval programs for (1: a single run; "
                  "1 and 2 give the largest group that fits).")
flags.DEFINE_list("strategies", ["auto"], f"Convolution strategies of the train programs: auto, all or some of "
                  f"{', '.join(STRATEGIES)}.")
flags.DEFINE_list("dtypes", ["float32"], f"compute_dtype of the train programs: all or some of "
                  f"{', '.join(compile_check.DTYPES)}.")
flags.DEFINE_list("analyses", list(compile_check.ANALYSIS_PROGRAMS), "Analysis programs to compile, or none: "
                  f"{', '.join(compile_check.ANALYSIS_PROGRAMS)}.")
flags.DEFINE_string("workdir", None, "Directory for compile_check.json and .md (default: runs/compile_check/<target>).")
FLAGS = flags.FLAGS


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """The config of ``path[:variant]`` (a configs/*.py file's ``get_config(variant)``)."""
    path, _, variant = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: no config file {path}")
    module_spec = importlib.util.spec_from_file_location(f"_compile_check_config_{len(spec)}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


def _choices(values: list[str], known: tuple[str, ...], flag: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    if values == ["all"]:
        return known
    unknown = [v for v in values if v not in known + extra]
    if not values or unknown:
        raise ValueError(f"--{flag}: unknown {unknown or values}; expected all or some of {', '.join(known + extra)}")
    return tuple(values)


def request_from_flags() -> compile_check.Request:
    """Every flag checked and every config loaded and validated, before anything is compiled or written."""
    target = tpu_targets.check_target(FLAGS.target)
    if not all(k.isdigit() and int(k) >= 1 for k in FLAGS.models):
        raise ValueError(f"--models takes group sizes >= 1, e.g. 1,2,16; got {','.join(FLAGS.models)}")
    specs = FLAGS.config or sorted(path for path in glob.glob("configs/*.py")
                                   if os.path.basename(path) not in NOT_TRAINING_CONFIGS)
    configs = []
    for spec in specs:
        config = load_config_file(spec)
        validate_config(config)
        configs.append((spec, config))
    analyses = () if FLAGS.analyses == ["none"] else _choices(FLAGS.analyses, compile_check.ANALYSIS_PROGRAMS,
                                                                "analyses")
    from selectivity_jax.configs import analysis_settings  # their sizes are the analysis programs' shapes
    return compile_check.Request(
        target=target, configs=tuple(configs), models=tuple(sorted({int(k) for k in FLAGS.models})),
        strategies=_choices(FLAGS.strategies, STRATEGIES, "strategies", ("auto",)),
        dtypes=_choices(FLAGS.dtypes, compile_check.DTYPES, "dtypes"), analyses=analyses,
        analysis_settings=analysis_settings())


def main(argv):
    cli.no_extra_arguments(argv)

    def check() -> None:
        request = request_from_flags()
        if request.target.platform == "cuda" and not jax.config.jax_platforms:
            jax.config.update("jax_platforms", "cpu")  # the CUDA plugin compiles without a GPU beside a CPU-only JAX
        workdir = FLAGS.workdir or os.path.join("runs", "compile_check", request.target.name)
        compile_check.check_workdir(workdir)
        stored = compile_check.stored_programs(workdir, request.target)
        mesh = tpu_targets.target_mesh(request.target)
        compile_check.run_check(request, mesh, stored, compile_check.saver(workdir))
        print(f"written: {os.path.join(workdir, 'compile_check.md')}")
    cli.run_reporting_errors(check)


if __name__ == "__main__":
    cli.run(main)
