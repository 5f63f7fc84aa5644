"""Combinators: build one gradient transformation out of several.

``chain`` and ``named_chain`` apply transformations in sequence; ``masked`` applies one to a
subset of the parameters; ``partition`` (alias ``multi_transform``) gives each group of
parameters its own transformation; ``freeze`` and ``selective_transform`` keep some
parameters fixed. optax's other combinators live here too: the conditional ones
(``conditionally_transform``, ``conditionally_mask``, with the ``MultiSteps`` skip predicates
``skip_not_finite`` and ``skip_large_updates``), ``flatten``, ``apply_every``, and the
builders of a transformation from a function (``stateless``, ``stateless_with_tree_map``,
``with_extra_args_support``).

Parameter subsets are given the same way everywhere: a pytree with the params' structure (or
a prefix of it, a value at a node covering its whole subtree) or a function ``params -> such a
pytree``. A transformation applied to a subset sees ``None`` at the other leaves, so it keeps no
state for them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Annotated, Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gdopt import _control as control
from gdopt import _numerics as num
from gdopt._traits import (
    Traits,
    all_packable,
    check_transform,
    combined_key,
    traits_of,
    transform,
    with_traits,
    wrapper,
)
from gdopt._validation import Integer
from gdopt.base import GradientTransformation, init_empty_state, set_to_zero
from gdopt.tree import (
    check_same_structure,
    mask_leaves,
    tree_l2_norm,
    tree_leaves_with_path,
    tree_zeros_like,
)

__all__ = [
    "chain",
    "named_chain",
    "masked",
    "MaskedState",
    "partition",
    "multi_transform",
    "PartitionState",
    "freeze",
    "selective_transform",
    "conditionally_transform",
    "ConditionallyTransformState",
    "conditionally_mask",
    "ConditionallyMaskState",
    "skip_not_finite",
    "skip_large_updates",
    "flatten",
    "apply_every",
    "ApplyEvery",
    "stateless",
    "stateless_with_tree_map",
    "with_extra_args_support",
]

_is_none = lambda x: x is None  # noqa: E731


def _select(tree: Any, flags: list[bool]) -> Any:
    """``tree`` with the leaves whose flag is False replaced by ``None``."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_none)
    return treedef.unflatten([x if f else None for x, f in zip(leaves, flags, strict=True)])


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
        check_transform(t, f"chain argument {i}")

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

    traits = Traits(
        packable=all_packable(transforms), key=lambda: combined_key("chain", transforms)
    )
    return with_traits(GradientTransformation(init, update), traits)


