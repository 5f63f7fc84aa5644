"""``gdopt/optimizers/adam_family.py``: Adam, AdamW, RAdam, AdaBelief, Yogi, AdEMAMix's
schedulers (and the rest of the family through the registry).

Trajectories against float64 NumPy references written from the papers (Kingma & Ba's
Algorithm 1 with AdamW's decoupled decay and Nesterov's form; RAdam on both sides of its
threshold; AdaBelief; Yogi); Adam's first step with and without ``jit`` (chex variants) and its
bias correction; bfloat16 moments (``mu_dtype``/``nu_dtype``) kept under ``lax.cond``;
AdEMAMix's α and β3 warm-ups against the paper and their bad ``warmup``. Oracle parity,
convergence, dtypes and bad values of every optimizer here are the registry's.
"""

from __future__ import annotations

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from tests.helpers import assert_trajectories_close, run_trajectory
from tests.optimizers.references import (
    GRADS,
    PARAMS,
    np_leaves,
    np_trajectory,
    zeros_if_none,
)
from tests.registry import B2_F32

# ----------------------------------------------------------------------------- Adam, AdamW


_GRAD = st.floats(-1e3, 1e3, allow_nan=False, width=32).filter(lambda x: x == 0 or abs(x) > 1e-30)


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
@hypothesis.given(st.lists(_GRAD, min_size=1, max_size=5), st.sampled_from([1e-3, 0.1, 1.0]))
def test_adams_first_step_is_the_rate_times_the_gradients_sign(grads, lr):
    """After bias correction ``m̂_1 = g`` and ``v̂_1 = g²``, so the first step is
    ``-α g / (|g| + ε)``: about ``-α sign(g)`` whatever the gradient's scale (a missing
    correction gives ``-α (1 - β1) / sqrt(1 - β2) ≈ -3.16 α``; a wrong sign, ``+α``)."""
    g = jnp.asarray(grads, jnp.float32)
    opt = gdopt.adam(lr)
    u, _ = opt.update(g, opt.init(jnp.zeros_like(g)), jnp.zeros_like(g))
    g64 = np.asarray(g, np.float64)
    expected = -lr * g64 / (np.abs(g64) + 1e-8)
    np.testing.assert_allclose(np.asarray(u, np.float64), expected, rtol=2e-5, atol=1e-12)


def np_adam(params, grads, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, wd=0.0, nesterov=False):
    """Kingma & Ba (2015) Algorithm 1 in float64 NumPy; AdamW decay (Loshchilov & Hutter)."""
    p = np_leaves(params)
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    traj = []
    for t, g in enumerate(grads, start=1):
        g = np_leaves(g)
        new = []
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            if nesterov:
                m_hat = b1 * m[i] / (1 - b1 ** (t + 1)) + (1 - b1) * g[i] / (1 - b1**t)
            else:
                m_hat = m[i] / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            d = m_hat / (np.sqrt(v_hat + eps_root) + eps)
            new.append(p[i] - lr * (d + wd * p[i]))
        p = new
        traj.append(jax.tree.unflatten(jax.tree.structure(params), p))
    return traj


