"""Pytree utilities: arithmetic, norms, casts and structure checks.

This is the bottom layer of gdopt: it imports nothing from the rest of the package but
the promotion helpers of :mod:`gdopt._numerics` (which import nothing from gdopt), so that
arithmetic between leaves of different dtypes casts explicitly, as standard promotion does,
and also runs under strict promotion. Every function here is pure and works on any pytree
of arrays (``None`` leaves are treated as empty subtrees by ``jax.tree``).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics
from gdopt._numerics import add as _numerics_add
from gdopt._numerics import div as _numerics_div
from gdopt._numerics import follow_sharding, promote
from gdopt._numerics import maximum as _numerics_maximum
from gdopt._numerics import minimum as _numerics_minimum
from gdopt._numerics import mul as _numerics_mul
from gdopt._numerics import sub as _numerics_sub
from gdopt._numerics import where as _numerics_where
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
    "check_array_leaves",
    "is_array_leaf",
    "key_path_str",
    "mask_leaves",
    # optax.tree's names
    "add",
    "add_scale",
    "allclose",
    "batch_shape",
    "bias_correction",
    "cast",
    "cast_like",
    "clip",
    "conj",
    "div",
    "dtype",
    "full_like",
    "get",
    "get_all_with_path",
    "map_params",
    "max",
    "min",
    "mul",
    "norm",
    "ones_like",
    "random_like",
    "real",
    "scale",
    "set",
    "size",
    "split_key_like",
    "sub",
    "sum",
    "unwrap_random_key_data",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "vdot",
    "where",
    "zeros_like",
    "NamedTupleKey",
]

PyTree = Any


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a + b``.

    >>> tree_add({"w": 1.0}, {"w": 2.0})
    {'w': 3.0}
    """
    return jax.tree.map(_numerics_add, a, b)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a - b``."""
    return jax.tree.map(_numerics_sub, a, b)


def tree_mul(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a * b``."""
    return jax.tree.map(_numerics_mul, a, b)


