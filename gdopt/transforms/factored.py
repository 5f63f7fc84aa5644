"""Memory-lean second moments: SM3's per-axis cover sets and Adafactor's factored moments.

Both keep, for a matrix-shaped leaf, statistics per row and per column instead of one per
entry (``n + m`` numbers for an ``n × m`` matrix instead of ``n m``). What they compute
depends on each leaf's shape, so neither is packable (:mod:`gdopt.packing` would see one
flat vector): ``scale_by_factored_rms(factored=False)`` keeps full moments and is.

Dtypes: updates come out in the dtype of the incoming updates and every state leaf keeps the
dtype it was created with (the params'), so the state's dtypes never change across steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt._numerics import (
    abs_sq,
    add,
    as_float32,
    cast_tree_like,
    follow_sharding,
    is_none,
    map_leaves,
    mul,
    safe_increment,
    sub,
    tree_map,
    update_moment,
)
from gdopt._traits import transform
from gdopt._validation import Integer, Interval, check_callable
from gdopt.base import (
    DecayValue,
    GradientTransformation,
    NonNegativeValue,
)
from gdopt.tree import tree_zeros_like

__all__ = [
    "scale_by_sm3",
    "scale_by_factored_rms",
    "ScaleBySM3State",
    "FactoredState",
]


# ----------------------------------------------------------------------------- SM3


class ScaleBySM3State(NamedTuple):
    """Per leaf: a list of accumulators in ``mu`` (one per axis; one full-shape one for
    0-D/1-D leaves), and the momentum ``nu``."""

    mu: Any
    nu: Any


def _sm3_accumulator_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    if len(shape) < 2:
        return [tuple(shape)]
    return [(n,) for n in shape]


@transform(packable=False)
def scale_by_sm3(
    b1: DecayValue = 0.9,
    b2: Annotated[float | jax.Array, Interval(0.0, 1.0)] = 1.0,
    eps: NonNegativeValue = 1e-8,
) -> GradientTransformation:
    """SM3-II's direction: AdaGrad with sublinear memory via per-axis cover sets (Anil et al., 2019).

    A leaf of shape ``(n_1, ..., n_k)`` with ``k >= 2`` keeps one accumulator per axis
    (``n_1 + ... + n_k`` numbers instead of ``n_1 ··· n_k``); 0-D and 1-D leaves keep a full
    one. For each coordinate ``i`` and axis accumulators ``μ_r``::

        ν_t(i) = min_r μ_{t-1}(r(i)) + g_t(i)²        (β2 = 1, AdaGrad-like sum)
        ν_t(i) = β2 min_r μ_{t-1}(r(i)) + (1 - β2) g_t(i)²    (β2 < 1)
        μ_t(r) = max_{i in row/column r} ν_t(i)
        m_t    = β1 m_{t-1} + (1 - β1) g_t / sqrt(ν_t + ε)   (0 where ν_t = 0)
        u_t    = m_t

    Not packable: the cover sets are the leaf's rows and columns.

    Args:
      b1: momentum decay in [0, 1).
      b2: accumulator decay in [0, 1]; ``1`` (the paper's SM3) sums without decay.
      eps: added inside the square root (>= 0).

    Returns:
      The transformation; its state is a :class:`ScaleBySM3State` (``mu[leaf]`` is a list
      of accumulators, as in optax).

    Raises:
      TypeError: at ``init``, for complex parameters.

    References:
      Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization", NeurIPS 2019,
      https://arxiv.org/abs/1901.11150.

    >>> t = scale_by_sm3(b1=0.0, eps=0.0)
    >>> s = t.init({"w": jnp.zeros((3, 2))})
    >>> [a.shape for a in s.mu["w"]]   # 3 + 2 numbers instead of 6
    [(3,), (2,)]
    >>> u, s = t.update({"w": jnp.full((3, 2), -2.0)}, s)
    >>> float(u["w"][0, 0])
    -1.0
    """

    def init(params):
        def accumulators(p):
            dtype = jnp.asarray(p).dtype
            if jnp.issubdtype(dtype, jnp.complexfloating):
                raise TypeError("scale_by_sm3 supports real parameters only, got complex ones.")
            shapes = _sm3_accumulator_shapes(np.shape(p))
            if len(shapes) == 1:  # a vector or scalar: its own shape (and sharding)
                return [follow_sharding(jnp.zeros(shapes[0], dtype), p)]
            zeros = jnp.zeros(np.shape(p), dtype)
            placed = follow_sharding(zeros, p)
            if placed is zeros:  # no mesh in the trace: plain vectors
                return [jnp.zeros(s, dtype) for s in shapes]
            # on a mesh, axis i's accumulator is sharded as p's dimension i (a reduction of
            # zeros placed like p), so update keeps the sharding init gave it
            dims = range(len(shapes))
            return [jnp.max(placed, axis=tuple(j for j in dims if j != i)) for i in dims]

        return ScaleBySM3State(mu=tree_map(accumulators, params), nu=tree_zeros_like(params))

    def update(updates, state, params=None, **extra):
        del params, extra
        beta2 = as_float32(b2)
        new_weight = jnp.where(beta2 == 1.0, 1.0, 1.0 - beta2)

        def leaf(g, accs, m):
            ndim = g.ndim
            if ndim < 2:
                prev = accs[0]
            else:
                prev = accs[0].reshape((-1,) + (1,) * (ndim - 1))
                for axis in range(1, ndim):
                    shape = (1,) * axis + (-1,) + (1,) * (ndim - axis - 1)
                    prev = jnp.minimum(prev, accs[axis].reshape(shape))
            nu = add(new_weight.astype(g.dtype) * g * g, mul(b2, prev))
            pre = mul(jnp.where(nu > 0, jax.lax.rsqrt(add(nu, eps)), 0.0), g)
            m = update_moment(pre, m, b1, 1)
            if ndim < 2:
                new_accs = [nu.astype(accs[0].dtype)]
            else:
                new_accs = [
                    jnp.max(nu, axis=tuple(a for a in range(ndim) if a != axis)).astype(
                        accs[axis].dtype
                    )
                    for axis in range(ndim)
                ]
            return m.astype(g.dtype), new_accs, m

        # ``mu`` holds a list per leaf: flatten it only down to the leaves of ``updates``.
        flat_u, treedef = jax.tree.flatten(updates, is_leaf=is_none)
        flat_mu = treedef.flatten_up_to(state.mu)
        flat_nu = treedef.flatten_up_to(state.nu)
        outs = [
            (None, a, m) if g is None else leaf(g, a, m)
            for g, a, m in zip(flat_u, flat_mu, flat_nu, strict=True)
        ]
        u = treedef.unflatten([o[0] for o in outs])
        mu = treedef.unflatten([o[1] for o in outs])
        nu = treedef.unflatten([o[2] for o in outs])
        return u, ScaleBySM3State(mu=mu, nu=cast_tree_like(nu, state.nu))

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Adafactor


class FactoredState(NamedTuple):
    """Step counter and, per leaf, the row/column statistics (factored leaves) or the full
    second moment ``v`` (other leaves); unused slots hold a 0-D zero."""

    count: jax.Array
    v_row: Any
    v_col: Any
    v: Any


def _factored_dims(
    shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int
) -> tuple[int, int] | None:
    """The (second largest, largest) axes to factor over, or ``None`` to keep a full moment."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape, kind="stable")
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _adafactor_decay(step: jax.Array, exponent: Any) -> jax.Array:
    """The paper's ``β̂2_t = 1 - t^(-exponent)`` for ``t = step + 1`` (clamped to ``t >= 1``)."""
    t = jnp.maximum(jnp.asarray(step, jnp.float32) + 1.0, 1.0)
    return 1.0 - t ** (-as_float32(exponent))


def _unfactored(arguments: dict[str, Any]) -> bool:
    """Packable when nothing is factored: the full moments are coordinate by coordinate."""
    return not arguments["factored"]


@transform(packable=_unfactored)
def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: NonNegativeValue = 0.8,
    step_offset: NonNegativeValue = 0,
    min_dim_size_to_factor: Annotated[int, Integer(0)] = 128,
    epsilon: NonNegativeValue = 1e-30,
    decay_rate_fn: Callable[[jax.Array, Any], jax.Array] | None = None,
) -> GradientTransformation:
    """Adafactor's factored second-moment scaling (Shazeer & Stern, 2018).

    For a leaf with two axes of size >= ``min_dim_size_to_factor`` (the two largest; other
    axes are batch axes), only row and column averages of ``g² + ε1`` are kept (``n + m``
    numbers for an ``n × m`` matrix); other leaves keep the full average::

        β_t   = 1 - t^(-decay_rate)          (t = steps taken - step_offset + 1, clamped >= 1)
        R_t   = β_t R_{t-1} + (1 - β_t) mean_cols(g_t² + ε1)
        C_t   = β_t C_{t-1} + (1 - β_t) mean_rows(g_t² + ε1)
        V̂_t   = R_t C_t / mean(R_t)          (rank-1 reconstruction)
        u_t   = g_t / sqrt(V̂_t)
        (unfactored: V_t = β_t V_{t-1} + (1 - β_t)(g_t² + ε1),  u_t = g_t / sqrt(V_t))

    ``β_1 = 0``, so no bias correction is needed. Before ``step_offset`` steps have passed the
    decay stays at ``β = 0`` (optax evaluates ``0^(-c)`` there and returns NaN). Packable
    only with ``factored=False`` (the factoring follows each leaf's shape).

    Args:
      factored: factor the second moment of eligible leaves.
      decay_rate: the exponent ``c`` >= 0 of ``β_t = 1 - t^(-c)`` (the paper uses 0.8).
      step_offset: steps to subtract from the counter (>= 0), to restart the decay schedule
        when fine-tuning from a checkpoint.
      min_dim_size_to_factor: factor only when the second-largest axis is at least this long
        (a Python int: it decides the state's shapes).
      epsilon: ``ε1`` >= 0 added to the squared gradient.
      decay_rate_fn: ``f(step, decay_rate) -> β`` replacing the schedule above (``step``
        counts from 0, less ``step_offset``).

    Returns:
      The transformation; its state is a :class:`FactoredState` (``update`` needs the params
      only for their shapes, which the gradients also carry, so ``params`` may be omitted).

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018, https://arxiv.org/abs/1804.04235.

    >>> t = scale_by_factored_rms(min_dim_size_to_factor=2)
    >>> s = t.init({"w": jnp.zeros((3, 4))})
    >>> (s.v_row["w"].shape, s.v_col["w"].shape)   # 3 + 4 numbers instead of 12
    ((3,), (4,))
    >>> u, s = t.update({"w": jnp.ones((3, 4))}, s)
    >>> round(float(u["w"][0, 0]), 4)
    1.0
    """
    if decay_rate_fn is not None:
        check_callable("decay_rate_fn", decay_rate_fn, "a callable (step, decay_rate) -> decay")
    decay_fn = _adafactor_decay if decay_rate_fn is None else decay_rate_fn

    def init(params):
        def slots(p):
            p = jnp.asarray(p)
            dims = _factored_dims(p.shape, factored, min_dim_size_to_factor)
            empty = jnp.zeros((1,), p.dtype)  # an unused slot, shaped as optax's
            if dims is None:
                return empty, empty, follow_sharding(jnp.zeros_like(p), p)
            d_second, d_largest = dims
            row = jnp.zeros(np.delete(p.shape, d_largest), p.dtype)
            col = jnp.zeros(np.delete(p.shape, d_second), p.dtype)
            return row, col, empty

        leaves, treedef = jax.tree.flatten(params, is_leaf=is_none)
        outs = [(None, None, None) if p is None else slots(p) for p in leaves]
        rows, cols, vs = (treedef.unflatten([o[i] for o in outs]) for i in range(3))
        return FactoredState(count=jnp.zeros([], jnp.int32), v_row=rows, v_col=cols, v=vs)

    def update(updates, state, params=None, **extra):
        del params, extra
        beta = decay_fn(sub(state.count, step_offset), decay_rate)

        def moving_average(x, x_new):
            return add(mul(beta, x), mul(1 - beta, x_new)).astype(x.dtype)

        def leaf(g, row, col, v):
            g2 = add(abs_sq(g), epsilon)
            dims = _factored_dims(g.shape, factored, min_dim_size_to_factor)
            if dims is None:
                v = moving_average(v, g2)
                u = mul(g, jax.lax.rsqrt(v.astype(g2.dtype)))
                return u.astype(g.dtype), row, col, v
            d_second, d_largest = dims
            row = moving_average(row, jnp.mean(g2, axis=d_largest))
            col = moving_average(col, jnp.mean(g2, axis=d_second))
            # ``row`` lost axis d_largest, so d_second moved left by one if it came after it.
            row_axis = d_second - 1 if d_second > d_largest else d_second
            row_factor = jax.lax.rsqrt(row / jnp.mean(row, axis=row_axis, keepdims=True))
            col_factor = jax.lax.rsqrt(col)
            u = mul(
                mul(g, jnp.expand_dims(row_factor, axis=d_largest)),
                jnp.expand_dims(col_factor, axis=d_second),
            )
            return u.astype(g.dtype), row, col, v

        u, rows, cols, vs = map_leaves(leaf, 4, updates, state.v_row, state.v_col, state.v)
        return u, FactoredState(count=safe_increment(state.count), v_row=rows, v_col=cols, v=vs)

    return GradientTransformation(init, update)
