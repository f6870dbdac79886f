"""VGG16 (with BatchNorm) on CIFAR10 (Leavitt & Morcos, ICLR 2021, appendix).

[paper] VGG16 on CIFAR10 with selectivity on every conv ReLU, 45k/5k split. [ours] 5 seeds, the same recipe as
ResNet20 (SGD momentum 0.9, lr 0.1 at batch 128, weight decay 1e-4, lr / 10 at 50% and 75%) for 64k steps, and the
symmetric alpha grid of configs/base.py.
"""

from configs import cifar10_resnet20


def get_config():
    config = cifar10_resnet20.get_config()
    config.model.name = "vgg16"
    return config