def named_chain(*transforms: tuple[str, GradientTransformation]) -> GradientTransformation:
    """Like :func:`chain`, with the state a dict ``{name: state}`` instead of a tuple.

    Named states are easier to read and to edit (``state["adam"]``) than positions.

    Args:
      *transforms: ``(name, transformation)`` pairs, first applied first; names are unique
        strings.

    Returns:
      A transformation whose state is ``{name: state of that transformation}``.

    Raises:
      TypeError: when an argument is not a ``(str, transformation)`` pair.
      ValueError: when a name repeats.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = named_chain(("clip", gdopt.clip(1.0)), ("sgd", gdopt.sgd(0.1)))
    >>> p = {"w": jnp.array(0.0)}
    >>> state = opt.init(p)
    >>> sorted(state)
    ['clip', 'sgd']
    >>> u, state = opt.update({"w": jnp.array(5.0)}, state, p)
    >>> round(float(u["w"]), 4)
    -0.1
    """
    names = []
    for i, pair in enumerate(transforms):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError(
                f"named_chain argument {i} must be a (name, transformation) pair with a str "
                f"name, got {pair!r}."
            )
        check_transform(pair[1], f"named_chain argument {i} ({pair[0]!r})")
        names.append(pair[0])
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"named_chain names must be unique; {repeated} repeat(s) in {names}.")

    def init(params):
        return {name: t.init(params) for name, t in transforms}

    def update(updates, state, params=None, **extra):
        missing = [n for n in names if n not in state] if isinstance(state, Mapping) else names
        if missing:
            raise ValueError(
                f"named_chain state has no entry for {missing}; pass the state that this "
                "named_chain's init returned."
            )
        new_state = {}
        for name, t in transforms:
            updates, new_state[name] = t.update(updates, state[name], params, **extra)
        return updates, new_state

    parts = [t for _, t in transforms]
    traits = Traits(
        packable=all_packable(parts), key=lambda: combined_key("named_chain", parts, tuple(names))
    )
    return with_traits(GradientTransformation(init, update), traits)


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

    Returns:
      A transformation whose state is a :class:`MaskedState`.

    Raises:
      ValueError: when the mask's structure differs from the params' (the message names the
        key path); TypeError when it holds something other than bools.

    >>> import gdopt, jax.numpy as jnp
    >>> t = masked(gdopt.scale(10.0), {"w": True, "b": False})
    >>> p = {"w": jnp.array(1.0), "b": jnp.array(1.0)}
    >>> u, _ = t.update(p, t.init(p), p)
    >>> (float(u["w"]), float(u["b"]))
    (10.0, 1.0)
    """
    check_transform(inner, "masked's inner")

    def init(params):
        flags = mask_leaves(mask, params)
        return MaskedState(inner_state=inner.init(_select(params, flags)))

    def update(updates, state, params=None, **extra):
        flags = mask_leaves(mask, params if params is not None else updates)
        sub_params = None if params is None else _select(params, flags)
        new_sub, inner_state = inner.update(
            _select(updates, flags), state.inner_state, sub_params, **extra
        )
        leaves, treedef = jax.tree.flatten(updates, is_leaf=lambda x: x is None)
        sub_leaves = treedef.flatten_up_to(new_sub)
        out = [n if f else u for u, n, f in zip(leaves, sub_leaves, flags, strict=False)]
        return treedef.unflatten(out), MaskedState(inner_state=inner_state)

    # a mask that selects leaves makes the rule depend on how the parameters are split
    packable = isinstance(mask, bool) and traits_of(inner).packable
    traits = Traits(packable=packable, key=lambda: combined_key("masked", [inner], mask))
    return with_traits(GradientTransformation(init, update), traits)


class PartitionState(NamedTuple):
    """``{label: state}``: each group's state, built on that group's parameters only."""

    inner_states: dict


def _resolve_labels(param_labels: Any, tree: Any, transforms: Mapping) -> list:
    """One label per leaf of ``tree`` (``None`` leaves included), each a key of transforms."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_none)
    if not leaves:  # nothing to label (e.g. map_params' stand-in for the parameters)
        return []
    labels = param_labels(tree) if callable(param_labels) else param_labels
    try:
        full = jax.tree.map(
            lambda lab, sub: jax.tree.map(lambda _: lab, sub, is_leaf=_is_none),
            labels,
            tree,
            is_leaf=_is_none,
        )
        flat = treedef.flatten_up_to(full)
    except (ValueError, TypeError):
        check_same_structure(labels, tree, ("param_labels", "params"), check_shapes=False)
        raise
    known = ", ".join(sorted(repr(k) for k in transforms))
    for (path, _), label in zip(tree_leaves_with_path(tree, is_leaf=_is_none), flat, strict=True):
        try:
            hash(label)
        except TypeError:
            raise TypeError(
                f"param_labels gives the parameter at {path} the label {label!r}, which is not "
                f"hashable; labels must be keys of transforms ({known})."
            ) from None
        if label not in transforms:
            raise ValueError(
                f"param_labels gives the parameter at {path} the label {label!r}, which has no "
                f"transformation; transforms has the labels {known}. Add a transformation for "
                f"{label!r} or fix the label."
            )
    return flat


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Any | Callable[[Any], Any],
) -> GradientTransformation:
    """Parameter groups: apply ``transforms[label]`` to the parameters labelled ``label``.

    Each transformation sees only its group's leaves (``None`` elsewhere), so its state holds
    memory for its own parameters only; every parameter must have a label with a
    transformation. A label with no parameters is allowed (its state is empty).

    Args:
      transforms: ``{label: transformation}``.
      param_labels: a pytree of labels with the params' structure (or a prefix of it: a
        label at a node covers its subtree), or a function ``params -> such a pytree``.

    Returns:
      A transformation whose state is a :class:`PartitionState`.

    Raises:
      ValueError: when the labels' structure differs from the params' or a label has no
        transformation (the message names the key path and the label).

    >>> import gdopt, jax.numpy as jnp
    >>> opt = partition(
    ...     {"fast": gdopt.sgd(1.0), "slow": gdopt.sgd(0.1)},
    ...     {"w": "fast", "b": "slow"},
    ... )
    >>> p = {"w": jnp.array(0.0), "b": jnp.array(0.0)}
    >>> u, _ = opt.update({"w": jnp.array(1.0), "b": jnp.array(1.0)}, opt.init(p), p)
    >>> (round(float(u["w"]), 4), round(float(u["b"]), 4))
    (-1.0, -0.1)
    """
    if not isinstance(transforms, Mapping):
        raise TypeError(
            f"partition's transforms must be a mapping {{label: transformation}}, got "
            f"{type(transforms).__name__}."
        )
    for label, t in transforms.items():
        check_transform(t, f"partition's transforms[{label!r}]")

    def init(params):
        labels = _resolve_labels(param_labels, params, transforms)
        return PartitionState(
            inner_states={
                k: t.init(_select(params, [lab == k for lab in labels]))
                for k, t in transforms.items()
            }
        )

    def update(updates, state, params=None, **extra):
        labels = _resolve_labels(
            param_labels, params if params is not None else updates, transforms
        )
        leaves, treedef = jax.tree.flatten(updates, is_leaf=_is_none)
        if len(leaves) != len(labels):
            check_same_structure(updates, params, ("updates", "params"), check_shapes=False)
        missing = [k for k in transforms if k not in state.inner_states]
        if missing:
            raise ValueError(
                f"partition state has no entry for the label(s) {missing}; pass the state that "
                "this partition's init returned."
            )
        out = list(leaves)
        new_states = {}
        for k, t in transforms.items():
            flags = [lab == k for lab in labels]
            sub_params = None if params is None else _select(params, flags)
            sub, new_states[k] = t.update(
                _select(updates, flags), state.inner_states[k], sub_params, **extra
            )
            sub_leaves = treedef.flatten_up_to(sub)
            out = [n if f else o for o, n, f in zip(out, sub_leaves, flags, strict=True)]
        return treedef.unflatten(out), PartitionState(inner_states=new_states)

    labels = tuple(transforms)
    parts = [transforms[k] for k in labels]
    key = lambda: combined_key("partition", parts, labels, param_labels)  # noqa: E731
    return with_traits(GradientTransformation(init, update), Traits(packable=False, key=key))


