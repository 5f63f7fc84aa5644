"""The adaptive / sign / layer-wise / memory-lean optimizers and transforms, against their papers.

Hand-computed steps (float64 NumPy, written from the papers' formulas) on the fixed pytree,
the parabola ``sum((x - 1)²)`` reached by every optimizer in float32 (bfloat16 kept and finite),
bad hyperparameters, vmap over learning rates, state dtypes under ``lax.cond``, ``None``
leaves, the noise statistics of noisy SGD, and the deliberate differences from optax.
Parity with optax lives in ``test_optimizers_adaptive_parity.py``.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    run_trajectory,
)

# make_params' 0-D leaf is weak-typed; the state built from it would turn strongly typed after
# the first update and make every jitted trajectory compile twice, so strip the weak type.
PARAMS = jax.tree.map(lambda x: x.astype(x.dtype), make_params())
GRADS = gradient_sequence(PARAMS, steps=10)
TREEDEF = jax.tree.structure(PARAMS)
B2_F32 = float(np.float32(0.999))  # gdopt stores hyperparameters in float32


def _np_leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _np_trajectory(step, n_state, grads=GRADS, params=PARAMS):
    """Run ``step(t, p, g, state) -> (p, state)`` leafwise in float64; t starts at 1."""
    p = _np_leaves(params)
    states = [[None] * n_state for _ in p]
    traj = []
    for t, g in enumerate(grads, start=1):
        g = _np_leaves(g)
        for i in range(len(p)):
            p[i], states[i] = step(t, p[i], g[i], states[i])
        traj.append(jax.tree.unflatten(TREEDEF, [x.copy() for x in p]))
    return traj


def _zeros(x, s):
    return np.zeros_like(x) if s is None else s


# ----------------------------------------------------------------------------- hand-computed


def _np_radam(lr, b1, b2, eps, threshold):
    rho_inf = 2 / (1 - b2) - 1
    rectified = []

    def step(t, p, g, st):
        m, v = _zeros(p, st[0]), _zeros(p, st[1])
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho >= threshold:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            d = r * m_hat / (np.sqrt(v / (1 - b2**t)) + eps)
        else:
            d = m_hat
        rectified.append(rho >= threshold)
        return p - lr * d, [m, v]

    return step, rectified


@pytest.mark.parametrize("threshold", [5.0, 4.5])
def test_radam_matches_paper_on_both_sides_of_the_threshold(threshold):
    step, rectified = _np_radam(0.01, 0.9, B2_F32, 1e-8, threshold)
    expected = _np_trajectory(step, 2)
    flags = rectified[:: len(jax.tree.leaves(PARAMS))]
    assert not flags[0] and flags[-1]  # both branches are exercised in these 10 steps
    ours = run_trajectory(gdopt.radam(0.01, threshold=threshold), PARAMS, GRADS)
    assert_trajectories_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_adabelief_matches_paper():
    b1, b2, eps, eps_root, lr = 0.9, 0.99, 1e-8, 1e-12, 0.01

    def step(t, p, g, st):
        m, s = _zeros(p, st[0]), _zeros(p, st[1])
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps_root
        d = (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)
        return p - lr * d, [m, s]

    expected = _np_trajectory(step, 2)
    ours = run_trajectory(gdopt.adabelief(lr, b2=b2, eps=eps, eps_root=eps_root), PARAMS, GRADS)
    assert_trajectories_close(ours, expected)


def test_yogi_matches_paper():
    b1, b2, eps, lr, v0 = 0.9, 0.99, 1e-3, 0.01, 1e-6

    def step(t, p, g, st):
        m = np.full_like(p, v0) if st[0] is None else st[0]
        v = np.full_like(p, v0) if st[1] is None else st[1]
        m = b1 * m + (1 - b1) * g
        v = v - (1 - b2) * np.sign(v - g * g) * g * g
        d = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        return p - lr * d, [m, v]

    expected = _np_trajectory(step, 2)
    ours = run_trajectory(gdopt.yogi(lr, b2=b2, eps=eps), PARAMS, GRADS)
    assert_trajectories_close(ours, expected)


def test_lion_matches_paper():
    b1, b2, lr, wd = 0.9, 0.99, 0.01, 0.1

    def step(t, p, g, st):
        m = _zeros(p, st[0])
        c = b1 * m + (1 - b1) * g
        p = p - lr * (np.sign(c) + wd * p)
        return p, [b2 * m + (1 - b2) * g]

    expected = _np_trajectory(step, 1)
    ours = run_trajectory(gdopt.lion(lr, weight_decay=wd), PARAMS, GRADS)
    assert_trajectories_close(ours, expected)


def test_lamb_trust_ratio_matches_paper():
    b1, b2, eps, lr, wd = 0.9, 0.999, 1e-6, 0.01, 0.1

    def step(t, p, g, st):
        m, v = _zeros(p, st[0]), _zeros(p, st[1])
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps) + wd * p
        ratio = np.linalg.norm(p) / np.linalg.norm(r)
        return p - lr * ratio * r, [m, v]

    expected = _np_trajectory(step, 2)
    ours = run_trajectory(gdopt.lamb(lr, weight_decay=wd), PARAMS, GRADS)
    assert_trajectories_close(ours, expected)


def test_trust_ratio_is_one_where_a_norm_is_zero():
    t = gdopt.scale_by_trust_ratio(trust_coefficient=0.5)
    p = {"zero_param": jnp.zeros(3), "w": jnp.array([3.0, 4.0]), "zero_update": jnp.ones(2)}
    g = {
        "zero_param": jnp.array([1.0, 2.0, 2.0]),
        "w": jnp.array([0.0, 2.0]),
        "zero_update": jnp.zeros(2),
    }
    u, _ = t.update(g, t.init(p), p)
    np.testing.assert_allclose(u["zero_param"], [1.0, 2.0, 2.0])
    np.testing.assert_allclose(u["w"], [0.0, 2.5])  # 0.5 · 5 / 2 · (0, 2)
    np.testing.assert_allclose(u["zero_update"], [0.0, 0.0])


def _np_adafactor_scale(g, state, beta, eps=1e-30):
    """One factored second-moment step of Shazeer & Stern (2018), Alg. 4/5, with row/col sums
    over the last two axes (leading axes are batch axes); unfactored for 0-D / 1-D."""
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


def test_adafactor_default_matches_paper_with_relative_step():
    """The paper's Adafactor: β̂_t = 1 - t^-0.8, update clipping d = 1, and the relative step
    α_t = max(1e-3, RMS(p)) · min(1e-2, 1/sqrt(t)) (gdopt's learning_rate=None)."""

    def step(t, p, g, st):
        beta = 1 - t**-0.8
        u, st0 = _np_adafactor_scale(g, st[0], beta)
        u = u / max(1.0, np.sqrt(np.mean(u * u)) / 1.0)
        alpha = max(1e-3, np.sqrt(np.mean(p * p))) * min(1e-2, 1 / np.sqrt(t))
        return p - alpha * u, [st0]

    expected = _np_trajectory(step, 1)
    ours = run_trajectory(gdopt.adafactor(min_dim_size_to_factor=2), PARAMS, GRADS)
    assert_trajectories_close(ours, expected)


def test_factored_moment_state_and_reconstruction():
    t = gdopt.scale_by_factored_rms(min_dim_size_to_factor=3)
    g = {"m": GRADS[0]["dense"]["w"], "v": GRADS[0]["dense"]["b"]}  # (4, 3) and (3,)
    state = t.init(g)
    assert state.v_row["m"].shape == (3,) and state.v_col["m"].shape == (4,)
    assert state.v["m"].shape == (1,) and state.v["v"].shape == (3,)  # optax's unused slot
    u, state = t.update(g, state)
    g2 = np.asarray(g["m"], np.float64) ** 2 + 1e-30
    np.testing.assert_allclose(state.v_row["m"], g2.mean(axis=0), rtol=1e-6)  # β_1 = 0
    np.testing.assert_allclose(state.v_col["m"], g2.mean(axis=1), rtol=1e-6)
    u2, state = t.update(g, state)  # β_2 = 1 - 2^-0.8 on the same gradient: same statistics
    expected, _ = _np_adafactor_scale(np.asarray(g["m"], np.float64), None, 0.0)
    np.testing.assert_allclose(u["m"], expected, rtol=1e-5)
    np.testing.assert_allclose(u2["m"], expected, rtol=1e-5)
    np.testing.assert_allclose(np.abs(u["v"]), 1.0, rtol=1e-5)  # unfactored, β_1 = 0


def test_adafactor_decay_offset_holds_fresh_statistics_then_decays():
    """gdopt holds β = 0 until decay_offset steps have passed (optax returns NaN there)."""
    t = gdopt.scale_by_factored_rms(factored=False, step_offset=3)
    g = [jnp.array([1.0, 2.0]), jnp.array([3.0, 1.0]), jnp.array([2.0, 2.0])] * 2
    state = t.init(g[0])
    for k, gk in enumerate(g):
        _, state = t.update(gk, state)
        if k < 4:  # steps 1..4: t = max(count - 3 + 1, 1) = 1, β = 0
            np.testing.assert_allclose(state.v, np.asarray(gk) ** 2, rtol=1e-6)
    beta5 = 1 - 2.0**-0.8
    v5 = beta5 * np.asarray(g[3]) ** 2 + (1 - beta5) * np.asarray(g[4]) ** 2
    beta6 = 1 - 3.0**-0.8
    np.testing.assert_allclose(state.v, beta6 * v5 + (1 - beta6) * np.asarray(g[5]) ** 2, rtol=1e-5)
    opt = gdopt.adafactor(0.1, decay_offset=5)
    p = {"w": jnp.ones(3)}
    u, _ = opt.update({"w": jnp.ones(3)}, opt.init(p), p)
    assert bool(jnp.all(jnp.isfinite(u["w"])))


def _np_rprop(lr, eta_minus, eta_plus, lo, hi):
    def step(t, p, g, st):
        delta = np.full_like(p, lr) if st[0] is None else st[0]
        prev = _zeros(p, st[1])
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
    for g, e in zip(seq, expected_updates, strict=True):
        u, state = opt.update({"w": jnp.array(g)}, state, p)
        np.testing.assert_allclose(u["w"], e, rtol=1e-6, atol=1e-7)
    steps = state.inner_state[0].step_sizes["w"]
    np.testing.assert_allclose(steps, [0.3, 0.03, 0.1, 0.2], rtol=1e-6)
    expected = _np_trajectory(_np_rprop(0.01, 0.5, 1.2, 1e-6, 50.0), 2)
    assert_trajectories_close(run_trajectory(gdopt.rprop(0.01), PARAMS, GRADS), expected)


def test_adadelta_default_descends_like_the_paper():
    """optax 0.2.8's adadelta() (learning_rate=None) ascends; gdopt's is Zeiler's method."""
    rho, eps = 0.9, 1e-6

    def step(t, p, g, st):
        eg, ex = _zeros(p, st[0]), _zeros(p, st[1])
        eg = rho * eg + (1 - rho) * g * g
        delta = np.sqrt(ex + eps) / np.sqrt(eg + eps) * g
        return p - delta, [eg, rho * ex + (1 - rho) * delta * delta]

    expected = _np_trajectory(step, 2)
    assert_trajectories_close(run_trajectory(gdopt.adadelta(), PARAMS, GRADS), expected)


# ----------------------------------------------------------------------------- parabola


def _linear_decay(peak, steps):
    return lambda count: peak * (1.0 - count / steps)


# name -> (optimizer, steps, tolerance on max |x - 1| in float32), starting from x = 0.5
PARABOLA = {
    "noisy_sgd": (lambda: gdopt.noisy_sgd(0.1, key=0), 300, 0.05),
    "sign_sgd": (lambda: gdopt.sign_sgd(_linear_decay(0.02, 300)), 300, 1e-3),
    "signum": (lambda: gdopt.signum(_linear_decay(0.02, 300)), 300, 1e-3),
    "nadam": (lambda: gdopt.nadam(0.05), 300, 1e-3),
    "nadamw": (lambda: gdopt.nadamw(0.05, weight_decay=0.0), 300, 1e-3),
    "radam": (lambda: gdopt.radam(0.05), 300, 1e-3),
    "amsgrad": (lambda: gdopt.amsgrad(0.05), 300, 1e-3),
    "adamax": (lambda: gdopt.adamax(0.05), 300, 1e-3),
    "adamaxw": (lambda: gdopt.adamaxw(0.05, weight_decay=0.0), 300, 1e-3),
    "adabelief": (lambda: gdopt.adabelief(0.05), 300, 1e-3),
    "yogi": (lambda: gdopt.yogi(0.05), 300, 1e-3),
    "adadelta": (lambda: gdopt.adadelta(eps=1e-3), 300, 1e-3),
    "rprop": (lambda: gdopt.rprop(0.1), 300, 1e-3),
    "novograd": (lambda: gdopt.novograd(_linear_decay(0.05, 300)), 300, 1e-3),
    "fromage": (lambda: gdopt.fromage(_linear_decay(0.05, 300)), 300, 1e-3),
    "sm3": (lambda: gdopt.sm3(0.5), 300, 1e-3),
    "lamb": (lambda: gdopt.lamb(_linear_decay(0.05, 300)), 300, 1e-3),
    "lars": (lambda: gdopt.lars(_linear_decay(1.0, 300), trust_coefficient=0.05), 300, 1e-2),
    "adafactor": (lambda: gdopt.adafactor(), 300, 1e-3),
    "lion": (lambda: gdopt.lion(_linear_decay(0.02, 300)), 300, 1e-3),
}
ALL_OPTIMIZERS = sorted(PARABOLA)


def _parabola(opt, steps, dtype):
    loss = lambda p: jnp.sum((p["w"].astype(jnp.float32) - 1.0) ** 2)

    @jax.jit
    def run(p):
        def body(_, carry):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return gdopt.apply_updates(p, u), s

        return jax.lax.fori_loop(0, steps, body, (p, opt.init(p)))

    return run({"w": jnp.full((2, 3), 0.5, dtype)})


@pytest.mark.parametrize("name", ALL_OPTIMIZERS)
def test_reaches_parabola_minimum_and_keeps_dtypes(name):
    make, steps, tol = PARABOLA[name]
    opt = make()
    params, _ = _parabola(opt, steps, jnp.float32)
    assert float(jnp.max(jnp.abs(params["w"] - 1.0))) < tol
    params, state = _parabola(opt, steps, jnp.bfloat16)  # fori_loop: state dtypes are fixed
    assert params["w"].dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(params["w"].astype(jnp.float32))))
    assert all(
        bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state) if x.dtype.kind == "f"
    )


