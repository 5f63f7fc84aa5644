"""``gdopt/engine/fit.py`` (and the compile cache, ``_compile.py``): ``fit`` end to end.

Numerics (closed-form least squares, the digits data, a hand loop over the same shuffles),
the history, chunked calls and progress, early convergence, divergence (stop, raise, restore
the epoch's start), bad arguments, packed execution (by default for many arrays and a
packable optimizer, the same numbers; leaf by leaf otherwise), and compiled programs reused
across calls that differ only in hyperparameter values, but not across loss functions,
optimizer structures or dtype promotion modes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt import _compile, checkpoint, losses, models
from gdopt import data as gdata
from gdopt.batching import epoch_batches
from gdopt.engine import FitResult, History, make_step
from tests.helpers import bad_inputs, counting_compiles, subprocess_env
from tests.helpers import lsq_loss as _lsq_loss
from tests.helpers import lsq_params as _lsq_params
from tests.helpers import lsq_problem as _lsq_problem

KEY = jax.random.PRNGKey(0)


def _compiles(fn):
    """``(fn(), number of backend compilations it ran)``."""
    with counting_compiles() as c:
        out = jax.block_until_ready(fn())
    return out, c.count


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
    with pytest.warns(RuntimeWarning, match="diverged at epoch .*the loss became nan/inf"):
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
    with pytest.warns(RuntimeWarning, match="parameters became nan/inf"):
        res = gdopt.fit(loss, params, gdopt.sgd(3e38), data, epochs=5, batch_size=4)
    assert res.diverged and res.epochs_run == 1 and res.steps_run == 0
    np.testing.assert_array_equal(res.params["w"], params["w"])
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(res.opt_state))
    assert "diverged at epoch 1: the parameters became nan/inf" in res.stop_reason
    assert "start of that epoch (after 0 steps)" in res.stop_reason
    # a second epoch that overflows restores to the end of the first one
    lr = lambda count: jnp.where(count < 2, 1e-3, 3e38)  # two good steps, then overflow
    with pytest.warns(RuntimeWarning, match="parameters became nan/inf"):
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
        (
            {"on_divergence": "ignore"},
            ValueError,
            "on_divergence must be 'stop', 'raise' or 'skip'",
        ),
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


# ----------------------------------------------------------------------------- resume


def _assert_bits_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_from_a_result_is_bit_identical_to_one_run():
    x, y = _lsq_problem()
    opt = gdopt.adam(0.05)
    kw = dict(batch_size=16, key=3, eval_data=(x, y), tol=1e-9, patience=2)
    full = gdopt.fit(_lsq_loss, _lsq_params(), opt, (x, y), epochs=10, **kw)
    part = gdopt.fit(_lsq_loss, _lsq_params(), opt, (x, y), epochs=4, **kw)
    more = gdopt.fit(_lsq_loss, _lsq_params(), opt, (x, y), epochs=10, resume_from=part, **kw)
    _assert_bits_equal((more.params, more.opt_state), (full.params, full.opt_state))
    _assert_bits_equal(more.history, full.history)
    assert (more.epochs_run, more.steps_run) == (10, 80) == (full.epochs_run, full.steps_run)
    assert isinstance(more.state, gdopt.FitState) and int(more.state.epoch) == 10
    # twice more from the same result: the result is not consumed
    again = gdopt.fit(_lsq_loss, _lsq_params(), opt, (x, y), epochs=10, resume_from=part, **kw)
    _assert_bits_equal(again.params, full.params)
    # a run already at its target runs nothing more
    same = gdopt.fit(_lsq_loss, _lsq_params(), opt, (x, y), epochs=10, resume_from=full, **kw)
    _assert_bits_equal(same.params, full.params)
    assert same.epochs_run == 10 and len(same.history.train_loss) == 10


def test_checkpoints_every_n_epochs_and_resume_is_bit_identical(tmp_path):
    x, y = _lsq_problem()
    opt = gdopt.sgd(0.05, momentum=0.9)
    kw = dict(batch_size=32, key=jax.random.key(7))
    full = gdopt.fit(_lsq_loss, _lsq_params(), opt, (x, y), epochs=7, **kw)
    d = tmp_path / "run"
    part = gdopt.fit(
        _lsq_loss, _lsq_params(), opt, (x, y), epochs=5, checkpoint_dir=d, checkpoint_every=2, **kw
    )
    assert checkpoint.all_steps(d) == [2, 4, 5]  # every 2 epochs and at the end
    with pytest.raises(ValueError, match="already holds checkpoints .*resume=True"):
        gdopt.fit(_lsq_loss, _lsq_params(), opt, (x, y), epochs=7, checkpoint_dir=d, **kw)
    with pytest.raises(ValueError, match="trained with another key"):
        gdopt.fit(
            _lsq_loss,
            _lsq_params(),
            opt,
            (x, y),
            epochs=7,
            checkpoint_dir=d,
            resume=True,
            batch_size=32,
            key=8,
        )
    more = gdopt.fit(
        _lsq_loss,
        _lsq_params(),
        opt,
        (x, y),
        epochs=7,
        checkpoint_dir=d,
        checkpoint_every=2,
        resume=True,
        **kw,
    )
    assert checkpoint.all_steps(d) == [2, 4, 5, 6, 7]
    _assert_bits_equal((more.params, more.opt_state), (full.params, full.opt_state))
    np.testing.assert_array_equal(more.history.train_loss, full.history.train_loss)
    assert more.steps_run == full.steps_run == 7 * 4
    # the checkpoint is the whole state: restore it directly, NamedTuples and all
    like = {
        "state": gdopt.init_fit_state(_lsq_params(), opt.init(_lsq_params())),
        "key": jnp.zeros(2, jnp.uint32),
        "history": {
            # the per-epoch fields (those of record="step"/diagnostics only when recorded)
            f: np.zeros(5, np.int32 if f == "epochs" else np.float32)
            for f in History._fields[:4]
        },
    }
    back = checkpoint.restore(d, like=like, step=5)
    _assert_bits_equal(back["state"].params, part.params)
    assert type(back["state"].opt_state) is type(part.opt_state)
    assert int(back["state"].epoch) == 5 and int(back["state"].step) == 20
    np.testing.assert_array_equal(back["history"]["epochs"], np.arange(1, 6))
    # resume=True on an empty directory starts the run
    fresh = gdopt.fit(
        _lsq_loss,
        _lsq_params(),
        opt,
        (x, y),
        epochs=7,
        checkpoint_dir=tmp_path / "new",
        resume=True,
        **kw,
    )
    _assert_bits_equal(fresh.params, full.params)


_PROBLEM = """
import jax, jax.numpy as jnp, numpy as np, gdopt
x = jax.random.normal(jax.random.PRNGKey(0), (1024, 16))
y = jnp.tanh(x @ jnp.linspace(-1.0, 1.0, 16))
def loss(p, b):
    h = jnp.tanh(b[0] @ p["w1"] + p["b1"])
    return jnp.mean((h @ p["w2"] - b[1]) ** 2)
