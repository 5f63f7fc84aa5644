"""The protocol, tree utilities and the seed optimizers (sgd, momentum, adam, adamw, rmsprop,
adagrad): hand-computed steps from the papers' formulas, parity with optax (oracle), bad input,
hyperparameters in state, vmap and recompilation."""

from __future__ import annotations

import subprocess
import sys

import chex
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

# ----------------------------------------------------------------------------- references


def np_adam(params, grads, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, wd=0.0, nesterov=False):
    """Kingma & Ba (2015) Algorithm 1 in float64 NumPy; AdamW decay (Loshchilov & Hutter)."""
    p = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    traj = []
    for t, g in enumerate(grads, start=1):
        g = [np.asarray(x, np.float64) for x in jax.tree.leaves(g)]
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


def np_sgd(params, grads, lr, momentum=None, nesterov=False):
    p = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    buf = [np.zeros_like(x) for x in p]
    traj = []
    for g in grads:
        g = [np.asarray(x, np.float64) for x in jax.tree.leaves(g)]
        for i in range(len(p)):
            if momentum is None:
                d = g[i]
            else:
                buf[i] = g[i] + momentum * buf[i]
                d = g[i] + momentum * buf[i] if nesterov else buf[i]
            p[i] = p[i] - lr * d
        traj.append(jax.tree.unflatten(jax.tree.structure(params), list(p)))
    return traj


def np_rmsprop(params, grads, lr, decay=0.9, eps=1e-8, centered=False, momentum=None):
    p = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    v = [np.zeros_like(x) for x in p]
    m = [np.zeros_like(x) for x in p]
    b = [np.zeros_like(x) for x in p]
    traj = []
    for g in grads:
        g = [np.asarray(x, np.float64) for x in jax.tree.leaves(g)]
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
    p = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    s = [np.full_like(x, init) for x in p]
    traj = []
    for g in grads:
        g = [np.asarray(x, np.float64) for x in jax.tree.leaves(g)]
        for i in range(len(p)):
            s[i] = s[i] + g[i] ** 2
            p[i] = p[i] - lr * g[i] / np.sqrt(s[i] + eps)
        traj.append(jax.tree.unflatten(jax.tree.structure(params), list(p)))
    return traj


PARAMS = make_params()
GRADS = gradient_sequence(PARAMS, steps=100)
GRADS_SHORT = GRADS[:10]

REFERENCE_CASES = [
    ("sgd", dict(learning_rate=0.05), lambda: np_sgd(PARAMS, GRADS_SHORT, 0.05)),
    (
        "sgd-momentum",
        dict(learning_rate=0.05, momentum=0.9),
        lambda: np_sgd(PARAMS, GRADS_SHORT, 0.05, 0.9),
    ),
    (
        "sgd-nesterov",
        dict(learning_rate=0.05, momentum=0.8, nesterov=True),
        lambda: np_sgd(PARAMS, GRADS_SHORT, 0.05, 0.8, True),
    ),
    ("adam", dict(learning_rate=0.01), lambda: np_adam(PARAMS, GRADS_SHORT, 0.01)),
    (
        "adam-custom",
        dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
        lambda: np_adam(PARAMS, GRADS_SHORT, 0.02, 0.8, 0.99, 1e-6, 1e-8),
    ),
    (
        "adam-nesterov",
        dict(learning_rate=0.01, nesterov=True),
        lambda: np_adam(PARAMS, GRADS_SHORT, 0.01, nesterov=True),
    ),
    (
        "adamw",
        dict(learning_rate=0.01, weight_decay=0.1),
        lambda: np_adam(PARAMS, GRADS_SHORT, 0.01, wd=0.1),
    ),
    ("rmsprop", dict(learning_rate=0.01), lambda: np_rmsprop(PARAMS, GRADS_SHORT, 0.01)),
    (
        "rmsprop-centered-momentum",
        dict(learning_rate=0.01, centered=True, momentum=0.5),
        lambda: np_rmsprop(PARAMS, GRADS_SHORT, 0.01, centered=True, momentum=0.5),
    ),
    ("adagrad", dict(learning_rate=0.1), lambda: np_adagrad(PARAMS, GRADS_SHORT, 0.1)),
]


def _factory(case_name):
    return getattr(gdopt, case_name.split("-")[0])


# ----------------------------------------------------------------------------- hand references


