"""Control flow that compiles nothing per step when called eagerly.

Under ``jit``/``vmap``/``grad`` these are ``lax.cond``, ``lax.while_loop`` and ``lax.scan``.
When the predicate (or the loop's inputs) are concrete, i.e. an ``update`` is called
eagerly, they run as Python control flow over eager operations: a ``lax`` control-flow
primitive called eagerly compiles a new program at every call (its branches are fresh
closures), these compile nothing after the first step. Both forms compute the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gdopt._validation import is_concrete

__all__ = ["cond", "while_loop", "scan"]


def cond(pred: Any, true_fn: Callable, false_fn: Callable, *operands: Any) -> Any:
    """``lax.cond(pred, true_fn, false_fn, *operands)``; a Python branch when ``pred`` is
    concrete.

    >>> float(cond(jnp.asarray(True), lambda x: x + 1, lambda x: x - 1, jnp.asarray(1.0)))
    2.0
    """
    if is_concrete(pred):
        return (true_fn if bool(pred) else false_fn)(*operands)
    return jax.lax.cond(pred, true_fn, false_fn, *operands)


def while_loop(cond_fun: Callable, body_fun: Callable, init: Any) -> Any:
    """``lax.while_loop``; a Python loop while the condition is concrete.

    >>> int(while_loop(lambda c: c < 5, lambda c: c + 2, jnp.asarray(0)))
    6
    """
    carry = init
    while True:
        keep = cond_fun(carry)
        if not is_concrete(keep):  # a traced loop: hand the rest to lax (same result)
            return jax.lax.while_loop(cond_fun, body_fun, carry)
        if not bool(keep):
            return carry
        carry = body_fun(carry)


def scan(fn: Callable, init: Any, xs: Any, reverse: bool = False) -> tuple[Any, Any]:
    """``lax.scan(fn, init, xs, reverse=reverse)``; a Python loop over concrete inputs.

    >>> carry, ys = scan(lambda c, x: (c + x, 2 * x), jnp.asarray(0.0), jnp.arange(3.0))
    >>> float(carry), ys.tolist()
    (3.0, [0.0, 2.0, 4.0])
    """
    if not (is_concrete(init) and is_concrete(xs)):
        return jax.lax.scan(fn, init, xs, reverse=reverse)
    n = len(jax.tree.leaves(xs)[0])
    carry, ys = init, [None] * n
    for i in reversed(range(n)) if reverse else range(n):
        carry, ys[i] = fn(carry, jax.tree.map(lambda x, i=i: x[i], xs))
    stacked = None if ys[0] is None else jax.tree.map(lambda *y: jnp.stack(y), *ys)
    return carry, stacked
