"""On-device batching: full batch, mini-batches and single examples from one pytree of arrays.

A dataset is any pytree of arrays that share a leading (example) axis, e.g. ``(x, y)``.
:func:`epoch_batches` turns it into the batches of one epoch, shuffled on the device with
``jax.random``, so a whole epoch (or many) can run inside one compiled ``lax.scan`` with no
host round trip per step:

- ``batch_size=None``: one batch holding every example (batch gradient descent);
- ``batch_size=1``: one example per step (stochastic gradient descent);
- ``batch_size=k``: mini-batches of ``k`` examples (mini-batch SGD).

:func:`microbatch` (optax's) runs a function on micro-batches of one batch in turn and
combines the outputs, to bound the memory a large batch needs.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics
from gdopt.tree import tree_leaves_with_path

__all__ = [
    "dataset_size",
    "check_batch_size",
    "num_batches",
    "epoch_batches",
    "microbatch",
    "AccumulationType",
    "Accumulator",
]


def dataset_size(data: Any, name: str = "data") -> int:
    """The number of examples in ``data``: the common length of the leaves' leading axis.

    Args:
      data: a pytree of arrays sharing their leading axis, e.g. ``(x, y)``.
      name: how to call the dataset in error messages.

    Returns:
      The length of the leading axis.

    Raises:
      ValueError: when ``data`` has no array leaves, a leaf is a scalar, the leaves' leading
        axes differ (the message names both key paths and lengths) or there are 0 examples.

    >>> dataset_size((jnp.zeros((5, 3)), jnp.zeros(5)))
    5
    >>> dataset_size((jnp.zeros((5, 3)), jnp.zeros(4)))
    Traceback (most recent call last):
    ...
    ValueError: data[0] has 5 examples but data[1] has 4; every array in data must have the same leading (example) axis, e.g. x of shape (n, ...) and y of shape (n, ...).
    """
    leaves = tree_leaves_with_path(data)
    if not leaves:
        raise ValueError(
            f"{name} holds no arrays; pass a pytree of arrays sharing a leading (example) "
            "axis, e.g. (x, y)."
        )
    first_path, first = leaves[0]
    first_path = "" if first_path == "<root>" else first_path
    sizes = []
    for path, leaf in leaves:
        path = "" if path == "<root>" else path
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                f"{name}{path} is a scalar; every array in {name} needs a leading (example) axis."
            )
        sizes.append((path, shape[0]))
    n = sizes[0][1]
    for path, size in sizes[1:]:
        if size != n:
            raise ValueError(
                f"{name}{first_path} has {n} examples but {name}{path} has {size}; every array "
                f"in {name} must have the same leading (example) axis, e.g. x of shape (n, ...) "
                "and y of shape (n, ...)."
            )
    if n == 0:
        raise ValueError(f"{name} is empty (0 examples); pass at least one example.")
    return int(n)


def check_batch_size(batch_size: int | None, n: int) -> None:
    """Validate a batch size for a dataset of ``n`` examples.

    Args:
      batch_size: ``None`` (full batch) or an integer in ``[1, n]``.
      n: the number of examples.

    Raises:
      TypeError: when ``batch_size`` is not an integer or ``None``.
      ValueError: when it is below 1 or above ``n`` (the message shows both numbers).

    >>> check_batch_size(64, 10)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be an integer in [1, 10] (the number of examples) or None for full batch, got 64.
    """
    if batch_size is None:
        return
    if isinstance(batch_size, (bool, np.bool_)):
        raise TypeError(f"batch_size must be an integer or None, got {batch_size!r}.")
    try:
        k = operator.index(batch_size)
    except TypeError:
        raise TypeError(
            f"batch_size must be an integer or None, got {type(batch_size).__name__} "
            f"{batch_size!r}."
        ) from None
    if k < 1 or k > n:
        raise ValueError(
            f"batch_size must be an integer in [1, {n}] (the number of examples) or None for "
            f"full batch, got {k}."
        )


def num_batches(n: int, batch_size: int | None) -> int:
    """Batches per epoch: 1 for full batch, else ``n // batch_size`` (the remainder is dropped).

    >>> num_batches(10, 3), num_batches(10, None)
    (3, 1)
    """
    check_batch_size(batch_size, n)
    return 1 if batch_size is None else n // int(batch_size)


def epoch_batches(
    key: jax.Array, data: Any, batch_size: int | None, *, shuffle: bool = True
) -> Any:
    """The batches of one epoch, every leaf reshaped to ``(num_batches, batch_size, ...)``.

    With ``batch_size=k`` the examples are put in the order of a fresh
    ``jax.random.permutation(key, n)`` (on the device) and cut into ``n // k`` batches; the
    ``n % k`` examples that come last in this epoch's order are dropped *for this epoch*.
    Since the permutation changes every epoch (use a different ``key`` per epoch), every
    example is seen with the same probability in expectation, and all batches keep one static
    shape (one compiled step). ``batch_size=None`` returns the whole dataset as one batch,
    unshuffled (the mean loss over all examples does not depend on their order).

    Works under ``jax.jit`` (``batch_size`` and ``shuffle`` must be static).

    Args:
      key: a PRNG key (``jax.random.PRNGKey`` or ``jax.random.key``); unused when
        ``batch_size`` is ``None`` or ``shuffle`` is false.
      data: a pytree of arrays sharing a leading axis of length ``n``.
      batch_size: ``None`` (full batch), ``1`` (per example) or ``k`` in ``[1, n]``.
      shuffle: permute the examples; with ``False`` the first ``(n // k) * k`` examples are
        taken in order.

    Returns:
      A pytree like ``data`` whose leaves have shape ``(num_batches, batch, ...)``.

    >>> x, y = jnp.arange(10.0).reshape(5, 2), jnp.arange(5)
    >>> bx, by = epoch_batches(jax.random.PRNGKey(0), (x, y), 2)
    >>> bx.shape, by.shape
    ((2, 2, 2), (2, 2))
    >>> epoch_batches(jax.random.PRNGKey(0), (x, y), None)[1].tolist()
    [[0, 1, 2, 3, 4]]
    """
    n = dataset_size(data)
    if batch_size is None:
        return jax.tree.map(lambda a: jnp.asarray(a)[None], data)
    check_batch_size(batch_size, n)
    k = int(batch_size)
    nb = n // k
    if shuffle:
        idx = jax.random.permutation(key, n)[: nb * k]
        return jax.tree.map(lambda a: jnp.asarray(a)[idx].reshape(nb, k, *np.shape(a)[1:]), data)
    return jax.tree.map(lambda a: jnp.asarray(a)[: nb * k].reshape(nb, k, *np.shape(a)[1:]), data)


# ----------------------------------------------------------------------------- microbatch


class AccumulationType(enum.Enum):
    """How :func:`microbatch` combines the outputs of the micro-batches (optax's names)."""

    MEAN = enum.auto()
    """The mean over the micro-batches (floating-point outputs)."""
    SUM = enum.auto()
    """The sum over the micro-batches."""
    RUNNING_MEAN = enum.auto()
    """The mean over the micro-batches actually run (``num_real_microbatches``)."""
    CONCAT = enum.auto()
    """The outputs concatenated along axis 0, in the order of the batch's rows."""


@dataclasses.dataclass(frozen=True)
class Accumulator:
    """A rule that combines the outputs ``x_0, ..., x_{n-1}`` of :func:`microbatch`'s
    micro-batches (optax's ``microbatching.Accumulator``)::

        carry = init(shape_dtype_of(x_0))
        for i in range(n):
            carry = update(carry, x_i, i)
        result = finalize(carry)

    Attributes:
      init: ``init(shape_dtype_struct) -> carry``.
      update: ``update(carry, value, index) -> carry``.
      finalize: ``finalize(carry) -> result``.
      aggregate: ``aggregate(values) -> value``, the same reduction over a stacked axis 0.

    >>> import jax.numpy as jnp
    >>> total = Accumulator(jnp.zeros_like, lambda c, x, i: c + x, lambda c: c,
    ...                     lambda xs: jnp.sum(xs, axis=0))
    >>> f = microbatch(lambda x: jnp.sum(x), 0, 2, total)
    >>> int(f(jnp.arange(6)))
    15
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], Any]
    finalize: Callable[[Any], Any]
    aggregate: Callable[[Any], Any]


def _floating_only(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def checked(x: Any) -> Any:
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            raise ValueError(
                f"microbatch's MEAN and RUNNING_MEAN accumulators need floating-point outputs; "
                f"an output has dtype {x.dtype} (use SUM for integers)."
            )
        return fn(x)

    return checked


def _running_mean_update(carry: Any, value: Any, index: Any) -> Any:
    # carry_i = carry_{i-1} * i / (i + 1) + value / (i + 1), in the carry's dtype
    keep = jnp.asarray(index, jnp.float32) / (jnp.asarray(index, jnp.float32) + 1.0)
    new = _numerics.add(_numerics.mul(carry, keep), _numerics.mul(value, 1.0 - keep))
    return _numerics.cast_like(new, carry)


def _leaf_accumulator(kind: Any, n: int) -> Accumulator:
    if isinstance(kind, Accumulator):
        return kind
    name = kind.name if isinstance(kind, enum.Enum) else None
    if name == "SUM":
        return Accumulator(
            jnp.zeros_like,
            lambda c, x, i: _numerics.cast_like(_numerics.add(c, x), c),
            lambda c: c,
            lambda xs: jnp.sum(xs, axis=0),
        )
    if name == "MEAN":
        return Accumulator(
            _floating_only(jnp.zeros_like),
            lambda c, x, i: _numerics.cast_like(_numerics.add(c, x), c),
            lambda c: c / n,
            lambda xs: jnp.mean(xs, axis=0),
        )
    if name == "RUNNING_MEAN":
        return Accumulator(
            _floating_only(jnp.zeros_like),
            _running_mean_update,
            lambda c: c,
            lambda xs: jnp.mean(xs, axis=0),
        )
    if name == "CONCAT":
        return Accumulator(
            lambda s: _stacked_zeros(n, s),
            lambda c, x, i: c.at[i].set(x),
            _merge_microbatch_axis,
            lambda xs: xs,
        )
    raise TypeError(
        "microbatch's accumulator must be an Accumulator, an AccumulationType (SUM, MEAN, "
        f"RUNNING_MEAN, CONCAT) or a pytree of them, got {kind!r}."
    )


def _is_accumulator_leaf(x: Any) -> bool:
    return isinstance(x, (Accumulator, enum.Enum))


def _explicit_sharding(x: Any) -> Any:
    """The sharding of ``x`` when it lives on a mesh whose axes are all explicit, else None."""
    typeof = getattr(jax, "typeof", None)
    if typeof is None:
        return None
    sharding = getattr(typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not getattr(mesh, "are_all_axes_explicit", False) or mesh.empty:
        return None
    return sharding


def _split_batch_axis(x: Any, size: int, axis: int) -> Any:
    """``x``'s axis ``axis`` of length ``n * size`` as two axes ``(n, size)``, column-major:
    micro-batch ``i`` holds rows ``i, i + n, i + 2n, ...`` (a sharding of the batch axis
    stays on the ``size`` axis)."""
    x = jnp.asarray(x)
    shape = (*x.shape[:axis], -1, size, *x.shape[axis + 1 :])
    sharding = _explicit_sharding(x)
    if sharding is None:
        return x.reshape(shape, order="F")
    spec = tuple(sharding.spec)
    if len(spec) > axis:
        spec = (*spec[:axis], None, spec[axis], *spec[axis + 1 :])
    out = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))
    return x.reshape(shape, order="F", out_sharding=out)


def _stacked_zeros(n: int, s: Any) -> jax.Array:
    """CONCAT's carry: zeros ``(n, *s.shape)``, sharded like ``s`` along its own axes."""
    sharding: Any = getattr(s, "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not getattr(mesh, "are_all_axes_explicit", False) or mesh.empty:
        return jnp.zeros((n, *s.shape), s.dtype)
    spec = jax.sharding.PartitionSpec(None, *tuple(sharding.spec))
    out = jax.sharding.NamedSharding(mesh, spec)
    return jnp.zeros((n, *s.shape), s.dtype, out_sharding=out)


def _merge_microbatch_axis(carry: jax.Array) -> jax.Array:
    """CONCAT's result: ``(n, size, ...)`` back to the batch's rows in their order."""
    shape = (-1, *carry.shape[2:])
    sharding = _explicit_sharding(carry)
    if sharding is None:
        return carry.reshape(shape, order="F")
    spec = jax.sharding.PartitionSpec(*tuple(sharding.spec)[1:])
    out = jax.sharding.NamedSharding(sharding.mesh, spec)
    return carry.reshape(shape, order="F", out_sharding=out)


def microbatch(
    fun: Callable[..., Any],
    argnums: int | Sequence[int],
    microbatch_size: int | None,
    accumulator: Any = AccumulationType.SUM,
    *,
    argnames: str | Sequence[str] = (),
    in_axes: int | Sequence[int] = 0,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable[..., Any]:
    """``fun`` evaluated on micro-batches one after the other, the outputs combined
    (optax's ``microbatch``).

    The returned function takes ``fun``'s arguments. The batch arguments (positions
    ``argnums``, keywords ``argnames``; their batch axis ``in_axes``, 0 by default) are cut
    into ``n = batch / microbatch_size`` micro-batches, ``fun`` runs on each inside one
    ``lax.fori_loop`` (so only one micro-batch's intermediates are alive at a time), and the
    outputs are combined by ``accumulator``: ``SUM`` (the default), ``MEAN``, ``RUNNING_MEAN``
    (the mean over the micro-batches run), ``CONCAT`` (along axis 0, in the batch's row
    order), an :class:`Accumulator`, or a pytree of these matching a prefix of ``fun``'s
    output (one rule per output). The split is column-major: micro-batch ``i`` holds rows
    ``i, i + n, i + 2n, ...``, so a sharding of the batch axis is kept by each micro-batch.

    With ``microbatch_size=None`` ``fun`` itself is returned. ``num_real_microbatches``
    (static or traced) stops the loop after that many micro-batches: a variable batch size
    without a recompile (``MEAN`` still divides by ``n``; ``RUNNING_MEAN`` does not).

    Summing the gradients of micro-batches of a summed loss gives the full batch's gradient
    with the memory of one micro-batch (``gdopt.accumulate`` instead spreads micro-batches
    over optimizer steps).

    Args:
      fun: any function.
      argnums: the position(s) of the arguments with a batch axis.
      microbatch_size: rows per micro-batch (it must divide the batch), or ``None``.
      accumulator: how outputs combine (see above).
      argnames: the keyword argument(s) with a batch axis.
      in_axes: the batch axis of every batch argument, or one per argument in the order
        ``argnums + argnames``.
      num_real_microbatches: run only the first this many micro-batches.

    Returns:
      A function with ``fun``'s arguments returning the combined output.

    Raises:
      TypeError: ``fun`` is not callable, an index or size is not an integer, or an
        accumulator is not one of the above.
      ValueError: a size is not positive, ``in_axes`` has the wrong length, the batch
        arguments' batch axes differ (the message names them) or ``microbatch_size`` does
        not divide the batch, or ``MEAN``/``RUNNING_MEAN`` meets an integer output.

    >>> import jax.numpy as jnp
    >>> fun = lambda x: (x + 1, jnp.sum(3 * x))
    >>> f = microbatch(fun, argnums=0, microbatch_size=2,
    ...                accumulator=(AccumulationType.CONCAT, AccumulationType.SUM))
    >>> rows, total = f(jnp.array([1, 2, 3, 4]))
    >>> rows.tolist(), int(total)
    ([2, 3, 4, 5], 30)
    """
    if not callable(fun):
        raise TypeError(f"microbatch's fun must be a function, got {type(fun).__name__}.")
    if microbatch_size is None:
        return fun
    size = _positive_int("microbatch's microbatch_size", microbatch_size)
    argnums_t = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for i in argnums_t:
        _index("microbatch's argnums", i)
    argnames_t = (argnames,) if isinstance(argnames, str) else tuple(argnames)
    for name in argnames_t:
        if not isinstance(name, str):
            raise TypeError(f"microbatch's argnames must be strings, got {name!r}.")
    n_batch = len(argnums_t) + len(argnames_t)
    if n_batch == 0:
        raise ValueError("microbatch needs at least one batch argument (argnums or argnames).")
    if isinstance(in_axes, int):
        axes = (in_axes,) * n_batch
    else:
        axes = tuple(in_axes)
        if len(axes) != n_batch:
            raise ValueError(
                f"microbatch's in_axes has {len(axes)} entries but there are {n_batch} batch "
                "arguments (argnums + argnames); give one axis per argument or one int."
            )
    for ax in axes:
        if _index("microbatch's in_axes", ax) < 0:
            raise ValueError(
                f"microbatch's in_axes must be non-negative axis numbers, got {ax}; count the "
                "batch axis from the front."
            )
    if num_real_microbatches is not None and not hasattr(num_real_microbatches, "dtype"):
        _index("microbatch's num_real_microbatches", num_real_microbatches)
    jax.tree.map(lambda a: _leaf_accumulator(a, 1), accumulator, is_leaf=_is_accumulator_leaf)

    def microbatched(*call_args: Any, **kwargs: Any) -> Any:
        args = list(call_args)
        kwargs = dict(kwargs)
        where, trees = [], []
        for i in argnums_t:
            if not -len(args) <= i < len(args):
                raise ValueError(
                    f"microbatch's argnums names argument {i}, but the function was called "
                    f"with {len(args)} positional argument(s)."
                )
            where.append(f"argument {i}")
            trees.append(args[i])
        for name in argnames_t:
            if name not in kwargs:
                raise ValueError(
                    f"microbatch's argnames names {name!r}, which the call did not pass as a "
                    "keyword argument."
                )
            where.append(f"keyword {name!r}")
            trees.append(kwargs[name])
        sizes = []
        for label, tree, ax in zip(where, trees, axes, strict=True):
            for path, leaf in tree_leaves_with_path(tree):
                shape = np.shape(leaf)
                if ax >= len(shape):
                    raise ValueError(
                        f"microbatch: {label}{'' if path == '<root>' else path} has shape "
                        f"{shape}, with no batch axis {ax}."
                    )
                sizes.append((f"{label}{'' if path == '<root>' else path}", shape[ax]))
        if not sizes:
            raise ValueError("microbatch's batch arguments hold no arrays.")
        batch = sizes[0][1]
        for label, b in sizes[1:]:
            if b != batch:
                raise ValueError(
                    f"microbatch's batch arguments must share their batch size: {sizes[0][0]} "
                    f"has {batch} rows but {label} has {b}."
                )
        if batch % size:
            raise ValueError(
                f"microbatch's microbatch_size {size} must divide the batch size {batch}."
            )
        n = batch // size
        split = [
            jax.tree.map(lambda x, ax=ax: _split_batch_axis(x, size, ax), tree)
            for tree, ax in zip(trees, axes, strict=True)
        ]
        rules = jax.tree.map(
            lambda a: _leaf_accumulator(a, n), accumulator, is_leaf=_is_accumulator_leaf
        )

        def call(index: Any) -> Any:
            a, kw = list(args), dict(kwargs)
            parts = [
                jax.tree.map(lambda x, ax=ax: jnp.take(x, index, axis=ax), tree)
                for tree, ax in zip(split, axes, strict=True)
            ]
            for i, part in zip(argnums_t, parts, strict=False):
                a[i] = part
            for name, part in zip(argnames_t, parts[len(argnums_t) :], strict=True):
                kw[name] = part
            return fun(*a, **kw)

        def each(rule_call: Callable[..., Any], *trees_: Any) -> Any:
            # one rule per leaf of ``rules``, applied leaf by leaf below it
            return jax.tree.map(
                lambda rule, *subs: jax.tree.map(lambda *xs: rule_call(rule, *xs), *subs),
                rules,
                *trees_,
                is_leaf=lambda x: isinstance(x, Accumulator),
            )

        shapes = jax.eval_shape(call, 0)
        carry = each(lambda r, s: r.init(s), shapes)

        def body(index: Any, carry: Any) -> Any:
            return each(lambda r, c, x: r.update(c, x, index), carry, call(index))

        stop = n if num_real_microbatches is None else num_real_microbatches
        carry = jax.lax.fori_loop(0, stop, body, carry)
        return each(lambda r, c: r.finalize(c), carry)

    return microbatched


def _positive_int(where: str, value: Any) -> int:
    k = _index(where, value)
    if k < 1:
        raise ValueError(f"{where} must be a positive integer, got {k}.")
    return k


def _index(where: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where} must be an integer, got {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{where} must be an integer, got {type(value).__name__} {value!r}."
        ) from None
