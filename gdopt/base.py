"""The protocol: gradient transformations, their states, and the hyperparameter types.

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
``f(count) -> value``. The types below say what each accepts; the factories check concrete
values against them (:mod:`gdopt._validation`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics as num
from gdopt._numerics import add
from gdopt._traits import Traits, with_traits
from gdopt._validation import Integer, Interval
from gdopt.tree import check_same_structure

__all__ = [
    "Params",
    "Updates",
    "OptState",
    "Schedule",
    "ScalarOrSchedule",
    "LearningRate",
    "Decay",
    "OptionalDecay",
    "NonNegative",
    "OptionalNonNegative",
    "Positive",
    "Unit",
    "Real",
    "DecayValue",
    "OptionalDecayValue",
    "NonNegativeValue",
    "OptionalNonNegativeValue",
    "PositiveValue",
    "UnitValue",
    "RealValue",
    "Steps",
    "OptionalSteps",
    "Period",
    "OptionalLearningRate",
    "OptionalPositive",
    "OpenUnit",
    "DecayPair",
    "TransformInitFn",
    "TransformUpdateFn",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "EmptyState",
    "apply_updates",
    "init_empty_state",
    "identity",
    "set_to_zero",
    "resolve",
    "incremental_update",
    "periodic_update",
]


Params = Any
"""A pytree of floating-point arrays."""
Updates = Any
"""A pytree with the structure of the parameters."""
OptState = Any
"""A pytree of arrays (usually NamedTuples)."""
Schedule = Callable[[jax.Array], Any]
"""A pure function ``count -> value`` (``count`` is the int32 step counter starting at 0)."""
ScalarOrSchedule = float | int | jax.Array | np.ndarray | Schedule

# The hyperparameter types: what a factory's argument accepts. A named optimizer keeps every
# argument of these types in its state (see gdopt.named_optimizer).
LearningRate = Annotated[ScalarOrSchedule, Interval(0.0, low_open=True)]
"""A learning rate: a number > 0, an array or a schedule."""
Decay = Annotated[float | jax.Array | Schedule, Interval(0.0, 1.0, high_open=True)]
"""A decay rate or momentum coefficient in [0, 1)."""
OptionalDecay = Annotated[
    float | jax.Array | Schedule | None, Interval(0.0, 1.0, high_open=True, optional=True)
]
"""A decay rate in [0, 1), or ``None`` (the feature is off)."""
NonNegative = Annotated[float | jax.Array | Schedule, Interval(0.0)]
"""A constant >= 0 (``eps``, ``weight_decay``...)."""
OptionalNonNegative = Annotated[float | jax.Array | Schedule | None, Interval(0.0, optional=True)]
"""A constant >= 0, or ``None`` (the feature is off)."""
Positive = Annotated[float | jax.Array | Schedule, Interval(0.0, low_open=True)]
"""A constant > 0."""
Unit = Annotated[float | jax.Array | Schedule, Interval(0.0, 1.0)]
"""A fraction in [0, 1]."""
Real = Annotated[float | jax.Array | Schedule, Interval()]
"""Any finite number."""
# The same kinds for the arguments of a transform that does not evaluate schedules itself
# (a named optimizer evaluates its schedules and passes their values to its transforms).
DecayValue = Annotated[float | jax.Array, Interval(0.0, 1.0, high_open=True, schedule=False)]
"""A decay rate in [0, 1): a number or an array."""
OptionalDecayValue = Annotated[
    float | jax.Array | None, Interval(0.0, 1.0, high_open=True, optional=True, schedule=False)
]
"""A decay rate in [0, 1), or ``None``."""
NonNegativeValue = Annotated[float | jax.Array, Interval(0.0, schedule=False)]
"""A constant >= 0: a number or an array."""
OptionalNonNegativeValue = Annotated[
    float | jax.Array | None, Interval(0.0, optional=True, schedule=False)
]
"""A constant >= 0, or ``None``."""
PositiveValue = Annotated[float | jax.Array, Interval(0.0, low_open=True, schedule=False)]
"""A constant > 0: a number or an array."""
UnitValue = Annotated[float | jax.Array, Interval(0.0, 1.0, schedule=False)]
"""A fraction in [0, 1]: a number or an array."""
RealValue = Annotated[float | jax.Array, Interval(schedule=False)]
"""Any finite number: a number or an array."""
Steps = Annotated[int, Integer(1)]
"""A count >= 1 that fixes a loop length or a period (static, not a hyperparameter)."""
OptionalSteps = Annotated[int | None, Integer(1, optional=True)]
"""A count >= 1, or ``None`` (the feature is off)."""
Period = Annotated[int | jax.Array, Integer(1, dynamic=True)]
"""An integer period >= 1 kept as a hyperparameter (an array in the state, as optax's)."""
OptionalLearningRate = Annotated[
    ScalarOrSchedule | None, Interval(0.0, low_open=True, optional=True)
]
"""A learning rate > 0, or ``None`` (the method's own default)."""
OptionalPositive = Annotated[
    float | jax.Array | Schedule | None, Interval(0.0, low_open=True, optional=True)
]
"""A constant > 0, or ``None`` (the feature is off)."""
OpenUnit = Annotated[float | jax.Array | Schedule, Interval(0.0, 1.0, True, True)]
"""A fraction in (0, 1), e.g. an interpolation weight."""
DecayPair = Annotated[
    tuple[float, float] | jax.Array, Interval(0.0, 1.0, high_open=True, schedule=False, length=2)
]
"""A pair ``(β1, β2)`` of decay rates in [0, 1)."""


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


GradientTransformationExtraArgs = GradientTransformation
"""optax's name for a transformation whose ``update`` takes keyword extras: in gdopt every
transformation does, so this is :class:`GradientTransformation` itself."""


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


def _apply_leaf(path: Any, p: Any, u: Any) -> Any:
    if u is None:
        return p
    p = jnp.asarray(p)
    where = jax.tree_util.keystr(tuple(path))
    if not (jnp.issubdtype(p.dtype, jnp.floating) or jnp.issubdtype(p.dtype, jnp.complexfloating)):
        raise TypeError(
            f"apply_updates: params{where} has dtype {p.dtype}; an update would be rounded "
            "away. Parameters must be floating point: keep integer and boolean values out of "
            "the parameter pytree."
        )
    u_dtype = jnp.result_type(u)
    if not jnp.issubdtype(u_dtype, jnp.inexact):
        raise TypeError(
            f"apply_updates: updates{where} has dtype {u_dtype}; updates must be floating "
            "point (pass the output of an optimizer's update)."
        )
    if jnp.issubdtype(u_dtype, jnp.complexfloating) and not jnp.iscomplexobj(p):
        raise TypeError(
            f"apply_updates: updates{where} is complex ({u_dtype}) but params{where} is real "
            f"({p.dtype})."
        )
    if np.shape(u) != p.shape:
        raise ValueError(
            f"apply_updates: updates{where} has shape {np.shape(u)} but params{where} has "
            f"shape {p.shape}; an update must have its parameter's shape (it is never "
            "broadcast)."
        )
    return add(p, u).astype(p.dtype)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates`` leafwise, keeping each parameter's dtype.

    ``None`` leaves in ``updates`` (e.g. frozen parameters) leave the parameter unchanged.
    The two trees are checked leaf by leaf when the call is traced (no cost at run time):
    the same structure, each update of its parameter's shape (never broadcast), floating
    point on both sides.

    Args:
      params: the current parameters.
      updates: the updates returned by a transformation's ``update``.

    Returns:
      The new parameters, each leaf in the dtype of the old one.

    Raises:
      ValueError: when the two trees differ in structure, or an update's shape differs from
        its parameter's (the message names the key path).
      TypeError: a parameter that is not floating point (an update would be rounded away),
        an update that is not floating point, or a complex update of a real parameter.

    >>> apply_updates({"w": jnp.ones(2, jnp.bfloat16)}, {"w": jnp.ones(2)})["w"].dtype
    dtype(bfloat16)
    >>> apply_updates({"w": jnp.ones(2)}, {"w": jnp.ones(3)})
    Traceback (most recent call last):
    ...
    ValueError: apply_updates: updates['w'] has shape (3,) but params['w'] has shape (2,); an update must have its parameter's shape (it is never broadcast).
    """
    if jax.tree.structure(updates, is_leaf=_is_none) != jax.tree.structure(params):
        check_same_structure(updates, params, ("updates", "params"))  # names the key path
    try:
        return jax.tree_util.tree_map_with_path(_apply_leaf, params, updates, is_leaf=_is_none)
    except ValueError as e:
        if str(e).startswith("apply_updates:"):
            raise
        check_same_structure(updates, params, ("updates", "params"))
        raise


def _is_none(x: Any) -> bool:
    return x is None


def init_empty_state(params: Params) -> EmptyState:
    """The ``init`` of a stateless transformation: an :class:`EmptyState` whatever the params.

    >>> init_empty_state({"w": 1.0})
    EmptyState()
    """
    del params
    return EmptyState()


def _identity_update(updates, state, params=None, **extra):
    del params, extra
    return updates, state


def _zero_update(updates, state, params=None, **extra):
    del params, extra
    return jax.tree.map(jnp.zeros_like, updates), state


def identity() -> GradientTransformation:
    """A transformation that returns the updates unchanged and keeps no state.

    >>> opt = identity()
    >>> opt.update({"w": 1.0}, opt.init({"w": 0.0}))[0]
    {'w': 1.0}
    """
    tx = GradientTransformation(init_empty_state, lambda *a, **k: _identity_update(*a, **k))
    return with_traits(tx, Traits(packable=True, key=("identity",)))


def set_to_zero() -> GradientTransformation:
    """A transformation that turns every update into zeros (the parameters do not move).

    >>> opt = set_to_zero()
    >>> float(opt.update({"w": jnp.array(3.0)}, opt.init(None))[0]["w"])
    0.0
    """
    tx = GradientTransformation(init_empty_state, lambda *a, **k: _zero_update(*a, **k))
    return with_traits(tx, Traits(packable=True, key=("set_to_zero",)))


def resolve(value: ScalarOrSchedule, count: jax.Array) -> Any:
    """Evaluate a hyperparameter at step ``count``: call it if it is a schedule."""
    return value(count) if callable(value) else value


# ----------------------------------------------------------------------------- target updates


def incremental_update(new_tensors: Any, old_tensors: Any, step_size: Any) -> Any:
    """Polyak averaging: ``step_size · new + (1 - step_size) · old`` leafwise.

    >>> incremental_update({"w": jnp.array(1.0)}, {"w": jnp.array(0.0)}, 0.25)["w"].tolist()
    0.25
    """
    return jax.tree.map(
        lambda new, old: num.add(num.mul(step_size, new), num.mul(num.sub(1.0, step_size), old)),
        new_tensors,
        old_tensors,
    )


def periodic_update(
    new_tensors: Any, old_tensors: Any, steps: jax.Array, update_period: int
) -> Any:
    """``new`` on steps that are multiples of ``update_period``, ``old`` otherwise.

    >>> periodic_update({"w": jnp.array(1.0)}, {"w": jnp.array(0.0)}, jnp.array(4), 2)["w"].tolist()
    1.0
    """
    take_new = steps % update_period == 0
    return jax.tree.map(lambda new, old: num.where(take_new, new, old), new_tensors, old_tensors)
