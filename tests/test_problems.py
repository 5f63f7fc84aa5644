"""Tests for gdopt.problems: classic test functions and the problem registry.

Also an end-to-end sanity check of data + model + loss with a hand-written gradient-descent
loop (no gdopt optimizer): softmax regression on the digits must reach >= 95% test accuracy.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdopt import data, losses, models, problems

NAMES = sorted(problems.TEST_FUNCTIONS)


def test_test_function_table():
    assert NAMES == sorted(
        ["rosenbrock", "himmelblau", "beale", "rastrigin", "ill_conditioned_quadratic"]
    )
    assert problems.TestFunction.__test__ is False
    for name, tf in problems.TEST_FUNCTIONS.items():
        assert tf.name == name and tf.x0.shape == (2,) and len(tf.minima) >= 1
        for m in tf.minima:
            assert m.shape == tf.x0.shape
    assert len(problems.TEST_FUNCTIONS["himmelblau"].minima) == 4
    np.testing.assert_array_equal(
        problems.TEST_FUNCTIONS["rosenbrock"].x0, np.array([-1.2, 1.0], np.float32)
    )


@pytest.mark.parametrize("name", NAMES)
def test_minima_value_and_zero_gradient(name):
    tf = problems.TEST_FUNCTIONS[name]
    value_and_grad = jax.jit(jax.value_and_grad(tf.fn))
    for m in tf.minima:
        value, grad = value_and_grad(jnp.asarray(m))
        np.testing.assert_allclose(value, tf.min_value, atol=1e-6)
        np.testing.assert_allclose(grad, 0.0, atol=2e-4)
        # a strict local minimum: nearby points are higher
        for direction in ([1.0, 0.0], [0.0, 1.0], [0.7, -0.7]):
            for sign in (1.0, -1.0):
                assert float(tf.fn(m + 1e-2 * sign * np.array(direction, np.float32))) > value
    value0, grad0 = value_and_grad(jnp.asarray(tf.x0))
    assert float(value0) > tf.min_value + 1e-3 and float(jnp.linalg.norm(grad0)) > 1e-3


def test_values_match_numpy_formulas():
    rng = np.random.RandomState(0)
    p = rng.normal(size=5)
    ros = sum(100 * (p[i + 1] - p[i] ** 2) ** 2 + (1 - p[i]) ** 2 for i in range(4))
    np.testing.assert_allclose(problems.rosenbrock(p), ros, rtol=1e-5)
    ros2 = sum(3 * (p[i + 1] - p[i] ** 2) ** 2 + (2 - p[i]) ** 2 for i in range(4))
    np.testing.assert_allclose(problems.rosenbrock(p, a=2.0, b=3.0), ros2, rtol=1e-5)
    np.testing.assert_allclose(
        problems.rastrigin(p), 50 + np.sum(p**2 - 10 * np.cos(2 * np.pi * p)), rtol=1e-5
    )
    np.testing.assert_allclose(
        problems.rastrigin(p, A=3.0), 15 + np.sum(p**2 - 3 * np.cos(2 * np.pi * p)), rtol=1e-5
    )
    u, v = 0.7, -1.3
    np.testing.assert_allclose(
        problems.himmelblau(np.array([u, v])), (u * u + v - 11) ** 2 + (u + v * v - 7) ** 2
    )
    beale = (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2 + (2.625 - u + u * v**3) ** 2
    np.testing.assert_allclose(problems.beale(np.array([u, v])), beale, rtol=1e-6)


def test_rosenbrock_any_dimension_and_2d_minimum():
    assert float(problems.rosenbrock(jnp.ones(7))) == 0.0
    np.testing.assert_allclose(jax.grad(problems.rosenbrock)(jnp.ones(7)), 0.0)
    # in 2-D the minimiser is (a, a^2)
    grad = jax.grad(problems.rosenbrock)(jnp.array([2.0, 4.0]), 2.0)
    np.testing.assert_allclose(grad, 0.0)


def test_ill_conditioned_quadratic_spectrum():
    hessian = jax.jit(jax.hessian(problems.ill_conditioned_quadratic))
    np.testing.assert_allclose(hessian(jnp.zeros(5), 1e4), np.diag(np.logspace(0, 4, 5)), rtol=1e-5)
    np.testing.assert_allclose(hessian(jnp.zeros(1), 50.0), [[1.0]])
    # the condition number may be traced (a sweep under vmap)
    values = jax.vmap(lambda k: problems.ill_conditioned_quadratic(jnp.ones(2), k))(
        jnp.array([1.0, 100.0])
    )
    np.testing.assert_allclose(values, [1.0, 50.5])
    with pytest.raises(ValueError, match=r"condition_number must be a finite number in \[1, inf\)"):
        problems.ill_conditioned_quadratic(jnp.ones(2), 0.5)


def test_test_functions_vmap_and_integer_points():
    pts = jnp.array([[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(jax.vmap(problems.rosenbrock)(pts), [0.0, 1.0])
    assert float(problems.himmelblau(jnp.array([3, 2]))) == 0.0


def test_test_function_shape_errors():
    with pytest.raises(ValueError, match=r"rosenbrock takes a point x of shape \(n,\) with n >= 2"):
        problems.rosenbrock(jnp.ones(1))
    with pytest.raises(
        ValueError, match=r"himmelblau takes a point x of shape \(2,\), got .*\(3,\)"
    ):
        problems.himmelblau(jnp.ones(3))
    with pytest.raises(ValueError, match=r"beale .*got shape \(2, 2\)"):
        problems.beale(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"rastrigin .*got shape \(\)"):
        problems.rastrigin(jnp.array(1.0))


# ---------------------------------------------------------------- problem registry


def test_problem_names():
    assert problems.PROBLEM_NAMES == (
        "digits-mlp",
        "digits-softmax",
        "linear-regression",
        "classification",
    )
    with pytest.raises(ValueError, match="Unknown problem 'mnist'.*digits-mlp, digits-softmax"):
        problems.get_problem("mnist")
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        problems.get_problem("digits-mlp", seed=-1)


@pytest.mark.parametrize("name", problems.PROBLEM_NAMES)
def test_problem_is_well_formed(name):
    problem = problems.get_problem(name, seed=0)
    assert problem.name == name and problem.description
    assert problem.default_learning_rate > 0 and problem.default_epochs >= 1
    assert problem.default_batch_size >= 1
    params = problem.init_params(jax.random.PRNGKey(0))
    for x, y in (problem.train, problem.test):
        data.check_dataset(x, y)
        assert x.dtype == jnp.float32
    value, grads = jax.jit(jax.value_and_grad(problem.loss_fn))(params, problem.train)
    assert value.shape == () and np.isfinite(float(value))
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    if problem.accuracy_fn is not None:
        acc = float(problem.accuracy_fn(params, problem.test))
        assert 0.0 <= acc <= 1.0
    # same seed, same data; another seed, another split
    again = problems.get_problem(name, seed=0)
    np.testing.assert_array_equal(again.train[0], problem.train[0])
    other = problems.get_problem(name, seed=1)
    assert not np.array_equal(np.asarray(other.test[1]), np.asarray(problem.test[1]))


def test_problem_shapes():
    mlp = problems.get_problem("digits-mlp")
    params = mlp.init_params(jax.random.PRNGKey(0))
    assert [p["w"].shape for p in params] == [(64, 64), (64, 10)]
    assert mlp.train[0].shape == (1438, 64) and mlp.test[0].shape == (359, 64)
    lr = problems.get_problem("linear-regression")
    assert lr.train[0].shape == (256, 5) and lr.test[0].shape == (64, 5) and lr.accuracy_fn is None
    cls = problems.get_problem("classification")
    assert cls.train[0].shape == (410, 2) and cls.test[0].shape == (102, 2)


def _sgd(problem, epochs):
    """Plain mini-batch SGD (hand-written, no gdopt optimizer) with the problem's defaults."""
    x, y = problem.train
    lr, bs = problem.default_learning_rate, problem.default_batch_size
    steps = x.shape[0] // bs
    grad = jax.grad(problem.loss_fn)

    @jax.jit
    def run(params, key):
        def epoch(params, k):
            perm = jax.random.permutation(k, x.shape[0])[: steps * bs].reshape(steps, bs)

            def step(p, idx):
                g = grad(p, (x[idx], y[idx]))
                return jax.tree.map(lambda a, b: a - lr * b, p, g), None

            return jax.lax.scan(step, params, perm)[0], None

        return jax.lax.scan(epoch, params, jax.random.split(key, epochs))[0]

    return run(problem.init_params(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))


