"""``gdopt/optimizers/adaptive.py``: RMSprop, AdaGrad, AdaDelta, Rprop, SM3 and Adafactor.

Trajectories against float64 NumPy references written from the papers (RMSprop plain and
centered with momentum, AdaGrad, Zeiler's AdaDelta with its own step, iRprop-, Adafactor with
the relative step); Rprop's sign logic by hand; the deliberate differences from optax 0.2.8,
pinned: its Rprop applies at step t the step computed at t-1, its SM3 fails on 0-D leaves;
centered RMSprop's bfloat16 state; Adafactor's decay offset, its hyperparameters in the state
and its errors. Oracle parity, convergence and bad values of these optimizers are the
registry's (``tests/test_optimizers.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    oracle,
    run_trajectory,
)
from tests.optimizers.references import (
    GRADS,
    PARAMS,
    np_leaves,
    np_trajectory,
    zeros_if_none,
)
from tests.transforms.common import np_factored_rms, scalars_as_vectors, shaped_like

# ----------------------------------------------------------------------------- RMSprop, AdaGrad


def np_rmsprop(params, grads, lr, decay=0.9, eps=1e-8, centered=False, momentum=None):
    """RMSprop (Tieleman & Hinton, 2012; ε inside the square root), Graves' centered form and
    heavy-ball momentum on the scaled step, in float64."""
    p = np_leaves(params)
    v = [np.zeros_like(x) for x in p]
    m = [np.zeros_like(x) for x in p]
    b = [np.zeros_like(x) for x in p]
    traj = []
    for g in grads:
        g = np_leaves(g)
        for i in range(len(p)):
            v[i] = decay * v[i] + (1 - decay) * g[i] ** 2
            m[i] = decay * m[i] + (1 - decay) * g[i]
            denom = v[i] - m[i] ** 2 if centered else v[i]
            step = lr * g[i] / np.sqrt(denom + eps)
            if momentum is not None:
                b[i] = momentum * b[i] + step
                step = b[i]
            p[i] = p[i] - step
        traj.append(jax.tree.unflatten(jax.tree.structure(params), list(p)))
    return traj


def np_adagrad(params, grads, lr, init=0.1, eps=1e-7):
    """Duchi, Hazan & Singer's AdaGrad (diagonal) in float64."""
    p = np_leaves(params)
    s = [np.full_like(x, init) for x in p]
    traj = []
    for g in grads:
        g = np_leaves(g)
        for i in range(len(p)):
            s[i] = s[i] + g[i] ** 2
            p[i] = p[i] - lr * g[i] / np.sqrt(s[i] + eps)
        traj.append(jax.tree.unflatten(jax.tree.structure(params), list(p)))
    return traj


REFERENCE_CASES = [
    ("rmsprop", dict(learning_rate=0.01), lambda: np_rmsprop(PARAMS, GRADS, 0.01)),
    (
        "rmsprop-centered-momentum",
        dict(learning_rate=0.01, centered=True, momentum=0.5),
        lambda: np_rmsprop(PARAMS, GRADS, 0.01, centered=True, momentum=0.5),
    ),
    ("adagrad", dict(learning_rate=0.1), lambda: np_adagrad(PARAMS, GRADS, 0.1)),
]


