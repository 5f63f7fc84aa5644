"""Tests for gdopt.data: the bundled digits, splits, standardisation, synthetic data."""

from __future__ import annotations

import hashlib
import importlib.resources
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdopt import data

KEY = jax.random.PRNGKey(0)


def _digits_bytes() -> bytes:
    return importlib.resources.files("gdopt.datasets").joinpath("digits.npz").read_bytes()


def test_bundled_file_sha_matches_readme():
    readme = importlib.resources.files("gdopt.datasets").joinpath("README.md").read_text("utf-8")
    recorded = re.findall(r"\b[0-9a-f]{64}\b", readme)
    assert len(recorded) == 1, "README.md must state exactly one SHA-256"
    assert hashlib.sha256(_digits_bytes()).hexdigest() == recorded[0]
    assert f"{len(_digits_bytes()):,} bytes" in readme


def test_bundled_arrays():
    images, labels = data._digits_arrays()
    assert images.shape == (1797, 64) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert images.max() == 16 and images.min() == 0
    np.testing.assert_array_equal(np.unique(labels), np.arange(10))


def test_bundled_arrays_equal_scikit_learn_copy():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    ref = sklearn_datasets.load_digits()
    images, labels = data._digits_arrays()
    np.testing.assert_array_equal(images, ref.data)
    np.testing.assert_array_equal(labels, ref.target)


def test_load_digits_shapes_and_classes():
    split = data.load_digits()
    (xtr, ytr), (xte, yte) = split
    assert xtr.shape[0] + xte.shape[0] == 1797
    assert xtr.shape[1] == xte.shape[1] == 64
    assert xte.shape[0] == round(0.2 * 1797)
    assert xtr.dtype == xte.dtype == jnp.float32 and ytr.dtype == yte.dtype == jnp.int32
    for y in (ytr, yte):
        np.testing.assert_array_equal(np.unique(np.asarray(y)), np.arange(data.DIGITS_NUM_CLASSES))
    # stratified: every class keeps about the same share in the test set
    counts_all = np.bincount(data._digits_arrays()[1])
    counts_test = np.bincount(np.asarray(yte), minlength=10)
    np.testing.assert_array_equal(counts_test, np.round(0.2 * counts_all).astype(int))


def test_load_digits_is_a_partition_of_the_bundled_data():
    split = data.load_digits(standardize=False)
    images, labels = data._digits_arrays()
    both_x = np.concatenate([np.asarray(split.train[0]), np.asarray(split.test[0])])
    both_y = np.concatenate([np.asarray(split.train[1]), np.asarray(split.test[1])])
    # the same multiset of (image, label) rows: sort rows lexicographically and compare
    rows = np.concatenate([both_x, both_y[:, None]], axis=1)
    ref = np.concatenate([images, labels[:, None]], axis=1).astype(np.float32)
    np.testing.assert_array_equal(np.unique(rows, axis=0), np.unique(ref, axis=0))
    assert rows.shape == ref.shape


def test_load_digits_is_deterministic_and_seeded():
    a, b = data.load_digits(seed=3), data.load_digits(seed=3)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    c = data.load_digits(seed=4)
    assert not np.array_equal(np.asarray(a.test[1]), np.asarray(c.test[1]))
    assert data.load_digits(test_fraction=0.5).test[0].shape[0] == 898  # per-class rounding


