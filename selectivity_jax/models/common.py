"""Shared pieces of the model zoo: layer helpers, selectivity-layer selection and sowing, variable utilities.

Selectivity layers (Leavitt & Morcos, ICLR 2021, Sec. 2.2-2.3): the class selectivity index is computed on post-ReLU
activations. Every model lists its candidate points in forward order as `ReluPoint`s named ``'<module>/<point>'``
(e.g. ``'stage1_block0/out'``). The model resolves its ``selectivity_layers`` attribute to a subset of these names
(`resolve_selection`) and hands each submodule the local point names it must sow (`SelectivityMixin.sow_points_for`);
the submodule passes each post-ReLU value through `relu_output`, which sows it when selected, so that
``state['intermediates']`` flattens to exactly the selected names.

`edit_layers` lets analyses change what a named point passes on (rotate, ablate or clamp its units) without touching
the model code: every point, selected or not, goes through `relu_output`.

Normalization and dropout (every model's ``norm`` and ``dropout`` attributes, ``config.model.norm`` / ``.dropout``):
``norm='batch'`` puts a BatchNorm after every conv (bias-free) and every hidden layer of the MLP, ``norm='none'``
leaves every BatchNorm out and gives those layers a bias instead (zero-initialized), so that each keeps a learned
offset; Morcos et al. (ICLR 2018) report that BatchNorm lowers class selectivity. ``dropout`` (rate p) zeroes the
features entering the classifier and the outputs of every hidden fully connected layer, in training only
(``train=True``, a ``'dropout'`` PRNG stream), AFTER their post-ReLU point: selectivity is measured and regularized
on the units' own responses, not on the masked copy passed on. p = 0 adds nothing to the model.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from selectivity_jax.capture import INTERMEDIATES, strip_intermediates
from selectivity_jax.models.vmap_conv import conv_general_dilated

Array = jax.Array
Dtype = Any
ModuleDef = Any
SelectionSpec = str | Sequence[str]

SELECTION_PRESETS = ('block_outputs', 'all_relus', 'stage_outputs')
NORMS = ('batch', 'none')  # Every model's ``norm``: BatchNorm after each conv, or no normalization layer at all.

# He et al. (2015) initialization, as in the original ResNet / VGG-BN recipes.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


# ----------------------------------------------------------------------------------------------------------------------
# Layer helpers.
# ----------------------------------------------------------------------------------------------------------------------

def conv(features: int, kernel_size: int, strides: int = 1, *, bias: bool = False, dtype: Dtype = jnp.float32,
         zero_init: bool = False, name: str | None = None) -> nn.Conv:
    """'SAME' conv with He (fan_out) init (zeros with ``zero_init``); bias-free when a BatchNorm follows it, with a
    zero-initialized bias (``bias=True``) when the model has ``norm='none'``. Vmapped over models (a sweep group) on
    CPU it runs one plain convolution per model (`selectivity_jax.models.vmap_conv`)."""
    kernel_init = nn.initializers.zeros if zero_init else conv_kernel_init
    return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides), padding='SAME',
                   use_bias=bias, kernel_init=kernel_init, dtype=dtype, name=name,
                   conv_general_dilated=conv_general_dilated)


def conv3x3(features: int, strides: int = 1, *, bias: bool = False, dtype: Dtype = jnp.float32,
            zero_init: bool = False, name: str | None = None) -> nn.Conv:
    """3x3 conv, see `conv`."""
    return conv(features, 3, strides, bias=bias, dtype=dtype, zero_init=zero_init, name=name)


def conv1x1(features: int, strides: int = 1, *, bias: bool = False, dtype: Dtype = jnp.float32,
            zero_init: bool = False, name: str | None = None) -> nn.Conv:
    """1x1 conv (projection shortcut, bottleneck), see `conv`."""
    return conv(features, 1, strides, bias=bias, dtype=dtype, zero_init=zero_init, name=name)


def batch_norm(train: bool, *, dtype: Dtype = jnp.float32, scale_init: Callable = nn.initializers.ones,
               name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch-equivalent hyper-parameters (momentum 0.9 = PyTorch 0.1, eps 1e-5)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        scale_init=scale_init, name=name)


def normalization(x: Array, norm: str, train: bool, *, dtype: Dtype = jnp.float32, name: str | None = None) -> Array:
    """`batch_norm` of ``x`` for ``norm='batch'``, ``x`` itself for ``norm='none'``. Call it from a compact method."""
    if norm == 'batch':
        return batch_norm(train, dtype=dtype, name=name)(x)
    if norm == 'none':
        return x
    raise ValueError(f'unknown norm {norm!r}; expected one of {list(NORMS)}')


def dropout(x: Array, rate: float, train: bool, *, name: str | None = None) -> Array:
    """Inverted dropout at ``rate`` while training (draws from the ``'dropout'`` PRNG stream); ``x`` itself in
    evaluation or at rate 0 (no module, no random numbers). Call it from a compact method."""
    if rate == 0 or not train:
        return x
    return nn.Dropout(rate, deterministic=False, name=name)(x)


def check_norm_and_dropout(norm: Any, rate: Any) -> None:
    """ValueError unless ``norm`` is one of `NORMS` and 0 <= ``rate`` < 1 (a model's ``norm`` and ``dropout``)."""
    if norm not in NORMS:
        raise ValueError(f'norm must be one of {list(NORMS)}; got {norm!r}')
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f'dropout must be a rate in [0, 1); got {rate!r}')


