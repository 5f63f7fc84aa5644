"""Constraints: keep the parameters in a set (non-negative orthant, box, ball, simplex).

Projections come in two forms: pure functions ``project_*(tree, ...)`` that map a pytree to
the nearest point of a set, and transforms ``projection_*(...)`` that, placed last in a chain,
make the *new* parameters land in the set::

    u' = P(p + u) - p        so that   apply_updates(p, u') = P(p + u)

(projected gradient descent). ``apply_projection(project)`` builds such a transform from any
projection function.

Packing (:mod:`gdopt.packing`): the non-negative orthant and a box with scalar bounds act
coordinate by coordinate, and the l2 ball and the simplex are taken over *all* parameters as
one vector, so these transforms compute the same numbers on packed buffers. A box with
per-leaf bounds, and a projection given as an arbitrary function, are tied to the leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdopt import _numerics as num
from gdopt._numerics import global_norm, tree_map
from gdopt._traits import transform
from gdopt._validation import check_callable, check_scalar, is_concrete, need_params
from gdopt.base import (
    GradientTransformation,
    NonNegativeValue,
    PositiveValue,
    init_empty_state,
)
from gdopt.tree import check_same_structure

__all__ = [
    "keep_params_nonnegative",
    "apply_projection",
    "projection_box",
    "projection_l2_ball",
    "projection_non_negative",
    "projection_simplex",
    "project_box",
    "project_l2_ball",
    "project_non_negative",
    "project_simplex",
]

_WHY = "the constraint is on the new parameters, params + updates"


# ----------------------------------------------------------------------------- non-negativity


@transform(packable=True)
def keep_params_nonnegative() -> GradientTransformation:
    """Stop every parameter at zero: where ``p + u < 0`` the update becomes ``-p``.

    Update rule: ``u' = -p where p + u < 0, else u`` (so the new parameter is ``max(p + u,
    0)``). Place it last in a chain; parameters must start non-negative.

    Returns:
      A stateless transformation; its ``update`` needs ``params``.

    >>> import jax.numpy as jnp
    >>> t = keep_params_nonnegative()
    >>> p = {"w": jnp.array([1.0, 1.0])}
    >>> u, _ = t.update({"w": jnp.array([-3.0, -0.5])}, t.init(p), p)
    >>> u["w"].tolist()
    [-1.0, -0.5]
    """

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, "keep_params_nonnegative", _WHY)
        out = tree_map(
            lambda u, p: num.where(num.add(p, u) < 0, -p, u).astype(u.dtype), updates, params
        )
        return out, state

    return GradientTransformation(init_empty_state, update)


# ----------------------------------------------------------------------------- projections


def _per_leaf(value: Any, tree: Any, name: str) -> list:
    """``value`` as one entry per non-None leaf of ``tree``: a scalar/array is shared."""
    n = len(jax.tree.leaves(tree))
    v_leaves, v_def = jax.tree.flatten(value)
    if len(v_leaves) == 1 and v_def.num_nodes == 1:
        return v_leaves * n
    try:
        return jax.tree.structure(tree).flatten_up_to(value)
    except ValueError:
        check_same_structure(value, tree, (name, "tree"), check_shapes=False)
        raise


def project_non_negative(tree: Any) -> Any:
    """The Euclidean projection onto the non-negative orthant: ``max(x, 0)`` leafwise.

    Args:
      tree: a pytree of arrays.

    Returns:
      A pytree like ``tree``.

    >>> import jax.numpy as jnp
    >>> project_non_negative({"w": jnp.array([-1.0, 2.0])})["w"].tolist()
    [0.0, 2.0]
    """
    return jax.tree.map(lambda x: jnp.maximum(x, 0).astype(jnp.asarray(x).dtype), tree)


def project_box(tree: Any, lower: Any, upper: Any) -> Any:
    """The Euclidean projection onto the box ``lower <= x <= upper``: clip leafwise.

    Args:
      tree: a pytree of arrays.
      lower, upper: a scalar (or array broadcastable to every leaf) shared by all leaves, or
        a pytree with the structure of ``tree`` giving each leaf its bounds.

    Returns:
      A pytree like ``tree``.

    Raises:
      ValueError: when concrete bounds have ``lower > upper`` somewhere.

    >>> import jax.numpy as jnp
    >>> project_box({"w": jnp.array([-2.0, 0.5, 3.0])}, 0.0, 1.0)["w"].tolist()
    [0.0, 0.5, 1.0]
    """
    leaves, treedef = jax.tree.flatten(tree)
    lows, highs = _per_leaf(lower, tree, "lower"), _per_leaf(upper, tree, "upper")
    if is_concrete((lower, upper)):
        for lo, hi in zip(lows, highs, strict=True):
            if np.any(np.asarray(lo) > np.asarray(hi)):
                raise ValueError(
                    f"project_box needs lower <= upper everywhere, got lower={lo} and upper={hi}."
                )
    out = [
        num.clip(x, lo, hi).astype(jnp.asarray(x).dtype)
        for x, lo, hi in zip(leaves, lows, highs, strict=True)
    ]
    return treedef.unflatten(out)


def project_l2_ball(tree: Any, scale: Any = 1.0) -> Any:
    """The Euclidean projection onto the ball ``‖x‖ <= scale`` (all leaves as one vector).

    ``x`` is kept when inside the ball and rescaled to norm ``scale`` otherwise:
    ``x · scale / max(‖x‖, scale)``.

    Args:
      tree: a pytree of arrays.
      scale: ``r`` >= 0.

    Returns:
      A pytree like ``tree``.

    >>> import jax.numpy as jnp
    >>> [round(x, 4) for x in project_l2_ball({"w": jnp.array([3.0, 4.0])}, 1.0)["w"].tolist()]
    [0.6, 0.8]
    """
    check_scalar("scale", scale, low=0.0)
    norm = global_norm(tree)
    factor = num.div(scale, num.maximum(norm, scale))
    factor = jnp.where(norm > 0, factor, 1.0)
    return jax.tree.map(lambda x: num.mul(x, factor).astype(jnp.asarray(x).dtype), tree)


def _project_unit_simplex_vector(v: jax.Array, z: Any) -> jax.Array:
    """Duchi et al.'s sort-based projection of a vector onto ``{w >= 0, Σ w = z}``."""
    n = v.shape[0]
    mu = jnp.sort(v)[::-1]
    css = jnp.cumsum(mu)
    j = jnp.arange(1, n + 1, dtype=v.dtype)
    rho = jnp.sum(mu - (css - z) / j > 0)
    theta = (css[rho - 1] - z) / rho.astype(v.dtype)
    return jnp.maximum(v - theta, 0)


