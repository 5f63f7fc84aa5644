"""Tests of gdopt.engine: make_step, the compiled core and fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt import data as gdata
from gdopt import losses, models
from gdopt.engine import FitResult, History, init_fit_state, make_step, make_train_fn

KEY = jax.random.PRNGKey(0)


def _quadratic(params, batch):
    return 0.5 * jnp.sum(batch * (params["w"] - 1.0) ** 2)


def _lsq_problem(n=128, d=4, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(k1, (n, d))
    y = x @ jnp.arange(1.0, d + 1.0) - 0.5 + 0.3 * jax.random.normal(k2, (n,))
    return x, y


def _lsq_loss(p, batch):
    x, y = batch
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


def _lsq_params(d=4):
    return {"w": jnp.zeros(d), "b": jnp.zeros(())}


# ---------------------------------------------------------------- make_step


def test_make_step_matches_hand_written_momentum():
    a = jnp.array([1.0, 3.0])  # loss 0.5 * sum(a (w - 1)^2): grad a (w - 1)
    opt = gdopt.sgd(0.1, momentum=0.5)
    step = make_step(_quadratic, opt)
    params = {"w": jnp.array([0.0, 2.0])}
    state = opt.init(params)
    w, m = np.array([0.0, 2.0]), np.zeros(2)
    for _ in range(3):
        loss_ref = 0.5 * np.sum(np.asarray(a) * (w - 1.0) ** 2)
        g = np.asarray(a) * (w - 1.0)
        m = g + 0.5 * m
        w = w - 0.1 * m
        params, state, loss = step(params, state, a)
        np.testing.assert_allclose(float(loss), loss_ref, rtol=1e-6)
        np.testing.assert_allclose(params["w"], w, rtol=1e-6)


def test_make_step_passes_the_loss_as_value():
    # A transform that scales the gradient by the loss it is given as ``value``.
    def update(updates, state, params=None, *, value=None, factor=1.0, **extra):
        if value is None:
            raise ValueError("value missing")
        return jax.tree.map(lambda g: -factor * value * g, updates), state

    opt = gdopt.GradientTransformation(lambda p: gdopt.EmptyState(), update)
    step = make_step(_quadratic, opt)
    params, _, loss = step({"w": jnp.array([3.0])}, gdopt.EmptyState(), jnp.array([1.0]))
    # loss = 0.5 * 4 = 2, grad = 2: w = 3 - 2 * 2 = -1
    assert float(loss) == 2.0
    assert float(params["w"][0]) == -1.0
    # extra keyword arguments reach optimizer.update: w = 3 - 0.5 * 2 * 2 = 1
    params, _, _ = step({"w": jnp.array([3.0])}, gdopt.EmptyState(), jnp.array([1.0]), factor=0.5)
    assert float(params["w"][0]) == 1.0


def test_make_step_donation_and_no_recompile():
    traces = []

    def loss_fn(params, batch):
        traces.append(1)
        return _quadratic(params, batch)

    opt = gdopt.adam(0.1)
    step = make_step(loss_fn, opt)
    params = {"w": jnp.zeros(3)}
    state = opt.init(params)
    old = params["w"]
    for _ in range(5):
        params, state, _ = step(params, state, jnp.ones(3))
    assert old.is_deleted()  # donated: invalid after the call
    assert len(traces) == 1 and step._cache_size() == 1
    # fresh inputs with the same shapes reuse the compiled step
    p2 = {"w": jnp.ones(3)}
    p2, _, loss = step(p2, opt.init(p2), jnp.ones(3))
    assert float(loss) == 0.0 and len(traces) == 1 and step._cache_size() == 1


def test_make_step_without_donation_keeps_inputs():
    opt = gdopt.sgd(0.1)
    step = make_step(_quadratic, opt, donate=False)
    params = {"w": jnp.zeros(2)}
    new, _, _ = step(params, opt.init(params), jnp.ones(2))
    assert not params["w"].is_deleted()
    np.testing.assert_allclose(new["w"], [0.1, 0.1], rtol=1e-6)


def test_make_step_has_aux_and_no_jit():
    def loss_fn(params, batch):
        loss = _quadratic(params, batch)
        return loss, {"double": 2 * loss}

    opt = gdopt.sgd(0.1)
    step = make_step(loss_fn, opt, has_aux=True, jit=False)
    params = {"w": jnp.zeros(2)}
    _, _, loss, aux = step(params, opt.init(params), jnp.ones(2))
    assert float(aux["double"]) == 2 * float(loss) == 2.0
    # the plain step vmaps over learning rates held in the state
    state = opt.init(params)
    run = lambda lr: step(params, gdopt.set_hyperparams(state, learning_rate=lr), jnp.ones(2))
    batched = jax.vmap(run)(jnp.array([0.1, 0.2]))[0]["w"]
    np.testing.assert_allclose(batched, [[0.1, 0.1], [0.2, 0.2]], rtol=1e-6)


# ---------------------------------------------------------------- fit: numerics


def test_fit_least_squares_reaches_closed_form():
    x, y = _lsq_problem()
    res = gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.2), (x, y), epochs=400)
    coef, *_ = np.linalg.lstsq(
        np.c_[np.asarray(x), np.ones(len(x))], np.asarray(y, np.float64), rcond=None
    )
    got = np.r_[np.asarray(res.params["w"]), float(res.params["b"])]
    np.testing.assert_allclose(got, coef, rtol=1e-4, atol=1e-5)
    assert isinstance(res, FitResult) and isinstance(res.history, History)
    assert res.epochs_run == 400 and res.steps_run == 400  # full batch: one step per epoch
    assert not res.converged and not res.diverged
    assert res.stop_reason == "completed 400 epochs"
    assert res.wall_time >= res.compile_time > 0


def test_fit_minibatch_history_and_caller_params_intact():
    x, y = _lsq_problem()
    params = _lsq_params()
    res = gdopt.fit(_lsq_loss, params, gdopt.adam(0.05), (x, y), epochs=30, batch_size=20, key=KEY)
    assert not params["w"].is_deleted()  # fit copies before donating its carry
    assert res.steps_run == 30 * (128 // 20)
    h = res.history
    assert h.train_loss.shape == (30,) and h.eval_loss.shape == (0,)
    assert h.eval_accuracy.shape == (0,)
    np.testing.assert_array_equal(h.epochs, np.arange(1, 31))
    assert h.train_loss[-1] < 0.2 < h.train_loss[0]
    assert isinstance(h.train_loss, np.ndarray)


def test_fit_chunked_equals_single_call_and_progress(capsys):
    x, y = _lsq_problem()
    kw = dict(epochs=9, batch_size=16, key=KEY)
    one = gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.05, momentum=0.9), (x, y), **kw)
    chunked = gdopt.fit(
        _lsq_loss,
        _lsq_params(),
        gdopt.sgd(0.05, momentum=0.9),
        (x, y),
        epochs_per_call=4,
        progress=True,
        **kw,
    )
    np.testing.assert_allclose(chunked.params["w"], one.params["w"], rtol=1e-6)
    np.testing.assert_allclose(chunked.history.train_loss, one.history.train_loss, rtol=1e-6)
    assert chunked.epochs_run == 9
    assert "9/9" in capsys.readouterr().err


def test_fit_converges_early():
    x, y = _lsq_problem()
    tol, patience = 1e-3, 3
    res = gdopt.fit(
        _lsq_loss, _lsq_params(), gdopt.sgd(0.1), (x, y), epochs=1000, tol=tol, patience=patience
    )
    assert res.converged and not res.diverged
    assert 10 < res.epochs_run < 1000
    assert len(res.history.train_loss) == res.epochs_run
    assert f"converged at epoch {res.epochs_run}" in res.stop_reason
    loss = res.history.train_loss.astype(np.float64)
    rel = np.abs(np.diff(loss)) / np.abs(loss[:-1])
    assert np.all(rel[-patience:] < tol)  # the rule fired ...
    assert not np.all(rel[-patience - 1 : -1] < tol)  # ... and not one epoch earlier


def test_fit_divergence_keeps_last_finite_params():
    x, y = _lsq_problem()
    res = gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(5.0), (x, y), epochs=100, batch_size=32)
    assert res.diverged and not res.converged
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(res.params))
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(res.opt_state))
    assert f"diverged at epoch {res.epochs_run} (step {res.steps_run + 1})" in res.stop_reason
    assert "smaller learning_rate" in res.stop_reason
    assert 1 <= res.epochs_run < 100
    assert len(res.history.train_loss) == res.epochs_run
    with pytest.raises(FloatingPointError, match=r"diverged at epoch \d+ \(step \d+\)"):
        gdopt.fit(
            _lsq_loss,
            _lsq_params(),
            gdopt.sgd(5.0),
            (x, y),
            epochs=100,
            batch_size=32,
            on_divergence="raise",
        )


def test_fit_digits_softmax_regression():
    split = gdata.load_digits()
    model = models.logistic_regression(64, 10)
    res = gdopt.fit(
        losses.supervised_loss(model.apply),
        model.init(KEY),
        gdopt.adam(0.01),
        split.train,
        epochs=15,
        batch_size=32,
        eval_data=split.test,
        accuracy_fn=losses.supervised_accuracy(model.apply),
    )
    h = res.history
    assert h.eval_loss.shape == h.eval_accuracy.shape == h.train_loss.shape == (15,)
    assert np.all((h.eval_accuracy >= 0) & (h.eval_accuracy <= 1))
    assert h.eval_loss[-1] < h.eval_loss[0]
    assert h.eval_accuracy[-1] >= 0.95


def test_fit_digits_mlp():
    split = gdata.load_digits()
    model = models.mlp([64, 64, 10], "relu")
    res = gdopt.fit(
        losses.supervised_loss(model.apply),
        model.init(KEY),
        gdopt.adam(3e-3),
        split.train,
        epochs=20,
        batch_size=32,
        eval_data=split.test,
        accuracy_fn=losses.supervised_accuracy(model.apply),
    )
    assert res.history.eval_accuracy[-1] >= 0.97


def test_train_fn_vmaps_over_learning_rates():
    x, y = _lsq_problem()
    lrs = jnp.array([0.01, 0.05, 0.2])
    opt = gdopt.sgd(0.1)
    params = _lsq_params()
    state0 = opt.init(params)
    train = make_train_fn(_lsq_loss, opt, n_epochs=5, batch_size=32)

    def run(lr):
        s = init_fit_state(params, gdopt.set_hyperparams(state0, learning_rate=lr))
        return train(s, (x, y), KEY)

    states, hist = jax.jit(jax.vmap(run))(lrs)
    assert hist.train_loss.shape == (3, 5)
    single = jax.jit(run)  # one compile: the learning rate is data
    for i, lr in enumerate(lrs):
        ref_state, ref_hist = single(lr)
        np.testing.assert_allclose(states.params["w"][i], ref_state.params["w"], rtol=2e-5)
        np.testing.assert_allclose(hist.train_loss[i], ref_hist.train_loss, rtol=2e-5)
    # and the single runs are what fit computes
    ref = gdopt.fit(_lsq_loss, params, gdopt.sgd(0.2), (x, y), epochs=5, batch_size=32, key=KEY)
    np.testing.assert_allclose(states.params["w"][2], ref.params["w"], rtol=2e-5)
    assert not np.allclose(states.params["w"][0], states.params["w"][2])


# ---------------------------------------------------------------- fit: bad input


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"epochs": 0}, ValueError, "epochs must be an integer >= 1, got 0"),
        ({"epochs": 2.5}, TypeError, "epochs must be an integer"),
        ({"batch_size": 0}, ValueError, r"batch_size must be an integer in \[1, 128\].*got 0"),
        ({"batch_size": 129}, ValueError, r"\[1, 128\].*got 129"),
        ({"on_divergence": "ignore"}, ValueError, "on_divergence must be 'stop' or 'raise'"),
        ({"tol": -1.0}, ValueError, "tol must be a finite number > 0"),
        ({"patience": 0}, ValueError, "patience must be an integer >= 1"),
        ({"epochs_per_call": 0}, ValueError, "epochs_per_call must be an integer >= 1"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, exc, match):
    x, y = _lsq_problem()
    kw = {"epochs": 2, **kwargs}
    with pytest.raises(exc, match=match):
        gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.1), (x, y), **kw)


def test_fit_rejects_bad_data_and_params():
    x, y = _lsq_problem()
    opt = gdopt.sgd(0.1)
    with pytest.raises(ValueError, match=r"data\[0\] has 128 examples but data\[1\] has 127"):
        gdopt.fit(_lsq_loss, _lsq_params(), opt, (x, y[:-1]), epochs=1)
    with pytest.raises(ValueError, match="empty"):
        gdopt.fit(_lsq_loss, _lsq_params(), opt, (x[:0], y[:0]), epochs=1)
    with pytest.raises(ValueError, match=r"eval_data\[0\] has 3 examples"):
        gdopt.fit(_lsq_loss, _lsq_params(), opt, (x, y), epochs=1, eval_data=(x[:3], y[:2]))
    with pytest.raises(TypeError, match=r"params\['n'\] has dtype int32"):
        gdopt.fit(_lsq_loss, {**_lsq_params(), "n": jnp.array(1)}, opt, (x, y), epochs=1)


# ---------------------------------------------------------------- divergence, restore


def test_fit_restores_the_epoch_start_when_params_overflow_with_a_finite_loss():
    # tanh hides infinite parameters from the loss (tanh(±inf) = ±1): only the end-of-epoch
    # check of the parameters can catch them, and fit then restores the epoch's start
    loss = lambda p, b: 10.0 * jnp.sum(jnp.tanh(p["w"])) + 0.0 * jnp.sum(b)  # |g| > 1
    params = {"w": jnp.array([0.1, -0.2, 0.3])}
    data = jnp.zeros((8, 1))
    res = gdopt.fit(loss, params, gdopt.sgd(3e38), data, epochs=5, batch_size=4)
    assert res.diverged and res.epochs_run == 1 and res.steps_run == 0
    np.testing.assert_array_equal(res.params["w"], params["w"])
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(res.opt_state))
    assert "diverged at epoch 1: the parameters became nan/inf" in res.stop_reason
    assert "start of that epoch (after 0 steps)" in res.stop_reason
    # a second epoch that overflows restores to the end of the first one
    lr = lambda count: jnp.where(count < 2, 1e-3, 3e38)  # two good steps, then overflow
    res = gdopt.fit(loss, params, gdopt.sgd(lr), data, epochs=5, batch_size=4)
    assert res.diverged and res.epochs_run == 2 and res.steps_run == 2
    first = gdopt.fit(loss, params, gdopt.sgd(lr), data, epochs=1, batch_size=4)
    np.testing.assert_array_equal(res.params["w"], first.params["w"])


def test_fit_divergence_state_flags_in_the_core():
    train = make_train_fn(_lsq_loss, gdopt.sgd(5.0), n_epochs=50, batch_size=32)
    params = _lsq_params()
    state, hist = jax.jit(train)(
        init_fit_state(params, gdopt.sgd(5.0).init(params)), _lsq_problem(), KEY
    )
    assert bool(state.diverged) and int(state.diverged_step) == int(state.step) + 1
    assert int(state.diverged_epoch) == int(state.epoch)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(state.params))


# ---------------------------------------------------------------- packed execution


def _deep_problem(depth=40, width=8, seed=0):
    """A residual MLP with 2 * depth parameter arrays (packed by default from 64)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), depth + 2)
    params = [
        {"w": 0.3 * jax.random.normal(k, (width, width)), "b": jnp.zeros(width)}
        for k in keys[:depth]
    ]
    x = jax.random.normal(keys[-2], (96, width))
    y = jnp.sin(x) @ jax.random.normal(keys[-1], (width, width))

    def loss(p, batch):
        h = batch[0]
        for layer in p:
            h = h + 0.2 * jnp.tanh(h @ layer["w"] + layer["b"])
        return jnp.mean((h - batch[1]) ** 2)

    return loss, params, (x, y)