def global_avg_pool(x: Array) -> Array:
    """[B, H, W, C] -> [B, C]; the mean is accumulated in float32 and cast back to the input dtype."""
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)


_LAYER_EDITS: contextvars.ContextVar[Mapping[str, Callable[[Array], Array]]] = contextvars.ContextVar(
    'selectivity_jax_layer_edits', default={})


@contextlib.contextmanager
def edit_layers(edits: Mapping[str, Callable[[Array], Array]]) -> Iterator[None]:
    """While active, the post-ReLU output of each point named in ``edits`` (e.g. ``'stage3_block2/out'``) is replaced
    by ``edits[name](output)`` before the network goes on (and before it is sown).

    It acts when the model's forward pass is TRACED, so enter it inside the function you jit or differentiate,
    around ``model.apply``; a function jitted outside the block keeps what it traced. Names that the model never
    reaches raise an error when the block ends.
    """
    used: set[str] = set()
    token = _LAYER_EDITS.set(_RecordingEdits(edits, used))
    try:
        yield
    finally:
        _LAYER_EDITS.reset(token)
    unused = sorted(set(edits) - used)
    if unused:
        raise ValueError(f'layer edits {unused} name no post-ReLU point of the model that ran')


class _RecordingEdits(dict):
    """The active edits; remembers which names were looked up, so that misspelled names are reported."""

    def __init__(self, edits: Mapping[str, Callable[[Array], Array]], used: set[str]):
        super().__init__(edits)
        self.used = used

    def get(self, name, default=None):
        if name in self:
            self.used.add(name)
        return super().get(name, default)


def active_edit(name: str) -> Callable[[Array], Array] | None:
    """The edit an active `edit_layers` block gives the point ``name`` (recorded as used), or None."""
    return _LAYER_EDITS.get().get(name)


def relu_output(module: nn.Module, point: str, x: Array, sow_points: Sequence[str]) -> Array:
    """A post-ReLU point of ``module``: applies an active `edit_layers` edit for ``'<module path>/<point>'``, sows the
    result as ``intermediates/<module name>/<point>`` if ``point`` is selected (in ``sow_points``), returns it."""
    edit = active_edit('/'.join(module.path + (point,)))
    if edit is not None:
        x = edit(x)
    if point in sow_points:
        module.sow(INTERMEDIATES, point, x)
    return x


