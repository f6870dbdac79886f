"""Chen et al.'s shallow CNN on CIFAR10 ("Representative Substitution"; selectivity_jax/models/chen.py).

[Chen et al.] Four 3x3 stride-1 convs of 64, 64, 128, 128 channels and a fully connected layer before the classifier,
trained for 100 epochs. [ours] A 2x2 max-pool after each pair of convs and 256 fully connected units (the model's
documented choice); SGD momentum 0.9 at lr 0.01 (batch 128), lr / 10 at 50% and 75% of training, weight decay 1e-4:
a rate that a plain (non-residual) network also trains at with ``--config.model.norm=none``; crop + flip; the 45k/5k
split, 5 seeds and the symmetric alpha grid of configs/base.py; selectivity on every conv ReLU (``'all_relus'`` adds
``fc1/relu``).
"""

from configs import base, cifar10_resnet20


def get_config():
    config = cifar10_resnet20.get_config()
    config.model.name = "shallow_cnn"
    config.model.features = (64, 64, 128, 128)  # Conv widths [Chen et al.].
    config.model.hidden = 256        # Units of the fully connected layer before the classifier [ours].
    config.num_train_steps = 0       # Length from num_epochs.
    config.num_epochs = 100.0        # [Chen et al.]
    config.learning_rate = 0.01
    config.sweep.alphas = base.CIFAR10_ALPHAS
    config.sweep.seeds = (0, 1, 2, 3, 4)
    return config
