"""Train/eval throughput and the cost of the selectivity term, or the throughput of vmapped model groups:

    python -m experiments.benchmark --config configs/cifar10_resnet20.py [--steps 50] [--alpha 1.0]
    python -m experiments.benchmark --config configs/cifar10_resnet20.py --vmap 1,2,4,8,16
"""

import json

from absl import app, flags
from ml_collections import config_flags

from selectivity_jax.train.benchmark import benchmark, benchmark_groups

config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
flags.DEFINE_integer("steps", 20, "Timed training steps per variant (after warm-up).")
flags.DEFINE_float("alpha", 1.0, "The non-zero alpha to time.")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")
flags.DEFINE_list("vmap", None, "Group sizes K to time (models trained together in one vmapped step).")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.vmap:
        groups = benchmark_groups(FLAGS.config, tuple(int(k) for k in FLAGS.vmap), timed_steps=FLAGS.steps)
        print(f"{FLAGS.config.model.name}, batch {FLAGS.config.batch_size} per model, {FLAGS.config.compute_dtype}")
        base = groups[min(groups)]["images_per_second_total"]
        for size, row in groups.items():
            print(f"  K={size:<3d} {row['images_per_second_per_model']:9.0f} images/s per model "
                  f"{row['images_per_second_total']:10.0f} total  ({row['images_per_second_total'] / base:.2f}x "
                  f"K={min(groups)})  {row['step_ms']:8.1f} ms/step")
        if FLAGS.output:
            with open(FLAGS.output, "w") as f:
                json.dump({str(k): v for k, v in groups.items()}, f, indent=2)
        return
    results = benchmark(FLAGS.config, alpha=FLAGS.alpha, timed_steps=FLAGS.steps)
    print(f"{results['model']}, batch {results['batch_size']}, {results['compute_dtype']}, "
          f"{results['device_count']} x {results['device_kind']}")
    for key, value in results.items():
        if key.startswith("train_images_per_second/"):
            name = key.split("/", 1)[1]
            print(f"  train {name:<22s} {value:10.0f} images/s  {results['train_step_ms/' + name]:8.2f} ms/step"
                  f"  ({results['train_step_compiles/' + name]} compilation)")
    print(f"  selectivity term overhead vs plain cross-entropy: {100 * results['selectivity_term_overhead']:.1f}%")
    print(f"  eval {results['eval_images_per_second']:.0f} images/s")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
