"""Clipping transforms: bound the size of the updates before they reach an optimizer.

``clip`` bounds each coordinate, ``clip_by_global_norm`` the norm of all updates taken as one
vector, ``clip_by_block_rms`` the root mean square of each leaf, ``adaptive_grad_clip`` the
ratio of each unit's gradient norm to its weight norm (AGC, Brock et al. 2021). ``zero_nans``
replaces NaNs by zeros and records where it found them; ``per_example_global_norm_clip`` is the
per-example clip-and-sum used by differentially private SGD.

Every transform here returns updates in the dtype of the incoming updates and lets ``None``
leaves (masked or frozen parameters) pass through. Coordinate-wise clipping and the global
norm do not depend on how the parameters are split into arrays (packable); block RMS and
unit-wise clipping do (one norm per array or per unit of an array).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics as num
from gdopt._numerics import global_norm, safe_rms, sum_of_squares, tree_map
from gdopt._traits import transform
from gdopt._validation import check_scalar, need_params
from gdopt.base import (
    GradientTransformation,
    NonNegativeValue,
    PositiveValue,
    init_empty_state,
)
from gdopt.tree import key_path_str

__all__ = [
    "clip",
    "clip_by_global_norm",
    "clip_by_block_rms",
    "adaptive_grad_clip",
    "unitwise_norm",
    "zero_nans",
    "ZeroNansState",
    "per_example_global_norm_clip",
    "unitwise_clip",
    "per_example_layer_norm_clip",
]


@transform(packable=True)
def clip(max_delta: NonNegativeValue) -> GradientTransformation:
    """Clip every coordinate of the updates to ``[-max_delta, max_delta]``.

    Update rule: ``u <- min(max(g, -δ), δ)`` elementwise, ``δ = max_delta``.

    Args:
      max_delta: ``δ`` >= 0, a number or a (possibly traced) array.

    Returns:
      A stateless transformation.

    >>> import jax.numpy as jnp
    >>> t = clip(1.0)
    >>> u, _ = t.update({"w": jnp.array([-3.0, 0.5, 2.0])}, t.init(None))
    >>> u["w"].tolist()
    [-1.0, 0.5, 1.0]
    """

    def update(updates, state, params=None, **extra):
        del params, extra
        out = tree_map(lambda u: num.clip(u, -max_delta, max_delta).astype(u.dtype), updates)
        return out, state

    return GradientTransformation(init_empty_state, update)


@transform(packable=True)
def clip_by_global_norm(max_norm: PositiveValue) -> GradientTransformation:
    """Rescale all updates together so that their global Euclidean norm is at most ``max_norm``.

    Update rule, with ``‖g‖ = sqrt(Σ_leaves Σ g²)`` taken over every leaf as one vector::

        u = g                    if ‖g‖ < max_norm
        u = g · max_norm / ‖g‖   otherwise

    The direction of the whole update is kept (unlike per-coordinate :func:`clip`).

    Args:
      max_norm: the largest allowed global norm, > 0.

    Returns:
      A stateless transformation.

    References:
      Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural networks",
      ICML 2013, https://arxiv.org/abs/1211.5063.

    >>> import jax.numpy as jnp
    >>> t = clip_by_global_norm(1.0)
    >>> u, _ = t.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, t.init(None))
    >>> (round(float(u["a"][0]), 4), round(float(u["b"][0]), 4))
    (0.6, 0.8)
    """

    def update(updates, state, params=None, **extra):
        del params, extra
        norm = global_norm(updates)
        keep = jnp.less(*num.promote(norm, max_norm))
        factor = jnp.where(keep, 1.0, num.div(max_norm, jnp.where(keep, 1.0, norm)))
        return tree_map(lambda u: (u * factor.astype(u.dtype)).astype(u.dtype), updates), state

    return GradientTransformation(init_empty_state, update)


@transform(packable=False)
def clip_by_block_rms(threshold: PositiveValue) -> GradientTransformation:
    """Rescale each leaf ("block") whose root mean square exceeds ``threshold``.

    Update rule, per leaf ``g`` with ``rms(g) = sqrt(mean(g²))``::

        u = g / max(1, rms(g) / threshold)

    Args:
      threshold: the largest allowed RMS of a leaf, > 0.

    Returns:
      A stateless transformation.

    >>> import jax.numpy as jnp
    >>> t = clip_by_block_rms(1.0)
    >>> u, _ = t.update({"w": jnp.array([2.0, -2.0]), "b": jnp.array([0.5])}, t.init(None))
    >>> (u["w"].tolist(), u["b"].tolist())
    ([1.0, -1.0], [0.5])
    """

    def leaf(u):
        rms = safe_rms(u)
        return (u / jnp.maximum(1.0, num.div(rms, threshold)).astype(u.dtype)).astype(u.dtype)

    def update(updates, state, params=None, **extra):
        del params, extra
        return tree_map(leaf, updates), state

    return GradientTransformation(init_empty_state, update)


def unitwise_norm(x: jax.Array, axis: int | Sequence[int] | None = None) -> jax.Array:
    """The Euclidean norm of each "unit" of ``x``, broadcast back to the shape of ``x``.

    A unit is what one output neuron owns. With ``axis=None`` the reduction axes follow the
    layouts of JAX layers: the whole array for scalars and vectors (biases, gains), axis 0 for
    matrices ``(in, out)`` and 3-d ``(in, heads, out)`` kernels, axes ``(0, 1, 2)`` for 2-d
    convolution kernels ``HWIO`` and ``(0, 1, 2, 3)`` for 3-d ones ``DHWIO``. Other ranks need
    an explicit ``axis``.

    Args:
      x: an array.
      axis: the axes to reduce over (the axes *inside* a unit), or ``None`` for the rule above.

    Returns:
      An array of the shape of ``x`` (in at least float32).

    Raises:
      ValueError: for arrays of rank > 5 when ``axis`` is ``None``.

    >>> import jax.numpy as jnp
    >>> unitwise_norm(jnp.array([[3.0, 0.0], [4.0, 1.0]])).tolist()
    [[5.0, 1.0], [5.0, 1.0]]
    """
    x = jnp.asarray(x)
    if axis is None:
        if jnp.squeeze(x).ndim <= 1:
            axis = None
        elif x.ndim in (2, 3):
            axis = 0
        elif x.ndim in (4, 5):
            axis = tuple(range(x.ndim - 1))
        else:
            raise ValueError(
                f"unitwise_norm has no default unit for an array of shape {x.shape} (rank "
                f"{x.ndim}); pass axis=... with the axes that belong to one unit."
            )
    return jnp.broadcast_to(jnp.sqrt(sum_of_squares(x, axis=axis, keepdims=True)), x.shape)


@transform(packable=False)
def adaptive_grad_clip(
    clipping: PositiveValue,
    eps: NonNegativeValue = 1e-3,
    axis: int | tuple[int, ...] | None = None,
) -> GradientTransformation:
    """Adaptive gradient clipping, unit-wise (AGC, Brock et al., 2021).

    Each unit's gradient is clipped relative to the norm of the unit's weights (see
    :func:`unitwise_norm` for what a unit is)::

        m_i = λ · max(‖p_i‖, ε)                 (λ = clipping)
        u_i = g_i                               if ‖g_i‖ < m_i
        u_i = g_i · m_i / max(‖g_i‖, 1e-6)      otherwise

    Args:
      clipping: ``λ`` > 0, the largest allowed ratio ``‖g_i‖ / ‖p_i‖``.
      eps: ``ε`` >= 0, a floor on the weight norm, so that units initialised at zero can move.
      axis: the axes inside one unit (see :func:`unitwise_norm`); ``None`` picks them by rank.

    Returns:
      A stateless transformation; its ``update`` needs ``params``.

    References:
      Brock, De, Smith & Simonyan, "High-Performance Large-Scale Image Recognition Without
      Normalization", ICML 2021, https://arxiv.org/abs/2102.06171.

    >>> import jax.numpy as jnp
    >>> t = adaptive_grad_clip(0.1)
    >>> p = {"w": jnp.array([3.0, 4.0])}                  # ‖p‖ = 5, so ‖u‖ <= 0.5
    >>> u, _ = t.update({"w": jnp.array([0.0, 10.0])}, t.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]
    [0.0, 0.5]
    """

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, "adaptive_grad_clip", "it clips relative to their norm")
        flat, treedef = jax.tree_util.tree_flatten_with_path(updates, is_leaf=lambda x: x is None)
        p_leaves = treedef.flatten_up_to(params)
        out = []
        for (path, g), p in zip(flat, p_leaves, strict=True):
            if g is None:
                out.append(None)
                continue
            try:
                g_norm = unitwise_norm(g, axis)
                p_norm = unitwise_norm(p, axis)
            except ValueError as e:
                raise ValueError(f"adaptive_grad_clip at {key_path_str(path)}: {e}") from None
            max_norm = num.mul(clipping, num.maximum(p_norm, eps))
            clipped = g * num.div(max_norm, jnp.maximum(g_norm, 1e-6)).astype(g.dtype)
            small = jnp.less(*num.promote(g_norm, max_norm))
            out.append(jnp.where(small, g, clipped).astype(g.dtype))
        return treedef.unflatten(out), state

    return GradientTransformation(init_empty_state, update)


class ZeroNansState(NamedTuple):
    """Where the latest update had NaNs: a pytree (like the params) of scalar bools."""

    found_nan: Any


@transform(packable=True)
def zero_nans() -> GradientTransformation:
    """Replace NaN entries of the updates by zeros, recording which leaves had any.

    Update rule: ``u = 0 where g is NaN, else g``; the state's ``found_nan`` holds, per leaf,
    whether the latest gradient had a NaN. Infinities are kept (clip them separately).

    Returns:
      A transformation whose state is a :class:`ZeroNansState`.

    >>> import jax.numpy as jnp
    >>> t = zero_nans()
    >>> p = {"w": jnp.zeros(2), "b": jnp.zeros(1)}
    >>> u, s = t.update({"w": jnp.array([jnp.nan, 1.0]), "b": jnp.array([2.0])}, t.init(p))
    >>> (u["w"].tolist(), bool(s.found_nan["w"]), bool(s.found_nan["b"]))
    ([0.0, 1.0], True, False)
    """

    def init(params):
        return ZeroNansState(found_nan=tree_map(lambda p: jnp.array(False), params))

    def update(updates, state, params=None, **extra):
        del params, extra, state
        found = tree_map(lambda u: jnp.any(jnp.isnan(u)), updates)
        out = tree_map(lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates)
        return out, ZeroNansState(found_nan=found)

    return GradientTransformation(init, update)


def per_example_global_norm_clip(grads: Any, l2_norm_clip: Any) -> tuple[Any, jax.Array]:
    """Clip each example's gradient to global norm ``l2_norm_clip``, then sum over examples.

    This is the clipping step of DP-SGD: every leaf of ``grads`` holds per-example gradients
    stacked along axis 0 (e.g. from ``jax.vmap(jax.grad(loss), (None, 0))``). For example
    ``i`` with global norm ``‖g_i‖`` over all leaves::

        out = Σ_i g_i · min(1, C / ‖g_i‖)          (C = l2_norm_clip; factor 1 when ‖g_i‖ = 0)

    A function of the per-example gradients, not a transformation (so it has no traits).

    Args:
      grads: a pytree whose leaves all have the same leading (batch) dimension.
      l2_norm_clip: ``C`` >= 0.

    Returns:
      ``(summed_clipped_grads, num_clipped)``: the sum over the batch (leaves without the
      batch axis) and how many examples were scaled down.

    Raises:
      ValueError: when a leaf has no leading axis or a different batch size (the message
        names its key path).

    References:
      Abadi et al., "Deep Learning with Differential Privacy", CCS 2016,
      https://arxiv.org/abs/1607.00133.

    >>> import jax.numpy as jnp
    >>> g = {"w": jnp.array([[3.0, 4.0], [0.3, 0.4]])}     # norms 5 and 0.5
    >>> total, n = per_example_global_norm_clip(g, 1.0)
    >>> ([round(x, 4) for x in total["w"].tolist()], int(n))
    ([0.9, 1.2], 1)
    """
    check_scalar("l2_norm_clip", l2_norm_clip, low=0.0)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    if not flat:
        raise ValueError("per_example_global_norm_clip got a pytree with no array leaves.")
    first_path, first = flat[0]
    for path, g in flat:
        shape, batch = np.shape(g), np.shape(first)
        if len(shape) == 0 or len(batch) == 0 or shape[0] != batch[0]:
            raise ValueError(
                "per_example_global_norm_clip expects every leaf of grads to hold per-example "
                f"gradients stacked on axis 0, all with the same batch size; "
                f"grads{key_path_str(first_path)} has shape {batch} and "
                f"grads{key_path_str(path)} has shape {shape}."
            )
    norms = jax.vmap(global_norm)(grads)
    safe = jnp.where(norms > 0, norms, 1.0)
    factors = jnp.where(norms > 0, jnp.minimum(1.0, num.div(l2_norm_clip, safe)), 1.0)
    num_clipped = jnp.sum(factors < 1.0)
    summed = jax.tree.map(
        lambda g: jnp.tensordot(factors.astype(g.dtype), g, axes=1).astype(g.dtype), grads
    )
    return summed, num_clipped


def unitwise_clip(
    g_norm: jax.Array, max_norm: jax.Array, grad: jax.Array, div_eps: float = 1e-6
) -> jax.Array:
    """Rescale ``grad`` to norm ``max_norm`` where its (unitwise) norm ``g_norm`` exceeds it.

    ``grad`` where ``g_norm < max_norm``, else ``grad · max_norm / max(g_norm, div_eps)``
    (the clipping step of adaptive gradient clipping, Brock et al., 2021).

    >>> unitwise_clip(jnp.array(4.0), jnp.array(2.0), jnp.array(8.0)).tolist()
    4.0
    """
    keep = jnp.less(*num.promote(g_norm, max_norm))
    clipped = num.mul(grad, num.div(max_norm, num.maximum(g_norm, div_eps)))
    return num.where(keep, grad, clipped).astype(jnp.asarray(grad).dtype)


def per_example_layer_norm_clip(
    grads: Any, global_l2_norm_clip: Any, uniform: bool = True
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Clip per-example gradients layer by layer, then sum over the examples (DP-SGD).

    Each of the ``K`` layers (leaves, batch axis first) is clipped with
    :func:`gdopt.per_example_global_norm_clip` to ``C / sqrt(K)`` (``uniform``) or to
    ``C sqrt(D_i / D)`` (``D_i`` the layer's parameters per example, ``D`` the model's), where
    ``C = global_l2_norm_clip``; so the whole per-example gradient has norm at most ``C``.

    Args:
      grads: the per-example gradients, one array per layer with the examples on axis 0.
      global_l2_norm_clip: ``C`` > 0.
      uniform: the same clip norm for every layer, or one proportional to its size.

    Returns:
      ``(sums, counts)``: per layer, the sum of the clipped per-example gradients and how many
      examples were clipped.

    >>> sums, counts = per_example_layer_norm_clip([jnp.array([[3.0, 4.0], [0.3, 0.4]])], 1.0)
    >>> sums[0].round(4).tolist(), int(counts[0])
    ([0.9, 1.2], 1)
    """
    leaves = jax.tree.leaves(grads)
    if not leaves:
        return [], []
    sizes = [int(x[0].size) for x in leaves]
    total = float(sum(sizes))
    sums, counts = [], []
    for x, d in zip(leaves, sizes, strict=True):
        fraction = 1.0 / len(leaves) if uniform else d / total
        clip = num.mul(global_l2_norm_clip, float(fraction) ** 0.5)
        clipped, count = per_example_global_norm_clip([x], clip)
        sums.append(clipped[0])
        counts.append(count)
    return sums, counts