def project_simplex(tree: Any, scale: Any = 1.0) -> Any:
    """The Euclidean projection onto the simplex ``{x >= 0, Σ x = scale}``.

    All leaves are taken together as one vector (so the entries of the whole tree sum to
    ``scale``; use :func:`gdopt.partition` or :func:`gdopt.masked` to constrain a subset).
    Algorithm: sort ``v`` decreasingly into ``μ``, find ``ρ = max{j : μ_j - (Σ_{i<=j} μ_i -
    s) / j > 0}``, set ``θ = (Σ_{i<=ρ} μ_i - s) / ρ`` and return ``max(v - θ, 0)``.

    Args:
      tree: a pytree of arrays.
      scale: ``s`` > 0.

    Returns:
      A pytree like ``tree``.

    References:
      Duchi, Shalev-Shwartz, Singer & Chandra, "Efficient Projections onto the l1-Ball for
      Learning in High Dimensions", ICML 2008.

    >>> import jax.numpy as jnp
    >>> [round(x, 4) for x in project_simplex({"w": jnp.array([0.5, 1.5, -1.0])})["w"].tolist()]
    [0.0, 1.0, 0.0]
    """
    check_scalar("scale", scale, low=0.0, low_open=True)
    # ravel_pytree casts the leaves to their common dtype (and back): made explicit here.
    leaves = jax.tree.leaves(tree)
    dtype = num.result_dtype(*(jnp.asarray(x).dtype for x in leaves)) if leaves else None
    flat, unravel = ravel_pytree(jax.tree.map(lambda x: num.cast_to(x, dtype), tree))
    if flat.size == 0:
        return tree
    out = unravel(_project_unit_simplex_vector(flat, jnp.asarray(scale, flat.dtype)))
    return jax.tree.map(lambda q, x: num.cast_like(q, jnp.asarray(x)), out, tree)


def _projection(project: Callable[[Any], Any], name: str) -> GradientTransformation:
    """``u' = P(p + u) - p``: the pair behind :func:`apply_projection` and ``projection_*``."""

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, name, _WHY)
        moved = tree_map(lambda u, p: num.add(p, u), updates, params)
        projected = project(moved)
        out = tree_map(lambda q, p, u: num.sub(q, p).astype(u.dtype), projected, params, updates)
        return out, state

    return GradientTransformation(init_empty_state, update)


