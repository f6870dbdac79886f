"""``norm`` and ``dropout`` of every model (selectivity_jax/models/common.py) and the training step's dropout key
(selectivity_jax/train/step.py): no BatchNorm variables with norm='none', dropout only in training and reproducible
per key, keys independent across a group's models, and the defaults leave training unchanged."""

from __future__ import annotations

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import quickstart
from selectivity_jax.models import MLP, MODELS, VGG, ResNetCifar, ShallowCNN, count_params, get_model, init_variables
from selectivity_jax.models.resnet import Bottleneck, ResNet
from selectivity_jax.train.validation import validate_config

BATCH = 4


def variable_shapes(model: nn.Module) -> dict:
    """Shapes of the variables at 32 px (every model takes it; the ResNets pool globally)."""
    return jax.eval_shape(lambda: init_variables(model, 0, (1, 32, 32, 3)))


def numpy_variables(model: nn.Module, x: jax.Array, seed: int = 0) -> dict:
    """Variables of ``model`` with NumPy random parameters (N(0, 0.3^2)) and unit BN statistics: the shapes of
    `init_variables` without compiling its random initializers (XLA:CPU compiles them slowly)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: init_variables(model, 0, x))

    def fill(path, leaf):
        if path[0].key == 'batch_stats':
            return jnp.full(leaf.shape, 1.0 if path[-1].key == 'var' else 0.0, leaf.dtype)
        return jnp.asarray(rng.normal(0.0, 0.3, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def flat_names(tree: dict) -> list[str]:
    return ['/'.join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


@pytest.mark.parametrize('name', sorted(MODELS))
def test_norm_none_drops_batch_norm_and_gives_every_conv_a_bias(name):
    batch = variable_shapes(get_model(name))
    plain = variable_shapes(get_model(name, norm='none'))
    assert set(batch) == {'params', 'batch_stats'} and set(plain) == {'params'}
    is_bn = lambda name: any(part.startswith('bn') or part.endswith('_bn') for part in name.split('/'))
    assert any(is_bn(n) for n in flat_names(batch['params']))
    names = flat_names(plain['params'])
    assert not any(is_bn(n) for n in names)
    kernels = [n.removesuffix('/kernel') for n in names if n.endswith('/kernel')]
    assert all(f'{k}/bias' in names for k in kernels)
    # Each BN (scale + offset, 2 per channel) becomes the bias of its conv (1 per channel); with no BN the running
    # statistics hold as many numbers as the BN parameters, so the parameter count drops by half of them.
    assert count_params(batch['params']) - count_params(plain['params']) == count_params(batch['batch_stats']) // 2


def test_norm_none_trains_without_batch_stats():
    model = ResNetCifar(depth=8, width=4, norm='none')  # one block per stage
    x = jax.random.normal(jax.random.key(0), (BATCH, 32, 32, 3))

    variables = numpy_variables(model, x)
    assert set(variables) == {'params'}

    @jax.jit
    def train_and_eval(variables, x):
        return model.apply(variables, x, train=True, mutable=['batch_stats']), model.apply(variables, x)

    (logits, state), eval_logits = train_and_eval(variables, x)
    assert logits.shape == (BATCH, 10) and state == {}
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(eval_logits))  # no train/eval difference


def test_norm_none_starts_residual_branches_at_zero_but_keeps_zero_padded_channels_alive():
    """Without BN the branch's last conv (BasicBlock conv2, Bottleneck conv3) starts at zero, so the block is the
    identity (plus its shortcut) at initialization; not where an option-A shortcut adds zero channels (first block of
    stages 2 and 3), so that no channel of any block output starts (and stays, ReLU'(0) = 0) at 0 for every input.
    With BN every conv keeps the He init (the values test_analyses.py pins, from a sweep trained with BN, would
    move)."""
    bottleneck = ResNet(stage_sizes=(1, 1), block_cls=Bottleneck, width=4, num_classes=10, norm='none')
    params = init_variables(bottleneck, 0, (1, 16, 16, 3))['params']
    assert [np.asarray(params[f'stage{s}_block0']['conv3']['kernel']).any() for s in (1, 2)] == [False, False]

    model = ResNetCifar(depth=14, width=4, norm='none', selectivity_layers='block_outputs')  # 2 blocks per stage
    variables = init_variables(model, 0, (1, 32, 32, 3))
    zero_last = {name: not np.asarray(layers['conv2']['kernel']).any()
                 for name, layers in variables['params'].items() if name.startswith('stage')}
    assert zero_last == {'stage1_block0': True, 'stage1_block1': True, 'stage2_block0': False,
                         'stage2_block1': True, 'stage3_block0': False, 'stage3_block1': True}
    x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
    _, state = model.apply(variables, x, mutable=['intermediates'])
    outputs = {jax.tree_util.keystr(path): np.asarray(leaf)
               for path, leaf in jax.tree_util.tree_leaves_with_path(state['intermediates'])}
    assert len(outputs) == 6
    for name, value in outputs.items():
        assert (value.reshape(-1, value.shape[-1]) > 0).any(axis=0).all(), name


@pytest.mark.parametrize('name', sorted(MODELS))
@pytest.mark.parametrize('field, value', [('norm', 'layer'), ('norm', None), ('dropout', 1.0), ('dropout', -0.1),
                                          ('dropout', True), ('dropout', '0.5')])
def test_bad_norm_or_dropout_is_refused(name, field, value):
    with pytest.raises(ValueError, match=f'^{field} must'):
        get_model(name, **{field: value})


@pytest.mark.parametrize('field, value, message', [
    ('norm', 'group', r"model.norm='group' \(expected one of \['batch', 'none'\]\)"),
    ('dropout', 1.0, r"model.dropout=1.0 \(expected a rate >= 0 and < 1\)"),
    ('dropout', -0.5, r"model.dropout=-0.5"),
])
def test_validation_names_the_field_once(field, value, message):
    config = quickstart.get_config('tiny')
    validate_config(config)
    config.model[field] = value
    with pytest.raises(ValueError, match=message) as error:
        validate_config(config)
    assert str(error.value).count(field) == 1


@functools.partial(jax.jit, static_argnums=0)
def dropped(model: MLP, variables: dict, x: jax.Array, key: jax.Array | None):
    """(logits, sown fc1/relu, what the dropout after fc1 passed on) of a training-mode forward pass."""
    logits, state = model.apply(variables, x, train=True, rngs=None if key is None else {'dropout': key},
                                mutable=['batch_stats', 'intermediates'],
                                capture_intermediates=lambda module, _: isinstance(module, nn.Dropout))
    inter = state['intermediates']
    return logits, inter['fc1']['relu'][0], inter['dropout1']['__call__'][0]


def test_dropout_masks_after_the_selectivity_point_and_only_in_training():
    rate = 0.25
    model, plain = MLP(hidden=(400, 8), dropout=rate), MLP(hidden=(400, 8))
    x = jax.random.normal(jax.random.key(1), (BATCH, 32, 32, 3))
    variables = numpy_variables(model, x)
    assert jax.tree.structure(variables) == jax.tree.structure(numpy_variables(plain, x))  # no variables added
    apply_plain = jax.jit(lambda variables, x, train: plain.apply(
        variables, x, train=train, mutable=['batch_stats', 'intermediates']), static_argnums=2)
    apply_eval = jax.jit(lambda variables, x: model.apply(variables, x))
    # Known answer of inverted dropout: every unit is either zeroed or the sown ReLU output / (1 - rate).
    logits, sown, passed_on = dropped(model, variables, x, jax.random.key(7))
    train_plain, sown_plain = apply_plain(variables, x, True)
    np.testing.assert_array_equal(np.asarray(sown), np.asarray(sown_plain['intermediates']['fc1']['relu'][0]))
    kept = np.asarray(passed_on) != 0
    np.testing.assert_allclose(np.asarray(passed_on)[kept], (np.asarray(sown) / (1 - rate))[kept], rtol=1e-6)
    alive = np.asarray(sown) > 0
    zeroed_fraction = 1 - kept[alive].mean()
    assert 0.15 < zeroed_fraction < 0.35, zeroed_fraction  # ~800 live units: rate 0.25 within about 6 sigma
    # The same key gives the same bits; another key another mask; without training no mask and no key needed.
    again = dropped(model, variables, x, jax.random.key(7))
    other = dropped(model, variables, x, jax.random.key(8))
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(logits))
    assert not np.array_equal(np.asarray(other[2]), np.asarray(passed_on))
    np.testing.assert_array_equal(np.asarray(apply_eval(variables, x)), np.asarray(apply_plain(variables, x, False)[0]))
    assert not np.allclose(np.asarray(logits), np.asarray(train_plain))
    with pytest.raises(flax.errors.InvalidRngError, match='dropout'):  # training needs the 'dropout' stream
        dropped(model, variables, x, None)


@pytest.mark.parametrize('model_cls, kwargs', [
    (ResNetCifar, {'depth': 8, 'width': 4}),
    (VGG, {'config': (4, 'M', 8, 'M'), 'hidden': 8}),
    (ShallowCNN, {'features': (4, 4, 8, 8), 'hidden': 8}),
])
def test_conv_nets_drop_only_the_classifier_input(model_cls, kwargs):
    """Their sown points (all ReLUs) are the same with and without dropout in training; the logits differ."""
    model = model_cls(dropout=0.5, selectivity_layers='all_relus', **kwargs)
    plain = model_cls(selectivity_layers='all_relus', **kwargs)
    x = jax.random.normal(jax.random.key(2), (BATCH, 32, 32, 3))
    variables = numpy_variables(plain, x)

    @jax.jit
    def train_mode(variables, x):
        out = [m.apply(variables, x, train=True, rngs={'dropout': jax.random.key(3)},
                       mutable=['batch_stats', 'intermediates']) for m in (model, plain)]
        return [(logits, state['intermediates']) for logits, state in out]

    (logits, sown), (logits_plain, sown_plain) = train_mode(variables, x)
    for a, b in zip(jax.tree.leaves(sown), jax.tree.leaves(sown_plain), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(logits), np.asarray(logits_plain))


def test_dropout_key_depends_on_seed_step_and_alpha_only():
    from selectivity_jax.train.state import TrainState
    from selectivity_jax.train.step import dropout_key

    def state(seed: int, step: int, alpha: float) -> TrainState:
        rng = jax.random.key_data(jax.random.key(seed))
        return TrainState(step=jnp.asarray(step), apply_fn=None, params={}, tx=None, opt_state=None, batch_stats={},
                          alpha=jnp.asarray(alpha, jnp.float32), rng=rng)

    def bits(s: TrainState) -> bytes:
        return np.asarray(jax.random.key_data(dropout_key(s))).tobytes()

    reference = bits(state(0, 5, -1.0))
    assert bits(state(0, 5, -1.0)) == reference  # a resumed run: same rng, step and alpha
    others = [bits(state(1, 5, -1.0)), bits(state(0, 6, -1.0)), bits(state(0, 5, 1.0)), bits(state(0, 5, -0.5))]
    assert len({reference, *others}) == 5
    # A vmapped group (shared seed and step, one alpha per model) gets each model's own key.
    alphas = (-2.0, 0.0, 2.0)
    group = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[state(0, 5, a) for a in alphas])
    keys = np.asarray(jax.random.key_data(jax.vmap(dropout_key)(group)))
    assert [k.tobytes() for k in keys] == [bits(state(0, 5, a)) for a in alphas]


def test_default_fields_compile_the_same_training_step_as_absent_ones():
    """norm='batch' and dropout=0 (configs/base.py) give the program of a config without the fields, so a trained
    run keeps its bits. (Against the code before these fields: a 4-step vmapped ResNet20 group of this tiny config
    gave bitwise equal parameters, statistics, optimizer state and losses.)"""
    from selectivity_jax.data import synthetic_images
    from selectivity_jax.data.on_device import put_train_arrays
    from selectivity_jax.parallel import make_data_mesh
    from selectivity_jax.train.setup import setup_run

    mesh = make_data_mesh(1)
    images, labels = synthetic_images(10, 24, seed=0)
    data = put_train_arrays(images, labels, mesh)

    def lowered(config) -> str:
        run = setup_run(config, num_classes=10, image_shape=(32, 32, 3), num_train=240, mean=(0.5,) * 3,
                        std=(0.25,) * 3, mesh=mesh, alphas=(2.0,), initialize=False)
        return run.train_step.lower(run.initial_state, data, jnp.arange(240)).as_text()

    with_fields = quickstart.get_config('tiny')
    assert (with_fields.model.norm, with_fields.model.dropout) == ('batch', 0.0)
    without = quickstart.get_config('tiny')
    del without.model['norm'], without.model['dropout']
    dropout = quickstart.get_config('tiny')
    dropout.model.dropout = 0.1
    assert lowered(with_fields) == lowered(without) != lowered(dropout)
