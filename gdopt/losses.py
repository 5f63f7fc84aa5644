"""Loss functions and metrics: pure, jit-able, averaged over the batch unless stated.

Every function takes model outputs first and targets second. Shapes are checked eagerly
(they are static under ``jit``), so a silent broadcast such as ``(n, 1) - (n,) -> (n, n)``
becomes a ``ValueError`` that shows both shapes. Inputs in a low-precision float dtype
(bfloat16, float16) are promoted to float32 before the reduction, so losses are accurate;
float64 stays float64.

:func:`supervised_loss` and :func:`supervised_accuracy` turn a model's ``apply`` function into
``loss_fn(params, (x, y))``, the shape the training engine differentiates.
"""

from __future__ import annotations

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
    "squared_error",
    "mse",
    "l2_penalty",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "sigmoid_binary_cross_entropy",
    "accuracy",
    "supervised_loss",
    "supervised_accuracy",
]


def _float(x: Any) -> jax.Array:
    """``x`` as an array of a float dtype with at least float32 precision."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.float32)
    return x.astype(num.promote_types(x.dtype, jnp.float32))


def _check_same_shape(what: str, a: jax.Array, a_name: str, b: jax.Array, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{what}: {a_name} and {b_name} must have the same shape, got {a_name} shape "
            f"{a.shape} and {b_name} shape {b.shape}."
        )


def _check_has_class_axis(what: str, logits: jax.Array) -> None:
    if logits.ndim == 0:
        raise ValueError(f"{what}: logits must have a class axis (shape (..., classes)), got ().")


def squared_error(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Elementwise squared error ``(pred - target)**2`` (no reduction).

    Args:
      pred: predictions.
      target: targets of the same shape.

    Returns:
      An array of the common shape.

    >>> squared_error(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])).tolist()
    [1.0, 4.0]
    """
    pred, target = _float(pred), _float(target)
    _check_same_shape("squared_error", pred, "pred", target, "target")
    return jnp.square(num.sub(pred, target))  # the dtypes may differ (float32, float64)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error ``mean((pred - target)**2)`` over all elements (no factor 1/2).

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


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy between ``softmax(logits)`` and target distributions, batch mean.

    ``-sum_c labels[..., c] * log_softmax(logits)[..., c]`` per example, averaged over all
    leading axes; ``log_softmax`` is computed stably (the max logit is subtracted first).

    Args:
      logits: shape ``(..., classes)``.
      labels: one-hot vectors or probabilities of the same shape.

    Returns:
      A scalar.

    >>> logits = jnp.array([[2.0, 0.0], [0.0, 0.0]])
    >>> round(float(softmax_cross_entropy(logits, jnp.array([[1.0, 0.0], [0.0, 1.0]]))), 4)
    0.41
    """
    logits, labels = _float(logits), _float(labels)
    _check_has_class_axis("softmax_cross_entropy", logits)
    _check_same_shape("softmax_cross_entropy", logits, "logits", labels, "labels")
    logp = jax.nn.log_softmax(logits, axis=-1)
    # 0 * log(0) counts as 0 (classes masked with -inf logits and zero target).
    terms = jnp.where(labels == 0, 0.0, num.mul(labels, logp))
    return jnp.mean(-jnp.sum(terms, axis=-1))


def _check_integer_labels(what: str, logits: jax.Array, labels: jax.Array) -> None:
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"{what}: integer labels must have shape logits.shape[:-1], got logits shape "
            f"{logits.shape} and labels shape {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"{what}: labels must be integer class indices, got dtype {labels.dtype} (use "
            "softmax_cross_entropy for one-hot or probability labels)."
        )
    if is_concrete(labels) and labels.size:
        host = np.asarray(labels)  # a concrete array, even while jit traces a caller
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= logits.shape[-1]:
            raise ValueError(
                f"{what}: labels must lie in [0, {logits.shape[-1] - 1}] for "
                f"{logits.shape[-1]} classes, got values in [{lo}, {hi}]."
            )


def softmax_cross_entropy_with_integer_labels(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of ``softmax(logits)`` against integer class labels, batch mean.

    ``-log_softmax(logits)[..., labels]`` per example, averaged; equal to
    :func:`softmax_cross_entropy` with one-hot labels.

    Args:
      logits: shape ``(..., classes)``.
      labels: integer class indices of shape ``logits.shape[:-1]`` (concrete labels outside
        ``[0, classes)`` raise ``ValueError``).

    Returns:
      A scalar.

    >>> logits = jnp.array([[2.0, 0.0], [0.0, 0.0]])
    >>> round(float(softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 1]))), 4)
    0.41
    """
    labels = jnp.asarray(labels)
    logits = _float(logits)
    what = "softmax_cross_entropy_with_integer_labels"
    _check_has_class_axis(what, logits)
    _check_integer_labels(what, logits, labels)
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.mean(-picked)


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Binary cross-entropy of ``sigmoid(logits)`` against labels in ``{0, 1}`` or probabilities.

    Per element ``-y log σ(z) - (1 - y) log(1 - σ(z))``, computed in the overflow-free form
    ``max(z, 0) - z y + log(1 + exp(-|z|))``, averaged over all elements.

    Args:
      logits: any shape.
      labels: same shape; ints, bools or probabilities in ``[0, 1]``.

    Returns:
      A scalar.

    >>> round(float(sigmoid_binary_cross_entropy(jnp.array([0.0, 1000.0]), jnp.array([1, 1]))), 4)
    0.3466
    """
    logits, labels = _float(logits), _float(labels)
    _check_same_shape("sigmoid_binary_cross_entropy", logits, "logits", labels, "labels")
    per = num.add(
        num.sub(jnp.maximum(logits, 0.0), num.mul(logits, labels)),
        jnp.log1p(jnp.exp(-jnp.abs(logits))),
    )
    return jnp.mean(per)


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


def _softmax_cross_entropy_any_labels(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Integer or one-hot labels, chosen from the labels' shape and dtype (static under jit)."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if labels.ndim == logits.ndim - 1 and jnp.issubdtype(labels.dtype, jnp.integer):
        return softmax_cross_entropy_with_integer_labels(logits, labels)
    if labels.shape == logits.shape:
        return softmax_cross_entropy(logits, labels)
    raise ValueError(
        "softmax_cross_entropy: labels must be integer classes of shape logits.shape[:-1] or "
        f"one-hot/probabilities of shape logits.shape; got logits shape {logits.shape}, labels "
        f"shape {labels.shape} (dtype {labels.dtype})."
    )


_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "mse": mse,
    "softmax_cross_entropy": _softmax_cross_entropy_any_labels,
    "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
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
