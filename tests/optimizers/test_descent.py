"""``gdopt/optimizers/descent.py``: sgd (with momentum and Nesterov), noisy_sgd and polyak_sgd.

SGD's trajectories against a float64 NumPy reference (eager and jitted) and the sign of its
step; SGD with momentum reaching least squares' closed form; noisy SGD's annealed noise
(variance η / t^γ, fresh every step, fixed by its key); Polyak's step invariant to the scale of
the loss; the error that says how to pass Polyak's ``value``. The cross-cutting tests (oracle
parity, convergence, dtypes, bad values...) are the registry's (``tests/test_optimizers.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt.problems import ill_conditioned_quadratic
from tests.helpers import assert_trajectories_close, run_trajectory
from tests.optimizers.references import GRADS, PARAMS, np_leaves


def np_sgd(params, grads, lr, momentum=None, nesterov=False):
    """SGD, heavy ball (Polyak, 1964) and Nesterov's form (Sutskever et al., 2013) in float64."""
    p = np_leaves(params)
    buf = [np.zeros_like(x) for x in p]
    traj = []
    for g in grads:
        g = np_leaves(g)
        for i in range(len(p)):
            if momentum is None:
                d = g[i]
            else:
                buf[i] = g[i] + momentum * buf[i]
                d = g[i] + momentum * buf[i] if nesterov else buf[i]
            p[i] = p[i] - lr * d
        traj.append(jax.tree.unflatten(jax.tree.structure(params), list(p)))
    return traj


REFERENCE_CASES = [
    ("sgd", dict(learning_rate=0.05), dict(lr=0.05)),
    ("sgd-momentum", dict(learning_rate=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9)),
    (
        "sgd-nesterov",
        dict(learning_rate=0.05, momentum=0.8, nesterov=True),
        dict(lr=0.05, momentum=0.8, nesterov=True),
    ),
]


@pytest.mark.parametrize(
    "kwargs,ref", [c[1:] for c in REFERENCE_CASES], ids=[c[0] for c in REFERENCE_CASES]
)
def test_sgd_matches_the_reference(kwargs, ref):
    opt = gdopt.sgd(**kwargs)
    expected = np_sgd(PARAMS, GRADS, **ref)
    for jit in (False, True):
        traj = run_trajectory(opt, PARAMS, GRADS, apply=gdopt.apply_updates, jit=jit)
        assert_trajectories_close(traj, expected, rtol=2e-5, atol=1e-6)


def test_sgd_sign_descends():
    opt = gdopt.sgd(0.5)
    p = {"w": jnp.array(1.0)}
    u, _ = opt.update({"w": jnp.array(2.0)}, opt.init(p), p)
    assert float(u["w"]) == -1.0


def test_least_squares_reaches_closed_form():
    kx, kn = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (128, 4))
    w_true = jnp.array([1.5, -2.0, 0.5, 3.0])
    y = x @ w_true + 0.1 * jax.random.normal(kn, (128,))
    loss = lambda p: jnp.mean((x @ p["w"] + p["b"] - y) ** 2)
    opt = gdopt.sgd(0.1, momentum=0.9)
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}

    @jax.jit
    def run(params):
        def body(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (gdopt.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=500)
        return p

    p = run(params)
    xa = np.hstack([np.asarray(x, np.float64), np.ones((128, 1))])
    sol = np.linalg.lstsq(xa, np.asarray(y, np.float64), rcond=None)[0]
    np.testing.assert_allclose(np.append(p["w"], p["b"]), sol, rtol=1e-4, atol=1e-5)


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


def test_polyak_step_is_invariant_to_the_scale_of_the_loss():
    """Polyak's step ``(f - f*) / ||g||² · g`` is unchanged when ``f`` is multiplied by ``c``.

    So ``polyak_sgd`` (with a cap ``α_max`` that does not bind) must follow the same
    trajectory on ``c · sum((x - 1)²)`` for every ``c > 0``: from (0, 0) each step halves the
    distance to (1, 1), whatever ``c``.
    """
    opt = gdopt.polyak_sgd(max_learning_rate=1e8)

    def trajectory(c):
        loss = lambda x: c * 2.0 * ill_conditioned_quadratic(x - 1.0, 1.0)  # c · sum((x - 1)²)

        def body(carry, _):
            x, state = carry
            value, grad = jax.value_and_grad(loss)(x)
            updates, state = opt.update(grad, state, x, value=value)
            x = gdopt.apply_updates(x, updates)
            return (x, state), x

        return jax.lax.scan(body, (jnp.zeros(2), opt.init(jnp.zeros(2))), None, length=12)[1]

    expected = 1.0 - 0.5 ** np.arange(1, 13)
    for c in (1.0, 1e-4):
        traj = np.asarray(jax.jit(trajectory, static_argnums=0)(c))
        np.testing.assert_allclose(
            traj[:, 0], expected, rtol=1e-5, err_msg=f"polyak_sgd on {c} · parabola"
        )


def test_polyak_without_value_says_how_to_pass_it():
    opt = gdopt.polyak_sgd()
    p = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"opt.update\(grads, state, params, value=loss\)"):
        opt.update(jnp.ones(2), opt.init(p), p)
