"""Train/eval throughput and the cost of the selectivity term, or the throughput of vmapped model groups:

    python -m experiments.benchmark --config configs/cifar10_resnet20.py [--steps 50] [--alpha 1.0]
    python -m experiments.benchmark --config configs/cifar10_resnet20.py --vmap 1,2,4,8,16 [--strategies all]

The first form also times the PyTorch reference (selectivity_jax/bench/torch_reference.py, eager) on the same
device when torch is installed, for a ResNet20 config.
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
import dataclasses
import json

import jax

from absl import flags
from ml_collections import config_flags

from selectivity_jax.bench import torch_reference
from selectivity_jax.bench.step_timing import benchmark, benchmark_groups, fastest_strategy
from selectivity_jax.models.vmap_conv import cpu_settings
from selectivity_jax.models.vmap_conv import STRATEGIES
from selectivity_jax.train.validation import validate_config

config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
flags.DEFINE_integer("steps", 20, "Timed training steps per variant (after warm-up).")
flags.DEFINE_float("alpha", 1.0, "The non-zero alpha to time.")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")
flags.DEFINE_list("vmap", None, "Group sizes K to time (models trained together in one vmapped step).")
flags.DEFINE_list("strategies", None, f"With --vmap: convolution strategies to compare ({', '.join(STRATEGIES)}, "
                  "or 'all'); default: the config's vmap_conv.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def _groups(config) -> None:
    sizes = tuple(int(k) for k in FLAGS.vmap)
    strategies = STRATEGIES if FLAGS.strategies == ["all"] else FLAGS.strategies
    for strategy in strategies or ():
        if strategy not in STRATEGIES + ("auto",):
            raise ValueError(f"unknown strategy {strategy!r}; expected 'all', 'auto' or some of {list(STRATEGIES)}")
    groups = benchmark_groups(config, sizes, strategies, timed_steps=FLAGS.steps)
    print(f"{config.model.name}, batch {config.batch_size} per model, {config.compute_dtype}"
          + (f", cpu_tuning {cpu_settings()}" if jax.default_backend() == "cpu" else ""))
    for strategy, rows in groups.items():
        base = rows[min(rows)].images_per_second
        print(f" {strategy} convolutions ({rows[min(rows)].convolutions} kernels):")
        for size, row in rows.items():
            print(f"  K={size:<3d} {row.images_per_second_per_model:9.0f} images/s per model "
                  f"{row.images_per_second:10.0f} total  ({row.images_per_second / base:.2f}x K={min(rows)})  "
                  f"{row.step_ms:8.1f} ms/step")
    if len(groups) > 1:
        print(f" fastest at K={max(sizes)}: {fastest_strategy(groups, max(sizes))}")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({strategy: {str(k): dataclasses.asdict(v) for k, v in rows.items()}
                       for strategy, rows in groups.items()}, f, indent=2)


def _steps(config) -> None:
    results = benchmark(config, alpha=FLAGS.alpha, timed_steps=FLAGS.steps)
    print(f"{results['model']}, batch {results['batch_size']}, {results['compute_dtype']}, "
          f"{results['device_count']} x {results['device_kind']}, {results['steps_per_call']} step(s) per call"
          + (f", cpu_tuning {results['cpu_tuning']}, {results['convolutions']} convolutions"
             if results["platform"] == "cpu" else ""))
    for key, value in results.items():
        if key.startswith("train_images_per_second/"):
            name = key.split("/", 1)[1]
            print(f"  train {name:<22s} {value:10.0f} images/s  {results['train_step_ms/' + name]:8.2f} ms/step"
                  f"  ({results['train_step_compiles/' + name]} compilation)")
    print(f"  selectivity term overhead vs plain cross-entropy: {100 * results['selectivity_term_overhead']:.1f}%")
    print(f"  eval {results['eval_images_per_second']:.0f} images/s")
    if config.model.name == "resnet20" and config.data.name in ("cifar10", "image_folder", "synthetic"):
        if torch_reference.torch_version() is None:
            print("  PyTorch reference: torch not installed")
        else:
            width = config.model.get("width", 16) or 16
            for name, term in (("no_selectivity_term", False), (f"alpha_{FLAGS.alpha:g}", True)):
                timing = torch_reference.time_train_step(batch_size=config.batch_size, width=width,
                                                         alpha=FLAGS.alpha, selectivity_term=term,
                                                         timed_steps=FLAGS.steps)
                print(f"  PyTorch eager {name:<14s} {timing.images_per_second:10.0f} images/s  "
                      f"{timing.step_ms:8.2f} ms/step")
                results[f"torch_eager_images_per_second/{name}"] = timing.images_per_second
            ratio = results[f"train_images_per_second/alpha_{FLAGS.alpha:g}"] / timing.images_per_second
            print(f"  JAX / PyTorch eager with the selectivity term: {ratio:.2f}x")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=2)


def main(argv):
    cli.no_extra_arguments(argv)
    def bench() -> None:
        validate_config(FLAGS.config)
        cli.use_cpu_settings(FLAGS.config)  # before JAX starts
        if FLAGS.steps < 1:
            raise ValueError(f"--steps must be >= 1; got {FLAGS.steps}")
        if FLAGS.vmap and not all(k.isdigit() and int(k) >= 1 for k in FLAGS.vmap):
            raise ValueError(f"--vmap takes group sizes >= 1, e.g. 1,2,4; got {','.join(FLAGS.vmap)}")
        _groups(FLAGS.config) if FLAGS.vmap else _steps(FLAGS.config)
    cli.run_reporting_errors(bench)


if __name__ == "__main__":
    cli.run(main)
