"""VGG-16 with BatchNorm for CIFAR-10 (Simonyan & Zisserman, ICLR 2015), as in Leavitt & Morcos (ICLR 2021, Sec. 3)."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from selectivity_jax.models.common import ReluPoint, ZooModel, global_avg_pool

Array = jax.Array

# Conv widths; 'M' is a 2x2/2 max-pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M')


class VGG(ZooModel, kw_only=True):
    """VGG with BN for 32x32 inputs. [B, 32, 32, 3] -> float32 logits [B, num_classes].

    Each conv is 3x3 conv + BN + ReLU (module ``conv{i}``, i from 1); ``'M'`` in ``config`` is a 2x2 max-pool.
    Then global average pooling and a small classifier: Dense(hidden) + ReLU (``fc1``) + Dense(num_classes) (``fc2``).
    Points: ``conv{i}/relu`` (block outputs; the last before each max-pool is a stage output) and ``fc1/relu``
    (only in ``'all_relus'``).
    ``norm``: ``'batch'`` or ``'none'`` (no BN, convs with bias; ``fc1`` never has BN); ``dropout``: rate on
    ``fc1``'s output (the classifier's input), in training only (see `selectivity_jax.models.common`).
    """
    config: Sequence[int | str] = VGG16_CONFIG
    hidden: int = 512

    @nn.nowrap
    def relu_points(self) -> list[ReluPoint]:
        """All candidate post-ReLU points, in forward order."""
        points: list[ReluPoint] = []
        for item in self.config:
            if item == 'M':
                if points:
                    points[-1] = ReluPoint(points[-1].name, block_output=True, stage_output=True)
            else:
                points.append(ReluPoint(f'conv{len(points) + 1}/relu', block_output=True))
        points.append(ReluPoint('fc1/relu'))
        return points

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = jnp.asarray(x, self.dtype)
        i = 0
        for item in self.config:
            if item == 'M':
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            else:
                i += 1
                x = self.conv_relu(x, item, f'conv{i}', train)
        x = global_avg_pool(x)
        return self.hidden_classifier(x, self.hidden, train)


def VGG16(num_classes: int = 10, **kwargs: Any) -> VGG:
    """VGG-16 (13 conv layers, 5 max-pools) with BN, ~14.99M parameters for 10 classes."""
    return VGG(config=VGG16_CONFIG, num_classes=num_classes, **kwargs)
