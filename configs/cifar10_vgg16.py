"""VGG16 (with BatchNorm) on CIFAR10 (Leavitt & Morcos, ICLR 2021, appendix).

[paper] VGG16 on CIFAR10 with selectivity on every conv ReLU, 45k/5k split. [ours] 5 seeds, the same recipe as
ResNet20 (SGD momentum 0.9, lr 0.1 at batch 128, weight decay 1e-4, lr / 10 at 50% and 75%) for 64k steps, and the
symmetric alpha grid of configs/base.py.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model.name = "vgg16"
    config.data.name = "cifar10"
    config.data.mean = (0.4914, 0.4822, 0.4465)
    config.data.std = (0.2470, 0.2435, 0.2616)
    config.num_train_steps = 64_000
    config.sweep.alphas = base.CIFAR10_ALPHAS
    config.sweep.seeds = (0, 1, 2, 3, 4)
    return config
