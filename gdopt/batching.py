"""On-device batching: full batch, mini-batches and single examples from one pytree of arrays.

A dataset is any pytree of arrays that share a leading (example) axis, e.g. ``(x, y)``.
:func:`epoch_batches` turns it into the batches of one epoch, shuffled on the device with
``jax.random``, so a whole epoch (or many) can run inside one compiled ``lax.scan`` with no
host round trip per step:

- ``batch_size=None``: one batch holding every example (batch gradient descent);
- ``batch_size=1``: one example per step (stochastic gradient descent);
- ``batch_size=k``: mini-batches of ``k`` examples (mini-batch SGD).
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdopt.tree import tree_leaves_with_path

__all__ = ["dataset_size", "check_batch_size", "num_batches", "epoch_batches"]


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
