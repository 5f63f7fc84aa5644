"""Euclidean projections onto constraint sets, as functions of a pytree (``optax.projections``).

Each ``projection_<set>(tree, ...)`` returns the point of the set nearest to ``tree``, all
leaves taken together as one vector, with optax's names and arguments. They are the
functions; the gradient transformations that apply them after each step are
:func:`gdopt.projection_box`, :func:`gdopt.projection_l2_ball`, ... at the top level of
gdopt (and :func:`gdopt.apply_projection` for any of these functions).

>>> import jax.numpy as jnp
>>> projection_l1_ball({"w": jnp.array([2.0, -1.0])}, scale=1.0)["w"].tolist()
[1.0, 0.0]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gdopt import _numerics as num
from gdopt import tree as _tree
from gdopt.transforms.constraints import (
    project_box,
    project_l2_ball,
    project_non_negative,
    project_simplex,
)

__all__ = [
    "projection_box",
    "projection_halfspace",
    "projection_hypercube",
    "projection_hyperplane",
    "projection_l1_ball",
    "projection_l1_sphere",
    "projection_l2_ball",
    "projection_l2_sphere",
    "projection_linf_ball",
    "projection_non_negative",
    "projection_simplex",
    "projection_vector",
]


def _keep_dtypes(out: Any, like: Any) -> Any:
    return jax.tree.map(lambda q, x: num.cast_like(q, jnp.asarray(x)), out, like)


def projection_non_negative(tree: Any) -> Any:
    """The projection onto the non-negative orthant: ``max(x, 0)`` leafwise.

    >>> projection_non_negative({"w": jnp.array([-1.0, 2.0])})["w"].tolist()
    [0.0, 2.0]
    """
    return project_non_negative(tree)


def projection_box(tree: Any, lower: Any, upper: Any) -> Any:
    """The projection onto the box ``lower <= x <= upper`` (scalars or trees like ``tree``).

    >>> projection_box({"w": jnp.array([-2.0, 2.0])}, -1.0, 1.0)["w"].tolist()
    [-1.0, 1.0]
    """
    return project_box(tree, lower, upper)


def projection_hypercube(tree: Any, scale: Any = 1) -> Any:
    """The projection onto the hypercube ``0 <= x <= scale``.

    >>> projection_hypercube({"w": jnp.array([-2.0, 0.5, 2.0])})["w"].tolist()
    [0.0, 0.5, 1.0]
    """
    return project_box(tree, 0.0, scale)


def projection_linf_ball(tree: Any, scale: Any = 1) -> Any:
    """The projection onto the ∞-norm ball ``max |x_i| <= scale``: clipping to ``[-scale, scale]``.

    >>> projection_linf_ball({"w": jnp.array([-2.0, 0.5, 2.0])})["w"].tolist()
    [-1.0, 0.5, 1.0]
    """
    return jax.tree.map(lambda x: num.cast_like(num.clip(x, num.mul(-1, scale), scale), x), tree)


def projection_l2_ball(tree: Any, scale: Any = 1) -> Any:
    """The projection onto the Euclidean ball ``‖x‖₂ <= scale``.

    >>> projection_l2_ball({"w": jnp.array([3.0, 4.0])})["w"].round(4).tolist()
    [0.6, 0.8]
    """
    return project_l2_ball(tree, scale)


def projection_l2_sphere(tree: Any, scale: Any = 1) -> Any:
    """The projection onto the Euclidean sphere ``‖x‖₂ = scale``: ``scale · x / ‖x‖₂``.

    >>> projection_l2_sphere({"w": jnp.array([0.3, 0.4])})["w"].round(4).tolist()
    [0.6, 0.8]
    """
    factor = num.div(scale, _tree.norm(tree))
    return _keep_dtypes(_tree.scale(factor, tree), tree)


def projection_simplex(tree: Any, scale: Any = 1) -> Any:
    """The projection onto the simplex ``{x >= 0, Σ x = scale}`` (Duchi et al., 2008).

    >>> projection_simplex({"w": jnp.array([0.5, 1.5, -1.0])})["w"].tolist()
    [0.0, 1.0, 0.0]
    """
    return project_simplex(tree, scale)


def projection_l1_sphere(tree: Any, scale: Any = 1) -> Any:
    """The projection onto the 1-norm sphere ``Σ |x_i| = scale``: ``sign(x) · P_simplex(|x|)``.

    >>> projection_l1_sphere({"w": jnp.array([0.5, -0.25])})["w"].tolist()
    [0.625, -0.375]
    """
    abs_tree = jax.tree.map(jnp.abs, tree)
    projected = project_simplex(abs_tree, scale)
    return jax.tree.map(
        lambda p, x: num.mul(jnp.sign(x), p).astype(jnp.asarray(x).dtype), projected, tree
    )


def projection_l1_ball(tree: Any, scale: Any = 1) -> Any:
    """The projection onto the 1-norm ball ``Σ |x_i| <= scale`` (Duchi et al., 2008).

    ``x`` itself inside the ball, :func:`projection_l1_sphere` outside.

    >>> projection_l1_ball({"w": jnp.array([0.5, -0.25])})["w"].tolist()
    [0.5, -0.25]
    """
    inside = jnp.less_equal(*num.promote(_tree.norm(tree, ord=1), scale))
    sphere = projection_l1_sphere(tree, scale)
    return jax.tree.map(
        lambda x, s: num.where(inside, x, s).astype(jnp.asarray(x).dtype), tree, sphere
    )


def projection_vector(x: Any, a: Any) -> Any:
    """The projection of ``x`` onto the line spanned by ``a``: ``(<a, x> / <a, a>) a``.

    >>> projection_vector({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([1.0, 0.0])})["w"].tolist()
    [1.0, 0.0]
    """
    factor = num.div(_tree.vdot(a, x), _tree.vdot(a, a))
    return _keep_dtypes(_tree.scale(factor, a), x)


def projection_hyperplane(x: Any, a: Any, b: Any) -> Any:
    """The projection onto the hyperplane ``<a, y> = b``: ``x - (<a, x> - b) / <a, a> · a``.

    >>> projection_hyperplane({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([1.0, 0.0])}, 3.0)["w"].tolist()
    [3.0, 2.0]
    """
    factor = num.div(num.sub(_tree.vdot(a, x), b), _tree.vdot(a, a))
    return _keep_dtypes(_tree.add_scale(x, num.mul(-1, factor), a), x)


def projection_halfspace(x: Any, a: Any, b: Any) -> Any:
    """The projection onto the half-space ``<a, y> <= b``: ``x - max(<a, x> - b, 0) / <a, a> · a``.

    >>> projection_halfspace({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([1.0, 0.0])}, 3.0)["w"].tolist()
    [1.0, 2.0]
    """
    excess = num.maximum(num.sub(_tree.vdot(a, x), b), 0)
    factor = num.div(excess, _tree.vdot(a, a))
    return _keep_dtypes(_tree.add_scale(x, num.mul(-1, factor), a), x)
