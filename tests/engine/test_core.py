"""``gdopt/engine/core.py``: the pure compiled core (``make_train_fn``, ``FitState``,
``History``). A step whose loss is not finite is not applied and training stops there; the
divergence flags; the convergence rule needs *consecutive* small changes; evaluation runs on
``eval_data``; ``stop_epoch`` skips epochs and records them as ``epochs == 0``; epochs run in
one call or in several give the same state; ``vmap`` over learning rates held in the state."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import gdopt
from gdopt.engine import FitState, History, init_fit_state, make_train_fn
from tests.helpers import lsq_loss as _lsq_loss
from tests.helpers import lsq_params, lsq_problem

KEY = jax.random.PRNGKey(0)


_lsq_problem = functools.partial(lsq_problem, n=64, d=3)
_lsq_params = functools.partial(lsq_params, d=3)


def test_init_fit_state():
    params = _lsq_params()
    s = init_fit_state(params, gdopt.sgd(0.1).init(params))
    assert isinstance(s, FitState) and s.params is params
    assert [int(getattr(s, f)) for f in ("epoch", "step", "diverged_epoch", "diverged_step")] == [
        0,
        0,
        0,
        0,
    ]
    assert not any(bool(getattr(s, f)) for f in ("diverged", "restored", "converged"))
    assert np.isnan(float(s.prev_loss)) and int(s.streak) == 0
    assert s.epoch is not s.step  # distinct buffers: the carry is donated leafwise


# ----------------------------------------------------------------------------- divergence


def _mean_sq(p, batch):
    return jnp.mean((p["w"] - batch) ** 2)


def test_a_step_whose_loss_is_not_finite_is_not_applied_and_training_stops():
    data = jnp.array([1.0, 2.0, 3.0, 4.0, jnp.nan, 6.0, 7.0, 8.0])  # batch 3 of 4 is NaN
    opt = gdopt.sgd(0.1)
    params = {"w": jnp.asarray(0.0)}
    train = jax.jit(make_train_fn(_mean_sq, opt, n_epochs=3, batch_size=2, shuffle=False))
    state, hist = train(init_fit_state(params, opt.init(params)), data, KEY)
    # by hand: two steps w <- w - 0.1 * 2 * (w - mean(batch)), then the NaN batch stops it
    w, losses = 0.0, []
    for batch in ([1.0, 2.0], [3.0, 4.0]):
        losses.append(np.mean((w - np.asarray(batch)) ** 2))
        w = w - 0.1 * 2 * (w - np.mean(batch))
    np.testing.assert_allclose(float(state.params["w"]), w, rtol=1e-6)
    assert bool(state.diverged) and not bool(state.restored)
    assert int(state.step) == 2 and int(state.diverged_step) == 3
    assert int(state.epoch) == 1 and int(state.diverged_epoch) == 1
    assert hist.epochs.tolist() == [1, 0, 0]  # the epochs after it are skipped
    np.testing.assert_allclose(float(hist.train_loss[0]), np.mean(losses), rtol=1e-6)
    assert np.all(np.isnan(np.asarray(hist.train_loss[1:])))


def test_divergence_flags_in_the_core():
    train = make_train_fn(_lsq_loss, gdopt.sgd(5.0), n_epochs=50, batch_size=16)
    params = _lsq_params()
    state, hist = jax.jit(train)(
        init_fit_state(params, gdopt.sgd(5.0).init(params)), _lsq_problem(), KEY
    )
    assert bool(state.diverged) and int(state.diverged_step) == int(state.step) + 1
    assert int(state.diverged_epoch) == int(state.epoch)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(state.params))
    assert int(np.sum(np.asarray(hist.epochs) > 0)) == int(state.epoch) < 50


# ----------------------------------------------------------------------------- convergence


def _scripted():
    """An optimizer that moves ``p`` by the next entry of a table held in its state: with the
    loss ``p`` and full batches, the table scripts the epochs' train losses."""

    def init(p):
        return (jnp.zeros((), jnp.int32), jnp.zeros(8, jnp.float32))

    def update(updates, state, params=None, **extra):
        count, table = state
        return table[count].astype(updates.dtype), (count + 1, table)

    return gdopt.GradientTransformation(init, update)


def _run_script(train, losses):
    table = np.zeros(8, np.float32)
    table[: len(losses) - 1] = np.diff(np.asarray(losses, np.float64))
    p = jnp.asarray(losses[0], jnp.float32)
    state = init_fit_state(p, (jnp.zeros((), jnp.int32), jnp.asarray(table)))
    return train(state, jnp.zeros((4, 1)), KEY)


