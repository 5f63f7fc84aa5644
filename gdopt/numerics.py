"""Public numerical helpers under optax's names: :func:`scale_gradient`, :func:`safe_norm`,
:func:`safe_root_mean_squares` and :func:`global_norm` (each exported at the top level of
:mod:`gdopt`). The private promotion and moment helpers the library is built on are in
``gdopt/_numerics.py``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gdopt import _numerics as num
from gdopt.tree import norm as tree_norm

__all__ = ["scale_gradient", "safe_norm", "safe_root_mean_squares", "global_norm"]


@jax.custom_vjp
def _scale_gradient(inputs: Any, scale: Any) -> Any:
    return inputs


def _scale_gradient_fwd(inputs: Any, scale: Any) -> tuple[Any, Any]:
    return inputs, scale


def _scale_gradient_bwd(scale: Any, g: Any) -> tuple[Any, None]:
    return jax.tree.map(lambda x: num.cast_like(num.mul(x, scale), x), g), None


_scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)


def scale_gradient(inputs: Any, scale: float) -> Any:
    """The identity on the way forward; multiplies the gradient by ``scale`` on the way back.

    >>> float(jax.grad(lambda x: scale_gradient(x, 0.5) ** 2)(3.0))
    3.0
    """
    return _scale_gradient(inputs, scale)


def safe_norm(
    x: jax.Array,
    min_norm: Any,
    ord: Any = None,
    axis: Any = None,
    keepdims: bool = False,  # noqa: A002
) -> jax.Array:
    """``max(‖x‖, min_norm)`` with a gradient that is finite (zero) where ``‖x‖ <= min_norm``.

    Args:
      x: an array.
      min_norm: the floor.
      ord, axis, keepdims: as in ``jnp.linalg.norm``.

    Returns:
      The floored norm.

    >>> float(safe_norm(jnp.zeros(3), 1e-3)), float(jax.grad(lambda x: safe_norm(x, 1e-3))(jnp.zeros(3))[0])
    (0.0010000000474974513, 0.0)
    """
    norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    small = jnp.less_equal(*num.promote(norm, min_norm))
    x_safe = jnp.where(small, jnp.ones_like(x), x)
    masked_norm = jnp.linalg.norm(x_safe, ord=ord, axis=axis, keepdims=True)
    out = num.where(small, min_norm, masked_norm).astype(norm.dtype)
    return out if keepdims else jnp.squeeze(out, axis=axis)


def safe_root_mean_squares(x: jax.Array, min_rms: Any) -> jax.Array:
    """``max(rms(x), min_rms)`` with a finite gradient where ``rms(x) <= min_rms``.

    >>> float(safe_root_mean_squares(jnp.array([3.0, 4.0]), 0.0)) == float(jnp.sqrt(12.5))
    True
    """
    rms = jnp.sqrt(jnp.mean(jnp.square(x)))
    small = jnp.less_equal(*num.promote(rms, min_rms))
    x_safe = jnp.where(small, jnp.ones_like(x), x)
    return num.where(small, min_rms, jnp.sqrt(jnp.mean(jnp.square(x_safe)))).astype(rms.dtype)


def global_norm(updates: Any) -> jax.Array:
    """The Euclidean norm of all leaves of ``updates`` taken as one vector (``optax.global_norm``).

    >>> float(global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])}))
    5.0
    """
    return tree_norm(updates)