@pytest.mark.parametrize(
    "name,kwargs,reference", REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES]
)
def test_matches_paper_reference(name, kwargs, reference):
    opt = _factory(name)(**kwargs)
    ref = reference()
    traj = run_trajectory(opt, PARAMS, GRADS_SHORT, apply=gdopt.apply_updates, jit=False)
    assert_trajectories_close(traj, ref, rtol=2e-5, atol=1e-6)
    traj_jit = run_trajectory(opt, PARAMS, GRADS_SHORT, apply=gdopt.apply_updates, jit=True)
    assert_trajectories_close(traj_jit, ref, rtol=2e-5, atol=1e-6)


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


def test_sgd_sign_descends():
    opt = gdopt.sgd(0.5)
    p = {"w": jnp.array(1.0)}
    u, _ = opt.update({"w": jnp.array(2.0)}, opt.init(p), p)
    assert float(u["w"]) == -1.0


# ----------------------------------------------------------------------------- optax parity

OPTAX_CASES = [
    ("sgd", dict(learning_rate=0.1)),
    ("sgd", dict(learning_rate=0.05, momentum=0.9)),
    ("sgd", dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    ("adam", dict(learning_rate=1e-2)),
    ("adam", dict(learning_rate=3e-3, b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-6)),
    ("adam", dict(learning_rate=1e-2, nesterov=True)),
    ("adamw", dict(learning_rate=1e-2)),
    ("adamw", dict(learning_rate=1e-2, weight_decay=0.3, b1=0.8)),
    ("rmsprop", dict(learning_rate=1e-2)),
    ("rmsprop", dict(learning_rate=1e-2, decay=0.8, eps=1e-4, initial_scale=0.1)),
    ("rmsprop", dict(learning_rate=1e-2, centered=True)),
    ("rmsprop", dict(learning_rate=1e-2, centered=True, momentum=0.9, nesterov=True)),
    ("rmsprop", dict(learning_rate=1e-2, eps_in_sqrt=False, bias_correction=True, momentum=0.5)),
    ("adagrad", dict(learning_rate=0.1)),
    ("adagrad", dict(learning_rate=0.3, initial_accumulator_value=0.5, eps=1e-4)),
]


@pytest.mark.parametrize(
    "name,kwargs", OPTAX_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTAX_CASES)]
)
def test_parity_with_optax(name, kwargs):
    optax = pytest.importorskip("optax")
    ours = run_trajectory(getattr(gdopt, name)(**kwargs), PARAMS, GRADS, gdopt.apply_updates)
    theirs = run_trajectory(getattr(optax, name)(**kwargs), PARAMS, GRADS, optax.apply_updates)
    assert_trajectories_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_adamw_mask_parity_with_optax():
    optax = pytest.importorskip("optax")
    mask = lambda p: jax.tree.map(lambda x: jnp.ndim(x) >= 2, p)
    ours = run_trajectory(gdopt.adamw(1e-2, weight_decay=0.5, mask=mask), PARAMS, GRADS)
    theirs = run_trajectory(optax.adamw(1e-2, weight_decay=0.5, mask=mask), PARAMS, GRADS)
    assert_trajectories_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_schedule_learning_rate_parity_with_optax():
    optax = pytest.importorskip("optax")
    ours = run_trajectory(
        gdopt.adam(gdopt.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 100)), PARAMS, GRADS
    )
    theirs = run_trajectory(
        optax.adam(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 100)), PARAMS, GRADS
    )
    assert_trajectories_close(ours, theirs, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- convergence


def test_least_squares_reaches_closed_form():
    key = jax.random.PRNGKey(0)
    kx, kn = jax.random.split(key)
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


@pytest.mark.parametrize(
    "opt,steps",
    [(gdopt.adam(0.02), 4000), (gdopt.sgd(1e-3, momentum=0.9), 6000), (gdopt.rmsprop(1e-3), 6000)],
    ids=["adam", "momentum", "rmsprop"],
)
def test_rosenbrock_reaches_minimum(opt, steps):
    f = lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2

    @jax.jit
    def run(x):
        def body(carry, _):
            x, s = carry
            u, s = opt.update(jax.grad(f)(x), s, x)
            return (gdopt.apply_updates(x, u), s), None

        (x, _), _ = jax.lax.scan(body, (x, opt.init(x)), None, length=steps)
        return x

    x = run(jnp.zeros(2))
    np.testing.assert_allclose(x, [1.0, 1.0], atol=2e-2)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make,arg",
    [
        (lambda: gdopt.sgd(0.0), "learning_rate"),
        (lambda: gdopt.sgd(-1.0), "learning_rate"),
        (lambda: gdopt.sgd(float("nan")), "learning_rate"),
        (lambda: gdopt.adam(float("inf")), "learning_rate"),
        (lambda: gdopt.sgd(0.1, momentum=1.0), "momentum"),
        (lambda: gdopt.sgd(0.1, momentum=-0.1), "momentum"),
        (lambda: gdopt.adam(0.1, b1=1.0), "b1"),
        (lambda: gdopt.adam(0.1, b2=-0.5), "b2"),
        (lambda: gdopt.adam(0.1, eps=-1e-8), "eps"),
        (lambda: gdopt.adamw(0.1, weight_decay=-1.0), "weight_decay"),
        (lambda: gdopt.rmsprop(0.1, decay=1.5), "decay"),
        (lambda: gdopt.rmsprop(0.1, momentum=1.0), "momentum"),
        (lambda: gdopt.adagrad(0.1, eps=-1.0), "eps"),
        (lambda: gdopt.adam(jnp.array(-1e-3)), "learning_rate"),
    ],
)
def test_bad_hyperparameters_name_the_argument(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_traced_hyperparameters_are_not_inspected():
    # Under jit the learning rate is a tracer: validation must be skipped, not crash.
    @jax.jit
    def first_update(lr):
        opt = gdopt.adam(lr, b1=lr * 0 + 0.9)
        p = {"w": jnp.ones(3)}
        return opt.update({"w": jnp.ones(3)}, opt.init(p), p)[0]["w"]

    np.testing.assert_allclose(first_update(0.1), -0.1 * jnp.ones(3), rtol=1e-5)


def test_structure_mismatch_names_key_path():
    opt = gdopt.adam(0.1)
    params = {"layer": {"w": jnp.ones(2), "b": jnp.ones(1)}}
    state = opt.init(params)
    grads = {"layer": {"w": jnp.ones(2), "bias": jnp.ones(1)}}
    with pytest.raises(ValueError, match=r"\['layer'\]\['b"):
        opt.update(grads, state, params)


def test_shape_mismatch_names_key_path():
    opt = gdopt.sgd(0.1)
    params = {"w": jnp.ones((2, 3))}
    with pytest.raises(ValueError, match=r"\['w'\].*\(3, 2\)"):
        opt.update({"w": jnp.ones((3, 2))}, opt.init(params), params)


@pytest.mark.parametrize("bad", [jnp.array([1, 2]), jnp.array([True, False])])
def test_integer_or_bool_params_are_rejected(bad):
    with pytest.raises(TypeError, match=r"params\['count'\].*floating point"):
        gdopt.adam(0.1).init({"w": jnp.ones(2), "count": bad})


def test_apply_updates_structure_mismatch():
    with pytest.raises(ValueError, match="updates and params"):
        gdopt.apply_updates({"w": jnp.ones(1)}, {"v": jnp.ones(1)})


def test_factory_not_called_is_a_clear_error():
    with pytest.raises(TypeError, match="gdopt.adam instead of gdopt.adam"):
        gdopt.chain(gdopt.adam)


# ----------------------------------------------------------------------------- protocol


def test_unknown_extra_arguments_are_ignored():
    opt = gdopt.chain(gdopt.scale(2.0), gdopt.adam(0.1))
    p = {"w": jnp.ones(2)}
    u, _ = opt.update({"w": jnp.ones(2)}, opt.init(p), p, value=jnp.array(1.0), whatever=3)
    assert u["w"].shape == (2,)


def test_apply_updates_keeps_dtype_and_none():
    p = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2)}
    out = gdopt.apply_updates(p, {"a": jnp.ones(2, jnp.float32), "b": None})
    assert out["a"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(out["b"], p["b"])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    "make",
    [
        lambda: gdopt.sgd(0.1, momentum=0.9),
        lambda: gdopt.adam(0.1),
        lambda: gdopt.adamw(0.1),
        lambda: gdopt.rmsprop(0.1, centered=True),
        lambda: gdopt.adagrad(0.1),
    ],
)
def test_dtypes_are_kept_across_steps(make, dtype):
    opt = make()
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