def test_convergence_needs_consecutive_small_changes():
    loss = lambda p, batch: p + 0.0 * jnp.sum(batch)
    train = jax.jit(make_train_fn(loss, _scripted(), n_epochs=7, tol=1e-3, patience=2))
    # small relative changes (1e-5) at epochs 3, 5 and 7, never two in a row
    apart = [1.0, 10.0, 10.0001, 20.0, 20.0002, 40.0, 40.0004]
    state, hist = _run_script(train, apart)
    np.testing.assert_allclose(hist.train_loss, apart, rtol=1e-6)
    assert not bool(state.converged) and int(state.epoch) == 7
    assert int(state.streak) == 1
    # two in a row (epochs 3 and 4) stop it at epoch 4
    together = [1.0, 10.0, 10.0001, 10.0002, 20.0, 20.0002, 20.0004]
    state, hist = _run_script(train, together)
    assert bool(state.converged) and int(state.epoch) == 4
    assert hist.epochs.tolist() == [1, 2, 3, 4, 0, 0, 0]


# ----------------------------------------------------------------------------- evaluation


def test_evaluation_runs_on_eval_data():
    x, y = _lsq_problem()
    train_data, eval_data = (x[:48], y[:48]), (x[48:], 2.0 * y[48:] + 3.0)
    # the fraction of examples whose prediction is too high
    accuracy = lambda p, b: jnp.mean((b[0] @ p["w"] + p["b"] > b[1]).astype(jnp.float32))
    opt = gdopt.sgd(0.1)
    params = _lsq_params()
    train = jax.jit(make_train_fn(_lsq_loss, opt, n_epochs=3, accuracy_fn=accuracy))
    state, hist = train(init_fit_state(params, opt.init(params)), train_data, KEY, eval_data)
    assert isinstance(hist, History)
    expected = float(_lsq_loss(state.params, eval_data))
    on_train = float(_lsq_loss(state.params, train_data))
    np.testing.assert_allclose(float(hist.eval_loss[-1]), expected, rtol=1e-6)
    assert abs(expected - on_train) > 1.0  # the two data sets are far apart
    np.testing.assert_allclose(float(hist.eval_accuracy[-1]), accuracy(state.params, eval_data))
    # without eval_data the metrics are NaN
    _, hist = train(init_fit_state(params, opt.init(params)), train_data, KEY)
    assert np.all(np.isnan(np.asarray(hist.eval_loss)))


# ----------------------------------------------------------------------------- epochs


def test_stop_epoch_and_epochs_split_over_calls():
    data = _lsq_problem()
    opt = gdopt.sgd(0.05, momentum=0.9)
    params = _lsq_params()
    train = jax.jit(make_train_fn(_lsq_loss, opt, n_epochs=4, batch_size=16))
    start = init_fit_state(params, opt.init(params))
    whole, hist = train(start, data, KEY, None, 4)  # (the same program as the calls below)
    half, first = train(start, data, KEY, None, 2)  # stops after two epochs
    assert first.epochs.tolist() == [1, 2, 0, 0] and int(half.epoch) == 2
    assert int(half.step) == 2 * (64 // 16)
    again, second = train(half, data, KEY, None, 4)  # the epoch count seeds the shuffles
    assert second.epochs.tolist() == [3, 4, 0, 0]
    np.testing.assert_allclose(again.params["w"], whole.params["w"], rtol=1e-6)
    np.testing.assert_allclose(second.train_loss[:2], hist.train_loss[2:], rtol=1e-6)


def test_train_fn_vmaps_over_learning_rates():
    data = _lsq_problem()
    lrs = jnp.array([0.01, 0.05, 0.2])
    opt = gdopt.sgd(0.1)
    params = _lsq_params()
    state0 = opt.init(params)
    train = make_train_fn(_lsq_loss, opt, n_epochs=3, batch_size=16)

    def run(lr):
        s = init_fit_state(params, gdopt.set_hyperparams(state0, learning_rate=lr))
        return train(s, data, KEY)

    states, hist = jax.jit(jax.vmap(run))(lrs)
    assert hist.train_loss.shape == (3, 3)
    single = jax.jit(run)  # one compile: the learning rate is data
    for i, lr in enumerate(lrs):
        ref_state, ref_hist = single(lr)
        np.testing.assert_allclose(states.params["w"][i], ref_state.params["w"], rtol=2e-5)
        np.testing.assert_allclose(hist.train_loss[i], ref_hist.train_loss, rtol=2e-5)
    assert single._cache_size() == 1
    assert not np.allclose(states.params["w"][0], states.params["w"][2])
    # and the single runs are what fit computes
    ref = gdopt.fit(_lsq_loss, params, gdopt.sgd(0.2), data, epochs=3, batch_size=16, key=KEY)
    np.testing.assert_allclose(states.params["w"][2], ref.params["w"], rtol=2e-5)


def _hand_epochs(opt, params, data, epochs, batch_size):
    """A hand loop of make_step over ``epoch_batches(fold_in(KEY, epoch), ...)``: per step
    the loss, the gradient norm, the update norm and the param norm (before the update)."""
    from gdopt.batching import epoch_batches
    from gdopt.engine import make_step

    step = make_step(_lsq_loss, opt, donate=False)
    p, s = params, opt.init(params)
    rows = []
    for epoch in range(epochs):
        bx, by = epoch_batches(jax.random.fold_in(KEY, epoch), data, batch_size)
        row = []
        for i in range(bx.shape[0]):
            g = jax.grad(_lsq_loss)(p, (bx[i], by[i]))
            new, s, loss = step(p, s, (bx[i], by[i]))
            norm = lambda t: float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(t))))  # noqa: E731
            u = jax.tree.map(lambda a, b: a - b, new, p)
            row.append((float(loss), norm(g), norm(u), norm(p)))
            p = new
        rows.append(row)
    return np.asarray(rows)  # (epochs, steps, 4)


