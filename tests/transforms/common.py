"""What the transform test modules share: the fixed problem, parity with optax's transform of
the same name, the dtype and ``None``-leaf checks, optax's argument kinds, and the
float64 NumPy reference of Adafactor's factored second moment (also used by
``tests/optimizers/test_adaptive.py``).
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    oracle,
    run_trajectory,
)

# make_params' 0-D leaf is weak-typed; the state built from it would turn strongly typed after
# the first update and make every jitted trajectory compile twice, so strip the weak type.
PARAMS = jax.tree.map(lambda x: x.astype(x.dtype), make_params())
GRADS = gradient_sequence(PARAMS, steps=50)


@jax.jit
def small_steps(p, u):
    """Move by 1% of a transform's output (the outputs are O(1) directions)."""
    return jax.tree.map(lambda a, b: (a + 0.01 * b).astype(a.dtype), p, u)


def scalars_as_vectors(tree: Any) -> Any:
    """0-D leaves as shape (1,): optax 0.2.8's SM3 fails on 0-D leaves (same accumulator)."""
    return jax.tree.map(lambda x: jnp.reshape(x, (1,)) if jnp.ndim(x) == 0 else x, tree)


def shaped_like(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.reshape(x, jnp.shape(y)), tree, like)


def assert_parity_with_optax(name: str, kwargs: dict, grads=GRADS, vectorize=False) -> None:
    """``gdopt.<name>(**kwargs)`` and ``optax.<name>(**kwargs)`` move :data:`PARAMS` the same
    way along ``grads`` (1% steps of the transforms' outputs)."""
    import optax

    import gdopt

    ours = run_trajectory(getattr(gdopt, name)(**kwargs), PARAMS, grads, small_steps)
    with oracle():
        params = scalars_as_vectors(PARAMS) if vectorize else PARAMS
        seq = [scalars_as_vectors(g) for g in grads] if vectorize else grads
        theirs = run_trajectory(getattr(optax, name)(**kwargs), params, seq, small_steps)
    if vectorize:
        theirs = [shaped_like(t, PARAMS) for t in theirs]
    assert_trajectories_close(ours, theirs, rtol=1e-5, atol=1e-6)


def assert_argument_kinds_are_optax(name: str) -> None:
    """Each of optax's arguments exists with the same kind; gdopt's additions are keyword-only."""
    import optax

    import gdopt

    ours = inspect.signature(getattr(gdopt, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    for arg, p in theirs.items():
        assert arg in ours, f"{name} lacks optax's argument {arg}"
        assert ours[arg].kind == p.kind, f"{name}({arg}): {ours[arg].kind} vs optax's {p.kind}"
    extra = [a for a, q in ours.items() if a not in theirs]
    assert all(ours[a].kind is inspect.Parameter.KEYWORD_ONLY for a in extra), (name, extra)


def optax_counterparts(module: Any) -> list[str]:
    """The factories of ``module.__all__`` that optax also has (same name)."""
    import optax

    return sorted(
        n
        for n in module.__all__
        if not inspect.isclass(getattr(module, n)) and callable(getattr(optax, n, None))
    )


def assert_moment_dtypes_kept_under_cond(t: Any) -> None:
    """``t``'s moments were built in bfloat16 (``mu_dtype``/``nu_dtype``): they are bfloat16,
    stay so across jitted steps and under ``lax.cond`` (whose branches must agree), and the
    updates keep the gradients' float32."""
    state = t.init(PARAMS)
    moments = [x for f in ("mu", "nu", "nu_max") for x in jax.tree.leaves(getattr(state, f, []))]
    assert moments and all(x.dtype == jnp.bfloat16 for x in moments)
    dtypes = jax.tree.map(lambda x: x.dtype, state)

    @jax.jit
    def step(g, state, pred):
        return jax.lax.cond(pred, lambda: t.update(g, state, PARAMS), lambda: (g, state))

    u = None
    for i, g in enumerate(GRADS[:3]):
        u, state = step(g, state, i != 1)
    assert jax.tree.map(lambda x: x.dtype, state) == dtypes
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(u))
    assert all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))) for x in jax.tree.leaves(state))


def assert_bfloat16_and_none_leaves_pass_through(t: Any) -> None:
    """bfloat16 parameters and gradients give bfloat16 updates and a state of fixed dtypes
    (two jitted steps); a ``None`` leaf (frozen) stays ``None``."""
    bf = lambda x: jnp.asarray(x, jnp.bfloat16)
    params = {"m": bf(PARAMS["dense"]["w"]), "v": bf(PARAMS["layers"][0]), "frozen": None}
    grads = {"m": bf(GRADS[0]["dense"]["w"]), "v": bf(GRADS[0]["layers"][0]), "frozen": None}
    state = t.init(params)
    dtypes = jax.tree.map(lambda x: x.dtype, state)
    update = jax.jit(t.update)
    u = None
    for _ in range(2):
        u, state = update(grads, state, params)
    assert jax.tree.map(lambda x: x.dtype, state) == dtypes
    assert u["frozen"] is None
    assert u["m"].dtype == jnp.bfloat16 and u["v"].dtype == jnp.bfloat16
    assert all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))) for x in jax.tree.leaves(u))


def np_factored_rms(g: np.ndarray, state: Any, beta: float, eps: float = 1e-30):
    """One factored second-moment step of Shazeer & Stern (2018), Alg. 4/5, in float64, with
    row/column sums over the last two axes (leading axes are batch axes); unfactored for 0-D
    and 1-D. Returns ``(g / sqrt(v̂), new state)``."""
    g2 = g * g + eps
    if g.ndim < 2:
        v = g2 if state is None else beta * state + (1 - beta) * g2
        return g / np.sqrt(v), v
    rows, cols = (np.zeros(g.shape[:-1]), np.zeros(g.shape[:-2] + g.shape[-1:]))
    if state is not None:
        rows, cols = state
    rows = beta * rows + (1 - beta) * g2.sum(axis=-1)  # R_t: row sums
    cols = beta * cols + (1 - beta) * g2.sum(axis=-2)  # C_t: column sums
    v_hat = rows[..., :, None] * cols[..., None, :] / rows.sum(axis=-1)[..., None, None]
    return g / np.sqrt(v_hat), (rows, cols)