def test_load_digits_standardises_with_train_statistics():
    split = data.load_digits()
    xtr, xte = np.asarray(split.train[0], np.float64), np.asarray(split.test[0], np.float64)
    np.testing.assert_allclose(xtr.mean(axis=0), 0.0, atol=1e-5)
    raw = data.load_digits(standardize=False)
    raw_tr, raw_te = np.asarray(raw.train[0], np.float64), np.asarray(raw.test[0], np.float64)
    std = raw_tr.std(axis=0)
    varying = std > 0
    assert (~varying).any(), "digits have pixels that are always 0 on the training set"
    np.testing.assert_allclose(xtr.std(axis=0)[varying], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(xtr[:, ~varying], 0.0)
    np.testing.assert_array_equal(xte[:, ~varying], 0.0)
    # the test set uses the TRAIN mean and std (so its mean is not exactly 0)
    mean = raw_tr.mean(axis=0)
    expected = (raw_te[:, varying] - mean[varying]) / std[varying]
    np.testing.assert_allclose(xte[:, varying], expected, rtol=1e-5, atol=1e-5)
    assert np.abs(xte.mean(axis=0)).max() > 1e-3


def test_load_digits_raw_values_and_dtype():
    split = data.load_digits(standardize=False, dtype=jnp.bfloat16)
    x = np.asarray(split.train[0], np.float32)
    assert split.train[0].dtype == jnp.bfloat16
    assert x.min() == 0 and x.max() == 16 and np.array_equal(x, np.round(x))
    with pytest.raises(TypeError, match="floating-point dtype"):
        data.load_digits(dtype=jnp.int32)
    with pytest.raises(ValueError, match=r"test_fraction must be a finite number in \(0, 1\)"):
        data.load_digits(test_fraction=1.0)


def test_check_dataset_errors():
    data.check_dataset(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="got 5 in x and 4 in y"):
        data.check_dataset(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        data.check_dataset(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="leading example axis"):
        data.check_dataset(np.float32(1.0), np.zeros(1))


def test_train_test_split_partitions():
    x, y = np.arange(50) * 10, np.arange(50) % 3
    split = data.train_test_split(x, y, 0.3, seed=1)
    (xtr, ytr), (xte, yte) = split
    assert len(xte) == 15 and len(xtr) == 35
    np.testing.assert_array_equal(np.sort(np.concatenate([xtr, xte])), x)
    np.testing.assert_array_equal(ytr, (xtr // 10) % 3)
    again = data.train_test_split(x, y, 0.3, seed=1)
    jax.tree.map(np.testing.assert_array_equal, split, again)
    # works with JAX arrays too
    jsplit = data.train_test_split(jnp.asarray(x), jnp.asarray(y), 0.3, seed=1)
    np.testing.assert_array_equal(jsplit.test[0], xte)
    strat = data.train_test_split(x, y, 0.2, seed=0, stratify=True)
    assert np.bincount(strat.test[1]).tolist() == [3, 3, 3]


def test_train_test_split_errors():
    x, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match="got 4 in x and 3 in y"):
        data.train_test_split(x, np.zeros(3))
    with pytest.raises(ValueError, match=r"test_fraction must be a finite number in \(0, 1\)"):
        data.train_test_split(x, y, 0.0)
    with pytest.raises(ValueError, match="leaves 4 for training and 0 for testing"):
        data.train_test_split(x, y, 0.1)
    with pytest.raises(ValueError, match="1-D class labels"):
        data.train_test_split(x, np.zeros((4, 2)), stratify=True)


def test_standardize_function():
    rng = np.random.RandomState(0)
    tr = rng.normal(3.0, 2.0, size=(20, 3)).astype(np.float32)
    tr[:, 2] = 5.0
    va, te = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    tr2, va2, te2, (mean, std) = data.standardize(tr, va, te)
    m, s = tr.astype(np.float64).mean(0), tr.astype(np.float64).std(0)
    np.testing.assert_allclose(mean, m, rtol=1e-5)
    np.testing.assert_allclose(std, s, atol=1e-5)
    np.testing.assert_allclose(tr2[:, :2], (tr[:, :2] - m[:2]) / s[:2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(te2[:, :2], (te[:, :2] - m[:2]) / s[:2], rtol=1e-4, atol=1e-5)
    for a in (tr2, va2, te2):
        np.testing.assert_array_equal(a[:, 2], 0.0)
    assert va2.shape == (4, 3) and te2.dtype == jnp.float32
    xi, (_, _) = data.standardize(np.array([[0, 2], [2, 2]], np.uint8))
    assert xi.dtype == jnp.float32 and np.asarray(xi).tolist() == [[-1.0, 0.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match=r"others\[0\] must have 3 features"):
        data.standardize(tr, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"train_x must have shape \(n >= 1, features\)"):
        data.standardize(np.zeros(3))


def test_make_linear_regression_and_least_squares():
    x, y, w, b = data.make_linear_regression(KEY, n=200, d=4, noise=0.05)
    assert x.shape == (200, 4) and y.shape == (200,) and w.shape == (4,) and b.shape == ()
    x0, y0, w0, b0 = data.make_linear_regression(KEY, n=200, d=4, noise=0.0)
    np.testing.assert_allclose(y0, np.asarray(x0) @ np.asarray(w0) + float(b0), atol=1e-5)
    what, bhat = data.least_squares(x, y)
    assert what.shape == (4,) and bhat.shape == () and what.dtype == np.float64
    # the reference: NumPy's lstsq on the design matrix with a column of ones
    xd = np.concatenate([np.asarray(x, np.float64), np.ones((200, 1))], axis=1)
    ref = np.linalg.lstsq(xd, np.asarray(y, np.float64), rcond=None)[0]
    np.testing.assert_allclose(what, ref[:4], rtol=1e-10)
    np.testing.assert_allclose(bhat, ref[4], rtol=1e-10)
    # optimality: the normal equations hold (the residual is orthogonal to the design)
    resid = xd @ np.append(what, bhat) - np.asarray(y, np.float64)
    np.testing.assert_allclose(xd.T @ resid, 0.0, atol=1e-9)
    # and the fit recovers the generating parameters up to the noise level
    np.testing.assert_allclose(what, w, atol=0.02)
    np.testing.assert_allclose(bhat, b, atol=0.02)


def test_synthetic_data_errors():
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        data.make_linear_regression(KEY, n=0)
    with pytest.raises(ValueError, match=r"noise must be a finite number in \[0, inf\)"):
        data.make_linear_regression(KEY, noise=-1.0)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
        data.make_classification(KEY, num_classes=1)
    with pytest.raises(ValueError, match=r"margin must be a finite number in \(0, inf\)"):
        data.make_classification(KEY, margin=0.0)
    with pytest.raises(ValueError, match="n must be an int >= 3, got 2"):
        data.make_classification(KEY, n=2, num_classes=3)
    with pytest.raises(ValueError, match=r"shape \(n, d\).*\(3,\)"):
        data.least_squares(np.zeros(3), np.zeros(3))


def _separating_hyperplanes_exist(x, y, num_classes):
    """LP feasibility: W, b with (w_y - w_c)·x + b_y - b_c >= 1 for every example and c != y."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    n, d = x.shape
    nv = num_classes * (d + 1)
    rows = []
    for i in range(n):
        for c in range(num_classes):
            if c == y[i]:
                continue
            row = np.zeros(nv)
            row[y[i] * (d + 1) : y[i] * (d + 1) + d] -= x[i]
            row[y[i] * (d + 1) + d] -= 1.0
            row[c * (d + 1) : c * (d + 1) + d] += x[i]
            row[c * (d + 1) + d] += 1.0
            rows.append(row)
    res = scipy_optimize.linprog(
        np.zeros(nv), A_ub=np.array(rows), b_ub=-np.ones(len(rows)), bounds=(None, None)
    )
    return res.status == 0


@pytest.mark.parametrize(("d", "num_classes", "margin"), [(2, 2, 1.0), (3, 4, 0.5), (1, 3, 0.2)])
def test_make_classification_is_separable(d, num_classes, margin):
    x, y = data.make_classification(KEY, n=240, d=d, num_classes=num_classes, margin=margin)
    x, y = np.asarray(x, np.float64), np.asarray(y)
    assert x.shape == (240, d) and y.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(y), [240 // num_classes] * num_classes)
    assert _separating_hyperplanes_exist(x, y, num_classes)
    # the classes are at least `margin` apart
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    assert dist[y[:, None] != y[None]].min() >= margin * (1 - 1e-5)


def test_make_classification_binary_known_hyperplane():
    """With margin 1 the bisector of the two class means separates the classes: every point is
    within 1 of its center, centers are 3 apart, and the means are close to the centers."""
    x, y = data.make_classification(KEY, n=512, d=2, margin=1.0)
    x, y = np.asarray(x, np.float64), np.asarray(y)
    m0, m1 = x[y == 0].mean(0), x[y == 1].mean(0)
    w = m1 - m0
    b = -0.5 * (m1 @ m1 - m0 @ m0)
    np.testing.assert_array_equal((x @ w + b > 0).astype(int), y)
    xa, ya = data.make_classification(KEY, n=512)
    np.testing.assert_array_equal(xa, x.astype(np.float32))
    np.testing.assert_array_equal(ya, y)
