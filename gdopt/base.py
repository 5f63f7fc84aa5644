"""The protocol: gradient transformations, hyperparameter types and their validation.

A gradient transformation is a pair of pure functions::

    init(params) -> state
    update(updates, state, params=None, **extra) -> (new_updates, new_state)

``updates`` is usually the gradient. Keyword ``extra`` arguments (``value``, ``grad``,
``value_fn``...) are passed down every chain; transformations that do not use them accept and
ignore them. The updates a chain returns are *added* to the parameters with
:func:`apply_updates`. This is the protocol Flax's ``TrainState`` and ``nnx.Optimizer`` call, so
a gdopt optimizer can be dropped in wherever an optax one is used.

Hyperparameters (learning rates, decay rates, ...) accept a Python number, a JAX array
(possibly traced: sweeps under ``jax.vmap`` need no wrapper) or a schedule
``f(count) -> value``. Values are validated only when they are concrete.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gdopt.tree import check_same_structure

__all__ = [
    "Params",
    "Updates",
    "OptState",
    "Schedule",
    "ScalarOrSchedule",
    "TransformInitFn",
    "TransformUpdateFn",
    "GradientTransformation",
    "EmptyState",
    "apply_updates",
    "identity",
    "set_to_zero",
    "is_concrete",
    "resolve",
    "check_scalar",
    "check_decay",
    "check_learning_rate",
    "check_nonnegative",
    "safe_increment",
    "validation_disabled",
]

_VALIDATE = contextvars.ContextVar("gdopt_validate_hyperparams", default=True)


@contextlib.contextmanager
def validation_disabled():
    """Within this context :func:`check_scalar` accepts anything.

    Used when a transform is rebuilt inside ``update`` from values a schedule produced (a
    decaying learning rate legitimately reaches 0); the user's own arguments are checked once,
    when the optimizer is built.
    """
    token = _VALIDATE.set(False)
    try:
        yield
    finally:
        _VALIDATE.reset(token)


Params = Any
"""A pytree of floating-point arrays."""
Updates = Any
"""A pytree with the structure of the parameters."""
OptState = Any
"""A pytree of arrays (usually NamedTuples)."""
Schedule = Callable[[jax.Array], Any]
"""A pure function ``count -> value`` (``count`` is the int32 step counter starting at 0)."""
ScalarOrSchedule = float | int | jax.Array | np.ndarray | Schedule


class TransformInitFn(Protocol):
    """``init(params) -> state``."""

    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    """``update(updates, state, params=None, **extra) -> (updates, state)``."""

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A stateless pair of pure functions that turns gradients into parameter updates.

    Attributes:
      init: ``init(params) -> state``; the state is a pytree of arrays.
      update: ``update(updates, state, params=None, **extra) -> (updates, new_state)``.
        Unknown keyword ``extra`` arguments are accepted and ignored.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.sgd(0.1)
    >>> params = {"w": jnp.array([1.0, 2.0])}
    >>> state = opt.init(params)
    >>> updates, state = opt.update({"w": jnp.array([1.0, 1.0])}, state, params)
    >>> [round(x, 6) for x in gdopt.apply_updates(params, updates)["w"].tolist()]
    [0.9, 1.9]
    """

    init: TransformInitFn
    update: TransformUpdateFn


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates`` leafwise, keeping each parameter's dtype.

    ``None`` leaves in ``updates`` (e.g. frozen parameters) leave the parameter unchanged.

    Args:
      params: the current parameters.
      updates: the updates returned by a transformation's ``update``.

    Returns:
      The new parameters, each leaf in the dtype of the old one.

    Raises:
      ValueError: when the two trees differ in structure (the message names the key path).

    >>> apply_updates({"w": jnp.ones(2, jnp.bfloat16)}, {"w": jnp.ones(2)})["w"].dtype
    dtype(bfloat16)
    """
    try:
        return jax.tree.map(
            lambda p, u: p if u is None else (jnp.asarray(p) + u).astype(jnp.asarray(p).dtype),
            params,
            updates,
            is_leaf=lambda x: x is None,
        )
    except ValueError:
        check_same_structure(updates, params, ("updates", "params"))
        raise


def identity() -> GradientTransformation:
    """A transformation that returns the updates unchanged and keeps no state.

    >>> opt = identity()
    >>> opt.update({"w": 1.0}, opt.init({"w": 0.0}))[0]
    {'w': 1.0}
    """

    def init(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del params, extra
        return updates, state

    return GradientTransformation(init, update)


def set_to_zero() -> GradientTransformation:
    """A transformation that turns every update into zeros (the parameters do not move)."""

    def init(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del params, extra
        return jax.tree.map(jnp.zeros_like, updates), state

    return GradientTransformation(init, update)


def is_concrete(value: Any) -> bool:
    """True when ``value`` can be inspected on the host (it is not a tracer inside jit/vmap)."""
    leaves = jax.tree.leaves(value)
    return not any(isinstance(x, jax.core.Tracer) for x in leaves)


def resolve(value: ScalarOrSchedule, count: jax.Array) -> Any:
    """Evaluate a hyperparameter at step ``count``: call it if it is a schedule."""
    return value(count) if callable(value) else value


def check_scalar(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> None:
    """Validate a numeric hyperparameter when its value is concrete.

    Schedules and traced values are not inspected (validation must never break tracing).
    Raises ``ValueError`` that names the argument, the accepted range and the value given,
    and ``TypeError`` when the value is not a number.

    Args:
      name: the argument's name, as the user wrote it.
      value: the value to check.
      low, high: the bounds; ``low_open``/``high_open`` exclude them.
      allow_none: accept ``None``.

    >>> check_scalar("learning_rate", -1.0, low=0.0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be a finite number in (0, inf), got -1.0.
    """
    if not _VALIDATE.get():
        return
    if value is None:
        if allow_none:
            return
        raise TypeError(f"{name} must be a number, an array or a schedule, got None.")
    if callable(value) or not is_concrete(value):
        return
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got the bool {value!r}.")
    try:
        arr = np.asarray(value)
    except Exception as e:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} must be a number, an array or a schedule, got {value!r}.") from e
    if not (np.issubdtype(arr.dtype, np.number)):
        raise TypeError(
            f"{name} must be a number, an array or a schedule, got {type(value).__name__} "
            f"{value!r}."
        )
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    rng = f"{'(' if low is None or low_open else '['}{lo}, {hi}{')' if high is None or high_open else ']'}"
    shown = value if arr.ndim == 0 else arr
    msg = f"{name} must be a finite number in {rng}, got {shown}."
    if not np.all(np.isfinite(arr)):
        raise ValueError(msg)
    if low is not None and (np.any(arr <= low) if low_open else np.any(arr < low)):
        raise ValueError(msg)
    if high is not None and (np.any(arr >= high) if high_open else np.any(arr > high)):
        raise ValueError(msg)


def check_decay(name: str, value: Any) -> None:
    """Validate a decay rate / momentum coefficient: concrete values must lie in [0, 1)."""
    check_scalar(name, value, low=0.0, high=1.0, high_open=True)


def check_learning_rate(value: Any, name: str = "learning_rate") -> None:
    """Validate a learning rate: concrete values must be finite and > 0."""
    check_scalar(name, value, low=0.0, low_open=True)


def check_nonnegative(name: str, value: Any) -> None:
    """Validate a constant that must be finite and >= 0 (``eps``, ``weight_decay``...)."""
    check_scalar(name, value, low=0.0)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the dtype's maximum instead of wrapping around."""
    count = jnp.asarray(count)
    top = jnp.iinfo(count.dtype).max if jnp.issubdtype(count.dtype, jnp.integer) else math.inf
    return jnp.where(count < top, count + 1, count)
