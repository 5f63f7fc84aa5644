"""Tests for gdopt.losses against hand-computed NumPy values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdopt import losses, models

LOGITS = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [-3.0, 4.0, 1.0], [1.0, 2.0, 3.0]])
INT_LABELS = np.array([0, 2, 1, 0])


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def test_squared_error_and_mse():
    pred, target = np.array([1.0, -2.0, 3.5]), np.array([0.5, 1.0, 3.5])
    np.testing.assert_allclose(losses.squared_error(pred, target), [0.25, 9.0, 0.0])
    np.testing.assert_allclose(losses.mse(pred, target), (0.25 + 9.0) / 3, rtol=1e-6)
    np.testing.assert_allclose(losses.mse(pred.reshape(3, 1), target.reshape(3, 1)), 9.25 / 3)


def test_mse_accepts_integer_targets():
    np.testing.assert_allclose(losses.mse(jnp.array([1.0, 2.0]), jnp.array([0, 4])), 2.5)


def test_l2_penalty():
    params = {"w": jnp.array([[1.0, 2.0], [3.0, -1.0]]), "b": jnp.array([0.5]), "frozen": None}
    expected = 0.5 * (1 + 4 + 9 + 1 + 0.25)
    np.testing.assert_allclose(losses.l2_penalty(params), expected, rtol=1e-6)
    np.testing.assert_allclose(losses.l2_penalty(params, weight=0.01), 0.01 * expected, rtol=1e-6)
    grad = jax.grad(lambda p: losses.l2_penalty(p, 0.3))({"w": jnp.array([1.0, -2.0])})
    np.testing.assert_allclose(grad["w"], [0.3, -0.6], rtol=1e-6)
    with pytest.raises(ValueError, match=r"weight must be a finite number in \[0, inf\)"):
        losses.l2_penalty(params, weight=-1.0)


def test_softmax_cross_entropy_matches_numpy():
    onehot = np.eye(3)[INT_LABELS]
    expected = -np.mean(np.sum(onehot * np_log_softmax(LOGITS), axis=-1))
    got_onehot = losses.softmax_cross_entropy(LOGITS, onehot)
    got_int = losses.softmax_cross_entropy_with_integer_labels(LOGITS, INT_LABELS)
    np.testing.assert_allclose(got_onehot, expected, rtol=1e-6)
    np.testing.assert_allclose(got_int, expected, rtol=1e-6)
    np.testing.assert_allclose(got_int, got_onehot, rtol=1e-6)
    # the uniform row alone costs log(3)
    np.testing.assert_allclose(
        losses.softmax_cross_entropy_with_integer_labels(LOGITS[1:2], INT_LABELS[1:2]),
        np.log(3.0),
        rtol=1e-6,
    )


def test_softmax_cross_entropy_with_probabilities():
    probs = np.array([[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    expected = -np.mean(np.sum(probs * np_log_softmax(LOGITS), axis=-1))
    np.testing.assert_allclose(losses.softmax_cross_entropy(LOGITS, probs), expected, rtol=1e-6)


def test_softmax_cross_entropy_masked_class_is_zero_not_nan():
    logits = jnp.array([[0.0, -jnp.inf, 0.0]])
    value = losses.softmax_cross_entropy(logits, jnp.array([[1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(value, np.log(2.0), rtol=1e-6)


def test_cross_entropies_stable_for_huge_logits():
    logits = jnp.array([[1000.0, 0.0, -1000.0], [1000.0, 999.0, 0.0]])
    labels = jnp.array([1, 1])
    value = losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    expected = np.mean([1000.0, 1.0 + np.log1p(np.exp(-1.0))])
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, jax.nn.one_hot(labels, 3)), expected, rtol=1e-6
    )
    grads = jax.grad(losses.softmax_cross_entropy_with_integer_labels)(logits, labels)
    assert np.all(np.isfinite(grads))
    # binary: z = +-1000 in both directions
    z, y = jnp.array([1000.0, -1000.0, 1000.0, -1000.0]), jnp.array([1, 0, 0, 1])
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(z, y), 500.0, rtol=1e-6)
    assert np.all(np.isfinite(jax.grad(losses.sigmoid_binary_cross_entropy)(z, y)))


def test_sigmoid_binary_cross_entropy_matches_numpy():
    z = np.array([-2.0, -0.5, 0.0, 0.3, 4.0])
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.7])
    p = 1 / (1 + np.exp(-z))
    expected = np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(z, y), expected, rtol=1e-6)
    # integer and bool labels
    yi = np.array([0, 1, 1, 0, 1])
    expected_i = np.mean(-yi * np.log(p) - (1 - yi) * np.log(1 - p))
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(z, yi), expected_i, rtol=1e-6)
    np.testing.assert_allclose(
        losses.sigmoid_binary_cross_entropy(z, yi.astype(bool)), expected_i, rtol=1e-6
    )


def test_low_precision_logits_reduce_in_float32():
    logits = jnp.asarray(LOGITS, jnp.bfloat16)
    value = losses.softmax_cross_entropy_with_integer_labels(logits, INT_LABELS)
    assert value.dtype == jnp.float32
    ref = -np.mean(np_log_softmax(np.asarray(logits, np.float64))[np.arange(4), INT_LABELS])
    np.testing.assert_allclose(value, ref, rtol=1e-6)


def test_accuracy_variants():
    # argmax rows: 0, 0 (tie -> first), 1, 2
    np.testing.assert_allclose(losses.accuracy(LOGITS, np.array([0, 0, 1, 0])), 0.75)
    np.testing.assert_allclose(losses.accuracy(LOGITS, np.eye(3)[[0, 0, 1, 2]]), 1.0)
    np.testing.assert_allclose(losses.accuracy(LOGITS, INT_LABELS), 0.5)
    binary = np.array([-1.0, 0.5, 2.0, -0.1])
    np.testing.assert_allclose(losses.accuracy(binary, np.array([0, 1, 0, 0])), 0.75)
    np.testing.assert_allclose(losses.accuracy(binary, np.array([0.1, 0.9, 0.8, 0.2])), 1.0)
    np.testing.assert_allclose(
        losses.accuracy(binary.reshape(4, 1), np.array([0, 1, 1, 1]).reshape(4, 1)), 0.75
    )
    np.testing.assert_allclose(losses.accuracy(binary.reshape(4, 1), np.array([0, 1, 1, 1])), 0.75)
    assert losses.accuracy(binary, np.array([0, 1, 1, 0])).dtype == jnp.float32


@pytest.mark.parametrize(
    ("fn", "a", "b", "shapes"),
    [
        (losses.squared_error, np.zeros((3, 1)), np.zeros(3), r"\(3, 1\).*\(3,\)"),
        (losses.mse, np.zeros(4), np.zeros(3), r"\(4,\).*\(3,\)"),
        (losses.softmax_cross_entropy, np.zeros((2, 3)), np.zeros((2, 4)), r"\(2, 3\).*\(2, 4\)"),
        (
            losses.softmax_cross_entropy_with_integer_labels,
            np.zeros((2, 3)),
            np.zeros(3, np.int32),
            r"\(2, 3\).*\(3,\)",
        ),
        (losses.sigmoid_binary_cross_entropy, np.zeros(5), np.zeros((5, 1)), r"\(5,\).*\(5, 1\)"),
        (losses.accuracy, np.zeros((2, 3)), np.zeros((2, 2)), r"\(2, 3\).*\(2, 2\)"),
        (losses.accuracy, np.zeros(4), np.zeros(3), r"\(4,\).*\(3,\)"),
    ],
)
def test_shape_mismatch_names_both_shapes(fn, a, b, shapes):
    with pytest.raises(ValueError, match=shapes):
        fn(a, b)


def test_integer_label_errors():
    with pytest.raises(TypeError, match="integer class indices, got dtype float32"):
        losses.softmax_cross_entropy_with_integer_labels(LOGITS, jnp.zeros(4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\] for 3 classes.*\[0, 3\]"):
        losses.softmax_cross_entropy_with_integer_labels(LOGITS, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="class axis"):
        losses.softmax_cross_entropy(jnp.array(1.0), jnp.array(1.0))


def test_supervised_loss_softmax_picks_label_kind():
    model = models.logistic_regression(2, 3)
    params = {"w": jnp.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]), "b": jnp.array([0.0, 0.1, 0.2])}
    x = jnp.array([[1.0, 2.0], [-1.0, 0.5], [0.0, 0.0]])
    y = jnp.array([1, 0, 2])
    logits = np.asarray(x) @ np.asarray(params["w"]) + np.asarray(params["b"])
    expected = -np.mean(np_log_softmax(logits)[np.arange(3), np.asarray(y)])
    loss_fn = jax.jit(losses.supervised_loss(model.apply))
    np.testing.assert_allclose(loss_fn(params, (x, y)), expected, rtol=1e-6)
    np.testing.assert_allclose(loss_fn(params, (x, jax.nn.one_hot(y, 3))), expected, rtol=1e-6)
    acc = losses.supervised_accuracy(model.apply)(params, (x, y))
    np.testing.assert_allclose(acc, np.mean(logits.argmax(-1) == np.asarray(y)))
    with pytest.raises(ValueError, match=r"logits shape \(3, 3\), labels shape \(3, 2\)"):
        loss_fn(params, (x, jnp.zeros((3, 2))))


def test_supervised_loss_mse_l2_and_callable():
    model = models.linear_regression(2)
    params = {"w": jnp.array([1.0, -1.0]), "b": jnp.array(0.5)}
    x, y = jnp.array([[1.0, 2.0], [3.0, 1.0]]), jnp.array([0.0, 2.0])
    pred = np.array([-0.5, 2.5])
    base = np.mean((pred - np.asarray(y)) ** 2)
    penalty = 0.5 * (1 + 1 + 0.25)
    np.testing.assert_allclose(losses.supervised_loss(model.apply, "mse")(params, (x, y)), base)
    np.testing.assert_allclose(
        losses.supervised_loss(model.apply, "mse", l2=0.1)(params, (x, y)),
        base + 0.1 * penalty,
        rtol=1e-6,
    )
    mae = lambda p, t: jnp.mean(jnp.abs(p - t))
    np.testing.assert_allclose(losses.supervised_loss(model.apply, mae)(params, [x, y]), 0.5)
    # l2 may be a traced value (a sweep over regularisation strengths)
    sweep = jax.vmap(
        lambda lam: losses.supervised_loss(model.apply, "mse", l2=lam)(params, (x, y))
    )(jnp.array([0.0, 0.1]))
    np.testing.assert_allclose(sweep, [base, base + 0.1 * penalty], rtol=1e-6)


def test_supervised_loss_binary():
    model = models.logistic_regression(1)
    params = {"w": jnp.array([2.0]), "b": jnp.array(-1.0)}
    x, y = jnp.array([[0.0], [1.0]]), jnp.array([0, 1])
    z = np.array([-1.0, 1.0])
    expected = np.mean(np.log1p(np.exp(-np.where(np.asarray(y) == 1, z, -z))))
    loss_fn = losses.supervised_loss(model.apply, "sigmoid_binary_cross_entropy")
    np.testing.assert_allclose(loss_fn(params, (x, y)), expected, rtol=1e-6)
    np.testing.assert_allclose(losses.supervised_accuracy(model.apply)(params, (x, y)), 1.0)


def test_supervised_loss_errors():
    apply = models.linear_regression(2).apply
    with pytest.raises(ValueError, match="Unknown loss 'xent'.*mse, softmax_cross_entropy"):
        losses.supervised_loss(apply, "xent")
    with pytest.raises(TypeError, match="loss must be a name or a callable"):
        losses.supervised_loss(apply, 3)
    with pytest.raises(ValueError, match=r"l2 must be a finite number in \[0, inf\)"):
        losses.supervised_loss(apply, "mse", l2=-0.1)
    loss_fn = losses.supervised_loss(apply, "mse")
    with pytest.raises(TypeError, match=r"batch must be a pair \(x, y\), got tuple of length 3"):
        loss_fn({"w": jnp.zeros(2), "b": jnp.zeros(())}, (1, 2, 3))
    assert losses.LOSS_NAMES == ("mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy")
