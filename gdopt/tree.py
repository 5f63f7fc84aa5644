"""Pytree utilities: arithmetic, norms, casts and structure checks.

This is the bottom layer of gdopt: it imports nothing from the rest of the package but
the promotion helpers of :mod:`gdopt._numerics` (which import nothing from gdopt), so that
arithmetic between leaves of different dtypes casts explicitly, as standard promotion does,
and also runs under strict promotion. Every function here is pure and works on any pytree
of arrays (``None`` leaves are treated as empty subtrees by ``jax.tree``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdopt._numerics import add, div, mul, promote, sub, where
from gdopt._validation import is_tracer

__all__ = [
    "tree_add",
    "tree_sub",
    "tree_mul",
    "tree_div",
    "tree_scale",
    "tree_add_scaled",
    "tree_vdot",
    "tree_sum",
    "tree_l2_norm",
    "tree_linf_norm",
    "tree_zeros_like",
    "tree_ones_like",
    "tree_full_like",
    "tree_cast",
    "tree_cast_like",
    "tree_where",
    "tree_all_finite",
    "tree_size",
    "tree_bytes",
    "tree_leaves_with_path",
    "check_same_structure",
    "check_float_leaves",
    "key_path_str",
    "mask_leaves",
]

PyTree = Any


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a + b``.

    >>> tree_add({"w": 1.0}, {"w": 2.0})
    {'w': 3.0}
    """
    return jax.tree.map(add, a, b)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a - b``."""
    return jax.tree.map(sub, a, b)


def tree_mul(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a * b``."""
    return jax.tree.map(mul, a, b)


def tree_div(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a / b``."""
    return jax.tree.map(div, a, b)


def tree_scale(s: Any, tree: PyTree) -> PyTree:
    """Multiply every leaf by the scalar ``s`` (the leaf's dtype is kept).

    >>> tree_scale(2.0, {"w": jnp.ones(2)})["w"].tolist()
    [2.0, 2.0]
    """
    return jax.tree.map(lambda x: mul(s, x).astype(jnp.asarray(x).dtype), tree)


def tree_add_scaled(a: PyTree, s: Any, b: PyTree) -> PyTree:
    """Leafwise ``a + s * b`` (``axpy``), keeping the dtype of ``a``."""
    return jax.tree.map(lambda x, y: add(x, mul(s, y)).astype(jnp.asarray(x).dtype), a, b)


def _total(parts: list) -> jax.Array:
    """``sum(parts, float32 zero)``: each partial sum in the dtype standard promotion gives it."""
    total = jnp.zeros((), jnp.float32)
    for part in parts:
        total = add(total, part)
    return total


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """Inner product ``sum_i <a_i, b_i>`` over all leaves (real part for complex)."""
    parts = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(*promote(x, y)).real, a, b))
    return _total(parts)


def tree_sum(tree: PyTree) -> jax.Array:
    """Sum of all elements of all leaves."""
    return _total([jnp.sum(x) for x in jax.tree.leaves(tree)])


def tree_l2_norm(tree: PyTree, squared: bool = False) -> jax.Array:
    """Global Euclidean norm of all leaves taken as one vector.

    >>> float(tree_l2_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])}))
    5.0
    """
    total = _total([jnp.sum(jnp.real(x * jnp.conj(x))) for x in jax.tree.leaves(tree)])
    return total if squared else jnp.sqrt(total)


def tree_linf_norm(tree: PyTree) -> jax.Array:
    """Largest absolute value over all leaves (0 for an empty tree)."""
    parts = [jnp.max(jnp.abs(x)) for x in jax.tree.leaves(tree) if jnp.size(x)]
    return jnp.max(jnp.stack(promote(*parts))) if parts else jnp.zeros((), jnp.float32)


def tree_zeros_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Zeros with the structure and shapes of ``tree`` (``dtype`` overrides the leaves')."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def tree_ones_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Ones with the structure and shapes of ``tree``."""
    return jax.tree.map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def tree_full_like(tree: PyTree, value: Any, dtype: Any = None) -> PyTree:
    """``value`` everywhere, with the structure and shapes of ``tree``."""
    return jax.tree.map(lambda x: jnp.full_like(x, value, dtype=dtype), tree)


def tree_cast(tree: PyTree, dtype: Any) -> PyTree:
    """Cast every leaf to ``dtype``; ``dtype=None`` returns ``tree`` unchanged."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), tree)


def tree_cast_like(tree: PyTree, like: PyTree) -> PyTree:
    """Cast each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, y: jnp.asarray(x).astype(jnp.asarray(y).dtype), tree, like)


