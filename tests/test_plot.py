"""Tests of gdopt.plot's training plots (Agg backend): the figures hold the data drawn."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import gdopt

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gdopt.tuning import LRFindResult, SweepResult  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def history(losses, evals=()):
    n = len(losses)
    return gdopt.History(
        np.asarray(losses, np.float32),
        np.asarray(evals, np.float32),
        np.zeros(0, np.float32),
        np.arange(1, n + 1),
    )


def fit_result(losses, steps_per_epoch, wall, compile_time):
    return gdopt.FitResult(
        params=None,
        opt_state=None,
        history=history(losses),
        converged=False,
        diverged=False,
        epochs_run=len(losses),
        steps_run=steps_per_epoch * len(losses),
        stop_reason="completed",
        wall_time=wall,
        compile_time=compile_time,
    )


def sweep_result(configs, seeds, final, diverged, train_loss=None, epochs=None):
    k = len(configs)
    train_loss = (
        np.tile(np.asarray(final, np.float32)[:, None], (1, 2))
        if train_loss is None
        else train_loss
    )
    epochs = np.tile(np.array([1, 2]), (k, 1)) if epochs is None else epochs
    return SweepResult(
        configs=configs,
        seeds=seeds,
        final_train_loss=np.asarray(final, np.float32),
        history=gdopt.History(train_loss, np.zeros((k, 0)), np.zeros((k, 0)), epochs),
        eval_loss=None,
        eval_accuracy=None,
        diverged=np.asarray(diverged),
        converged=np.zeros(k, bool),
        epochs_run=np.full(k, 2),
        steps_run=np.full(k, 20),
        params=None,
        metric="train_loss",
        best_index=0,
        wall_time=3.0,
        compile_time=1.0,
    )


def test_loss_curves_against_epochs_steps_and_time():
    a = fit_result([4.0, 2.0, 1.0], steps_per_epoch=10, wall=5.0, compile_time=2.0)
    b = fit_result([3.0, 1.5], steps_per_epoch=5, wall=1.0, compile_time=0.0)
    fig = gdopt.plot.loss_curves({"a": a, "b": b})
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [4.0, 2.0, 1.0])
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch"
    steps = gdopt.plot.loss_curves([a, b], x="step").axes[0]
    np.testing.assert_array_equal(steps.lines[0].get_xdata(), [10, 20, 30])
    np.testing.assert_array_equal(steps.lines[1].get_xdata(), [5, 10])
    times = gdopt.plot.loss_curves([a], x="time", log=False).axes[0]
    np.testing.assert_allclose(times.lines[0].get_xdata(), [1.0, 2.0, 3.0])  # (5 - 2) s / 3
    assert times.get_yscale() == "linear"


def test_loss_curves_into_a_given_axes_and_sweep_rows_skip_unrun_epochs():
    fig, (left, right) = plt.subplots(1, 2)
    res = sweep_result(
        [{"learning_rate": 0.1}, {"learning_rate": 1.0}],
        [None, None],
        [1.0, np.nan],
        [False, True],
        train_loss=np.array([[2.0, 1.0], [5.0, np.nan]], np.float32),
        epochs=np.array([[1, 2], [1, 0]]),
    )
    out = gdopt.plot.loss_curves(res, ax=right, metric="train_loss")
    assert out is fig and not left.lines
    assert [line.get_label() for line in right.lines] == ["learning_rate=0.1", "learning_rate=1"]
    np.testing.assert_array_equal(right.lines[1].get_xdata(), [1])  # epoch 2 did not run
    np.testing.assert_array_equal(right.lines[1].get_ydata(), [5.0])
    with pytest.raises(ValueError, match="eval_loss.* was not recorded"):
        gdopt.plot.loss_curves(history([1.0]), metric="eval_loss")
    with pytest.raises(ValueError, match="x must be one of"):
        gdopt.plot.loss_curves(history([1.0]), x="minutes")
    with pytest.raises(ValueError, match="needs a FitResult"):
        gdopt.plot.loss_curves(history([1.0]), x="step")
    with pytest.raises(TypeError, match="results must be"):
        gdopt.plot.loss_curves(3.0)


def test_sweep_heatmap_two_hyperparameters_with_a_diverged_cell():
    configs = [{"learning_rate": lr, "b1": b1} for lr in (0.01, 0.1, 1.0) for b1 in (0.5, 0.9)]
    final = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    res = sweep_result(configs, [None] * 6, final, [False] * 5 + [True])
    fig = gdopt.plot.sweep_heatmap(res)
    ax = fig.axes[0]
    image = ax.images[0].get_array()
    assert image.shape == (2, 3)  # rows: b1, columns: learning rate
    np.testing.assert_array_equal(image.data[0], [6.0, 4.0, 2.0])  # b1 = 0.5
    assert image.data[1, 0] == 5.0 and image.data[1, 1] == 3.0
    assert bool(image.mask[1, 2])  # the diverged run is a blank cell
    assert ax.get_xlabel() == "learning_rate" and ax.get_ylabel() == "b1"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.01", "0.1", "1"]
    assert "div." in [t.get_text() for t in ax.texts]
    transposed = gdopt.plot.sweep_heatmap(res, x="b1", y="learning_rate").axes[0]
    assert transposed.images[0].get_array().shape == (3, 2)


def test_sweep_heatmap_against_seeds_averages_nothing_and_checks_names():
    configs = [{"learning_rate": lr} for lr in (0.01, 0.1) for _ in range(3)]
    seeds = [0, 1, 2, 0, 1, 2]
    final = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    res = sweep_result(configs, seeds, final, [False] * 6)
    image = gdopt.plot.sweep_heatmap(res, annotate=False).axes[0].images[0].get_array()
    np.testing.assert_array_equal(image.data, [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]])
    # a second hyperparameter absent: cells average the seeds
    both = sweep_result([{"learning_rate": 0.1, "b1": 0.9}] * 2, [0, 1], [1.0, 3.0], [False, False])
    avg = gdopt.plot.sweep_heatmap(both, x="learning_rate", y="b1").axes[0].images[0].get_array()
    np.testing.assert_array_equal(avg.data, [[2.0]])
    with pytest.raises(ValueError, match="is not a swept hyperparameter"):
        gdopt.plot.sweep_heatmap(res, x="momentum")
    with pytest.raises(ValueError, match="was not recorded"):
        gdopt.plot.sweep_heatmap(res, metric="eval_loss")


def test_lr_find_curve_marks_every_suggestion():
    lrs = np.geomspace(1e-4, 1.0, 5)
    raw = np.array([3.1, 2.2, 0.9, 2.1, 9.5])
    smoothed = np.array([3.0, 2.0, 1.0, 2.0, 9.0])
    res = LRFindResult(lrs, raw, smoothed, 1e-2, {"valley": 1e-2, "minimum": 1e-3, "steep": 1e-3})
    ax = gdopt.plot.lr_find_curve(res).axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), smoothed)
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), raw)
    marks = {line.get_label(): line for line in ax.lines[2:] if line.get_label()[0] != "_"}
    assert set(marks) == {"minimum: 0.001", "steep: 0.001", "valley: 0.01"}
    assert marks["valley: 0.01"].get_ydata()[0] == pytest.approx(1.0)  # on the curve
    assert marks["minimum: 0.001"].get_ydata()[0] == pytest.approx(2.0)
    vline = ax.lines[-1]
    assert list(vline.get_xdata()) == [1e-2, 1e-2]
    assert ax.get_xscale() == "log"
    # the blow-up does not set the y range
    assert ax.get_ylim()[1] < 9.0


def test_plots_of_a_real_sweep_and_range_test():
    x = jnp.linspace(-1.0, 1.0, 16)[:, None]

    def loss(p, b):
        return jnp.mean((b @ p - 0.5) ** 2)

    res = gdopt.sweep(
        loss, jnp.zeros(1), gdopt.sgd(0.1), x, epochs=3, seeds=2, grid={"learning_rate": [0.1, 1.0]}
    )
    image = gdopt.plot.sweep_heatmap(res).axes[0].images[0].get_array()
    np.testing.assert_allclose(image.data, res.final_train_loss.reshape(2, 2).T, rtol=1e-6)
    lines = gdopt.plot.loss_curves(res).axes[0].lines
    assert len(lines) == 4
    np.testing.assert_allclose(lines[3].get_ydata(), res.history.train_loss[3], rtol=1e-6)
