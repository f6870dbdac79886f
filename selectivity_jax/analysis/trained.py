"""A finished run directory as functions the analyses call: logits and layer responses of pixel-space inputs.

``run = load_trained_run(run_dir)`` rebuilds the model from the run's ``config.json``, restores the newest checkpoint
and reloads the run's data splits (from the cache when the config names one). Inputs to every function here are
float32 images in PIXEL space, [B, H, W, C] in [0, 1] (uint8 images are scaled by 1/255); the model's
normalisation is applied inside, so attacks and feature visualisation work in the space where the valid range is
[0, 1]. All functions are pure and jit-able (the variables are closed over).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from selectivity_jax.capture import apply_with_activations
from selectivity_jax.data import ArraySplits, load_splits
from selectivity_jax.data.on_device import normalization_stats
from selectivity_jax.models.common import edit_layers
from selectivity_jax.parallel import make_data_mesh
from selectivity_jax.selectivity import unit_responses
from selectivity_jax.train.checkpoint import checkpoint_manager, restore_latest
from selectivity_jax.rundir import CHECKPOINT_DIR, CONFIG_FILE, RESULTS_FILE
from selectivity_jax.train.loop import setup_run
from selectivity_jax.train.state import unstack_state

Array = jax.Array
LayerEdits = Mapping[str, Callable[[Array], Array]]


def to_pixels(images: Any) -> Array:
    """uint8 [B, H, W, C] -> float32 / 255; float images are taken as already in [0, 1]."""
    images = jnp.asarray(images)
    return images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class PixelForward:
    """A model's forward pass on pixel-space images, as a hashable function
    ``(variables, mean, std, images, edits=None) -> logits [B, C]`` (``layers`` empty), ``{layer: responses [B, U]}``
    (``layers`` given) or ``responses [B, U]`` of ``layers[0]`` (``single``).

    Bound to a run's arrays with `jax.tree_util.Partial` it is a pytree that jitted functions take as an argument;
    runs of the same model share the compiled code, since the jit cache keys on this (equal, hashable) object.
    """
    model: Any
    compute_dtype: str = "float32"
    layers: tuple[str, ...] = ()
    single: bool = False

    def __call__(self, variables: Any, mean: Array, std: Array, images: Any, edits: LayerEdits | None = None) -> Any:
        x = ((to_pixels(images) - mean) / std).astype(jnp.dtype(self.compute_dtype))
        with edit_layers(edits or {}):
            if not self.layers:
                return self.model.apply(variables, x, train=False).astype(jnp.float32)
            _, acts, _ = apply_with_activations(self.model.apply, variables, x, train=False, filter=None)
        responses = {name: unit_responses(a) for name, a in acts.items()}
        return responses[self.layers[0]] if self.single else responses


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedRun:
    """A trained model with its variables, normalisation and data (see `load_trained_run`)."""
    path: str
    config: ml_collections.ConfigDict
    model: Any                       # flax.linen Module; sows the run's selectivity layers
    variables: dict[str, Any]        # {'params': ..., 'batch_stats': ...}
    mean: tuple[float, ...]          # per-channel normalisation in [0, 1] units
    std: tuple[float, ...]
    splits: ArraySplits
    results: dict[str, Any]

    @property
    def alpha(self) -> float:
        return float(self.config.alpha)

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    @property
    def layer_names(self) -> list[str]:
        """The run's selectivity layers, in forward order."""
        return self.model.selectivity_layer_names()

    def _bound(self, forward: PixelForward) -> jax.tree_util.Partial:
        return jax.tree_util.Partial(forward, self.variables, jnp.asarray(self.mean, jnp.float32),
                                     jnp.asarray(self.std, jnp.float32))

    @property
    def logits_fn(self) -> jax.tree_util.Partial:
        """``logits_fn(images, edits=None) -> logits [B, C]`` as a pytree function (see `PixelForward`)."""
        return self._bound(PixelForward(self.model, self.config.compute_dtype))

    def responses_fn(self, layers: Sequence[str] | None = None) -> jax.tree_util.Partial:
        """``responses_fn(images, edits=None) -> {layer: responses [B, U]}`` for ``layers`` (default: the run's
        selectivity layers; any of ``model.all_relu_names()``)."""
        layers = tuple(layers or self.layer_names)
        return self._bound(PixelForward(self.model.clone(selectivity_layers=layers), self.config.compute_dtype,
                                        layers))

    def units_fn(self, layer: str) -> jax.tree_util.Partial:
        """``units_fn(images, edits=None) -> responses [B, U]`` of one layer."""
        return self._bound(PixelForward(self.model.clone(selectivity_layers=(layer,)), self.config.compute_dtype,
                                        (layer,), single=True))

    def logits(self, images: Any, edits: LayerEdits | None = None) -> Array:
        """[B, H, W, C] pixel-space images -> float32 logits [B, C]; ``edits`` (layer name -> function of the
        post-ReLU map) change those layers' outputs on the way (`selectivity_jax.models.edit_layers`)."""
        return self.logits_fn(images, edits=edits)

    def activations(self, images: Any, layers: Sequence[str] | None = None,
                    edits: LayerEdits | None = None) -> tuple[Array, dict[str, Array]]:
        """(logits [B, C], {layer: post-ReLU map [B, ..., U]}) for ``layers`` (default: the run's selectivity
        layers; any of ``model.all_relu_names()``): the full maps, not their spatial means."""
        model = self.model if layers is None else self.model.clone(selectivity_layers=tuple(layers))
        x = ((to_pixels(images) - jnp.asarray(self.mean)) / jnp.asarray(self.std)).astype(
            jnp.dtype(self.config.compute_dtype))
        with edit_layers(edits or {}):
            logits, acts, _ = apply_with_activations(model.apply, self.variables, x, train=False, filter=None)
        return logits.astype(jnp.float32), acts

    def responses(self, images: Any, layers: Sequence[str] | None = None,
                  edits: LayerEdits | None = None) -> dict[str, Array]:
        """{layer: unit responses [B, U]} (conv channels: the spatial mean of the map, as in the selectivity index)."""
        return self.responses_fn(layers)(images, edits=edits)