# ----------------------------------------------------------------------------- hyperparameters


def test_get_and_set_hyperparams():
    opt = gdopt.adam(1e-3, b1=0.8)
    s = opt.init({"w": jnp.zeros(2)})
    hp = gdopt.get_hyperparams(s)
    assert float(hp["learning_rate"]) == pytest.approx(1e-3)
    assert float(hp["b1"]) == pytest.approx(0.8)
    s2 = gdopt.set_hyperparams(s, learning_rate=0.5)
    p = {"w": jnp.zeros(2)}
    u, _ = opt.update({"w": jnp.ones(2)}, s2, p)
    np.testing.assert_allclose(u["w"], -0.5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        gdopt.set_hyperparams(s, lr=1.0)


def test_schedule_is_evaluated_and_recorded():
    opt = gdopt.sgd(gdopt.linear_schedule(1.0, 0.0, 4))
    p = {"w": jnp.zeros(())}
    s = opt.init(p)
    seen = []
    for _ in range(5):
        u, s = opt.update({"w": jnp.ones(())}, s, p)
        seen.append(-float(u["w"]))
        assert float(gdopt.get_hyperparams(s)["learning_rate"]) == pytest.approx(seen[-1])
    np.testing.assert_allclose(seen, [1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-7)


def test_vmap_over_learning_rates():
    f = lambda w: jnp.sum((w - 2.0) ** 2)

    def train(lr):
        opt = gdopt.sgd(lr)
        w = jnp.zeros(3)

        def body(carry, _):
            w, s = carry
            u, s = opt.update(jax.grad(f)(w), s, w)
            return (gdopt.apply_updates(w, u), s), f(w)

        (w, _), losses = jax.lax.scan(body, (w, opt.init(w)), None, length=20)
        return losses[-1]

    lrs = jnp.array([0.01, 0.1, 0.4])
    final = jax.vmap(train)(lrs)
    assert final.shape == (3,)
    for lr, value in zip(lrs, final):
        np.testing.assert_allclose(value, train(lr), rtol=1e-5)
    assert float(final[1]) < float(final[0])


def test_new_array_learning_rate_does_not_recompile():
    params = {"w": jnp.ones(4)}
    grads = {"w": jnp.ones(4)}
    traces = []

    @jax.jit
    def step(lr, params, grads):
        traces.append(1)
        opt = gdopt.adam(lr)
        u, _ = opt.update(grads, opt.init(params), params)
        return gdopt.apply_updates(params, u)

    a = step(jnp.asarray(1e-3), params, grads)
    b = step(jnp.asarray(2e-3), params, grads)
    assert len(traces) == 1
    assert step._cache_size() == 1
    assert not np.allclose(a["w"], b["w"])


def test_set_hyperparams_does_not_recompile():
    opt = gdopt.sgd(0.1)
    p = {"w": jnp.ones(2)}
    step = jax.jit(lambda s: opt.update({"w": jnp.ones(2)}, s, p))
    s = opt.init(p)
    u1, _ = step(s)
    u2, _ = step(gdopt.set_hyperparams(s, learning_rate=0.3))
    assert step._cache_size() == 1
    np.testing.assert_allclose(u2["w"], 3 * u1["w"], rtol=1e-6)


# ----------------------------------------------------------------------------- tree utilities


def test_tree_utilities():
    t = {"a": jnp.array([3.0]), "b": [jnp.array([4.0]), jnp.zeros((2, 2))]}
    assert float(gdopt.tree.tree_l2_norm(t)) == pytest.approx(5.0)
    assert float(gdopt.tree.tree_l2_norm(t, squared=True)) == pytest.approx(25.0)
    assert float(gdopt.tree.tree_vdot(t, t)) == pytest.approx(25.0)
    assert gdopt.tree.tree_size(t) == 6
    assert gdopt.tree.tree_bytes(t) == 24
    assert float(gdopt.tree.tree_linf_norm(t)) == 4.0
    assert bool(gdopt.tree.tree_all_finite(t))
    assert not bool(gdopt.tree.tree_all_finite({"x": jnp.array([jnp.nan])}))
    cast = gdopt.tree.tree_cast(t, jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(cast))
    np.testing.assert_allclose(gdopt.tree.tree_add_scaled(t, 2.0, t)["a"], [9.0])


def test_mask_leaves_errors_name_paths():
    with pytest.raises(ValueError, match="mask"):
        gdopt.tree.mask_leaves({"w": True}, {"w": 1.0, "b": 2.0})


# ----------------------------------------------------------------------------- isolation


def test_import_gdopt_does_not_import_optax():
    code = (
        "import sys, gdopt; "
        "bad = [m for m in sys.modules if m == 'optax' or m.startswith('optax.')]; "
        "assert not bad, bad; print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "clean" in out.stdout


def test_no_optax_in_package_source():
    import ast
    import pathlib

    root = pathlib.Path(gdopt.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] == "optax"]
    assert offenders == []


def test_weakly_typed_params_give_a_stable_state_type():
    opt = gdopt.adam(0.1)
    p = {"w": jnp.asarray(0.5)}  # weakly typed
    s = opt.init(p)
    assert not any(getattr(x, "weak_type", False) for x in jax.tree.leaves(s))
    step = jax.jit(lambda s: opt.update({"w": jnp.ones((), jnp.float32)}, s, p)[1])
    s = step(step(s))
    assert step._cache_size() == 1