@pytest.mark.parametrize(
    "name,kwargs,reference", REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES]
)
def test_matches_the_paper(name, kwargs, reference):
    opt = getattr(gdopt, name.split("-")[0])(**kwargs)
    expected = reference()
    for jit in (False, True):
        traj = run_trajectory(opt, PARAMS, GRADS, apply=gdopt.apply_updates, jit=jit)
        assert_trajectories_close(traj, expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_centered_rmsprop_keeps_dtypes_across_steps(dtype):
    """The centered state (first moment too) keeps its dtypes; the registry's run is plain."""
    opt = gdopt.rmsprop(0.1, centered=True)
    p = {"w": jnp.ones((3,), dtype)}
    s = opt.init(p)
    dtypes0 = [x.dtype for x in jax.tree.leaves(s)]
    step = jax.jit(lambda p, s: opt.update({"w": jnp.full((3,), 0.5, dtype)}, s, p))
    for _ in range(3):
        u, s = step(p, s)
        assert u["w"].dtype == dtype
        p = gdopt.apply_updates(p, u)
    assert p["w"].dtype == dtype
    assert [x.dtype for x in jax.tree.leaves(s)] == dtypes0
    assert bool(jnp.all(jnp.isfinite(p["w"].astype(jnp.float32))))


# ----------------------------------------------------------------------------- AdaDelta


def test_adadelta_default_descends_like_the_paper():
    """optax 0.2.8's adadelta() (learning_rate=None) ascends; gdopt's is Zeiler's method."""
    rho, eps = 0.9, 1e-6

    def step(t, p, g, st):
        eg, ex = zeros_if_none(p, st[0]), zeros_if_none(p, st[1])
        eg = rho * eg + (1 - rho) * g * g
        delta = np.sqrt(ex + eps) / np.sqrt(eg + eps) * g
        return p - delta, [eg, rho * ex + (1 - rho) * delta * delta]

    expected = np_trajectory(step, 2)
    assert_trajectories_close(run_trajectory(gdopt.adadelta(), PARAMS, GRADS), expected)


# ----------------------------------------------------------------------------- Rprop


def _np_rprop(lr, eta_minus, eta_plus, lo, hi):
    def step(t, p, g, st):
        delta = np.full_like(p, lr) if st[0] is None else st[0]
        prev = zeros_if_none(p, st[1])
        s = g * prev
        delta = np.where(s > 0, np.minimum(delta * eta_plus, hi), delta)
        delta = np.where(s < 0, np.maximum(delta * eta_minus, lo), delta)
        g = np.where(s < 0, 0.0, g)  # iRprop-: forget the gradient after a sign flip
        return p - delta * np.sign(g), [delta, g]

    return step


def test_rprop_sign_logic_by_hand():
    opt = gdopt.rprop(0.1, eta_minus=0.5, eta_plus=2.0, min_step_size=0.03, max_step_size=0.3)
    p = {"w": jnp.zeros(4)}
    # coordinate 0: same sign -> grows to the cap; 1: flips -> skip, shrink to the floor;
    # 2: zero gradient -> no move, step kept; 3: flip after a zero
    seq = [
        [1.0, 1.0, 0.0, 1.0],
        [2.0, -1.0, 0.0, 0.0],
        [1.0, 1.0, 0.0, -1.0],
        [3.0, -1.0, 5.0, -1.0],
    ]
    expected_updates = [
        [-0.1, -0.1, 0.0, -0.1],
        [-0.2, 0.0, 0.0, 0.0],  # coordinate 1 flipped: skipped, Δ 0.1 -> 0.05
        [-0.3, -0.05, 0.0, 0.1],  # g·prev = 0 after the skip: Δ kept; coordinate 3 after a 0
        [-0.3, 0.0, -0.1, 0.2],  # coordinate 1 flips again: skipped, Δ -> max(0.025, 0.03)
    ]
    state = opt.init(p)
    update = jax.jit(opt.update)
    for g, e in zip(seq, expected_updates, strict=True):
        u, state = update({"w": jnp.array(g)}, state, p)
        np.testing.assert_allclose(u["w"], e, rtol=1e-6, atol=1e-7)
    steps = state.inner_state[0].step_sizes["w"]
    np.testing.assert_allclose(steps, [0.3, 0.03, 0.1, 0.2], rtol=1e-6)
    expected = np_trajectory(_np_rprop(0.01, 0.5, 1.2, 1e-6, 50.0), 2)
    assert_trajectories_close(run_trajectory(gdopt.rprop(0.01), PARAMS, GRADS), expected)


def _updates(opt, grads, params):
    update = jax.jit(opt.update)
    state = opt.init(params)
    out = []
    for g in grads:
        u, state = update(g, state, params)
        out.append(u)
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(learning_rate=0.01),
        dict(
            learning_rate=0.02, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-3, max_step_size=0.05
        ),
    ],
)
def test_rprop_matches_optax_one_step_later(kwargs):
    """optax 0.2.8 applies at step t the step computed at t-1 (its first update is 0); gdopt
    applies the current one, as the paper does. Step sizes and sign logic agree:
    ``optax_u[t+1] = 0 where the sign flips at t+1, else gdopt's u_t``."""
    import optax

    grads = gradient_sequence(PARAMS, steps=100)
    ours = jax.device_get(_updates(gdopt.rprop(**kwargs), grads, PARAMS))
    with oracle():
        theirs = jax.device_get(_updates(optax.rprop(**kwargs), grads, PARAMS))
    grads = jax.device_get(grads)
    assert all(np.abs(x).max() == 0.0 for x in jax.tree.leaves(theirs[0]))
    # step t+1's sign test compares g_{t+1} with the stored Δ_t sign(g_t) = -u_t
    expected = [
        jax.tree.map(lambda u, g: np.where(g * u > 0, 0.0, u), ours[t], grads[t + 1])
        for t in range(len(grads) - 1)
    ]
    assert_trajectories_close(theirs[1:], expected, rtol=1e-6, atol=0.0)


