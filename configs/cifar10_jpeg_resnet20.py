"""ResNet20 on the CIFAR-10 JPEG copy (an image folder), short schedule for CPU checks.

[ours] Reads `<split>/<class>/*.jpg` from an image folder (a directory or a .tar.gz): `data/cifar10-jpeg` under the
working directory by default (another with `--config.data.root=PATH`), made once from the official binary release
by `python -m experiments.make_cifar10_folder --archive cifar-10-binary.tar.gz --out data/cifar10-jpeg`
(docs/training.md, "Data sets"). JPEG pixels differ slightly from the official PNG-exact data: not for published
numbers. A 10k-image training subset and 8 epochs (lr 0.1, / 10 at 50% and 75%) keep a run to minutes on CPU;
on an accelerator set `--config.data.train_subset=0 --config.num_train_steps=64000` for the full recipe of
configs/cifar10_resnet20.py.
"""

from configs import cifar10_resnet20


def get_config():
    config = cifar10_resnet20.get_config()
    config.data.name = "image_folder"
    config.data.root = "data/cifar10-jpeg"  # python -m experiments.make_cifar10_folder makes it
    config.data.cache_dir = "data/cache"
    config.data.num_val = 5000
    config.data.train_subset = 10_000
    config.num_train_steps = 0
    config.num_epochs = 8.0
    config.eval_every_epochs = 2
    config.sweep.alphas = (-1.0, 0.0)
    config.sweep.seeds = (0,)
    return config
