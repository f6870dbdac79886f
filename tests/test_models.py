"""Tests of the model zoo: shapes, sown selectivity layers, parameter counts, selection, dtypes (norm and dropout:
tests/test_norm_dropout.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selectivity_jax.models import (
    MLP, MODELS, VGG16, ResNet18, ResNet20, ResNet50, ResNetCifar, ShallowCNN, count_params, get_model, init_variables)

BATCH = 2
# name -> (input size, num_classes, default number of selectivity layers, number of ReLUs)
SPECS = {
    'resnet20': (32, 10, 9, 1 + 2 * 9),
    'resnet32': (32, 10, 15, 1 + 2 * 15),
    'resnet56': (32, 10, 27, 1 + 2 * 27),
    'resnet18': (64, 200, 8, 1 + 2 * 8),
    'resnet50': (64, 200, 16, 1 + 3 * 16),
    'vgg16': (32, 10, 13, 14),
    'shallow_cnn': (32, 10, 4, 5),
    'mlp': (32, 10, 4, 4),
}
VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL_AFTER = (2, 4, 7, 10, 13)  # Conv layers (from 1) followed by a 2x2 max-pool.


def flatten_intermediates(tree: dict, prefix: str = '') -> dict[str, jax.Array]:
    """Nested sow dict -> {'a/b': array}, checking that every sow tuple holds exactly one array."""
    flat = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(flatten_intermediates(value, name + '/'))
        else:
            assert isinstance(value, tuple) and len(value) == 1, (name, value)
            flat[name] = value[0]
    return flat


def make_input(size: int, seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), (BATCH, size, size, 3), jnp.float32)


@functools.lru_cache(maxsize=None)
def forward(name: str, dtype=jnp.float32):
    """(model, variables, logits, new batch_stats, flat intermediates) of init + one train-mode step, in one jit.

    The intermediates are flattened inside the trace: a dict returned from `jax.jit` comes back with sorted keys,
    so the forward order of the sown names can only be observed in the traced (or un-jitted) function.
    """
    size, num_classes, _, _ = SPECS[name]
    model = get_model(name, num_classes=num_classes, dtype=dtype)
    sown_names = []

    def init_and_step(x):
        variables = init_variables(model, jax.random.PRNGKey(0), x)
        logits, state = model.apply(variables, x, train=True, mutable=['batch_stats', 'intermediates'])
        acts = flatten_intermediates(state['intermediates'])
        sown_names[:] = list(acts)
        return variables, logits, state['batch_stats'], list(acts.values())

    variables, logits, batch_stats, acts = jax.jit(init_and_step)(make_input(size))
    return model, variables, logits, batch_stats, dict(zip(sown_names, acts))


def sown_shapes(model, variables, input_shape):
    """Abstract (logits, {name: ShapeDtypeStruct}) of an eval-mode apply, names in the order sown (see `forward`)."""
    sown_names = []

    def apply(v):
        logits, state = model.apply(v, jnp.zeros(input_shape), mutable=['intermediates'])
        acts = flatten_intermediates(state['intermediates'])
        sown_names[:] = list(acts)
        return logits, list(acts.values())

    logits, acts = jax.eval_shape(apply, variables)
    return logits, dict(zip(sown_names, acts))


def expected_resnet_shape(name: str, layer: str) -> tuple[int, ...]:
    """Sown shape of a ResNet point: stage s has spatial size/2**(s-1) and width*2**(s-1) (x4 for bottleneck out)."""
    size = SPECS[name][0]
    width, expansion = (16, 1) if name in ('resnet20', 'resnet32', 'resnet56') else (64, 4 if name == 'resnet50' else 1)
    module, point = layer.split('/')
    if module == 'stem':
        return (BATCH, size, size, width)
    stage, block = (int(p) for p in module.removeprefix('stage').split('_block'))
    # In a bottleneck, relu1 of a strided block is still at the previous resolution (the 3x3 conv strides).
    downsampled = stage - 1 if not (name == 'resnet50' and point == 'relu1' and block == 0) else max(stage - 2, 0)
    channels = width * 2 ** (stage - 1) * (expansion if point == 'out' else 1)
    return (BATCH, size >> downsampled, size >> downsampled, channels)


def expected_vgg_shape(layer: str) -> tuple[int, ...]:
    module, _ = layer.split('/')
    if module == 'fc1':
        return (BATCH, 512)
    i = int(module.removeprefix('conv'))
    pools = sum(p < i for p in VGG16_POOL_AFTER)
    return (BATCH, 32 >> pools, 32 >> pools, VGG16_WIDTHS[i - 1])


def expected_chen_shape(name: str, layer: str) -> tuple[int, ...]:
    """Shallow CNN: conv1-2 at 32 px x 64, a pool, conv3-4 at 16 px x 128, fc1 256 units; MLP: 128, 512, 2048, 2048."""
    module, _ = layer.split('/')
    if name == 'mlp':
        return (BATCH, (128, 512, 2048, 2048)[int(module.removeprefix('fc')) - 1])
    if module == 'fc1':
        return (BATCH, 256)
    i = int(module.removeprefix('conv'))
    return (BATCH, 32, 32, 64) if i <= 2 else (BATCH, 16, 16, 128)


def expected_shape(name: str, layer: str) -> tuple[int, ...]:
    if name in ('shallow_cnn', 'mlp'):
        return expected_chen_shape(name, layer)
    return expected_vgg_shape(layer) if name == 'vgg16' else expected_resnet_shape(name, layer)


# ----------------------------------------------------------------------------------------------------------------------
# Forward pass and sown activations.
# ----------------------------------------------------------------------------------------------------------------------

def test_registry():
    assert set(MODELS) == set(SPECS)
    with pytest.raises(ValueError, match='resnet20'):
        get_model('resnet21')


@pytest.mark.parametrize('name', list(SPECS))
def test_forward_and_default_selection(name):
    _, num_classes, n_layers, n_relus = SPECS[name]
    model, variables, logits, batch_stats, acts = forward(name)
    assert logits.shape == (BATCH, num_classes) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))
    assert set(variables) == {'params', 'batch_stats'}
    # Train mode updates the running statistics.
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), variables['batch_stats'], batch_stats)
    assert all(jax.tree_util.tree_leaves(changed))

    names = model.selectivity_layer_names()
    assert len(names) == n_layers and len(model.all_relu_names()) == n_relus
    assert list(acts) == names  # Exactly the selected names, in forward order.
    for layer, act in acts.items():
        assert act.shape == expected_shape(name, layer), layer
        assert act.dtype == jnp.float32
        assert float(jnp.min(act)) >= 0.0  # Post-ReLU.


def test_resnet20_sown_shapes():
    _, _, _, _, acts = forward('resnet20')
    assert acts['stage1_block2/out'].shape == (BATCH, 32, 32, 16)
    assert acts['stage2_block0/out'].shape == (BATCH, 16, 16, 32)
    assert acts['stage3_block2/out'].shape == (BATCH, 8, 8, 64)


def test_all_relus_sown():
    _, variables, _, _, _ = forward('resnet20')
    model = ResNet20(selectivity_layers='all_relus')
    _, state = model.apply(variables, make_input(32), mutable=['intermediates'])
    acts = flatten_intermediates(state['intermediates'])
    assert list(acts) == model.all_relu_names() == model.selectivity_layer_names()
    assert acts['stem/relu'].shape == (BATCH, 32, 32, 16)
    assert acts['stage2_block0/relu1'].shape == (BATCH, 16, 16, 32)
    for layer, act in acts.items():
        assert act.shape == expected_shape('resnet20', layer), layer
    # Bottleneck shapes (relu1 of a strided block is before the strided 3x3 conv), from shapes only.
    model = ResNet50(selectivity_layers='all_relus')
    variables = jax.eval_shape(lambda: init_variables(model, 0, (BATCH, 64, 64, 3)))
    _, acts = sown_shapes(model, variables, (BATCH, 64, 64, 3))
    shapes = {k: v.shape for k, v in acts.items()}
    assert list(shapes) == model.all_relu_names()
    assert shapes['stage2_block0/relu1'] == (BATCH, 64, 64, 128)
    assert shapes['stage2_block0/relu2'] == (BATCH, 32, 32, 128)
    assert shapes['stage4_block2/out'] == (BATCH, 8, 8, 2048)
    for layer, shape in shapes.items():
        assert shape == expected_shape('resnet50', layer), layer


def test_apply_without_mutable_and_eval_mode():
    model, variables, _, _, _ = forward('resnet20')
    x = make_input(32)
    logits = model.apply(variables, x)
    assert logits.shape == (BATCH, 10)
    logits2, state = model.apply(variables, x, mutable=['intermediates'])
    np.testing.assert_allclose(logits, logits2, rtol=1e-6)
    assert list(flatten_intermediates(state['intermediates'])) == model.selectivity_layer_names()
    _, state = model.apply(variables, x, train=True, mutable=['batch_stats'])
    assert set(state) == {'batch_stats'}


def test_init_variables_drops_intermediates():
    model = ResNet20()
    shape = (1, 32, 32, 3)
    full = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False, mutable=True))
    assert 'intermediates' in full
    for kwargs in ({}, {'mutable': True}):
        variables = jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0), shape, **kwargs))
        assert set(variables) == {'params', 'batch_stats'}


def test_bfloat16():
    model, variables, logits, _, acts = forward('resnet20', dtype=jnp.bfloat16)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables['params']))
    assert len(acts) == 9 and all(a.dtype == jnp.bfloat16 for a in acts.values())
    # VGG (incl. the dense fc1/relu point), from shapes and dtypes only.
    vgg = VGG16(dtype=jnp.bfloat16, selectivity_layers='all_relus')
    variables = jax.eval_shape(lambda: init_variables(vgg, 0, (BATCH, 32, 32, 3)))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables['params']))
    logits, acts = sown_shapes(vgg, variables, (BATCH, 32, 32, 3))
    assert logits.dtype == jnp.float32
    assert list(acts) == vgg.all_relu_names() and all(a.dtype == jnp.bfloat16 for a in acts.values())


# ----------------------------------------------------------------------------------------------------------------------
# Parameter counts, derived by arithmetic from the architectures (params only: conv/dense kernels, dense biases,
# BN scale + bias; no conv biases).
# ----------------------------------------------------------------------------------------------------------------------

def conv_bn(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + 2 * c_out


def resnet_cifar_params(depth: int, num_classes: int, width: int = 16) -> int:
    n = (depth - 2) // 6
    total = conv_bn(3, 3, width)
    c_in = width
    for s in range(3):
        c = width * 2 ** s
        for _ in range(n):
            total += conv_bn(3, c_in, c) + conv_bn(3, c, c)  # Option A shortcuts have no parameters.
            c_in = c
    return total + c_in * num_classes + num_classes


def resnet_params(stage_sizes, bottleneck: bool, num_classes: int, width: int = 64) -> int:
    total = conv_bn(3, 3, width)  # 3x3 stem, no max-pool.
    c_in = width
    for s, n in enumerate(stage_sizes):
        c = width * 2 ** s
        c_out = 4 * c if bottleneck else c
        for b in range(n):
            if bottleneck:
                total += conv_bn(1, c_in, c) + conv_bn(3, c, c) + conv_bn(1, c, c_out)
            else:
                total += conv_bn(3, c_in, c) + conv_bn(3, c, c)
            if c_in != c_out or (s > 0 and b == 0):
                total += conv_bn(1, c_in, c_out)  # Projection shortcut.
            c_in = c_out
    return total + c_in * num_classes + num_classes


def vgg16_params(num_classes: int) -> int:
    total, c_in = 0, 3
    for c in VGG16_WIDTHS:
        total += conv_bn(3, c_in, c)
        c_in = c
    return total + (512 * 512 + 512) + (512 * num_classes + num_classes)


def measured_params(model, size: int) -> int:
    variables = jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0), (1, size, size, 3)))
    return count_params(variables['params'])


def test_param_counts():
    # ResNet20 by hand: stem 3*3*3*16 + 32 = 464; stage 1: 3 * (2 * 9*16*16 + 64) = 14,016;
    # stage 2: (9*16*32 + 9*32*32 + 128) + 2 * (2 * 9*32*32 + 128) = 13,952 + 37,120 = 51,072;
    # stage 3: (9*32*64 + 9*64*64 + 256) + 2 * (2 * 9*64*64 + 256) = 55,552 + 147,968 = 203,520;
    # fc 64*10 + 10 = 650. Total 269,722 (the often-quoted 272,474 uses option-B projection shortcuts).
    assert resnet_cifar_params(20, 10) == 269_722
    n20 = measured_params(ResNet20(), 32)
    assert n20 == 269_722 and abs(n20 - 270_000) / 270_000 < 0.01
    assert measured_params(get_model('resnet32'), 32) == resnet_cifar_params(32, 10) == 464_154
    assert measured_params(get_model('resnet56'), 32) == resnet_cifar_params(56, 10) == 853_018
    # torchvision ResNet-18 / -50 (11,689,512 / 25,557,032) minus the 1000 -> 200 class head and 7x7 -> 3x3 stem.
    assert measured_params(ResNet18(), 64) == resnet_params((2, 2, 2, 2), False, 200) == 11_271_432
    assert measured_params(ResNet50(), 64) == resnet_params((3, 4, 6, 3), True, 200) == 23_910_152
    assert measured_params(VGG16(), 32) == vgg16_params(10) == 14_986_698
    # Shallow CNN: four 3x3 conv-BN (64, 64, 128, 128), flatten 8 x 8 x 128 = 8192 -> 256 -> 10:
    # 1,856 + 36,992 + 73,984 + 147,712 + (8192*256 + 256 = 2,097,408) + (256*10 + 10 = 2,570) = 2,360,522.
    assert measured_params(ShallowCNN(), 32) == (conv_bn(3, 3, 64) + conv_bn(3, 64, 64) + conv_bn(3, 64, 128)
                                                 + conv_bn(3, 128, 128) + 8192 * 256 + 256 + 256 * 10 + 10) == 2_360_522
    # MLP: bias-free Dense + BN (2 per unit) for 3072 -> 128 -> 512 -> 2048 -> 2048, then Dense 2048 -> 10:
    # 393,472 + 66,560 + 1,052,672 + 4,198,400 + 20,490 = 5,731,594.
    widths = (32 * 32 * 3, 128, 512, 2048, 2048)
    hidden = sum(a * b + 2 * b for a, b in zip(widths, widths[1:]))
    assert measured_params(MLP(), 32) == hidden + 2048 * 10 + 10 == 5_731_594


# ----------------------------------------------------------------------------------------------------------------------
# Selection.
# ----------------------------------------------------------------------------------------------------------------------

def test_selection_presets_resnet_cifar():
    model = ResNet20(selectivity_layers='all_relus')  # Unbound: pure Python.
    expected = ['stem/relu'] + [f'stage{s}_block{b}/{p}' for s in (1, 2, 3) for b in range(3) for p in ('relu1', 'out')]
    assert model.selectivity_layer_names() == expected == model.all_relu_names()
    assert ResNet20().selectivity_layer_names() == [n for n in expected if n.endswith('/out')]
    assert ResNet20(selectivity_layers='stage_outputs').selectivity_layer_names() == [
        'stage1_block2/out', 'stage2_block2/out', 'stage3_block2/out']
    assert ResNet50(selectivity_layers='stage_outputs').selectivity_layer_names() == [
        'stage1_block2/out', 'stage2_block3/out', 'stage3_block5/out', 'stage4_block2/out']
    assert ResNet50().all_relu_names()[:4] == [
        'stem/relu', 'stage1_block0/relu1', 'stage1_block0/relu2', 'stage1_block0/out']


def test_selection_presets_vgg():
    convs = [f'conv{i}/relu' for i in range(1, 14)]
    assert VGG16().selectivity_layer_names() == convs
    assert VGG16(selectivity_layers='all_relus').selectivity_layer_names() == convs + ['fc1/relu']
    assert VGG16(selectivity_layers='stage_outputs').selectivity_layer_names() == [
        f'conv{i}/relu' for i in VGG16_POOL_AFTER]


def test_explicit_selection_sows_only_selected_in_forward_order():
    chosen = ['stage3_block1/out', 'stem/relu', 'stage2_block0/relu1']
    model = ResNetCifar(depth=20, selectivity_layers=chosen)
    names = ['stem/relu', 'stage2_block0/relu1', 'stage3_block1/out']
    assert model.selectivity_layer_names() == names
    variables = forward('resnet20')[1]  # Same architecture: the selection does not change the variables.
    _, state = model.apply(variables, make_input(32), mutable=['intermediates'])
    acts = flatten_intermediates(state['intermediates'])
    assert list(acts) == names
    assert acts['stage2_block0/relu1'].shape == (BATCH, 16, 16, 32)
    # An empty selection sows nothing.
    _, state = ResNet20(selectivity_layers=()).apply(variables, make_input(32), mutable=['intermediates'])
    assert not flatten_intermediates(state.get('intermediates', {}))


@pytest.mark.parametrize('selection', ['block_output', 'all', ['stem/relu', 'stage4_block0/out'], ['conv1/relu'], 3])
def test_bad_selection_raises(selection):
    with pytest.raises(ValueError, match='selectivity'):
        ResNet20(selectivity_layers=selection).selectivity_layer_names()


def test_selection_presets_chen():
    convs = [f'conv{i}/relu' for i in range(1, 5)]
    assert ShallowCNN().selectivity_layer_names() == convs
    assert ShallowCNN(selectivity_layers='all_relus').selectivity_layer_names() == convs + ['fc1/relu']
    assert ShallowCNN(selectivity_layers='stage_outputs').selectivity_layer_names() == ['conv2/relu', 'conv4/relu']
    hidden = [f'fc{i}/relu' for i in range(1, 5)]
    for preset in ('block_outputs', 'all_relus', 'stage_outputs'):
        assert MLP(selectivity_layers=preset).selectivity_layer_names() == hidden
    assert MLP(selectivity_layers=['fc3/relu']).selectivity_layer_names() == ['fc3/relu']
    with pytest.raises(ValueError, match='fc4/relu'):
        MLP(selectivity_layers=['fc5/relu'])
    with pytest.raises(ValueError, match='hidden'):
        MLP(hidden=())
    with pytest.raises(ValueError, match='features'):
        ShallowCNN(features=(64, 0))


def test_edit_layers_on_the_mlp():
    """A zeroed last hidden layer leaves the classifier's bias as logits, as for the ResNets."""
    from selectivity_jax.models import edit_layers
    model, variables, _, _, _ = forward('mlp')

    @jax.jit
    def zeroed(x):
        with edit_layers({'fc4/relu': lambda y: y * 0.0}):
            return model.apply(variables, x)

    logits = zeroed(make_input(32))
    np.testing.assert_allclose(np.asarray(logits), np.broadcast_to(variables['params']['fc5']['bias'], logits.shape))


