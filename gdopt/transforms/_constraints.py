"""Constraints and gradient perturbations: centralization, annealed noise, projections.

Projections come in two forms: pure functions ``project_*(tree, ...)`` that map a pytree to
the nearest point of a set, and transforms ``projection_*(...)`` that, placed last in a chain,
make the *new* parameters land in the set::

    u' = P(p + u) - p        so that   apply_updates(p, u') = P(p + u)

(projected gradient descent). ``apply_projection(project)`` builds such a transform from any
projection function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdopt.base import (
    EmptyState,
    GradientTransformation,
    check_nonnegative,
    check_scalar,
    is_concrete,
    safe_increment,
)
from gdopt.transforms._clipping import _global_norm
from gdopt.transforms._core import _map
from gdopt.tree import check_same_structure

__all__ = [
    "centralize",
    "add_noise",
    "AddNoiseState",
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


def _empty_init(params: Any) -> EmptyState:
    del params
    return EmptyState()


def _need_params(name: str, params: Any) -> None:
    if params is None:
        raise ValueError(
            f"{name} needs the current parameters: call update(grads, state, params) (the "
            "constraint is on the new parameters, params + updates)."
        )


# ----------------------------------------------------------------------------- centralize


def centralize(axis: int | tuple[int, ...] | None = None) -> GradientTransformation:
    """Gradient centralization (Yong et al., 2020): remove the mean of each unit's gradient.

    Update rule, for every leaf with at least 2 dimensions (vectors and scalars pass
    unchanged)::

        u = g - mean(g over `axis`)

    With ``axis=None`` the mean is over all axes but the first (one unit per leading index:
    PyTorch's ``(out, in, ...)`` layout, and optax's rule). For JAX ``(in, out)`` dense
    kernels, where a unit is a column, pass ``axis=0``; for ``HWIO`` convolutions
    ``axis=(0, 1, 2)``.

    Args:
      axis: the axes to average over (inside one unit), or ``None`` for the rule above.

    Returns:
      A stateless transformation.

    References:
      Yong, Huang, Hua & Zhang, "Gradient Centralization: A New Optimization Technique for
      Deep Neural Networks", ECCV 2020, https://arxiv.org/abs/2004.01461.

    >>> import jax.numpy as jnp
    >>> t = centralize()
    >>> u, _ = t.update({"w": jnp.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])}, t.init(None))
    >>> u["w"].tolist()
    [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """

    def leaf(g):
        if g.ndim < 2:
            return g
        axes = tuple(range(1, g.ndim)) if axis is None else axis
        return (g - jnp.mean(g, axis=axes, keepdims=True)).astype(g.dtype)

    def update(updates, state, params=None, **extra):
        del params, extra
        return _map(leaf, updates), state

    return GradientTransformation(_empty_init, update)


# ----------------------------------------------------------------------------- noise


class AddNoiseState(NamedTuple):
    """Step counter ``t`` and the PRNG key for the next noise sample."""

    count: jax.Array
    rng_key: jax.Array


def _as_key(key: Any) -> jax.Array:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.PRNGKey(int(key))
    arr = np.asarray(key)
    if arr.dtype == np.uint32 and arr.shape == (2,):
        return jnp.asarray(arr)
    raise TypeError(
        f"key must be an int seed or a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), "
        f"got {key!r}."
    )


def add_noise(
    eta: float | jax.Array,
    gamma: float | jax.Array,
    key: jax.Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """Add annealed Gaussian noise to the updates (Neelakantan et al., 2015).

    Update rule (``t`` starts at 1)::

        σ_t² = η / t^γ
        u_t = g_t + σ_t · N(0, I)

    The PRNG key lives in the state and is split at every step, so runs are reproducible and
    a jitted step draws fresh noise each time.

    Args:
      eta: ``η`` >= 0, the initial variance.
      gamma: ``γ`` >= 0, the annealing exponent (the paper uses 0.55).
      key: an int seed or a PRNG key (default seed 0).
      seed: an int seed, accepted for code written against optax's older signature; give
        ``key`` or ``seed``, not both.

    Returns:
      A transformation whose state is an :class:`AddNoiseState`.

    References:
      Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep Networks",
      2015, https://arxiv.org/abs/1511.06807.

    >>> import jax.numpy as jnp
    >>> t = add_noise(eta=0.0, gamma=0.55, key=0)          # no variance: no noise
    >>> u, s = t.update({"w": jnp.array([1.0, 2.0])}, t.init({"w": jnp.zeros(2)}))
    >>> (u["w"].tolist(), int(s.count))
    ([1.0, 2.0], 1)
    """
    check_nonnegative("eta", eta)
    check_nonnegative("gamma", gamma)
    if seed is not None and key is not None:
        raise ValueError("add_noise takes key or seed, not both; pass key=... only.")
    start = _as_key(0 if key is None and seed is None else (key if key is not None else seed))

    def init(params):
        del params
        return AddNoiseState(count=jnp.zeros([], jnp.int32), rng_key=start)

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)
        std = jnp.sqrt(eta / count.astype(jnp.float32) ** gamma)
        next_key, sample_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample_key, len(leaves))
        noisy = [
            (g + std * jax.random.normal(k, jnp.shape(g), jnp.asarray(g).dtype)).astype(g.dtype)
            for g, k in zip(leaves, keys, strict=True)
        ]
        return treedef.unflatten(noisy), AddNoiseState(count=count, rng_key=next_key)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- non-negativity


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
        _need_params("keep_params_nonnegative", params)
        out = _map(lambda u, p: jnp.where(p + u < 0, -p, u).astype(u.dtype), updates, params)
        return out, state

    return GradientTransformation(_empty_init, update)


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
        jnp.clip(x, lo, hi).astype(jnp.asarray(x).dtype)
        for x, lo, hi in zip(leaves, lows, highs, strict=True)
    ]
    return treedef.unflatten(out)


def project_l2_ball(tree: Any, scale: float | jax.Array = 1.0) -> Any:
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
    check_nonnegative("scale", scale)
    norm = _global_norm(tree)
    factor = scale / jnp.maximum(norm, scale)
    factor = jnp.where(norm > 0, factor, 1.0)
    return jax.tree.map(lambda x: (x * factor).astype(jnp.asarray(x).dtype), tree)


def _project_unit_simplex_vector(v: jax.Array, z: Any) -> jax.Array:
    """Duchi et al.'s sort-based projection of a vector onto ``{w >= 0, Σ w = z}``."""
    n = v.shape[0]
    mu = jnp.sort(v)[::-1]
    css = jnp.cumsum(mu)
    j = jnp.arange(1, n + 1, dtype=v.dtype)
    rho = jnp.sum(mu - (css - z) / j > 0)
    theta = (css[rho - 1] - z) / rho.astype(v.dtype)
    return jnp.maximum(v - theta, 0)


def project_simplex(tree: Any, scale: float | jax.Array = 1.0) -> Any:
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
    flat, unravel = ravel_pytree(tree)
    if flat.size == 0:
        return tree
    return unravel(_project_unit_simplex_vector(flat, jnp.asarray(scale, flat.dtype)))


def apply_projection(project: Callable[[Any], Any]) -> GradientTransformation:
    """A transform that makes the new parameters land in a set: ``u' = P(p + u) - p``.

    Place it last in a chain (after the learning rate): ``apply_updates(p, u')`` is then
    ``P(p + u)``, one step of projected gradient descent.

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
    if not callable(project):
        raise TypeError(f"project must be a function pytree -> pytree, got {project!r}.")

    def update(updates, state, params=None, **extra):
        del extra
        _need_params("apply_projection", params)
        moved = _map(lambda u, p: p + u, updates, params)
        projected = project(moved)
        out = _map(lambda q, p, u: (q - p).astype(u.dtype), projected, params, updates)
        return out, state

    return GradientTransformation(_empty_init, update)


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
    return apply_projection(project_non_negative)


def projection_box(lower: Any, upper: Any) -> GradientTransformation:
    """Projected steps onto the box ``lower <= x <= upper``: ``u' = clip(p + u) - p``.

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
    return apply_projection(lambda tree: project_box(tree, lower, upper))


def projection_l2_ball(scale: float | jax.Array = 1.0) -> GradientTransformation:
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
    check_nonnegative("scale", scale)
    return apply_projection(lambda tree: project_l2_ball(tree, scale))


def projection_simplex(scale: float | jax.Array = 1.0) -> GradientTransformation:
    """Projected steps onto the simplex ``{x >= 0, Σ x = scale}`` (all parameters together).

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
    check_scalar("scale", scale, low=0.0, low_open=True)
    return apply_projection(lambda tree: project_simplex(tree, scale))
