"""Tests of the line searches (Armijo backtracking, strong-Wolfe zoom) and L-BFGS."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import gdopt
from gdopt import lbfgs
from gdopt.transforms.linesearch import (
    ScaleByZoomLinesearchState,
    scale_by_backtracking_linesearch,
    scale_by_lbfgs,
    scale_by_zoom_linesearch,
    value_and_grad_from_state,
)


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def _solver(opt, f, vg_from_state=value_and_grad_from_state):
    """A jitted step ``(x, state) -> (x, state, eta)`` of a line-search optimizer."""
    vg = vg_from_state(f)

    @jax.jit
    def step(x, state):
        v, g = vg(x, state=state)
        u, state = opt.update(g, state, x, value=v, grad=g, value_fn=f)
        return jax.tree.map(lambda a, b: (a + b).astype(a.dtype), x, u), state

    return step


def _linesearch_state(state):
    kinds = (ScaleByZoomLinesearchState, gdopt.linesearch.ScaleByBacktrackingLinesearchState)
    is_ls = lambda x: isinstance(x, kinds)
    return [x for x in jax.tree.leaves(state, is_leaf=is_ls) if is_ls(x)][-1]


# ----------------------------------------------------------------------------- backtracking


def test_backtracking_hand_computed_step():
    # f = x², x = 1, u = -f'(1) = -2: η = 1 gives f(-1) = 1 (no decrease), η = 0.8 gives
    # f(-0.6) = 0.36 <= 1 - 1e-4 * 0.8 * 4.
    f = lambda x: jnp.sum(x**2)
    t = scale_by_backtracking_linesearch(max_backtracking_steps=10)
    x = jnp.array([1.0])
    u, s = t.update(jnp.array([-2.0]), t.init(x), x, value=f(x), grad=2 * x, value_fn=f)
    np.testing.assert_allclose(u, [-1.6], rtol=1e-6)
    assert float(s.learning_rate) == pytest.approx(0.8)
    assert float(s.value) == pytest.approx(0.36)
    assert int(s.info.num_linesearch_steps) == 2 and float(s.info.decrease_error) == 0.0
    # Warm start: each search begins at min(1.5 * previous step, max_learning_rate).
    t = scale_by_backtracking_linesearch(max_backtracking_steps=10, max_learning_rate=10.0)
    x = jnp.array([1.0])
    u, s = t.update(-2 * x, t.init(x), x, value=f(x), grad=2 * x, value_fn=f)
    assert float(s.learning_rate) == pytest.approx(1.5 * 0.8**2)  # 1.5 and 1.2 fail
    x = x + u
    u, s = t.update(-2 * x, s, x, value=f(x), grad=2 * x, value_fn=f)
    assert float(s.learning_rate) == pytest.approx(1.5 * 0.96 * 0.8**2)
    assert int(s.info.num_linesearch_steps) == 3


def test_backtracking_steps_satisfy_armijo_on_rosenbrock():
    c = 1e-3
    opt = gdopt.chain(
        gdopt.sgd(1.0), scale_by_backtracking_linesearch(30, slope_rtol=c, store_grad=True)
    )
    x = jnp.zeros(2)
    state = opt.init(x)
    step = _solver(opt, rosenbrock)
    backtracked = 0
    for _ in range(40):
        v, g = jax.value_and_grad(rosenbrock)(x)
        new_x, state = step(x, state)
        ls = _linesearch_state(state)
        eta = float(ls.learning_rate)
        u = np.asarray(new_x - x, np.float64)
        # Armijo, checked by evaluating the objective: f(x + η d) <= f(x) + c η <d, g>.
        assert float(rosenbrock(new_x)) <= float(v) + c * float(np.dot(u, np.asarray(g))) + 1e-6
        assert eta > 0 and float(rosenbrock(new_x)) < float(v)
        np.testing.assert_allclose(ls.grad, jax.grad(rosenbrock)(new_x), rtol=1e-5, atol=1e-5)
        backtracked += int(ls.info.num_linesearch_steps) > 1
        x = new_x
    assert backtracked > 5  # the search really had to backtrack
    assert float(rosenbrock(x)) < 0.5


def test_backtracking_gives_up_safely():
    t = scale_by_backtracking_linesearch(max_backtracking_steps=3)
    x = jnp.array([1.0])
    f = lambda y: jnp.sum(y**2)
    # An ascent direction: no step satisfies Armijo, the smallest step tried is used.
    u, s = t.update(jnp.array([1.0]), t.init(x), x, value=f(x), grad=2 * x, value_fn=f)
    assert float(s.info.decrease_error) > 0 and int(s.info.num_linesearch_steps) == 4
    np.testing.assert_allclose(u, [0.8**3], rtol=1e-6)
    # Non-finite values everywhere along the line: step 0, parameters unchanged.
    g = lambda y: jnp.where(y[0] < 0.99, jnp.nan, jnp.sum(y**2))
    u, s = t.update(jnp.array([-1.0]), t.init(x), x, value=g(x), grad=2 * x, value_fn=g)
    np.testing.assert_array_equal(u, [0.0])
    assert float(s.value) == 1.0


# ----------------------------------------------------------------------------- zoom


def _check_strong_wolfe(f, x, d, eta, c1, c2):
    x64, d64 = np.asarray(x, np.float64), np.asarray(d, np.float64)
    grad = lambda y: np.asarray(jax.grad(f)(jnp.asarray(y, jnp.float32)), np.float64)
    slope0 = float(np.dot(grad(x64), d64))
    new = x64 + eta * d64
    fx, fnew = float(f(jnp.asarray(x64, jnp.float32))), float(f(jnp.asarray(new, jnp.float32)))
    assert slope0 < 0
    assert fnew <= fx + c1 * eta * slope0 + 1e-6 * abs(fx), "sufficient decrease"
    assert abs(float(np.dot(grad(new), d64))) <= c2 * abs(slope0) * (1 + 1e-4), "curvature"


@pytest.mark.parametrize("c1, c2", [(1e-4, 0.9), (0.1, 0.3)])
def test_zoom_steps_satisfy_strong_wolfe(c1, c2):
    ls = scale_by_zoom_linesearch(30, slope_rtol=c1, curv_rtol=c2, approx_dec_rtol=None)
    for direction in ("lbfgs", "gradient"):
        if direction == "lbfgs":
            opt = lbfgs(linesearch=ls)
        else:
            opt = gdopt.chain(gdopt.sgd(1.0), ls)
        x = jnp.array([-1.2, 1.0])
        state = opt.init(x)
        step = _solver(opt, rosenbrock)
        zoomed = 0
        for _ in range(12):
            new_x, state = step(x, state)
            s = _linesearch_state(state)
            eta = float(s.learning_rate)
            d = (np.asarray(new_x, np.float64) - np.asarray(x, np.float64)) / eta
            _check_strong_wolfe(rosenbrock, x, d, eta, c1, c2)
            zoomed += int(s.info.num_linesearch_steps) > 1
            x = new_x
        assert zoomed > 0


def test_zoom_brackets_by_expanding_and_respects_the_cap():
    # φ(η) = f(x - η g) has its minimum at η = 50: the search must grow 1, 2, 4, ... first.
    f = lambda x: jnp.sum((x - 10.0) ** 2) / 100.0
    x = jnp.zeros(3)
    v, g = jax.value_and_grad(f)(x)
    t = scale_by_zoom_linesearch(30, approx_dec_rtol=None)
    u, s = t.update(-g, t.init(x), x, value=v, grad=g, value_fn=f)
    # η = 8 is the first power of 2 with |φ'(η)| <= 0.9 |φ'(0)|: 4 evaluations.
    assert float(s.learning_rate) == 8.0 and int(s.info.num_linesearch_steps) == 4
    _check_strong_wolfe(f, x, -g, 8.0, 1e-4, 0.9)
    np.testing.assert_allclose(s.grad, jax.grad(f)(x + u), rtol=1e-5)
    # A tight curvature condition (|φ'| <= 0.1 |φ'(0)|: η in [45, 55]) needs the zoom too.
    t = scale_by_zoom_linesearch(30, curv_rtol=0.1, approx_dec_rtol=None)
    u, s = t.update(-g, t.init(x), x, value=v, grad=g, value_fn=f)
    assert 45.0 <= float(s.learning_rate) <= 55.0 and int(s.info.num_linesearch_steps) > 7
    _check_strong_wolfe(f, x, -g, float(s.learning_rate), 1e-4, 0.1)
    capped = scale_by_zoom_linesearch(30, max_learning_rate=4.0)
    u, s = capped.update(-g, capped.init(x), x, value=v, grad=g, value_fn=f)
    assert float(s.learning_rate) == 4.0


def test_zoom_returns_zero_step_for_an_ascent_direction():
    f = lambda x: jnp.sum(x**2)
    x = jnp.array([1.0, -1.0])
    v, g = jax.value_and_grad(f)(x)
    t = scale_by_zoom_linesearch(8)
    u, s = t.update(g, t.init(x), x, value=v, grad=g, value_fn=f)
    np.testing.assert_array_equal(u, [0.0, 0.0])
    assert float(s.value) == float(v) and int(s.info.num_linesearch_steps) == 8


def test_extra_keyword_arguments_reach_value_fn():
    def loss(p, target):
        return jnp.sum((p - target) ** 2)

    t = scale_by_zoom_linesearch(10)
    p, target = jnp.zeros(2), jnp.array([1.0, 2.0])
    v, g = jax.value_and_grad(loss)(p, target)
    u, s = t.update(-g, t.init(p), p, value=v, grad=g, value_fn=loss, target=target, other=1)
    np.testing.assert_allclose(p + u, target, rtol=1e-5)


# ----------------------------------------------------------------------------- L-BFGS


def _two_loop_reference(g, pairs, gamma):
    """Nocedal & Wright, Alg. 7.4, in float64 NumPy."""
    q, alphas = g.copy(), []
    for s, y in reversed(pairs):
        a = np.dot(s, q) / np.dot(s, y)
        q -= a * y
        alphas.append(a)
    r = gamma * q
    for (s, y), a in zip(pairs, reversed(alphas), strict=True):
        b = np.dot(y, r) / np.dot(s, y)
        r += (a - b) * s
    return r


def test_scale_by_lbfgs_matches_the_two_loop_recursion():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(6, 6))
    h = h @ h.T + 6 * np.eye(6)  # a convex quadratic: every pair has positive curvature
    xs = [rng.normal(size=6) for _ in range(7)]
    gs = [h @ x for x in xs]
    t = scale_by_lbfgs(memory_size=4)
    s = t.init(jnp.zeros(6))
    update = jax.jit(t.update)
    for k, (x, g) in enumerate(zip(xs, gs, strict=True)):
        d, s = update(jnp.asarray(g, jnp.float32), s, jnp.asarray(x, jnp.float32))
        pairs = [(xs[i + 1] - xs[i], gs[i + 1] - gs[i]) for i in range(max(0, k - 4), k)]
        if pairs:
            sl, yl = pairs[-1]
            gamma = np.dot(sl, yl) / np.dot(yl, yl)
        else:
            gamma = min(1.0, 1.0 / np.linalg.norm(g))
        np.testing.assert_allclose(d, _two_loop_reference(g, pairs, gamma), rtol=2e-4, atol=1e-5)


def test_scale_by_lbfgs_skips_negative_curvature_pairs():
    t = scale_by_lbfgs(memory_size=3)
    s = t.init(jnp.zeros(2))
    _, s = t.update(jnp.array([1.0, 0.0]), s, jnp.array([0.0, 0.0]))
    # s = (1, 0), y = (-0.5, 0): <s, y> < 0 (concave along s). gdopt drops the pair (the
    # inverse-Hessian approximation must stay positive definite); optax would store it.
    d, s = t.update(jnp.array([0.5, 1.0]), s, jnp.array([1.0, 0.0]))
    assert float(jnp.sum(jnp.abs(s.weights_memory))) == 0.0
    np.testing.assert_allclose(d, [0.5, 1.0])  # γ = min(1, 1/||g_0||) = 1, no pairs
    assert float(jnp.vdot(d, jnp.array([0.5, 1.0]))) > 0  # still a descent direction


@pytest.mark.parametrize("start", [(0.0, 0.0), (-1.2, 1.0)])
def test_lbfgs_rosenbrock_iterations_at_most_scipy(start):
    target = 1e-6
    scipy_errs = []
    scipy.optimize.minimize(
        scipy.optimize.rosen,
        np.array(start),
        jac=scipy.optimize.rosen_der,
        method="L-BFGS-B",
        callback=lambda xk: scipy_errs.append(np.max(np.abs(xk - 1.0))),
        options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 500},
    )
    scipy_iters = next(i + 1 for i, e in enumerate(scipy_errs) if e <= target)
    with jax.enable_x64(True):  # SciPy works in float64 too
        opt = lbfgs()
        x = jnp.asarray(start, jnp.float64)
        state = opt.init(x)
        step = _solver(opt, rosenbrock)
        ours = None
        for i in range(scipy_iters):
            x, state = step(x, state)
            if float(jnp.max(jnp.abs(x - 1.0))) <= target:
                ours = i + 1
                break
        assert x.dtype == jnp.float64
    assert ours is not None and ours <= scipy_iters, (ours, scipy_iters)


def test_lbfgs_trajectory_matches_optax_on_a_quadratic():
    """20 steps on an ill-conditioned 20-D quadratic (memory 5: no finite termination).

    The two-loop recursion and the zoom line search are written independently from optax's,
    with different operation orders in the interpolation formulas; a branch decision taken
    differently on a rounding tie would shift one step size, hence rtol 1e-4 rather than the
    1e-5 of the single-rule parity tests (they agree to the last bit today).
    """
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    a = jnp.asarray(q @ np.diag(np.logspace(0, 3, 20)) @ q.T, jnp.float32)
    b = jnp.asarray(rng.normal(size=20), jnp.float32)
    quad = lambda x: 0.5 * x @ a @ x - b @ x
    trajs = []
    for opt, vg in (
        (lbfgs(memory_size=5), value_and_grad_from_state),
        (optax.lbfgs(memory_size=5), optax.value_and_grad_from_state),
    ):
        x, state, traj = jnp.zeros(20), opt.init(jnp.zeros(20)), []
        step = _solver(opt, quad, vg)
        for _ in range(20):
            x, state = step(x, state)
            traj.append(np.asarray(x))
        trajs.append(np.array(traj))
    np.testing.assert_allclose(trajs[0], trajs[1], rtol=1e-4, atol=1e-6)
    solution = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
    assert np.max(np.abs(trajs[0][-1] - solution)) > 1e-2  # still moving: a real comparison


def test_lbfgs_minimizes_parabola_and_rosenbrock_jitted_without_recompiling():
    traces = []

    @jax.jit
    def solve(xp, xr):
        traces.append(1)
        out = []
        for f, x, n in ((lambda x: jnp.sum((x - 1.0) ** 2), xp, 5), (rosenbrock, xr, 40)):
            opt = lbfgs()
            vg = value_and_grad_from_state(f)

            def body(_, carry, f=f, opt=opt, vg=vg):
                x, s = carry
                v, g = vg(x, state=s)
                u, s = opt.update(g, s, x, value=v, grad=g, value_fn=f)
                return gdopt.apply_updates(x, u), s

            out.append(jax.lax.fori_loop(0, n, body, (x, opt.init(x))))
        return out

    (xp, sp), (xr, sr) = solve(jnp.zeros(5), jnp.zeros(2))
    np.testing.assert_allclose(xp, 1.0, atol=1e-6)
    np.testing.assert_allclose(xr, 1.0, atol=1e-5)
    assert xp.dtype == xr.dtype == jnp.float32
    solve(jnp.full(5, 3.0, jnp.float32), jnp.full(2, 0.5, jnp.float32))
    assert len(traces) == 1


def test_lbfgs_keeps_bfloat16():
    opt = lbfgs()
    f = lambda x: jnp.sum((x.astype(jnp.float32) - 1.0) ** 2)
    x = jnp.zeros(4, jnp.bfloat16)
    state = opt.init(x)
    dtypes = [a.dtype for a in jax.tree.leaves(state)]
    step = _solver(opt, f)
    for _ in range(3):
        x, state = step(x, state)
    assert x.dtype == jnp.bfloat16 and [a.dtype for a in jax.tree.leaves(state)] == dtypes
    u, _ = jax.eval_shape(
        lambda x, s: opt.update(x, s, x, value=f(x), grad=x, value_fn=f), x, state
    )
    assert u.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(x, np.float32), 1.0, atol=1e-2)


def test_value_and_grad_from_state_reuses_the_stored_pair():
    calls = []

    def f(x):
        calls.append(1)
        return jnp.sum(x**2)

    opt = lbfgs()
    x = jnp.array([1.0, -2.0])
    state = opt.init(x)
    vg = value_and_grad_from_state(f)
    v, g = vg(x, state=state)  # nothing stored yet: computed
    assert float(v) == 5.0 and g.tolist() == [2.0, -4.0]
    u, state = opt.update(g, state, x, value=v, grad=g, value_fn=f)
    x = x + u
    ls = _linesearch_state(state)
    v2, g2 = jax.jit(lambda x, s: vg(x, state=s))(x, state)
    assert float(v2) == float(ls.value) and np.array_equal(g2, ls.grad)
    np.testing.assert_allclose(g2, 2 * x, rtol=1e-5)
    with pytest.raises(ValueError, match="store_grad=True"):
        vg(x, state=gdopt.adam(0.1).init(x))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make",
    [lambda: scale_by_backtracking_linesearch(5), lambda: scale_by_zoom_linesearch(5), lbfgs],
)
@pytest.mark.parametrize("missing", ["value", "grad", "value_fn"])
def test_missing_extras_are_named(make, missing):
    f = lambda x: jnp.sum(x**2)
    x = jnp.ones(2)
    extras = {"value": f(x), "grad": 2 * x, "value_fn": f}
    del extras[missing]
    opt = make()
    with pytest.raises(ValueError, match=rf"needs the keyword extra '{missing}'.*value_fn=loss_fn"):
        opt.update(2 * x, opt.init(x), x, **extras)


def test_params_are_required():
    f = lambda x: jnp.sum(x**2)
    x = jnp.ones(2)
    for opt in (lbfgs(), scale_by_lbfgs(), scale_by_zoom_linesearch(3)):
        with pytest.raises(ValueError, match="params"):
            opt.update(2 * x, opt.init(x), value=f(x), grad=2 * x, value_fn=f)


@pytest.mark.parametrize(
    "build, arg",
    [
        (lambda: lbfgs(memory_size=0), "memory_size"),
        (lambda: lbfgs(learning_rate=-1.0), "learning_rate"),
        (lambda: scale_by_backtracking_linesearch(-1), "max_backtracking_steps"),
        (lambda: scale_by_backtracking_linesearch(5, decrease_factor=1.5), "decrease_factor"),
        (lambda: scale_by_backtracking_linesearch(5, increase_factor=0.5), "increase_factor"),
        (lambda: scale_by_backtracking_linesearch(5, slope_rtol=1.0), "slope_rtol"),
        (lambda: scale_by_backtracking_linesearch(5, max_learning_rate=0.0), "max_learning_rate"),
        (lambda: scale_by_zoom_linesearch(0), "max_linesearch_steps"),
        (lambda: scale_by_zoom_linesearch(5, slope_rtol=0.0), "slope_rtol"),
        (lambda: scale_by_zoom_linesearch(5, slope_rtol=0.5, curv_rtol=0.4), "curv_rtol"),
        (lambda: scale_by_zoom_linesearch(5, increase_factor=1.0), "increase_factor"),
        (lambda: scale_by_zoom_linesearch(5, initial_guess_strategy="two"), "initial_guess"),
        (lambda: scale_by_zoom_linesearch(5, tol=-1.0), "tol"),
    ],
)
def test_bad_hyperparameters_name_the_argument(build, arg):
    with pytest.raises(ValueError, match=arg):
        build()


def test_a_fractional_memory_size_is_a_type_error():
    with pytest.raises(TypeError, match="memory_size must be an integer"):
        scale_by_lbfgs(memory_size=1.5)
    with pytest.raises(ValueError, match="memory_size"):
        scale_by_lbfgs(memory_size=0)


def test_lbfgs_rejects_a_non_transform_linesearch():
    with pytest.raises(TypeError, match="linesearch"):
        lbfgs(linesearch="zoom")
