"""A finished run directory as functions the analyses call: logits and layer responses of pixel-space inputs.

``run = restore_run(run_dir)`` rebuilds the model from the run's ``config.json`` and restores the variables of its
newest checkpoint. Inputs to every function here are float32 images in PIXEL space, [B, H, W, C] in [0, 1] (uint8
images are scaled by 1/255); the model's normalisation is applied inside, so attacks and feature visualisation work
in the space where the valid range is [0, 1]. All functions are pure and jit-able (the variables are closed over).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from selectivity_jax.capture import apply_with_activations, is_relu_module
from selectivity_jax.data import load_splits
from selectivity_jax.data.on_device import normalization_stats
from selectivity_jax.models import get_model, model_options
from selectivity_jax.models.common import active_edit, edit_layers
from selectivity_jax.records import RunResults
from selectivity_jax.rundir import CHECKPOINT_DIR, read_run_config, read_run_results
from selectivity_jax.selectivity import unit_responses
from selectivity_jax.train.checkpoint import checkpoint_manager, restore_newest

Array = jax.Array
LayerEdits = Mapping[str, Callable[[Array], Array]]


def to_pixels(images: Any) -> Array:
    """uint8 [B, H, W, C] -> float32 / 255; float images are taken as already in [0, 1]."""
    images = jnp.asarray(images)
    return images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class FlaxModel:
    """Any linen model, trained anywhere, as the analyses see the project's models (see `from_flax`).

    ``apply_fn(variables, x, **apply_kwargs) -> logits [B, C]`` (e.g. ``module.apply`` with ``train=False`` in
    ``apply_kwargs``); its post-ReLU points are the module outputs that ``capture_filter`` accepts and the values
    it sows into ``'intermediates'`` (`selectivity_jax.capture`), named by module path. Layer edits
    (`selectivity_jax.models.edit_layers`, used by ablation and rotation) replace captured module outputs through
    ``flax.linen.intercept_methods``; sown values cannot be edited.
    """
    apply_fn: Callable[..., Any]
    points: tuple[str, ...]                  # every capturable point, in forward order
    layers: tuple[str, ...]                  # the points analysed by default
    capture_filter: Any = is_relu_module
    apply_kwargs: tuple[tuple[str, Any], ...] = ()
    sown: tuple[str, ...] = ()               # the points that are sown values (no layer edit reaches them)

    def clone(self, *, selectivity_layers: Sequence[str]) -> FlaxModel:
        return dataclasses.replace(self, layers=tuple(selectivity_layers))

    def all_relu_names(self) -> list[str]:
        return list(self.points)

    def selectivity_layer_names(self) -> list[str]:
        return list(self.layers)

    def apply(self, variables: Any, x: Array, train: bool = False, **kwargs: Any) -> Any:
        """``apply_fn`` with the active layer edits applied to the captured modules' outputs (``train`` is the
        project models' argument: the user's ``apply_kwargs`` say how to run the model for evaluation)."""
        del train

        def edited(next_fun: Callable[..., Any], args: Any, call_kwargs: Any, context: Any) -> Any:
            output = next_fun(*args, **call_kwargs)
            if context.method_name == "__call__":
                edit = active_edit("/".join(context.module.path))
                if edit is not None:
                    output = edit(output)
            return output

        with nn.intercept_methods(edited):
            return self.apply_fn(variables, x, **dict(self.apply_kwargs), **kwargs)

    def activations(self, variables: Any, x: Array) -> tuple[Array, dict[str, Array]]:
        """(logits, {point: activation}) of the points in ``layers``."""
        logits, acts, _ = apply_with_activations(self.apply, variables, x, filter=self.capture_filter)
        missing = [name for name in self.layers if name not in acts]
        if missing:
            raise ValueError(f"points {missing} were not captured; the model's points are {list(self.points)}")
        return logits, {name: acts[name] for name in self.layers}


def _logits_and_activations(model: Any, variables: Any, x: Array) -> tuple[Array, dict[str, Array]]:
    """(logits, {point: activation}) of the model's selected points: a project model sows them, a `FlaxModel`
    captures them."""
    if isinstance(model, FlaxModel):
        return model.activations(variables, x)
    logits, acts, _ = apply_with_activations(model.apply, variables, x, train=False, filter=None)
    return logits, acts


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
            _, acts = _logits_and_activations(self.model, variables, x)
        responses = {name: unit_responses(a) for name, a in acts.items()}
        return responses[self.layers[0]] if self.single else responses


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedRun:
    """A trained model with its variables and normalisation (see `restore_run`)."""
    path: str
    config: ml_collections.ConfigDict
    model: Any                       # flax.linen Module; sows the run's selectivity layers
    variables: dict[str, Any]        # {'params': ..., 'batch_stats': ...}
    mean: tuple[float, ...]          # per-channel normalisation in [0, 1] units
    std: tuple[float, ...]
    num_classes: int
    results: RunResults | None       # the run's results.json (None: a model given by `from_flax`)

    @property
    def alpha(self) -> float:
        return float(self.config.alpha)

    @property
    def seed(self) -> int:
        return int(self.config.seed)

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
            logits, acts = _logits_and_activations(model, self.variables, x)
        return logits.astype(jnp.float32), acts

    def responses(self, images: Any, layers: Sequence[str] | None = None,
                  edits: LayerEdits | None = None) -> dict[str, Array]:
        """{layer: unit responses [B, U]} (conv channels: the spatial mean of the map, as in the selectivity index)."""
        return self.responses_fn(layers)(images, edits=edits)


def load_test_split(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """The test split of a run's data set (uint8 images [N, H, W, C], labels [N])."""
    return load_splits(config.data, seed=config.seed).test


