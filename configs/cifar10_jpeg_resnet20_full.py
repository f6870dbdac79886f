"""ResNet20 on the whole CIFAR-10 JPEG training split, 15 epochs: the paper's central claim on CPU-sized runs.

[ours] The project's CIFAR-10 recipe (configs/cifar10_resnet20.py: SGD momentum 0.9, lr 0.1 at batch 128, weight
decay 1e-4 on kernels only, no warm-up, lr / 10 at 50% and 75% of training, random crop + flip) on the JPEG copy of
configs/cifar10_jpeg_resnet20.py with all 45k training images (5k validation drawn per seed), shortened to 15 epochs
(~5.3k steps instead of 64k): 0.82 test accuracy at alpha 0 (docs/results.md). alpha -1 lowers selectivity, +1 raises it [paper, Sec. 3];
seeds 0 and 1 give the seed-to-seed floor (the issue asks for five runs: seed 1 at alpha +1 trains last).
"""

from configs import cifar10_jpeg_resnet20


def get_config():
    config = cifar10_jpeg_resnet20.get_config()
    config.data.train_subset = 0
    config.num_epochs = 15.0
    config.eval_every_epochs = 1
    config.sweep.alphas = (-1.0, 0.0, 1.0)
    config.sweep.seeds = (0, 1)
    return config