def test_record_step_and_diagnostics_equal_a_hand_loop():
    """record="step" keeps every step's loss; diagnostics are the per-epoch means of the
    norms; for plain SGD the update is -lr * grad, so the effective step size is lr."""
    x, y = _lsq_problem()
    lr, params = 0.05, {"w": jnp.ones(3), "b": jnp.full((), 0.5)}
    opt = gdopt.sgd(lr)
    train = jax.jit(
        make_train_fn(_lsq_loss, opt, n_epochs=3, batch_size=16, record="step", diagnostics=True)
    )
    state, h = train(init_fit_state(params, opt.init(params)), (x, y), KEY)
    hand = _hand_epochs(opt, params, (x, y), 3, 16)
    assert h.step_loss.shape == (3, 4)
    np.testing.assert_allclose(h.step_loss, hand[..., 0], rtol=1e-5)
    np.testing.assert_allclose(h.train_loss, h.step_loss.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(h.grad_norm, hand[..., 1].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(h.update_norm, lr * hand[..., 1].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(h.update_norm, hand[..., 2].mean(axis=1), rtol=1e-4)
    ratio = (hand[..., 2] / hand[..., 3]).mean(axis=1)
    np.testing.assert_allclose(h.update_ratio, ratio, rtol=1e-4)
    np.testing.assert_allclose(h.step_size, np.full(3, lr), rtol=1e-5)
    # the default program: the new fields are empty, the numbers unchanged
    plain = jax.jit(make_train_fn(_lsq_loss, opt, n_epochs=3, batch_size=16))
    state0, h0 = plain(init_fit_state(params, opt.init(params)), (x, y), KEY)
    for f in ("step_loss", "grad_norm", "update_norm", "update_ratio", "step_size"):
        assert getattr(h0, f).shape == (3, 0), f
    np.testing.assert_array_equal(h0.train_loss, h.train_loss)
    np.testing.assert_array_equal(state0.params["w"], state.params["w"])


def test_record_step_marks_steps_not_applied_and_history_defaults():
    """A step not applied (the divergence stops training) has a NaN step loss; History built
    with its four original fields still works; a bad ``record`` is refused."""
    import pytest

    x, y = _lsq_problem()
    opt = gdopt.sgd(0.1)
    loss = lambda p, b: jnp.where(p["w"][0] > 0.3, jnp.nan, _lsq_loss(p, b))  # noqa: E731
    train = make_train_fn(loss, opt, n_epochs=2, batch_size=16, record="step")
    state, h = train(init_fit_state(_lsq_params(), opt.init(_lsq_params())), (x, y), KEY)
    assert bool(state.diverged)
    k = int(state.step)  # steps applied
    assert 0 < k < 8
    flat = np.asarray(h.step_loss).reshape(-1)
    assert np.all(np.isfinite(flat[:k])) and np.all(np.isnan(flat[k:]))
    old = History(jnp.ones(2), jnp.zeros(0), jnp.zeros(0), jnp.arange(1, 3))
    assert old.step_loss.shape == (0,) and old.grad_norm.shape == (0,)
    with pytest.raises(ValueError, match="record must be 'epoch'.*got 'steps'"):
        make_train_fn(_lsq_loss, opt, n_epochs=1, record="steps")
