"""``gdopt/landscape.py``: loss slices, Hessian eigenvalues, trace and spectrum, sharpness.

The references are closed forms (quadratics, whose Hessian is known) and, for a ~1,000
parameter MLP on the digits, the dense Hessian from ``jax.hessian`` and
``numpy.linalg.eigvalsh`` (the library under test never forms it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdopt
from gdopt import landscape

DIAG = np.array([1.0, 2.0, 5.0, -0.5], np.float32)


def quadratic(p):
    """``0.5 sum_i λ_i x_i^2`` over a dict pytree: Hessian ``diag(DIAG)``."""
    x = jnp.concatenate([p["a"], p["b"]])
    return 0.5 * jnp.sum(jnp.asarray(DIAG) * x**2)


Q0 = {"a": jnp.array([1.0, -1.0]), "b": jnp.array([0.5, 2.0])}


@pytest.fixture(scope="module")
def mlp_problem():
    """A 64-14-10 tanh MLP (1,060 parameters) on 256 digits, trained a little, and the
    eigenvalues of its dense Hessian (float64 ``eigvalsh``)."""
    split = gdopt.data.load_digits(seed=0)
    model = gdopt.models.mlp([64, 14, 10], "tanh")
    loss = gdopt.losses.supervised_loss(model.apply, "softmax_cross_entropy")
    x, y = split.train
    data = (x[:256], y[:256])
    res = gdopt.fit(loss, model.init(jax.random.PRNGKey(0)), gdopt.adam(1e-2), data, epochs=50)
    params = res.params
    flat, unravel = ravel_pytree(params)
    dense = jax.jit(jax.hessian(lambda f: loss(unravel(f), data)))(flat)
    dense = np.asarray(dense, np.float64)
    eig = np.linalg.eigvalsh(0.5 * (dense + dense.T))
    return loss, params, data, eig[::-1]


# ----------------------------------------------------------------------------- slices


def test_interpolate_closed_form():
    a, b = {"w": jnp.array([-1.0, 0.0])}, {"w": jnp.array([1.0, 2.0])}
    s = landscape.interpolate(lambda p: jnp.sum(p["w"] ** 2), a, b, n=5, extend=0.5)
    alpha = np.linspace(-0.5, 1.5, 5)
    np.testing.assert_allclose(s.alpha, alpha, rtol=1e-6)
    # (1 - α) a + α b = (-1 + 2α, 2α): loss (2α - 1)^2 + 4α^2
    np.testing.assert_allclose(s.loss, (2 * alpha - 1) ** 2 + 4 * alpha**2, rtol=1e-5)


def test_interpolate_with_data_matches_direct_evaluation(mlp_problem):
    loss, params, data, _ = mlp_problem
    other = jax.tree.map(lambda x: 0.5 * x, params)
    s = landscape.interpolate(loss, params, other, data, n=3)
    mid = jax.tree.map(lambda x, y: 0.5 * x + 0.5 * y, params, other)
    expected = [loss(params, data), loss(mid, data), loss(other, data)]
    np.testing.assert_allclose(s.loss, np.asarray(expected), rtol=1e-5)


def test_slice_2d_given_directions_closed_form():
    d1, d2 = {"a": jnp.array([1.0, 0.0]), "b": jnp.zeros(2)}, {"a": jnp.zeros(2), "b": jnp.ones(2)}
    s = landscape.slice_2d(
        quadratic, Q0, directions=(d1, d2), span=2.0, n=5, filter_normalize=False
    )
    x = np.linspace(-2, 2, 5)
    base = np.concatenate([np.asarray(Q0["a"]), np.asarray(Q0["b"])])
    expected = np.empty((5, 5))
    for i, yy in enumerate(x):
        for j, xx in enumerate(x):
            pt = base + xx * np.array([1, 0, 0, 0]) + yy * np.array([0, 0, 1, 1])
            expected[i, j] = 0.5 * np.sum(DIAG * pt**2)
    np.testing.assert_allclose(s.x, x, rtol=1e-6)
    np.testing.assert_allclose(s.loss, expected, rtol=1e-5)


def test_slice_2d_filter_normalised_random_directions(mlp_problem):
    loss, params, data, _ = mlp_problem
    s = landscape.slice_2d(loss, params, data, key=jax.random.PRNGKey(3), span=0.5, n=3)
    for d in s.directions:
        for dl, pl in zip(d, params, strict=True):
            # each output unit (column of the x @ w kernel) has the norm of the params' one
            np.testing.assert_allclose(
                np.linalg.norm(dl["w"], axis=0), np.linalg.norm(pl["w"], axis=0), rtol=1e-5
            )
            np.testing.assert_allclose(
                np.linalg.norm(dl["b"]), np.linalg.norm(pl["b"]), rtol=1e-4, atol=1e-6
            )
    np.testing.assert_allclose(s.loss[1, 1], loss(params, data), rtol=1e-6)
    corner = jax.tree.map(lambda p, u, v: p - 0.5 * u + 0.5 * v, params, *s.directions)
    np.testing.assert_allclose(s.loss[2, 0], loss(corner, data), rtol=1e-5)
    again = landscape.slice_2d(loss, params, data, key=jax.random.PRNGKey(3), span=0.5, n=3)
    np.testing.assert_array_equal(again.loss, s.loss)


# ----------------------------------------------------------------------------- curvature


def test_hessian_vector_product_is_the_hessian_times_v():
    v = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0, 4.0])}
    hv = landscape.hessian_vector_product(quadratic, Q0)(v)
    np.testing.assert_allclose(np.concatenate([hv["a"], hv["b"]]), DIAG * np.arange(1, 5))


def test_hessian_eigenvalues_exact_on_a_quadratic_with_vectors():
    vals, vecs = landscape.hessian_eigenvalues(quadratic, Q0, k=2, return_eigenvectors=True)
    np.testing.assert_allclose(vals, [5.0, 2.0], rtol=1e-5)
    assert jax.tree.structure(vecs[0]) == jax.tree.structure(Q0)
    np.testing.assert_allclose(np.abs(np.asarray(vecs[0]["b"])), [1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(np.abs(np.asarray(vecs[1]["a"])), [0.0, 1.0], atol=1e-5)
    low = landscape.hessian_eigenvalues(quadratic, Q0, k=2, which="smallest")
    np.testing.assert_allclose(low, [-0.5, 1.0], rtol=1e-5)


def test_hessian_eigenvalues_with_a_repeated_eigenvalue_and_full_iterations():
    # an invariant subspace is found early (two distinct eigenvalues among 6): Lanczos
    # restarts after the breakdown and still returns every eigenvalue
    f = lambda x: 0.5 * jnp.sum(jnp.array([3.0, 3.0, 3.0, 1.0, 1.0, 1.0]) * x**2)
    vals = landscape.hessian_eigenvalues(f, jnp.ones(6), k=6, num_iters=6)
    np.testing.assert_allclose(vals, [3, 3, 3, 1, 1, 1], rtol=1e-5)


def test_hessian_eigenvalues_top5_equal_dense_eigvalsh(mlp_problem):
    loss, params, data, eig = mlp_problem
    assert 900 <= sum(x.size for x in jax.tree.leaves(params)) <= 1100
    vals, vecs = landscape.hessian_eigenvalues(loss, params, data, k=5, return_eigenvectors=True)
    np.testing.assert_allclose(np.asarray(vals, np.float64), eig[:5], rtol=1e-3)
    # the vectors are eigenvectors: ||H v - λ v|| small against λ
    hvp = jax.jit(landscape.hessian_vector_product(loss, params, data))
    for lam, v in zip(vals, vecs, strict=True):
        r = ravel_pytree(hvp(v))[0] - lam * ravel_pytree(v)[0]
        assert float(jnp.linalg.norm(r)) < 1e-2 * float(lam)
        np.testing.assert_allclose(float(jnp.linalg.norm(ravel_pytree(v)[0])), 1.0, rtol=1e-4)


def test_hessian_trace_hutchinson(mlp_problem):
    loss, params, data, eig = mlp_problem
    trace = float(landscape.hessian_trace(loss, params, data, n_probes=100))
    assert abs(trace - eig.sum()) < 0.05 * abs(eig.sum())
    # on a diagonal Hessian Rademacher probes are exact
    np.testing.assert_allclose(landscape.hessian_trace(quadratic, Q0, n_probes=3), DIAG.sum())


def test_hessian_spectrum_nodes_weights_and_density(mlp_problem):
    s = landscape.hessian_spectrum(quadratic, Q0, num_iters=4, n_probes=3)
    np.testing.assert_allclose(s.nodes, np.tile(np.sort(DIAG), (3, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.weights.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.trapezoid(s.density, s.grid), 1.0, rtol=1e-3)
    loss, params, data, eig = mlp_problem
    s = landscape.hessian_spectrum(loss, params, data, num_iters=60, n_probes=2)
    # Lanczos's extreme Ritz values converge to the spectrum's ends
    np.testing.assert_allclose(s.nodes.max(), eig[0], rtol=1e-3)
    np.testing.assert_allclose(s.nodes.min(), eig[-1], rtol=2e-2)


# ----------------------------------------------------------------------------- sharpness


@pytest.fixture(scope="module")
def edge_of_stability():
    """Full-batch GD with learning rate 1.5 on a tanh MLP (64-32-10, MSE on one-hot digits),
    800 epochs, the sharpness tracked every 50: ``(loss, params0, data, lr, history)``."""
    split = gdopt.data.load_digits(seed=0)
    model = gdopt.models.mlp([64, 32, 10], "tanh")
    loss = gdopt.losses.supervised_loss(model.apply, "mse")
    x, y = split.train
    data = (x[:256], jax.nn.one_hot(y[:256], 10))
    lr, params0 = 1.5, model.init(jax.random.PRNGKey(0))
    h = landscape.track_sharpness(loss, params0, gdopt.sgd(lr), data, epochs=800, every=50)
    return loss, params0, data, lr, h


def test_track_sharpness_reaches_the_edge_of_stability(edge_of_stability):
    """The sharpness starts above 2 / lr = 1.33 (unstable), drops, then rises back and hovers
    at 2 / lr (Cohen et al. 2021)."""
    loss, _, data, lr, h = edge_of_stability
    assert h.epochs.tolist() == list(range(0, 801, 50))
    assert h.train_loss.shape == (800,) and not h.diverged
    assert h.sharpness[0] > 2 / lr  # unstable at the start
    assert h.sharpness[1] < 0.9 * 2 / lr  # the first steps leave the sharp region...
    late = h.sharpness[len(h.sharpness) // 2 :]
    assert np.all(np.abs(late - 2 / lr) < 0.2 * 2 / lr)  # ...and it comes back to 2 / lr
    assert h.train_loss[-1] < 0.05 * h.train_loss[0]
    # the last measurement is the sharpness of the returned params
    top = landscape.hessian_eigenvalues(loss, h.params, data)[0]
    np.testing.assert_allclose(h.sharpness[-1], top, rtol=1e-3)


def test_fit_sharpness_every_is_track_sharpness(edge_of_stability):
    """``fit(sharpness_every=50)`` on the same run and key: the same measurements (the same
    Lanczos steps, warm-started the same way), one per 50th epoch, NaN in between; at the
    edge of stability from epoch 400 on."""
    loss, params0, data, lr, h = edge_of_stability
    res = gdopt.fit(loss, params0, gdopt.sgd(lr), data, epochs=800, sharpness_every=50)
    sharp = res.history.sharpness
    assert sharp.shape == (800,)
    measured = np.flatnonzero(~np.isnan(sharp)) + 1
    assert measured.tolist() == list(range(50, 801, 50))
    np.testing.assert_allclose(sharp[measured - 1], h.sharpness[1:], rtol=1e-5)
    np.testing.assert_allclose(res.history.train_loss, h.train_loss, rtol=1e-5)
    late = sharp[measured[measured >= 400] - 1]
    assert np.all(np.abs(late - 2 / lr) < 0.2 * 2 / lr)


def test_track_sharpness_matches_fit_on_a_deterministic_objective():
    f = gdopt.problems.rosenbrock
    x0 = jnp.array([-1.2, 1.0])
    h = landscape.track_sharpness(f, x0, gdopt.sgd(1e-3), epochs=30, every=7)
    assert h.epochs.tolist() == [0, 7, 14, 21, 28, 30]
    ref = gdopt.fit(f, x0, gdopt.sgd(1e-3), epochs=30)
    np.testing.assert_allclose(h.params, ref.params, rtol=1e-6)
    np.testing.assert_allclose(h.train_loss, ref.history.train_loss, rtol=1e-6)
    dense = np.linalg.eigvalsh(np.asarray(jax.hessian(f)(h.params)))
    np.testing.assert_allclose(h.sharpness[-1], dense[-1], rtol=1e-4)


# ----------------------------------------------------------------------------- bad input


def _other_structure():
    return {"a": jnp.ones(2), "c": jnp.ones(2)}


BAD = [
    (
        "params_b structure",
        lambda: landscape.interpolate(quadratic, Q0, _other_structure()),
        ValueError,
        r"params_a and params_b differ in structure: params_a has \['b'\]",
    ),
    (
        "params_b shape",
        lambda: landscape.interpolate(quadratic, Q0, {"a": jnp.ones(3), "b": jnp.ones(2)}),
        ValueError,
        r"differ in shape at \['a'\]",
    ),
    ("n < 2", lambda: landscape.interpolate(quadratic, Q0, Q0, n=1), ValueError, "n must be"),
    (
        "directions structure",
        lambda: landscape.slice_2d(quadratic, Q0, directions=(Q0, _other_structure())),
        ValueError,
        r"directions\[1\] and params differ in structure",
    ),
    (
        "directions not a pair",
        lambda: landscape.slice_2d(quadratic, Q0, directions=(Q0,)),
        ValueError,
        "directions must be a pair",
    ),
    ("span <= 0", lambda: landscape.slice_2d(quadratic, Q0, span=0.0), ValueError, "span"),
    (
        "k > parameter count",
        lambda: landscape.hessian_eigenvalues(quadratic, Q0, k=5),
        ValueError,
        r"k must be at most the number of parameters \(4\), got k=5",
    ),
    ("k < 1", lambda: landscape.hessian_eigenvalues(quadratic, Q0, k=0), ValueError, "k must"),
    (
        "num_iters < k",
        lambda: landscape.hessian_eigenvalues(quadratic, Q0, k=3, num_iters=2),
        ValueError,
        "num_iters must be an integer >= 3",
    ),
    (
        "which",
        lambda: landscape.hessian_eigenvalues(quadratic, Q0, which="biggest"),
        ValueError,
        "which must be one of",
    ),
    (
        "n_probes",
        lambda: landscape.hessian_trace(quadratic, Q0, n_probes=0),
        ValueError,
        "n_probes",
    ),
    (
        "sigma",
        lambda: landscape.hessian_spectrum(quadratic, Q0, sigma=-1.0),
        ValueError,
        "sigma",
    ),
    (
        "loss_fn not callable",
        lambda: landscape.hessian_trace("loss", Q0),
        TypeError,
        "loss_fn must be a function",
    ),
    (
        "integer params",
        lambda: landscape.hessian_eigenvalues(quadratic, {"a": jnp.ones(2, jnp.int32)}),
        TypeError,
        r"params\['a'\] has dtype int32",
    ),
    (
        "epochs",
        lambda: landscape.track_sharpness(quadratic, Q0, gdopt.sgd(0.1), epochs=0),
        ValueError,
        "epochs must be an integer >= 1",
    ),
    (
        "batch_size without data",
        lambda: landscape.track_sharpness(quadratic, Q0, gdopt.sgd(0.1), epochs=2, batch_size=2),
        ValueError,
        "batch_size needs data",
    ),
]


@pytest.mark.parametrize("case,call,error,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, call, error, match):
    with pytest.raises(error, match=match):
        call()
