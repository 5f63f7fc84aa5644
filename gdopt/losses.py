"""Loss functions and metrics: pure, jit-able; optax's names return per-example values.

Every function with an optax name (``softmax_cross_entropy``, ``l2_loss``, ``huber_loss``,
``kl_divergence``, ...) takes optax's arguments and defaults and returns what optax's
returns: one value per example (per element for the elementwise losses), with optax's
``axis`` and ``where`` arguments where optax has them. Reduce them yourself
(``loss(...).mean()``, a masked or weighted mean). gdopt's batch-mean conveniences have
names of their own: :func:`mse`, :func:`supervised_loss`, :func:`supervised_accuracy`,
:func:`accuracy` and :func:`l2_penalty`.

Shapes are checked eagerly (they are static under ``jit``), so a silent broadcast such as
``(n, 1) - (n,) -> (n, n)`` becomes a ``ValueError`` that shows both shapes. Inputs in a
low-precision float dtype (bfloat16, float16) are computed in float32, so losses are
accurate (optax keeps the input dtype); float32 and float64 are kept.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics as num
from gdopt._validation import check_nonnegative, is_concrete
from gdopt.base import Params
from gdopt.tree import tree_l2_norm

__all__ = [
    "LOSS_NAMES",
    # regression (elementwise)
    "squared_error",
    "l2_loss",
    "huber_loss",
    "log_cosh",
    "cosine_similarity",
    "cosine_distance",
    # classification (per example)
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "poly_loss_cross_entropy",
    "hinge_loss",
    "perceptron_loss",
    "multiclass_hinge_loss",
    "multiclass_perceptron_loss",
    "sparsemax_loss",
    "multiclass_sparsemax_loss",
    "make_fenchel_young_loss",
    "smooth_labels",
    # divergences
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "convex_kl_divergence",
    "generalized_kl_divergence",
    # segmentation, ranking, metric learning, sequences
    "dice_loss",
    "binary_dice_loss",
    "multiclass_generalized_dice_loss",
    "ranking_softmax_loss",
    "ntxent",
    "triplet_margin_loss",
    "ctc_loss",
    "ctc_loss_with_forward_probs",
    # gdopt's batch-mean conveniences and metrics
    "mse",
    "l2_penalty",
    "accuracy",
    "supervised_loss",
    "supervised_accuracy",
]

Axis = int | tuple[int, ...] | None


def _float(x: Any) -> jax.Array:
    """``x`` as an array of a float dtype with at least float32 precision."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.float32)
    return x.astype(num.promote_types(x.dtype, jnp.float32))


def _floats(*xs: Any) -> tuple:
    """The arrays ``xs`` as floats of at least float32, all in one common dtype."""
    out = [_float(x) for x in xs]
    dtype = out[0].dtype
    for x in out[1:]:
        dtype = num.promote_types(dtype, x.dtype)
    return tuple(x.astype(dtype) for x in out)


def _check_same_shape(what: str, a: jax.Array, a_name: str, b: jax.Array, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{what}: {a_name} and {b_name} must have the same shape, got {a_name} shape "
            f"{a.shape} and {b_name} shape {b.shape}."
        )


def _check_has_class_axis(what: str, logits: jax.Array) -> None:
    if logits.ndim == 0:
        raise ValueError(f"{what}: logits must have a class axis (shape (..., classes)), got ().")


def _errors(what: str, predictions: Any, targets: Any) -> jax.Array:
    """``predictions - targets`` (or ``predictions`` when ``targets`` is None), same shapes."""
    if targets is None:
        return _float(predictions)
    predictions, targets = _floats(predictions, targets)
    _check_same_shape(what, predictions, "predictions", targets, "targets")
    return predictions - targets


# ----------------------------------------------------------------------------- regression


def squared_error(predictions: jax.Array, targets: jax.Array | None = None) -> jax.Array:
    """Elementwise squared error ``(predictions - targets)**2`` (no reduction), as optax's.

    Args:
      predictions: predictions.
      targets: targets of the same shape; ``None`` means zeros.

    Returns:
      An array of the inputs' shape.

    >>> squared_error(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])).tolist()
    [1.0, 4.0]
    """
    return jnp.square(_errors("squared_error", predictions, targets))


def l2_loss(predictions: jax.Array, targets: jax.Array | None = None) -> jax.Array:
    """Elementwise ``0.5 * (predictions - targets)**2`` (no reduction), as optax's.

    The factor 1/2 makes the gradient the plain residual.

    Args:
      predictions: predictions.
      targets: targets of the same shape; ``None`` means zeros.

    Returns:
      An array of the inputs' shape.

    >>> l2_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])).tolist()
    [0.5, 2.0]
    """
    return 0.5 * squared_error(predictions, targets)


def huber_loss(
    predictions: jax.Array, targets: jax.Array | None = None, *, delta: float = 1.0
) -> jax.Array:
    """Elementwise Huber loss: ``0.5 e²`` for ``|e| <= delta``, ``delta (|e| - delta/2)`` beyond.

    ``e = predictions - targets``; quadratic near zero and linear in the tails, so outliers
    pull less than with the squared error (Huber, 1964, https://doi.org/10.1214/aoms/1177703732).

    Args:
      predictions: predictions.
      targets: targets of the same shape; ``None`` means zeros.
      delta: where the quadratic part ends (> 0).

    Returns:
      An array of the inputs' shape.

    >>> huber_loss(jnp.array([0.5, 3.0])).tolist()
    [0.125, 2.5]
    """
    errors = _errors("huber_loss", predictions, targets)
    abs_errors = jnp.abs(errors)
    quadratic = num.minimum(abs_errors, delta)
    linear = abs_errors - quadratic
    return num.add(0.5 * jnp.square(quadratic), num.mul(delta, linear))


def log_cosh(predictions: jax.Array, targets: jax.Array | None = None) -> jax.Array:
    """Elementwise ``log(cosh(predictions - targets))``, computed without overflow.

    About ``e²/2`` for small errors and ``|e| - log 2`` for large ones
    (https://openreview.net/forum?id=rkglvsC9Ym, 2019).

    Args:
      predictions: predictions.
      targets: targets of the same shape; ``None`` means zeros.

    Returns:
      An array of the inputs' shape.

    >>> round(float(log_cosh(jnp.array(1000.0))), 3)
    999.307
    """
    errors = _errors("log_cosh", predictions, targets)
    return jnp.logaddexp(errors, -errors) - jnp.log(2.0).astype(errors.dtype)


