"""Quickstart: runs anywhere in a few minutes with no download (README's main command).

[ours] A synthetic, class-structured image data set generated in memory (selectivity_jax/data/synthetic.py:
10 classes, 32x32), a ResNet20 narrowed to 8/16/32 channels, a short schedule. Shows the effect of alpha:
`--config.alpha=-5` lowers test selectivity, `--config.alpha=5` raises it.

`--config configs/quickstart.py:tiny` (``get_config("tiny")``) shrinks it to seconds on one device (240 train /
40 validation / 80 test images, width 4, one epoch, alphas -5, 0, 5 with one seed): a smoke test whose numbers mean
nothing, used by the tests and by the notebooks' short mode.
"""

from configs import base

VARIANTS = (None, "tiny")


def get_config(variant=None):
    if variant not in VARIANTS:
        raise ValueError(f"unknown quickstart variant {variant!r}; known: {VARIANTS[1:]}")
    config = base.get_config()
    config.model.name = "resnet20"
    config.model.width = 8           # Narrowed ResNet20 (16 in the paper's model) so 2 CPU cores suffice.
    config.data.name = "synthetic"
    config.data.num_classes = 10
    config.data.num_per_class = 260  # 200 train + 20 validation + 40 test per class.
    config.data.test_per_class = 40
    config.data.image_size = 32
    config.data.num_val = 200
    config.data.mean = (0.5, 0.5, 0.5)
    config.data.std = (0.25, 0.25, 0.25)
    config.batch_size = 100
    config.lr_base_batch_size = 100
    config.learning_rate = 0.05
    config.num_epochs = 6.0
    config.lr_decay_at = (0.75,)
    config.eval_batch_size = 200
    config.eval_every_epochs = 2
    config.sweep.alphas = (-5.0, -1.0, 0.0, 1.0, 5.0)
    config.sweep.seeds = (0, 1)
    if variant == "tiny":
        config.model.width = 4
        config.data.num_per_class = 36  # 24 train + 4 validation + 8 test per class.
        config.data.test_per_class = 8
        config.data.num_val = 40
        config.batch_size = 40
        config.lr_base_batch_size = 40
        config.eval_batch_size = 40
        config.num_epochs = 1.0
        config.eval_every_epochs = 1
        config.num_devices = 1
        config.sweep.alphas = (-5.0, 0.0, 5.0)
        config.sweep.seeds = (0,)
    return config
