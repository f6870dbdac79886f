"""ResNet20 on CIFAR10 (Leavitt & Morcos, ICLR 2021, Sec. 3).

[paper] ResNet20, CIFAR10, 45k/5k train/validation split drawn per seed, the official test set, selectivity on
every residual block's output. [He et al. 2016, the paper's cited recipe; its details are the
project's choice] SGD momentum 0.9, lr 0.1 at batch 128 (linear scaling), weight decay 1e-4 (not on BN/bias),
64k steps, lr / 10 at 50% and 75%, random crop (4 px padding) + horizontal flip. [ours] 5 seeds and the symmetric alpha
grid in configs/base.py, since the paper's exact grid is not published in a form we can read.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model.name = "resnet20"
    config.data.name = "cifar10"
    config.data.mean = (0.4914, 0.4822, 0.4465)
    config.data.std = (0.2470, 0.2435, 0.2616)
    config.num_train_steps = 64_000
    config.sweep.alphas = base.CIFAR10_ALPHAS
    config.sweep.seeds = (0, 1, 2, 3, 4)
    return config