def cosine_similarity(
    predictions: jax.Array,
    targets: jax.Array,
    *,
    epsilon: float = 0.0,
    axis: Axis = -1,
    where: jax.Array | None = None,
) -> jax.Array:
    """Cosine of the angle between ``predictions`` and ``targets`` along ``axis``.

    ``<a, b> / (max(|a|, ε) max(|b|, ε))``, each norm floored at ``epsilon``.

    Args:
      predictions: vectors, shape ``(..., dim)``.
      targets: vectors of the same shape.
      epsilon: floor of each norm (>= 0; 0 gives ``nan`` for a zero vector).
      axis: the axis or axes of the vectors.
      where: elements to include (broadcast to the inputs' shape).

    Returns:
      The similarities, the inputs' shape without ``axis``.

    >>> sims = cosine_similarity(jnp.array([[1.0, 0.0], [1.0, 1.0]]), jnp.array([[0.0, 2.0], [3.0, 3.0]]))
    >>> sims.round(4).tolist()
    [0.0, 1.0]
    """
    a, b = _floats(predictions, targets)
    _check_same_shape("cosine_similarity", a, "predictions", b, "targets")
    a_norm = jnp.sqrt(jnp.sum(a * a, axis=axis, where=where))
    b_norm = jnp.sqrt(jnp.sum(b * b, axis=axis, where=where))
    a_norm = num.maximum(a_norm, epsilon)
    b_norm = num.maximum(b_norm, epsilon)
    return jnp.sum(a * b, axis=axis, where=where) / (a_norm * b_norm)


def cosine_distance(
    predictions: jax.Array,
    targets: jax.Array,
    *,
    epsilon: float = 0.0,
    axis: Axis = -1,
    where: jax.Array | None = None,
) -> jax.Array:
    """``1 - cosine_similarity(predictions, targets)`` along ``axis`` (see :func:`cosine_similarity`).

    Args:
      predictions: vectors, shape ``(..., dim)``.
      targets: vectors of the same shape.
      epsilon: floor of each norm.
      axis: the axis or axes of the vectors.
      where: elements to include.

    Returns:
      The distances in ``[0, 2]``, the inputs' shape without ``axis``.

    >>> cosine_distance(jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0])).tolist()
    1.0
    """
    sim = cosine_similarity(predictions, targets, epsilon=epsilon, axis=axis, where=where)
    return 1.0 - sim


# ----------------------------------------------------------------------------- classification


def softmax_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    axis: Axis = -1,
    where: jax.Array | None = None,
) -> jax.Array:
    """Cross-entropy between ``softmax(logits)`` and target distributions, per example.

    ``-sum_c labels[..., c] * log_softmax(logits)[..., c]`` over the class ``axis``;
    ``log_softmax`` is computed stably (the max logit is subtracted first) and a zero label
    against a ``-inf`` logit counts 0 (not ``nan``). Changed after gdopt 0.1.0: this used to be the
    batch mean; it is now optax's per-example value (take ``.mean()`` or use
    :func:`supervised_loss`).

    Args:
      logits: shape ``(..., classes)``.
      labels: one-hot vectors or probabilities of the same shape.
      axis: the class axis or axes.
      where: elements to include (masked classes take no part in the softmax).

    Returns:
      The losses, the inputs' shape without ``axis``.

    >>> logits = jnp.array([[2.0, 0.0], [0.0, 0.0]])
    >>> softmax_cross_entropy(logits, jnp.array([[1.0, 0.0], [0.0, 1.0]])).round(4).tolist()
    [0.1269, 0.6931]
    """
    logits, labels = _floats(logits, labels)
    _check_has_class_axis("softmax_cross_entropy", logits)
    _check_same_shape("softmax_cross_entropy", logits, "logits", labels, "labels")
    logp = jax.nn.log_softmax(logits, axis=axis, where=where)
    terms = jnp.where(labels == 0, 0.0, labels * logp)
    return -jnp.sum(terms, axis=axis, where=where)


def safe_softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """:func:`softmax_cross_entropy` over the last axis, finite when a logit is ``-inf``.

    A class with logit ``-inf`` and label 0 contributes 0; a class with logit ``-inf`` and a
    positive label gives ``inf`` (the probability of that label is 0).

    Args:
      logits: shape ``(..., classes)``; entries may be ``-inf`` (masked classes).
      labels: one-hot vectors or probabilities of the same shape.

    Returns:
      The losses, shape ``logits.shape[:-1]``.

    >>> safe_softmax_cross_entropy(jnp.array([0.0, -jnp.inf, 0.0]), jnp.array([1.0, 0.0, 0.0]))
    Array(0.6931472, dtype=float32)
    """
    return softmax_cross_entropy(logits, labels)


def _move_axes_last(x: jax.Array, axis: Axis) -> tuple[jax.Array, int]:
    """``x`` with the axes in ``axis`` moved to the end and merged into one; their count."""
    axes = tuple(range(x.ndim)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    axes = tuple(a % x.ndim for a in axes)
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = jnp.transpose(x, rest + list(axes))
    return moved.reshape(moved.shape[: len(rest)] + (-1,)), len(axes)


def _check_integer_labels(what: str, classes: int, labels: jax.Array) -> None:
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"{what}: labels must be integer class indices, got dtype {labels.dtype} (use "
            "softmax_cross_entropy for one-hot or probability labels)."
        )
    if is_concrete(labels) and labels.size:
        host = np.asarray(labels)  # a concrete array, even while jit traces a caller
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= classes:
            raise ValueError(
                f"{what}: labels must lie in [0, {classes - 1}] for {classes} classes, got "
                f"values in [{lo}, {hi}]."
            )