k1, k2 = jax.random.split(jax.random.PRNGKey(1))
params = {"w1": 0.3 * jax.random.normal(k1, (16, 64)), "b1": jnp.zeros(64),
          "w2": 0.1 * jax.random.normal(k2, (64,))}
"""

_TRAIN_SCRIPT = (
    _PROBLEM
    + """
import sys
mode, directory = sys.argv[1], sys.argv[2]
kw = dict(epochs=int(sys.argv[3]), batch_size=64, key=5)
res = gdopt.fit(loss, params, gdopt.adam(1e-3), (x, y), checkpoint_dir=directory,
                checkpoint_every=int(sys.argv[4]), resume=(mode == "resume"),
                progress=(mode == "progress"), **kw)
np.savez(directory + ".npz", **{k: np.asarray(v) for k, v in res.params.items()},
         epochs_run=res.epochs_run)
print(res.stop_reason, flush=True)  # the test times the SIGINT to this line
"""
)


def _script(*args, **popen):
    env = subprocess_env()  # the suite's warning filters: a warning fails the test
    return subprocess.Popen(
        [sys.executable, "-c", _TRAIN_SCRIPT, *map(str, args)], env=env, text=True, **popen
    )


def test_a_run_killed_mid_way_resumes_bit_identically(tmp_path):
    d = str(tmp_path / "run")
    epochs, every = 10, 2
    proc = _script("fresh", d, epochs, every, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while (checkpoint.latest_step(d) or 0) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes its pipes (no ResourceWarning)
    killed_at = checkpoint.latest_step(d)
    assert killed_at is not None and 2 <= killed_at < epochs
    out = subprocess.run(
        [sys.executable, "-c", _TRAIN_SCRIPT, "resume", d, str(epochs), str(every)],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == f"completed {epochs} epochs"
    resumed = np.load(d + ".npz")
    problem: dict = {}
    exec(_PROBLEM, problem)  # the same run, uninterrupted, here
    straight = gdopt.fit(
        problem["loss"],
        problem["params"],
        gdopt.adam(1e-3),
        (problem["x"], problem["y"]),
        epochs=epochs,
        batch_size=64,
        key=5,
    )
    for k in ("w1", "b1", "w2"):
        np.testing.assert_array_equal(resumed[k], np.asarray(straight.params[k]))
    assert int(resumed["epochs_run"]) == epochs


# ----------------------------------------------------------------------------- interruption


def test_ctrl_c_stops_a_long_run_within_two_seconds_and_saves_it(tmp_path):
    d = str(tmp_path / "run")
    proc = _script("progress", d, 20000, 100000, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        seen = ""
        while "fit:" not in seen:  # the progress bar: compiled, in the host loop
            ch = proc.stderr.read(1)
            assert ch, seen
            seen += ch
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # fit returned, its result saved
        took = time.monotonic() - sent
        out, err = proc.communicate(timeout=30)
        out = first + out
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert out.startswith("interrupted (Ctrl-C) after epoch "), out
    assert took < 2.0, took
    epochs_run = int(np.load(d + ".npz")["epochs_run"])
    assert 0 < epochs_run < 20000
    assert f"after epoch {epochs_run} of 20000" in out and "saved in" in out
    assert checkpoint.latest_step(d) == epochs_run


def test_chunked_calls_are_the_same_numbers_as_one_call():
    x, y = _lsq_problem()
    kw = dict(epochs=30, batch_size=16, key=KEY)
    one = gdopt.fit(_lsq_loss, _lsq_params(), gdopt.adam(0.01), (x, y), epochs_per_call=30, **kw)
    auto = gdopt.fit(_lsq_loss, _lsq_params(), gdopt.adam(0.01), (x, y), **kw)
    _assert_bits_equal(auto.params, one.params)
    _assert_bits_equal(auto.history, one.history)


# ----------------------------------------------------------------------------- guards


def test_fit_refuses_nan_or_inf_in_data_and_eval_data_naming_the_array_and_index():
    x, y = _lsq_problem()
    opt = gdopt.sgd(0.1)
    with pytest.raises(
        ValueError, match=r"data\[0\] holds a non-finite value \(nan\) at index \(5, 1\)"
    ):
        gdopt.fit(_lsq_loss, _lsq_params(), opt, (x.at[5, 1].set(jnp.nan), y), epochs=1)
    with pytest.raises(
        ValueError, match=r"eval_data\[1\] holds a non-finite value \(inf\) at index \(3,\)"
    ):
        gdopt.fit(
            _lsq_loss, _lsq_params(), opt, (x, y), epochs=1, eval_data=(x, y.at[3].set(jnp.inf))
        )


def _classifier():
    x = jax.random.normal(jax.random.PRNGKey(0), (40, 3))
    y = jnp.arange(40, dtype=jnp.int32) % 4
    w0 = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}

    def loss(p, batch):
        logits = batch[0] @ p["w"] + p["b"]
        return jnp.mean(losses.softmax_cross_entropy_with_integer_labels(logits, batch[1]))

    return loss, w0, x, y


@pytest.mark.parametrize("bad, where", [(4, "data"), (-1, "data"), (7, "eval_data")])
def test_fit_refuses_integer_labels_outside_the_classes(bad, where):
    loss, w0, x, y = _classifier()
    bad_y = y.at[7].set(bad)
    data, ev = ((x, bad_y), None) if where == "data" else ((x, y), (x, bad_y))
    lo, hi = min(0, bad), max(3, bad)
    with pytest.raises(ValueError, match=rf"{where}\[1\] \(values in \[{lo}, {hi}\]\).*4 classes"):
        gdopt.fit(loss, w0, gdopt.sgd(0.1), data, epochs=1, batch_size=8, eval_data=ev)
    ok = gdopt.fit(loss, w0, gdopt.sgd(0.1), (x, y), epochs=1, batch_size=8, eval_data=(x, y))
    assert ok.epochs_run == 1


def test_fit_refuses_a_schedule_that_goes_negative_within_the_run():
    x, y = _lsq_problem()  # 128 examples, batch 32: 4 steps per epoch
    lr = gdopt.linear_schedule(0.1, -0.1, 100)  # negative from step 51 on
    res = gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(lr), (x, y), epochs=12, batch_size=32)
    assert res.steps_run == 48  # 48 steps stay in [0, 50]: allowed
    with pytest.raises(ValueError, match=r"schedule of learning_rate gives -0\.00\d+ at step 51"):
        gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(lr), (x, y), epochs=13, batch_size=32)
    nan_lr = lambda count: jnp.where(count < 3, 0.1, jnp.nan)
    with pytest.raises(ValueError, match="gives nan at step 3"):
        gdopt.fit(_lsq_loss, _lsq_params(), gdopt.adam(nan_lr), (x, y), epochs=1, batch_size=32)


def _spiky(data_bad_rows):
    """A least-squares loss that is nan on every batch holding a marked row."""

    def loss(p, b):
        value = jnp.mean((b[:, 0] * p - b[:, 1]) ** 2)
        return jnp.where(jnp.any(b[:, 2] > 0), jnp.nan, value)

    rows = jnp.arange(16)
    mark = jnp.isin(rows, jnp.asarray(data_bad_rows)).astype(jnp.float32)
    return loss, jnp.stack([jnp.ones(16), jnp.full(16, 2.0), mark], 1)


def test_skip_counts_non_finite_steps_and_gives_up_after_max_skips_in_a_row():
    loss, d = _spiky([3])
    with pytest.warns(RuntimeWarning, match="diverged"):
        stop = gdopt.fit(loss, jnp.zeros(()), gdopt.sgd(0.1), d, epochs=20, batch_size=4)
    assert stop.diverged and stop.epochs_run == 1
    skip = gdopt.fit(
        loss,
        jnp.zeros(()),
        gdopt.sgd(0.1),
        d,
        epochs=20,
        batch_size=4,
        on_divergence="skip",
        max_skips=2,
    )
    # one bad batch of four per epoch: skipped, counted, never two in a row
    assert not skip.diverged and skip.skipped_steps == 20 and skip.steps_run == 60
    assert skip.stop_reason == "completed 20 epochs (20 non-finite steps skipped)"
    assert abs(float(skip.params) - 2.0) < 1e-3
    # every batch bad: gives up at the third bad step in a row
    loss, d = _spiky(list(range(16)))
    with pytest.warns(RuntimeWarning, match=r"step 1\): the loss became nan/inf \(2 non-finite"):
        out = gdopt.fit(
            loss,
            jnp.zeros(()),
            gdopt.sgd(0.1),
            d,
            epochs=5,
            batch_size=4,
            on_divergence="skip",
            max_skips=2,
        )
    assert out.diverged and out.skipped_steps == 2 and out.steps_run == 0
    with pytest.raises(ValueError, match="max_skips must be an integer >= 1"):
        gdopt.fit(
            loss, jnp.zeros(()), gdopt.sgd(0.1), d, epochs=1, on_divergence="skip", max_skips=0
        )


def test_divergence_names_the_gradient_leaf_that_went_non_finite_first():
    # sqrt(|x . a|) has an infinite gradient where x . a = 0, a finite loss
    loss = lambda p, b: jnp.mean(jnp.sqrt(jnp.abs(b @ p["a"]))) + jnp.sum(p["b"] ** 2)
    xs = jnp.concatenate([jnp.ones((8, 2)), jnp.zeros((8, 2))])
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    with pytest.warns(RuntimeWarning) as record:
        res = gdopt.fit(loss, params, gdopt.sgd(0.01), xs, epochs=3, batch_size=8)
    assert res.diverged
    assert "the gradient of params['a'] became nan/inf (the loss was finite)" in res.stop_reason
    assert str(record[0].message) == f"gdopt.fit {res.stop_reason}"
    np.testing.assert_array_equal(res.params["a"], params["a"])  # never applied


def test_fit_minimises_a_deterministic_objective_without_data():
    quad = lambda p: jnp.sum((p["x"] - jnp.arange(3.0)) ** 2)
    res = gdopt.fit(quad, {"x": jnp.zeros(3)}, gdopt.sgd(0.25), epochs=30)
    # x_{t+1} = x_t - 0.25 * 2 (x_t - c) = (x_t + c) / 2: the gap halves every epoch
    np.testing.assert_allclose(res.params["x"], jnp.arange(3.0) * (1 - 0.5**30), rtol=1e-6)
    assert res.steps_run == 30 and len(res.history.train_loss) == 30
    np.testing.assert_allclose(res.history.train_loss[:2], [5.0, 1.25], rtol=1e-6)
    with pytest.raises(ValueError, match="batch_size=4 needs data"):
        gdopt.fit(quad, {"x": jnp.zeros(3)}, gdopt.sgd(0.25), epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="eval_data and accuracy_fn need data"):
        gdopt.fit(quad, {"x": jnp.zeros(3)}, gdopt.sgd(0.25), epochs=1, eval_data=jnp.ones(3))


def test_float16_adam_with_default_arguments_tracks_float32():
    x, y = _lsq_problem()
    y = 1e-3 * y  # small targets: small gradients, whose squares float16 cannot hold
    runs = {}
    for dtype in (jnp.float32, jnp.float16):
        params = jax.tree.map(lambda v, d=dtype: v.astype(d), _lsq_params())
        data = (x.astype(dtype), y.astype(dtype))
        loss = lambda p, b: jnp.mean(((b[0] @ p["w"] + p["b"] - b[1]) ** 2).astype(jnp.float32))
        runs[dtype] = gdopt.fit(loss, params, gdopt.adam(1e-4), data, epochs=5, batch_size=32)
    assert runs[jnp.float16].opt_state[0].nu["w"].dtype == jnp.float32
    for a, b in zip(
        jax.tree.leaves(runs[jnp.float16].params),
        jax.tree.leaves(runs[jnp.float32].params),
        strict=True,
    ):
        assert a.dtype == jnp.float16
        np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=0.05, atol=2e-6)


# ----------------------------------------------------------------------------- errors


def test_key_accepts_an_int_seed_or_a_key_and_says_so():
    x, y = _lsq_problem()
    kw = dict(epochs=2, batch_size=16)
    by_seed = gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.1), (x, y), key=3, **kw)
    by_key = gdopt.fit(
        _lsq_loss, _lsq_params(), gdopt.sgd(0.1), (x, y), key=jax.random.PRNGKey(3), **kw
    )
    typed = gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.1), (x, y), key=jax.random.key(3), **kw)
    _assert_bits_equal(by_seed.params, by_key.params)
    _assert_bits_equal(by_seed.params, typed.params)
    for bad in ("0", 1.5, jnp.zeros(3), True):
        with pytest.raises(TypeError, match="key must be an int seed, jax.random.PRNGKey"):
            gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.1), (x, y), key=bad, **kw)


def test_fit_refuses_a_foreign_or_malformed_opt_state_naming_the_optimizer():
    x, y = _lsq_problem()
    p = _lsq_params()
    cases = [
        (gdopt.sgd(0.1, momentum=0.9).init(p), r"\(adam\).*opt_state has \[0\]\.trace\['b'\]"),
        (
            gdopt.adam(0.1).init({"w": jnp.zeros(5), "b": jnp.zeros(())}),
            r"differ in shape at \[0\]\.mu\['w'\]",
        ),
        (tuple(gdopt.adam(0.1).init(p)), r"adam\.init\(params\) has \.hyperparams"),
    ]
    for state, match in cases:
        with pytest.raises(ValueError, match=match):
            gdopt.fit(_lsq_loss, p, gdopt.adam(0.1), (x, y), epochs=1, opt_state=state)


def test_a_model_passed_whole_is_refused_with_filter_first():
    class Act:  # what an Equinox module holds besides its arrays
        def __call__(self, v):
            return v

    x, y = _lsq_problem()
    params = {**_lsq_params(), "act": Act()}
    with pytest.raises(
        TypeError, match=r"params\['act'\] is a Act, not an array.*Filter the model"
    ):
        gdopt.fit(_lsq_loss, params, gdopt.adam(0.1), (x, y), epochs=1)
    step = make_step(lambda p, b: _lsq_loss(p, b), gdopt.sgd(0.1), jit=False)
    with pytest.raises(TypeError, match="Filter the model first"):
        step(params, gdopt.sgd(0.1).init(_lsq_params()), (x, y))


@pytest.mark.parametrize(
    "loss, match",
    [
        (lambda p, b: (b[0] @ p["w"] - b[1]) ** 2, r"got shape \(128,\).*has_aux"),
        (lambda p, b: (_lsq_loss(p, b), {"aux": 1.0}), "a tuple of 2 values.*has_aux"),
        (lambda p, b: jnp.int32(1) + 0 * jnp.sum(p["w"]).astype(jnp.int32), "floating-point"),
    ],
)
def test_fit_refuses_a_loss_that_is_not_a_scalar_naming_has_aux(loss, match):
    x, y = _lsq_problem()
    with pytest.raises(TypeError, match=match):
        gdopt.fit(loss, _lsq_params(), gdopt.sgd(0.1), (x, y), epochs=1)


def test_checkpoint_arguments_are_checked_first(tmp_path):
    x, y = _lsq_problem()
    f = tmp_path / "file"
    f.write_text("x")
    run = lambda **kw: gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.1), (x, y), epochs=1, **kw)
    with pytest.raises(OSError, match="exists and is not a directory"):
        run(checkpoint_dir=f)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_dir"):
        run(checkpoint_every=2)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        run(resume=True)
    with pytest.raises(TypeError, match="resume_from must be a FitResult"):
        run(resume_from=(1, 2))
    with pytest.raises(TypeError, match="checkpoint_dir must be a path"):
        run(checkpoint_dir=3)


# ----------------------------------------------------------------------------- bad-input battery

import hypothesis  # noqa: E402
import hypothesis.strategies as st  # noqa: E402

BAD_INPUTS = bad_inputs("tests/engine/test_fit.py")


_X, _Y = _lsq_problem(n=32, d=2)
_BAD_FIT_ARGS = {
    "epochs": [0, -3, 2.5, "3", None, True, float("nan")],
    "batch_size": [0, 33, -1, 1.5, "8", True],
    "tol": [-1.0, 0.0, float("nan"), float("inf"), "x", True],
    "patience": [0, -1, 1.5, "2"],
    "on_divergence": ["ignore", "STOP", "", 3, None],
    "epochs_per_call": [0, -1, 1.5, "2"],
    "key": ["a", 1.5, jnp.zeros(3), True, jnp.zeros((2,), jnp.int32), [0, 1]],
    "checkpoint_every": [2, 0],
    "pack": ["yes", 2],
    "opt_state": ["state", (1, 2), {"w": 1}],
}


@st.composite
def _bad_data(draw):
    """``(x, y)`` with a NaN/inf at a random place, or of mismatched lengths."""
    kind = draw(st.sampled_from(["nan", "inf", "-inf", "lengths", "eval_nan"]))
    x, y = _X, _Y
    if kind == "lengths":
        return "data", (x, y[: draw(st.integers(0, 31))])
    value = {"nan": jnp.nan, "inf": jnp.inf, "-inf": -jnp.inf, "eval_nan": jnp.nan}[kind]
    if draw(st.booleans()):
        i, j = draw(st.integers(0, 31)), draw(st.integers(0, 1))
        x = x.at[i, j].set(value)
    else:
        y = y.at[draw(st.integers(0, 31))].set(value)
    return ("eval_data" if kind == "eval_nan" else "data"), (x, y)


@hypothesis.settings(max_examples=80, deadline=None, derandomize=True, database=None)
@hypothesis.given(data=st.data())
def test_random_bad_fit_inputs_raise_before_training(data):
    """Every bad argument or dataset raises ValueError/TypeError/OSError naming it (none of
    them may train and return a plausible result)."""
    params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
    kw: dict = {"epochs": 2}
    data_arg, eval_arg = (_X, _Y), None
    if data.draw(st.booleans()):
        arg = data.draw(st.sampled_from(sorted(_BAD_FIT_ARGS)))
        value = data.draw(st.sampled_from(_BAD_FIT_ARGS[arg]))
        if arg == "on_divergence" and value == "skip":  # pragma: no cover - not in the table
            return
        kw[arg] = value
        name = arg
        described = f"{arg}={value!r}"
    else:
        where, bad = data.draw(_bad_data())
        if where == "data":
            data_arg = bad
        else:
            eval_arg = bad
        name = where
        described = f"{where}:" + ";".join(
            f"{np.shape(a)}@{np.argwhere(~np.isfinite(np.asarray(a))).tolist()}" for a in bad
        )
    BAD_INPUTS.add(described)
    with pytest.raises((ValueError, TypeError, OSError)) as info:
        gdopt.fit(_lsq_loss, params, gdopt.sgd(0.1), data_arg, eval_data=eval_arg, **kw)
    message = str(info.value)
    names = {"opt_state": "opt_state", "checkpoint_every": "checkpoint"}
    assert names.get(name, name) in message, f"{described}: {message}"


def test_fit_record_step_and_diagnostics():
    """fit(record="step") keeps every step's loss, flat: a hand loop of make_step over
    the same batches, whose epoch means are ``train_loss``; diagnostics=True adds the
    per-epoch norms (plain SGD: update norm = lr * grad norm, step size = lr). The default
    run's history has them empty and the same numbers; resuming carries them on."""
    x, y = _lsq_problem(n=64, d=3)
    lr, params = 0.05, _lsq_params(3)
    opt = gdopt.sgd(lr)
    kw = dict(epochs=3, batch_size=16, key=KEY)
    res = gdopt.fit(_lsq_loss, params, opt, (x, y), record="step", diagnostics=True, **kw)
    base = gdopt.fit(_lsq_loss, params, opt, (x, y), **kw)
    step = make_step(_lsq_loss, opt, donate=False)
    p, s, losses, grads = params, opt.init(params), [], []
    for epoch in range(3):
        bx, by = epoch_batches(jax.random.fold_in(KEY, epoch), (x, y), 16)
        for i in range(bx.shape[0]):
            g = jax.grad(_lsq_loss)(p, (bx[i], by[i]))
            grads.append(float(np.sqrt(sum(np.sum(np.square(v)) for v in jax.tree.leaves(g)))))
            p, s, loss = step(p, s, (bx[i], by[i]))
            losses.append(float(loss))
    h = res.history
    assert h.step_loss.shape == (12,) and h.grad_norm.shape == (3,)
    np.testing.assert_allclose(h.step_loss, losses, rtol=1e-5)
    np.testing.assert_allclose(h.step_loss.reshape(3, 4).mean(axis=1), h.train_loss, rtol=1e-6)
    g_mean = np.asarray(grads).reshape(3, 4).mean(axis=1)
    np.testing.assert_allclose(h.grad_norm, g_mean, rtol=1e-5)
    np.testing.assert_allclose(h.update_norm, lr * g_mean, rtol=1e-5)
    np.testing.assert_allclose(h.step_size, np.full(3, lr), rtol=1e-5)
    assert np.isinf(h.update_ratio[0]) and np.all(np.isfinite(h.update_ratio[1:]))  # zero init
    for f in ("step_loss", "grad_norm", "update_norm", "update_ratio", "step_size"):
        assert base.history[History._fields.index(f)].shape == (0,), f
    np.testing.assert_array_equal(base.history.train_loss, h.train_loss)
    _assert_trees_close(base.params, res.params, rtol=0, atol=0)
    part = gdopt.fit(
        _lsq_loss, params, opt, (x, y), record="step", diagnostics=True, **{**kw, "epochs": 1}
    )
    more = gdopt.fit(
        _lsq_loss, params, opt, (x, y), record="step", diagnostics=True, resume_from=part, **kw
    )
    for f in History._fields:
        np.testing.assert_array_equal(getattr(more.history, f), getattr(h, f), err_msg=f)
    with pytest.raises(ValueError, match="record must be"):
        gdopt.fit(_lsq_loss, params, opt, (x, y), record="batch", **kw)


