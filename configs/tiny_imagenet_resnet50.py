"""ResNet50 on Tiny ImageNet, 64x64 (Leavitt & Morcos, ICLR 2021, Sec. 3).

[paper] ResNet50, Tiny ImageNet, 50 images per class of train held out as validation, the official validation set
as test. [ours] 3 seeds, 90 epochs, lr 0.1 at batch 256, / 10 at epochs 30 and 60, weight decay 1e-4, random crop
(4 px padding at 64 px) + flip; an alpha grid that stops at +-5.
"""

from configs import tiny_imagenet_resnet18


def get_config():
    config = tiny_imagenet_resnet18.get_config()
    config.model.name = "resnet50"
    config.sweep.seeds = (0, 1, 2)
    return config
