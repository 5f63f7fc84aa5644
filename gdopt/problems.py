"""Classic optimisation test functions and a registry of ready-made learning problems.

Test functions map a point ``x`` of shape ``(n,)`` to a scalar; they are pure ``jnp`` code, so
``jax.grad``, ``jax.jit`` and ``jax.vmap`` apply. :data:`TEST_FUNCTIONS` pairs each with a
standard starting point and its known minimisers (all 2-D, so they can be plotted).

:func:`get_problem` builds a :class:`Problem`: data, parameter initialiser, loss and accuracy
functions and default training settings, as used by the command line and the benchmarks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics as num
from gdopt import data as _data
from gdopt import losses as _losses
from gdopt import models as _models
from gdopt._validation import check_scalar
from gdopt.base import Params

__all__ = [
    "rosenbrock",
    "himmelblau",
    "beale",
    "rastrigin",
    "ill_conditioned_quadratic",
    "TestFunction",
    "TEST_FUNCTIONS",
    "Problem",
    "PROBLEM_NAMES",
    "get_problem",
]


def _point(x: Any, fn: str, dim: int | None = None, min_dim: int = 1) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if x.ndim != 1 or (dim is not None and x.shape[0] != dim) or x.shape[0] < min_dim:
        want = f"({dim},)" if dim is not None else f"(n,) with n >= {min_dim}"
        raise ValueError(f"{fn} takes a point x of shape {want}, got shape {x.shape}.")
    return x


def rosenbrock(x: jax.Array, a: float = 1.0, b: float = 100.0) -> jax.Array:
    """The Rosenbrock function, ``sum_i b (x[i+1] - x[i]²)² + (a - x[i])²`` for ``i < n-1``.

    A curved, narrow valley (Rosenbrock, "An automatic method for finding the greatest or least
    value of a function", The Computer Journal, 1960). For ``a = 1`` the global minimum is 0 at
    ``(1, ..., 1)``; in 2-D it is at ``(a, a²)`` for any ``a``.

    Args:
      x: a point of shape ``(n,)``, ``n >= 2``.
      a, b: the usual constants.

    Returns:
      A scalar.

    >>> round(float(rosenbrock(jnp.array([-1.2, 1.0]))), 4)
    24.2
    """
    x = _point(x, "rosenbrock", min_dim=2)
    # a and b may be arrays of another dtype: promotions explicit (num.mul...)
    return jnp.sum(
        num.add(num.mul(b, jnp.square(x[1:] - jnp.square(x[:-1]))), jnp.square(num.sub(a, x[:-1])))
    )


def himmelblau(x: jax.Array) -> jax.Array:
    """Himmelblau's function ``(x² + y - 11)² + (x + y² - 7)²`` on 2-D points.

    Four global minima of value 0, one at ``(3, 2)`` (Himmelblau, "Applied Nonlinear
    Programming", McGraw-Hill, 1972).

    Args:
      x: a point of shape ``(2,)``.

    Returns:
      A scalar.

    >>> float(himmelblau(jnp.array([3.0, 2.0])))
    0.0
    """
    x = _point(x, "himmelblau", dim=2)
    u, v = x[0], x[1]
    return jnp.square(u * u + v - 11.0) + jnp.square(u + v * v - 7.0)


def beale(x: jax.Array) -> jax.Array:
    """Beale's function on 2-D points; global minimum 0 at ``(3, 0.5)``.

    ``(1.5 - x + xy)² + (2.25 - x + xy²)² + (2.625 - x + xy³)²``: flat plateaus and sharp
    ridges near the corners of ``[-4.5, 4.5]²``.

    Args:
      x: a point of shape ``(2,)``.

    Returns:
      A scalar.

    >>> float(beale(jnp.array([3.0, 0.5])))
    0.0
    """
    x = _point(x, "beale", dim=2)
    u, v = x[0], x[1]
    return (
        jnp.square(1.5 - u + u * v)
        + jnp.square(2.25 - u + u * v**2)
        + jnp.square(2.625 - u + u * v**3)
    )


def rastrigin(x: jax.Array, A: float = 10.0) -> jax.Array:
    """The Rastrigin function ``A n + sum_i (x[i]² - A cos(2π x[i]))``.

    Highly multi-modal (a local minimum near every integer point); the global minimum is 0 at
    the origin.

    Args:
      x: a point of shape ``(n,)``.
      A: amplitude of the cosine ripples.

    Returns:
      A scalar.

    >>> float(rastrigin(jnp.zeros(3)))
    0.0
    """
    x = _point(x, "rastrigin")
    # A may be an array of another dtype: promotions explicit (num.mul...)
    ripples = num.sub(jnp.square(x), num.mul(A, jnp.cos(2.0 * math.pi * x)))
    return num.add(A * x.shape[0], jnp.sum(ripples))


def ill_conditioned_quadratic(x: jax.Array, condition_number: float = 100.0) -> jax.Array:
    """The diagonal quadratic ``0.5 * sum_i λ_i x[i]²`` with eigenvalues log-spaced in [1, κ].

    ``λ_i = κ^(i / (n - 1))`` for ``i = 0..n-1`` (``λ = 1`` when ``n = 1``), so the Hessian's
    condition number is ``κ``. The minimum is 0 at the origin; gradient descent converges in
    about ``κ`` times more steps than on a well-conditioned bowl.

    Args:
      x: a point of shape ``(n,)``.
      condition_number: κ >= 1 (a float or an array, possibly traced).

    Returns:
      A scalar.

    >>> round(float(ill_conditioned_quadratic(jnp.ones(2), condition_number=100.0)), 4)
    50.5
    """
    check_scalar("condition_number", condition_number, low=1.0)
    x = _point(x, "ill_conditioned_quadratic")
    exponents = jnp.linspace(0.0, 1.0, x.shape[0]) if x.shape[0] > 1 else jnp.zeros(1)
    eigenvalues = jnp.asarray(condition_number, x.dtype) ** exponents.astype(x.dtype)
    return 0.5 * jnp.sum(eigenvalues * jnp.square(x))


class TestFunction(NamedTuple):
    """A classic test function with its standard start and known minimisers.

    Attributes:
      name: the key in :data:`TEST_FUNCTIONS`.
      fn: ``fn(x) -> scalar`` for ``x`` of shape ``x0.shape``.
      x0: the customary starting point (float32 NumPy array).
      minima: every global minimiser (float32 NumPy arrays).
      min_value: the global minimum value.
    """

    __test__ = False  # not a pytest test class

    name: str
    fn: Callable[[jax.Array], jax.Array]
    x0: np.ndarray
    minima: tuple[np.ndarray, ...]
    min_value: float


def _f32(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


TEST_FUNCTIONS: dict[str, TestFunction] = {
    t.name: t
    for t in (
        TestFunction("rosenbrock", rosenbrock, _f32(-1.2, 1.0), (_f32(1.0, 1.0),), 0.0),
        TestFunction(
            "himmelblau",
            himmelblau,
            _f32(0.0, 0.0),
            (
                _f32(3.0, 2.0),
                _f32(-2.805118086952745, 3.131312518250573),
                _f32(-3.779310253377747, -3.283185991286169),
                _f32(3.5844283403304917, -1.8481265269644034),
            ),
            0.0,
        ),
        TestFunction("beale", beale, _f32(1.0, 1.0), (_f32(3.0, 0.5),), 0.0),
        TestFunction("rastrigin", rastrigin, _f32(2.2, -1.7), (_f32(0.0, 0.0),), 0.0),
        TestFunction(
            "ill_conditioned_quadratic",
            functools.partial(ill_conditioned_quadratic, condition_number=100.0),
            _f32(1.0, 1.0),
            (_f32(0.0, 0.0),),
            0.0,
        ),
    )
}
"""Test functions by name (2-D): Rosenbrock from ``(-1.2, 1)``, Himmelblau from the origin
(four minima), Beale from ``(1, 1)``, Rastrigin from ``(2.2, -1.7)`` and the quadratic with
κ = 100 from ``(1, 1)``."""


class Problem(NamedTuple):
    """A ready-made learning problem.

    Attributes:
      name: the key given to :func:`get_problem`.
      description: one line for people.
      init_params: ``init_params(key) -> params``.
      loss_fn: ``loss_fn(params, (x, y)) -> scalar``, the training objective (jit-compiled).
      accuracy_fn: ``accuracy_fn(params, (x, y)) -> scalar`` for classifiers (jit-compiled),
        else ``None``.
      train: ``(x, y)`` training data (JAX arrays).
      test: ``(x, y)`` held-out data, or ``None``.
      default_learning_rate: a learning rate that trains well with plain SGD at
        ``default_batch_size``.
      default_epochs: epochs that reach a good model with those settings.
      default_batch_size: the mini-batch size the defaults were chosen for.
    """

    name: str
    description: str
    init_params: Callable[[jax.Array], Params]
    loss_fn: Callable[[Params, tuple], jax.Array]
    accuracy_fn: Callable[[Params, tuple], jax.Array] | None
    train: tuple
    test: tuple | None
    default_learning_rate: float
    default_epochs: int
    default_batch_size: int = 32


def _digits_mlp(seed: int) -> Problem:
    split = _data.load_digits(seed=seed)
    model = _models.mlp([64, 64, 10], "relu")
    return Problem(
        name="digits-mlp",
        description="UCI handwritten digits (8x8, standardised): MLP 64-64-10 with ReLU, "
        "softmax cross-entropy.",
        init_params=model.init,
        loss_fn=jax.jit(_losses.supervised_loss(model.apply, "softmax_cross_entropy")),
        accuracy_fn=jax.jit(_losses.supervised_accuracy(model.apply)),
        train=split.train,
        test=split.test,
        default_learning_rate=0.1,
        default_epochs=20,
        default_batch_size=32,
    )


def _digits_softmax(seed: int) -> Problem:
    split = _data.load_digits(seed=seed)
    model = _models.logistic_regression(64, _data.DIGITS_NUM_CLASSES)
    return Problem(
        name="digits-softmax",
        description="UCI handwritten digits (8x8, standardised): softmax regression, "
        "cross-entropy (convex).",
        init_params=model.init,
        loss_fn=jax.jit(_losses.supervised_loss(model.apply, "softmax_cross_entropy")),
        accuracy_fn=jax.jit(_losses.supervised_accuracy(model.apply)),
        train=split.train,
        test=split.test,
        default_learning_rate=0.1,
        default_epochs=20,
        default_batch_size=32,
    )


def _linear_regression(seed: int) -> Problem:
    x, y, _, _ = _data.make_linear_regression(jax.random.PRNGKey(seed), n=320, d=5, noise=0.1)
    split = _data.train_test_split(x, y, 0.2, seed)
    model = _models.linear_regression(5)
    return Problem(
        name="linear-regression",
        description="Synthetic linear regression (256 train / 64 test examples, 5 features, "
        "noise 0.1): MSE.",
        init_params=model.init,
        loss_fn=jax.jit(_losses.supervised_loss(model.apply, "mse")),
        accuracy_fn=None,
        train=split.train,
        test=split.test,
        default_learning_rate=0.1,
        default_epochs=20,
        default_batch_size=32,
    )


def _classification(seed: int) -> Problem:
    x, y = _data.make_classification(jax.random.PRNGKey(seed), n=512, d=2, num_classes=2)
    split = _data.train_test_split(x, y, 0.2, seed, stratify=True)
    model = _models.logistic_regression(2)
    return Problem(
        name="classification",
        description="Synthetic linearly separable 2-class data in 2-D (margin 1): logistic "
        "regression, binary cross-entropy.",
        init_params=model.init,
        loss_fn=jax.jit(_losses.supervised_loss(model.apply, "sigmoid_binary_cross_entropy")),
        accuracy_fn=jax.jit(_losses.supervised_accuracy(model.apply)),
        train=split.train,
        test=split.test,
        default_learning_rate=0.3,
        default_epochs=20,
        default_batch_size=32,
    )


_PROBLEMS: dict[str, Callable[[int], Problem]] = {
    "digits-mlp": _digits_mlp,
    "digits-softmax": _digits_softmax,
    "linear-regression": _linear_regression,
    "classification": _classification,
}

PROBLEM_NAMES: tuple[str, ...] = tuple(_PROBLEMS)
"""The names :func:`get_problem` accepts; ``"digits-mlp"`` (the first) is the CLI's default."""


def get_problem(name: str, *, seed: int = 0) -> Problem:
    """Build the learning problem ``name``.

    Problems (see :data:`PROBLEM_NAMES`):

    - ``"digits-mlp"``: MLP 64-64-10 (ReLU) on the standardised UCI digits, softmax
      cross-entropy; 1438 train / 359 test images.
    - ``"digits-softmax"``: softmax regression on the same data (convex).
    - ``"linear-regression"``: synthetic ``y = x w + b + 0.1 ε`` with 5 features, MSE;
      256 train / 64 test examples (the optimum is :func:`gdopt.data.least_squares`).
    - ``"classification"``: synthetic, linearly separable 2-class points in 2-D
      (:func:`gdopt.data.make_classification`), logistic regression; 410 train / 102 test.

    Args:
      name: one of :data:`PROBLEM_NAMES`.
      seed: seeds the data split and the synthetic data (not the parameter init, which takes
        its own key).

    Returns:
      A :class:`Problem`.

    Raises:
      ValueError: unknown ``name``.

    >>> problem = get_problem("digits-softmax")
    >>> params = problem.init_params(jax.random.PRNGKey(0))
    >>> problem.train[0].shape, problem.test[0].shape
    ((1438, 64), (359, 64))
    >>> bool(jnp.isfinite(problem.loss_fn(params, problem.train)))
    True
    """
    if name not in _PROBLEMS:
        raise ValueError(f"Unknown problem {name!r}; accepted names: {', '.join(PROBLEM_NAMES)}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}.")
    return _PROBLEMS[name](int(seed))
