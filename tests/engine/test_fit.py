"""``gdopt/engine/fit.py`` (and the compile cache, ``_compile.py``): ``fit`` end to end.

Numerics (closed-form least squares, the digits data, a hand loop over the same shuffles),
the history, chunked calls and progress, early convergence, divergence (stop, raise, restore
the epoch's start), bad arguments, packed execution (by default for many arrays and a
packable optimizer, the same numbers; leaf by leaf otherwise), and compiled programs reused
across calls that differ only in hyperparameter values, but not across loss functions,
optimizer structures or dtype promotion modes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt import data as gdata
from gdopt import losses, models
from gdopt.batching import epoch_batches
from gdopt.engine import FitResult, History, _compile, make_step

KEY = jax.random.PRNGKey(0)

_COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: (
        _COMPILES.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
    )
)


def _compiles(fn):
    """``(fn(), number of backend compilations it ran)``."""
    before = len(_COMPILES)
    out = jax.block_until_ready(fn())
    return out, len(_COMPILES) - before


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


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- numerics


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
    assert not res.converged and not res.diverged and not res.packed
    assert res.stop_reason == "completed 400 epochs"
    assert res.wall_time >= res.compile_time > 0


def test_each_epoch_draws_a_new_shuffle():
    """fit's epochs are a hand loop over ``epoch_batches(fold_in(key, epoch), ...)``."""
    x, y = _lsq_problem(n=64, d=3)
    opt = gdopt.sgd(0.05, momentum=0.5)
    params = _lsq_params(3)
    res = gdopt.fit(_lsq_loss, params, opt, (x, y), epochs=2, batch_size=16, key=KEY)
    step = make_step(_lsq_loss, opt, donate=False)

    def hand(epoch_keys):
        p, s = params, opt.init(params)
        for k in epoch_keys:
            bx, by = epoch_batches(k, (x, y), 16)
            for i in range(bx.shape[0]):
                p, s, _ = step(p, s, (bx[i], by[i]))
        return p

    fresh = hand([jax.random.fold_in(KEY, epoch) for epoch in range(2)])
    _assert_trees_close(res.params, fresh)
    reused = hand([jax.random.fold_in(KEY, 0)] * 2)
    assert not np.allclose(res.params["w"], reused["w"], rtol=1e-3, atol=0)


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


def test_fit_digits_softmax_regression():
    split = gdata.load_digits()
    model = models.logistic_regression(64, 10)
    loss = losses.supervised_loss(model.apply)
    res = gdopt.fit(
        loss,
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
    np.testing.assert_allclose(h.eval_loss[-1], loss(res.params, split.test), rtol=1e-5)
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


# ----------------------------------------------------------------------------- stopping


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


# ----------------------------------------------------------------------------- bad input


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
        ({"pack": "yes"}, TypeError, "pack must be True, False or None"),
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


# ----------------------------------------------------------------------------- packing


def _many_arrays(n=100):
    """``n`` small parameter arrays (packed by default from 64) and a cheap loss of them."""
    params = [jnp.full((3,), 0.01 * i) for i in range(n)]
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 3))
    scale = 1.0 + 0.01 * jnp.arange(n, dtype=jnp.float32)

    def loss(p, batch):
        return jnp.mean((batch[:, None, :] * scale[None, :, None] - jnp.stack(p)[None]) ** 2)

    return loss, params, x


MANY = _many_arrays()


def test_fit_packs_many_arrays_for_a_packable_optimizer_with_the_same_numbers():
    loss, params, data = MANY
    kw = dict(epochs=3, batch_size=8, key=KEY, eval_data=data[:8])
    auto = gdopt.fit(loss, params, gdopt.adam(1e-2), data, **kw)
    tree = gdopt.fit(loss, params, gdopt.adam(1e-2), data, pack=False, **kw)
    assert auto.packed and not tree.packed
    # the caller gets the pytree back, and the numbers of the unpacked run
    assert jax.tree.structure(auto.opt_state) == jax.tree.structure(tree.opt_state)
    _assert_trees_close((auto.params, auto.opt_state), (tree.params, tree.opt_state), 2e-5)
    np.testing.assert_allclose(auto.history.train_loss, tree.history.train_loss, rtol=1e-5)
    np.testing.assert_allclose(auto.history.eval_loss, tree.history.eval_loss, rtol=1e-5)
    assert auto.history.train_loss[-1] < auto.history.train_loss[0]


def test_fit_does_not_pack_a_per_array_optimizer():
    loss, params, data = MANY
    res = gdopt.fit(loss, params, gdopt.lamb(1e-2), data, epochs=1)  # per-array trust ratios
    assert not res.packed
    assert jax.tree.structure(res.params) == jax.tree.structure(params)


