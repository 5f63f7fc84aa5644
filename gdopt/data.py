"""Datasets: the bundled UCI handwritten digits, synthetic problems and preprocessing.

- :func:`load_digits` reads the 1797 8x8 digit images shipped in ``gdopt/datasets/digits.npz``
  (UCI "Optical Recognition of Handwritten Digits", CC BY 4.0; see ``datasets/README.md``),
  splits them with a seeded, stratified permutation and standardises them with the training
  statistics.
- :func:`make_linear_regression` / :func:`least_squares`: a synthetic regression problem and
  its closed-form optimum.
- :func:`make_classification`: synthetic classes that are linearly separable by construction.
- :func:`train_test_split`, :func:`standardize`, :func:`check_dataset`: the helpers they use.

Splits use NumPy's ``RandomState(seed)`` so they are the same on every platform and backend;
synthetic data are drawn from a JAX PRNG key.
"""

from __future__ import annotations

import functools
import importlib.resources
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics as num
from gdopt._validation import check_nonnegative, check_scalar

__all__ = [
    "DataSplit",
    "DIGITS_NUM_CLASSES",
    "load_digits",
    "train_test_split",
    "standardize",
    "make_linear_regression",
    "least_squares",
    "make_classification",
    "check_dataset",
]

DIGITS_NUM_CLASSES = 10
"""Number of classes in the digits dataset (the digits 0..9)."""


class DataSplit(NamedTuple):
    """A train/test split.

    Attributes:
      train: ``(x, y)`` for training.
      test: ``(x, y)`` held out for evaluation.
    """

    train: tuple[Any, Any]
    test: tuple[Any, Any]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}."
        )
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}.")
    return int(value)


def check_dataset(x: Any, y: Any) -> None:
    """Raise ``ValueError`` unless ``x`` and ``y`` are non-empty with the same length.

    Args:
      x: inputs, first axis = examples.
      y: targets, first axis = examples.

    >>> check_dataset(np.zeros((3, 2)), np.zeros(2))
    Traceback (most recent call last):
    ...
    ValueError: x and y must have the same number of examples (first axis), got 3 in x and 2 in y.
    """
    sx, sy = np.shape(x), np.shape(y)
    if len(sx) == 0 or len(sy) == 0:
        raise ValueError(
            f"x and y must have a leading example axis, got x shape {sx} and y shape {sy}."
        )
    if sx[0] != sy[0]:
        raise ValueError(
            "x and y must have the same number of examples (first axis), got "
            f"{sx[0]} in x and {sy[0]} in y."
        )
    if sx[0] == 0:
        raise ValueError(f"the dataset is empty (x shape {sx}, y shape {sy}); give >= 1 example.")


