"""A convolution that stays a plain convolution when a group of models is vmapped (the sweep's vmap mode).

``jax.vmap`` over models that each have their own kernels turns every convolution into one grouped convolution
(``feature_group_count = K``). GPUs and TPUs run those well, but XLA:CPU expands a grouped kernel into a
block-diagonal dense one, so K models cost K^2 single-model convolutions: 5 vmapped ResNet20s trained at 0.2x the
total throughput of one. `conv_general_dilated` is ``lax.conv_general_dilated`` with one change: on the CPU
backend, under ``vmap``, it runs one ordinary convolution per mapped index (forward and backward), so a vmapped
group costs what its models cost one after another, and each model's convolutions are exactly those it would run
alone. Elsewhere it is ``lax.conv_general_dilated``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax


def per_index_under_vmap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` whose batching rule loops over the mapped axis (``fn`` once per index, results stacked) instead of
    vectorizing ``fn``'s primitives. Unbatched arguments are passed as they are to every call."""
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        outs = [wrapped(*[arg[k] if batched else arg for arg, batched in zip(args, in_batched)])
                for k in range(axis_size)]
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
        return stacked, jax.tree.map(lambda _: True, stacked)

    return wrapped


def _per_model_conv(lhs: jax.Array, rhs: jax.Array, **conv_kwargs: Any) -> jax.Array:
    """The convolution with forward and backward pass each run per mapped index under vmap (see module doc)."""
    def plain(lhs, rhs):
        return lax.conv_general_dilated(lhs, rhs, **conv_kwargs)

    forward = per_index_under_vmap(plain)
    backward = per_index_under_vmap(lambda lhs, rhs, cotangent: jax.vjp(plain, lhs, rhs)[1](cotangent))

    @jax.custom_vjp
    def conv(lhs, rhs):
        return forward(lhs, rhs)

    conv.defvjp(lambda lhs, rhs: (forward(lhs, rhs), (lhs, rhs)),
                lambda residuals, cotangent: backward(*residuals, cotangent))
    return conv(lhs, rhs)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any, lhs_dilation: Any = None,
                         rhs_dilation: Any = None, dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
    """``lax.conv_general_dilated`` (same arguments), run per model under vmap on CPU; for ``nn.Conv``'s
    ``conv_general_dilated`` field."""
    conv_kwargs = dict(window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
                       rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                       feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                       precision=precision, preferred_element_type=preferred_element_type)
    if jax.default_backend() != "cpu":
        return lax.conv_general_dilated(lhs, rhs, **conv_kwargs)
    return _per_model_conv(lhs, rhs, **conv_kwargs)
