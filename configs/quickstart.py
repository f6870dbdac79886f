"""Quickstart: runs anywhere in a few minutes with no download (README's main command).

[ours] A synthetic, class-structured image data set generated in memory (selectivity_jax/data/synthetic.py:
10 classes, 32x32), a ResNet20 narrowed to 8/16/32 channels, a short schedule. Shows the effect of alpha:
`--config.alpha=-5` lowers test selectivity, `--config.alpha=5` raises it.
"""

from configs import base


def get_config():
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
    return config
