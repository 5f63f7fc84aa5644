"""Shared test utilities: a fixed pytree, fixed gradient sequences, trajectory runners.

Parity tests feed the *same precomputed gradient sequence* (independent of the params) to
gdopt and to the reference, so tiny float32 differences are not amplified by a chaotic
feedback loop, and compare every step of the parameter trajectory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def make_params(seed: int = 0) -> dict:
    """A small pytree with several leaves, shapes and nesting (a dict, a list, a scalar)."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {
        "dense": {"w": jax.random.normal(k1, (4, 3)), "b": jax.random.normal(k2, (3,))},
        "layers": [jax.random.normal(k3, (5,)), jax.random.normal(k4, (2, 2, 2))],
        "scale": jnp.asarray(0.7, jnp.float32),
    }


def gradient_sequence(params: Any, steps: int = 100, seed: int = 1, scale: float = 1.0) -> list:
    """``steps`` pseudo-random gradients with the structure of ``params`` (fixed keys).

    Memoized on the params' structure and shapes: many test modules use the same sequence.
    """
    leaves, treedef = jax.tree.flatten(params)
    shapes = tuple(tuple(jnp.shape(x)) for x in leaves)
    return list(_gradient_sequence(treedef, shapes, steps, seed, scale))


@functools.lru_cache(maxsize=32)
def _gradient_sequence(treedef, shapes, steps, seed, scale) -> tuple:
    keys = jax.random.split(jax.random.PRNGKey(seed), steps)
    leaves = [jnp.zeros(s) for s in shapes]
    out = []
    for k in keys:
        ks = jax.random.split(k, len(leaves))
        out.append(
            treedef.unflatten(
                [scale * jax.random.normal(kk, jnp.shape(x)) for kk, x in zip(ks, leaves)]
            )
        )
    return tuple(out)


def run_trajectory(
    opt: Any,
    params: Any,
    grads: list,
    apply: Callable[[Any, Any], Any] | None = None,
    jit: bool = True,
    extra: Callable[[int, Any], dict] | None = None,
) -> list:
    """Apply ``opt`` (anything with ``init``/``update``) along ``grads``; params after each step.

    ``extra(i, params)`` may return keyword arguments for ``update`` (e.g. ``value``).
    """
    if apply is None:
        apply = lambda p, u: jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u)
    update = jax.jit(opt.update) if jit else opt.update
    state = opt.init(params)
    traj = []
    for i, g in enumerate(grads):
        kw = extra(i, params) if extra is not None else {}
        updates, state = update(g, state, params, **kw)
        params = apply(params, updates)
        traj.append(params)
    return traj


def assert_trajectories_close(
    actual: list, expected: list, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """Every step of two trajectories agrees leafwise (the message names step and key path)."""
    assert len(actual) == len(expected)
    for step, (a, e) in enumerate(zip(actual, expected)):
        fa, _ = jax.tree_util.tree_flatten_with_path(a)
        fe = jax.tree.leaves(e)
        assert len(fa) == len(fe)
        for (path, x), y in zip(fa, fe):
            np.testing.assert_allclose(
                np.asarray(x, np.float64),
                np.asarray(y, np.float64),
                rtol=rtol,
                atol=atol,
                err_msg=f"step {step}, leaf {jax.tree_util.keystr(path)}",
            )
