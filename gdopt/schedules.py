"""Schedules: pure functions ``count -> value`` and their combinators.

``count`` is the step counter kept by the optimizer (an int32 array starting at 0). Every
schedule here is jit- and vmap-friendly: it uses ``jnp`` only, never Python control flow on
``count``. Pass a schedule anywhere a hyperparameter is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp

from gdopt.base import Schedule, check_scalar

__all__ = [
    "constant_schedule",
    "linear_schedule",
    "polynomial_schedule",
    "exponential_decay",
    "cosine_decay_schedule",
    "warmup_cosine_decay_schedule",
    "piecewise_constant_schedule",
    "join_schedules",
]


def _check_steps(name: str, value: int, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def constant_schedule(value: float) -> Schedule:
    """``value`` at every step.

    >>> float(constant_schedule(0.1)(5))
    0.1
    """
    return lambda count: jnp.asarray(value, dtype=float) + 0 * jnp.asarray(count, dtype=float)


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Polynomial interpolation from ``init_value`` to ``end_value``.

    ``value(t) = (init - end) * (1 - s / transition_steps) ** power + end`` with
    ``s = clip(t - transition_begin, 0, transition_steps)``; ``init_value`` before
    ``transition_begin`` and ``end_value`` after the transition. ``transition_steps == 0``
    gives the constant ``init_value``.

    >>> sched = polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)
    >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 20)]
    [1.0, 0.25, 0.0, 0.0]
    """
    _check_steps("transition_steps", transition_steps)
    _check_steps("transition_begin", transition_begin)
    if transition_steps == 0:
        return constant_schedule(init_value)

    def schedule(count):
        s = jnp.clip(jnp.asarray(count) - transition_begin, 0, transition_steps)
        frac = 1.0 - s / transition_steps
        return (init_value - end_value) * frac**power + end_value

    return schedule


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Linear interpolation from ``init_value`` to ``end_value`` over ``transition_steps``.

    >>> [float(linear_schedule(0.0, 1.0, 4)(t)) for t in (0, 2, 4, 8)]
    [0.0, 0.5, 1.0, 1.0]
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """``init_value * decay_rate ** ((t - transition_begin) / transition_steps)``.

    Constant ``init_value`` until ``transition_begin``; with ``staircase`` the exponent is
    floored (decay in discrete jumps); ``end_value`` bounds the value (a floor when
    ``decay_rate < 1``, a ceiling when it is > 1).

    >>> sched = exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
    >>> [float(sched(t)) for t in (0, 10, 20)]
    [1.0, 0.5, 0.25]
    """
    if not isinstance(transition_steps, int) or transition_steps <= 0:
        raise ValueError(f"transition_steps must be a positive integer, got {transition_steps!r}.")
    check_scalar("decay_rate", decay_rate, low=0.0, low_open=True)
    _check_steps("transition_begin", transition_begin)

    def schedule(count):
        t = jnp.asarray(count, dtype=float) - transition_begin
        p = t / transition_steps
        if staircase:
            p = jnp.floor(p)
        value = jnp.where(t <= 0, init_value, init_value * jnp.power(decay_rate, p))
        if end_value is not None:
            value = (
                jnp.maximum(value, end_value) if decay_rate < 1 else jnp.minimum(value, end_value)
            )
        return value

    return schedule


def cosine_decay_schedule(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """Cosine decay (Loshchilov & Hutter, 2017, SGDR: https://arxiv.org/abs/1608.03983).

    ``value(t) = init * ((1 - alpha) * c(t) ** exponent + alpha)`` with
    ``c(t) = (1 + cos(pi * min(t, decay_steps) / decay_steps)) / 2``; it ends at
    ``alpha * init_value``.

    >>> sched = cosine_decay_schedule(1.0, decay_steps=10)
    >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 15)]
    [1.0, 0.5, 0.0, 0.0]
    """
    if not isinstance(decay_steps, int) or decay_steps <= 0:
        raise ValueError(f"decay_steps must be a positive integer, got {decay_steps!r}.")

    def schedule(count):
        t = jnp.minimum(jnp.asarray(count, dtype=float), decay_steps)
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * t / decay_steps))
        return init_value * ((1.0 - alpha) * cosine**exponent + alpha)

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[i]`` between ``boundaries[i-1]`` and ``boundaries[i]``.

    Each schedule sees the count relative to its own start.

    >>> sched = join_schedules([constant_schedule(1.0), linear_schedule(1.0, 0.0, 2)], [3])
    >>> [float(sched(t)) for t in (0, 2, 3, 4, 5)]
    [1.0, 1.0, 1.0, 0.5, 0.0]
    """
    if len(schedules) != len(boundaries) + 1:
        raise ValueError(
            f"join_schedules needs one more schedule than boundaries, got {len(schedules)} "
            f"schedules and {len(boundaries)} boundaries."
        )
    if list(boundaries) != sorted(boundaries):
        raise ValueError(f"boundaries must be increasing, got {list(boundaries)}.")

    def schedule(count):
        count = jnp.asarray(count)
        out = schedules[0](count)
        for boundary, sched in zip(boundaries, schedules[1:], strict=False):
            out = jnp.where(count < boundary, out, sched(count - boundary))
        return out

    return schedule


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value``, then cosine decay to ``end_value``.

    ``decay_steps`` counts the whole schedule, warm-up included.

    >>> sched = warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=6)
    >>> [round(float(sched(t)), 4) for t in (0, 1, 2, 4, 6)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    _check_steps("warmup_steps", warmup_steps)
    if not isinstance(decay_steps, int) or decay_steps <= warmup_steps:
        raise ValueError(
            f"decay_steps ({decay_steps!r}) must be an integer larger than warmup_steps "
            f"({warmup_steps}): it counts the whole schedule, warm-up included."
        )
    alpha = 0.0 if peak_value == 0 else end_value / peak_value
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        [warmup_steps],
    )


def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    """Multiply the value by ``scale`` once the count passes each ``boundary``.

    The scale of boundary ``b`` applies from step ``b + 1`` on (as in optax).

    >>> sched = piecewise_constant_schedule(1.0, {2: 0.5, 4: 0.1})
    >>> [round(float(sched(t)), 4) for t in (0, 2, 3, 5)]
    [1.0, 1.0, 0.5, 0.05]
    """
    items = sorted((boundaries_and_scales or {}).items())
    for b, s in items:
        _check_steps("boundary", b)
        check_scalar(f"scale for boundary {b}", s, low=0.0)

    def schedule(count):
        count = jnp.asarray(count)
        value = jnp.asarray(init_value, dtype=float)
        for boundary, scale in items:
            value = jnp.where(count > boundary, value * scale, value)
        return value

    return schedule