def read_run_config(run_dir: str) -> ml_collections.ConfigDict:
    """The ``config.json`` a run directory holds."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} is not a run directory: no {CONFIG_FILE}")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_trained_run(run_dir: str, *, require_finished: bool = True, cache_dir: str | None = None) -> TrainedRun:
    """Rebuilds and restores the newest checkpoint of the run in ``run_dir`` (a finished run unless
    ``require_finished`` is False), on one device, with its data splits (decoded arrays cached in ``cache_dir``
    when given, else in the run's ``data.cache_dir``)."""
    config = read_run_config(run_dir)
    if cache_dir:
        config.data.cache_dir = cache_dir
    results_path = os.path.join(run_dir, RESULTS_FILE)
    if require_finished and not os.path.exists(results_path):
        raise FileNotFoundError(f"{run_dir} has not finished training (no {RESULTS_FILE}); train it first")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    splits = load_splits(config.data, seed=config.seed)
    mean, std = normalization_stats(config.data, splits.train[0])
    config.num_devices = 1
    setup = setup_run(config, num_classes=splits.num_classes, image_shape=splits.image_shape,
                      num_train=len(splits.train[1]), mean=mean, std=std, mesh=make_data_mesh(1))
    state = restore_latest(checkpoint_manager(os.path.join(run_dir, CHECKPOINT_DIR), create=False),
                           unstack_state(setup.initial_state, 0))
    if state is None:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint")
    return TrainedRun(path=run_dir, config=config, model=setup.model,
                      variables={"params": state.params, "batch_stats": state.batch_stats},
                      mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std), splits=splits,
                      results=results)


@jax.jit
def _apply(fn: jax.tree_util.Partial, images: Array) -> Any:
    return fn(images)


def batched(fn: Callable[[Array], Any], images: np.ndarray, batch_size: int) -> Any:
    """``fn`` over ``images`` in batches of ``batch_size`` (the last one padded, so one compilation), results
    concatenated along axis 0 on the host. A `jax.tree_util.Partial` (e.g. `TrainedRun.logits_fn`) shares its
    compiled code with every other call of an equal function; other callables compile per call of `batched`."""
    fn = fn if isinstance(fn, jax.tree_util.Partial) else jax.tree_util.Partial(fn)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size])
        real = len(batch)
        if real < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real, axis=0)])
        outputs.append(jax.tree.map(lambda a: np.asarray(a)[:real], _apply(fn, batch)))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
