"""ResNet-18/50 for 64x64 Tiny ImageNet (He et al., CVPR 2016), as used by Leavitt & Morcos (ICLR 2021, Sec. 3).

Also holds the residual blocks and the trunk shared with the CIFAR ResNets (`resnet_cifar.py`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from selectivity_jax.models.common import (
    Dtype, ModuleDef, ReluPoint, ZooModel, conv, conv1x1, dropout, global_avg_pool, normalization, relu_output)

Array = jax.Array


def zero_pad_shortcut(x: Array, features: int, strides: int) -> Array:
    """Parameter-free "option A" shortcut (He et al. 2016, Sec. 4.2): subsample spatially, zero-pad channels.

    [B, H, W, C] -> [B, ceil(H/s), ceil(W/s), features].
    """
    x = x[:, ::strides, ::strides, :]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))


class ResidualBlock(nn.Module):
    """Fields and shared layers of the residual blocks (`BasicBlock`, `Bottleneck`): a branch of conv-BN layers
    whose output is added to the shortcut, then a ReLU (point ``out``). [B, H, W, Cin] -> [B, H/s, W/s,
    features * expansion].

    ``shortcut``: ``'projection'`` (1x1 conv + BN, "option B") or ``'zero_pad'`` ("option A"); either is only used
    when the shape changes, identity otherwise. ``norm='none'``: no BN, every conv has a bias, and the branch's
    last conv starts at zero unless the shortcut zero-pads channels (`_zero_init_last`). ``sow_points``: the local
    point names to sow (see `selectivity_jax.models.common.relu_output`).
    """
    features: int
    strides: int = 1
    shortcut: str = 'projection'
    norm: str = 'batch'
    dtype: Dtype = jnp.float32
    sow_points: Sequence[str] = ()

    expansion: ClassVar[int] = 1                   # Output channels per ``features``.
    inner_relus: ClassVar[tuple[str, ...]] = ()    # Points inside the branch, in forward order.

    @nn.nowrap
    def conv_bn(self, y: Array, index: int, features: int, kernel_size: int, strides: int = 1, *, train: bool,
                zero_init: bool = False) -> Array:
        """The branch's ``index``-th conv (from 1; ``conv{index}``, bias-free, with a bias for ``norm='none'``),
        then BN ``bn{index}`` (none for ``norm='none'``). [B, H, W, C] -> [B, H/s, W/s, features]."""
        y = conv(features, kernel_size, strides, bias=self.norm == 'none', dtype=self.dtype, zero_init=zero_init,
                 name=f'conv{index}')(y)
        return normalization(y, self.norm, train, dtype=self.dtype, name=f'bn{index}')

    @nn.nowrap
    def inner_relu(self, y: Array, index: int) -> Array:
        """ReLU of the branch's ``index``-th conv-BN (from 1), the point ``relu{index}``."""
        return relu_output(self, f'relu{index}', nn.relu(y), self.sow_points)

    @nn.nowrap
    def output(self, branch: Array, x: Array, train: bool) -> Array:
        """ReLU of branch + shortcut of the block input ``x``, the point ``out``."""
        y = nn.relu(branch + _shortcut(self, x, branch.shape[-1], train))
        return relu_output(self, 'out', y, self.sow_points)


class BasicBlock(ResidualBlock):
    """Two 3x3 conv-BN layers plus shortcut. [B, H, W, Cin] -> [B, H/s, W/s, features].

    Points: ``relu1`` (after the first conv-BN) and ``out`` (ReLU after the residual sum). Fields: `ResidualBlock`.
    """
    expansion: ClassVar[int] = 1
    inner_relus: ClassVar[tuple[str, ...]] = ('relu1',)

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        y = self.inner_relu(self.conv_bn(x, 1, self.features, 3, self.strides, train=train), 1)
        y = self.conv_bn(y, 2, self.features, 3, train=train, zero_init=_zero_init_last(self, x.shape[-1]))
        return self.output(y, x, train)


class Bottleneck(ResidualBlock):
    """1x1 -> 3x3 (strided) -> 1x1 (x4 channels) conv-BN layers plus shortcut. [B, H, W, Cin] -> [B, H/s, W/s, 4f].

    Points: ``relu1``, ``relu2`` (after the first two conv-BN) and ``out`` (ReLU after the residual sum). Fields:
    `ResidualBlock`.
    """
    expansion: ClassVar[int] = 4
    inner_relus: ClassVar[tuple[str, ...]] = ('relu1', 'relu2')

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        y = self.inner_relu(self.conv_bn(x, 1, self.features, 1, train=train), 1)
        y = self.inner_relu(self.conv_bn(y, 2, self.features, 3, self.strides, train=train), 2)
        y = self.conv_bn(y, 3, self.features * self.expansion, 1, train=train,
                         zero_init=_zero_init_last(self, x.shape[-1]))
        return self.output(y, x, train)


def _zero_init_last(block: ResidualBlock, in_features: int) -> bool:
    """Whether the block's residual branch starts its last conv at zero: without BatchNorm (``norm='none'``) each
    block's sum otherwise doubles the activations' variance, 2^9 over ResNet20's 9 blocks, and SGD at the BN recipe's
    learning rate diverges (measured: non-finite loss at step 4 at lr 0.1). A zero last layer makes the block the
    identity at initialization (Fixup, Zhang et al., ICLR 2019, Sec. 3, rule 2). Not in a block whose zero-pad
    shortcut adds channels: those channels would be exactly 0 before the ReLU, so no gradient would ever reach them
    (measured: half of stage 2's and three quarters of stage 3's units dead through training). With BN every conv
    keeps the standard init, as in Leavitt & Morcos."""
    features = block.features * block.expansion
    pads_channels = block.shortcut == 'zero_pad' and (block.strides != 1 or in_features != features)
    return block.norm == 'none' and not pads_channels