def tree_where(cond: Any, a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``jnp.where(cond, a, b)`` for a scalar ``cond``."""
    return jax.tree.map(lambda x, y: where(cond, x, y), a, b)


def tree_all_finite(tree: PyTree) -> jax.Array:
    """A scalar bool: every element of every leaf is finite."""
    parts = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(parts)) if parts else jnp.array(True)


def tree_size(tree: PyTree) -> int:
    """Total number of elements over all leaves."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def tree_bytes(tree: PyTree) -> int:
    """Total bytes held by the leaves (``size * itemsize``)."""
    return int(
        sum(np.size(x) * np.dtype(jnp.asarray(x).dtype).itemsize for x in jax.tree.leaves(tree))
    )


def key_path_str(path: Sequence[Any]) -> str:
    """A key path as a person reads it, e.g. ``['layers'][0]['w']``; ``<root>`` if empty."""
    s = jax.tree_util.keystr(tuple(path))
    return s if s else "<root>"


def tree_leaves_with_path(tree: PyTree, is_leaf: Callable[[Any], bool] | None = None):
    """``[(key_path_string, leaf), ...]`` in flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return [(key_path_str(p), x) for p, x in flat]


def _describe(tree: PyTree) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    return {key_path_str(p): x for p, x in flat}


def check_same_structure(
    a: PyTree,
    b: PyTree,
    names: tuple[str, str] = ("grads", "params"),
    check_shapes: bool = True,
) -> None:
    """Raise ``ValueError`` naming the first key path where ``a`` and ``b`` differ.

    Args:
      a, b: the two pytrees.
      names: how to call them in the message (e.g. ``("grads", "params")``).
      check_shapes: also compare leaf shapes.

    >>> check_same_structure({"w": 1.0}, {"v": 1.0})
    Traceback (most recent call last):
    ...
    ValueError: grads and params differ in structure: grads has ['w'] where params has no such leaf ...
    """
    la, sa = jax.tree.flatten(a)
    lb, sb = jax.tree.flatten(b)
    na, nb = names
    if sa != sb:
        da, db = _describe(a), _describe(b)
        for key in da:
            if key not in db:
                raise ValueError(
                    f"{na} and {nb} differ in structure: {na} has {key} where {nb} has no "
                    f"such leaf (first difference; {na} has {len(da)} leaves, {nb} has "
                    f"{len(db)}). Pass {na} with exactly the structure of {nb}."
                )
        for key in db:
            if key not in da:
                raise ValueError(
                    f"{na} and {nb} differ in structure: {nb} has {key} where {na} has no "
                    f"such leaf (first difference; {na} has {len(da)} leaves, {nb} has "
                    f"{len(db)}). Pass {na} with exactly the structure of {nb}."
                )
        raise ValueError(
            f"{na} and {nb} differ in container types with the same key paths:\n"
            f"  {na}: {sa}\n  {nb}: {sb}"
        )
    if not check_shapes:
        return
    for i, (x, y) in enumerate(zip(la, lb, strict=True)):
        if np.shape(x) != np.shape(y):
            path = tree_leaves_with_path(a)[i][0]
            raise ValueError(
                f"{na} and {nb} differ in shape at {path}: {na} has shape "
                f"{np.shape(x)}, {nb} has shape {np.shape(y)}."
            )


def check_float_leaves(tree: PyTree, name: str = "params") -> None:
    """Raise ``TypeError`` naming the first leaf of ``tree`` that is not floating point.

    Gradient-based optimizers move parameters continuously, so integer and boolean leaves
    cannot be parameters (put them in a separate, non-trainable pytree).

    >>> check_float_leaves({"w": jnp.zeros(2), "n": jnp.array(3)})
    Traceback (most recent call last):
    ...
    TypeError: params['n'] has dtype int32; parameters must be floating point ...
    """
    for path, x in tree_leaves_with_path(tree):
        dtype = jnp.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating)):
            raise TypeError(
                f"{name}{path if path != '<root>' else ''} has dtype {dtype}; parameters must be "
                "floating point (float16/bfloat16/float32/float64 or complex). Keep integer and "
                "boolean values out of the parameter pytree."
            )


def mask_leaves(mask: Any, tree: PyTree, name: str = "mask") -> list[bool]:
    """Resolve a mask to one Python bool per leaf of ``tree`` (in flattening order).

    Args:
      mask: ``None`` (every leaf), a bool, a pytree of bools with the structure of ``tree``
        or a prefix of it (a bool at a node covers its whole subtree), or a function
        ``tree -> such a pytree``.
      tree: the parameters (``None`` leaves count as leaves).
      name: the argument's name for error messages.

    Returns:
      A list of bools, one per leaf of ``tree`` flattened with ``None`` as a leaf.

    >>> mask_leaves({"w": True, "b": False}, {"b": 0.0, "w": 1.0})
    [False, True]
    >>> mask_leaves(lambda p: {"w": True, "b": False}, {"b": 0.0, "w": 1.0})
    [False, True]
    """
    is_none = lambda x: x is None  # noqa: E731
    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_none)
    if callable(mask):
        mask = mask(tree)
    if mask is None:
        return [True] * len(leaves)
    if isinstance(mask, (bool, np.bool_)):
        return [bool(mask)] * len(leaves)
    try:
        full = jax.tree.map(
            lambda m, sub: jax.tree.map(lambda _: m, sub, is_leaf=is_none),
            mask,
            tree,
            is_leaf=is_none,
        )
        flags = treedef.flatten_up_to(full)
    except ValueError:
        check_same_structure(mask, tree, (name, "params"), check_shapes=False)
        raise
    out = []
    for (path, _), f in zip(tree_leaves_with_path(tree, is_leaf=is_none), flags, strict=False):
        if is_tracer(f) or not isinstance(f, (bool, np.bool_)):
            if not (hasattr(f, "dtype") and np.shape(f) == () and f.dtype == bool):
                raise TypeError(
                    f"{name} must hold Python bools; at {path} it holds {f!r}. Build the mask "
                    "from the structure of the params, not from their values."
                )
        out.append(bool(f))
    return out