def _check_test_fraction(test_fraction: Any) -> float:
    check_scalar("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    return float(test_fraction)


def train_test_split(
    x: Any, y: Any, test_fraction: float = 0.2, seed: int = 0, *, stratify: bool = False
) -> DataSplit:
    """Split ``(x, y)`` into train and test parts with a seeded random permutation.

    The permutation comes from ``numpy.random.RandomState(seed)``, so the split is the same on
    every run and backend. Plain: the first ``round(test_fraction * n)`` permuted examples are
    the test set. Stratified (``y`` holds class labels): within each class, the first
    ``round(test_fraction * n_class)`` examples in permutation order go to the test set, so
    both parts keep the class proportions. Both parts stay in permutation (shuffled) order.

    Args:
      x: inputs (NumPy or JAX array), first axis = examples.
      y: targets with the same first axis.
      test_fraction: share of examples held out, in (0, 1).
      seed: seed of the permutation.
      stratify: split each class separately (``y`` must be 1-D class labels).

    Returns:
      A :class:`DataSplit` of arrays of the inputs' types.

    Raises:
      ValueError: bad lengths, a fraction outside (0, 1), or a split leaving one side empty.

    >>> split = train_test_split(np.arange(10), np.arange(10) % 2, 0.2, seed=0)
    >>> len(split.train[0]), len(split.test[0])
    (8, 2)
    """
    check_dataset(x, y)
    frac = _check_test_fraction(test_fraction)
    n = np.shape(x)[0]
    perm = np.random.RandomState(seed).permutation(n)
    if stratify:
        labels = np.asarray(y)
        if labels.ndim != 1:
            raise ValueError(f"stratify=True needs 1-D class labels y, got y shape {labels.shape}.")
        labels = labels[perm]
        is_test = np.zeros(n, bool)
        for c in np.unique(labels):
            where = np.flatnonzero(labels == c)
            is_test[where[: int(round(frac * where.size))]] = True
    else:
        is_test = np.arange(n) < int(round(frac * n))
    n_test = int(is_test.sum())
    if n_test == 0 or n_test == n:
        raise ValueError(
            f"test_fraction={frac} of {n} examples leaves {n - n_test} for training and "
            f"{n_test} for testing; both must be >= 1."
        )
    test_idx, train_idx = perm[is_test], perm[~is_test]
    return DataSplit((x[train_idx], y[train_idx]), (x[test_idx], y[test_idx]))


def standardize(train_x: Any, *others: Any) -> tuple:
    """Scale features to zero mean and unit variance using the TRAINING statistics only.

    ``x' = (x - mean) / std`` per feature (last axis), with ``mean`` and ``std`` (population
    standard deviation) computed on ``train_x`` over its leading axes. A feature constant on
    the training set (``std == 0``) is mapped to 0 in every array: it carries no information
    the model could have learned from.

    Args:
      train_x: training inputs, shape ``(n, features)``.
      *others: more arrays (validation, test) with the same feature axis.

    Returns:
      ``(train_x', *others', (mean, std))``; arrays are float (integer inputs become float32),
      statistics are computed in at least float32.

    >>> xtr, xte, (mean, std) = standardize(jnp.array([[1.0, 5.0], [3.0, 5.0]]),
    ...                                     jnp.array([[2.0, 7.0]]))
    >>> xtr.tolist(), xte.tolist()
    ([[-1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0]])
    """
    train_x = jnp.asarray(train_x)
    if train_x.ndim < 2 or train_x.shape[0] == 0:
        raise ValueError(f"train_x must have shape (n >= 1, features), got shape {train_x.shape}.")
    arrays = [train_x] + [jnp.asarray(o) for o in others]
    for i, a in enumerate(arrays[1:]):
        if a.ndim < 1 or a.shape[-1] != train_x.shape[-1]:
            raise ValueError(
                f"others[{i}] must have {train_x.shape[-1]} features like train_x (shape "
                f"{train_x.shape}), got shape {a.shape}."
            )
    out_dtype = train_x.dtype if jnp.issubdtype(train_x.dtype, jnp.floating) else jnp.float32
    calc_dtype = num.promote_types(out_dtype, jnp.float32)
    t = train_x.astype(calc_dtype)
    axes = tuple(range(t.ndim - 1))
    mean = jnp.mean(t, axis=axes)
    std = jnp.std(t, axis=axes)
    inv = jnp.where(std > 0, 1.0 / jnp.where(std > 0, std, 1.0), 0.0)
    scaled = [((a.astype(calc_dtype) - mean) * inv).astype(out_dtype) for a in arrays]
    return (*scaled, (mean, std))


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    resource = importlib.resources.files("gdopt.datasets").joinpath("digits.npz")
    with resource.open("rb") as fh, np.load(fh) as npz:
        images, labels = np.array(npz["images"]), np.array(npz["labels"])
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits(
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    dtype: Any = jnp.float32,
) -> DataSplit:
    """The bundled UCI handwritten digits (1797 8x8 images, 10 classes), split and scaled.

    The archive ``gdopt/datasets/digits.npz`` is read with :mod:`importlib.resources` (so it
    works from an installed wheel) and cached. The split is stratified by class with a
    ``RandomState(seed)`` permutation (see :func:`train_test_split`); standardisation uses the
    training statistics only (pixels constant on the training set become 0).

    Args:
      test_fraction: share held out for testing, in (0, 1).
      seed: seed of the split.
      standardize: scale pixels to zero mean and unit variance; if False, pixels keep their
        raw counts 0..16 (as ``dtype``).
      dtype: float dtype of the inputs.

    Returns:
      A :class:`DataSplit`; ``x`` has shape ``(n, 64)`` and dtype ``dtype``, ``y`` int32
      labels 0..9 of shape ``(n,)``.

    >>> split = load_digits()
    >>> split.train[0].shape, split.test[0].shape, split.train[1].dtype
    ((1438, 64), (359, 64), dtype('int32'))
    """
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}.")
    images, labels = _digits_arrays()
    split = train_test_split(images, labels, test_fraction, seed, stratify=True)
    (xtr, ytr), (xte, yte) = split
    xtr, xte = np.asarray(xtr, np.float64), np.asarray(xte, np.float64)
    if standardize:
        mean, std = xtr.mean(axis=0), xtr.std(axis=0)
        inv = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
        xtr, xte = (xtr - mean) * inv, (xte - mean) * inv
    return DataSplit(
        (jnp.asarray(xtr, dtype), jnp.asarray(ytr, jnp.int32)),
        (jnp.asarray(xte, dtype), jnp.asarray(yte, jnp.int32)),
    )