def softmax_cross_entropy_with_integer_labels(
    logits: jax.Array,
    labels: jax.Array,
    axis: int | tuple[int, ...] = -1,
    where: jax.Array | None = None,
) -> jax.Array:
    """Cross-entropy of ``softmax(logits)`` against integer class labels, per example.

    ``logsumexp(logits) - logits[label]`` over the class ``axis``; equal to
    :func:`softmax_cross_entropy` with one-hot labels. Changed after gdopt 0.1.0: this used to be
    the batch mean; it is now optax's per-example value.

    Args:
      logits: shape ``(..., classes)`` (the class axis or axes given by ``axis``).
      labels: integer class indices, the shape of ``logits`` without ``axis`` (concrete
        labels outside the classes raise ``ValueError``; with several class axes the index
        counts in row-major order over them).
      axis: the class axis or axes.
      where: elements of ``logits`` to include in the normaliser.

    Returns:
      The losses, the shape of ``labels``.

    >>> logits = jnp.array([[2.0, 0.0], [0.0, 0.0]])
    >>> softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 1])).round(4).tolist()
    [0.1269, 0.6931]
    """
    what = "softmax_cross_entropy_with_integer_labels"
    labels = jnp.asarray(labels)
    logits = _float(logits)
    _check_has_class_axis(what, logits)
    flat, _ = _move_axes_last(logits, axis)
    if labels.shape != flat.shape[:-1]:
        raise ValueError(
            f"{what}: integer labels must have the shape of logits without axis={axis!r}, got "
            f"logits shape {logits.shape} and labels shape {labels.shape}."
        )
    _check_integer_labels(what, flat.shape[-1], labels)
    mask = None
    if where is not None:
        mask, _ = _move_axes_last(jnp.broadcast_to(where, logits.shape), axis)
    top = jnp.max(flat, axis=-1, keepdims=True, where=mask, initial=-jnp.inf)
    shifted = flat - jax.lax.stop_gradient(top)
    picked = jnp.take_along_axis(shifted, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    log_normalizers = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, where=mask))
    return log_normalizers - picked


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy of ``sigmoid(logits)`` against labels, as optax's.

    ``-y log σ(z) - (1 - y) log(1 - σ(z))`` with ``log σ`` computed stably. Changed after gdopt
    0.2: this used to be the mean over all elements; it is now optax's elementwise value.

    Args:
      logits: any shape.
      labels: the shape of ``logits`` (or one that broadcasts to it); ints, bools or
        probabilities in ``[0, 1]``.

    Returns:
      An array of the broadcast shape.

    >>> sigmoid_binary_cross_entropy(jnp.array([0.0, 1000.0]), jnp.array([1, 1])).round(4).tolist()
    [0.6931, 0.0]
    """
    logits, labels = _floats(logits, labels)
    if jnp.broadcast_shapes(logits.shape, labels.shape) != logits.shape:
        raise ValueError(
            "sigmoid_binary_cross_entropy: labels must have the shape of logits (or broadcast "
            f"to it), got logits shape {logits.shape} and labels shape {labels.shape}."
        )
    log_p = jax.nn.log_sigmoid(logits)
    log_not_p = jax.nn.log_sigmoid(-logits)
    return -labels * log_p - (1.0 - labels) * log_not_p


def sigmoid_focal_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    alpha: float | None = None,
    gamma: float = 2.0,
) -> jax.Array:
    """Elementwise focal loss: the binary cross-entropy weighted by ``(1 - p_t)^gamma``.

    ``p_t = σ(z) y + (1 - σ(z)) (1 - y)``; ``alpha`` (if given) weighs positives by ``α`` and
    negatives by ``1 - α`` (Lin et al., 2017, https://arxiv.org/abs/1708.02002).

    Args:
      logits: any shape.
      labels: same shape; ints, bools or probabilities in ``[0, 1]``.
      alpha: weight of the positive class in ``[0, 1]``, or ``None`` for no weighting.
      gamma: focusing exponent >= 0 (0 gives the cross-entropy).

    Returns:
      An array of the inputs' shape.

    >>> sigmoid_focal_loss(jnp.array([0.0]), jnp.array([1.0])).round(4).tolist()
    [0.1733]
    """
    logits, labels = _floats(logits, labels)
    p = jax.nn.sigmoid(logits)
    ce = sigmoid_binary_cross_entropy(logits, labels)
    p_t = p * labels + (1.0 - p) * (1.0 - labels)
    loss = num.mul(ce, jnp.power(1.0 - p_t, gamma))
    if alpha is not None:
        weights = num.add(num.mul(alpha, labels), num.mul(num.sub(1.0, alpha), 1.0 - labels))
        loss = num.mul(weights, loss)
    return loss


def poly_loss_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    epsilon: float = 2.0,
    axis: Axis = -1,
    where: jax.Array | None = None,
) -> jax.Array:
    """Poly-1 loss: ``softmax_cross_entropy + epsilon * (1 - p_t)``, per example.

    ``1 - p_t = sum_c labels_c (1 - softmax(logits)_c)`` (Leng et al., 2022,
    https://arxiv.org/abs/2204.12511).

    Args:
      logits: shape ``(..., classes)``.
      labels: one-hot vectors or probabilities of the same shape.
      epsilon: weight of the polynomial term (the paper's ε₁; may be negative).
      axis: the class axis or axes.
      where: elements to include.

    Returns:
      The losses, the inputs' shape without ``axis``.

    >>> poly_loss_cross_entropy(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0])).round(4).tolist()
    1.6931
    """
    logits, labels = _floats(logits, labels)
    probs = jax.nn.softmax(logits, axis=axis, where=where)
    one_minus_pt = jnp.sum(labels * (1.0 - probs), axis=axis, where=where)
    ce = softmax_cross_entropy(logits, labels, axis=axis, where=where)
    return num.add(ce, num.mul(epsilon, one_minus_pt))


def hinge_loss(predictor_outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Elementwise binary hinge loss ``max(0, 1 - y f(x))`` for targets ``y`` in ``{-1, 1}``.

    Args:
      predictor_outputs: scores ``f(x)``.
      targets: targets in ``{-1, 1}`` of the same shape.

    Returns:
      An array of the inputs' shape.

    >>> hinge_loss(jnp.array([0.5, -2.0]), jnp.array([1.0, -1.0])).tolist()
    [0.5, 0.0]
    """
    out, targets = _floats(predictor_outputs, targets)
    return jnp.maximum(0.0, 1.0 - out * targets)


def perceptron_loss(predictor_outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Elementwise binary perceptron loss ``max(0, -y f(x))`` for targets in ``{-1, 1}``.

    Args:
      predictor_outputs: scores ``f(x)``.
      targets: targets in ``{-1, 1}`` of the same shape.

    Returns:
      An array of the inputs' shape.

    >>> perceptron_loss(jnp.array([0.5, 2.0]), jnp.array([1.0, -1.0])).tolist()
    [0.0, 2.0]
    """
    out, targets = _floats(predictor_outputs, targets)
    return jnp.maximum(0.0, -out * targets)


def _one_hot_like(labels: jax.Array, scores: jax.Array) -> jax.Array:
    return jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)


def multiclass_hinge_loss(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Multiclass hinge loss ``max_c (s_c + [c != y]) - s_y``, per example (Crammer & Singer).

    Args:
      scores: shape ``(..., classes)``.
      labels: integer classes, shape ``scores.shape[:-1]``.

    Returns:
      The losses, shape ``labels.shape``.

    >>> multiclass_hinge_loss(jnp.array([[2.0, 1.5], [0.0, 3.0]]), jnp.array([0, 0])).tolist()
    [0.5, 4.0]
    """
    scores = _float(scores)
    one_hot = _one_hot_like(jnp.asarray(labels), scores)
    return jnp.max(scores + 1.0 - one_hot, axis=-1) - jnp.sum(scores * one_hot, axis=-1)


def multiclass_perceptron_loss(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Multiclass perceptron loss ``max_c s_c - s_y``, per example.

    Args:
      scores: shape ``(..., classes)``.
      labels: integer classes, shape ``scores.shape[:-1]``.

    Returns:
      The losses, shape ``labels.shape``.

    >>> multiclass_perceptron_loss(jnp.array([[2.0, 1.5], [0.0, 3.0]]), jnp.array([0, 0])).tolist()
    [0.0, 3.0]
    """
    scores = _float(scores)
    one_hot = _one_hot_like(jnp.asarray(labels), scores)
    return jnp.max(scores, axis=-1) - jnp.sum(scores * one_hot, axis=-1)


def _sparsemax(scores: jax.Array) -> jax.Array:
    """The Euclidean projection of each row (last axis) of ``scores`` onto the simplex."""
    z = jnp.sort(scores, axis=-1)[..., ::-1]
    k = jnp.arange(1, scores.shape[-1] + 1, dtype=scores.dtype)
    cumsum = jnp.cumsum(z, axis=-1)
    support = (1.0 + k * z) > cumsum
    k_max = jnp.sum(support, axis=-1, keepdims=True)
    tau = (jnp.take_along_axis(cumsum, k_max - 1, axis=-1) - 1.0) / k_max.astype(scores.dtype)
    return jnp.maximum(scores - tau, 0.0)


def sparsemax_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Elementwise binary sparsemax loss, the Fenchel-Young loss of the 2-class sparsemax.

    ``sparse_plus(-z)`` for label 1 and ``sparse_plus(z)`` for label 0, where
    ``sparse_plus(x)`` is 0 below -1, ``(x + 1)²/4`` on ``[-1, 1]`` and ``x`` above
    (Martins & Astudillo, 2016, https://arxiv.org/abs/1602.02068).

    Args:
      logits: any shape.
      labels: same shape, in ``{0, 1}``.

    Returns:
      An array of the inputs' shape.

    >>> sparsemax_loss(jnp.array([0.0, 3.0]), jnp.array([1, 1])).tolist()
    [0.25, 0.0]
    """
    logits = _float(logits)
    labels = jnp.asarray(labels)
    x = jnp.where(labels.astype(bool), -logits, logits)
    return jax.nn.sparse_plus(x)


def multiclass_sparsemax_loss(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Multiclass sparsemax loss, per example: ``<p, s> - ||p||²/2 + 1/2 - s_y``.

    ``p = sparsemax(s)``, the projection of the scores onto the simplex; the Fenchel-Young
    loss of ``Ω(p) = ||p||²/2`` (Martins & Astudillo, 2016, https://arxiv.org/abs/1602.02068).

    Args:
      scores: shape ``(..., classes)``.
      labels: integer classes, shape ``scores.shape[:-1]``.

    Returns:
      The losses (>= 0), shape ``labels.shape``.

    >>> multiclass_sparsemax_loss(jnp.array([[3.0, 0.0], [0.0, 0.0]]), jnp.array([0, 0])).tolist()
    [0.0, 0.25]
    """
    scores = _float(scores)
    one_hot = _one_hot_like(jnp.asarray(labels), scores)
    p = _sparsemax(scores)
    max_value = jnp.sum(p * scores, axis=-1) - 0.5 * jnp.sum(p * p, axis=-1) + 0.5
    return max_value - jnp.sum(scores * one_hot, axis=-1)


def make_fenchel_young_loss(max_fun: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """The Fenchel-Young loss ``max_fun(scores) - <targets, scores>`` of a max function.

    ``max_fun`` is a regularised max (``logsumexp`` gives the softmax cross-entropy); the loss
    works over the last axis, with any leading axes (Blondel et al., 2020,
    https://arxiv.org/abs/1901.02324).

    Args:
      max_fun: ``max_fun(scores, *args, **kwargs) -> value`` over the last axis.

    Returns:
      ``loss(scores, targets, *args, **kwargs)`` with one value per leading index.

    >>> from jax.scipy.special import logsumexp
    >>> fy = make_fenchel_young_loss(logsumexp)
    >>> fy(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0])).round(4).tolist()
    0.6931
    """

    def fenchel_young_loss(scores: jax.Array, targets: jax.Array, *args, **kwargs) -> jax.Array:
        per_row = functools.partial(max_fun, *args, **kwargs) if args or kwargs else max_fun
        max_value = jnp.vectorize(per_row, signature="(n)->()")(scores)
        return num.sub(max_value, jnp.sum(num.mul(targets, scores), axis=-1))

    return fenchel_young_loss


def smooth_labels(
    labels: jax.Array, alpha: float, *, axis: Axis = -1, where: jax.Array | None = None
) -> jax.Array:
    """Label smoothing: ``(1 - alpha) * labels + alpha / K`` over the ``K`` classes of ``axis``.

    (Müller et al., 2019, https://arxiv.org/abs/1906.02629.)

    Args:
      labels: one-hot labels, shape ``(..., classes)``.
      alpha: the smoothing factor in ``[0, 1]``.
      axis: the class axis or axes.
      where: classes to count in ``K`` (every label is smoothed).

    Returns:
      The smoothed labels, the shape of ``labels``.

    >>> smooth_labels(jnp.array([1.0, 0.0]), 0.2).round(4).tolist()
    [0.9, 0.1]
    """
    labels = _float(labels)
    if where is None:
        axes = tuple(range(labels.ndim)) if axis is None else axis
        axes = axes if isinstance(axes, tuple) else (axes,)
        num_categories = float(np.prod([labels.shape[a] for a in axes]))
    else:
        mask = jnp.broadcast_to(where, labels.shape)
        num_categories = jnp.sum(mask, axis=axis, keepdims=True).astype(labels.dtype)
    return num.add(num.mul(num.sub(1.0, alpha), labels), num.div(alpha, num_categories))


# ----------------------------------------------------------------------------- divergences


def kl_divergence(
    log_predictions: jax.Array,
    targets: jax.Array,
    axis: Axis = -1,
    where: jax.Array | None = None,
) -> jax.Array:
    """Kullback-Leibler divergence ``KL(targets || predictions)`` along ``axis``, per example.

    ``sum_c t_c (log t_c - log p_c)`` with ``0 log 0 = 0``.

    Args:
      log_predictions: log-probabilities of the predicted distribution, shape ``(..., dim)``.
      targets: probabilities of the target distribution, same shape.
      axis: the axis or axes of the distributions.
      where: elements to include.

    Returns:
      The divergences, the inputs' shape without ``axis``.

    >>> kl_divergence(jnp.log(jnp.array([0.5, 0.5])), jnp.array([1.0, 0.0])).round(4).tolist()
    0.6931
    """
    log_predictions, targets = _floats(log_predictions, targets)
    log_targets = jnp.where(targets == 0, 0.0, jnp.log(jnp.where(targets == 0, 1.0, targets)))
    loss = targets * (log_targets - log_predictions)
    return jnp.sum(loss, axis=axis, where=where)


def kl_divergence_with_log_targets(
    log_predictions: jax.Array,
    log_targets: jax.Array,
    axis: Axis = -1,
    where: jax.Array | None = None,
) -> jax.Array:
    """``KL(targets || predictions)`` with both distributions given as log-probabilities.

    ``sum_c exp(log t_c) (log t_c - log p_c)`` along ``axis``.

    Args:
      log_predictions: log-probabilities of the predicted distribution.
      log_targets: log-probabilities of the target distribution, same shape.
      axis: the axis or axes of the distributions.
      where: elements to include.

    Returns:
      The divergences, the inputs' shape without ``axis``.

    >>> lp = jnp.log(jnp.array([0.5, 0.5]))
    >>> kl_divergence_with_log_targets(lp, lp).tolist()
    0.0
    """
    log_predictions, log_targets = _floats(log_predictions, log_targets)
    loss = jnp.exp(log_targets) * (log_targets - log_predictions)
    return jnp.sum(loss, axis=axis, where=where)


def generalized_kl_divergence(
    log_predictions: jax.Array,
    targets: jax.Array,
    axis: Axis = -1,
    where: jax.Array | None = None,
) -> jax.Array:
    """Generalised KL divergence of unnormalised distributions, per example.

    ``sum_c t_c (log t_c - log p_c) + p_c - t_c``: the Bregman divergence of
    ``x log x - x``; for normalised distributions it is :func:`kl_divergence`.

    Args:
      log_predictions: logs of the predicted (unnormalised) masses.
      targets: target masses (>= 0), same shape.
      axis: the axis or axes of the distributions.
      where: elements to include.

    Returns:
      The divergences, the inputs' shape without ``axis``.

    >>> generalized_kl_divergence(jnp.log(jnp.array([2.0])), jnp.array([1.0])).round(4).tolist()
    0.3069
    """
    log_predictions, targets = _floats(log_predictions, targets)
    kl = kl_divergence(log_predictions, targets, axis=axis, where=where)
    return kl + jnp.sum(jnp.exp(log_predictions) - targets, axis=axis, where=where)


def convex_kl_divergence(
    log_predictions: jax.Array,
    targets: jax.Array,
    axis: Axis = -1,
    where: jax.Array | None = None,
) -> jax.Array:
    """The generalised KL divergence (optax's older name): see :func:`generalized_kl_divergence`.

    Args:
      log_predictions: logs of the predicted (unnormalised) masses.
      targets: target masses (>= 0), same shape.
      axis: the axis or axes of the distributions.
      where: elements to include.

    Returns:
      The divergences, the inputs' shape without ``axis``.

    >>> convex_kl_divergence(jnp.log(jnp.array([2.0])), jnp.array([1.0])).round(4).tolist()
    0.3069
    """
    return generalized_kl_divergence(log_predictions, targets, axis=axis, where=where)


# ----------------------------------------------------------------------------- segmentation


def dice_loss(
    predictions: jax.Array,
    targets: jax.Array,
    *,
    class_weights: jax.Array | None = None,
    smooth: float = 1.0,
    alpha: float = 0.5,
    beta: float = 0.5,
    apply_softmax: bool = True,
    reduction: str = "mean",
    ignore_background: bool = False,
    axis: Any = None,
) -> jax.Array:
    """Soft Dice (Tversky) loss for segmentation, per example.

    Per class ``c``, with ``I = Σ p t``, ``P = Σ p`` and ``T = Σ t`` over ``axis``::

        dice_c = 1 - (I + smooth) / (I + α (P - I) + β (T - I) + smooth)

    each multiplied by its class weight, then a mean, a sum or no reduction over classes.
    ``α = β = 1/2`` is the Dice loss (Milletari et al., 2016,
    https://arxiv.org/abs/1606.04797); other values give the Tversky loss.

    Args:
      predictions: logits (or probabilities with ``apply_softmax=False``) of shape
        ``(batch, ..., classes)``; one class means binary (sigmoid instead of softmax).
      targets: one-hot targets of the same shape.
      class_weights: weights of shape ``(classes,)``, or ``None`` for equal weights.
      smooth: additive smoothing of numerator and denominator.
      alpha: weight of false positives.
      beta: weight of false negatives.
      apply_softmax: turn logits into probabilities first.
      reduction: ``"mean"``, ``"sum"`` or ``"none"`` over classes.
      ignore_background: leave out class 0.
      axis: axes summed over; ``None`` means all but the first and the last.

    Returns:
      Shape ``(batch,)`` (``(batch, classes)`` for ``reduction="none"``).

    >>> dice_loss(jnp.array([[[9.0], [-9.0]]]), jnp.array([[[1.0], [0.0]]])).round(3).tolist()
    [0.0]
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    predictions, targets = _floats(predictions, targets)
    _check_same_shape("dice_loss", predictions, "predictions", targets, "targets")
    if apply_softmax:
        if predictions.shape[-1] == 1:
            predictions = jax.nn.sigmoid(predictions)
        else:
            predictions = jax.nn.softmax(predictions, axis=-1)
    if axis is None:
        axis = tuple(range(1, predictions.ndim - 1))
    intersection = jnp.sum(predictions * targets, axis=axis)
    pred_sum = jnp.sum(predictions, axis=axis)
    target_sum = jnp.sum(targets, axis=axis)
    fp = pred_sum - intersection
    fn = target_sum - intersection
    numerator = num.add(intersection, smooth)
    denominator = num.add(
        num.add(num.add(intersection, num.mul(alpha, fp)), num.mul(beta, fn)), smooth
    )
    dice = 1.0 - numerator / denominator
    weights = None if class_weights is None else _float(class_weights)
    if ignore_background:
        dice = dice[..., 1:]
        weights = None if weights is None else weights[1:]
    if weights is not None:
        dice = num.mul(dice, weights)
    if reduction == "none":
        return dice
    if reduction == "sum":
        return jnp.sum(dice, axis=-1)
    return jnp.mean(dice, axis=-1)


def binary_dice_loss(
    predictions: jax.Array,
    targets: jax.Array,
    *,
    smooth: float = 1.0,
    apply_sigmoid: bool = True,
) -> jax.Array:
    """:func:`dice_loss` for binary segmentation: logits of shape ``(batch, ...)`` or ``(batch, ..., 1)``.

    Args:
      predictions: logits (or probabilities with ``apply_sigmoid=False``).
      targets: binary targets of the same shape.
      smooth: additive smoothing.
      apply_sigmoid: turn logits into probabilities first.

    Returns:
      Shape ``(batch,)``.

    >>> binary_dice_loss(jnp.array([[9.0, -9.0]]), jnp.array([[1.0, 0.0]])).round(3).tolist()
    [0.0]
    """
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.ndim == 0 or predictions.shape[-1] != 1 or predictions.ndim == 1:
        predictions, targets = predictions[..., None], targets[..., None]
    return dice_loss(predictions, targets, smooth=smooth, apply_softmax=apply_sigmoid)


def multiclass_generalized_dice_loss(
    predictions: jax.Array,
    targets: jax.Array,
    *,
    smooth: float = 1.0,
    apply_softmax: bool = True,
    ignore_background: bool = False,
) -> jax.Array:
    """Generalised Dice loss, classes weighted by ``1 / T_c²`` (their inverse squared volume).

    ``1 - (2 Σ_c w_c I_c + smooth) / (Σ_c w_c (P_c + T_c) + smooth)`` per example, sums over
    all axes but the first and the last, ``w_c = 1 / (T_c² + 1e-6)``, then the mean over the
    batch (Sudre et al., 2017, eq. 4, https://arxiv.org/abs/1707.03237). optax's function
    has this name and shape but another weighting, so the numbers differ.

    Args:
      predictions: logits (or probabilities) of shape ``(batch, ..., classes)``.
      targets: one-hot targets of the same shape.
      smooth: additive smoothing.
      apply_softmax: turn logits into probabilities first.
      ignore_background: leave out class 0.

    Returns:
      A scalar.

    >>> t = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> multiclass_generalized_dice_loss(t * 20.0, t).round(3).tolist()
    0.0
    """
    predictions, targets = _floats(predictions, targets)
    _check_same_shape(
        "multiclass_generalized_dice_loss", predictions, "predictions", targets, "targets"
    )
    if apply_softmax:
        predictions = jax.nn.softmax(predictions, axis=-1)
    if ignore_background:
        predictions, targets = predictions[..., 1:], targets[..., 1:]
    axis = tuple(range(1, predictions.ndim - 1))
    intersection = jnp.sum(predictions * targets, axis=axis)
    pred_sum = jnp.sum(predictions, axis=axis)
    target_sum = jnp.sum(targets, axis=axis)
    weights = 1.0 / (jnp.square(target_sum) + 1e-6)
    numerator = num.add(2.0 * jnp.sum(weights * intersection, axis=-1), smooth)
    denominator = num.add(jnp.sum(weights * (pred_sum + target_sum), axis=-1), smooth)
    return jnp.mean(1.0 - numerator / denominator)


# ----------------------------------------------------------------------------- ranking, metrics


def ranking_softmax_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: Callable[..., jax.Array] | None = jnp.mean,
) -> jax.Array:
    """Listwise softmax loss ``-Σ_i y_i log softmax(s)_i``, one value per list.

    (Cao et al., 2007, https://doi.org/10.1145/1273496.1273513; as in RAX.)

    Args:
      logits: item scores, shape ``(..., list_size)``.
      labels: relevance labels (>= 0), same shape.
      where: valid items (invalid ones take no part).
      weights: per-item weights multiplying the labels.
      reduce_fn: reduction over lists (``jnp.mean``, ``jnp.sum``) or ``None`` for one value
        per list; with ``where``, lists with no valid item are left out of the reduction.

    Returns:
      A scalar, or the per-list losses when ``reduce_fn`` is None.

    >>> float(ranking_softmax_loss(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0])))
    0.6931471824645996
    """
    logits, labels = _floats(logits, labels)
    if where is not None:
        where = jnp.broadcast_to(where, logits.shape)
        logits = jnp.where(where, logits, -jnp.inf)
        labels = jnp.where(where, labels, 0.0)
    if weights is not None:
        labels = num.mul(labels, weights)
    log_p = jax.nn.log_softmax(logits, axis=-1, where=where)
    terms = jnp.where(labels == 0, 0.0, labels * jnp.where(labels == 0, 0.0, log_p))
    loss = -jnp.sum(terms, axis=-1)
    if reduce_fn is None:
        return loss
    if where is None:
        return reduce_fn(loss)
    return reduce_fn(loss, where=jnp.any(where, axis=-1))


def ntxent(embeddings: jax.Array, labels: jax.Array, temperature: float = 0.07) -> jax.Array:
    """NT-Xent (normalised temperature-scaled cross-entropy), the SimCLR contrastive loss.

    With ``s_ij = cos(e_i, e_j) / τ``, the mean over positive pairs ``(i, j)`` (same label,
    ``i != j``) of ``-log(exp(s_ij) / (exp(s_ij) + Σ_{k: other label} exp(s_ik)))``
    (Chen et al., 2020, https://arxiv.org/abs/2002.05709).

    Args:
      embeddings: shape ``(batch, features)``.
      labels: integer group labels of shape ``(batch,)``; equal labels are positive pairs.
      temperature: τ > 0.

    Returns:
      A scalar.

    >>> e = jnp.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    >>> round(float(ntxent(e, jnp.array([0, 0, 1, 1]))), 4)
    0.0
    """
    embeddings = _float(embeddings)
    labels = jnp.asarray(labels)
    norms = jnp.maximum(jnp.sqrt(jnp.sum(embeddings * embeddings, axis=-1)), 1e-12)
    unit = embeddings / norms[:, None]
    logits = num.div(unit @ unit.T, temperature)
    n = embeddings.shape[0]
    diag = jnp.eye(n, dtype=bool)
    same = labels[:, None] == labels[None, :]
    positives = same & ~diag
    negatives = ~same
    logits = logits - jax.lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
    exp = jnp.exp(logits)
    neg_sum = jnp.sum(jnp.where(negatives, exp, 0.0), axis=1, keepdims=True)
    log_ratio = logits - jnp.log(exp + neg_sum)
    count = jnp.sum(positives)
    return -jnp.sum(jnp.where(positives, log_ratio, 0.0)) / jnp.maximum(count, 1).astype(
        logits.dtype
    )


def triplet_margin_loss(
    anchors: jax.Array,
    positives: jax.Array,
    negatives: jax.Array,
    axis: int = -1,
    norm_degree: float = 2,
    margin: float = 1.0,
    eps: float = 1e-6,
) -> jax.Array:
    """Triplet margin loss ``max(d(a, p) - d(a, n) + margin, 0)``, per example.

    ``d(x, y) = ||x - y + eps||_p`` along ``axis`` (Schroff et al., 2015,
    https://arxiv.org/abs/1503.03832). For ``norm_degree=2`` (the default) this is optax's
    value; for other degrees gdopt takes the absolute values a norm needs (optax 0.2.8 sums
    the signed powers, which is not a distance for odd degrees).

    Args:
      anchors: shape ``(..., dim)``.
      positives: same shape.
      negatives: same shape.
      axis: the axis of the vectors.
      norm_degree: the ``p`` of the distance.
      margin: the margin.
      eps: added to the differences before the norm.

    Returns:
      The losses, the inputs' shape without ``axis``.

    >>> a, p, n = jnp.array([[0.0, 0.0]]), jnp.array([[0.0, 1.0]]), jnp.array([[3.0, 0.0]])
    >>> triplet_margin_loss(a, p, n, eps=0.0).tolist()
    [0.0]
    """
    anchors, positives, negatives = _floats(anchors, positives, negatives)

    def distance(x: jax.Array) -> jax.Array:
        diff = jnp.abs(num.add(anchors - x, eps))
        return jnp.power(jnp.sum(jnp.power(diff, norm_degree), axis=axis), 1.0 / norm_degree)

    return jnp.maximum(num.add(distance(positives) - distance(negatives), margin), 0.0)


# ----------------------------------------------------------------------------- CTC


def ctc_loss_with_forward_probs(
    logits: jax.Array,
    logit_paddings: jax.Array,
    labels: jax.Array,
    label_paddings: jax.Array,
    *,
    blank_id: int = 0,
    log_epsilon: float = -1e5,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """CTC loss and its forward (alpha) log-probabilities (Graves et al., 2006).

    The recursion runs over two kinds of state: ``blank[n]`` (after ``n`` labels, the last
    frame a blank) and ``label[n]`` (the last frame label ``n``), with ``log_epsilon`` as
    ``log 0`` (https://dl.acm.org/doi/abs/10.1145/1143844.1143891).

    Args:
      logits: ``(B, T, K)`` class logits, blank included.
      logit_paddings: ``(B, T)``, 1.0 marks a padded frame.
      labels: ``(B, N)`` integer labels, right-padded.
      label_paddings: ``(B, N)``, 1.0 marks a padded label.
      blank_id: the blank class.
      log_epsilon: the stand-in for ``log 0``.

    Returns:
      ``(loss, log_alpha_blank, log_alpha_label)``: ``(B,)`` negative log-likelihoods,
      ``(T, B, N + 1)`` and ``(T, B, N)`` forward log-probabilities.

    >>> loss, _, _ = ctc_loss_with_forward_probs(
    ...     jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)), jnp.array([[1]]), jnp.zeros((1, 1)))
    >>> round(float(loss[0]), 4)  # 3 of the 4 paths of two frames emit the label
    0.2877
    """
    logits = _float(logits)
    if logits.ndim != 3:
        raise ValueError(f"ctc_loss: logits must have shape (B, T, K), got {logits.shape}.")
    labels = jnp.asarray(labels).astype(jnp.int32)
    batch, frames, _ = logits.shape
    n_labels = labels.shape[1]
    dtype = logits.dtype
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    label_lengths = (n_labels - jnp.sum(_float(label_paddings), axis=1)).astype(jnp.int32)
    repeat = jnp.concatenate(
        [(labels[:, :-1] == labels[:, 1:]), jnp.zeros((batch, 1), bool)], axis=1
    )
    logprobs_blank = logprobs[:, :, blank_id : blank_id + 1]  # (B, T, 1)
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=dtype)  # (B, N, K)
    logprobs_label = jnp.einsum("btk,bnk->btn", logprobs, one_hot)  # (B, T, N)
    eps = jnp.asarray(log_epsilon, dtype)

    blank0 = jnp.concatenate(
        [jnp.zeros((batch, 1), dtype), jnp.full((batch, n_labels), eps)], axis=1
    )
    label0 = jnp.full((batch, n_labels), eps)

    def step(carry, xs):
        blank_prev, label_prev = carry
        lp_blank, lp_label, pad = xs  # (B, 1), (B, N), (B,)
        from_label = jnp.concatenate([jnp.full((batch, 1), eps), label_prev], axis=1)
        blank = jnp.logaddexp(blank_prev, from_label) + lp_blank
        shifted = jnp.concatenate([jnp.full((batch, 1), eps), label_prev[:, :-1]], axis=1)
        no_repeat = jnp.concatenate([jnp.zeros((batch, 1), bool), ~repeat[:, :-1]], axis=1)
        from_prev_label = jnp.where(no_repeat, shifted, eps)
        label = (
            jnp.logaddexp(jnp.logaddexp(label_prev, blank_prev[:, :-1]), from_prev_label) + lp_label
        )
        keep = (pad > 0.5)[:, None]
        blank = jnp.where(keep, blank_prev, blank)
        label = jnp.where(keep, label_prev, label)
        return (blank, label), (blank, label)

    xs = (
        jnp.swapaxes(logprobs_blank, 0, 1),
        jnp.swapaxes(logprobs_label, 0, 1),
        jnp.swapaxes(_float(logit_paddings), 0, 1),
    )
    (blank_last, label_last), (alpha_blank, alpha_label) = jax.lax.scan(step, (blank0, label0), xs)
    end_blank = jnp.take_along_axis(blank_last, label_lengths[:, None], axis=1)[:, 0]
    last_label = jnp.take_along_axis(
        label_last, jnp.maximum(label_lengths - 1, 0)[:, None], axis=1
    )[:, 0]
    end_label = jnp.where(label_lengths > 0, last_label, eps)
    loss = -jnp.logaddexp(end_blank, end_label)
    return loss, alpha_blank, alpha_label


def ctc_loss(
    logits: jax.Array,
    logit_paddings: jax.Array,
    labels: jax.Array,
    label_paddings: jax.Array,
    *,
    blank_id: int = 0,
    log_epsilon: float = -1e5,
) -> jax.Array:
    """CTC loss ``-log p(labels | logits)`` per sequence (see :func:`ctc_loss_with_forward_probs`).

    Args:
      logits: ``(B, T, K)`` class logits, blank included.
      logit_paddings: ``(B, T)``, 1.0 marks a padded frame.
      labels: ``(B, N)`` integer labels, right-padded.
      label_paddings: ``(B, N)``, 1.0 marks a padded label.
      blank_id: the blank class.
      log_epsilon: the stand-in for ``log 0``.

    Returns:
      The ``(B,)`` losses.

    >>> ctc_loss(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)), jnp.array([[1]]), jnp.zeros((1, 1))).round(4).tolist()
    [0.2877]
    """
    loss, _, _ = ctc_loss_with_forward_probs(
        logits, logit_paddings, labels, label_paddings, blank_id=blank_id, log_epsilon=log_epsilon
    )
    return loss


# ----------------------------------------------------------------------------- batch means


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error ``mean((pred - target)**2)`` over all elements (no factor 1/2).

    gdopt's batch-mean convenience (optax has no ``mse``): ``squared_error(...).mean()``.

    Args:
      pred: predictions.
      target: targets of the same shape.

    Returns:
      A scalar.

    >>> round(float(mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]))), 4)
    2.5
    """
    return jnp.mean(squared_error(pred, target))


def l2_penalty(params: Params, weight: Any = 1.0) -> jax.Array:
    """``weight * 0.5 * sum of squares`` of every leaf of ``params`` (``None`` leaves skipped).

    Its gradient is ``weight * params``, the usual L2 regularisation (weight decay) term.

    Args:
      params: a pytree of arrays.
      weight: the coefficient λ >= 0 (a float or an array, possibly traced).

    Returns:
      A scalar.

    >>> round(float(l2_penalty({"w": jnp.array([3.0, 4.0])}, weight=0.1)), 4)
    1.25
    """
    check_nonnegative("weight", weight)
    return num.mul(weight * 0.5, tree_l2_norm(params, squared=True))


def accuracy(logits_or_outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples classified correctly (a float32 scalar in ``[0, 1]``).

    Predictions: for outputs of shape ``(..., classes)`` with ``classes > 1``, the argmax;
    for 1-D binary logits ``(n,)`` (or ``(n, 1)``), ``output > 0`` means class 1.
    Labels: integer classes of shape ``outputs.shape[:-1]`` or one-hot/probabilities of the
    outputs' shape (argmax taken); for binary outputs, ints/bools or probabilities (``> 0.5``
    means class 1).

    Args:
      logits_or_outputs: model outputs (logits).
      labels: targets as above.

    Returns:
      A float32 scalar.

    >>> float(accuracy(jnp.array([[2.0, 1.0], [0.0, 3.0]]), jnp.array([0, 0])))
    0.5
    >>> float(accuracy(jnp.array([-1.0, 2.0]), jnp.array([0, 1])))
    1.0
    """
    out, labels = jnp.asarray(logits_or_outputs), jnp.asarray(labels)
    if out.ndim == 0:
        raise ValueError("accuracy: outputs must have a batch axis, got shape ().")
    binary = out.ndim == 1 or out.shape[-1] == 1
    if binary:
        if out.ndim > 1:
            out = out[..., 0]
            if labels.shape == out.shape + (1,):
                labels = labels[..., 0]
        _check_same_shape("accuracy (binary logits)", out, "outputs", labels, "labels")
        truth = labels.astype(jnp.float32) > 0.5
        pred = out > 0
    else:
        pred = jnp.argmax(out, axis=-1)
        if labels.shape == out.shape:
            truth = jnp.argmax(labels, axis=-1)
        elif labels.shape == out.shape[:-1]:
            truth = labels
        else:
            raise ValueError(
                f"accuracy: labels must have shape outputs.shape[:-1] (integer classes) or "
                f"outputs.shape (one-hot), got outputs shape {out.shape} and labels shape "
                f"{labels.shape}."
            )
    return jnp.mean(jnp.equal(*num.promote(pred, truth)).astype(jnp.float32))


def _mean_softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Batch mean; integer or one-hot labels, chosen from the labels' shape and dtype."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if labels.ndim == logits.ndim - 1 and jnp.issubdtype(labels.dtype, jnp.integer):
        return jnp.mean(softmax_cross_entropy_with_integer_labels(logits, labels))
    if labels.shape == logits.shape:
        return jnp.mean(softmax_cross_entropy(logits, labels))
    raise ValueError(
        "softmax_cross_entropy: labels must be integer classes of shape logits.shape[:-1] or "
        f"one-hot/probabilities of shape logits.shape; got logits shape {logits.shape}, labels "
        f"shape {labels.shape} (dtype {labels.dtype})."
    )


def _mean_sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over all elements; the shapes must agree."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_same_shape("sigmoid_binary_cross_entropy", logits, "logits", labels, "labels")
    return jnp.mean(sigmoid_binary_cross_entropy(logits, labels))


_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "mse": mse,
    "softmax_cross_entropy": _mean_softmax_cross_entropy,
    "sigmoid_binary_cross_entropy": _mean_sigmoid_binary_cross_entropy,
}

LOSS_NAMES: tuple[str, ...] = tuple(_LOSSES)
"""The loss names :func:`supervised_loss` accepts."""


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            f"batch must be a pair (x, y), got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            + "."
        )
    return batch[0], batch[1]


def supervised_loss(
    apply_fn: Callable[[Params, jax.Array], jax.Array],
    loss: str | Callable[[jax.Array, jax.Array], jax.Array] = "softmax_cross_entropy",
    l2: float = 0.0,
) -> Callable[[Params, tuple], jax.Array]:
    """Build ``loss_fn(params, (x, y)) = loss(apply_fn(params, x), y) + l2_penalty(params, l2)``.

    Args:
      apply_fn: the model's ``apply(params, x)``.
      loss: a name from :data:`LOSS_NAMES` (``"mse"``, ``"softmax_cross_entropy"``, which takes
        integer labels of shape ``(n,)`` or one-hot labels of shape ``(n, classes)``, and
        ``"sigmoid_binary_cross_entropy"``) or a callable ``loss(outputs, y) -> scalar``.
      l2: L2 regularisation weight λ >= 0 (the penalty is ``λ/2 * ||params||²``); a Python 0
        adds nothing to the graph.

    Returns:
      ``loss_fn(params, batch) -> scalar`` with ``batch = (x, y)``, ready for ``jax.grad``.

    >>> from gdopt.models import linear_regression
    >>> model = linear_regression(2)
    >>> loss_fn = supervised_loss(model.apply, "mse", l2=0.5)
    >>> params = {"w": jnp.array([1.0, 0.0]), "b": jnp.array(0.0)}
    >>> round(float(loss_fn(params, (jnp.array([[1.0, 2.0]]), jnp.array([3.0])))), 4)
    4.25
    """
    if isinstance(loss, str):
        if loss not in _LOSSES:
            raise ValueError(
                f"Unknown loss {loss!r}; accepted names: {', '.join(LOSS_NAMES)} "
                "(or pass a callable loss(outputs, y))."
            )
        loss_impl = _LOSSES[loss]
    elif callable(loss):
        loss_impl = loss
    else:
        raise TypeError(f"loss must be a name or a callable, got {type(loss).__name__}.")
    check_nonnegative("l2", l2)
    skip_l2 = isinstance(l2, (int, float)) and l2 == 0

    def loss_fn(params: Params, batch: tuple) -> jax.Array:
        x, y = _split_batch(batch)
        value = loss_impl(apply_fn(params, x), y)
        if skip_l2:
            return value
        return num.add(value, l2_penalty(params, l2))

    return loss_fn


def supervised_accuracy(
    apply_fn: Callable[[Params, jax.Array], jax.Array],
) -> Callable[[Params, tuple], jax.Array]:
    """Build ``accuracy_fn(params, (x, y)) = accuracy(apply_fn(params, x), y)``.

    Args:
      apply_fn: the model's ``apply(params, x)`` returning logits.

    Returns:
      ``accuracy_fn(params, batch) -> float32 scalar`` (see :func:`accuracy`).

    >>> from gdopt.models import logistic_regression
    >>> acc = supervised_accuracy(logistic_regression(1).apply)
    >>> params = {"w": jnp.array([1.0]), "b": jnp.array(0.0)}
    >>> float(acc(params, (jnp.array([[-2.0], [3.0]]), jnp.array([0, 0]))))
    0.5
    """

    def accuracy_fn(params: Params, batch: tuple) -> jax.Array:
        x, y = _split_batch(batch)
        return accuracy(apply_fn(params, x), y)

    return accuracy_fn
