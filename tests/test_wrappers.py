"""``gdopt/wrappers.py``: ``apply_if_finite``, ``accumulate`` / ``MultiSteps``, ``lookahead`` and
``ema_params``, against optax (oracle) and hand computations, with their validation.

(Their packability and keys: ``tests/test_traits.py``; hyperparameters in state:
``tests/test_hyperparams.py``; ``schedule_free``: ``tests/optimizers/test_schedule_free.py``.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdopt
from gdopt.tree import tree_bytes
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    oracle,
    run_trajectory,
)

PARAMS = make_params()
GRADS = gradient_sequence(PARAMS, steps=100)


def _with_nans(grads, steps, leaf=("dense", "b")):
    out = [jax.tree.map(lambda x: x, g) for g in grads]
    for i in steps:
        out[i][leaf[0]][leaf[1]] = out[i][leaf[0]][leaf[1]].at[0].set(jnp.nan)
    return out


# ----------------------------------------------------------------------------- apply_if_finite


def test_apply_if_finite_parity_with_skipped_steps():
    grads = _with_nans(GRADS, [5, 10, 11, 40, 41, 70])
    ours = gdopt.apply_if_finite(gdopt.adam(0.01), max_consecutive_errors=2)
    traj = run_trajectory(ours, PARAMS, grads)
    with oracle():
        ref = optax.apply_if_finite(optax.adam(0.01), max_consecutive_errors=2)
        assert_trajectories_close(traj, run_trajectory(ref, PARAMS, grads))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(traj[-1]))
    # a skipped step leaves the params where they were
    np.testing.assert_array_equal(traj[5]["dense"]["w"], traj[4]["dense"]["w"])


def test_apply_if_finite_counters_and_giving_up():
    grads = _with_nans(GRADS[:12], [2, 5, 6, 7, 8])
    ours = gdopt.apply_if_finite(gdopt.sgd(0.1, momentum=0.9), max_consecutive_errors=2)
    ref = optax.apply_if_finite(optax.sgd(0.1, momentum=0.9), max_consecutive_errors=2)
    with oracle():
        b = ref.init(PARAMS)
    a = ours.init(PARAMS)
    up_a, up_b = jax.jit(ours.update), jax.jit(ref.update)
    history = []
    for i, g in enumerate(grads):
        ua, a = up_a(g, a, PARAMS)
        with oracle():
            ub, b = up_b(g, b, PARAMS)
        for field in ("notfinite_count", "last_finite", "total_notfinite"):
            assert int(getattr(a, field)) == int(getattr(b, field)), (i, field)
        history.append(int(a.notfinite_count))
        if i == 2:  # skipped: zero update, momentum buffer untouched
            assert all(float(jnp.max(jnp.abs(x))) == 0 for x in jax.tree.leaves(ua))
    assert history == [0, 0, 1, 0, 0, 1, 2, 3, 4, 0, 0, 0]
    assert int(a.total_notfinite) == 5
    # from the 3rd consecutive NaN on the update is applied, so the momentum is poisoned
    assert not bool(jnp.all(jnp.isfinite(a.inner_state.inner_state[0].trace["dense"]["b"])))


def test_apply_if_finite_validation():
    with pytest.raises(ValueError, match="max_consecutive_errors"):
        gdopt.apply_if_finite(gdopt.sgd(0.1), -1)
    with pytest.raises(TypeError, match="max_consecutive_errors"):
        gdopt.apply_if_finite(gdopt.sgd(0.1), 1.5)
    with pytest.raises(TypeError, match="inner"):
        gdopt.apply_if_finite(gdopt.sgd, 3)


# ----------------------------------------------------------------------------- accumulate


@pytest.mark.parametrize("k,mean", [(3, True), (lambda step: jnp.where(step < 5, 2, 5), False)])
def test_accumulate_parity_with_multisteps(k, mean):
    ours = gdopt.accumulate(gdopt.adam(0.01), k, use_grad_mean=mean)
    with oracle():
        ref = optax.MultiSteps(optax.adam(0.01), k, use_grad_mean=mean).gradient_transformation()
        expected = run_trajectory(ref, PARAMS, GRADS)
    assert_trajectories_close(run_trajectory(ours, PARAMS, GRADS), expected)


def test_accumulate_equals_one_step_with_the_mean_gradient():
    k = 4
    ours = gdopt.accumulate(gdopt.adam(0.05), k)
    traj = run_trajectory(ours, PARAMS, GRADS[:40])
    means = [jax.tree.map(lambda *gs: sum(gs) / k, *GRADS[i : i + k]) for i in range(0, 40, k)]
    big = run_trajectory(gdopt.adam(0.05), PARAMS, means)
    assert_trajectories_close(traj[k - 1 :: k], big)
    # the micro-steps in between do not move the params
    for i in range(40):
        if i % k != k - 1:
            before = PARAMS if i < k else traj[(i // k) * k - 1]
            for a, b in zip(jax.tree.leaves(traj[i]), jax.tree.leaves(before), strict=True):
                np.testing.assert_array_equal(a, b)


def test_accumulate_keeps_exactly_one_accumulator():
    inner = gdopt.adam(0.01)
    state = gdopt.accumulate(inner, 8).init(PARAMS)
    assert tree_bytes(state) == tree_bytes(inner.init(PARAMS)) + tree_bytes(PARAMS) + 2 * 4
    assert jax.tree.structure(state.acc_grads) == jax.tree.structure(PARAMS)
    # bfloat16 params accumulate in float32, and keep that dtype across steps
    p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
    t = gdopt.accumulate(gdopt.sgd(0.1), 2)
    s = t.init(p16)
    g16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), GRADS[0])
    u, s2 = jax.jit(t.update)(g16, s, p16)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s2.acc_grads))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))


def test_accumulate_skip_and_multisteps_class():
    def skip_not_finite(updates, gradient_step, params):
        del gradient_step, params
        return jnp.logical_not(gdopt.tree.tree_all_finite(updates)), ()

    grads = _with_nans(GRADS[:20], [4, 9])
    clean = [g for i, g in enumerate(grads) if i not in (4, 9)]
    ms = gdopt.MultiSteps(gdopt.sgd(0.1), 3, should_skip_update_fn=skip_not_finite)
    traj = run_trajectory(ms.gradient_transformation(), PARAMS, grads)
    ref = run_trajectory(gdopt.accumulate(gdopt.sgd(0.1), 3), PARAMS, clean)
    assert_trajectories_close([p for i, p in enumerate(traj) if i not in (4, 9)], ref)
    s = ms.init(PARAMS)
    flags = []
    update = jax.jit(ms.update)
    for g in GRADS[:6]:
        _, s = update(g, s, PARAMS)
        flags.append(bool(ms.has_updated(s)))
    assert flags == [False, False, True, False, False, True]
    assert ms.inner_opt is not None and int(s.gradient_step) == 2


def test_accumulate_validation():
    with pytest.raises(ValueError, match="every_k_schedule"):
        gdopt.accumulate(gdopt.sgd(0.1), 0)
    with pytest.raises(TypeError, match="every_k_schedule"):
        gdopt.accumulate(gdopt.sgd(0.1), 2.5)
    bad = gdopt.accumulate(gdopt.sgd(0.1), 2, should_skip_update_fn=lambda u, s, p: (1, ()))
    with pytest.raises(ValueError, match="scalar bool"):
        bad.update(PARAMS, bad.init(PARAMS), PARAMS)


# ----------------------------------------------------------------------------- lookahead


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sync_period=5, slow_step_size=0.5, reset_state=False),
        dict(sync_period=3, slow_step_size=0.8, reset_state=True),
    ],
)
def test_lookahead_fast_trajectory_matches_optax(kwargs):
    grads = GRADS[:60]
    ours = gdopt.lookahead(gdopt.adam(0.01), **kwargs)
    traj = run_trajectory(ours, PARAMS, grads)
    with oracle():
        ref = optax.lookahead(optax.adam(0.01), **kwargs)
        lp = optax.LookaheadParams.init_synced(PARAMS)
        state = ref.init(lp)
        step = jax.jit(
            lambda g, s, p: (lambda u, s: (optax.apply_updates(p, u), s))(*ref.update(g, s, p))
        )
        expected = []
        for g in grads:
            lp, state = step(g, state, lp)
            expected.append(lp.fast)
    assert_trajectories_close(traj, expected)


def test_lookahead_by_hand_and_slow_weights():
    opt = gdopt.lookahead(gdopt.sgd(1.0), sync_period=2, slow_step_size=0.25)
    p = {"w": jnp.array(0.0)}
    s = opt.init(p)
    seen = []
    for g in (-1.0, -1.0, -2.0, 0.0):
        u, s = opt.update({"w": jnp.array(g)}, s, p)
        p = gdopt.apply_updates(p, u)
        seen.append((float(p["w"]), float(s.slow["w"])))
    # fast 1, 2 -> slow 0 + 0.25 * 2 = 0.5 (fast reset to 0.5); fast 2.5, 2.5 -> slow 1.0
    assert seen == [(1.0, 0.0), (0.5, 0.5), (2.5, 0.5), (1.0, 1.0)]
    with pytest.raises(ValueError, match="params"):
        opt.update({"w": jnp.array(1.0)}, s)
    with pytest.raises(ValueError, match="sync_period"):
        gdopt.lookahead(gdopt.sgd(1.0), 0, 0.5)
    with pytest.raises(ValueError, match="slow_step_size"):
        gdopt.lookahead(gdopt.sgd(1.0), 2, 1.5)


# ----------------------------------------------------------------------------- ema_params


def test_ema_params_by_hand():
    decay = 0.9
    opt = gdopt.ema_params(gdopt.sgd(0.1), decay=decay)
    traj = run_trajectory(opt, PARAMS, GRADS[:10])
    ema = PARAMS
    for p in traj:
        ema = jax.tree.map(lambda e, x: decay * e + (1 - decay) * x, ema, p)
    s = opt.init(PARAMS)
    p = PARAMS
    update = jax.jit(opt.update)
    for g in GRADS[:10]:
        u, s = update(g, s, p)
        p = gdopt.apply_updates(p, u)
    assert_trajectories_close([s.ema], [ema], rtol=1e-5, atol=1e-6)
    # the updates are the inner optimizer's, unchanged
    assert_trajectories_close(traj, run_trajectory(gdopt.sgd(0.1), PARAMS, GRADS[:10]))
    with pytest.raises(ValueError, match="decay"):
        gdopt.ema_params(gdopt.sgd(0.1), decay=1.0)


# ----------------------------------------------------------------------------- sam

_SAM_A = np.array([1.0, 4.0])
_SAM_C = 3.0


def _sam_loss(p):
    return 0.5 * jnp.sum(jnp.asarray(_SAM_A, jnp.float32) * p["w"] ** 2) + 0.5 * _SAM_C * jnp.sum(
        p["b"] ** 2
    )


def _sam_grad_np(w, b):
    return _SAM_A * w, _SAM_C * b


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_two_hand_computed_steps_with_momentum(adaptive):
    """Foret et al.: ε = ρ g / ||g||; ASAM (Kwon et al.): ε = ρ |w|² g / |||w| g||; the inner
    SGD with momentum 0.9 gets ∇L(w + ε)."""
    rho, lr, mom = 0.1, 0.1, 0.9
    opt = gdopt.sam(gdopt.sgd(lr, momentum=mom), rho=rho, adaptive=adaptive)
    p = {"w": jnp.array([1.0, 1.0]), "b": jnp.array([2.0])}
    state = opt.init(p)
    w, b = np.array([1.0, 1.0]), np.array([2.0])
    trace_w, trace_b = np.zeros(2), np.zeros(1)
    for _ in range(2):
        gw, gb = _sam_grad_np(w, b)
        tw, tb = (np.abs(w), np.abs(b)) if adaptive else (1.0, 1.0)
        norm = np.sqrt(np.sum((tw * gw) ** 2) + np.sum((tb * gb) ** 2))
        ew, eb = rho * tw**2 * gw / norm, rho * tb**2 * gb / norm
        sw, sb = _sam_grad_np(w + ew, b + eb)
        trace_w, trace_b = mom * trace_w + sw, mom * trace_b + sb
        w, b = w - lr * trace_w, b - lr * trace_b
        updates, state = opt.update(jax.grad(_sam_loss)(p), state, p, value_fn=_sam_loss)
        p = gdopt.apply_updates(p, updates)
        np.testing.assert_allclose(p["w"], w, rtol=1e-6)
        np.testing.assert_allclose(p["b"], b, rtol=1e-6)


def test_sam_in_fit_and_make_step_packed_and_not():
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5])
    loss = lambda p, batch: jnp.mean((batch[0] @ p["w"] + p["b"] - batch[1]) ** 2)  # noqa: E731
    p0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    opt = gdopt.sam(gdopt.sgd(0.05), rho=0.05)
    assert gdopt.is_packable(opt)
    step = gdopt.make_step(loss, opt, donate=False)
    p, s = p0, opt.init(p0)
    for _ in range(5):
        p, s, _ = step(p, s, (x, y))
    for pack in (False, True):
        res = gdopt.fit(loss, p0, opt, (x, y), epochs=5, pack=pack)
        assert res.packed is pack
        for k in p:
            np.testing.assert_allclose(res.params[k], p[k], rtol=1e-5, atol=1e-7)
    # it is not plain SGD
    plain = gdopt.fit(loss, p0, gdopt.sgd(0.05), (x, y), epochs=5)
    assert not np.allclose(plain.params["w"], p["w"], rtol=1e-4)


def test_sam_lowers_sharpness_on_the_digits_mlp():
    """Fixed seeds: SGD with and without SAM (ρ = 0.1), 5 epochs of mini-batches of 32 on the
    digits MLP 64-64-10: SAM ends flatter (a lower top Hessian eigenvalue) and its test
    accuracy is at most 1 point lower."""
    problem = gdopt.problems.get_problem("digits-mlp")
    params = problem.init_params(jax.random.PRNGKey(0))
    out = {}
    for name, opt in (("sgd", gdopt.sgd(0.1)), ("sam", gdopt.sam(gdopt.sgd(0.1), rho=0.1))):
        res = gdopt.fit(
            problem.loss_fn, params, opt, problem.train, epochs=5, batch_size=32,
            key=jax.random.PRNGKey(1),
        )  # fmt: skip
        top = gdopt.landscape.hessian_eigenvalues(
            problem.loss_fn, res.params, problem.train, num_iters=20
        )
        out[name] = (float(top[0]), float(problem.accuracy_fn(res.params, problem.test)))
    assert out["sam"][0] < 0.95 * out["sgd"][0]
    assert out["sam"][1] >= out["sgd"][1] - 0.01


@pytest.mark.parametrize(
    "call,error,match",
    [
        (
            lambda: gdopt.sam(gdopt.sgd(0.1), rho=0.0),
            ValueError,
            r"rho must be a finite number in \(0",
        ),
        (lambda: gdopt.sam(gdopt.sgd(0.1), rho=-0.05), ValueError, "rho must be"),
        (lambda: gdopt.sam(gdopt.sgd, rho=0.05), TypeError, "sam's optimizer must be"),
        (
            lambda: gdopt.sam(gdopt.sgd(0.1)).update(
                {"w": jnp.ones(2)}, gdopt.sgd(0.1).init({"w": jnp.ones(2)}), {"w": jnp.ones(2)}
            ),
            ValueError,
            "sam needs the keyword extra 'value_fn'",
        ),
        (
            lambda: gdopt.sam(gdopt.sgd(0.1)).update({"w": jnp.ones(2)}, (), None, value_fn=len),
            ValueError,
            "sam needs the current parameters",
        ),
    ],
    ids=["rho=0", "rho<0", "optimizer not built", "no value_fn", "no params"],
)
def test_sam_validation(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- contrib.sam


def _adversarial(lib, kind):
    inner = lib.sgd(0.05) if kind == "sgd" else lib.adam(0.01)
    return lib.chain(lib.contrib.normalize(), inner)


@pytest.mark.parametrize("sync_period", [1, 2, 3])
@pytest.mark.parametrize("reset_state", [True, False])
@pytest.mark.parametrize("adv", ["sgd", "adam"])
def test_contrib_sam_transparent_equals_optax(sync_period, reset_state, adv):
    """optax.contrib.sam's API: adversarial calls, then an outer call from the cached params."""

    def build(lib):
        outer = lib.sgd(0.1, momentum=0.9)
        return lib.contrib.sam(outer, _adversarial(lib, adv), sync_period, reset_state)

    ours = run_trajectory(build(gdopt), PARAMS, GRADS[:30])
    with oracle():
        ref = run_trajectory(build(optax), PARAMS, GRADS[:30], apply=optax.apply_updates)
    # an Adam adversary differs by the documented float32 1 - b2 (README, "Switching from optax")
    tol = {"rtol": 1e-6, "atol": 1e-7} if adv == "sgd" else {"rtol": 1e-4, "atol": 1e-6}
    assert_trajectories_close(ours, ref, **tol)
    # the state has optax's layout
    state = build(gdopt).init(PARAMS)
    assert type(state).__name__ == "SAMState" and state._fields == optax.contrib.SAMState._fields


