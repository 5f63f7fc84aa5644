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
    got_onehot = losses.softmax_cross_entropy(LOGITS, onehot).mean()
    got_int = losses.softmax_cross_entropy_with_integer_labels(LOGITS, INT_LABELS).mean()
    np.testing.assert_allclose(got_onehot, expected, rtol=1e-6)
    np.testing.assert_allclose(got_int, expected, rtol=1e-6)
    np.testing.assert_allclose(got_int, got_onehot, rtol=1e-6)
    # the uniform row alone costs log(3)
    np.testing.assert_allclose(
        losses.softmax_cross_entropy_with_integer_labels(LOGITS[1:2], INT_LABELS[1:2]),
        [np.log(3.0)],
        rtol=1e-6,
    )


def test_softmax_cross_entropy_with_probabilities():
    probs = np.array([[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    expected = -np.mean(np.sum(probs * np_log_softmax(LOGITS), axis=-1))
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(LOGITS, probs).mean(), expected, rtol=1e-6
    )


def test_softmax_cross_entropy_masked_class_is_zero_not_nan():
    logits = jnp.array([[0.0, -jnp.inf, 0.0]])
    value = losses.softmax_cross_entropy(logits, jnp.array([[1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(value, np.log(2.0), rtol=1e-6)


def test_cross_entropies_stable_for_huge_logits():
    logits = jnp.array([[1000.0, 0.0, -1000.0], [1000.0, 999.0, 0.0]])
    labels = jnp.array([1, 1])
    value = losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    expected = np.array([1000.0, 1.0 + np.log1p(np.exp(-1.0))])
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, jax.nn.one_hot(labels, 3)), expected, rtol=1e-6
    )
    grads = jax.grad(lambda z: losses.softmax_cross_entropy_with_integer_labels(z, labels).sum())(
        logits
    )
    assert np.all(np.isfinite(grads))
    # binary: z = +-1000 in both directions
    z, y = jnp.array([1000.0, -1000.0, 1000.0, -1000.0]), jnp.array([1, 0, 0, 1])
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(z, y), [0, 0, 1000, 1000])
    grad = jax.grad(lambda z: losses.sigmoid_binary_cross_entropy(z, y).sum())(z)
    assert np.all(np.isfinite(grad))


def test_sigmoid_binary_cross_entropy_matches_numpy():
    z = np.array([-2.0, -0.5, 0.0, 0.3, 4.0])
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.7])
    p = 1 / (1 + np.exp(-z))
    expected = -y * np.log(p) - (1 - y) * np.log(1 - p)
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(z, y), expected, rtol=1e-6)
    # integer and bool labels
    yi = np.array([0, 1, 1, 0, 1])
    expected_i = -yi * np.log(p) - (1 - yi) * np.log(1 - p)
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(z, yi), expected_i, rtol=1e-6)
    np.testing.assert_allclose(
        losses.sigmoid_binary_cross_entropy(z, yi.astype(bool)), expected_i, rtol=1e-6
    )


def test_low_precision_logits_reduce_in_float32():
    logits = jnp.asarray(LOGITS, jnp.bfloat16)
    value = losses.softmax_cross_entropy_with_integer_labels(logits, INT_LABELS).mean()
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


# ----------------------------------------------------------------------------- optax's numbers

import optax  # noqa: E402  (the oracle)
from jax.scipy.special import logsumexp  # noqa: E402

from tests.helpers import oracle  # noqa: E402

_K = jax.random.split(jax.random.PRNGKey(0), 8)
_Z = jax.random.normal(_K[0], (4, 5))
_T = jax.random.normal(_K[1], (4, 5))
_P = jax.nn.softmax(jax.random.normal(_K[2], (4, 5)))
_LAB = jnp.array([0, 3, 1, 4])
_OH = jax.nn.one_hot(_LAB, 5)
_B01 = (jax.random.uniform(_K[3], (4, 5)) > 0.5).astype(jnp.float32)
_PM = _B01 * 2 - 1
_MASK = (jax.random.uniform(_K[4], (4, 5)) > 0.2).at[:, 0].set(True)
_SEG = jax.random.normal(_K[5], (2, 3, 4, 3))
_SEGT = jax.nn.one_hot(jax.random.randint(_K[6], (2, 3, 4), 0, 3), 3)
_CTC = (
    jax.random.normal(_K[7], (2, 6, 4)),
    jnp.zeros((2, 6)).at[1, 4:].set(1.0),
    jnp.array([[1, 2, 2], [3, 1, 0]]),
    jnp.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
)

