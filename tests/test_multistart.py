"""``gdopt/multistart.py``: many starts in one compiled call, the basin report, trajectories.

References: the known minimisers of the test functions (:mod:`gdopt.problems`) and
:func:`gdopt.fit` run start by start (the same engine core, so the same numbers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt.problems import TEST_FUNCTIONS
from tests.helpers import counting_compiles


def uniform(low: float, high: float, dim: int = 2):
    return lambda k: jax.random.uniform(k, (dim,), minval=low, maxval=high)


def test_himmelblau_64_starts_find_all_four_minima():
    tf = TEST_FUNCTIONS["himmelblau"]
    r = gdopt.multistart(
        tf.fn, uniform(-5.0, 5.0), gdopt.sgd(0.005), n_starts=64, key=jax.random.PRNGKey(0),
        steps=1000,
    )  # fmt: skip
    assert len(r.minima) == 4
    assert sum(m.count for m in r.minima) == 64
    found = np.stack([np.asarray(m.params) for m in r.minima])
    for true in tf.minima:  # each known minimiser is found, to 1e-4
        assert np.min(np.linalg.norm(found - true, axis=1)) < 1e-4
    assert all(m.loss < 1e-8 for m in r.minima)
    losses = [m.loss for m in r.minima]
    assert losses == sorted(losses)
    # indices partition the starts; basin labels agree with them
    assert sorted(np.concatenate([m.indices for m in r.minima]).tolist()) == list(range(64))
    for j, m in enumerate(r.minima):
        assert np.all(r.basin[m.indices] == j) and m.count == len(m.indices)
    assert r.params.shape == (64, 2) and r.init_params.shape == (64, 2)
    assert r.final_loss.shape == (64,) and not r.diverged.any()
    assert r.best_index == int(np.argmin(r.final_loss))
    np.testing.assert_array_equal(r.best_params, r.params[r.best_index])
    # the program is reused: another key (other starts) compiles nothing
    with counting_compiles() as c:
        again = gdopt.multistart(
            tf.fn, uniform(-5.0, 5.0), gdopt.sgd(0.005), n_starts=64, key=jax.random.PRNGKey(1),
            steps=1000,
        )  # fmt: skip
    assert c.count == 0
    assert sum(m.count for m in again.minima) == 64


def test_each_start_is_a_fit_with_its_keys():
    """With data and mini-batches: start i equals fit from init_fn(init_keys[i]) shuffling with
    train_keys[i] (both split from key as documented: init key, train key)."""
    problem = gdopt.problems.get_problem("linear-regression")
    key = jax.random.PRNGKey(4)
    opt = gdopt.adam(0.05)
    r = gdopt.multistart(
        problem.loss_fn, problem.init_params, opt, n_starts=2, key=key, epochs=3,
        data=problem.train, batch_size=32,
    )  # fmt: skip
    init_key, train_key = jax.random.split(key)
    init_keys, train_keys = jax.random.split(init_key, 2), jax.random.split(train_key, 2)
    for i in range(2):
        ref = gdopt.fit(
            problem.loss_fn, problem.init_params(init_keys[i]), opt, problem.train, epochs=3,
            batch_size=32, key=train_keys[i], pack=False,
        )  # fmt: skip
        for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(ref.params), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            r.final_loss[i], problem.loss_fn(ref.params, problem.train), rtol=1e-5
        )


def test_deterministic_objective_equals_full_batch_fit_and_records_trajectories():
    f = TEST_FUNCTIONS["rosenbrock"].fn
    opt = gdopt.adam(0.01)
    r = gdopt.multistart(
        f, uniform(-2.0, 2.0), opt, n_starts=4, key=jax.random.PRNGKey(1), steps=60,
        record_every=20,
    )  # fmt: skip
    assert r.trajectory.shape == (4, 4, 2)
    np.testing.assert_array_equal(r.trajectory[:, 0], r.init_params)
    np.testing.assert_allclose(r.trajectory[:, -1], r.params, rtol=1e-6)
    loss = lambda p, batch: f(p)  # noqa: E731  (one object: fit reuses its compiled program)
    for i in range(4):
        ref = gdopt.fit(loss, r.init_params[i], opt, jnp.zeros((1,)), epochs=60)
        np.testing.assert_allclose(r.trajectory[i, -1], ref.params, rtol=1e-5, atol=1e-6)
    # a second call with another learning rate reuses the program, with the new rate
    other = gdopt.multistart(
        f, uniform(-2.0, 2.0), gdopt.adam(0.03), n_starts=4, key=jax.random.PRNGKey(1), steps=60,
        record_every=20,
    )  # fmt: skip
    ref = gdopt.fit(loss, r.init_params[0], gdopt.adam(0.03), jnp.zeros((1,)), epochs=60)
    np.testing.assert_allclose(other.params[0], ref.params, rtol=1e-5, atol=1e-6)
    # epochs means steps without data
    e = gdopt.multistart(
        f, uniform(-2.0, 2.0), opt, n_starts=4, key=jax.random.PRNGKey(1), epochs=60,
        record_every=20,
    )  # fmt: skip
    np.testing.assert_array_equal(e.trajectory, r.trajectory)


def test_diverged_starts_are_left_out_of_the_basin_report():
    f = lambda x: jnp.sum(x**4)  # noqa: E731  GD with lr 0.1 diverges from |x| > ~2.2
    r = gdopt.multistart(
        f, uniform(-3.0, 3.0, 1), gdopt.sgd(0.1), n_starts=32, key=jax.random.PRNGKey(2),
        steps=200, basin_tol=0.2,
    )  # fmt: skip
    x0 = np.abs(r.init_params[:, 0])
    assert r.diverged.any() and not r.diverged.all()
    np.testing.assert_array_equal(r.diverged, x0 > np.sqrt(5.0))  # 0.4 x^2 > 2 overshoots
    assert np.all(r.basin[r.diverged] == -1)
    assert len(r.minima) == 1 and r.minima[0].count == int((~r.diverged).sum())
    assert np.all(np.isfinite(r.params))  # the last finite parameters


def test_rastrigin_best_of_k_reaches_the_global_minimum():
    r = gdopt.multistart(
        gdopt.problems.rastrigin, uniform(-5.12, 5.12), gdopt.sgd(0.002), n_starts=256,
        key=jax.random.PRNGKey(0), steps=300,
    )  # fmt: skip
    best = np.minimum.accumulate(r.final_loss)
    assert best[0] > 1.0 and best[-1] < 1e-6
    np.testing.assert_allclose(r.best_params, [0.0, 0.0], atol=1e-4)
    assert len(r.minima) > 20  # a local minimum near many integer points


def test_record_trajectories_of_several_optimizers_in_one_call():
    f = TEST_FUNCTIONS["rosenbrock"].fn
    x0 = jnp.asarray(TEST_FUNCTIONS["rosenbrock"].x0)
    opts = {
        "sgd": gdopt.sgd(1e-3),
        "momentum": gdopt.sgd(1e-3, momentum=0.9),
        "adam": gdopt.adam(0.05),
    }
    paths = gdopt.record_trajectories(f, x0, opts, steps=50, every=10)
    assert list(paths) == ["sgd", "momentum", "adam"]
    loss = lambda p, batch: f(p)  # noqa: E731
    for label, opt in opts.items():
        t = paths[label]
        assert t.params.shape == (6, 2) and t.loss.shape == (6,) and not t.diverged
        np.testing.assert_array_equal(t.params[0], x0)
        ref = gdopt.fit(loss, x0, opt, jnp.zeros((1,)), epochs=50)
        np.testing.assert_allclose(t.params[-1], ref.params, rtol=1e-5)
        np.testing.assert_allclose(t.loss, jax.vmap(f)(t.params), rtol=1e-5)


BAD = [
    ("n_starts < 1", dict(n_starts=0), ValueError, "n_starts must be an integer >= 1"),
    ("neither steps nor epochs", dict(steps=None), ValueError, "exactly one of steps"),
    ("both steps and epochs", dict(epochs=5), ValueError, "exactly one of steps"),
    ("init_fn not callable", dict(init_fn=jnp.zeros(2)), TypeError, "init_fn must be a function"),
    (
        "optimizer not built",
        dict(optimizer=gdopt.sgd),
        TypeError,
        "multistart's optimizer must be a GradientTransformation",
    ),
    ("basin_tol <= 0", dict(basin_tol=0.0), ValueError, "basin_tol"),
    ("batch_size without data", dict(batch_size=4), ValueError, "batch_size needs data"),
    ("record_every not dividing", dict(record_every=3), ValueError, "record_every must divide"),
    (
        "steps with data",
        dict(data=(jnp.ones((4, 2)), jnp.ones(4))),
        ValueError,
        "with data give epochs",
    ),
    (
        "integer params",
        dict(init_fn=lambda k: jnp.zeros(2, jnp.int32)),
        TypeError,
        r"init_fn\(key\) has dtype int32",
    ),
]


@pytest.mark.parametrize("case,override,error,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, override, error, match):
    kwargs = dict(
        loss_fn=gdopt.problems.himmelblau,
        init_fn=uniform(-1.0, 1.0),
        optimizer=gdopt.sgd(0.01),
        n_starts=2,
        key=jax.random.PRNGKey(0),
        steps=10,
    )
    kwargs.update(override)
    with pytest.raises(error, match=match):
        gdopt.multistart(**kwargs)


def test_record_trajectories_bad_input():
    f = gdopt.problems.himmelblau
    with pytest.raises(ValueError, match="optimizers must be a non-empty dict"):
        gdopt.record_trajectories(f, jnp.zeros(2), {}, steps=10)
    with pytest.raises(TypeError, match=r"optimizers\['a'\] must be a GradientTransformation"):
        gdopt.record_trajectories(f, jnp.zeros(2), {"a": gdopt.adam}, steps=10)
    with pytest.raises(ValueError, match="every must divide steps"):
        gdopt.record_trajectories(f, jnp.zeros(2), {"a": gdopt.adam(0.1)}, steps=10, every=3)