def make_linear_regression(
    key: jax.Array, n: int = 256, d: int = 5, noise: float = 0.1
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A synthetic linear regression problem ``y = x @ w_true + b_true + noise * ε``.

    ``x``, ``w_true``, ``b_true`` and ``ε`` are standard normal draws from ``key``.

    Args:
      key: a JAX PRNG key.
      n: number of examples (>= 1).
      d: number of features (>= 1).
      noise: standard deviation of the additive Gaussian noise (>= 0).

    Returns:
      ``(x (n, d), y (n,), w_true (d,), b_true ())``, all float32.

    >>> x, y, w, b = make_linear_regression(jax.random.PRNGKey(0), n=8, d=3, noise=0.0)
    >>> bool(jnp.allclose(y, x @ w + b))
    True
    """
    n, d = _check_int("n", n, 1), _check_int("d", d, 1)
    check_nonnegative("noise", noise)
    return _linear_regression_data(key, noise, n, d)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _linear_regression_data(key: jax.Array, noise: Any, n: int, d: int) -> tuple:
    kx, kw, kb, ke = jax.random.split(key, 4)
    x = jax.random.normal(kx, (n, d), jnp.float32)
    w = jax.random.normal(kw, (d,), jnp.float32)
    b = jax.random.normal(kb, (), jnp.float32)
    # noise may be an array of another dtype: the promotion is explicit (num.mul, num.add)
    y = num.add(x @ w + b, num.mul(noise, jax.random.normal(ke, (n,), jnp.float32)))
    return x, y, w, b


def least_squares(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """The closed-form least-squares fit with intercept, ``argmin ||x w + b - y||²``.

    Solved with ``numpy.linalg.lstsq`` on ``[x, 1]`` in float64 (the minimum-norm solution if
    the problem is rank deficient).

    Args:
      x: inputs of shape ``(n, d)``.
      y: targets of shape ``(n,)``.

    Returns:
      ``(w, b)``: float64 NumPy arrays of shapes ``(d,)`` and ``()``.

    >>> w, b = least_squares(np.array([[0.0], [1.0], [2.0]]), np.array([1.0, 3.0, 5.0]))
    >>> np.round(w, 6).tolist(), round(float(b), 6)
    ([2.0], 1.0)
    """
    check_dataset(x, y)
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x64.ndim != 2 or y64.ndim != 1:
        raise ValueError(
            f"least_squares needs x of shape (n, d) and y of shape (n,), got {x64.shape} and "
            f"{y64.shape}."
        )
    design = np.concatenate([x64, np.ones((x64.shape[0], 1))], axis=1)
    coef = np.linalg.lstsq(design, y64, rcond=None)[0]
    return coef[:-1], np.asarray(coef[-1])


def make_classification(
    key: jax.Array, n: int = 512, d: int = 2, num_classes: int = 2, margin: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Synthetic classes that are linearly separable by construction.

    Construction: ``num_classes`` centers ``c_k`` are drawn standard normal, centred and scaled
    so that the closest two are exactly ``2 + margin`` apart. Each example gets a class (the
    classes are balanced, in random order) and lies uniformly in the unit ball around its
    class's center. Every example of class ``a`` is then at distance ``>= margin / 2`` from the
    bisecting hyperplane between ``c_a`` and any other ``c_b``, so the linear classifier
    ``argmax_k (c_k · x - ||c_k||² / 2)`` (nearest center) labels every example correctly, and
    two examples of different classes are at least ``margin`` apart.

    Args:
      key: a JAX PRNG key.
      n: number of examples (>= num_classes).
      d: input dimension (>= 1).
      num_classes: number of classes (>= 2).
      margin: the gap between classes (> 0).

    Returns:
      ``(x (n, d) float32, y (n,) int32)`` with labels ``0..num_classes-1``.

    >>> x, y = make_classification(jax.random.PRNGKey(0), n=10)
    >>> x.shape, y.shape, sorted(set(y.tolist()))
    ((10, 2), (10,), [0, 1])
    """
    d = _check_int("d", d, 1)
    num_classes = _check_int("num_classes", num_classes, 2)
    n = _check_int("n", n, num_classes)
    check_scalar("margin", margin, low=0.0, low_open=True)
    return _classification_data(key, margin, n, d, num_classes)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _classification_data(key: jax.Array, margin: Any, n: int, d: int, num_classes: int) -> tuple:
    kc, ky, kd, kr = jax.random.split(key, 4)
    centers = jax.random.normal(kc, (num_classes, d), jnp.float32)
    centers = centers - jnp.mean(centers, axis=0)
    dist = jnp.linalg.norm(centers[:, None, :] - centers[None, :, :], axis=-1)
    dmin = jnp.min(jnp.where(jnp.eye(num_classes, dtype=bool), jnp.inf, dist))
    centers = num.mul(centers, num.div(2.0 + margin, dmin))  # margin may be another dtype
    y = jax.random.permutation(ky, jnp.arange(n, dtype=jnp.int32) % num_classes)
    direction = jax.random.normal(kd, (n, d), jnp.float32)
    direction = direction / jnp.linalg.norm(direction, axis=1, keepdims=True)
    radius = jax.random.uniform(kr, (n, 1), jnp.float32) ** (1.0 / d)
    x = num.add(centers[y], direction * radius)
    return x, y
