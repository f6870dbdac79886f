"""ResNet18 on Tiny ImageNet, 64x64 (Leavitt & Morcos, ICLR 2021, Sec. 3).

[paper] ResNet18, Tiny ImageNet, 50 images per class of train held out as validation, the official validation set
as test. [ours] 5 seeds, 90 epochs, lr 0.1 at batch 256, / 10 at epochs 30 and 60, weight decay 1e-4, random crop
(4 px padding at 64 px) + flip; an alpha grid that stops at +-5.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model.name = "resnet18"
    config.model.width = 64          # Channels of the first stage (64, 128, 256, 512) [He et al. 2016].
    config.data.name = "tiny_imagenet"
    config.data.num_val = 0
    config.data.val_per_class = 50
    config.batch_size = 256
    config.learning_rate = 0.1
    config.lr_base_batch_size = 256
    config.num_epochs = 90.0
    config.lr_decay_at = (30 / 90, 60 / 90)
    config.sweep.alphas = base.TINY_IMAGENET_ALPHAS
    config.sweep.seeds = (0, 1, 2, 3, 4)
    return config