@transform(packable=False)
def apply_projection(project: Callable[[Any], Any]) -> GradientTransformation:
    """A transform that makes the new parameters land in a set: ``u' = P(p + u) - p``.

    Place it last in a chain (after the learning rate): ``apply_updates(p, u')`` is then
    ``P(p + u)``, one step of projected gradient descent. ``project`` is an arbitrary
    function of the pytree, so the transform is not packable (use the ``projection_*``
    transforms for the sets they cover).

    Args:
      project: a function ``pytree -> pytree`` (e.g. ``lambda t: project_box(t, 0, 1)``).

    Returns:
      A stateless transformation; its ``update`` needs ``params``.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.chain(gdopt.sgd(1.0), apply_projection(project_non_negative))
    >>> p = {"w": jnp.array([1.0, 1.0])}
    >>> u, _ = opt.update({"w": jnp.array([2.0, -1.0])}, opt.init(p), p)
    >>> gdopt.apply_updates(p, u)["w"].tolist()
    [0.0, 2.0]
    """
    check_callable("project", project, "a function pytree -> pytree")
    return _projection(project, "apply_projection")


@transform(packable=True)
def projection_non_negative() -> GradientTransformation:
    """Projected steps onto ``x >= 0``: ``u' = max(p + u, 0) - p``.

    Returns:
      A stateless transformation (see :func:`apply_projection`).

    >>> import jax.numpy as jnp
    >>> t = projection_non_negative()
    >>> p = {"w": jnp.array([1.0])}
    >>> t.update({"w": jnp.array([-2.0])}, t.init(p), p)[0]["w"].tolist()
    [-1.0]
    """
    return _projection(project_non_negative, "projection_non_negative")


def _is_scalar_bound(bound: Any) -> bool:
    leaves, treedef = jax.tree.flatten(bound)
    return treedef.num_nodes == 1 and len(leaves) == 1 and np.ndim(leaves[0]) == 0


def _scalar_bounds(arguments: dict) -> bool:
    """Packable when both bounds are scalars (per-leaf or array bounds follow the leaves)."""
    return _is_scalar_bound(arguments["lower"]) and _is_scalar_bound(arguments["upper"])


@transform(packable=_scalar_bounds)
def projection_box(lower: Any, upper: Any) -> GradientTransformation:
    """Projected steps onto the box ``lower <= x <= upper``: ``u' = clip(p + u) - p``.

    Packable when both bounds are scalars.

    Args:
      lower, upper: scalars, or pytrees like the params (see :func:`project_box`).

    Returns:
      A stateless transformation (see :func:`apply_projection`).

    Raises:
      ValueError: when concrete scalar bounds have ``lower > upper``.

    >>> import jax.numpy as jnp
    >>> t = projection_box(0.0, 1.0)
    >>> p = {"w": jnp.array([0.5, 0.5])}
    >>> t.update({"w": jnp.array([1.0, -0.25])}, t.init(p), p)[0]["w"].tolist()
    [0.5, -0.25]
    """
    if is_concrete((lower, upper)):
        lo, hi = jax.tree.leaves(lower), jax.tree.leaves(upper)
        if len(lo) == 1 and len(hi) == 1 and np.any(np.asarray(lo[0]) > np.asarray(hi[0])):
            raise ValueError(
                f"projection_box needs lower <= upper, got lower={lo[0]} and upper={hi[0]}."
            )
    return _projection(lambda tree: project_box(tree, lower, upper), "projection_box")


@transform(packable=True)
def projection_l2_ball(scale: NonNegativeValue = 1.0) -> GradientTransformation:
    """Projected steps onto the ball ``‖x‖ <= scale`` (all parameters as one vector).

    Args:
      scale: ``r`` >= 0.

    Returns:
      A stateless transformation (see :func:`apply_projection`).

    >>> import gdopt, jax.numpy as jnp
    >>> t = projection_l2_ball(1.0)
    >>> p = {"w": jnp.array([0.0, 0.0])}
    >>> u, _ = t.update({"w": jnp.array([3.0, 4.0])}, t.init(p), p)
    >>> [round(x, 4) for x in gdopt.apply_updates(p, u)["w"].tolist()]
    [0.6, 0.8]
    """
    return _projection(lambda tree: project_l2_ball(tree, scale), "projection_l2_ball")


@transform(packable=True)
def projection_simplex(scale: PositiveValue = 1.0) -> GradientTransformation:
    """Projected steps onto the simplex ``{x >= 0, Σ x = scale}`` (all parameters together).

    The threshold ``θ`` is computed over every coordinate of every leaf, and then applied to
    each coordinate (see :func:`project_simplex`): the same numbers on packed buffers.

    Args:
      scale: ``s`` > 0, the sum of the projected parameters.

    Returns:
      A stateless transformation (see :func:`apply_projection`, :func:`project_simplex`).

    >>> import gdopt, jax.numpy as jnp
    >>> t = projection_simplex(2.0)
    >>> p = {"w": jnp.array([1.0, 1.0])}
    >>> u, _ = t.update({"w": jnp.array([1.0, 0.0])}, t.init(p), p)
    >>> [round(x, 4) for x in gdopt.apply_updates(p, u)["w"].tolist()]
    [1.5, 0.5]
    """
    return _projection(lambda tree: project_simplex(tree, scale), "projection_simplex")
