"""Combinators: build one gradient transformation out of several.

``chain`` applies transformations in sequence; ``masked`` applies one to a subset of the
parameters. (Param groups, freezing and named chains live here too as they are added.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gdopt.base import GradientTransformation
from gdopt.tree import mask_leaves

__all__ = ["chain", "masked", "MaskedState"]


def _check_transform(t: Any, where: str) -> None:
    if not (hasattr(t, "init") and hasattr(t, "update") and callable(t.init)):
        raise TypeError(
            f"{where} must be a GradientTransformation (an (init, update) pair), got "
            f"{type(t).__name__}. Did you pass an optimizer factory without calling it, "
            "e.g. gdopt.adam instead of gdopt.adam(1e-3)?"
        )


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` one after the other; the state is the tuple of their states.

    Every keyword ``extra`` argument of ``update`` reaches every transformation.

    Args:
      *transforms: the transformations, first applied first.

    Returns:
      A transformation whose ``update`` feeds each output into the next.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.chain(gdopt.scale(2.0), gdopt.scale(-0.1))
    >>> p = {"w": jnp.array(0.0)}
    >>> u, _ = opt.update({"w": jnp.array(5.0)}, opt.init(p), p)
    >>> round(float(u["w"]), 4)
    -1.0
    """
    for i, t in enumerate(transforms):
        _check_transform(t, f"chain argument {i}")

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None, **extra):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(
                f"chain of {len(transforms)} transformations got a state of "
                f"{len(state) if isinstance(state, tuple) else type(state).__name__} parts; "
                "pass the state that this chain's init returned."
            )
        new_state = []
        for t, s in zip(transforms, state, strict=False):
            updates, s = t.update(updates, s, params, **extra)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


class MaskedState(NamedTuple):
    """The inner transformation's state, built on the selected leaves only."""

    inner_state: Any


def masked(inner: GradientTransformation, mask: Any) -> GradientTransformation:
    """Apply ``inner`` to the leaves selected by ``mask``; other updates pass unchanged.

    The inner state covers the selected leaves only (unselected leaves appear as ``None``
    in it), so a masked-out parameter costs no optimizer memory.

    Args:
      inner: the transformation to apply.
      mask: a pytree of bools with the params' structure (or a prefix of it), or a function
        ``params -> such a tree``. ``True`` means "apply inner".

    >>> import gdopt, jax.numpy as jnp
    >>> t = masked(gdopt.scale(10.0), {"w": True, "b": False})
    >>> p = {"w": jnp.array(1.0), "b": jnp.array(1.0)}
    >>> u, _ = t.update(p, t.init(p), p)
    >>> (float(u["w"]), float(u["b"]))
    (10.0, 1.0)
    """
    _check_transform(inner, "masked's inner")

    def select(tree, flags):
        leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda x: x is None)
        return treedef.unflatten([x if f else None for x, f in zip(leaves, flags, strict=False)])

    def init(params):
        flags = mask_leaves(mask, params)
        return MaskedState(inner_state=inner.init(select(params, flags)))

    def update(updates, state, params=None, **extra):
        flags = mask_leaves(mask, params if params is not None else updates)
        sub_params = None if params is None else select(params, flags)
        new_sub, inner_state = inner.update(
            select(updates, flags), state.inner_state, sub_params, **extra
        )
        leaves, treedef = jax.tree.flatten(updates, is_leaf=lambda x: x is None)
        sub_leaves = treedef.flatten_up_to(new_sub)
        out = [n if f else u for u, n, f in zip(leaves, sub_leaves, flags, strict=False)]
        return treedef.unflatten(out), MaskedState(inner_state=inner_state)

    return GradientTransformation(init, update)