def _quadratic_grad(p):
    scale = {"dense": {"w": 2.0, "b": 0.5}, "layers": [1.0, 3.0], "scale": 1.5}
    return jax.tree.map(lambda x, s: s * x, p, scale)


@pytest.mark.parametrize("reset_state", [True, False])
def test_contrib_sam_opaque_equals_optax_and_gdopt_sam(reset_state):
    """Opaque mode runs a whole period per call with grad_fn; with sync_period=2 and the
    normalized-SGD adversary it is gdopt.sam's one-call rule (up to sam's 1e-12 in the norm)."""
    grad_fn = lambda p, i: _quadratic_grad(p)  # noqa: E731

    def trajectory(opt, apply):
        p, s, out = PARAMS, opt.init(PARAMS), []
        update = jax.jit(lambda g, s, p: opt.update(g, s, p, grad_fn=grad_fn))
        for _ in range(20):
            u, s = update(_quadratic_grad(p), s, p)
            p = apply(p, u)
            out.append(p)
        return out

    def build(lib):
        adv = lib.chain(lib.contrib.normalize(), lib.sgd(0.05))
        return lib.contrib.sam(lib.sgd(0.1), adv, 3, reset_state, opaque_mode=True)

    ours = trajectory(build(gdopt), gdopt.apply_updates)
    with oracle():
        ref = trajectory(build(optax), optax.apply_updates)
    assert_trajectories_close(ours, ref, rtol=1e-6, atol=1e-7)

    # two calls per period of the transparent form = one call of the opaque form = gdopt.sam
    def loss(p):  # its gradient is _quadratic_grad
        pairs = zip(jax.tree.leaves(p), jax.tree.leaves(_quadratic_grad(p)), strict=True)
        return 0.5 * sum(jnp.vdot(x, g) for x, g in pairs)

    one_call = gdopt.sam(gdopt.sgd(0.1), rho=0.05)
    adv = gdopt.chain(gdopt.contrib.normalize(), gdopt.sgd(0.05))
    opaque = gdopt.contrib.sam(gdopt.sgd(0.1), adv, 2, opaque_mode=True)
    p1 = p2 = PARAMS
    s1, s2 = one_call.init(PARAMS), opaque.init(PARAMS)
    for _ in range(5):
        u1, s1 = one_call.update(jax.grad(loss)(p1), s1, p1, value_fn=loss)
        u2, s2 = opaque.update(jax.grad(loss)(p2), s2, p2, grad_fn=lambda p, i: jax.grad(loss)(p))
        p1, p2 = gdopt.apply_updates(p1, u1), gdopt.apply_updates(p2, u2)
    assert_trajectories_close([p1], [p2], rtol=1e-5, atol=1e-6)