def multi_transform(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Any | Callable[[Any], Any],
) -> GradientTransformation:
    """The same as :func:`partition` (optax's older name for it).

    >>> import gdopt, jax.numpy as jnp
    >>> opt = multi_transform({"a": gdopt.sgd(1.0)}, "a")
    >>> p = {"w": jnp.array(0.0)}
    >>> round(float(opt.update({"w": jnp.array(2.0)}, opt.init(p), p)[0]["w"]), 4)
    -2.0
    """
    return partition(transforms, param_labels)


def freeze(mask: Any) -> GradientTransformation:
    """Zero the updates of the parameters selected by ``mask`` (they do not move).

    ``freeze`` itself keeps no state. In ``chain(freeze(mask), opt)`` the optimizer ``opt``
    still keeps state for the frozen leaves; to give them no optimizer state at all, use
    :func:`selective_transform` (or :func:`partition` with ``set_to_zero()``).

    Args:
      mask: which parameters to freeze: a pytree of bools with the params' structure (or a
        prefix of it), or a function ``params -> such a tree``. ``True`` means frozen.

    Returns:
      A stateless transformation (its state is a :class:`MaskedState` with no arrays).

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.chain(freeze({"w": True, "b": False}), gdopt.sgd(1.0))
    >>> p = {"w": jnp.array(0.0), "b": jnp.array(0.0)}
    >>> u, _ = opt.update({"w": jnp.array(1.0), "b": jnp.array(1.0)}, opt.init(p), p)
    >>> (float(u["w"]), float(u["b"]))
    (0.0, -1.0)
    """
    return masked(set_to_zero(), mask)


def selective_transform(
    optimizer: GradientTransformation, *, freeze_mask: Any
) -> GradientTransformation:
    """Run ``optimizer`` on the trainable parameters only; the frozen ones get zero updates.

    The optimizer's state is built on the trainable parameters alone, so frozen parameters
    cost no optimizer memory. This is ``partition({"train": optimizer, "freeze":
    set_to_zero()}, labels)``.

    Args:
      optimizer: the transformation for the trainable parameters.
      freeze_mask: which parameters to freeze (``True`` = frozen): a pytree of bools with the
        params' structure (or a prefix of it), or a function ``params -> such a tree``.

    Returns:
      A transformation whose state is a :class:`PartitionState` with the labels ``"train"``
      and ``"freeze"``.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> opt = selective_transform(gdopt.adam(0.1), freeze_mask={"w": False, "emb": True})
    >>> p = {"w": jnp.zeros(3), "emb": jnp.zeros(1000)}
    >>> size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
    >>> size(opt.init(p)) == size(gdopt.adam(0.1).init({"w": p["w"]}))   # nothing for emb
    True
    """
    check_transform(optimizer, "selective_transform's optimizer")

    def labels(params):
        flags = mask_leaves(freeze_mask, params, "freeze_mask")
        treedef = jax.tree.structure(params, is_leaf=_is_none)
        return treedef.unflatten(["freeze" if f else "train" for f in flags])

    return partition({"train": optimizer, "freeze": set_to_zero()}, labels)


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
