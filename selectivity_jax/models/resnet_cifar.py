"""CIFAR ResNets (He et al., CVPR 2016, Sec. 4.2), as used by Leavitt & Morcos (ICLR 2021, Sec. 3)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from selectivity_jax.models.common import ReluPoint, ZooModel
from selectivity_jax.models.resnet import BasicBlock, resnet_forward, resnet_relu_points

Array = jax.Array


class ResNetCifar(ZooModel, kw_only=True):
    """ResNet-``depth`` for 32x32 inputs. [B, 32, 32, 3] -> float32 logits [B, num_classes].

    3x3 conv stem (``width`` channels) + BN + ReLU, then 3 stages of n = (depth - 2) / 6 `BasicBlock`s with
    ``width * (1, 2, 4)`` channels (16/32/64), stride 2 in the first block of stages 2 and 3, parameter-free
    "option A" shortcuts (subsample + zero-pad channels), global average pooling and a Dense classifier.
    Points: ``stem/relu``, ``stage{s}_block{b}/relu1``, ``stage{s}_block{b}/out``, s = 1..3, b = 0..n-1.
    ``norm``: ``'batch'`` or ``'none'`` (no BN, convs with bias); ``dropout``: rate on the pooled features that enter
    the classifier, in training only (see `selectivity_jax.models.common`).
    """
    depth: int = 20
    width: int = 16

    @nn.nowrap
    def check_fields(self) -> None:
        if self.depth < 8 or (self.depth - 2) % 6 != 0:
            raise ValueError(f'ResNetCifar depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...); '
                             f'got {self.depth}')

    @nn.nowrap
    def stage_sizes(self) -> tuple[int, int, int]:
        """(n, n, n) with n = (depth - 2) / 6 blocks per stage."""
        n = (self.depth - 2) // 6
        return n, n, n

    @nn.nowrap
    def relu_points(self) -> list[ReluPoint]:
        """All candidate post-ReLU points, in forward order."""
        return resnet_relu_points(self.stage_sizes(), BasicBlock)

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        return resnet_forward(self, x, train, stage_sizes=self.stage_sizes(), block_cls=BasicBlock,
                              width=self.width, shortcut='zero_pad')


def ResNet20(num_classes: int = 10, **kwargs: Any) -> ResNetCifar:
    """ResNet-20 (n = 3), 0.27M parameters for 10 classes."""
    return ResNetCifar(depth=20, num_classes=num_classes, **kwargs)


def ResNet32(num_classes: int = 10, **kwargs: Any) -> ResNetCifar:
    """ResNet-32 (n = 5), 0.46M parameters for 10 classes."""
    return ResNetCifar(depth=32, num_classes=num_classes, **kwargs)


def ResNet56(num_classes: int = 10, **kwargs: Any) -> ResNetCifar:
    """ResNet-56 (n = 9), 0.85M parameters for 10 classes."""
    return ResNetCifar(depth=56, num_classes=num_classes, **kwargs)
