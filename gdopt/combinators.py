"""Combinators: build one gradient transformation out of several.

``chain`` and ``named_chain`` apply transformations in sequence; ``masked`` applies one to a
subset of the parameters; ``partition`` (alias ``multi_transform``) gives each group of
parameters its own transformation; ``freeze`` and ``selective_transform`` keep some
parameters fixed.

Parameter subsets are given the same way everywhere: a pytree with the params' structure (or
a prefix of it, a value at a node covering its whole subtree) or a function ``params -> such a
pytree``. A transformation applied to a subset sees ``None`` at the other leaves, so it keeps no
state for them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax

from gdopt._traits import (
    Traits,
    all_packable,
    check_transform,
    combined_key,
    traits_of,
    with_traits,
)
from gdopt.base import GradientTransformation, set_to_zero
from gdopt.tree import check_same_structure, mask_leaves, tree_leaves_with_path

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
    labels = param_labels(tree) if callable(param_labels) else param_labels
    _, treedef = jax.tree.flatten(tree, is_leaf=_is_none)
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