# ----------------------------------------------------------------------------- bad input


def _bad_cases():
    cases = []
    for name in ALL_OPTIMIZERS:
        sig = inspect.signature(getattr(gdopt, name)).parameters
        for arg, bad in [
            ("learning_rate", -0.1),
            ("b1", 1.0),
            ("b2", -0.1),
            ("beta", 1.5),
            ("rho", 1.0),
            ("momentum", 1.0),
            ("eps", -1e-8),
            ("eps_root", -1e-8),
            ("weight_decay", -0.1),
        ]:
            if arg in sig:
                cases.append((name, arg, bad))
    cases += [
        ("noisy_sgd", "eta", -1.0),
        ("noisy_sgd", "gamma", -0.5),
        ("rprop", "eta_minus", 0.0),
        ("rprop", "eta_plus", 0.5),
        ("rprop", "min_step_size", -1.0),
        ("rprop", "max_step_size", 1e-9),  # below min_step_size
        ("fromage", "min_norm", -1.0),
        ("lars", "trust_coefficient", -1.0),
        ("adafactor", "decay_rate", -0.8),
        ("adafactor", "clipping_threshold", 0.0),
        ("adafactor", "weight_decay_rate", -0.1),
        ("radam", "threshold", float("nan")),
        ("radam", "threshold", 3.0),
    ]
    return cases