def _few_arrays():
    k1, k2 = jax.random.split(KEY)
    params = {"w": 0.3 * jax.random.normal(k1, (4, 3)), "b": jnp.zeros(3)}
    data = (jax.random.normal(k2, (32, 4)), jnp.ones((32, 3)))
    loss = lambda p, b: jnp.mean((jnp.tanh(b[0] @ p["w"] + p["b"]) - b[1]) ** 2)
    return loss, params, data


def test_fit_packed_runs_a_per_array_optimizer_leaf_by_leaf():
    loss, params, data = _few_arrays()
    kw = dict(epochs=2, batch_size=16, key=KEY)
    packed = gdopt.fit(loss, params, gdopt.lamb(1e-2), data, pack=True, **kw)
    tree = gdopt.fit(loss, params, gdopt.lamb(1e-2), data, pack=False, **kw)
    assert packed.packed and not tree.packed
    _assert_trees_close(packed.params, tree.params, 2e-5)


def test_fit_packed_continues_from_an_unpacked_state_and_keeps_bf16_moments():
    loss, params, data = _few_arrays()
    opt = gdopt.adam(1e-2, mu_dtype=jnp.bfloat16)
    kw = dict(batch_size=16, key=KEY)
    first = gdopt.fit(loss, params, opt, data, epochs=2, pack=True, **kw)
    assert first.packed and first.opt_state.inner_state[0].mu["w"].dtype == jnp.bfloat16
    both = gdopt.fit(loss, params, opt, data, epochs=2, pack=False, **kw)
    again = gdopt.fit(
        loss, first.params, opt, data, epochs=1, pack=True, opt_state=first.opt_state, **kw
    )
    plain = gdopt.fit(
        loss, both.params, opt, data, epochs=1, pack=False, opt_state=both.opt_state, **kw
    )
    _assert_trees_close(again.params, plain.params, 1e-4)


# ----------------------------------------------------------------------------- compile cache


def _reuse_loss(p, batch):
    return _lsq_loss(p, batch)


def _other_loss(p, batch):
    return _lsq_loss(p, batch)


def test_compiled_programs_are_reused_across_hyperparameter_values():
    data = _lsq_problem(n=64)
    kw = dict(epochs=3, batch_size=16, key=KEY)

    def run(loss, opt):
        return gdopt.fit(loss, _lsq_params(), opt, data, **kw)

    first, n_first = _compiles(lambda: run(_reuse_loss, gdopt.adam(1e-3)))
    assert n_first > 0 and first.compile_time > 0
    second, n_second = _compiles(lambda: run(_reuse_loss, gdopt.adam(3e-3)))
    assert n_second == 0 and second.compile_time == 0.0
    assert not np.allclose(second.params["w"], first.params["w"])  # the new value is used
    _compile.clear()
    fresh, n_fresh = _compiles(lambda: run(_reuse_loss, gdopt.adam(3e-3)))
    assert n_fresh > 0
    for a, b in zip(jax.tree.leaves(second), jax.tree.leaves(fresh), strict=True):
        if isinstance(a, (jax.Array, np.ndarray)):
            np.testing.assert_array_equal(a, b)
    # another loss function, another optimizer structure: compiled again
    assert _compiles(lambda: run(_other_loss, gdopt.adam(3e-3)))[1] > 0
    nesterov, n_nesterov = _compiles(lambda: run(_reuse_loss, gdopt.adam(3e-3, nesterov=True)))
    assert n_nesterov > 0
    # the same state layout, another rule: its own program, so other numbers
    assert not np.allclose(nesterov.params["w"], second.params["w"])


def _mixed_loss(p, batch):
    """float32 parameters meet bfloat16 data: implicit promotion, refused under strict."""
    x, y = batch
    return jnp.mean((x.astype(jnp.bfloat16) @ p["w"] + p["b"] - y) ** 2)


def test_a_program_traced_under_standard_promotion_is_not_reused_under_strict():
    data = _lsq_problem(n=32)
    kw = dict(epochs=1, batch_size=16, key=KEY)
    with jax.numpy_dtype_promotion("standard"):
        res = gdopt.fit(_mixed_loss, _lsq_params(), gdopt.sgd(0.1), data, **kw)
        assert np.all(np.isfinite(res.params["w"]))
        _, n = _compiles(lambda: gdopt.fit(_reuse_loss, _lsq_params(), gdopt.sgd(0.1), data, **kw))
    with jax.numpy_dtype_promotion("strict"):
        with pytest.raises(jax.dtypes.TypePromotionError):
            gdopt.fit(_mixed_loss, _lsq_params(), gdopt.sgd(0.1), data, **kw)
        _, n_strict = _compiles(
            lambda: gdopt.fit(_reuse_loss, _lsq_params(), gdopt.sgd(0.1), data, **kw)
        )
    assert n_strict > 0
