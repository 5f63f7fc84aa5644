"""Tests of gdopt.tuning: sweeps equal sequential fit runs, successive halving, the LR finder."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt import tuning

KEY = jax.random.PRNGKey(3)
X = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
Y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jax.random.normal(jax.random.PRNGKey(1), (64,))
DATA = (X, Y)
# most tests share these options (and 4 runs), so their compiled programs are reused
E, B = 4, 16


def lsq(p, b):
    return jnp.mean((b[0] @ p["w"] + p["b"] - b[1]) ** 2)


PARAMS = {"w": jnp.zeros(3), "b": jnp.zeros(())}


def init(key):
    return {"w": jax.random.normal(key, (3,)), "b": jnp.zeros(())}


def assert_run_equals_fit(res, i, fit_res, atol=1e-6):
    for a, b in zip(jax.tree.leaves(fit_res.params), jax.tree.leaves(res.params), strict=True):
        np.testing.assert_allclose(np.asarray(b[i]), np.asarray(a), atol=atol, rtol=1e-5)
    ran = res.history.epochs[i] > 0
    np.testing.assert_array_equal(res.history.epochs[i][ran], fit_res.history.epochs)
    np.testing.assert_allclose(
        res.history.train_loss[i][ran], fit_res.history.train_loss, rtol=1e-5
    )
    last = float(fit_res.history.train_loss[-1])
    assert res.final_train_loss[i] == pytest.approx(last, rel=1e-5, nan_ok=True)
    assert bool(res.diverged[i]) == fit_res.diverged
    assert bool(res.converged[i]) == fit_res.converged
    assert int(res.epochs_run[i]) == fit_res.epochs_run
    assert int(res.steps_run[i]) == fit_res.steps_run


# ----------------------------------------------------------------------------- sweep == fit


def test_sweep_runs_equal_sequential_fit_including_a_diverged_one():
    lrs = [0.003, 0.03, 0.3, 20.0]
    res = gdopt.sweep(
        lsq,
        PARAMS,
        gdopt.sgd(0.1),
        DATA,
        grid={"learning_rate": lrs},
        epochs=E,
        batch_size=B,
        key=KEY,
    )
    assert res.configs == [{"learning_rate": lr} for lr in lrs]
    assert res.history.train_loss.shape == (4, E)
    for i, lr in enumerate(lrs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fit warns about the diverged run
            f = gdopt.fit(lsq, PARAMS, gdopt.sgd(lr), DATA, epochs=E, batch_size=B, key=KEY)
        assert_run_equals_fit(res, i, f)
    assert res.diverged.tolist() == [False, False, False, True]
    assert res.best_index == 2 and res.best_config == {"learning_rate": 0.3}
    # the diverged run keeps finite parameters and does not disturb the others
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(res.params))
    table = res.table().splitlines()
    assert table[0].split() == ["rank", "learning_rate", "train", "loss", "epochs", "status"]
    assert table[1].split()[1] == "0.3" and table[-1].split()[-1] == "diverged"


def test_sweep_records_step_losses_and_diagnostics_as_fit_does():
    lrs = [0.01, 0.1]
    kw = dict(epochs=E, batch_size=B, key=KEY, record="step", diagnostics=True)
    res = gdopt.sweep(lsq, PARAMS, gdopt.sgd(0.1), DATA, grid={"learning_rate": lrs}, **kw)
    steps = E * (64 // B)
    assert res.history.step_loss.shape == (2, steps)
    for i, lr in enumerate(lrs):
        f = gdopt.fit(lsq, PARAMS, gdopt.sgd(lr), DATA, **kw)
        np.testing.assert_allclose(res.history.step_loss[i], f.history.step_loss, rtol=1e-6)
        for name in ("grad_norm", "update_norm", "update_ratio", "step_size"):
            np.testing.assert_allclose(
                getattr(res.history, name)[i], getattr(f.history, name), rtol=1e-5, err_msg=name
            )
        np.testing.assert_allclose(res.history.step_size[i], lr, rtol=1e-5)  # plain SGD
    plain = gdopt.sweep(lsq, PARAMS, gdopt.sgd(0.1), DATA, grid={"learning_rate": lrs},
                        epochs=E, batch_size=B, key=KEY)  # fmt: skip
    assert plain.history.step_loss.size == 0 and plain.history.grad_norm.size == 0
    np.testing.assert_array_equal(plain.history.train_loss, res.history.train_loss)


def test_sweep_any_hyperparameter_grid_eval_and_convergence_equal_fit():
    grid = {"learning_rate": [0.05, 0.2], "momentum": [0.0, 0.5]}
    common = dict(epochs=30, batch_size=None, key=KEY, eval_data=DATA, tol=1e-2, patience=2)
    res = gdopt.sweep(lsq, PARAMS, gdopt.sgd(0.1, momentum=0.9), DATA, grid=grid, **common)
    assert res.configs == [
        {"learning_rate": 0.05, "momentum": 0.0},
        {"learning_rate": 0.05, "momentum": 0.5},
        {"learning_rate": 0.2, "momentum": 0.0},
        {"learning_rate": 0.2, "momentum": 0.5},
    ]
    assert res.metric == "eval_loss" and res.eval_accuracy is None
    for i, c in enumerate(res.configs):
        opt = gdopt.sgd(c["learning_rate"], momentum=c["momentum"])
        f = gdopt.fit(lsq, PARAMS, opt, DATA, **common)
        assert_run_equals_fit(res, i, f)
        assert res.eval_loss[i] == pytest.approx(float(f.history.eval_loss[-1]), rel=1e-5)
    # the tol rule stopped three runs early, each at fit's epoch (checked above)
    assert res.converged.tolist() == [False, True, True, True]
    assert res.epochs_run.tolist() == [30, 28, 18, 17]
    assert res.best_index == int(np.argmin(res.eval_loss))


def test_sweep_packed_layout_equals_packed_fit():
    params = {f"w{i}": jnp.full((3,), 0.1 * i) for i in range(3)}

    def loss(p, b):
        return jnp.mean((b[0] @ sum(p.values()) - b[1]) ** 2)

    res = gdopt.sweep(
        loss,
        params,
        gdopt.adam(0.1),
        DATA,
        configs=[{"learning_rate": 0.01}, {"learning_rate": 0.05}],
        epochs=5,
        batch_size=32,
        pack=True,
    )
    for i, lr in enumerate([0.01, 0.05]):
        f = gdopt.fit(loss, params, gdopt.adam(lr), DATA, epochs=5, batch_size=32, pack=True)
        assert f.packed
        assert_run_equals_fit(res, i, f)
    assert sorted(res.params) == ["w0", "w1", "w2"] and res.params["w0"].shape == (2, 3)


def test_sweep_seeds_cross_configs_and_change_init_and_shuffling():
    res = gdopt.sweep(
        lsq,
        init,
        gdopt.sgd(0.1),
        DATA,
        grid={"learning_rate": [0.01, 0.1]},
        seeds=[0, 5],
        epochs=E,
        batch_size=B,
        key=KEY,
    )
    assert res.seeds == [0, 5, 0, 5]
    assert [c["learning_rate"] for c in res.configs] == [0.01, 0.01, 0.1, 0.1]
    for i, (c, s) in enumerate(zip(res.configs, res.seeds, strict=True)):
        k = jax.random.fold_in(KEY, s)
        p0 = init(jax.random.split(k)[1])
        f = gdopt.fit(lsq, p0, gdopt.sgd(c["learning_rate"]), DATA, epochs=E, batch_size=B, key=k)
        assert_run_equals_fit(res, i, f)
    assert res.final_train_loss[0] != res.final_train_loss[1]
    # seeds=None with an init function: every run from init(split(key)[1]) with fit's key
    lrs = [0.01, 0.03, 0.1, 0.3]
    same = gdopt.sweep(
        lsq,
        init,
        gdopt.sgd(0.1),
        DATA,
        grid={"learning_rate": lrs},
        epochs=E,
        batch_size=B,
        key=KEY,
    )
    assert same.seeds == [None] * 4
    p0 = init(jax.random.split(KEY)[1])
    f = gdopt.fit(lsq, p0, gdopt.sgd(0.1), DATA, epochs=E, batch_size=B, key=KEY)
    assert_run_equals_fit(same, 2, f)


def test_sweep_chunks_equal_one_program_and_reuse_compiled_programs():
    grid = {"learning_rate": [0.001, 0.01, 0.1, 0.2]}
    full = gdopt.sweep(
        lsq, PARAMS, gdopt.sgd(0.1), DATA, grid=grid, epochs=E, batch_size=B, key=KEY
    )
    chunked = gdopt.sweep(
        lsq, PARAMS, gdopt.sgd(0.1), DATA, grid=grid, epochs=E, batch_size=B, key=KEY, chunk_size=3
    )  # chunks of 3: 3 + 1 (padded)
    # a run does not depend on which runs share its program
    np.testing.assert_allclose(chunked.params["w"], full.params["w"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(chunked.history.epochs, full.history.epochs)
    assert chunked.params["w"].shape == (4, 3) and len(chunked.configs) == 4
    again = gdopt.sweep(
        lsq, PARAMS, gdopt.sgd(0.5), DATA, grid=grid, epochs=E, batch_size=B, key=KEY
    )
    assert again.compile_time == 0.0  # same loss, optimizer structure, options, shapes
    np.testing.assert_array_equal(again.params["w"], full.params["w"])


# ----------------------------------------------------------------------------- halving


def test_rung_schedule_and_budget():
    assert tuning._rung_schedule(27, 3, 1, 27) == [(27, 1), (9, 3), (3, 9), (1, 27)]
    assert tuning._rung_schedule(10, 2, 2, 5) == [(10, 2), (5, 4), (2, 5)]
    assert tuning._rung_schedule(4, 3, 6, 6) == [(4, 6)]


def test_successive_halving_keeps_the_best_third_and_continues_runs_exactly():
    lrs = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3]
    sh = gdopt.successive_halving(
        lsq,
        PARAMS,
        gdopt.sgd(0.1),
        DATA,
        grid={"learning_rate": lrs},
        eta=3,
        min_epochs=1,
        max_epochs=E,
        batch_size=B,
        key=KEY,
    )
    assert [(r.epochs, len(r.indices)) for r in sh.rungs] == [(1, 9), (3, 3), (4, 1)]
    assert sh.epochs_run.tolist() == [1, 1, 1, 1, 1, 1, 3, 3, 4]
    assert int(sh.epochs_run.sum()) == 9 + 3 * 2 + 1  # vs 9 * 4 for the full sweep
    first = sh.rungs[0]
    assert first.kept.tolist() == [6, 7, 8]  # the three lowest losses after one epoch
    assert np.all(first.scores[[6, 7, 8]][:, None] <= first.scores[:6][None, :])
    assert sh.rungs[-1].kept.size == 0 and sh.best_index == 8
    assert sh.table().splitlines()[1].split()[1] == "0.3"
    # the winner, continued rung after rung, is the fit run of max_epochs
    f = gdopt.fit(lsq, PARAMS, gdopt.sgd(0.3), DATA, epochs=E, batch_size=B, key=KEY)
    assert_run_equals_fit(sh, 8, f)
    # an eliminated run's history stops where it was dropped
    assert sh.history.epochs[0].tolist() == [1, 0, 0, 0]


# ----------------------------------------------------------------------------- LR finder


def test_lr_find_ramp_smoothing_stop_rule_and_purity():
    x = jax.random.normal(jax.random.PRNGKey(0), (256, 3))
    data = (x, x @ jnp.array([1.0, -2.0, 0.5]))
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    before = jax.tree.map(np.asarray, params)
    res = gdopt.lr_find(
        lsq,
        params,
        gdopt.sgd(0.1),
        data,
        start_lr=1e-4,
        end_lr=100.0,
        num_steps=80,
        smoothing=0.9,
        key=KEY,
    )
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)  # untouched, not donated
    n = len(res.learning_rates)
    full = 1e-4 * (100.0 / 1e-4) ** (np.arange(80) / 79)
    np.testing.assert_allclose(res.learning_rates, full[:n], rtol=1e-12)
    # debiased EMA of the recorded losses
    avg, expect = 0.0, []
    for t, loss in enumerate(res.losses.astype(np.float64)):
        avg = 0.9 * avg + 0.1 * loss
        expect.append(avg / (1 - 0.9 ** (t + 1)))
    np.testing.assert_allclose(res.smoothed_losses, expect, rtol=1e-4)
    # it stopped at the first step whose smoothed loss exceeded 4x the best so far
    assert res.stopped_early and n < 80
    s = res.smoothed_losses
    assert s[-1] > 4.0 * np.min(s[:-1]) and np.all(s[:-1] <= 4.0 * np.minimum.accumulate(s[:-1]))
    # the first loss is the loss of the first batch at the initial params
    idx = jax.random.permutation(jax.random.fold_in(KEY, 0), 256)[:32]
    assert res.losses[0] == pytest.approx(float(lsq(params, (x[idx], data[1][idx]))), rel=1e-6)
    # "minimum": the rate of the smallest smoothed loss (window: drop first tenth, last 5) / 10
    used_lrs, used = res.learning_rates[: n - 1], s[: n - 1]
    lo, hi = (n - 1) // 10, (n - 1) - 5
    j = lo + int(np.argmin(used[lo:hi]))
    assert res.suggestions["minimum"] == pytest.approx(used_lrs[j] / 10)
    assert set(res.suggestions) == {"valley", "steep", "minimum"}
    assert res.suggestion == res.suggestions["valley"] and res.rule == "valley"
    steep = gdopt.lr_find(
        lsq,
        params,
        gdopt.sgd(0.1),
        data,
        start_lr=1e-4,
        end_lr=100.0,
        num_steps=80,
        smoothing=0.9,
        key=KEY,
        suggestion="steep",
    )
    assert steep.suggestion == res.suggestions["steep"]


def test_valley_rule_on_hand_made_curves():
    # longest decreasing run: indices 0..6 (lds 7 at index 6), start = 6 - 7 = -1 as fastai;
    # sections = 7 / 3, index = -1 + 2 + 1 = 2
    curve = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 5.0, 9.0])
    assert tuning._valley(curve) == 2
    flat_then_drop = np.array([5.0, 5.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 3.0, 8.0])
    # lds: [1,1,1,2,3,4,5,6,3,1]: max_end = 7, start = 1, sections 2, index 1 + 2 + 1 = 4
    assert tuning._valley(flat_then_drop) == 4


def test_lr_find_runs_is_a_sweep_of_constant_rates():
    res = gdopt.lr_find_runs(
        lsq,
        PARAMS,
        gdopt.sgd(0.1),
        DATA,
        start_lr=1e-3,
        end_lr=10.0,
        num_rates=4,
        epochs=E,
        batch_size=B,
        key=KEY,
    )
    np.testing.assert_allclose(res.learning_rates, np.geomspace(1e-3, 10.0, 4))
    sw = gdopt.sweep(
        lsq,
        PARAMS,
        gdopt.sgd(0.1),
        DATA,
        epochs=E,
        batch_size=B,
        key=KEY,
        grid={"learning_rate": [float(v) for v in np.geomspace(1e-3, 10.0, 4)]},
    )
    expect = np.where(sw.diverged, np.inf, sw.final_train_loss)
    np.testing.assert_allclose(res.losses, expect, rtol=1e-6)
    finite = np.isfinite(res.losses)
    j = int(np.argmin(np.where(finite, res.losses, np.inf)))
    assert res.suggestions["minimum"] == pytest.approx(res.learning_rates[j] / 10)


# ----------------------------------------------------------------------------- bad input


def _sweep(**kw):
    args = dict(grid={"learning_rate": [0.1]}, epochs=1)
    args.update(kw)
    return gdopt.sweep(lsq, PARAMS, gdopt.adam(1e-3), DATA, **args)


def _lr_find(**kw):
    return gdopt.lr_find(lsq, PARAMS, gdopt.adam(1e-3), DATA, **kw)


def _halving(**kw):
    args = dict(grid={"learning_rate": [0.1, 0.2]}, max_epochs=2)
    args.update(kw)
    return gdopt.successive_halving(lsq, PARAMS, gdopt.adam(1e-3), DATA, **args)


BAD = [
    ("empty grid", lambda: _sweep(grid={}), ValueError, "grid is empty"),
    (
        "empty values",
        lambda: _sweep(grid={"learning_rate": []}),
        ValueError,
        r"grid\['learning_rate'\] is empty",
    ),
    ("empty configs", lambda: _sweep(grid=None, configs=[]), ValueError, "configs is empty"),
    (
        "unknown name",
        lambda: _sweep(grid={"lr": [0.1]}),
        ValueError,
        r"unknown hyperparameter\(s\) \['lr'\]; this optimizer has \['b1', 'b2', 'eps', "
        r"'eps_root', 'learning_rate'\]",
    ),
    (
        "bad value",
        lambda: _sweep(grid={"learning_rate": [0.1, -1.0]}),
        ValueError,
        r"grid\['learning_rate'\]: learning_rate must be a finite number in \(0, inf\), got -1.0",
    ),
    (
        "bad decay",
        lambda: _sweep(configs=[{"b1": 1.5}], grid=None),
        ValueError,
        r"configs\['b1'\]: b1 must be",
    ),
    (
        "not a number",
        lambda: _sweep(grid={"learning_rate": ["fast"]}),
        TypeError,
        "is not a number",
    ),
    (
        "both",
        lambda: _sweep(configs=[{"learning_rate": 0.1}]),
        ValueError,
        r"grid= .* or configs= .*, not both",
    ),
    ("neither", lambda: _sweep(grid=None), ValueError, "give grid="),
    (
        "mixed configs",
        lambda: _sweep(grid=None, configs=[{"learning_rate": 0.1}, {"b1": 0.5}]),
        ValueError,
        "must set the same hyperparameters",
    ),
    ("seeds 0", lambda: _sweep(seeds=0), ValueError, "seeds must be None, an int S >= 1"),
    ("seeds empty", lambda: _sweep(seeds=[]), ValueError, "seeds is empty"),
    ("seeds repeated", lambda: _sweep(seeds=[1, 1]), ValueError, "seeds must be distinct"),
    ("seeds bool", lambda: _sweep(seeds=True), TypeError, "seeds must be an integer"),
    ("epochs 0", lambda: _sweep(epochs=0), ValueError, "epochs must be an integer >= 1"),
    ("chunk 0", lambda: _sweep(chunk_size=0), ValueError, "chunk_size must be an integer >= 1"),
    ("batch", lambda: _sweep(batch_size=1000), ValueError, "batch_size"),
    ("metric", lambda: _sweep(metric="speed"), ValueError, "metric must be one of"),
    ("metric w/o eval", lambda: _sweep(metric="eval_loss"), ValueError, "needs eval_data"),
    (
        "no hyperparams",
        lambda: gdopt.sweep(lsq, PARAMS, gdopt.scale_by_adam(), DATA, grid={"b1": [0.9]}, epochs=1),
        TypeError,
        "keep its hyperparameters in its state",
    ),
    (
        "start >= end",
        lambda: _lr_find(start_lr=1.0, end_lr=1.0),
        ValueError,
        "start_lr must be < end_lr",
    ),
    (
        "start <= 0",
        lambda: _lr_find(start_lr=0.0),
        ValueError,
        "start_lr must be a finite number > 0",
    ),
    ("num_steps 1", lambda: _lr_find(num_steps=1), ValueError, "num_steps must be an integer >= 2"),
    (
        "rule",
        lambda: _lr_find(suggestion="best"),
        ValueError,
        "suggestion must be one of 'valley', 'steep', 'minimum'; got 'best'",
    ),
    (
        "smoothing",
        lambda: _lr_find(smoothing=1.0),
        ValueError,
        r"smoothing must be a number in \[0, 1\)",
    ),
    (
        "threshold",
        lambda: _lr_find(diverge_threshold=1.0),
        ValueError,
        "diverge_threshold must be a number > 1",
    ),
    (
        "runs start >= end",
        lambda: gdopt.lr_find_runs(lsq, PARAMS, gdopt.adam(1e-3), DATA, start_lr=2.0, end_lr=1.0),
        ValueError,
        "start_lr must be < end_lr",
    ),
    (
        "runs rule",
        lambda: gdopt.lr_find_runs(lsq, PARAMS, gdopt.adam(1e-3), DATA, suggestion="x"),
        ValueError,
        "suggestion must be one of",
    ),
    ("eta 1", lambda: _halving(eta=1), ValueError, "eta must be an integer >= 2"),
    ("min > max", lambda: _halving(min_epochs=3), ValueError, "min_epochs must be <= max_epochs"),
]


@pytest.mark.parametrize("make, error, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_lr_find_needs_a_learning_rate_hyperparameter():
    with pytest.raises(TypeError, match="keep its hyperparameters"):
        gdopt.lr_find(lsq, PARAMS, gdopt.scale_by_adam(), DATA)