def test_fit_checkpoint_tree_holds_the_recorded_history():
    """The checkpoint tree saves the recorded fields with the shapes restore expects, and
    the restored raw history equals the saved one (orbax itself is tested elsewhere)."""
    import importlib

    fit_module = importlib.import_module("gdopt.engine.fit")

    x, y = _lsq_problem(n=64, d=3)
    opt = gdopt.sgd(0.05)
    res = gdopt.fit(
        _lsq_loss,
        _lsq_params(3),
        opt,
        (x, y),
        epochs=2,
        batch_size=16,
        record="step",
        diagnostics=True,
    )
    for record, diagnostics in (("step", True), ("epoch", False)):
        shapes = fit_module._Shapes(4, record, diagnostics)
        raw = fit_module._raw_of(res.history, 2, shapes)
        tree = fit_module._checkpoint_tree(res.state, res.key, raw, shapes)
        like = fit_module._checkpoint_like(res.params, res.opt_state, res.key, 2, shapes)
        saved = {f: (v.shape, v.dtype) for f, v in tree["history"].items()}
        assert saved == {f: (v.shape, v.dtype) for f, v in like["history"].items()}
        back = fit_module._from_checkpoint(tree["history"], 2, shapes)
        for f in History._fields:
            np.testing.assert_array_equal(getattr(back, f), getattr(raw, f), err_msg=f)
        assert ("step_loss" in saved) == (record == "step")
        assert back.step_loss.shape == ((2, 4) if record == "step" else (2, 0))


