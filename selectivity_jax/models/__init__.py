"""Model zoo: CIFAR ResNets, Tiny ImageNet ResNets, VGG-16 and Chen et al.'s shallow CNN and MLP, all with
selectable selectivity layers, BatchNorm or none (``norm``) and dropout (``dropout``; see `common`).

Every model is a ``flax.linen`` Module ``model(x [B, H, W, 3], train) -> float32 logits [B, num_classes]`` that sows
its selected post-ReLU activations into the ``'intermediates'`` collection (see `common`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn

from selectivity_jax.models.common import (
    NORMS, SELECTION_PRESETS, ReluPoint, SelectionSpec, count_params, edit_layers, init_variables, resolve_selection)
from selectivity_jax.models.chen import MLP, ShallowCNN
from selectivity_jax.models.resnet import BasicBlock, Bottleneck, ResNet, ResNet18, ResNet50
from selectivity_jax.models.resnet_cifar import ResNet20, ResNet32, ResNet56, ResNetCifar
from selectivity_jax.models.vgg import VGG, VGG16

MODELS: dict[str, Callable[..., nn.Module]] = {
    'resnet20': ResNet20,
    'resnet32': ResNet32,
    'resnet56': ResNet56,
    'resnet18': ResNet18,
    'resnet50': ResNet50,
    'vgg16': VGG16,
    'shallow_cnn': ShallowCNN,
    'mlp': MLP,
}


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds a registered model, e.g. ``get_model('resnet20', num_classes=10, dtype=jnp.bfloat16)``."""
    try:
        constructor = MODELS[name.lower()]
    except KeyError:
        raise ValueError(f'unknown model {name!r}; available: {sorted(MODELS)}') from None
    return constructor(**kwargs)


def model_options(model_config: Any) -> dict[str, Any]:
    """A config's ``model`` section as constructor arguments: every field but ``name`` that is set (lists as tuples,
    so that the options are hashable)."""
    return {key: tuple(value) if isinstance(value, list) else value
            for key, value in dict(model_config).items() if key != 'name' and value is not None}


__all__ = [
    'MLP', 'MODELS', 'NORMS', 'SELECTION_PRESETS', 'BasicBlock', 'Bottleneck', 'ReluPoint', 'ResNet', 'ResNet18',
    'ResNet20', 'ResNet32', 'ResNet50', 'ResNet56', 'ResNetCifar', 'SelectionSpec', 'ShallowCNN', 'VGG', 'VGG16',
    'count_params', 'edit_layers', 'get_model', 'init_variables', 'model_options', 'resolve_selection',
]
