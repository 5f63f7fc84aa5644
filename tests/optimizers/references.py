"""The fixed problem of the optimizer modules' hand-computed tests, and a float64 NumPy
runner for update rules written from the papers' formulas (one leaf at a time).

The NumPy rules use no JAX, so they need no ``oracle()`` context under strict promotion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from tests.helpers import gradient_sequence, make_params

# make_params' 0-D leaf is weak-typed; the state built from it would turn strongly typed after
# the first update and make every jitted trajectory compile twice, so strip the weak type.
PARAMS = jax.tree.map(lambda x: x.astype(x.dtype), make_params())
GRADS = gradient_sequence(PARAMS, steps=10)
TREEDEF = jax.tree.structure(PARAMS)


def np_leaves(tree: Any) -> list[np.ndarray]:
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def np_trajectory(
    step: Callable[[int, np.ndarray, np.ndarray, list], tuple[np.ndarray, list]],
    n_state: int,
    grads: list = GRADS,
    params: Any = PARAMS,
) -> list:
    """Run ``step(t, p, g, state) -> (p, state)`` leafwise in float64; ``t`` starts at 1 and
    ``state`` starts as ``n_state`` Nones. Returns the parameters after each step."""
    p = np_leaves(params)
    states = [[None] * n_state for _ in p]
    traj = []
    for t, g in enumerate(grads, start=1):
        g = np_leaves(g)
        for i in range(len(p)):
            p[i], states[i] = step(t, p[i], g[i], states[i])
        traj.append(jax.tree.unflatten(TREEDEF, [x.copy() for x in p]))
    return traj


def zeros_if_none(x: np.ndarray, s: np.ndarray | None) -> np.ndarray:
    return np.zeros_like(x) if s is None else s