# ----------------------------------------------------------------------------- sharpness

_DIAG = jnp.array([1.0, 2.0, 5.0, -0.5])


def _quadratic(p):
    """``0.5 sum_i λ_i x_i^2`` over a dict: Hessian ``diag(1, 2, 5, -0.5)``, sharpness 5."""
    return 0.5 * jnp.sum(_DIAG * jnp.concatenate([p["a"], p["b"]]) ** 2)


@pytest.mark.parametrize("pack", [False, True])
def test_fit_sharpness_of_a_quadratic_every_k_epochs(pack):
    params = {"a": jnp.array([1.0, -1.0]), "b": jnp.array([0.5, 2.0])}
    res = gdopt.fit(_quadratic, params, gdopt.sgd(0.1), epochs=7, sharpness_every=3, pack=pack)
    assert res.packed is pack
    sharp = res.history.sharpness
    assert sharp.shape == (7,)
    assert np.isnan(sharp[[0, 1, 3, 4, 6]]).all()  # measured after epochs 3 and 6 only
    np.testing.assert_allclose(sharp[[2, 5]], 5.0, rtol=1e-5)
    assert jax.tree.structure(res.sharpness_start) == jax.tree.structure(params)
    # the training program is the same with or without the measurement: nothing recompiles
    plain = gdopt.fit(_quadratic, params, gdopt.sgd(0.1), epochs=7, pack=pack,
                      epochs_per_call=7)  # fmt: skip
    again = gdopt.fit(_quadratic, params, gdopt.sgd(0.1), epochs=7, pack=pack, epochs_per_call=7,
                      sharpness_every=3)  # fmt: skip
    assert again.compile_time == 0.0
    _assert_bits_equal(plain.params, res.params)
    assert plain.history.sharpness.shape == (0,) and plain.sharpness_start is None