BAD = _bad_cases()


@pytest.mark.parametrize("name,arg,bad", BAD, ids=[f"{n}-{a}" for n, a, _ in BAD])
def test_bad_hyperparameters_name_the_argument(name, arg, bad):
    kwargs = {"learning_rate": 0.1, arg: bad}
    with pytest.raises(ValueError, match=arg):
        getattr(gdopt, name)(**kwargs)


def test_other_bad_input_is_explained():
    p = {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match="schedule"):
        gdopt.rprop(lambda c: 0.1)
    with pytest.raises(ValueError, match="mode"):
        gdopt.scale_by_lion(mode="soft")
    with pytest.raises(TypeError, match="min_dim_size_to_factor"):
        gdopt.adafactor(min_dim_size_to_factor=2.5)
    with pytest.raises(ValueError, match=r"update\(grads, state, params\)"):
        t = gdopt.scale_by_novograd()
        t.update(p, t.init(p))
    with pytest.raises(ValueError, match=r"update\(grads, state, params\)"):
        t = gdopt.scale_by_trust_ratio()
        t.update(p, t.init(p))
    with pytest.raises(ValueError, match=r"update\(grads, state, params\)"):
        t = gdopt.scale_by_param_block_rms()
        t.update(p, t.init(p))
    with pytest.raises(TypeError, match="real"):
        gdopt.scale_by_sm3().init({"z": jnp.ones(2, jnp.complex64)})