def test_bad_selection_vgg_lists_valid_names():
    with pytest.raises(ValueError, match='fc1/relu'):
        VGG16(selectivity_layers=['conv14/relu'])


@pytest.mark.parametrize('depth', [21, 18, 2])
def test_bad_depth_raises(depth):
    with pytest.raises(ValueError, match='depth'):
        ResNetCifar(depth=depth)


def test_edit_layers_changes_what_a_point_passes_on():
    from selectivity_jax.models import edit_layers
    model = ResNet20(width=4, selectivity_layers=('stage1_block0/relu1', 'stage3_block2/out'))
    x = make_input(32)
    variables = init_variables(model, 0, x.shape)
    plain, state = model.apply(variables, x, mutable=['intermediates'])

    @jax.jit
    def apply_with(scale):  # the edit is entered inside the traced function
        with edit_layers({'stage3_block2/out': lambda y: y * scale, 'stage1_block0/relu1': lambda y: y}):
            return model.apply(variables, x, mutable=['intermediates'])

    same, same_state = apply_with(1.0)
    np.testing.assert_allclose(np.asarray(same), np.asarray(plain), rtol=1e-5, atol=1e-6)  # jit vs eager rounding
    zeroed, zeroed_state = apply_with(0.0)
    # the last block's output is all the classifier sees (after pooling): zeroed, the logits are the Dense bias
    np.testing.assert_allclose(np.asarray(zeroed), np.broadcast_to(variables['params']['fc']['bias'], zeroed.shape))
    sown = flatten_intermediates(zeroed_state['intermediates'])
    assert float(jnp.abs(sown['stage3_block2/out']).max()) == 0.0  # sown after the edit
    np.testing.assert_allclose(np.asarray(sown['stage1_block0/relu1']),
                               np.asarray(flatten_intermediates(state['intermediates'])['stage1_block0/relu1']),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='stage9_block0/out'):
        with edit_layers({'stage9_block0/out': lambda y: y}):
            model.apply(variables, x)