def test_fit_sharpness_on_sharpness_data_is_the_least_squares_hessian():
    x, y = _lsq_problem()
    sub = (x[:32], y[:32])
    res = gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.05), (x, y), epochs=2, batch_size=32,
                    sharpness_every=1, sharpness_data=sub)  # fmt: skip
    a = np.c_[np.asarray(sub[0], np.float64), np.ones(32)]
    top = np.linalg.eigvalsh(2.0 / 32 * a.T @ a)[-1]  # the Hessian of the mean squared error
    np.testing.assert_allclose(res.history.sharpness, [top, top], rtol=1e-5)
    whole = gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.05), (x, y), epochs=2,
                      batch_size=32, sharpness_every=2)  # fmt: skip
    a = np.c_[np.asarray(x, np.float64), np.ones(128)]
    np.testing.assert_allclose(whole.history.sharpness[1], np.linalg.eigvalsh(2 / 128 * a.T @ a)[-1],
                               rtol=1e-5)  # fmt: skip


def _mlp_problem():
    model = models.mlp([4, 6, 1], "tanh")
    loss = losses.supervised_loss(model.apply, "mse")
    x, y = _lsq_problem(n=64, d=4)
    return loss, model.init(jax.random.PRNGKey(3)), (x, y[:, None])


def test_fit_sharpness_resumes_exactly_from_a_result_and_a_checkpoint(tmp_path):
    """The warm start of the measurements is carried on (``FitResult.sharpness_start``, and
    in the checkpoint): with 3 Lanczos steps on 37 parameters the values depend on it, and
    the resumed runs still give the uninterrupted run's sharpness bit for bit."""
    loss, params, data = _mlp_problem()
    opt = gdopt.sgd(0.3)
    kw = dict(batch_size=16, key=KEY, sharpness_every=2, sharpness_iters=3, epochs_per_call=2)
    whole = gdopt.fit(loss, params, opt, data, epochs=8, **kw)
    assert np.isfinite(whole.history.sharpness[1::2]).all()
    part = gdopt.fit(loss, params, opt, data, epochs=4, **kw)
    more = gdopt.fit(loss, params, opt, data, epochs=8, resume_from=part, **kw)
    d = tmp_path / "run"
    gdopt.fit(loss, params, opt, data, epochs=4, checkpoint_dir=d, **kw)
    back = gdopt.fit(loss, params, opt, data, epochs=8, checkpoint_dir=d, resume=True, **kw)
    for res in (more, back):
        np.testing.assert_array_equal(res.history.sharpness, whole.history.sharpness)
        _assert_bits_equal(res.params, whole.params)
    # a fresh start of the measurements at epoch 4 (no warm start given) differs slightly
    cold = gdopt.fit(loss, params, opt, data, epochs=8, resume_from=part._replace(
        sharpness_start=None), **kw)  # fmt: skip
    assert not np.array_equal(cold.history.sharpness, whole.history.sharpness)
    np.testing.assert_allclose(cold.history.sharpness, whole.history.sharpness, rtol=0.2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sharpness_every": 0}, "sharpness_every must be an integer >= 1"),
        ({"sharpness_every": 1, "sharpness_iters": 0}, "sharpness_iters must be an integer >= 1"),
        ({"sharpness_data": "xy"}, "sharpness_data needs sharpness_every"),
        ({"sharpness_every": 1, "mesh": "auto"}, "sharpness_every is not supported with mesh"),
    ],
)
def test_fit_rejects_bad_sharpness_arguments(kwargs, match):
    x, y = _lsq_problem()
    BAD_INPUTS.add(f"sharpness {kwargs}")
    with pytest.raises(ValueError, match=match):
        gdopt.fit(_lsq_loss, _lsq_params(), gdopt.sgd(0.1), (x, y), epochs=2, **kwargs)
    with pytest.raises(ValueError, match="sharpness_data needs data"):
        gdopt.fit(_quadratic, {"a": jnp.ones(2), "b": jnp.ones(2)}, gdopt.sgd(0.1), epochs=2,
                  sharpness_every=1, sharpness_data=(x, y))  # fmt: skip
