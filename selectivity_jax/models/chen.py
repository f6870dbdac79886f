"""The CIFAR-10 models of Chen et al. ("Representative Substitution"): a shallow CNN and an MLP.

The paper fixes the layer widths (CNN: four 3x3 stride-1 convs of 64, 64, 128, 128 channels, then a fully connected
layer before the classifier; MLP: hidden layers of 128, 512, 2048, 2048 units on the flattened image). The rest is
the project's choice [ours], stated in each class: a 2x2 max-pool after each pair of convs, flattening (no global
pooling) and a 256-unit fully connected layer for the CNN; normalization and dropout as for every model of the zoo
(`selectivity_jax.models.common`: ``norm``, ``dropout``).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from selectivity_jax.models.common import DenseReLU, ReluPoint, ZooModel, dropout

Array = jax.Array

SHALLOW_CNN_FEATURES = (64, 64, 128, 128)  # Conv widths [Chen et al.].
SHALLOW_CNN_HIDDEN = 256                   # Width of the fully connected layer before the classifier [ours].
MLP_HIDDEN = (128, 512, 2048, 2048)        # Hidden layer widths [Chen et al.].


def _check_widths(field: str, widths: Sequence[int]) -> None:
    if not isinstance(widths, (tuple, list)) or not widths or any(
            isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f'{field} must be a non-empty sequence of positive integers; got {widths!r}')


class ShallowCNN(ZooModel, kw_only=True):
    """Shallow CNN. [B, H, W, 3] -> float32 logits [B, num_classes] (32x32 for CIFAR-10).

    Conv ``conv{i}`` (i from 1): 3x3 stride-1 'SAME' conv + BN + ReLU (``norm='none'``: conv with bias + ReLU), widths
    ``features``; a 2x2/2 max-pool after every second conv [ours] (after conv2 and conv4: 32 -> 16 -> 8 px). Then the
    feature map is flattened (8 * 8 * 128 = 8192 values at 32 px), a fully connected layer of ``hidden`` units + ReLU
    (``fc1``, no BN, like VGG's) and the Dense classifier (``fc2``). ``dropout``: rate on ``fc1``'s output (the
    classifier's input), in training only.

    Points: ``conv{i}/relu`` (block outputs; conv2 and conv4, the last before each max-pool, are stage outputs) and
    ``fc1/relu`` (only in ``'all_relus'``), as for VGG. 2,360,522 parameters for 10 classes with BN (2,360,138
    without: a bias of c instead of BN's 2c per conv).
    """
    features: Sequence[int] = SHALLOW_CNN_FEATURES
    hidden: int = SHALLOW_CNN_HIDDEN

    @nn.nowrap
    def check_fields(self) -> None:
        _check_widths('features', self.features)
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1:
            raise ValueError(f'hidden must be a positive integer; got {self.hidden!r}')

    @nn.nowrap
    def pool_after(self, i: int) -> bool:
        """Whether a 2x2 max-pool follows conv ``i`` (from 1): after every second conv."""
        return i % 2 == 0

    @nn.nowrap
    def relu_points(self) -> list[ReluPoint]:
        """All candidate post-ReLU points, in forward order."""
        points = [ReluPoint(f'conv{i}/relu', block_output=True, stage_output=self.pool_after(i))
                  for i in range(1, len(self.features) + 1)]
        return points + [ReluPoint('fc1/relu')]

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = jnp.asarray(x, self.dtype)
        for i, features in enumerate(self.features, start=1):
            x = self.conv_relu(x, features, f'conv{i}', train)
            if self.pool_after(i):
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        return self.hidden_classifier(x, self.hidden, train)


class MLP(ZooModel, kw_only=True):
    """Multilayer perceptron on the flattened image. [B, H, W, C] -> float32 logits [B, num_classes].

    Hidden layer ``fc{i}`` (i from 1), widths ``hidden``: Dense + BN + ReLU (``norm='batch'``, the Dense bias-free;
    BN is the only normalization an MLP can have, so it goes here) or Dense with bias + ReLU (``norm='none'``), then
    dropout at rate ``dropout`` in training only; the Dense classifier is ``fc{len(hidden) + 1}``.

    Points: ``fc{i}/relu`` for every hidden layer; each is a block output and a stage output (an MLP has no coarser
    grouping), so every preset selects all of them. 5,731,594 parameters on 32x32x3 images for 10 classes with BN
    (5,726,858 without).
    """
    hidden: Sequence[int] = MLP_HIDDEN

    @nn.nowrap
    def check_fields(self) -> None:
        _check_widths('hidden', self.hidden)

    @nn.nowrap
    def relu_points(self) -> list[ReluPoint]:
        """All candidate post-ReLU points, in forward order."""
        return [ReluPoint(f'fc{i}/relu', block_output=True, stage_output=True)
                for i in range(1, len(self.hidden) + 1)]

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = jnp.asarray(x, self.dtype)
        x = x.reshape(x.shape[0], -1)
        for i, features in enumerate(self.hidden, start=1):
            name = f'fc{i}'
            x = DenseReLU(int(features), norm=self.norm, dtype=self.dtype, sow_points=self.sow_points_for(name),
                          name=name)(x, train)
            x = dropout(x, self.dropout, train, name=f'dropout{i}')
        return self.classifier(x, f'fc{len(self.hidden) + 1}')