def tree_div(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a / b``."""
    return jax.tree.map(_numerics_div, a, b)


def tree_scale(s: Any, tree: PyTree) -> PyTree:
    """Multiply every leaf by the scalar ``s`` (the leaf's dtype is kept).

    >>> tree_scale(2.0, {"w": jnp.ones(2)})["w"].tolist()
    [2.0, 2.0]
    """
    return jax.tree.map(lambda x: _numerics_mul(s, x).astype(jnp.asarray(x).dtype), tree)


def tree_add_scaled(a: PyTree, s: Any, b: PyTree) -> PyTree:
    """Leafwise ``a + s * b`` (``axpy``), keeping the dtype of ``a``."""
    return jax.tree.map(
        lambda x, y: _numerics_add(x, _numerics_mul(s, y)).astype(jnp.asarray(x).dtype), a, b
    )


def _total(parts: list) -> jax.Array:
    """``sum(parts, float32 zero)``: each partial sum in the dtype standard promotion gives it."""
    total = jnp.zeros((), jnp.float32)
    for part in parts:
        total = _numerics_add(total, part)
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


def is_array_leaf(x: Any) -> bool:
    """Whether ``x`` is an array leaf (a JAX or NumPy array, a number, a tracer, a shape-dtype
    struct), as opposed to what frameworks keep in a model beside its arrays (an activation
    function, a string, a static field).

    >>> is_array_leaf(jnp.ones(2)), is_array_leaf(1.0), is_array_leaf(jax.nn.relu)
    (True, True, False)
    """
    if isinstance(x, (jax.Array, np.ndarray, np.generic, int, float, complex)):
        return True
    return hasattr(x, "shape") and hasattr(x, "dtype")


def check_array_leaves(tree: PyTree, name: str = "params") -> None:
    """Raise ``TypeError`` naming the first leaf of ``tree`` that is not an array.

    Optimizer state (moments, accumulators) is made only for arrays; a model with other
    leaves (an Equinox module's activation functions) must be filtered first.

    >>> check_array_leaves({"w": jnp.zeros(2), "act": "relu"})
    Traceback (most recent call last):
    ...
    TypeError: params['act'] is a str, not an array: ...
    """
    if all(is_array_leaf(x) for x in jax.tree.leaves(tree)):
        return
    for path, x in tree_leaves_with_path(tree):
        if not is_array_leaf(x):
            where = path if path != "<root>" else ""
            raise TypeError(
                f"{name}{where} is a {type(x).__name__}, not an array: optimizer state is made "
                "only for array leaves. Filter the model first and use the same filter for "
                "params and gradients, e.g. opt.init(eqx.filter(model, eqx.is_array)) with "
                "Equinox, or nnx.state(model, nnx.Param) with Flax NNX."
            )


def tree_zeros_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Zeros with the structure and shapes of ``tree`` (``dtype`` overrides the leaves').

    Each leaf of the result has the sharding of the matching leaf of ``tree``, also inside
    ``jax.jit`` on a device mesh (optimizer states follow their parameters). A leaf that is
    not an array raises ``TypeError`` (:func:`check_array_leaves`).
    """
    check_array_leaves(tree)
    return jax.tree.map(lambda x: follow_sharding(jnp.zeros_like(x, dtype=dtype), x), tree)


def tree_ones_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Ones with the structure, shapes and shardings of ``tree``."""
    check_array_leaves(tree)
    return jax.tree.map(lambda x: follow_sharding(jnp.ones_like(x, dtype=dtype), x), tree)


def tree_full_like(tree: PyTree, value: Any, dtype: Any = None) -> PyTree:
    """``value`` everywhere, with the structure, shapes and shardings of ``tree``."""
    check_array_leaves(tree)
    return jax.tree.map(lambda x: follow_sharding(jnp.full_like(x, value, dtype=dtype), x), tree)


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
    return jax.tree.map(lambda x, y: _numerics_where(cond, x, y), a, b)


def tree_all_finite(tree: PyTree) -> jax.Array:
    """A scalar bool: every element of every leaf is finite."""
    parts = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(parts)) if parts else jnp.array(True)


def tree_size(tree: PyTree) -> int:
    """Total number of elements over all leaves."""
    return int(builtins.sum(np.size(x) for x in jax.tree.leaves(tree)))


def tree_bytes(tree: PyTree) -> int:
    """Total bytes held by the leaves (``size * itemsize``)."""
    return int(
        builtins.sum(
            np.size(x) * np.dtype(jnp.asarray(x).dtype).itemsize for x in jax.tree.leaves(tree)
        )
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
        # leaves that are not arrays (an Equinox module's activation functions) have no
        # gradient: gradients hold None there, as the framework's grad filters make them
        a_arrays = jax.tree.map(lambda x: x if is_array_leaf(x) else None, a)
        b_arrays = jax.tree.map(lambda x: x if is_array_leaf(x) else None, b)
        if jax.tree.structure(a_arrays) == jax.tree.structure(b_arrays):
            a, b = a_arrays, b_arrays
            (la, sa), (lb, sb) = jax.tree.flatten(a), jax.tree.flatten(b)
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

    Leaves that are not arrays (:func:`is_array_leaf`: an activation function kept in an
    Equinox module) are not parameters and are skipped: they get no state and no update.
    """
    for path, x in tree_leaves_with_path(tree):
        if not is_array_leaf(x):
            continue
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
    if isinstance(tree, _ParamsMark):
        return []  # map_params' stand-in for the parameters: no leaves to select
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


# ----------------------------------------------------------------------------- optax.tree
#
# The functions of ``optax.tree`` under optax's names and signatures (``gdopt.tree.norm``,
# ``gdopt.tree.get``...); :mod:`gdopt.tree_utils` has them under optax.tree_utils' ``tree_*``
# names. Written from their contracts; numerics with explicit promotion (as standard
# promotion casts).


def add(tree_x: PyTree, tree_y: PyTree, *other_trees: PyTree) -> PyTree:
    """Leafwise sum of two or more trees of the same structure (``optax.tree.add``).

    >>> add({"w": 1.0}, {"w": 2.0}, {"w": 3.0})
    {'w': 6.0}
    """
    out = jax.tree.map(_numerics_add, tree_x, tree_y)
    for other in other_trees:
        out = jax.tree.map(_numerics_add, out, other)
    return out


def sub(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """Leafwise ``tree_x - tree_y`` (``optax.tree.sub``).

    >>> sub({"w": 3.0}, {"w": 1.0})
    {'w': 2.0}
    """
    return jax.tree.map(_numerics_sub, tree_x, tree_y)


def mul(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """Leafwise ``tree_x * tree_y`` (``optax.tree.mul``).

    >>> mul({"w": 3.0}, {"w": 2.0})
    {'w': 6.0}
    """
    return jax.tree.map(_numerics_mul, tree_x, tree_y)


def div(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """Leafwise ``tree_x / tree_y`` (``optax.tree.div``).

    >>> div({"w": 3.0}, {"w": 2.0})
    {'w': 1.5}
    """
    return jax.tree.map(_numerics_div, tree_x, tree_y)


def scale(scalar: Any, tree: PyTree) -> PyTree:
    """Every leaf times ``scalar``, promoted as ``scalar * x`` is (``optax.tree.scale``).

    >>> scale(2.0, {"w": jnp.ones(2)})["w"].tolist()
    [2.0, 2.0]
    """
    return jax.tree.map(lambda x: _numerics_mul(scalar, x), tree)


def add_scale(tree_x: PyTree, scalar: Any, tree_y: PyTree) -> PyTree:
    """Leafwise ``tree_x + scalar * tree_y`` (``optax.tree.add_scale``).

    >>> add_scale({"w": 1.0}, 2.0, {"w": 3.0})
    {'w': 7.0}
    """
    return jax.tree.map(lambda x, y: _numerics_add(x, _numerics_mul(scalar, y)), tree_x, tree_y)


def vdot(tree_x: PyTree, tree_y: PyTree) -> jax.Array:
    """``Σ_leaves vdot(x, y)`` (complex conjugates ``tree_x``), as ``optax.tree.vdot``.

    >>> float(vdot({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, 4.0])}))
    11.0
    """
    parts = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(*promote(x, y)), tree_x, tree_y))
    return _chain_sum(parts)


def _chain_sum(parts: list) -> jax.Array:
    if not parts:
        return jnp.zeros((), jnp.float32)
    total = parts[0]
    for part in parts[1:]:
        total = _numerics_add(total, part)
    return jnp.asarray(total)


def sum(tree: PyTree, associative_reduction: bool = False) -> jax.Array:  # noqa: A001
    """The sum of every element of every leaf (``optax.tree.sum``; 0 for an empty tree).

    Args:
      tree: a pytree of arrays.
      associative_reduction: add the per-leaf sums as a balanced tree instead of one after
        the other (the result may differ in the last bits).

    Returns:
      A scalar.

    >>> float(sum({"a": jnp.ones(3), "b": 2.0}))
    5.0
    """
    parts = [jnp.sum(x) for x in jax.tree.leaves(tree)]
    if not parts:
        return jnp.zeros((), jnp.int32)
    if associative_reduction:
        while len(parts) > 1:
            pairs = [_numerics_add(a, b) for a, b in zip(parts[::2], parts[1::2], strict=False)]
            parts = pairs + ([parts[-1]] if len(parts) % 2 else [])
        return parts[0]
    return _chain_sum(parts)


def max(tree: PyTree) -> jax.Array:  # noqa: A001
    """The largest element over all leaves (``optax.tree.max``; ``-inf`` for an empty tree).

    >>> float(max({"a": jnp.array([1.0, 5.0]), "b": 2.0}))
    5.0
    """
    parts = [jnp.max(x) for x in jax.tree.leaves(tree)]
    if not parts:
        return jnp.asarray(-jnp.inf)
    return jnp.max(jnp.stack(promote(*parts)))


def min(tree: PyTree) -> jax.Array:  # noqa: A001
    """The smallest element over all leaves (``optax.tree.min``; ``inf`` for an empty tree).

    >>> float(min({"a": jnp.array([1.0, 5.0]), "b": 2.0}))
    1.0
    """
    parts = [jnp.min(x) for x in jax.tree.leaves(tree)]
    if not parts:
        return jnp.asarray(jnp.inf)
    return jnp.min(jnp.stack(promote(*parts)))


def norm(tree: PyTree, ord: int | str | float | None = None, squared: bool = False) -> jax.Array:  # noqa: A002
    """A norm of all leaves taken as one vector (``optax.tree.norm``).

    Args:
      tree: a pytree of arrays (complex leaves count by modulus).
      ord: ``None`` or 2 (Euclidean), 1 (sum of moduli) or ``inf`` (largest modulus).
      squared: return the norm squared.

    Returns:
      A scalar.

    >>> float(norm({"a": jnp.array([3.0]), "b": jnp.array([-4.0])}))
    5.0
    >>> float(norm({"a": jnp.array([3.0]), "b": jnp.array([-4.0])}, ord=1))
    7.0
    """
    leaves = jax.tree.leaves(tree)
    if ord is None or ord == 2:
        squares = _chain_sum([jnp.sum(jnp.real(x * jnp.conj(x))) for x in leaves])
        return squares if squared else jnp.sqrt(squares)
    if ord == 1:
        value = _chain_sum([jnp.sum(jnp.abs(x)) for x in leaves])
    elif ord in (jnp.inf, np.inf, "inf"):
        parts = [jnp.max(jnp.abs(x)) for x in leaves if np.size(x)]
        value = jnp.max(jnp.stack(promote(*parts))) if parts else jnp.zeros((), jnp.float32)
    else:
        raise ValueError(f"ord must be None, 1, 2 or inf, got {ord!r}.")
    return jnp.square(value) if squared else value


def size(tree: PyTree) -> int:
    """The number of elements over all leaves (``optax.tree.size``).

    >>> size({"a": jnp.ones((2, 3)), "b": 1.0})
    7
    """
    return tree_size(tree)


def conj(tree: PyTree) -> PyTree:
    """Leafwise complex conjugate (``optax.tree.conj``).

    >>> conj({"z": jnp.array([1 + 2j])})["z"].tolist()
    [(1-2j)]
    """
    return jax.tree.map(jnp.conj, tree)


def real(tree: PyTree) -> PyTree:
    """Leafwise real part (``optax.tree.real``).

    >>> real({"z": jnp.array([1 + 2j])})["z"].tolist()
    [1.0]
    """
    return jax.tree.map(jnp.real, tree)


def zeros_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Zeros shaped like ``tree`` (``optax.tree.zeros_like``), see :func:`tree_zeros_like`.

    >>> zeros_like({"w": jnp.ones(2)})["w"].tolist()
    [0.0, 0.0]
    """
    return tree_zeros_like(tree, dtype)


def ones_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Ones shaped like ``tree`` (``optax.tree.ones_like``).

    >>> ones_like({"w": jnp.zeros(2)})["w"].tolist()
    [1.0, 1.0]
    """
    return tree_ones_like(tree, dtype)


def full_like(tree: PyTree, fill_value: Any, dtype: Any = None) -> PyTree:
    """``fill_value`` shaped like ``tree`` (``optax.tree.full_like``).

    >>> full_like({"w": jnp.zeros(2)}, 3.0)["w"].tolist()
    [3.0, 3.0]
    """
    return tree_full_like(tree, fill_value, dtype)


def cast(tree: PyTree, dtype: Any) -> PyTree:
    """Every leaf cast to ``dtype``; ``None`` keeps ``tree`` (``optax.tree.cast``).

    >>> cast({"w": jnp.ones(1)}, jnp.bfloat16)["w"].dtype
    dtype(bfloat16)
    """
    return tree_cast(tree, dtype)


def cast_like(tree: PyTree, other_tree: PyTree) -> PyTree:
    """Each leaf cast to the dtype of the matching leaf of ``other_tree`` (``optax.tree.cast_like``).

    >>> cast_like({"w": jnp.ones(1)}, {"w": jnp.ones(1, jnp.float16)})["w"].dtype
    dtype('float16')
    """
    return tree_cast_like(tree, other_tree)


def clip(tree: PyTree, min_value: Any = None, max_value: Any = None) -> PyTree:
    """Leafwise ``jnp.clip(x, min_value, max_value)`` (``optax.tree.clip``).

    >>> clip({"w": jnp.array([-2.0, 0.5, 3.0])}, -1.0, 1.0)["w"].tolist()
    [-1.0, 0.5, 1.0]
    """

    def one(x: Any) -> jax.Array:
        if min_value is not None:
            x = _numerics_maximum(x, min_value)
        if max_value is not None:
            x = _numerics_minimum(x, max_value)
        return jnp.asarray(x)

    return jax.tree.map(one, tree)


def where(condition: Any, tree_x: PyTree, tree_y: PyTree) -> PyTree:  # noqa: F811
    """Leafwise ``jnp.where(condition, x, y)`` for a scalar or broadcastable ``condition``.

    >>> where(False, {"w": 1.0}, {"w": 2.0})["w"].tolist()
    2.0
    """
    return tree_where(condition, tree_x, tree_y)


def allclose(
    a: PyTree, b: PyTree, rtol: Any = 1e-05, atol: Any = 1e-08, equal_nan: bool = False
) -> jax.Array:
    """Whether every leaf of ``a`` is close to the matching leaf of ``b`` (``jnp.allclose``).

    >>> bool(allclose({"w": 1.0}, {"w": 1.0 + 1e-9}))
    True
    """
    parts = jax.tree.leaves(
        jax.tree.map(
            lambda x, y: jnp.allclose(*promote(x, y), rtol=rtol, atol=atol, equal_nan=equal_nan),
            a,
            b,
        )
    )
    return jnp.all(jnp.stack(parts)) if parts else jnp.array(True)


def batch_shape(tree: PyTree, shape: tuple[int, ...] = ()) -> PyTree:
    """Each leaf broadcast to leading batch axes ``shape`` (``optax.tree.batch_shape``).

    >>> batch_shape({"w": jnp.ones(2)}, (3,))["w"].shape
    (3, 2)
    """
    return jax.tree.map(lambda x: jnp.broadcast_to(x, tuple(shape) + jnp.shape(x)), tree)


def dtype(tree: PyTree, mixed_dtype_handler: str | None = None) -> Any:
    """The dtype of the leaves of ``tree`` (``optax.tree.dtype``).

    Args:
      tree: a pytree of arrays; an empty tree has JAX's default float dtype.
      mixed_dtype_handler: ``None`` (several dtypes raise ``ValueError``), ``"promote"``
        (their promoted dtype), ``"highest"`` or ``"lowest"`` (the one every other promotes
        to, or that promotes to every other; ``ValueError`` when there is none).

    Returns:
      A NumPy dtype.

    >>> dtype({"a": jnp.ones(1), "b": jnp.ones(1, jnp.bfloat16)}, "promote")
    dtype('float32')
    """
    dtypes = list(dict.fromkeys(jnp.asarray(x).dtype for x in jax.tree.leaves(tree)))
    if not dtypes:
        return jnp.asarray(0.0).dtype
    if len(dtypes) == 1:
        return dtypes[0]
    if mixed_dtype_handler is None:
        raise ValueError(
            f"tree has leaves of several dtypes {[str(d) for d in dtypes]}; pass "
            "mixed_dtype_handler='promote', 'highest' or 'lowest'."
        )
    if mixed_dtype_handler == "promote":
        out = dtypes[0]
        for d in dtypes[1:]:
            out = _numerics.promote_types(out, d)
        return out
    if mixed_dtype_handler in ("highest", "lowest"):
        for d in dtypes:
            if mixed_dtype_handler == "highest":
                ok = all(_numerics.promote_types(o, d) == d for o in dtypes)
            else:
                ok = all(_numerics.promote_types(o, d) == o for o in dtypes)
            if ok:
                return d
        raise ValueError(
            f"the dtypes {[str(d) for d in dtypes]} of tree have no {mixed_dtype_handler} "
            "element (they do not all promote to one another)."
        )
    raise ValueError(
        "mixed_dtype_handler must be None, 'promote', 'highest' or 'lowest', got "
        f"{mixed_dtype_handler!r}."
    )


def bias_correction(moment: PyTree, decay: Any, count: Any) -> PyTree:
    """Adam's bias correction ``m / (1 - decay**count)`` leafwise (``optax.tree.bias_correction``).

    >>> bias_correction({"m": jnp.array([0.1])}, 0.9, jnp.array(1))["m"].round(4).tolist()
    [1.0]
    """
    return jax.tree.map(lambda m: _numerics.bias_correction(m, decay, count), moment)


def update_moment(updates: PyTree, moments: PyTree, decay: Any, order: int) -> PyTree:
    """``(1 - decay) g^order + decay m`` leafwise, ``None`` kept (``optax.tree.update_moment``).

    >>> update_moment({"g": jnp.array([2.0])}, {"g": jnp.array([0.0])}, 0.5, 2)["g"].tolist()
    [2.0]
    """
    return _numerics.tree_map(
        lambda g, m: _numerics.update_moment(g, m, decay, order), updates, moments
    )


def update_infinity_moment(updates: PyTree, moments: PyTree, decay: Any, eps: Any) -> PyTree:
    """``max(|g| + eps, decay m)`` leafwise (``optax.tree.update_infinity_moment``).

    >>> update_infinity_moment({"g": jnp.array([-2.0])}, {"g": jnp.array([1.0])}, 0.5, 0.0)["g"].tolist()
    [2.0]
    """
    return _numerics.tree_map(
        lambda g, m: _numerics_maximum(_numerics_add(jnp.abs(g), eps), _numerics_mul(decay, m)),
        updates,
        moments,
    )


def update_moment_per_elem_norm(updates: PyTree, moments: PyTree, decay: Any, order: int) -> PyTree:
    """``(1 - decay) |g|^order + decay m`` leafwise, real for complex ``g``.

    (``optax.tree.update_moment_per_elem_norm``.)

    >>> update_moment_per_elem_norm({"g": jnp.array([3.0])}, {"g": jnp.array([0.0])}, 0.5, 2)["g"].tolist()
    [4.5]
    """

    def one(g: Any, m: Any) -> jax.Array:
        if jnp.isrealobj(g):
            g_norm = g**order
        else:
            half = order / 2
            g_norm = _numerics.abs_sq(g) ** (int(half) if float(half).is_integer() else half)
        return _numerics_add(
            _numerics_mul(_numerics_sub(1.0, decay), g_norm), _numerics_mul(decay, m)
        )

    return _numerics.tree_map(one, updates, moments)


def random_like(
    rng_key: jax.Array,
    target_tree: PyTree,
    sampler: Callable[..., jax.Array] = jax.random.normal,
    dtype: Any = None,
) -> PyTree:
    """A random tree shaped like ``target_tree``: ``sampler(key_i, shape, dtype)`` per leaf.

    Each leaf gets its own key from ``jax.random.split`` (``optax.tree.random_like``).

    >>> random_like(jax.random.key(0), {"w": jnp.zeros(3)})["w"].shape
    (3,)
    """
    keys = split_key_like(rng_key, target_tree)
    return jax.tree.map(
        lambda k, x: sampler(k, jnp.shape(x), dtype if dtype is not None else jnp.asarray(x).dtype),
        keys,
        target_tree,
    )


def split_key_like(rng_key: jax.Array, target_tree: PyTree) -> PyTree:
    """One key per leaf of ``target_tree``, split from ``rng_key`` (``optax.tree.split_key_like``).

    >>> len(jax.tree.leaves(split_key_like(jax.random.key(0), {"a": 1.0, "b": 2.0})))
    2
    """
    leaves, treedef = jax.tree.flatten(target_tree)
    keys = jax.random.split(rng_key, len(leaves))
    return treedef.unflatten(list(keys))


def unwrap_random_key_data(input_tree: PyTree) -> PyTree:
    """Typed PRNG keys replaced by their raw key data (``optax.tree.unwrap_random_key_data``).

    >>> unwrap_random_key_data({"k": jax.random.key(0)})["k"].dtype
    dtype('uint32')
    """

    def one(x: Any) -> Any:
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(one, input_tree)


class NamedTupleKey(NamedTuple):
    """A key-path entry for a field of a NamedTuple: the tuple's class name and the field.

    :func:`get_all_with_path` puts it where ``jax.tree_util`` would put a ``GetAttrKey``, so a
    filter can tell equal field names of different states apart.

    >>> NamedTupleKey("ScaleByAdamState", "mu").name
    'mu'
    """

    tuple_name: str
    name: str

    def __str__(self) -> str:
        return f"{self.tuple_name}.{self.name}"


def _children(node: Any) -> list[tuple[Any, Any]] | None:
    """``[(key_entry, child)]`` one level below ``node``; ``None`` for a leaf."""
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        fields: tuple[str, ...] = getattr(node, "_fields")  # noqa: B009
        return [(NamedTupleKey(type(node).__name__, f), getattr(node, f)) for f in fields]
    flat, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if len(flat) == 1 and flat[0][0] == () and flat[0][1] is node:
        return None
    return [(path[0], child) for path, child in flat]


def _rebuild(node: Any, children: list) -> Any:
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*children)
    _, treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
    return treedef.unflatten(children)


def _entry_name(entry: Any) -> Any:
    for attr in ("name", "key", "idx"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return None


def _matches(key: Any, path: tuple, value: Any) -> bool:
    if path and _entry_name(path[-1]) == key:
        return True
    return isinstance(value, tuple) and hasattr(value, "_fields") and type(value).__name__ == key


def get_all_with_path(
    tree: PyTree, key: Any, filtering: Callable[[tuple, Any], bool] | None = None
) -> list[tuple[tuple, Any]]:
    """Every ``(key_path, value)`` in ``tree`` whose last key (a dict key, a NamedTuple field)
    or whose NamedTuple class name is ``key`` (``optax.tree.get_all_with_path``).

    Args:
      tree: any pytree (an optimizer state, parameters).
      key: the name looked for.
      filtering: ``filtering(path, value) -> bool`` keeps only some of the matches.

    Returns:
      The matches in traversal order; NamedTuple fields appear as :class:`NamedTupleKey`.

    >>> [v for _, v in get_all_with_path({"a": {"lr": 1.0}, "lr": 2.0}, "lr")]
    [1.0, 2.0]
    """
    found: list[tuple[tuple, Any]] = []

    def walk(node: Any, path: tuple) -> None:
        if _matches(key, path, node) and (filtering is None or filtering(path, node)):
            found.append((path, node))
        children = _children(node)
        for entry, child in children or []:
            walk(child, (*path, entry))

    walk(tree, ())
    return found


def get(
    tree: PyTree,
    key: Any,
    default: Any = None,
    filtering: Callable[[tuple, Any], bool] | None = None,
) -> Any:
    """The one value of ``tree`` named ``key`` (see :func:`get_all_with_path`), or ``default``.

    Raises ``KeyError`` when several values match (narrow them with ``filtering``).

    >>> get({"opt": {"learning_rate": 0.1}}, "learning_rate")
    0.1
    >>> get({"a": 1}, "b", default=0)
    0
    """
    found = get_all_with_path(tree, key, filtering)
    if len(found) > 1:
        paths = ", ".join(jax.tree_util.keystr(p) for p, _ in found)
        raise KeyError(
            f"Found {len(found)} values for key {key!r} at {paths}; pass filtering to choose."
        )
    return found[0][1] if found else default


def set(
    tree: PyTree, filtering: Callable[[tuple, Any], bool] | None = None, /, **kwargs: Any
) -> PyTree:  # noqa: A001
    """A copy of ``tree`` with the values named by the keywords replaced (``optax.tree.set``).

    Every value whose key or NamedTuple class name is a keyword (and that ``filtering``
    accepts) is replaced; a keyword that matches nothing raises ``KeyError``. A callable
    replacement is called on the old value.

    >>> set({"opt": {"learning_rate": 0.1}, "w": 1.0}, learning_rate=0.5)
    {'opt': {'learning_rate': 0.5}, 'w': 1.0}
    """
    missing = [k for k in kwargs if not get_all_with_path(tree, k, filtering)]
    if missing:
        raise KeyError(f"Found no values for keys {missing} in tree.")

    def walk(node: Any, path: tuple) -> Any:
        for k, value in kwargs.items():
            if _matches(k, path, node) and (filtering is None or filtering(path, node)):
                return value(node) if callable(value) else value
        children = _children(node)
        if children is None:
            return node
        return _rebuild(node, [walk(child, (*path, e)) for e, child in children])

    return walk(tree, ())


@jax.tree_util.register_pytree_node_class
class _ParamsMark:
    """Stands for the parameters in a state built by :func:`map_params` (a node with no
    leaves: every ``jax.tree.map`` over the parameters gives another one)."""

    def tree_flatten(self) -> tuple[tuple, None]:
        return (), None

    @classmethod
    def tree_unflatten(cls, aux: Any, children: Any) -> _ParamsMark:
        del aux, children
        return cls()


def _is_mark(x: Any) -> bool:
    return isinstance(x, _ParamsMark)


def map_params(
    initable: Callable[[PyTree], PyTree] | Any,
    f: Callable[..., Any],
    state: PyTree,
    /,
    *rest: Any,
    transform_non_params: Callable[..., Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> PyTree:
    """Map ``f`` over every copy of the parameters inside an optimizer state
    (``optax.tree.map_params``, ``optax.tree_utils.tree_map_params``).

    An optimizer state holds trees shaped like the parameters (Adam's ``mu`` and ``nu``) next
    to other values (step counts, hyperparameters). Which parts are which is found by
    calling the optimizer's ``init`` on a stand-in for the parameters that has no leaves:
    the parts ``init`` builds from the parameters come out as the stand-in. In each such part
    ``f(leaf, *rest_leaves)`` replaces every leaf (``jax.tree.map(f, part, *rest,
    is_leaf=is_leaf)``); every other part is replaced by ``transform_non_params(part)``, or
    kept when that is ``None``. Use it to cast the moments (``bfloat16`` state), to build
    the state's sharding specs from the parameters', or to reset moments.

    Masks (``masked``, ``freeze``), ``partition`` by labels (a pytree or a function) are
    handled; an optimizer whose ``init`` needs the parameters' own structure (a packed
    optimizer) raises a ``ValueError`` saying so.

    Args:
      initable: the optimizer (anything with ``init``) or an ``init`` function.
      f: ``f(leaf, *rest_leaves) -> new leaf``, applied to the parameter-shaped parts.
      state: a state of that optimizer.
      *rest: trees shaped like the parameters whose leaves are passed to ``f``.
      transform_non_params: applied to each leaf of the state that is not part of a copy of
        the parameters (``None``: those are kept as they are).
      is_leaf: passed to ``jax.tree.map`` over the parameter-shaped parts (to stop at masked
        subtrees, say).

    Returns:
      A pytree with the state's structure where ``f`` and ``transform_non_params`` decided
      the leaves.

    Raises:
      TypeError: ``initable`` is neither callable nor has an ``init``.
      ValueError: ``state`` is not shaped like the state ``initable`` makes (the message
        gives JAX's description of the difference), or ``init`` needs the parameters.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.adam(1e-3)
    >>> params = {"w": jnp.ones(3)}
    >>> state = map_params(opt, lambda x: x.astype(jnp.bfloat16), opt.init(params))
    >>> state[0].mu["w"].dtype, state[0].count.dtype
    (dtype(bfloat16), dtype('int32'))
    >>> specs = map_params(opt, lambda _, s: s, opt.init(params), {"w": "data"},
    ...                    transform_non_params=lambda _: None)
    >>> specs[0].nu, specs[0].count
    ({'w': 'data'}, None)
    """
    init = getattr(initable, "init", initable)
    if not callable(init):
        raise TypeError(
            "map_params' initable must be an optimizer (with init) or an init function, got "
            f"{type(initable).__name__}."
        )
    try:
        marked = init(_ParamsMark())
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ValueError(
            "map_params cannot tell which parts of this optimizer's state are shaped like the "
            "parameters: its init needs the parameters' own structure (a packed optimizer's "
            "does); map over the state with jax.tree.map instead. "
            f"init said: {e}"
        ) from None

    def one(mark: Any, value: Any) -> Any:
        if isinstance(mark, _ParamsMark):
            return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
        if transform_non_params is not None:
            return transform_non_params(value)
        return value

    try:
        return jax.tree.map(one, marked, state, is_leaf=_is_mark)
    except ValueError as e:
        raise ValueError(
            f"map_params' state is not a state of this optimizer (its init makes another "
            f"structure): {e}"
        ) from None
