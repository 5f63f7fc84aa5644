"""Pure model builders: linear models and multi-layer perceptrons.

A model is a pair of pure functions (:class:`Model`)::

    init(key) -> params          # a pytree of arrays drawn from the PRNG key
    apply(params, x) -> outputs  # x has shape (..., in_features)

Parameters are plain dicts and lists of arrays, so any gdopt optimizer (or ``jax.grad``)
works on them directly. ``apply`` casts ``x`` to the parameters' dtype, so integer inputs and
bfloat16 models need no extra code. ``init`` is ``jax.jit``-compiled (drawing random numbers
op by op would compile many small kernels) and shared by every model with the same layer
shapes, init scales and dtype; ``apply`` is plain traceable ``jnp`` code.

Initialisation (biases always start at zero):

- linear models: LeCun normal, ``w ~ N(0, 1 / fan_in)``;
- :func:`mlp` with a ReLU-family activation (relu, gelu, silu/swish, elu, leaky_relu):
  He normal, ``w ~ N(0, 2 / fan_in)`` (He et al., "Delving Deep into Rectifiers", ICCV 2015,
  https://arxiv.org/abs/1502.01852);
- :func:`mlp` with tanh, sigmoid, identity or a custom callable: Glorot normal,
  ``w ~ N(0, 2 / (fan_in + fan_out))`` (Glorot & Bengio, "Understanding the difficulty of
  training deep feedforward neural networks", AISTATS 2010).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gdopt.base import Params

__all__ = [
    "Model",
    "ACTIVATIONS",
    "linear",
    "linear_regression",
    "logistic_regression",
    "mlp",
]


class Model(NamedTuple):
    """A model as two pure functions.

    Attributes:
      init: ``init(key) -> params``, a pytree of arrays drawn from the PRNG key.
      apply: ``apply(params, x) -> outputs`` for inputs of shape ``(..., in_features)``.
    """

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]


def _leaky_relu(x: jax.Array) -> jax.Array:
    return jax.nn.leaky_relu(x, negative_slope=0.01)


def _identity(x: jax.Array) -> jax.Array:
    return x


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "elu": jax.nn.elu,
    "leaky_relu": _leaky_relu,
    "identity": _identity,
}
"""The activation names :func:`mlp` accepts (``leaky_relu`` uses a slope of 0.01)."""

_HE_ACTIVATIONS = frozenset({"relu", "gelu", "silu", "swish", "elu", "leaky_relu"})


def _check_features(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}."
        )
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}.")
    return int(value)


def _check_dtype(dtype: Any) -> Any:
    try:
        dt = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype!r}.") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"dtype must be a floating-point dtype (parameters are), got {dt}.")
    return dt


def _check_input(x: Any, in_features: int, dtype: Any) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"x must have shape (..., {in_features}) (last axis = in_features), got shape "
            f"{x.shape}."
        )
    return x.astype(dtype)


@functools.lru_cache(maxsize=64)
def _dense_init(
    layers: tuple[tuple[tuple[int, ...], tuple[int, ...], float], ...], dtype: Any
) -> Callable[[jax.Array], list[dict[str, jax.Array]]]:
    """A compiled ``init(key) -> [{"w": N(0, std²) of w_shape, "b": zeros(b_shape)}, ...]``.

    ``layers`` holds ``(w_shape, b_shape, std)`` per layer. All weights come from one standard
    normal draw of their total size (one random-number kernel to compile), split in order.
    """
    sizes = [math.prod(w_shape) for w_shape, _, _ in layers]

    def init(key: jax.Array) -> list[dict[str, jax.Array]]:
        flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
        out, start = [], 0
        for (w_shape, b_shape, std), size in zip(layers, sizes, strict=True):
            w = std * flat[start : start + size].reshape(w_shape)
            out.append({"w": w.astype(dtype), "b": jnp.zeros(b_shape, dtype)})
            start += size
        return out

    return jax.jit(init)


def linear(in_features: int, out_features: int = 1, *, dtype: Any = jnp.float32) -> Model:
    """A dense affine map ``x @ w + b``.

    The output keeps its feature axis even when ``out_features == 1``: ``apply`` returns shape
    ``(..., out_features)``. Use :func:`linear_regression` for one scalar per example.

    Args:
      in_features: size of the input's last axis (int >= 1).
      out_features: number of outputs (int >= 1).
      dtype: dtype of the parameters (inputs are cast to it).

    Returns:
      A :class:`Model` with params ``{"w": (in_features, out_features), "b": (out_features,)}``,
      ``w`` LeCun normal and ``b`` zero.

    >>> model = linear(3, 2)
    >>> params = model.init(jax.random.PRNGKey(0))
    >>> model.apply(params, jnp.ones((5, 3))).shape
    (5, 2)
    """
    in_features = _check_features("in_features", in_features)
    out_features = _check_features("out_features", out_features)
    dtype = _check_dtype(dtype)
    draw = _dense_init(
        (((in_features, out_features), (out_features,), 1.0 / math.sqrt(in_features)),), dtype
    )

    def init(key: jax.Array) -> Params:
        return draw(key)[0]

    def apply(params: Params, x: jax.Array) -> jax.Array:
        x = _check_input(x, in_features, params["w"].dtype)
        return x @ params["w"] + params["b"]

    return Model(init, apply)


def linear_regression(in_features: int, *, dtype: Any = jnp.float32) -> Model:
    """Linear regression ``y = x @ w + b`` with one scalar output per example.

    Args:
      in_features: number of input features (int >= 1).
      dtype: dtype of the parameters.

    Returns:
      A :class:`Model` with params ``{"w": (in_features,), "b": ()}`` (``w`` LeCun normal,
      ``b`` zero); ``apply`` maps ``(n, in_features)`` to ``(n,)``.

    >>> model = linear_regression(4)
    >>> params = model.init(jax.random.PRNGKey(0))
    >>> model.apply(params, jnp.ones((7, 4))).shape
    (7,)
    """
    in_features = _check_features("in_features", in_features)
    dtype = _check_dtype(dtype)
    draw = _dense_init((((in_features,), (), 1.0 / math.sqrt(in_features)),), dtype)

    def init(key: jax.Array) -> Params:
        return draw(key)[0]

    def apply(params: Params, x: jax.Array) -> jax.Array:
        x = _check_input(x, in_features, params["w"].dtype)
        return x @ params["w"] + params["b"]

    return Model(init, apply)


def logistic_regression(
    in_features: int, num_classes: int = 2, *, dtype: Any = jnp.float32
) -> Model:
    """Logistic (``num_classes == 2``) or softmax (``num_classes > 2``) regression.

    The model outputs logits; pair it with :func:`gdopt.losses.sigmoid_binary_cross_entropy`
    (binary) or :func:`gdopt.losses.softmax_cross_entropy_with_integer_labels` (multi-class).

    Args:
      in_features: number of input features (int >= 1).
      num_classes: number of classes (int >= 2).
      dtype: dtype of the parameters.

    Returns:
      A :class:`Model`. Binary: params ``{"w": (in_features,), "b": ()}`` and ``apply`` returns
      one logit per example, shape ``(n,)`` (positive means class 1). Multi-class: params
      ``{"w": (in_features, num_classes), "b": (num_classes,)}`` and ``apply`` returns logits
      of shape ``(n, num_classes)``. ``w`` is LeCun normal, ``b`` zero.

    >>> model = logistic_regression(64, 10)
    >>> params = model.init(jax.random.PRNGKey(0))
    >>> model.apply(params, jnp.zeros((3, 64))).shape
    (3, 10)
    >>> binary = logistic_regression(2)
    >>> binary.apply(binary.init(jax.random.PRNGKey(0)), jnp.ones((4, 2))).shape
    (4,)
    """
    in_features = _check_features("in_features", in_features)
    num_classes = _check_features("num_classes", num_classes, minimum=2)
    if num_classes == 2:
        return linear_regression(in_features, dtype=dtype)
    return linear(in_features, num_classes, dtype=dtype)


def mlp(
    sizes: Sequence[int],
    activation: str | Callable[[jax.Array], jax.Array] = "relu",
    *,
    dtype: Any = jnp.float32,
) -> Model:
    """A multi-layer perceptron: dense layers with ``activation`` between them.

    ``sizes = [in, hidden_1, ..., out]`` gives ``len(sizes) - 1`` dense layers; every layer but
    the last is followed by the activation, and the last is linear (its outputs are logits or
    regression values).

    Args:
      sizes: layer widths, at least two ints >= 1 (input and output).
      activation: a name from :data:`ACTIVATIONS` (relu, tanh, sigmoid, gelu, silu/swish, elu,
        leaky_relu, identity) or a callable applied elementwise.
      dtype: dtype of the parameters.

    Returns:
      A :class:`Model` whose params are a list with one ``{"w": (a, b), "b": (b,)}`` dict per
      layer; ``w`` is He normal for ReLU-family activations and Glorot normal otherwise (also
      for a callable), ``b`` zero. ``apply`` maps ``(..., sizes[0])`` to ``(..., sizes[-1])``.

    Raises:
      ValueError / TypeError: ``sizes`` has fewer than two entries or a non-positive or
        non-integer entry; ``activation`` is an unknown name or not callable.

    >>> model = mlp([64, 32, 10], "tanh")
    >>> params = model.init(jax.random.PRNGKey(0))
    >>> [p["w"].shape for p in params]
    [(64, 32), (32, 10)]
    >>> model.apply(params, jnp.zeros((5, 64))).shape
    (5, 10)
    """
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(
            f"sizes must be a sequence of ints [in, hidden..., out], got {type(sizes).__name__}."
        )
    if len(sizes) < 2:
        raise ValueError(
            f"sizes must have at least two entries [in, ..., out], got {list(sizes)!r}."
        )
    sizes = [_check_features(f"sizes[{i}]", s) for i, s in enumerate(sizes)]
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {activation!r}; accepted names: "
                f"{', '.join(sorted(ACTIVATIONS))} (or pass a callable)."
            )
        act = ACTIVATIONS[activation]
        he = activation in _HE_ACTIVATIONS
    elif callable(activation):
        act, he = activation, False
    else:
        raise TypeError(
            f"activation must be a name or a callable, got {type(activation).__name__}."
        )
    dtype = _check_dtype(dtype)
    shapes = list(zip(sizes[:-1], sizes[1:], strict=True))
    stds = [
        math.sqrt(2.0 / fan_in) if he else math.sqrt(2.0 / (fan_in + fan_out))
        for fan_in, fan_out in shapes
    ]
    init = _dense_init(
        tuple(((a, b), (b,), std) for (a, b), std in zip(shapes, stds, strict=True)), dtype
    )

    def apply(params: Params, x: jax.Array) -> jax.Array:
        if len(params) != len(shapes):
            raise ValueError(
                f"params has {len(params)} layers but this mlp has {len(shapes)} (sizes {sizes})."
            )
        h = _check_input(x, sizes[0], params[0]["w"].dtype)
        for i, layer in enumerate(params):
            h = h @ layer["w"] + layer["b"]
            if i < len(params) - 1:
                h = act(h)
        return h

    return Model(init, apply)