def test_fit_packs_many_leaf_models_by_default_with_the_same_numbers():
    loss, params, data = _deep_problem()
    assert gdopt.engine.should_pack(params, gdopt.adam(1e-2))
    kw = dict(epochs=6, batch_size=32, key=KEY, eval_data=data)
    auto = gdopt.fit(loss, params, gdopt.adam(1e-2), data, **kw)
    tree = gdopt.fit(loss, params, gdopt.adam(1e-2), data, pack=False, **kw)
    assert jax.tree.structure(auto.params) == jax.tree.structure(params)
    assert jax.tree.structure(auto.opt_state) == jax.tree.structure(tree.opt_state)
    for a, b in zip(
        jax.tree.leaves((auto.params, auto.opt_state)),
        jax.tree.leaves((tree.params, tree.opt_state)),
    ):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(auto.history.train_loss, tree.history.train_loss, rtol=1e-5)
    np.testing.assert_allclose(auto.history.eval_loss, tree.history.eval_loss, rtol=1e-5)
    assert auto.history.train_loss[-1] < 0.5 * auto.history.train_loss[0]


def test_fit_packed_continues_from_an_unpacked_state_and_keeps_bf16_moments():
    loss, params, data = _deep_problem(depth=4)
    opt = gdopt.adam(1e-2, mu_dtype=jnp.bfloat16)
    kw = dict(batch_size=32, key=KEY)
    first = gdopt.fit(loss, params, opt, data, epochs=2, pack=True, **kw)
    assert first.opt_state.inner_state[0].mu[0]["w"].dtype == jnp.bfloat16
    both = gdopt.fit(loss, params, opt, data, epochs=2, pack=False, **kw)
    again = gdopt.fit(
        loss, first.params, opt, data, epochs=1, pack=True, opt_state=first.opt_state, **kw
    )
    plain = gdopt.fit(
        loss, both.params, opt, data, epochs=1, pack=False, opt_state=both.opt_state, **kw
    )
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(plain.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fit_packed_with_a_per_leaf_optimizer_runs_leaf_by_leaf():
    loss, params, data = _deep_problem(depth=3)
    kw = dict(epochs=3, batch_size=32, key=KEY)
    packed = gdopt.fit(loss, params, gdopt.lamb(1e-2), data, pack=True, **kw)
    tree = gdopt.fit(loss, params, gdopt.lamb(1e-2), data, pack=False, **kw)
    for a, b in zip(jax.tree.leaves(packed.params), jax.tree.leaves(tree.params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_make_step_packed_matches_the_pytree_step_and_checks_its_input():
    loss, params, data = _deep_problem(depth=3)
    opt = gdopt.adamw(1e-2)
    step = make_step(loss, opt, donate=False)
    pstep = make_step(loss, opt, donate=False, pack=True)
    p, s = params, opt.init(params)
    q = gdopt.pack(params)
    qs = gdopt.packing.packed_optimizer(opt).init(q)
    for _ in range(3):
        p, s, value = step(p, s, data)
        q, qs, pvalue = pstep(q, qs, data)
        np.testing.assert_allclose(pvalue, value, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(gdopt.unpack(q)), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError, match=r"make_step\(pack=True\): params must be packed"):
        pstep(params, qs, data)


def test_fit_rejects_a_bad_pack_argument():
    with pytest.raises(TypeError, match="pack must be True, False or None"):
        gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.1), _lsq_problem(), epochs=1, pack="yes")
