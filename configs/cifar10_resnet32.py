"""ResNet32 on CIFAR10: the recipe of configs/cifar10_resnet20.py on a deeper network.

[He et al. 2016, Sec. 4.2] ResNet32 (n = 5 blocks per stage, 0.46M parameters), "option A" shortcuts. [ours] Every
other number as for ResNet20: 45k/5k split drawn per seed, SGD momentum 0.9, lr 0.1 at batch 128, weight decay 1e-4,
64k steps with lr / 10 at 50% and 75%, crop + flip, selectivity on every residual block's output, 5 seeds and the
symmetric alpha grid of configs/base.py.
"""

from configs import cifar10_resnet20


def get_config():
    config = cifar10_resnet20.get_config()
    config.model.name = "resnet32"
    return config
