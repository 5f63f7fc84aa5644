"""Compiled programs reused across calls (the engine's ``fit`` and the applications built on
its core: sweeps, multi-start).

``fit`` builds its programs from the loss function, the optimizer and its options; the
optimizer's hyperparameters are data in its state, so two calls that differ only in their
values (``adam(1e-3)`` then ``adam(3e-3)``) can run the same executable. A program is
looked up by the identity of the loss (and accuracy) function, the optimizer's structural
key (:class:`gdopt._traits.Traits`; its identity when it has none), the static options, the
configuration that tracing depends on (the dtype promotion mode and 64-bit mode, as in
``jax.jit``'s own cache) and the abstract signature (structure, shapes, dtypes, shardings)
of the arguments. Like
``jax.jit``, the cache trusts the identity of the functions: a loss that closes over a
global array sees the value it had when it was first compiled.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Hashable
from typing import Any

import jax

from gdopt._traits import traits_of

__all__ = ["optimizer_key", "trace_config", "signature", "compiled"]

_MAX_ENTRIES = 32
_CACHE: collections.OrderedDict[Hashable, tuple[Any, Any]] = collections.OrderedDict()


def optimizer_key(optimizer: Any) -> tuple[Hashable, Any]:
    """``(key, keep)``: the optimizer's structural key (or its identity) and what the cache
    must keep alive for that identity to stay unique."""
    key = traits_of(optimizer).key
    if key is not None:
        return ("key", key), None
    return ("id", id(optimizer.update)), optimizer


def _leaf_signature(x: Any) -> Hashable:
    sharding = getattr(x, "sharding", None)
    return (
        tuple(getattr(x, "shape", ())),
        str(getattr(x, "dtype", type(x).__name__)),
        bool(getattr(x, "weak_type", False)),
        None if sharding is None else str(sharding),
    )


def trace_config() -> Hashable:
    """The configuration a traced program depends on besides its arguments: the dtype
    promotion mode (a program traced under standard promotion must not serve a call made
    under strict promotion, which would raise where it promotes implicitly) and 64-bit
    mode (how Python numbers are traced)."""
    config: Any = jax.config  # its flags are attributes pyright cannot see
    return str(config.jax_numpy_dtype_promotion), bool(config.jax_enable_x64)


def signature(*args: Any) -> Hashable:
    """The abstract signature of ``args``: their pytree structure and each leaf's shape,
    dtype, weak type and sharding."""
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple(_leaf_signature(x) for x in leaves)


def compiled(
    key: Hashable, keep: Any, build: Callable[[], Any], *args: Any
) -> tuple[Callable[..., Any], float]:
    """``(executable, seconds spent compiling)``: the cached executable for ``key`` and the
    signature of ``args`` under the current :func:`trace_config`, or ``build()`` (a jitted
    function) lowered and compiled for them."""
    full = (key, trace_config(), signature(*args))
    hit = _CACHE.get(full)
    if hit is not None:
        _CACHE.move_to_end(full)
        return hit[0], 0.0
    t0 = time.perf_counter()
    executable = build().lower(*args).compile()
    seconds = time.perf_counter() - t0
    _CACHE[full] = (executable, keep)
    while len(_CACHE) > _MAX_ENTRIES:
        _CACHE.popitem(last=False)
    return executable, seconds


def clear() -> None:
    """Forget every cached program."""
    _CACHE.clear()