# ----------------------------------------------------------------------------- vmap, dtypes


@pytest.mark.parametrize(
    "make",
    [
        lambda lr: gdopt.lion(lr),
        lambda lr: gdopt.adabelief(lr),
        lambda lr: gdopt.rprop(lr),
        lambda lr: gdopt.fromage(lr),
    ],
    ids=["lion", "adabelief", "rprop", "fromage"],
)
def test_vmap_over_learning_rates(make):
    grads = GRADS[:5]

    def final(lr):
        opt = make(lr)
        p, s = PARAMS, opt.init(PARAMS)
        for g in grads:
            u, s = opt.update(g, s, p)
            p = gdopt.apply_updates(p, u)
        return p

    lrs = jnp.array([0.001, 0.01, 0.1])
    swept = jax.jit(jax.vmap(final))(lrs)
    single = jax.jit(final)
    for i in range(len(lrs)):
        one = jax.tree.map(lambda x: x[i], swept)
        assert_trajectories_close([one], [single(lrs[i])], rtol=1e-5, atol=1e-6)
    assert not np.allclose(swept["layers"][0][0], swept["layers"][0][2])


MOMENT_DTYPE_TRANSFORMS = {
    "scale_by_amsgrad": lambda d: gdopt.scale_by_amsgrad(mu_dtype=d, nu_dtype=d),
    "scale_by_adamax": lambda d: gdopt.scale_by_adamax(mu_dtype=d, nu_dtype=d),
    "scale_by_belief": lambda d: gdopt.scale_by_belief(mu_dtype=d, nu_dtype=d),
    "scale_by_yogi": lambda d: gdopt.scale_by_yogi(mu_dtype=d, nu_dtype=d),
    "scale_by_radam": lambda d: gdopt.scale_by_radam(mu_dtype=d, nu_dtype=d),
    "scale_by_novograd": lambda d: gdopt.scale_by_novograd(mu_dtype=d, nu_dtype=d),
    "scale_by_lion": lambda d: gdopt.scale_by_lion(mu_dtype=d),
}