class ConvBNReLU(nn.Module):
    """conv -> BN -> ReLU (``norm='none'``: conv with bias -> ReLU); sows its ReLU output as point ``'relu'``.
    [B, H, W, Cin] -> [B, H/s, W/s, features]."""
    features: int
    kernel_size: int = 3
    strides: int = 1
    norm: str = 'batch'
    dtype: Dtype = jnp.float32
    sow_points: Sequence[str] = ()

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = conv(self.features, self.kernel_size, self.strides, bias=self.norm == 'none', dtype=self.dtype,
                 name='conv')(x)
        x = normalization(x, self.norm, train, dtype=self.dtype, name='bn')
        x = nn.relu(x)
        return relu_output(self, 'relu', x, self.sow_points)


class DenseReLU(nn.Module):
    """Dense -> ReLU; sows its output as point ``'relu'``. [B, Din] -> [B, features].

    ``norm='none'`` (default: the dense head of the conv nets): Dense with bias. ``norm='batch'`` (the MLP's hidden
    layers): bias-free Dense -> BN -> ReLU.
    """
    features: int
    norm: str = 'none'
    dtype: Dtype = jnp.float32
    sow_points: Sequence[str] = ()

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = nn.Dense(self.features, use_bias=self.norm == 'none', dtype=self.dtype, name='dense')(x)
        x = nn.relu(normalization(x, self.norm, train, dtype=self.dtype, name='bn'))
        return relu_output(self, 'relu', x, self.sow_points)


# ----------------------------------------------------------------------------------------------------------------------
# Selectivity-layer selection.
# ----------------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ReluPoint:
    """A candidate selectivity layer: a post-ReLU activation named ``'<module>/<point>'``.

    ``block_output``: selected by ``'block_outputs'`` (residual block output; every conv ReLU for VGG).
    ``stage_output``: selected by ``'stage_outputs'`` (last block of a stage; last conv before a max-pool for VGG).
    """
    name: str
    block_output: bool = False
    stage_output: bool = False


def resolve_selection(selection: SelectionSpec, points: Sequence[ReluPoint]) -> list[str]:
    """Resolves a preset name or an explicit list of names to the selected names, in forward order."""
    names = [p.name for p in points]
    if isinstance(selection, str):
        if selection == 'all_relus':
            return names
        if selection == 'block_outputs':
            return [p.name for p in points if p.block_output]
        if selection == 'stage_outputs':
            return [p.name for p in points if p.stage_output]
        raise ValueError(
            f'unknown selectivity_layers {selection!r}: expected one of {list(SELECTION_PRESETS)} or a sequence of '
            f'layer names from {names}')
    try:
        requested = list(selection)
    except TypeError:
        raise ValueError(
            f'selectivity_layers must be one of {list(SELECTION_PRESETS)} or a sequence of layer names; '
            f'got {selection!r}') from None
    unknown = [n for n in requested if n not in names]
    if unknown:
        raise ValueError(f'unknown selectivity layer names {unknown}; valid names (forward order): {names}')
    chosen = set(requested)
    return [n for n in names if n in chosen]


class SelectivityMixin:
    """Selection logic and field checks shared by all models; the model provides ``selectivity_layers``, ``norm``,
    ``dropout`` (the fields of `ZooModel`), `relu_points` and, for fields of its own, `check_fields`."""

    def __post_init__(self) -> None:
        """Checks the fields once the model is built: the model's own (`check_fields`), ``norm`` and ``dropout``, then
        the selection (resolved here, so that a bad layer name fails at construction)."""
        super().__post_init__()  # type: ignore[misc]
        self.check_fields()
        check_norm_and_dropout(self.norm, self.dropout)  # type: ignore[attr-defined]
        self.selectivity_layer_names()

    @nn.nowrap
    def check_fields(self) -> None:
        """Raises ValueError for bad values of the model's own fields (widths, depth); none by default."""

    @nn.nowrap
    def relu_points(self) -> list[ReluPoint]:
        """All candidate post-ReLU points, in forward order."""
        raise NotImplementedError

    @nn.nowrap
    def all_relu_names(self) -> list[str]:
        """Names of every ReLU in the network (the ``'all_relus'`` selection), in forward order."""
        return [p.name for p in self.relu_points()]

    @nn.nowrap
    def selectivity_layer_names(self) -> list[str]:
        """Names of the selected layers, in forward order (the keys of the flattened ``intermediates``)."""
        return resolve_selection(self.selectivity_layers, self.relu_points())  # type: ignore[attr-defined]

    @nn.nowrap
    def sow_points_for(self, module_name: str) -> tuple[str, ...]:
        """Local point names (e.g. ``('out',)``) that the submodule ``module_name`` must sow."""
        prefix = module_name + '/'
        return tuple(n[len(prefix):] for n in self.selectivity_layer_names() if n.startswith(prefix))


