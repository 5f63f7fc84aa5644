"""The rest of optax's combinators and utilities, under optax's names.

Conditional transformations (:func:`conditionally_transform`, :func:`conditionally_mask`),
the ``MultiSteps`` skip predicates (:func:`skip_not_finite`, :func:`skip_large_updates`),
:func:`flatten`, :func:`apply_every`, :func:`normalize_by_update_norm`, the stateless
builders (:func:`stateless`, :func:`stateless_with_tree_map`,
:func:`with_extra_args_support`) and the numerical helpers (:func:`scale_gradient`,
:func:`safe_norm`, :func:`safe_root_mean_squares`, :func:`incremental_update`,
:func:`periodic_update`). Each is written from optax's contract (the tests compare the
numbers); everything here is exported at the top level of :mod:`gdopt` (the conditional
ones also under :mod:`gdopt.transforms`, as in optax).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gdopt import _control as control
from gdopt import _numerics as num
from gdopt._traits import transform, wrapper
from gdopt._validation import Integer
from gdopt.base import GradientTransformation, init_empty_state
from gdopt.transforms.clipping import per_example_global_norm_clip
from gdopt.tree import norm as tree_norm
from gdopt.tree import tree_l2_norm, tree_zeros_like

__all__ = [
    "GradientTransformationExtraArgs",
    "ConditionallyTransformState",
    "ConditionallyMaskState",
    "ApplyEvery",
    "conditionally_transform",
    "conditionally_mask",
    "skip_not_finite",
    "skip_large_updates",
    "flatten",
    "apply_every",
    "normalize_by_update_norm",
    "stateless",
    "stateless_with_tree_map",
    "with_extra_args_support",
    "scale_gradient",
    "safe_norm",
    "safe_root_mean_squares",
    "incremental_update",
    "periodic_update",
    "unitwise_clip",
    "global_norm",
    "per_example_layer_norm_clip",
]

GradientTransformationExtraArgs = GradientTransformation
"""optax's name for a transformation whose ``update`` takes keyword extras: every gdopt
transformation does, so it is :class:`gdopt.GradientTransformation` itself."""


# ----------------------------------------------------------------------------- conditionals


class ConditionallyTransformState(NamedTuple):
    """The inner state and the number of steps taken so far."""

    inner_state: Any
    step: jax.Array


class ConditionallyMaskState(NamedTuple):
    """The number of steps taken so far and the inner state."""

    step: jax.Array
    inner_state: Any


def _condition(fn: Callable[..., Any], step: jax.Array, forward: bool, extra: dict) -> Any:
    return fn(step, **extra) if forward else fn(step)


@wrapper("inner", "should_transform_fn", "forward_extra_args")
def conditionally_transform(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformation:
    """Apply ``inner`` on the steps where ``should_transform_fn(step)`` holds; else pass through.

    On other steps the updates are returned unchanged and the inner state is kept.

    Args:
      inner: the transformation.
      should_transform_fn: ``fn(step) -> bool`` (``step`` counts from 0), or
        ``fn(step, **extra)`` with ``forward_extra_args``.
      forward_extra_args: pass ``update``'s keyword extras to ``should_transform_fn``.

    Returns:
      A transformation whose state is a :class:`ConditionallyTransformState`.

    >>> import gdopt
    >>> t = conditionally_transform(gdopt.scale(10.0), lambda step: step >= 1)
    >>> s = t.init({"w": 0.0})
    >>> u, s = t.update({"w": jnp.array(1.0)}, s)
    >>> u2, s = t.update({"w": jnp.array(1.0)}, s)
    >>> float(u["w"]), float(u2["w"])
    (1.0, 10.0)
    """

    def init(params):
        return ConditionallyTransformState(inner.init(params), jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, **extra):
        go = _condition(should_transform_fn, state.step, forward_extra_args, extra)

        def apply():
            new, inner_state = inner.update(updates, state.inner_state, params, **extra)
            return num.cast_tree_like(new, updates), inner_state

        new_updates, inner_state = control.cond(go, apply, lambda: (updates, state.inner_state))
        return new_updates, ConditionallyTransformState(inner_state, num.safe_increment(state.step))

    return GradientTransformation(init, update)


@wrapper("inner", "should_transform_fn", "forward_extra_args")
def conditionally_mask(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformation:
    """Apply ``inner`` where ``should_transform_fn(step)`` holds; else zero updates.

    On other steps the updates are zeros and the inner state is kept.

    Args:
      inner: the transformation.
      should_transform_fn: ``fn(step) -> bool`` (``step`` counts from 0), or
        ``fn(step, **extra)`` with ``forward_extra_args``.
      forward_extra_args: pass ``update``'s keyword extras to ``should_transform_fn``.

    Returns:
      A transformation whose state is a :class:`ConditionallyMaskState`.

    >>> import gdopt
    >>> t = conditionally_mask(gdopt.identity(), lambda step: step >= 1)
    >>> u, s = t.update({"w": jnp.array(1.0)}, t.init({"w": 0.0}))
    >>> float(u["w"])
    0.0
    """

    def init(params):
        return ConditionallyMaskState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None, **extra):
        go = _condition(should_transform_fn, state.step, forward_extra_args, extra)

        def apply():
            new, inner_state = inner.update(updates, state.inner_state, params, **extra)
            return num.cast_tree_like(new, updates), inner_state

        def skip():
            return tree_zeros_like(updates), state.inner_state

        new_updates, inner_state = control.cond(go, apply, skip)
        return new_updates, ConditionallyMaskState(num.safe_increment(state.step), inner_state)

    return GradientTransformation(init, update)


def skip_not_finite(
    updates: Any, gradient_step: jax.Array, params: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A ``MultiSteps`` skip predicate: skip a micro-step whose updates are not all finite.

    Args:
      updates: the incoming updates.
      gradient_step: the step count (unused).
      params: the parameters (unused).

    Returns:
      ``(should_skip, {"should_skip": ..., "num_not_finite": ...})``.

    >>> skip, aux = skip_not_finite({"w": jnp.array([1.0, jnp.nan])}, 0, None)
    >>> bool(skip), int(aux["num_not_finite"])
    (True, 1)
    """
    del gradient_step, params
    counts = [jnp.sum(~jnp.isfinite(x)) for x in jax.tree.leaves(updates)]
    num_not_finite = jnp.sum(jnp.stack(counts)) if counts else jnp.zeros([], jnp.int32)
    should_skip = num_not_finite > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(
    updates: Any, gradient_step: jax.Array, params: Any, max_squared_norm: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A ``MultiSteps`` skip predicate: skip when ``‖updates‖²`` exceeds ``max_squared_norm``
    (or is not finite). Bind ``max_squared_norm`` with ``functools.partial``.

    Args:
      updates: the incoming updates.
      gradient_step: the step count (unused).
      params: the parameters (unused).
      max_squared_norm: the largest squared global norm let through.

    Returns:
      ``(should_skip, {"should_skip": ..., "norm_squared": ...})``.

    >>> skip, aux = skip_large_updates({"w": jnp.array([3.0, 4.0])}, 0, None, 10.0)
    >>> bool(skip), float(aux["norm_squared"])
    (True, 25.0)
    """
    del gradient_step, params
    norm_sq = tree_l2_norm(updates, squared=True)
    should_skip = jnp.logical_not(jnp.less_equal(*num.promote(norm_sq, max_squared_norm)))
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_sq}


# ----------------------------------------------------------------------------- flatten, every


@wrapper("inner", packable=lambda a: True)
def flatten(inner: GradientTransformation) -> GradientTransformation:
    """Run ``inner`` on all leaves raveled into one vector (its state holds flat buffers).

    Useful for per-array transformations that should see the whole model as one array, and
    to cut the number of buffers of a state. The leaves are cast to their common dtype.

    Args:
      inner: the transformation to run on the flat vector.

    Returns:
      A transformation with the state of ``inner`` on the raveled parameters.

    >>> import gdopt
    >>> t = flatten(gdopt.scale(2.0))
    >>> u, _ = t.update({"a": jnp.array([1.0]), "b": jnp.array([2.0, 3.0])}, t.init(None))
    >>> u["b"].tolist()
    [4.0, 6.0]
    """

    def ravel(tree: Any) -> Any:
        return None if tree is None else ravel_pytree(tree)[0]

    def init(params):
        return inner.init(ravel(params))

    def update(updates, state, params=None, **extra):
        flat, unravel = ravel_pytree(updates)
        new, state = inner.update(flat, state, ravel(params), **extra)
        return unravel(new), state

    return GradientTransformation(init, update)


class ApplyEvery(NamedTuple):
    """The step count and the gradients accumulated since the last emitted update."""

    count: jax.Array
    grad_acc: Any


@transform(packable=True)
def apply_every(k: Annotated[int, Integer(1)] = 1) -> GradientTransformation:
    """Sum the updates over ``k`` steps and emit the sum every ``k``-th step (zeros between).

    Args:
      k: the period, an integer >= 1.

    Returns:
      A transformation whose state is an :class:`ApplyEvery`.

    >>> t = apply_every(2)
    >>> s = t.init({"w": jnp.array(0.0)})
    >>> u1, s = t.update({"w": jnp.array(1.0)}, s)
    >>> u2, s = t.update({"w": jnp.array(2.0)}, s)
    >>> float(u1["w"]), float(u2["w"])
    (0.0, 3.0)
    """

    def init(params):
        return ApplyEvery(jnp.zeros([], jnp.int32), tree_zeros_like(params))

    def update(updates, state, params=None, **extra):
        del params, extra
        c = state.count % k
        keep = c != 0
        grad_acc = num.tree_map(
            lambda g, a: num.add(g, num.where(keep, a, jnp.zeros_like(a))), updates, state.grad_acc
        )
        emit = c == (k - 1)
        new = num.tree_map(lambda a: num.where(emit, a, jnp.zeros_like(a)), grad_acc)
        return new, ApplyEvery(num.safe_increment(state.count), grad_acc)

    return GradientTransformation(init, update)


@transform(packable=True)
def normalize_by_update_norm(
    scale_factor: float = 1.0, eps: float = 1e-6
) -> GradientTransformation:
    """Scale the updates to global norm ``scale_factor``: ``u · scale_factor / (‖u‖ + eps)``.

    Args:
      scale_factor: the norm of the result.
      eps: added to the norm.

    Returns:
      A stateless transformation.

    >>> t = normalize_by_update_norm(eps=0.0)
    >>> t.update({"w": jnp.array([3.0, 4.0])}, t.init(None))[0]["w"].tolist()
    [0.6000000238418579, 0.800000011920929]
    """

    def update(updates, state, params=None, **extra):
        del params, extra
        factor = num.div(scale_factor, num.add(tree_l2_norm(updates), eps))
        return num.tree_map(lambda u: num.cast_like(num.mul(u, factor), u), updates), state

    return GradientTransformation(init_empty_state, update)


# ----------------------------------------------------------------------------- builders


def stateless(f: Callable[[Any, Any], Any]) -> GradientTransformation:
    """A stateless transformation from ``f(updates, params) -> new_updates``.

    >>> t = stateless(lambda u, p: jax.tree.map(lambda x: -x, u))
    >>> t.update({"w": jnp.array(1.0)}, t.init(None))[0]["w"].item()
    -1.0
    """

    def update(updates, state, params=None, **extra):
        del extra
        return f(updates, params), state

    return GradientTransformation(init_empty_state, update)


def stateless_with_tree_map(f: Callable[[Any, Any], Any]) -> GradientTransformation:
    """A stateless transformation applying ``f(update_leaf, param_leaf)`` leafwise.

    ``param_leaf`` is ``None`` when ``update`` is called without params.

    >>> t = stateless_with_tree_map(lambda g, p: 2 * g)
    >>> t.update({"w": jnp.array(1.0)}, t.init(None))[0]["w"].item()
    2.0
    """

    def update(updates, state, params=None, **extra):
        del extra
        if params is None:
            return num.tree_map(lambda g: f(g, None), updates), state
        return num.tree_map(f, updates, params), state

    return GradientTransformation(init_empty_state, update)


def with_extra_args_support(tx: GradientTransformation) -> GradientTransformation:
    """``tx`` with an ``update`` that accepts (and ignores) keyword extras.

    Every gdopt transformation already accepts them; this wraps transformations from
    elsewhere whose ``update`` takes only ``(updates, state, params)``.

    >>> import gdopt
    >>> t = with_extra_args_support(gdopt.scale(2.0))
    >>> t.update({"w": jnp.array(1.0)}, t.init(None), value=3.0)[0]["w"].item()
    2.0
    """
    inner_update = tx.update

    def update(updates, state, params=None, **extra):
        del extra
        return inner_update(updates, state, params)

    return GradientTransformation(tx.init, update)


# ----------------------------------------------------------------------------- numerics


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


def incremental_update(new_tensors: Any, old_tensors: Any, step_size: Any) -> Any:
    """Polyak averaging: ``step_size · new + (1 - step_size) · old`` leafwise.

    >>> incremental_update({"w": jnp.array(1.0)}, {"w": jnp.array(0.0)}, 0.25)["w"].tolist()
    0.25
    """
    return jax.tree.map(
        lambda new, old: num.add(num.mul(step_size, new), num.mul(num.sub(1.0, step_size), old)),
        new_tensors,
        old_tensors,
    )


def periodic_update(
    new_tensors: Any, old_tensors: Any, steps: jax.Array, update_period: int
) -> Any:
    """``new`` on steps that are multiples of ``update_period``, ``old`` otherwise.

    >>> periodic_update({"w": jnp.array(1.0)}, {"w": jnp.array(0.0)}, jnp.array(4), 2)["w"].tolist()
    1.0
    """
    take_new = steps % update_period == 0
    return jax.tree.map(lambda new, old: num.where(take_new, new, old), new_tensors, old_tensors)


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


def global_norm(updates: Any) -> jax.Array:
    """The Euclidean norm of all leaves of ``updates`` taken as one vector (``optax.global_norm``).

    >>> float(global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])}))
    5.0
    """
    return tree_norm(updates)


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