@pytest.mark.parametrize(
    ("name", "metric", "threshold"),
    [
        ("digits-mlp", "accuracy", 0.95),
        ("linear-regression", "test_loss", 0.02),
        ("classification", "accuracy", 1.0),
    ],
)
def test_default_learning_rate_trains_with_plain_sgd(name, metric, threshold):
    problem = problems.get_problem(name)
    params = _sgd(problem, problem.default_epochs)
    if metric == "accuracy":
        assert float(problem.accuracy_fn(params, problem.test)) >= threshold
    else:
        assert float(problem.loss_fn(params, problem.test)) <= threshold


def test_linear_regression_problem_optimum_is_least_squares():
    problem = problems.get_problem("linear-regression")
    w, b = data.least_squares(*problem.train)
    params = {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    grads = jax.jit(jax.grad(problem.loss_fn))(params, problem.train)
    np.testing.assert_allclose(grads["w"], 0.0, atol=1e-5)
    np.testing.assert_allclose(grads["b"], 0.0, atol=1e-5)
    # noise 0.1: the optimum's training MSE is close to 0.1**2
    assert 0.005 < float(problem.loss_fn(params, problem.train)) < 0.015


# ---------------------------------------------------------------- end to end


def test_softmax_regression_on_digits_end_to_end():
    """data + model + loss are right: full-batch gradient descent (jax.grad, x - lr * g) reaches
    >= 95% test accuracy with softmax regression on the standardised digits."""
    split = data.load_digits()
    model = models.logistic_regression(64, data.DIGITS_NUM_CLASSES)
    loss_fn = losses.supervised_loss(model.apply, "softmax_cross_entropy")
    accuracy_fn = losses.supervised_accuracy(model.apply)
    lr, steps = 1.0, 200

    @jax.jit
    def train(params):
        def body(_, p):
            g = jax.grad(loss_fn)(p, split.train)
            return jax.tree.map(lambda a, b: a - lr * b, p, g)

        return jax.lax.fori_loop(0, steps, body, params)

    params0 = model.init(jax.random.PRNGKey(0))
    params = train(params0)
    assert float(loss_fn(params, split.train)) < 0.25 * float(loss_fn(params0, split.train))
    assert float(accuracy_fn(params, split.train)) >= 0.98
    assert float(accuracy_fn(params, split.test)) >= 0.95
    assert math.isfinite(float(loss_fn(params, split.test)))