def test_contrib_sam_trains_in_fit():
    """The transparent form in fit: every other step is adversarial, the outer steps descend."""
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5])
    loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)  # noqa: E731
    adv = gdopt.chain(gdopt.contrib.normalize(), gdopt.sgd(0.01))
    res = gdopt.fit(loss, jnp.zeros(3), gdopt.contrib.sam(gdopt.sgd(0.1), adv), (x, y), epochs=200)
    assert res.history.train_loss[-1] < 1e-3 * res.history.train_loss[0]
    assert gdopt.contrib.sam is gdopt.adversarial_sam and gdopt.sam is not gdopt.contrib.sam


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: gdopt.contrib.sam(gdopt.sgd(0.1), gdopt.sgd(0.1), sync_period=0),
            ValueError,
            "sync_period must be an integer >= 1",
        ),
        (
            lambda: gdopt.contrib.sam(gdopt.sgd(0.1), gdopt.sgd),
            TypeError,
            "adv_optimizer",
        ),
        (
            lambda: gdopt.contrib.sam(gdopt.sgd(0.1), gdopt.sgd(0.1), opaque_mode=True).update(
                {"w": jnp.ones(2)},
                gdopt.contrib.sam(gdopt.sgd(0.1), gdopt.sgd(0.1), opaque_mode=True).init(
                    {"w": jnp.ones(2)}
                ),
                {"w": jnp.ones(2)},
            ),
            ValueError,
            "needs the keyword extra grad_fn",
        ),
    ],
    ids=["sync_period=0", "adv_optimizer not built", "opaque without grad_fn"],
)
def test_contrib_sam_validation(call, error, match):
    with pytest.raises(error, match=match):
        call()