def test_rprop_learning_rate_cannot_be_a_schedule():
    with pytest.raises(TypeError, match="schedule"):
        gdopt.rprop(lambda c: 0.1)


# ----------------------------------------------------------------------------- SM3


@pytest.mark.parametrize(
    "kwargs", [dict(learning_rate=0.01), dict(learning_rate=0.1, momentum=0.5)]
)
def test_sm3_parity_with_optax(kwargs):
    """optax 0.2.8's SM3 fails on 0-D leaves, so its side sees the scalar leaf as shape (1,)
    (the same single accumulator); the trajectories are compared after reshaping back. (So
    the registry's sm3 row has no oracle case.)"""
    import optax

    grads = gradient_sequence(PARAMS, steps=100)
    apply = jax.jit(gdopt.apply_updates)
    ours = run_trajectory(gdopt.sm3(**kwargs), PARAMS, grads, apply)
    with oracle():
        theirs = run_trajectory(
            optax.sm3(**kwargs),
            scalars_as_vectors(PARAMS),
            [scalars_as_vectors(g) for g in grads],
            jax.jit(optax.apply_updates),
        )
    assert_trajectories_close(ours, [shaped_like(t, PARAMS) for t in theirs])


# ----------------------------------------------------------------------------- Adafactor


def test_adafactor_default_matches_paper_with_relative_step():
    """The paper's Adafactor: β̂_t = 1 - t^-0.8, update clipping d = 1, and the relative step
    α_t = max(1e-3, RMS(p)) · min(1e-2, 1/sqrt(t)) (gdopt's learning_rate=None)."""

    def step(t, p, g, st):
        beta = 1 - t**-0.8
        u, st0 = np_factored_rms(g, st[0], beta)
        u = u / max(1.0, np.sqrt(np.mean(u * u)) / 1.0)
        alpha = max(1e-3, np.sqrt(np.mean(p * p))) * min(1e-2, 1 / np.sqrt(t))
        return p - alpha * u, [st0]

    expected = np_trajectory(step, 1)
    ours = run_trajectory(gdopt.adafactor(min_dim_size_to_factor=2), PARAMS, GRADS)
    assert_trajectories_close(ours, expected)


def test_adafactor_decay_offset_keeps_the_first_step_finite():
    """β = 0 until ``decay_offset`` steps have passed (``tests/transforms/test_factored.py``),
    where optax's 1 - 0^-0.8 gives NaN."""
    opt = gdopt.adafactor(0.1, decay_offset=5)
    p = {"w": jnp.ones(3)}
    u, _ = opt.update({"w": jnp.ones(3)}, opt.init(p), p)
    assert bool(jnp.all(jnp.isfinite(u["w"])))


def test_adafactor_keeps_its_numeric_hyperparameters_in_the_state():
    state = gdopt.adafactor(momentum=0.9).init(PARAMS)
    # learning_rate=None (the paper's relative step) and weight_decay_rate=None are not stored
    assert sorted(gdopt.get_hyperparams(state)) == [
        "clipping_threshold",
        "decay_offset",
        "decay_rate",
        "eps",
        "momentum",
    ]


def test_adafactor_factoring_size_must_be_an_integer():
    with pytest.raises(TypeError, match="min_dim_size_to_factor"):
        gdopt.adafactor(min_dim_size_to_factor=2.5)
