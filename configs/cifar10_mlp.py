"""Chen et al.'s MLP on CIFAR10 ("Representative Substitution"; selectivity_jax/models/chen.py).

[Chen et al.] Hidden layers of 128, 512, 2048, 2048 units on the flattened 32x32x3 image. [ours] The schedule of
configs/cifar10_shallow_cnn.py (100 epochs, SGD momentum 0.9 at lr 0.01 for batch 128, lr / 10 at 50% and 75%,
weight decay 1e-4, crop + flip), BatchNorm in the hidden layers unless ``--config.model.norm=none``, the 45k/5k split,
5 seeds and the symmetric alpha grid of configs/base.py; selectivity on every hidden layer.
"""

from configs import base, cifar10_shallow_cnn


def get_config():
    config = cifar10_shallow_cnn.get_config()
    config.model.name = "mlp"
    del config.model["features"], config.model["hidden"]  # The shallow CNN's widths.
    config.model.hidden = (128, 512, 2048, 2048)  # Hidden layer widths [Chen et al.].
    config.sweep.alphas = base.CIFAR10_ALPHAS
    config.sweep.seeds = (0, 1, 2, 3, 4)
    return config
