"""Tests of gdopt.plot's landscape plots (Agg backend): the figures hold the data drawn."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gdopt import plot  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def quad(p):
    return jnp.sum(p**2)


def test_contours_with_trajectories_and_minima():
    tf = gdopt.problems.TEST_FUNCTIONS["himmelblau"]
    paths = gdopt.record_trajectories(
        tf.fn, jnp.zeros(2), {"sgd": gdopt.sgd(0.01), "adam": gdopt.adam(0.1)}, steps=20
    )
    fig = plot.contours(tf.fn, n=40, trajectories=paths, minima=np.stack(tf.minima))
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["adam"].get_xydata(), paths["adam"].params, rtol=1e-6)
    np.testing.assert_allclose(lines["minima"].get_xydata(), np.stack(tf.minima), rtol=1e-6)
    assert ax.get_xlim() == (-5.0, 5.0)
    with pytest.raises(ValueError, match=r"shape \(steps, 2\)"):
        plot.contours(tf.fn, n=10, trajectories={"bad": np.zeros((3, 3))})


def test_basin_map_colours_each_start_by_its_minimum():
    tf = gdopt.problems.TEST_FUNCTIONS["himmelblau"]
    init = lambda k: jax.random.uniform(k, (2,), minval=-5.0, maxval=5.0)  # noqa: E731
    r = gdopt.multistart(tf.fn, init, gdopt.sgd(0.005), n_starts=16, key=jax.random.PRNGKey(0),
                         steps=500)  # fmt: skip
    fig, ax = plt.subplots()
    assert plot.basin_map(r, fn=tf.fn, ax=ax) is fig
    scatters = ax.collections[-len(r.minima) :]
    for m, sc in zip(r.minima, scatters, strict=True):
        np.testing.assert_allclose(sc.get_offsets(), np.asarray(r.init_params)[m.indices])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 4 and all("starts" in t for t in labels)


def test_slices_spectrum_and_sharpness():
    a, b = jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.0])
    s1 = gdopt.landscape.interpolate(quad, a, b, n=5)
    fig = plot.interpolation_curve(s1, label="a to b")
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), s1.loss)
    s2 = gdopt.landscape.slice_2d(quad, jnp.ones(2), n=5, filter_normalize=False)
    fig = plot.slice_2d_contours(s2, log=True)
    assert len(fig.axes) == 2  # the plot and its colour bar
    spec = gdopt.landscape.hessian_spectrum(quad, jnp.ones(2), num_iters=2, n_probes=2)
    fig = plot.spectral_density(spec)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_xdata(), spec.grid)
    assert fig.axes[0].get_yscale() == "log"
    h = gdopt.landscape.track_sharpness(quad, jnp.ones(2), gdopt.sgd(0.1), epochs=4, every=2)
    fig = plot.sharpness_curve(h, learning_rate=0.1)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    np.testing.assert_allclose(lines["2 / lr"].get_ydata(), [20.0, 20.0])
    np.testing.assert_allclose(lines["sharpness λ_max"].get_ydata(), [2.0, 2.0, 2.0], rtol=1e-5)


def test_sharpness_curve_of_a_fit_history():
    res = gdopt.fit(quad, jnp.ones(2), gdopt.sgd(0.1), epochs=6, sharpness_every=3)
    for history in (res.history, res):
        fig = plot.sharpness_curve(history, learning_rate=0.1)
        line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "sharpness λ_max")
        np.testing.assert_allclose(line.get_xdata(), [3, 6])
        np.testing.assert_allclose(line.get_ydata(), [2.0, 2.0], rtol=1e-5)
    with pytest.raises(ValueError, match="holds no sharpness"):
        plot.sharpness_curve(gdopt.fit(quad, jnp.ones(2), gdopt.sgd(0.1), epochs=2))