class ZooModel(SelectivityMixin, nn.Module, kw_only=True):
    """Base of every model of the zoo: the fields they all have and the layers they build alike.

    Fields (keyword-only, in every model): ``num_classes`` (classifier width; a model may change its default),
    ``norm`` (one of `NORMS`), ``dropout`` (rate on the classifier's input and, in the MLP, on every hidden layer's
    output; training only), ``dtype`` (computation dtype; logits are float32) and ``selectivity_layers`` (a preset of
    `SELECTION_PRESETS` or a sequence of point names, see `resolve_selection`). A subclass declares its own fields
    (widths, depth) with ``kw_only=True`` as well, lists its points in `relu_points` and builds its layers in a
    compact ``__call__`` with the helpers below.
    """
    num_classes: int = 10
    norm: str = 'batch'
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    selectivity_layers: SelectionSpec = 'block_outputs'

    @nn.nowrap
    def conv_relu(self, x: Array, features: int, name: str, train: bool) -> Array:
        """`ConvBNReLU` submodule ``name`` (3x3, stride 1, point ``'<name>/relu'``). [B, H, W, Cin] ->
        [B, H, W, features]. Call it from the compact ``__call__``."""
        return ConvBNReLU(int(features), norm=self.norm, dtype=self.dtype, sow_points=self.sow_points_for(name),
                          name=name)(x, train)

    @nn.nowrap
    def classifier(self, x: Array, name: str) -> Array:
        """The Dense classifier ``name``: [B, D] -> float32 logits [B, num_classes]. Call it from the compact
        ``__call__``."""
        x = nn.Dense(self.num_classes, dtype=self.dtype, name=name)(x)
        return jnp.asarray(x, jnp.float32)

    @nn.nowrap
    def hidden_classifier(self, x: Array, hidden: int, train: bool) -> Array:
        """The head of the conv nets with a hidden layer (VGG, shallow CNN): ``fc1`` (Dense(hidden) + ReLU, no BN,
        point ``'fc1/relu'``) -> dropout -> classifier ``fc2``. [B, D] -> float32 logits [B, num_classes]."""
        x = DenseReLU(hidden, dtype=self.dtype, sow_points=self.sow_points_for('fc1'), name='fc1')(x)
        x = dropout(x, self.dropout, train, name='dropout')
        return self.classifier(x, 'fc2')


# ----------------------------------------------------------------------------------------------------------------------
# Variables.
# ----------------------------------------------------------------------------------------------------------------------

def init_variables(model: nn.Module, rng: jax.Array | int, input_shape_or_array: Sequence[int] | Array,
                   **kwargs: Any) -> dict[str, Any]:
    """``model.init(rng, x, train=False)`` without the ``'intermediates'`` collection.

    ``input_shape_or_array``: an input batch, or its shape (zeros float32 are used), e.g. ``(1, 32, 32, 3)``.
    Returns e.g. ``{'params': ..., 'batch_stats': ...}``.
    """
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    if isinstance(input_shape_or_array, (tuple, list)):
        x = jnp.zeros(tuple(input_shape_or_array), jnp.float32)
    else:
        x = input_shape_or_array
    kwargs.setdefault('train', False)
    variables = model.init(rng, x, **kwargs)
    return strip_intermediates(variables)


def count_params(params: Any) -> int:
    """Total number of scalars in a pytree of arrays (or of `jax.ShapeDtypeStruct`s)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