@pytest.mark.parametrize("name", sorted(MOMENT_DTYPE_TRANSFORMS))
def test_moment_dtypes_are_kept_across_steps_and_under_cond(name):
    t = MOMENT_DTYPE_TRANSFORMS[name](jnp.bfloat16)
    state = t.init(PARAMS)
    moments = [x for f in ("mu", "nu", "nu_max") for x in jax.tree.leaves(getattr(state, f, []))]
    assert moments and all(x.dtype == jnp.bfloat16 for x in moments)
    dtypes = jax.tree.map(lambda x: x.dtype, state)

    @jax.jit
    def step(g, state, pred):
        return jax.lax.cond(
            pred, lambda: t.update(g, state, PARAMS), lambda: (g, state)
        )  # cond needs both branches to return identical dtypes

    for i, g in enumerate(GRADS[:3]):
        u, state = step(g, state, i != 1)
    assert jax.tree.map(lambda x: x.dtype, state) == dtypes
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(u))
    assert all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))) for x in jax.tree.leaves(state))


ALL_TRANSFORMS = {
    "scale_by_amsgrad": lambda: gdopt.scale_by_amsgrad(),
    "scale_by_adamax": lambda: gdopt.scale_by_adamax(),
    "scale_by_belief": lambda: gdopt.scale_by_belief(),
    "scale_by_yogi": lambda: gdopt.scale_by_yogi(),
    "scale_by_adadelta": lambda: gdopt.scale_by_adadelta(),
    "scale_by_radam": lambda: gdopt.scale_by_radam(),
    "scale_by_rprop": lambda: gdopt.scale_by_rprop(0.1),
    "scale_by_novograd": lambda: gdopt.scale_by_novograd(weight_decay=0.1),
    "scale_by_trust_ratio": lambda: gdopt.scale_by_trust_ratio(),
    "scale_by_sm3": lambda: gdopt.scale_by_sm3(),
    "scale_by_factored_rms": lambda: gdopt.scale_by_factored_rms(min_dim_size_to_factor=2),
    "scale_by_lion": lambda: gdopt.scale_by_lion(),
    "scale_by_sign": lambda: gdopt.scale_by_sign(),
    "scale_by_param_block_norm": lambda: gdopt.scale_by_param_block_norm(),
    "scale_by_param_block_rms": lambda: gdopt.scale_by_param_block_rms(),
}