def _shortcut(block: ResidualBlock, x: Array, features: int, train: bool) -> Array:
    """Identity if the block keeps the shape, else the block's projection / zero-pad shortcut."""
    if block.strides == 1 and x.shape[-1] == features:
        return x
    if block.shortcut == 'zero_pad':
        return zero_pad_shortcut(x, features, block.strides)
    if block.shortcut == 'projection':
        x = conv1x1(features, block.strides, bias=block.norm == 'none', dtype=block.dtype, name='proj_conv')(x)
        return normalization(x, block.norm, train, dtype=block.dtype, name='proj_bn')
    raise ValueError(f"unknown shortcut {block.shortcut!r}; expected 'projection' or 'zero_pad'")


# ----------------------------------------------------------------------------------------------------------------------
# Trunk shared by `ResNet` and `ResNetCifar`.
# ----------------------------------------------------------------------------------------------------------------------

def block_name(stage: int, block: int) -> str:
    """Module name of block ``block`` (from 0) of stage ``stage`` (from 1)."""
    return f'stage{stage}_block{block}'


def resnet_relu_points(stage_sizes: Sequence[int], block_cls: ModuleDef) -> list[ReluPoint]:
    """Stem ReLU, then per block its inner ReLUs and its output (block output; stage output if last in stage)."""
    points = [ReluPoint('stem/relu')]
    for s, n_blocks in enumerate(stage_sizes, start=1):
        for b in range(n_blocks):
            name = block_name(s, b)
            points += [ReluPoint(f'{name}/{p}') for p in block_cls.inner_relus]
            points.append(ReluPoint(f'{name}/out', block_output=True, stage_output=b == n_blocks - 1))
    return points


def resnet_forward(model: ZooModel, x: Array, train: bool, *, stage_sizes: Sequence[int], block_cls: ModuleDef,
                   width: int, shortcut: str) -> Array:
    """Stem (3x3 conv-BN-ReLU, stride 1) -> stages (widths ``width * 2**i``, stride 2 from stage 2) -> GAP
    -> dropout -> Dense.

    Must be called from ``model``'s compact ``__call__`` (submodules are created in its scope).
    [B, H, W, 3] -> float32 logits [B, classes].
    """
    dtype = model.dtype
    x = jnp.asarray(x, dtype)
    x = model.conv_relu(x, width, 'stem', train)
    for s, n_blocks in enumerate(stage_sizes, start=1):
        for b in range(n_blocks):
            name = block_name(s, b)
            strides = 2 if s > 1 and b == 0 else 1
            x = block_cls(width * 2 ** (s - 1), strides=strides, shortcut=shortcut, norm=model.norm, dtype=dtype,
                          sow_points=model.sow_points_for(name), name=name)(x, train)
    x = global_avg_pool(x)
    x = dropout(x, model.dropout, train, name='dropout')
    return model.classifier(x, 'fc')


class ResNet(ZooModel, kw_only=True):
    """ResNet for 64x64 inputs (Tiny ImageNet). [B, 64, 64, 3] -> float32 logits [B, num_classes].

    The stem is a 3x3 stride-1 conv (``width`` channels) + BN + ReLU with NO max-pool: the ImageNet 7x7/2 stem plus
    3x3/2 max-pool would downsample 64 px inputs to 2x2 maps in the last stage. Stages have ``width * (1, 2, 4, 8)``
    (x ``block_cls.expansion``) channels and strides 1, 2, 2, 2; shape-changing blocks use a projection shortcut
    (1x1 conv + BN). Points: ``stem/relu``, ``stage{s}_block{b}/relu1`` (``/relu2`` for `Bottleneck`),
    ``stage{s}_block{b}/out``, s = 1..4.
    ``norm``: ``'batch'`` or ``'none'`` (no BN, convs with bias); ``dropout``: rate on the pooled features that enter
    the classifier, in training only (see `selectivity_jax.models.common`).
    """
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block_cls: ModuleDef = BasicBlock
    num_classes: int = 200  # Tiny ImageNet; the other fields of `ZooModel` keep their defaults.
    width: int = 64

    @nn.nowrap
    def relu_points(self) -> list[ReluPoint]:
        """All candidate post-ReLU points, in forward order."""
        return resnet_relu_points(self.stage_sizes, self.block_cls)

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        return resnet_forward(self, x, train, stage_sizes=self.stage_sizes, block_cls=self.block_cls,
                              width=self.width, shortcut='projection')


def ResNet18(num_classes: int = 200, **kwargs: Any) -> ResNet:
    """ResNet-18: `BasicBlock` x [2, 2, 2, 2], ~11.3M parameters for 200 classes."""
    return ResNet(stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock, num_classes=num_classes, **kwargs)


def ResNet50(num_classes: int = 200, **kwargs: Any) -> ResNet:
    """ResNet-50: `Bottleneck` (expansion 4) x [3, 4, 6, 3], ~23.9M parameters for 200 classes."""
    return ResNet(stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck, num_classes=num_classes, **kwargs)
