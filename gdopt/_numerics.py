"""Numerics shared by the transforms: moments, bias correction, norms, leaf maps and casts.

One helper per job. Everything here is pure, works inside ``jit``/``vmap``/``grad``, and
compiles nothing per step when called eagerly (exponents that change with the step count are
floats, so no ``integer_pow`` kernel is specialised for each count).

The public ones are re-exported at the top level of :mod:`gdopt` (``gdopt.update_moment``,
``gdopt.bias_correction``, ``gdopt.abs_sq``, ``gdopt.map_leaves``, ``gdopt.safe_increment``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

__all__ = [
    "abs_sq",
    "update_moment",
    "bias_correction",
    "bias_correction_factor",
    "safe_increment",
    "map_leaves",
    "tree_map",
    "cast_to",
    "cast_like",
    "cast_tree_like",
    "as_float32",
    "compute_dtype",
    "scalar_dtype",
    "safe_norm",
    "safe_rms",
    "floor_norm",
    "sum_of_squares",
    "global_norm",
    "is_none",
    "promote_types",
    "result_dtype",
    "promote",
    "weak_float",
    "add",
    "sub",
    "mul",
    "div",
    "maximum",
    "minimum",
    "where",
    "clip",
    "follow_sharding",
    "second_moment_dtype",
]


def is_none(x: Any) -> bool:
    """``x is None`` (the ``is_leaf`` of maps that keep ``None`` leaves)."""
    return x is None


# ----------------------------------------------------------------------------- leaf maps


def tree_map(fn: Callable[..., Any], first: Any, *rest: Any) -> Any:
    """``jax.tree.map`` over ``first`` and ``rest`` that passes ``None`` leaves of ``first``
    through unchanged (masked or frozen parameters have ``None`` updates and no state).

    >>> tree_map(lambda x: x + 1, {"a": 1.0, "b": None})
    {'a': 2.0, 'b': None}
    """
    leaves, treedef = jax.tree.flatten(first, is_leaf=is_none)
    others = [treedef.flatten_up_to(t) for t in rest]
    return treedef.unflatten(
        [None if xs[0] is None else fn(*xs) for xs in zip(leaves, *others, strict=True)]
    )


def map_leaves(fn: Callable[..., tuple], n_out: int, first: Any, *rest: Any) -> tuple:
    """Apply ``fn`` leafwise and split its tuple of ``n_out`` results into ``n_out`` trees.

    ``rest`` must have the structure of ``first``. One per-leaf function computes the update
    and every new state buffer together, as an update rule is written on paper (and XLA can
    fuse them). Where ``first`` has a ``None`` leaf (a masked or frozen parameter) the
    outputs are ``None`` followed by the matching leaves of ``rest`` unchanged (its state, if
    it has one, passes through).

    >>> u, m = map_leaves(lambda g, m: (g + m, 2 * m), 2, {"w": 1.0}, {"w": 3.0})
    >>> u, m
    ({'w': 4.0}, {'w': 6.0})
    """
    leaves, treedef = jax.tree.flatten(first, is_leaf=is_none)
    others = [treedef.flatten_up_to(t) for t in rest]
    outs: list[list[Any]] = [[] for _ in range(n_out)]
    for xs in zip(leaves, *others, strict=True):
        if xs[0] is None:  # no update: None, then the state leaves unchanged (None if absent)
            res = (None, *xs[1:n_out], *([None] * (n_out - len(xs))))
        else:
            res = fn(*xs)
        for o, r in zip(outs, res, strict=True):
            o.append(r)
    return tuple(treedef.unflatten(o) for o in outs)


# ----------------------------------------------------------------------------- placement


def _on_mesh(x: Any) -> bool:
    """``x`` is a traced floating-point array (not a scalar) of a trace on a device mesh."""
    if not isinstance(x, jax.core.Tracer) or not np.ndim(x):
        return False
    aval = jax.typeof(x)
    mesh = getattr(getattr(aval, "sharding", None), "mesh", None)
    return mesh is not None and not mesh.empty and jnp.issubdtype(aval.dtype, jnp.inexact)


def follow_mesh(tree: Any, params: Any) -> Any:
    """``tree`` (values that do not depend on the parameters: hyperparameters, counts)
    computed on the device mesh of ``params`` inside a trace.

    A state none of whose arrays depends on the parameters (``sgd``'s hyperparameters) would
    make ``jax.jit(opt.init)`` drop the parameters and run on the default device. Each leaf
    is therefore selected by an always-true scalar computed from the first parameter on a
    mesh (``all(isfinite | ~isfinite)``, one reduction at init): the values are unchanged and
    replicated on that mesh. Outside such a trace ``tree`` is returned as it is.

    >>> follow_mesh({"lr": jnp.float32(0.1)}, {"w": jnp.ones(2)})["lr"].tolist()
    0.10000000149011612
    """
    anchor = next((p for p in jax.tree.leaves(params) if _on_mesh(p)), None)
    if anchor is None:
        return tree
    finite = jnp.isfinite(anchor)
    always = jnp.all(jnp.logical_or(finite, jnp.logical_not(finite)))

    def tie(x: Any) -> Any:
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            other = jnp.full_like(x, jnp.nan)
        elif x.dtype == jnp.bool_:
            other = jnp.logical_not(x)
        else:
            other = x + jnp.ones_like(x)
        return jax.lax.select(jnp.broadcast_to(always, x.shape), x, other)

    return jax.tree.map(tie, tree)


def follow_sharding(new: jax.Array, like: Any) -> jax.Array:
    """``new``, a fresh array with the shape of ``like``, placed where ``like`` is.

    How optimizer states follow their parameters (``jax.jit(opt.init)`` on sharded
    parameters). Outside ``jit``, ``jnp.*_like`` already puts its result on the leaf's
    sharding. Inside a trace whose arguments live on a device mesh, a fresh constant does not
    depend on the leaf: ``jit`` drops the unused argument (the result lands on one device, or
    an explicit-sharding trace fails without ``jax.set_mesh``), and with ``Auto`` mesh axes
    the compiler replicates it. So ``new`` is selected by an always-true predicate computed
    from ``like`` (``isfinite | ~isfinite``), which the compiler cannot fold before it
    propagates shardings: the value is exactly ``new``, the sharding ``like``'s. Traces
    without a mesh (one device), other shapes and non-float leaves get ``new`` unchanged,
    so single-device programs are not touched.

    >>> follow_sharding(jnp.zeros(2), jnp.ones(2)).tolist()
    [0.0, 0.0]
    """
    if not _on_mesh(like) or np.shape(new) != np.shape(like):
        return new
    aval = jax.typeof(like)
    if jax.typeof(new).sharding != aval.sharding:  # explicit axes: shardings are types
        new = jax.sharding.reshard(new, aval.sharding)
    finite = jnp.isfinite(like)
    always = jnp.logical_or(finite, jnp.logical_not(finite))
    other = jnp.real(like) if jnp.iscomplexobj(like) and not jnp.iscomplexobj(new) else like
    return jax.lax.select(always, new, other.astype(new.dtype))


# ----------------------------------------------------------------------------- dtypes


def _dtype(x: Any) -> Any:
    dtype = getattr(x, "dtype", None)
    return dtype if dtype is not None else jnp.result_type(x)


def cast_to(x: Any, dtype: Any) -> jax.Array:
    """``x`` as an array of ``dtype`` (``x`` itself when it already is one)."""
    if getattr(x, "dtype", None) == dtype and isinstance(x, jax.Array) and not x.weak_type:
        return x
    return jnp.asarray(x, dtype)


def cast_like(x: Any, like: Any) -> jax.Array:
    """``x`` in the dtype of ``like`` (``x`` itself when it already has it)."""
    return cast_to(x, _dtype(like))


def cast_tree_like(tree: Any, like: Any) -> Any:
    """Each leaf of ``tree`` in the dtype of the matching leaf of ``like`` (``None`` kept)."""
    return tree_map(cast_like, tree, like)


def as_float32(x: Any) -> jax.Array:
    """``x`` as a float32 array (hyperparameters and counters in scalar arithmetic)."""
    return cast_to(x, jnp.float32)


def compute_dtype(dtype: Any) -> Any:
    """At least float32: reductions and iterations in bfloat16/float16 lose too much."""
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return promote_types(dtype, jnp.complex64)
    return promote_types(dtype, jnp.float32)


def scalar_dtype(tree: Any) -> Any:
    """The dtype of a scalar statistic over ``tree``: its widest float dtype, at least float32."""
    out = jnp.float32
    for x in jax.tree.leaves(tree):
        d = jnp.asarray(x).dtype
        if jnp.issubdtype(d, jnp.floating):
            out = promote_types(out, d)
    return out


# ----------------------------------------------------------------------------- promotion
#
# gdopt computes exactly what JAX's standard dtype promotion computes, and also runs under
# ``jax_numpy_dtype_promotion="strict"``, which refuses implicit promotion between arrays of
# different dtypes. The helpers below make each promotion explicit: they cast the operands
# of one operation as standard promotion would cast them, so the numbers do not depend on
# the promotion mode. Python scalars and weakly typed arrays are left as they are: JAX
# promotes them the same way in both modes (a Python ``0.9`` meeting a bfloat16 array is
# rounded to bfloat16, while a float32 array ``0.9`` lifts the operation to float32).


def promote_types(a: Any, b: Any) -> Any:
    """``jnp.promote_types`` of two dtypes, whatever the promotion mode (strict refuses to
    name the common dtype of, e.g., bfloat16 and float32).

    >>> promote_types(jnp.bfloat16, jnp.float32)
    dtype('float32')
    """
    with jax.numpy_dtype_promotion("standard"):
        return jnp.promote_types(a, b)


def _result(xs: tuple) -> tuple[Any, bool]:
    with jax.numpy_dtype_promotion("standard"):
        return jax.dtypes.result_type(*xs, return_weak_type_flag=True)


def result_dtype(*xs: Any) -> Any:
    """The dtype standard promotion gives an operation on ``xs`` (Python scalars and weakly
    typed arrays count as weak), in either promotion mode.

    >>> result_dtype(jnp.ones(2, jnp.bfloat16), 0.5), result_dtype(jnp.ones(2, jnp.bfloat16), jnp.float32(0.5))
    (dtype(bfloat16), dtype('float32'))
    """
    return _result(xs)[0]


def _is_weak(x: Any) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, (int, float, complex)):
        return True
    return bool(getattr(x, "weak_type", False))


def weak_float(x: Any) -> jax.Array:
    """An integer array ``x`` (an int32 step counter, say) as a weakly typed array of the default float
    dtype (float32; float64 under ``jax_enable_x64``): what standard promotion makes of an
    integer array meeting a Python float (``count ** 0.25``), made explicit.

    Like a Python float, the result takes the dtype of the arrays it then meets.

    >>> w = weak_float(jnp.asarray(3, jnp.int32))
    >>> w.dtype, w.weak_type, (w * jnp.ones((), jnp.bfloat16)).dtype
    (dtype('float32'), True, dtype(bfloat16))
    """
    # ``full_like`` of a weakly typed scalar converts ``x`` with the weak flag kept, the very
    # conversion standard promotion inserts (``convert_element_type[weak_type=True]``);
    # ``vectorize`` lowers it to that single conversion for arrays of any shape.
    fill = lambda v: jax.lax.full_like(jnp.asarray(0.0), v)  # noqa: E731
    return fill(x) if np.ndim(x) == 0 else jnp.vectorize(fill)(x)


def _kind(dtype: Any) -> int:
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return 3
    if jnp.issubdtype(dtype, jnp.floating):
        return 2
    return 1 if jnp.issubdtype(dtype, jnp.integer) else 0


def _unchanged(xs: tuple) -> bool:
    """Whether standard promotion casts none of ``xs`` strongly: the strongly typed ones
    share one dtype and no weak one is of a higher kind (a Python float and an int32 array).
    The common case, decided without asking JAX."""
    strong = None
    weak_kind = 0
    for x in xs:
        if isinstance(x, (bool, np.bool_)):
            return False
        if isinstance(x, int):
            weak_kind = max(weak_kind, 1)
        elif isinstance(x, float):
            weak_kind = max(weak_kind, 2)
        elif isinstance(x, complex):
            weak_kind = max(weak_kind, 3)
        else:
            dtype = getattr(x, "dtype", None)
            if dtype is None:
                return False
            if getattr(x, "weak_type", False):
                weak_kind = max(weak_kind, _kind(dtype))
            elif strong is None:
                strong = dtype
            elif dtype != strong:
                return False
    return strong is None or weak_kind <= _kind(strong)


def promote(*xs: Any) -> tuple:
    """The operands ``xs`` of one operation, cast as standard promotion casts them.

    Every strongly typed operand whose dtype is not the result dtype (:func:`result_dtype`)
    is cast to it (an integer array meeting only weak floats becomes a weak float, see
    :func:`weak_float`); Python scalars and weakly typed arrays are returned unchanged, since
    both promotion modes treat them alike. ``op(*promote(a, b))`` computes what ``op(a, b)``
    computes under standard promotion, and runs under strict promotion too.

    >>> a, b = promote(jnp.ones(2, jnp.bfloat16), jnp.float32(2.0))
    >>> a.dtype, b.dtype
    (dtype('float32'), dtype('float32'))
    """
    if _unchanged(xs):
        return xs
    dtype, weak = _result(xs)
    out = []
    for x in xs:
        if _is_weak(x) or _dtype(x) == dtype:
            out.append(x)
        elif weak and dtype == jnp.asarray(0.0).dtype:
            out.append(weak_float(x))
        else:
            out.append(cast_to(x, dtype))
    return tuple(out)


def add(a: Any, b: Any) -> jax.Array:
    """``a + b`` with the promotion made explicit (:func:`promote`)."""
    a, b = promote(a, b)
    return a + b


def sub(a: Any, b: Any) -> jax.Array:
    """``a - b`` with the promotion made explicit (:func:`promote`)."""
    a, b = promote(a, b)
    return a - b


def mul(a: Any, b: Any) -> jax.Array:
    """``a * b`` with the promotion made explicit (:func:`promote`)."""
    a, b = promote(a, b)
    return a * b


def div(a: Any, b: Any) -> jax.Array:
    """``a / b`` with the promotion made explicit (:func:`promote`)."""
    a, b = promote(a, b)
    return a / b


def maximum(a: Any, b: Any) -> jax.Array:
    """``jnp.maximum(a, b)`` with the promotion made explicit (:func:`promote`)."""
    return jnp.maximum(*promote(a, b))


def minimum(a: Any, b: Any) -> jax.Array:
    """``jnp.minimum(a, b)`` with the promotion made explicit (:func:`promote`)."""
    return jnp.minimum(*promote(a, b))


def where(cond: Any, a: Any, b: Any) -> jax.Array:
    """``jnp.where(cond, a, b)`` with the promotion of ``a`` and ``b`` made explicit."""
    return jnp.where(cond, *promote(a, b))


def clip(x: Any, low: Any, high: Any) -> jax.Array:
    """``jnp.clip(x, low, high)`` with the promotions made explicit: ``jnp.clip`` is
    ``minimum(high, maximum(low, x))``, each step promoted on its own."""
    return minimum(high, maximum(low, x))


# ----------------------------------------------------------------------------- moments


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|^2`` elementwise (``x * conj(x)`` for complex, real-valued).

    >>> float(abs_sq(jnp.asarray(-3.0)))
    9.0
    """
    return jnp.real(x * jnp.conj(x)) if jnp.iscomplexobj(x) else x * x


def update_moment(updates: jax.Array, moments: jax.Array, decay: Any, order: int) -> jax.Array:
    """Exponential moving average of ``g**order``: ``(1 - decay) * g^order + decay * m``.

    ``updates`` is ``g`` and ``moments`` is ``m`` (one array each). For ``order == 2`` the
    squared magnitude ``|g|^2`` is used (complex-safe). ``g`` is first cast to the moment's
    dtype, so a float32 moment of float16 gradients does not see ``g²`` underflow. The other
    promotions (a float32 ``decay`` array meeting a bfloat16 ``m``) are made explicit
    (:func:`promote`): the result is standard promotion's, under strict promotion too.

    >>> float(update_moment(jnp.asarray(2.0), jnp.asarray(1.0), 0.5, 2))
    2.5
    """
    g, m = updates, moments
    gd, md = _dtype(g), _dtype(m)
    if gd != md and jnp.issubdtype(md, jnp.inexact) and jnp.issubdtype(gd, jnp.inexact):
        if jnp.finfo(md).bits > jnp.finfo(gd).bits:
            g = cast_to(g, md)
    x = g if order == 1 else (abs_sq(g) if order == 2 else jnp.abs(g) ** order)
    return add(mul(1 - decay, x), mul(decay, m))


def second_moment_dtype(param_dtype: Any) -> Any:
    """The default dtype of a second moment (``v ≈ g²``) of parameters of ``param_dtype``:
    float32 for float16 (whose smallest normal, 6e-5, makes ``(1 - β2) g²`` of gradients
    below about 0.2 underflow or lose precision), the parameters' own dtype otherwise
    (bfloat16 has float32's exponent range).

    >>> second_moment_dtype(jnp.float16), second_moment_dtype(jnp.bfloat16)
    (dtype('float32'), dtype(bfloat16))
    """
    dtype = jnp.dtype(param_dtype)
    return jnp.dtype(jnp.float32) if dtype == jnp.float16 else dtype


def bias_correction_factor(decay: Any, count: jax.Array) -> jax.Array:
    """``1 - decay ** count``: Adam's debiasing divisor (``count`` starts at 1), computed in
    the decay's dtype, at least float32.

    The power is ``lax.pow`` with the integer count as an operand, the operation optax's
    jitted Adam applies; eager code compiles it once (``jnp.power`` with a concrete integer
    exponent would compile a new ``integer_pow`` kernel for every step count).

    >>> round(float(bias_correction_factor(0.9, jnp.asarray(2))), 6)
    0.19
    """
    base = jnp.asarray(decay)
    if not jnp.issubdtype(base.dtype, jnp.floating) or jnp.finfo(base.dtype).bits < 32:
        base = as_float32(base)  # at least float32 (a float64 decay keeps its precision)
    if jnp.issubdtype(_dtype(count), jnp.integer):
        return 1 - jax.lax.pow(base, cast_to(count, jnp.int32))
    return 1 - base ** cast_to(count, base.dtype)


def bias_correction(moment: jax.Array, decay: Any, count: jax.Array) -> jax.Array:
    """Adam's debiasing: ``moment / (1 - decay ** count)``; ``count`` starts at 1.

    >>> float(bias_correction(jnp.asarray(0.1), 0.9, jnp.asarray(1)))
    1.0
    """
    return moment / cast_like(bias_correction_factor(decay, count), moment)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the dtype's maximum instead of wrapping around.

    >>> int(safe_increment(jnp.asarray(2**31 - 1, jnp.int32)))
    2147483647
    """
    count = jnp.asarray(count)
    top = jnp.iinfo(count.dtype).max if jnp.issubdtype(count.dtype, jnp.integer) else math.inf
    return jnp.where(count < top, count + 1, count)


# ----------------------------------------------------------------------------- norms


def sum_of_squares(x: jax.Array, axis: Any = None, keepdims: bool = False) -> jax.Array:
    """``Σ |x|²`` accumulated in at least float32 (real-valued for complex ``x``)."""
    x = jnp.asarray(x)
    real = jnp.finfo(x.dtype).dtype if jnp.issubdtype(x.dtype, jnp.complexfloating) else x.dtype
    dtype = promote_types(real, jnp.float32) if jnp.issubdtype(real, jnp.floating) else jnp.float32
    return jnp.sum(abs_sq(x).astype(dtype), axis=axis, keepdims=keepdims)


def global_norm(tree: Any) -> jax.Array:
    """The Euclidean norm of all leaves taken as one vector (at least float32)."""
    total = jnp.zeros((), jnp.float32)
    for x in jax.tree.leaves(tree):
        total = add(total, sum_of_squares(x))
    return jnp.sqrt(total)


def safe_norm(x: jax.Array) -> jax.Array:
    """Euclidean norm of all elements (at least float32), with a finite gradient at 0."""
    sq = sum_of_squares(x)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def safe_rms(x: jax.Array) -> jax.Array:
    """Root mean square of all elements (finite gradient at 0; 0 for an empty array)."""
    norm = safe_norm(x)
    return norm / np.sqrt(max(int(np.size(x)), 1)).astype(norm.dtype)


def floor_norm(norm: jax.Array, floor: Any) -> jax.Array:
    """``norm`` where it exceeds ``floor``, else ``floor`` (a norm bounded away from 0)."""
    return jnp.where(jnp.less_equal(*promote(norm, floor)), jnp.asarray(floor, norm.dtype), norm)