REFERENCE_CASES = [
    ("adam", "adam", dict(learning_rate=0.01), dict(lr=0.01)),
    (
        "adam-custom",
        "adam",
        dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
        dict(lr=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
    ),
    (
        "adam-nesterov",
        "adam",
        dict(learning_rate=0.01, nesterov=True),
        dict(lr=0.01, nesterov=True),
    ),
    ("adamw", "adamw", dict(learning_rate=0.01, weight_decay=0.1), dict(lr=0.01, wd=0.1)),
]


@pytest.mark.parametrize(
    "name,kwargs,ref", [c[1:] for c in REFERENCE_CASES], ids=[c[0] for c in REFERENCE_CASES]
)
def test_adam_matches_the_paper(name, kwargs, ref):
    opt = getattr(gdopt, name)(**kwargs)
    expected = np_adam(PARAMS, GRADS, **ref)
    for jit in (False, True):
        traj = run_trajectory(opt, PARAMS, GRADS, apply=gdopt.apply_updates, jit=jit)
        assert_trajectories_close(traj, expected, rtol=2e-5, atol=1e-6)


class TestChexVariants(chex.TestCase):
    """The same first Adam step with and without jit (chex variants)."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_first_adam_step_is_signed_learning_rate(self):
        opt = gdopt.adam(0.1)
        params = {"w": jnp.array([1.0, -2.0, 3.0])}
        grads = {"w": jnp.array([0.5, -4.0, 0.0])}

        @self.variant
        def step(g, s, p):
            return opt.update(g, s, p)

        updates, _ = step(grads, opt.init(params), params)
        # t=1: m_hat = g, v_hat = g^2, so the step is -lr * g / (|g| + eps).
        np.testing.assert_allclose(updates["w"], [-0.1, 0.1, 0.0], rtol=1e-6, atol=1e-7)


def test_adam_bias_correction_matters():
    """Without bias correction the first step would be (1-b1)/sqrt(1-b2) = 3.16x smaller."""
    opt = gdopt.adam(1.0, b1=0.9, b2=0.999, eps=0.0)
    p = {"w": jnp.array(0.0)}
    u, s = opt.update({"w": jnp.array(2.0)}, opt.init(p), p)
    assert float(u["w"]) == pytest.approx(-1.0, rel=1e-6)
    u, _ = opt.update({"w": jnp.array(2.0)}, s, p)
    assert float(u["w"]) == pytest.approx(-1.0, rel=1e-5)


def test_mu_dtype_bfloat16_halves_first_moment():
    p = {"w": jnp.ones((1000,))}
    s = gdopt.adam(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16).init(p)
    inner = s.inner_state[0]
    assert inner.mu["w"].dtype == jnp.bfloat16 and inner.nu["w"].dtype == jnp.bfloat16
    # the state keeps its dtype under lax.cond
    opt = gdopt.adam(1e-3, mu_dtype=jnp.bfloat16)
    s = opt.init(p)
    out = jax.lax.cond(True, lambda s: opt.update({"w": jnp.ones(1000)}, s, p)[1], lambda s: s, s)
    assert out.inner_state[0].mu["w"].dtype == jnp.bfloat16


# ----------------------------------------------------------------------------- RAdam, AdaBelief, Yogi


def _np_radam(lr, b1, b2, eps, threshold):
    rho_inf = 2 / (1 - b2) - 1
    rectified = []

    def step(t, p, g, st):
        m, v = zeros_if_none(p, st[0]), zeros_if_none(p, st[1])
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
    expected = np_trajectory(step, 2)
    flags = rectified[:: len(jax.tree.leaves(PARAMS))]
    assert not flags[0] and flags[-1]  # both branches are exercised in these 10 steps
    ours = run_trajectory(gdopt.radam(0.01, threshold=threshold), PARAMS, GRADS)
    assert_trajectories_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_adabelief_matches_paper():
    b1, b2, eps, eps_root, lr = 0.9, 0.99, 1e-8, 1e-12, 0.01

    def step(t, p, g, st):
        m, s = zeros_if_none(p, st[0]), zeros_if_none(p, st[1])
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps_root
        d = (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)
        return p - lr * d, [m, s]

    expected = np_trajectory(step, 2)
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

    expected = np_trajectory(step, 2)
    ours = run_trajectory(gdopt.yogi(lr, b2=b2, eps=eps), PARAMS, GRADS)
    assert_trajectories_close(ours, expected)


# ----------------------------------------------------------------------------- AdEMAMix


def test_ademamix_schedulers_follow_the_paper():
    a = gdopt.ademamix_alpha_scheduler(5.0, 10)
    assert [round(float(a(t)), 4) for t in (0, 5, 10, 100)] == [0.0, 2.5, 5.0, 5.0]
    b = gdopt.ademamix_beta3_scheduler(0.9, 0.9999, 100)
    # Halfway in 1/ln(beta): ln(b3(50)) = 2 ln(0.9) ln(0.9999) / (ln(0.9) + ln(0.9999)).
    half = np.exp(2 * np.log(0.9) * np.log(0.9999) / (np.log(0.9) + np.log(0.9999)))
    np.testing.assert_allclose(float(b(50)), half, rtol=1e-6)


def test_ademamix_scheduler_needs_a_warmup():
    with pytest.raises(ValueError, match="warmup"):
        gdopt.ademamix_alpha_scheduler(1.0, 0)