# (case id, optax.losses name, args, kwargs): each compared with optax on the same inputs.
ORACLE_CASES = [
    ("squared_error", "squared_error", (_Z, _T), {}),
    ("squared_error_no_targets", "squared_error", (_Z,), {}),
    ("l2_loss", "l2_loss", (_Z, _T), {}),
    ("huber_loss", "huber_loss", (3 * _Z, _T), {"delta": 0.7}),
    ("log_cosh", "log_cosh", (_Z, _T), {}),
    ("cosine_similarity", "cosine_similarity", (_Z, _T), {}),
    (
        "cosine_similarity_where_eps",
        "cosine_similarity",
        (_Z, _T),
        {"where": _MASK, "epsilon": 0.1},
    ),
    ("cosine_distance_axis0", "cosine_distance", (_Z, _T), {"axis": 0}),
    ("softmax_cross_entropy", "softmax_cross_entropy", (_Z, _P), {}),
    ("softmax_cross_entropy_where", "softmax_cross_entropy", (_Z, _P), {"where": _MASK}),
    ("softmax_cross_entropy_axis0", "softmax_cross_entropy", (_Z, _P), {"axis": 0}),
    ("sce_integer", "softmax_cross_entropy_with_integer_labels", (_Z, _LAB), {}),
    (
        "sce_integer_where",
        "softmax_cross_entropy_with_integer_labels",
        (_Z, _LAB),
        {"where": _MASK},
    ),
    ("sce_integer_axis0", "softmax_cross_entropy_with_integer_labels", (_Z.T, _LAB), {"axis": 0}),
    (
        "sce_integer_two_axes",
        "softmax_cross_entropy_with_integer_labels",
        (_Z.reshape(4, 5, 1), _LAB),
        {"axis": (1, 2)},
    ),
    (
        "safe_softmax_cross_entropy",
        "safe_softmax_cross_entropy",
        (_Z.at[0, 1].set(-jnp.inf), _OH),
        {},
    ),
    ("sigmoid_binary_cross_entropy", "sigmoid_binary_cross_entropy", (_Z, _B01), {}),
    ("sigmoid_focal_loss", "sigmoid_focal_loss", (_Z, _B01), {}),
    ("sigmoid_focal_loss_alpha", "sigmoid_focal_loss", (_Z, _B01), {"alpha": 0.25, "gamma": 1.5}),
    ("poly_loss_cross_entropy", "poly_loss_cross_entropy", (_Z, _P), {}),
    (
        "poly_loss_where",
        "poly_loss_cross_entropy",
        (_Z, _P),
        {"where": _MASK, "epsilon": -0.5},
    ),
    ("hinge_loss", "hinge_loss", (_Z, _PM), {}),
    ("perceptron_loss", "perceptron_loss", (_Z, _PM), {}),
    ("multiclass_hinge_loss", "multiclass_hinge_loss", (_Z, _LAB), {}),
    ("multiclass_perceptron_loss", "multiclass_perceptron_loss", (_Z, _LAB), {}),
    ("sparsemax_loss", "sparsemax_loss", (_Z, _B01.astype(jnp.int32)), {}),
    ("multiclass_sparsemax_loss", "multiclass_sparsemax_loss", (_Z, _LAB), {}),
    ("smooth_labels", "smooth_labels", (_OH, 0.1), {}),
    ("smooth_labels_where", "smooth_labels", (_OH, 0.1), {"where": _MASK}),
    ("kl_divergence", "kl_divergence", (jnp.log(_P), _OH), {}),
    ("kl_divergence_where", "kl_divergence", (jnp.log(_P), jax.nn.softmax(_T)), {"where": _MASK}),
    (
        "kl_divergence_with_log_targets",
        "kl_divergence_with_log_targets",
        (jnp.log(_P), jax.nn.log_softmax(_T)),
        {},
    ),
    ("convex_kl_divergence", "convex_kl_divergence", (jnp.log(_P), jax.nn.softmax(_T)), {}),
    ("generalized_kl_divergence", "generalized_kl_divergence", (_Z, jnp.exp(_T)), {}),
    ("dice_loss", "dice_loss", (_SEG, _SEGT), {}),
    (
        "dice_loss_weighted_tversky",
        "dice_loss",
        (_SEG, _SEGT),
        {"class_weights": jnp.array([1.0, 2.0, 0.5]), "alpha": 0.3, "beta": 0.7},
    ),
    (
        "dice_loss_sum_bg",
        "dice_loss",
        (_SEG, _SEGT),
        {"reduction": "sum", "ignore_background": True},
    ),
    ("dice_loss_none", "dice_loss", (_SEG, _SEGT), {"reduction": "none"}),
    ("dice_loss_one_class", "dice_loss", (_SEG[..., :1], _SEGT[..., :1]), {}),
    ("binary_dice_loss", "binary_dice_loss", (_SEG[..., 0], _SEGT[..., 0]), {}),
    ("ranking_softmax_loss", "ranking_softmax_loss", (_Z, _B01), {}),
    (
        "ranking_softmax_loss_where_weights",
        "ranking_softmax_loss",
        (_Z, _B01),
        {"where": _MASK, "weights": jnp.abs(_T)},
    ),
    (
        "ranking_softmax_loss_none",
        "ranking_softmax_loss",
        (_Z, _B01.at[0].set(0.0)),
        {"reduce_fn": None},
    ),
    ("ntxent", "ntxent", (_Z, jnp.array([0, 0, 1, 1])), {}),
    ("ntxent_temperature", "ntxent", (_Z, jnp.array([0, 1, 0, 1])), {"temperature": 0.5}),
    ("triplet_margin_loss", "triplet_margin_loss", (_Z, _T, _P), {}),
    ("triplet_margin_loss_margin", "triplet_margin_loss", (_Z, _T, _P), {"margin": 3.0}),
    ("ctc_loss", "ctc_loss", _CTC, {}),
    ("ctc_loss_blank_3", "ctc_loss", _CTC, {"blank_id": 3}),
]