def _restore_variables(checkpoint_dir: str) -> dict[str, Any]:
    """{'params', 'batch_stats'} of the newest checkpoint that restores (a damaged newer one is skipped with its
    reason), read without building the optimizer or the training state."""
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"{os.path.dirname(checkpoint_dir)} holds no checkpoint")
    restored = restore_newest(checkpoint_manager(checkpoint_dir, create=False), None)
    if restored.state is None:
        reasons = "; ".join(f"step {step}: {why}" for step, why in restored.skipped)
        raise FileNotFoundError(f"{os.path.dirname(checkpoint_dir)} holds no checkpoint that restores"
                                + (f" ({reasons})" if reasons else ""))
    return {"params": restored.state["params"], "batch_stats": restored.state.get("batch_stats", {})}


def restore_run(run_dir: str) -> TrainedRun:
    """The finished run in ``run_dir`` ready to evaluate: its model (from config.json), the variables of its newest
    checkpoint and its normalisation, on one device. Neither the optimizer nor the training steps are built and no
    data is loaded (runs trained before results.json recorded the number of classes and the normalisation load
    their training split once to recover them)."""
    config = ml_collections.ConfigDict(read_run_config(run_dir))
    results = read_run_results(run_dir)
    if results.normalization is not None and results.num_classes is not None:
        num_classes = results.num_classes
        mean, std = results.normalization.mean, results.normalization.std
    else:  # a run of schema 1 (`selectivity_jax.rundir.upgrade`)
        splits = load_splits(config.data, seed=config.seed)
        num_classes = splits.num_classes
        mean, std = normalization_stats(config.data, splits.train[0])
    model = get_model(config.model.name, num_classes=num_classes, dtype=jnp.dtype(config.compute_dtype),
                      **model_options(config.model))
    return TrainedRun(path=run_dir, config=config, model=model,
                      variables=_restore_variables(os.path.join(run_dir, CHECKPOINT_DIR)),
                      mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std), num_classes=num_classes,
                      results=results)


def from_flax(apply_fn: Callable[..., Any], variables: Any, *, mean: Sequence[float], std: Sequence[float],
              num_classes: int, example: Any, layers: Sequence[str] | None = None, capture_filter: Any = is_relu_module,
              apply_kwargs: Mapping[str, Any] | None = None, name: str = "model", alpha: float = 0.0, seed: int = 0,
              data: Mapping[str, Any] | None = None) -> TrainedRun:
    """A linen model trained anywhere as a `TrainedRun` the analyses take (`analyses.runner.analyze_model`).

    Args:
      apply_fn: ``apply_fn(variables, x, **apply_kwargs) -> logits [B, num_classes]`` on normalised inputs
        ``x = (pixels - mean) / std``, pixels in [0, 1].
      variables: its variables ({'params': ..., 'batch_stats': ...}).
      mean, std: per-channel normalisation in [0, 1] units (mean 0, std 1: the model takes pixels as they are).
      example: a batch of images (uint8, or float in [0, 1]), [B, H, W, C]: one forward pass finds the points.
      layers: the points analysed by default (None: every captured point).
      capture_filter: which module outputs are post-ReLU points (`selectivity_jax.capture`; default ReLU modules).
      apply_kwargs: keyword arguments of ``apply_fn`` for evaluation, e.g. ``{'train': False}``.
      name, alpha, seed: how results and figures label the model.
      data: a data config (configs/base.py's ``data``) when the model was trained on one of the project's data sets;
        the corruption analyses need it to serve corrupted test sets.
    """
    probe = FlaxModel(apply_fn, (), (), capture_filter, tuple(sorted((apply_kwargs or {}).items())))
    x = (to_pixels(example) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    _, acts, _ = apply_with_activations(probe.apply, variables, x, filter=capture_filter)
    if not acts:
        raise ValueError("no post-ReLU point captured: use ReLU modules (selectivity_jax.ReLU), sow the values, or "
                         "pass a capture_filter that matches your modules")
    unknown = sorted(set(layers or ()) - set(acts))
    if unknown:
        raise ValueError(f"layers {unknown} are not points of the model; its points are {list(acts)}")
    _, sown, _ = apply_with_activations(probe.apply, variables, x, filter=None)
    model = dataclasses.replace(probe, points=tuple(acts), layers=tuple(layers or acts), sown=tuple(sown))
    config = ml_collections.ConfigDict({"name": name, "alpha": float(alpha), "seed": int(seed),
                                        "compute_dtype": "float32", "data": dict(data or {})})
    return TrainedRun(path="", config=config, model=model, variables=variables,
                      mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                      num_classes=int(num_classes), results=None)


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
