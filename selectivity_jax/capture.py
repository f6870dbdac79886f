"""Getting post-ReLU activations out of Flax models, as a flat dict name -> array for `selectivity_fn`.

Linen offers two ways, and `apply_with_activations` reads both in one forward pass:

- ``self.sow('intermediates', name, x)`` inside a module: always collected (the project's models do this).
- ``capture_intermediates``: records the OUTPUT of every module call that ``filter`` accepts. A plain function call
  such as ``x = nn.relu(x)`` is not a module, so it is invisible here; either write the ReLU as a module
  (``x = ReLU()(x)``, the `ReLU` below, picked up by the default filter) or add one line after it,
  ``self.sow('intermediates', 'relu1', x)``.

Flax NNX models sow with ``self.sow(nnx.Intermediate, name, x)``; `nnx_activations` reads them back with
``nnx.capture``.

Names are the module path joined by '/', e.g. ``'block1/relu'`` for the ReLU module ``relu`` inside ``block1``, or
``'block1/relu1'`` for a value sown as ``relu1`` inside ``block1``. A module called (or a name sown) k > 1 times
gives k entries suffixed ``_0 .. _{k-1}``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax

Array = jax.Array
INTERMEDIATES = "intermediates"
CaptureFilter = None | bool | str | type | tuple | Callable[[nn.Module, str], bool]


class ReLU(nn.Module):
    """``nn.relu`` as a module, so that ``capture_intermediates`` (and the default filter) sees its output."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return nn.relu(x)


def is_relu_module(module: nn.Module, method_name: str) -> bool:
    """Default filter: the ``__call__`` output of any module whose class is named ReLU/Relu (ours or a user's)."""
    return method_name == "__call__" and type(module).__name__.lower() == "relu"


def _as_filter(filter: CaptureFilter) -> bool | Callable[[nn.Module, str], bool]:
    """Turns the user-facing filter forms into what ``capture_intermediates`` takes."""
    if filter is None or filter is False:
        return False
    if filter is True:
        return True
    if isinstance(filter, str):
        pattern = re.compile(filter)
        return lambda module, method: method == "__call__" and bool(pattern.search("/".join(module.path)))
    if isinstance(filter, type) or (isinstance(filter, tuple) and all(isinstance(t, type) for t in filter)):
        return lambda module, method: method == "__call__" and isinstance(module, filter)
    if callable(filter):
        return filter
    raise TypeError(f"filter must be None, a bool, a regex string, a Module type (or tuple), or a callable "
                    f"(module, method_name) -> bool; got {filter!r}")


def flatten_intermediates(tree: Mapping[str, Any]) -> dict[str, Array]:
    """Nested ``intermediates`` collection -> flat dict ``'a/b/name' -> array`` (insertion order kept).

    Leaves are the tuples that ``sow``/``capture_intermediates`` build; a captured module output is stored under its
    method name (``__call__``), which is dropped from the name.
    """
    flat: dict[str, Array] = {}

    def visit(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            for key, child in node.items():
                visit(child, path + (str(key),))
            return
        values = tuple(node) if isinstance(node, (tuple, list)) else (node,)
        if path and path[-1] == "__call__":
            path = path[:-1]
        name = "/".join(path) or "output"
        if len(values) == 1:
            flat[name] = values[0]
        else:
            for i, value in enumerate(values):
                flat[f"{name}_{i}"] = value

    visit(tree, ())
    return flat


def strip_intermediates(variables: Mapping[str, Any], collections: Sequence[str] = (INTERMEDIATES,)) -> dict:
    """Drops activation collections (e.g. what ``init`` returns for a custom ``sow`` collection) from variables,
    so they never reach parameters, train state or checkpoints."""
    return {k: v for k, v in variables.items() if k not in collections}


def apply_with_activations(
    apply_fn: Callable[..., Any],
    variables: Mapping[str, Any],
    *args: Any,
    filter: CaptureFilter = is_relu_module,
    mutable: bool | str | Sequence[str] = False,
    collection: str = INTERMEDIATES,
    **kwargs: Any,
) -> tuple[Any, dict[str, Array], dict[str, Any]]:
    """One forward pass returning ``(output, activations, updated_state)``.

    Args:
      apply_fn: a linen ``Module.apply`` (e.g. ``model.apply`` or ``TrainState.apply_fn``).
      variables: the model variables (``{'params': ..., 'batch_stats': ...}``).
      *args, **kwargs: passed to ``apply_fn`` (inputs, ``train=True``, ``rngs=...``).
      filter: which module outputs ``capture_intermediates`` records (see `_as_filter`); values sown into
        ``collection`` are always returned. ``None`` returns the sown values only.
      mutable: collections the caller wants updated (e.g. ``['batch_stats']``), returned as ``updated_state``.
      collection: the sow collection that holds activations.

    Returns:
      the model output, a flat dict name -> activation, and the updated mutable collections (without activations).
    """
    if isinstance(mutable, str):
        mutable = [mutable]
    if mutable is True:
        raise ValueError("mutable=True would also return the activations as state; name the collections instead")
    wanted = list(mutable or [])
    output, state = apply_fn(variables, *args, capture_intermediates=_as_filter(filter),
                             mutable=wanted + [collection], **kwargs)
    state = dict(state)
    activations = flatten_intermediates(state.pop(collection, {}))
    return output, activations, state


def capture_activations(
    apply_fn: Callable[..., Any],
    variables: Mapping[str, Any],
    *args: Any,
    filter: CaptureFilter = is_relu_module,
    **kwargs: Any,
) -> dict[str, Array]:
    """Flat dict name -> activation [B, ..., U] of a linen model's forward pass (see `apply_with_activations`).

    Raises ValueError when nothing is captured, the usual sign of plain ``nn.relu`` calls (see module docstring).
    """
    _, activations, _ = apply_with_activations(apply_fn, variables, *args, filter=filter, **kwargs)
    if not activations:
        raise ValueError(
            "no activations captured: plain `nn.relu(x)` calls are invisible to Flax's capture_intermediates. "
            "Use `x = selectivity_jax.ReLU()(x)` or add `self.sow('intermediates', 'relu1', x)` after the ReLU, "
            "or pass a `filter` that matches your modules.")
    return activations


def nnx_activations(model: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Array]]:
    """Flax NNX: runs ``model(*args, **kwargs)`` and returns ``(output, activations)`` for every value sown with
    ``self.sow(nnx.Intermediate, name, x)``; names are the attribute path joined by '/'."""
    from flax import nnx

    output, state = nnx.capture(model, nnx.Intermediate)(*args, **kwargs)
    tree: dict[str, Any] = {}
    for path, variable in nnx.to_flat_state(state):
        node = tree
        for key in path[:-1]:
            node = node.setdefault(str(key), {})
        node[str(path[-1])] = variable.get_value()
    return output, flatten_intermediates(tree)
