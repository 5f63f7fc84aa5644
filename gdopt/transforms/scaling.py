"""Scaling transforms: by a constant, a schedule or a learning rate.

Every named optimizer ends with :func:`scale_by_learning_rate`, which turns a descent
direction into the update to add to the parameters.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

import jax
import jax.numpy as jnp

from gdopt._numerics import cast_like, mul, safe_increment, tree_map
from gdopt._traits import transform
from gdopt._validation import Interval, check_callable
from gdopt.base import (
    GradientTransformation,
    RealValue,
    ScalarOrSchedule,
    Schedule,
    identity,
    init_empty_state,
)

__all__ = [
    "scale",
    "scale_by_schedule",
    "scale_by_learning_rate",
    "ScaleState",
    "ScaleByScheduleState",
]


class ScaleState(NamedTuple):
    """Stateless; kept for symmetry with optax's ``ScaleState``."""


@transform(packable=True)
def scale(step_size: RealValue) -> GradientTransformation:
    """Multiply every update by a constant: ``u <- step_size * u``.

    Args:
      step_size: a finite number or a (possibly traced) array.

    >>> t = scale(-0.5)
    >>> t.update({"w": jnp.array(2.0)}, t.init(None))[0]["w"].item()
    -1.0
    """

    def update(updates, state, params=None, **extra):
        del params, extra
        return tree_map(lambda u: cast_like(mul(step_size, u), u), updates), state

    return GradientTransformation(init_empty_state, update)


class ScaleByScheduleState(NamedTuple):
    """The step counter of a schedule."""

    count: jax.Array


@transform(packable=True)
def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiply the updates by ``step_size_fn(count)``; ``count`` starts at 0.

    >>> t = scale_by_schedule(lambda c: 1.0 / (c.astype(jnp.float32) + 1))
    >>> s = t.init({"w": 0.0})
    >>> u, s = t.update({"w": jnp.array(1.0)}, s)
    >>> u, s = t.update({"w": jnp.array(1.0)}, s)
    >>> u["w"].item()
    0.5
    """
    check_callable("step_size_fn", step_size_fn, "a callable count -> value")

    def init(params):
        del params
        return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, **extra):
        del params, extra
        step = step_size_fn(state.count)
        updates = tree_map(lambda u: cast_like(mul(step, u), u), updates)
        return updates, ScaleByScheduleState(count=safe_increment(state.count))

    return GradientTransformation(init, update)


RateOrNone = Annotated[ScalarOrSchedule | None, Interval(0.0, optional=True)]


@transform(packable=True)
def scale_by_learning_rate(
    learning_rate: RateOrNone = None, *, flip_sign: bool = True
) -> GradientTransformation:
    """Multiply the updates by ``-learning_rate`` (``+`` with ``flip_sign=False``).

    The sign flip turns a descent direction into an update to *add* to the parameters.
    A schedule is evaluated at this transform's own step counter. As a building block it
    accepts a rate of 0 (a schedule that decays to 0 ends there); the named optimizers ask
    for a rate > 0.

    Args:
      learning_rate: a number >= 0, an array (may be traced) or a schedule
        ``count -> value``; ``None`` (the default, as in optax) returns :func:`identity` (no
        scaling and no sign flip: for chains whose direction already is the update, e.g.
        line searches).
      flip_sign: multiply by ``-learning_rate`` (gradient descent) when True.

    >>> t = scale_by_learning_rate(0.1)
    >>> round(t.update({"w": jnp.array(1.0)}, t.init(None))[0]["w"].item(), 6)
    -0.1
    """
    if learning_rate is None:
        return identity()
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)