@pytest.mark.parametrize("name", sorted(ALL_TRANSFORMS))
def test_bfloat16_params_and_none_leaves_pass_through(name):
    t = ALL_TRANSFORMS[name]()
    bf = lambda x: jnp.asarray(x, jnp.bfloat16)
    params = {"m": bf(PARAMS["dense"]["w"]), "v": bf(PARAMS["layers"][0]), "frozen": None}
    grads = {"m": bf(GRADS[0]["dense"]["w"]), "v": bf(GRADS[0]["layers"][0]), "frozen": None}
    state = t.init(params)
    dtypes = jax.tree.map(lambda x: x.dtype, state)
    update = jax.jit(t.update)
    for _ in range(2):
        u, state = update(grads, state, params)
    assert jax.tree.map(lambda x: x.dtype, state) == dtypes
    assert u["frozen"] is None
    assert u["m"].dtype == jnp.bfloat16 and u["v"].dtype == jnp.bfloat16
    assert all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))) for x in jax.tree.leaves(u))


# ----------------------------------------------------------------------------- noisy SGD


def test_noisy_sgd_noise_follows_the_annealing_schedule():
    eta, gamma, n = 0.5, 0.55, 20_000
    opt = gdopt.noisy_sgd(1.0, eta=eta, gamma=gamma, key=7)
    p = {"w": jnp.zeros(n)}
    update = jax.jit(opt.update)
    state = opt.init(p)
    draws = []
    for _ in range(20):
        u, state = update({"w": jnp.zeros(n)}, state, p)
        draws.append(np.asarray(-u["w"], np.float64))
    for t in (1, 5, 20):
        x = draws[t - 1]
        var = eta / t**gamma
        assert abs(x.var() / var - 1) < 0.05, t
        assert abs(x.mean()) < 4 * np.sqrt(var / n), t
    assert abs(np.corrcoef(draws[0], draws[1])[0, 1]) < 0.05  # fresh noise every step
    again = gdopt.noisy_sgd(1.0, eta=eta, gamma=gamma, key=7)
    u1, _ = again.update({"w": jnp.zeros(n)}, again.init(p), p)
    np.testing.assert_allclose(-np.asarray(u1["w"], np.float64), draws[0], rtol=1e-6, atol=1e-7)
    other = gdopt.noisy_sgd(1.0, eta=eta, gamma=gamma, key=8)
    u2, _ = other.update({"w": jnp.zeros(n)}, other.init(p), p)
    assert not np.array_equal(np.asarray(u2["w"]), np.asarray(u1["w"]))


def test_named_optimizers_keep_hyperparameters_in_state():
    state = gdopt.adafactor(momentum=0.9).init(PARAMS)
    # learning_rate=None (the paper's relative step) and weight_decay_rate=None are not stored
    assert sorted(gdopt.get_hyperparams(state)) == [
        "clipping_threshold",
        "decay_offset",
        "decay_rate",
        "eps",
        "momentum",
    ]
    opt = gdopt.lion(0.01)
    update = jax.jit(opt.update)
    state = opt.init(PARAMS)
    u1, _ = update(GRADS[0], state, PARAMS)
    u2, _ = update(GRADS[0], gdopt.set_hyperparams(state, learning_rate=0.02), PARAMS)
    np.testing.assert_allclose(
        np.asarray(u2["layers"][0]), 2 * np.asarray(u1["layers"][0]), rtol=1e-6
    )