@pytest.mark.filterwarnings("ignore:The function convex_kl_divergence is deprecated")
@pytest.mark.parametrize(
    ("case", "name", "args", "kwargs"), ORACLE_CASES, ids=[c[0] for c in ORACLE_CASES]
)
def test_losses_match_optax(case, name, args, kwargs):
    ours = getattr(losses, name)(*args, **kwargs)
    with oracle():
        ref = getattr(optax.losses, name)(*args, **kwargs)
    assert np.shape(ours) == np.shape(ref), (case, np.shape(ours), np.shape(ref))
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=1e-6, err_msg=case)


def test_every_optax_loss_has_a_case():
    covered = {name for _, name, _, _ in ORACLE_CASES}
    covered |= {"make_fenchel_young_loss", "ctc_loss_with_forward_probs"}  # below
    covered |= {"multiclass_generalized_dice_loss"}  # deliberate difference, below
    public = {
        n for n in dir(optax.losses) if not n.startswith("_") and callable(getattr(optax.losses, n))
    }
    assert public <= covered, sorted(public - covered)


def test_fenchel_young_loss_matches_optax_per_row():
    ours = losses.make_fenchel_young_loss(logsumexp)(_Z, _P)
    with oracle():
        ref = optax.losses.make_fenchel_young_loss(logsumexp)(_Z, _P)
    np.testing.assert_allclose(ours, ref, rtol=2e-6)
    # with logsumexp it is the softmax cross-entropy
    np.testing.assert_allclose(ours, losses.softmax_cross_entropy(_Z, _P), rtol=2e-6)


def test_ctc_forward_probs_match_optax_on_unpadded_frames():
    loss, blank, label = losses.ctc_loss_with_forward_probs(*_CTC)
    with oracle():
        ref = optax.losses.ctc_loss_with_forward_probs(*_CTC)
    np.testing.assert_allclose(loss, ref[0], rtol=2e-6)
    assert blank.shape == ref[1].shape and label.shape == ref[2].shape
    # Frames 0 to 4 of sequence 0 and 0 to 3 of sequence 1 (its frames 4 and 5 are padding,
    # where gdopt keeps the last alphas). On the last frame of sequence 0 optax's blank
    # alphas differ from the recursion's; the losses agree. log_epsilon = -1e5 stands for
    # log 0: entries below -1e4 are "impossible" in both.
    for ours, theirs in (
        (blank[:5, 0], ref[1][:5, 0]),
        (blank[:4, 1], ref[1][:4, 1]),
        (label[:5], ref[2][:5]),
    ):
        ours, theirs = np.asarray(ours), np.asarray(theirs)
        possible = theirs > -1e4
        np.testing.assert_array_equal(ours > -1e4, possible)
        np.testing.assert_allclose(ours[possible], theirs[possible], rtol=1e-5)


def test_generalized_dice_follows_the_paper():
    probs = jax.nn.softmax(_SEG, axis=-1)
    intersection = (probs * _SEGT).sum((1, 2))
    total = (probs + _SEGT).sum((1, 2))
    w = 1.0 / (_SEGT.sum((1, 2)) ** 2 + 1e-6)
    expected = np.mean(1 - (2 * (w * intersection).sum(-1) + 1) / ((w * total).sum(-1) + 1))
    np.testing.assert_allclose(
        losses.multiclass_generalized_dice_loss(_SEG, _SEGT), expected, rtol=1e-5
    )


def test_triplet_margin_loss_uses_a_norm_for_every_degree():
    a, p, n = jnp.array([[0.0, 0.0]]), jnp.array([[1.0, -1.0]]), jnp.array([[3.0, 0.0]])
    # |1| + |-1| = 2 against 3: max(2 - 3 + 1, 0) = 0; optax 0.2.8 sums signed values (0)
    got = losses.triplet_margin_loss(a, p, n, norm_degree=1, eps=0.0, margin=1.5)
    np.testing.assert_allclose(got, [0.5])


def test_per_example_losses_support_masked_and_weighted_means():
    """The regression the issue reports: a mean over a mask must use per-example values."""
    per = losses.softmax_cross_entropy_with_integer_labels(_Z, _LAB)
    keep = jnp.array([True, False, True, False])
    masked = jnp.sum(jnp.where(keep, per, 0.0)) / 2
    np.testing.assert_allclose(masked, (per[0] + per[2]) / 2, rtol=1e-6)
    assert per.shape == (4,)
    with oracle():
        ref = optax.losses.softmax_cross_entropy_with_integer_labels(_Z, _LAB)
    np.testing.assert_allclose(masked, (ref[0] + ref[2]) / 2, rtol=2e-6)
