"""Demo: per-layer class selectivity of a ResNet20 on a synthetic, class-structured data set (no download).

    python -m experiments.demo [--num_per_class 50] [--batch_size 100]

Prints the network selectivity of one batch (`selectivity_fn`) and of the whole data set streamed through
`SelectivityStats`, with the per-layer values.
"""

from __future__ import annotations

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
import time

import jax
import jax.numpy as jnp
from absl import flags

from selectivity_jax import SelectivityStats, apply_with_activations, selectivity_fn
from selectivity_jax.data import synthetic_images
from selectivity_jax.models import get_model, init_variables

flags.DEFINE_integer("num_classes", 10, "Classes in the synthetic data set.")
flags.DEFINE_integer("num_per_class", 50, "Images per class.")
flags.DEFINE_integer("batch_size", 100, "Batch size of the streaming pass.")
flags.DEFINE_string("model", "resnet20", "Registered model name (selectivity_jax.models.MODELS).")
flags.DEFINE_integer("seed", 0, "Seed of the data and the initialization.")
FLAGS = flags.FLAGS


def main(argv):
    cli.no_extra_arguments(argv)
    cli.run_reporting_errors(_demo)


def _demo() -> None:
    cli.use_cpu_settings()
    for name in ("num_per_class", "batch_size"):
        if FLAGS[name].value < 1:
            raise ValueError(f"--{name} must be >= 1; got {FLAGS[name].value}")
    start = time.time()
    images, labels = synthetic_images(FLAGS.num_classes, FLAGS.num_per_class, seed=FLAGS.seed)
    model = get_model(FLAGS.model, num_classes=FLAGS.num_classes)
    variables = init_variables(model, jax.random.key(FLAGS.seed), images[:1].shape)
    print(f"{FLAGS.model} at initialization, {len(images)} synthetic images, {FLAGS.num_classes} classes, "
          f"devices: {jax.devices()}")

    @jax.jit
    def forward(x):
        x = x.astype(jnp.float32) / 255.0 - 0.5
        _, acts, _ = apply_with_activations(model.apply, variables, x, filter=None)
        return acts

    acts = forward(images[:FLAGS.batch_size])
    one_batch = selectivity_fn(acts, labels[:FLAGS.batch_size], FLAGS.num_classes)
    print(f"selectivity_fn on one batch of {FLAGS.batch_size}: network selectivity {float(one_batch):.4f}")

    stats = SelectivityStats.create(acts, FLAGS.num_classes)
    update = jax.jit(lambda s, a, l: s.update(a, l))
    for start_index in range(0, len(images), FLAGS.batch_size):
        batch = slice(start_index, start_index + FLAGS.batch_size)
        stats = update(stats, forward(images[batch]), labels[batch])
    per_layer = stats.per_layer()
    print(f"SelectivityStats over all {len(images)} images: network selectivity {float(stats.mean()):.4f}")
    for name in model.selectivity_layer_names():
        print(f"  {name:<22s} {float(per_layer[name]):.4f}")
    print(f"done in {time.time() - start:.1f} s")


if __name__ == "__main__":
    cli.run(main)
