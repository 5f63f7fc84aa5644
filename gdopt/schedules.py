"""Schedules: pure functions ``count -> value`` and their combinators.

``count`` is the step counter kept by the optimizer (an int32 array starting at 0). Every
schedule here is jit- and vmap-friendly: it uses ``jnp`` only, never Python control flow on
``count``, and its numeric arguments (values, not step counts) may be JAX arrays. Pass a
schedule anywhere a hyperparameter is accepted.

Each schedule takes the arguments of the optax function of the same name and returns the same
values; where optax silently turns a bad step count into a constant schedule, gdopt raises a
``ValueError`` saying what is accepted. :func:`warmup_stable_decay_schedule` (WSD) has no optax
counterpart, and :func:`reduce_on_plateau` is a gradient transformation driven by the loss
(``update(..., value=loss)``) rather than by the step count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics as num
from gdopt._numerics import safe_increment
from gdopt._validation import check_scalar, is_concrete
from gdopt.base import GradientTransformation, Schedule

__all__ = [
    "constant_schedule",
    "linear_schedule",
    "polynomial_schedule",
    "exponential_decay",
    "cosine_decay_schedule",
    "warmup_cosine_decay_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "join_schedules",
    "warmup_constant_schedule",
    "warmup_exponential_decay_schedule",
    "linear_onecycle_schedule",
    "cosine_onecycle_schedule",
    "sgdr_schedule",
    "warmup_stable_decay_schedule",
    "reduce_on_plateau",
    "ReduceLROnPlateauState",
]

Scalar = float | jax.Array


def _check_steps(name: str, value: Any, minimum: int = 0) -> None:
    """A step count: a finite Python (or NumPy) number >= ``minimum``.

    As in optax, a float is accepted (``transition_steps=22.0``, what configurations computed
    as ``epochs * steps_per_epoch`` give); the schedule then computes with it as given.
    """
    if (
        not isinstance(value, (int, float, np.integer, np.floating))
        or isinstance(value, (bool, np.bool_))
        or not np.isfinite(value)
        or value < minimum
    ):
        raise ValueError(f"{name} must be a number >= {minimum} (a step count), got {value!r}.")


def _check_scales(name: str, boundaries_and_scales: Mapping[int, Any] | None) -> list:
    """Sorted ``(boundary, scale)`` items; boundaries integers >= 0, scales >= 0."""
    if boundaries_and_scales is None:
        return []
    if not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(
            f"{name}'s boundaries_and_scales must be a dict {{step: scale}}, got "
            f"{type(boundaries_and_scales).__name__}."
        )
    items = sorted(boundaries_and_scales.items())
    for b, s in items:
        _check_steps(f"{name}: boundary", b)
        check_scalar(f"{name}: the scale for boundary {b}", s, low=0.0)
    return items


def _power(base: Any, exponent: Any) -> Any:
    """``base ** exponent`` with the promotion made explicit (either may be an array of
    another dtype; a Python number stays as it is, so ``x ** 2`` stays an integer power)."""
    return jnp.power(*num.promote(base, exponent))


def constant_schedule(value: Scalar) -> Schedule:
    """``value`` at every step.

    Args:
      value: the value (a number or an array).

    Returns:
      A schedule ``count -> value``.

    >>> float(constant_schedule(0.1)(5))
    0.1
    """
    return lambda count: jnp.asarray(value, dtype=float) + 0 * jnp.asarray(count, dtype=float)


def polynomial_schedule(
    init_value: Scalar,
    end_value: Scalar,
    power: Scalar,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Polynomial interpolation from ``init_value`` to ``end_value``.

    ``value(t) = (init - end) * (1 - s / transition_steps) ** power + end`` with
    ``s = clip(t - transition_begin, 0, transition_steps)``: ``init_value`` before
    ``transition_begin`` and ``end_value`` after the transition.

    Args:
      init_value, end_value: the values at the start and at the end of the transition.
      power: the polynomial's exponent (1 is linear).
      transition_steps: an integer >= 0; 0 gives the constant ``init_value`` (as optax).
      transition_begin: an integer >= 0 (optax silently replaces negative values by 0;
        gdopt raises).

    Returns:
      A schedule ``count -> value``.

    >>> sched = polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)
    >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 20)]
    [1.0, 0.25, 0.0, 0.0]
    """
    _check_steps("transition_steps", transition_steps)
    _check_steps("transition_begin", transition_begin)
    if transition_steps == 0:
        return constant_schedule(init_value)

    def schedule(count):
        # float step counts (as optax accepts): promoted as standard promotion does
        s = num.clip(num.sub(jnp.asarray(count), transition_begin), 0, transition_steps)
        frac = jnp.maximum(1.0 - s / transition_steps, 0.0)  # XLA may round 1 - T/T below 0
        # the values may be arrays of another dtype: promotions explicit (num.mul...)
        return num.add(num.mul(init_value - end_value, _power(frac, power)), end_value)

    return schedule


def linear_schedule(
    init_value: Scalar, end_value: Scalar, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Linear interpolation from ``init_value`` to ``end_value`` over ``transition_steps``.

    Args:
      init_value, end_value, transition_steps, transition_begin: as in
        :func:`polynomial_schedule`.

    Returns:
      A schedule ``count -> value``.

    >>> [float(linear_schedule(0.0, 1.0, 4)(t)) for t in (0, 2, 4, 8)]
    [0.0, 0.5, 1.0, 1.0]
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def exponential_decay(
    init_value: Scalar,
    transition_steps: int,
    decay_rate: Scalar,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
    """``init_value * decay_rate ** ((t - transition_begin) / transition_steps)``.

    Constant ``init_value`` until ``transition_begin``; with ``staircase`` the exponent is
    floored (decay in discrete jumps); ``end_value`` bounds the value (a floor when
    ``decay_rate < 1``, a ceiling when it is > 1).

    Args:
      init_value: the value until ``transition_begin``.
      transition_steps: the steps over which the value is multiplied by ``decay_rate``, an
        integer >= 1 (optax turns <= 0 into a constant schedule; gdopt raises).
      decay_rate: the factor per ``transition_steps``, > 0 (optax turns 0 into a constant
        schedule; gdopt raises).
      transition_begin: an integer >= 0.
      staircase: decay in discrete jumps.
      end_value: an optional bound on the value.

    Returns:
      A schedule ``count -> value``.

    >>> sched = exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
    >>> [float(sched(t)) for t in (0, 10, 20)]
    [1.0, 0.5, 0.25]
    """
    _check_steps("transition_steps", transition_steps, 1)
    check_scalar("decay_rate", decay_rate, low=0.0, low_open=True)
    _check_steps("transition_begin", transition_begin)

    def schedule(count):
        t = jnp.asarray(count, dtype=float) - transition_begin
        p = t / transition_steps
        if staircase:
            p = jnp.floor(p)
        value = num.where(t <= 0, init_value, num.mul(init_value, _power(decay_rate, p)))
        if end_value is not None:
            value = jnp.where(
                jnp.asarray(decay_rate) < 1,
                num.maximum(value, end_value),
                num.minimum(value, end_value),
            )
        return value

    return schedule


def cosine_decay_schedule(
    init_value: Scalar, decay_steps: int, alpha: Scalar = 0.0, exponent: Scalar = 1.0
) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps``.

    ``value(t) = init * ((1 - alpha) * c(t) ** exponent + alpha)`` with
    ``c(t) = (1 + cos(π min(t, decay_steps) / decay_steps)) / 2``.

    Args:
      init_value: the starting value.
      decay_steps: an integer >= 1.
      alpha: the final value as a fraction of ``init_value``.
      exponent: sharpens (> 1) or flattens (< 1) the cosine.

    Returns:
      A schedule ``count -> value``.

    References:
      Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017,
      https://arxiv.org/abs/1608.03983.

    >>> sched = cosine_decay_schedule(1.0, decay_steps=10)
    >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 15)]
    [1.0, 0.5, 0.0, 0.0]
    """
    _check_steps("decay_steps", decay_steps, 1)

    def schedule(count):
        t = jnp.minimum(jnp.asarray(count, dtype=float), decay_steps)
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * t / decay_steps))
        return num.mul(init_value, num.add(num.mul(1.0 - alpha, _power(cosine, exponent)), alpha))

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[i]`` between ``boundaries[i-1]`` and ``boundaries[i]``.

    Each schedule sees the count relative to its own start.

    Args:
      schedules: ``n`` schedules.
      boundaries: ``n - 1`` increasing integer steps.

    Returns:
      A schedule ``count -> value``.

    >>> sched = join_schedules([constant_schedule(1.0), linear_schedule(1.0, 0.0, 2)], [3])
    >>> [float(sched(t)) for t in (0, 2, 3, 4, 5)]
    [1.0, 1.0, 1.0, 0.5, 0.0]
    """
    schedules, boundaries = list(schedules), list(boundaries)
    if len(schedules) != len(boundaries) + 1:
        raise ValueError(
            f"join_schedules needs one more schedule than boundaries, got {len(schedules)} "
            f"schedules and {len(boundaries)} boundaries."
        )
    for i, sched in enumerate(schedules):
        if not callable(sched):
            raise TypeError(f"join_schedules: schedules[{i}] is not callable: {sched!r}.")
    for b in boundaries:
        _check_steps("join_schedules: boundary", b)
    if boundaries != sorted(boundaries):
        raise ValueError(f"boundaries must be increasing, got {boundaries}.")

    def schedule(count):
        count = jnp.asarray(count)
        out = schedules[0](count)
        for boundary, sched in zip(boundaries, schedules[1:], strict=True):
            before = jnp.less(*num.promote(count, boundary))
            out = num.where(before, out, sched(num.sub(count, boundary)))
        return out

    return schedule


def warmup_cosine_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    decay_steps: int,
    end_value: Scalar = 0.0,
    exponent: Scalar = 1.0,
) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value``, then cosine decay to ``end_value``.

    Args:
      init_value: the value at step 0.
      peak_value: the value at the end of the warm-up.
      warmup_steps: an integer >= 0.
      decay_steps: the length of the WHOLE schedule, warm-up included (> warmup_steps).
      end_value: the final value.
      exponent: as in :func:`cosine_decay_schedule`.

    Returns:
      A schedule ``count -> value``.

    >>> sched = warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=6)
    >>> [round(float(sched(t)), 4) for t in (0, 1, 2, 4, 6)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    _check_steps("warmup_steps", warmup_steps)
    _check_steps("decay_steps", decay_steps)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"decay_steps ({decay_steps!r}) must be larger than warmup_steps "
            f"({warmup_steps}): it counts the whole schedule, warm-up included."
        )
    nonzero = jnp.asarray(peak_value) != 0
    alpha = jnp.where(nonzero, num.div(end_value, jnp.where(nonzero, peak_value, 1.0)), 0.0)
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        [warmup_steps],
    )


def piecewise_constant_schedule(
    init_value: Scalar, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    """Multiply the value by ``scale`` from each ``boundary`` on.

    ``value(t) = init_value * Π_{b <= t} scale_b``.

    Args:
      init_value: the value before the first boundary.
      boundaries_and_scales: ``{step: scale}``, integer steps >= 0 and scales >= 0.

    Returns:
      A schedule ``count -> value``.

    >>> sched = piecewise_constant_schedule(1.0, {2: 0.5, 4: 0.1})
    >>> [round(float(sched(t)), 4) for t in (0, 1, 2, 3, 4)]
    [1.0, 1.0, 0.5, 0.5, 0.05]
    """
    items = _check_scales("piecewise_constant_schedule", boundaries_and_scales)

    def schedule(count):
        count = jnp.asarray(count)
        value = jnp.asarray(init_value, dtype=float)
        for boundary, scale in items:
            after = jnp.greater_equal(*num.promote(count, boundary))
            value = num.where(after, num.mul(value, scale), value)
        return value

    return schedule


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: Scalar,
    boundaries_and_scales: Mapping[int, float] | None = None,
) -> Schedule:
    """Interpolate (linearly or along a half cosine) between values set at boundaries.

    The value at boundary ``b_i`` is ``v_i = init_value * Π_{j <= i} scale_j`` (the scales
    accumulate); between ``b_{i-1}`` and ``b_i`` (``b_0 = 0``, ``v_0 = init_value``) the value
    goes from ``v_{i-1}`` to ``v_i``, and stays at the last ``v`` after the last boundary.

    Args:
      interpolate_type: ``"linear"`` or ``"cosine"``.
      init_value: the value at step 0.
      boundaries_and_scales: ``{step: scale}``, integer steps >= 0 and scales >= 0.

    Returns:
      A schedule ``count -> value``.

    >>> sched = piecewise_interpolate_schedule("linear", 1.0, {4: 0.5, 8: 0.0})
    >>> [round(float(sched(t)), 4) for t in (0, 2, 4, 6, 8, 10)]
    [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    # the values may be arrays of another dtype: promotions explicit (num.add...)
    if interpolate_type == "linear":
        interp = lambda a, b, pct: num.add(a, num.mul(num.sub(b, a), pct))  # noqa: E731
    elif interpolate_type == "cosine":

        def interp(a, b, pct):
            return num.add(b, num.mul(num.mul(num.sub(a, b), 0.5), 1.0 + jnp.cos(jnp.pi * pct)))

    else:
        raise ValueError(
            f"interpolate_type must be 'linear' or 'cosine', got {interpolate_type!r}."
        )
    items = _check_scales("piecewise_interpolate_schedule", boundaries_and_scales)
    bounds = [0] + [b for b, _ in items]
    values = [init_value]
    for _, scale in items:
        values.append(num.mul(values[-1], scale))

    def schedule(count):
        count = jnp.asarray(count)
        out = num.add(jnp.asarray(values[-1], dtype=float), 0 * count)
        for i in reversed(range(len(items))):
            lo, hi = bounds[i], bounds[i + 1]
            pct = num.div(num.sub(count, lo), max(hi - lo, 1))
            before = jnp.less(*num.promote(count, hi))
            out = num.where(before, interp(values[i], values[i + 1], pct), out)
        return out

    return schedule


def warmup_constant_schedule(init_value: Scalar, peak_value: Scalar, warmup_steps: int) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value``, then constant.

    Args:
      init_value: the value at step 0.
      peak_value: the value from step ``warmup_steps`` on.
      warmup_steps: an integer >= 0. With 0 gdopt gives ``peak_value`` at every step (optax
        gives ``init_value`` forever, which is not a warm-up to anything).

    Returns:
      A schedule ``count -> value``.

    >>> sched = warmup_constant_schedule(0.0, 1.0, warmup_steps=4)
    >>> [float(sched(t)) for t in (0, 2, 4, 9)]
    [0.0, 0.5, 1.0, 1.0]
    """
    _check_steps("warmup_steps", warmup_steps)
    if warmup_steps == 0:
        return constant_schedule(peak_value)
    return linear_schedule(init_value, peak_value, warmup_steps)


def warmup_exponential_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: Scalar,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
    """Linear warm-up to ``peak_value``, then :func:`exponential_decay` from it.

    Args:
      init_value: the value at step 0.
      peak_value: the value at the end of the warm-up.
      warmup_steps: an integer >= 0.
      transition_steps, decay_rate, transition_begin, staircase, end_value: as in
        :func:`exponential_decay` (counted from the end of the warm-up).

    Returns:
      A schedule ``count -> value``.

    >>> sched = warmup_exponential_decay_schedule(0.0, 1.0, 2, transition_steps=1, decay_rate=0.5)
    >>> [float(sched(t)) for t in (0, 1, 2, 3, 4)]
    [0.0, 0.5, 1.0, 0.5, 0.25]
    """
    _check_steps("warmup_steps", warmup_steps)
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            exponential_decay(
                peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
            ),
        ],
        [warmup_steps],
    )


def _onecycle_boundaries(transition_steps: int, fractions: Sequence[tuple[str, float]]) -> list:
    _check_steps("transition_steps", transition_steps, 1)
    out = []
    for name, pct in fractions:
        check_scalar(name, pct, low=0.0, high=1.0, low_open=True, high_open=True)
        out.append(int(pct * transition_steps))
    out.append(transition_steps)
    if any(b >= c for b, c in zip(out, out[1:], strict=False)):
        shown = ", ".join(f"{n}={p}" for n, p in fractions)
        raise ValueError(
            f"the phases of a one-cycle schedule must have distinct step boundaries: {shown} "
            f"with transition_steps={transition_steps} gives the boundaries {out}. Use "
            "increasing fractions or more transition_steps."
        )
    return out


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: Scalar,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The one-cycle policy with linear phases (Smith & Topin, 2017).

    With ``v0 = peak_value / div_factor``: linear from ``v0`` up to ``peak_value`` until
    ``pct_start * transition_steps``, back down to ``v0`` until ``pct_final *
    transition_steps``, then down to ``v0 / final_div_factor`` at ``transition_steps``
    (boundaries rounded down to whole steps, as in optax).

    Args:
      transition_steps: the length of the cycle, an integer >= 1.
      peak_value: the largest value.
      pct_start: the fraction of the cycle spent increasing, in (0, 1).
      pct_final: the fraction at which the value is back at ``v0``, in (pct_start, 1).
      div_factor: ``peak_value / v0``, > 0.
      final_div_factor: ``v0 / final value``, > 0.

    Returns:
      A schedule ``count -> value``.

    References:
      Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large
      Learning Rates", 2017, https://arxiv.org/abs/1708.07120.

    >>> sched = linear_onecycle_schedule(10, 1.0, pct_start=0.2, pct_final=0.6, div_factor=10.0)
    >>> [round(float(sched(t)), 4) for t in (0, 2, 4, 6)]
    [0.1, 1.0, 0.55, 0.1]
    """
    check_scalar("div_factor", div_factor, low=0.0, low_open=True)
    check_scalar("final_div_factor", final_div_factor, low=0.0, low_open=True)
    up, down, end = _onecycle_boundaries(
        transition_steps, [("pct_start", pct_start), ("pct_final", pct_final)]
    )
    return piecewise_interpolate_schedule(
        "linear",
        peak_value / div_factor,
        {up: div_factor, down: 1.0 / div_factor, end: 1.0 / final_div_factor},
    )


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: Scalar,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The one-cycle policy with cosine phases (Smith & Topin, 2017).

    With ``v0 = peak_value / div_factor``: a half cosine from ``v0`` up to ``peak_value``
    until ``pct_start * transition_steps``, then a half cosine down to ``v0 /
    final_div_factor`` at ``transition_steps``.

    Args:
      transition_steps: the length of the cycle, an integer >= 1.
      peak_value: the largest value.
      pct_start: the fraction of the cycle spent increasing, in (0, 1).
      div_factor: ``peak_value / v0``, > 0.
      final_div_factor: ``v0 / final value``, > 0.

    Returns:
      A schedule ``count -> value``.

    References:
      Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large
      Learning Rates", 2017, https://arxiv.org/abs/1708.07120.

    >>> sched = cosine_onecycle_schedule(10, 1.0, pct_start=0.5, div_factor=10.0)
    >>> [round(float(sched(t)), 4) for t in (0, 5, 10)]
    [0.1, 1.0, 0.0]
    """
    check_scalar("div_factor", div_factor, low=0.0, low_open=True)
    check_scalar("final_div_factor", final_div_factor, low=0.0, low_open=True)
    up, end = _onecycle_boundaries(transition_steps, [("pct_start", pct_start)])
    return piecewise_interpolate_schedule(
        "cosine",
        peak_value / div_factor,
        {up: div_factor, end: 1.0 / (div_factor * final_div_factor)},
    )


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    """Stochastic gradient descent with warm restarts: several warm-up + cosine cycles.

    Each cycle is a :func:`warmup_cosine_decay_schedule` built from one dict of
    ``cosine_kwargs``; its ``decay_steps`` (the cycle's whole length) decides when the next
    cycle starts.

    Args:
      cosine_kwargs: one dict of :func:`warmup_cosine_decay_schedule` arguments per cycle,
        each with ``decay_steps``.

    Returns:
      A schedule ``count -> value``.

    References:
      Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017,
      https://arxiv.org/abs/1608.03983.

    >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=3)
    >>> sched = sgdr_schedule([cycle, cycle])
    >>> [round(float(sched(t)), 4) for t in range(6)]
    [0.0, 1.0, 0.5, 0.0, 1.0, 0.5]
    """
    schedules, boundaries, start = [], [], 0
    for i, kwargs in enumerate(cosine_kwargs):
        if not isinstance(kwargs, Mapping) or "decay_steps" not in kwargs:
            raise ValueError(
                f"sgdr_schedule: cycle {i} must be a dict of warmup_cosine_decay_schedule "
                f"arguments with decay_steps, got {kwargs!r}."
            )
        schedules.append(warmup_cosine_decay_schedule(**kwargs))
        start += kwargs["decay_steps"]
        boundaries.append(start)
    if not schedules:
        raise ValueError("sgdr_schedule needs at least one cycle in cosine_kwargs.")
    return join_schedules(schedules, boundaries[:-1])


_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def warmup_stable_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    end_value: Scalar = 0.0,
    decay_type: str = "linear",
) -> Schedule:
    """Warmup-stable-decay (WSD): linear warm-up, a long constant phase, then a short decay.

    With ``W, S, D`` the three phase lengths and ``s = (t - W - S) / D`` clipped to [0, 1]::

        t < W:            init + (peak - init) t / W
        W <= t < W + S:   peak
        t >= W + S:       end + (peak - end) f(s)
          f(s) = 1 - s                 ("linear")
          f(s) = (1 + cos(π s)) / 2    ("cosine")
          f(s) = 1 - sqrt(s)           ("1-sqrt", Hägele et al. 2024)

    The constant phase can be extended (or branched from a checkpoint) without knowing the
    training length in advance; only the final decay phase depends on it.

    Args:
      init_value: the value at step 0.
      peak_value: the value of the stable phase.
      warmup_steps: ``W``, an integer >= 0.
      stable_steps: ``S``, an integer >= 0.
      decay_steps: ``D``, an integer >= 1 (each argument is one phase's length, not a total).
      end_value: the value from step ``W + S + D`` on.
      decay_type: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.

    Returns:
      A schedule ``count -> value``.

    References:
      Hu et al., "MiniCPM: Unveiling the Potential of Small Language Models with Scalable
      Training Strategies", 2024, https://arxiv.org/abs/2404.06395. Hägele et al., "Scaling
      Laws and Compute-Optimal Training Beyond Fixed Training Durations", NeurIPS 2024,
      https://arxiv.org/abs/2405.18392.

    >>> sched = warmup_stable_decay_schedule(0.0, 1.0, 2, 2, 4, decay_type="1-sqrt")
    >>> [round(float(sched(t)), 4) for t in (0, 1, 2, 3, 4, 5, 8, 9)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0]
    """
    _check_steps("warmup_steps", warmup_steps)
    _check_steps("stable_steps", stable_steps)
    _check_steps("decay_steps", decay_steps, 1)
    if decay_type not in _WSD_SHAPES:
        raise ValueError(f"decay_type must be one of {list(_WSD_SHAPES)}, got {decay_type!r}.")

    def decay(count):
        s = jnp.clip(jnp.asarray(count, dtype=float) / decay_steps, 0.0, 1.0)
        if decay_type == "linear":
            f = 1.0 - s
        elif decay_type == "cosine":
            f = 0.5 * (1.0 + jnp.cos(jnp.pi * s))
        else:
            f = 1.0 - jnp.sqrt(s)
        return num.add(end_value, num.mul(num.sub(peak_value, end_value), f))

    return join_schedules(
        [warmup_constant_schedule(init_value, peak_value, warmup_steps), decay],
        [warmup_steps + stable_steps],
    )


# ----------------------------------------------------------------------------- reduce on plateau


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau` (field names as in optax).

    Attributes:
      scale: the factor the updates are multiplied by (starts at 1).
      best_value: the best accumulated loss so far.
      plateau_count: evaluations since the last improvement.
      cooldown_count: evaluations left in the cool-down.
      count: losses accumulated in the current window.
      avg_value: their running mean.
    """

    scale: jax.Array
    best_value: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: jax.Array
    avg_value: jax.Array


def _check_count(name: str, value: Any, minimum: int) -> None:
    if not is_concrete(value):
        return
    arr = np.asarray(value)
    if isinstance(value, bool) or not np.issubdtype(arr.dtype, np.integer) or arr.ndim:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if int(arr) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _float_dtypes(params: Any) -> list:
    dts = [jnp.asarray(x).dtype for x in jax.tree.leaves(params)]
    return [d for d in dts if jnp.issubdtype(d, jnp.floating)] or [jnp.dtype(float)]


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
) -> GradientTransformation:
    """Scale the updates down by ``factor`` when the loss stops improving.

    Pass the loss at every step: ``update(grads, state, params, value=loss)``. Losses are
    averaged over windows of ``accumulation_size`` steps; after each window, with ``L`` the
    average and ``L*`` the best average so far::

        improved      = L < (1 - rtol) L* - atol           (then L* <- L, plateau <- 0)
        otherwise       plateau <- plateau + 1
        plateau == patience (outside cool-down):
                        scale <- max(scale * factor, min_scale); plateau <- 0;
                        cool-down <- cooldown windows (no plateau counting during them)
        u = scale · g

    Place it after the learning rate in a chain (``chain(gdopt.adam(1e-3),
    reduce_on_plateau())``): the effective learning rate is ``α · scale``.

    Args:
      factor: the reduction factor, in (0, 1).
      patience: windows without improvement before reducing, an integer >= 1.
      rtol: relative improvement needed, in [0, 1].
      atol: absolute improvement needed, >= 0 (``rtol`` and ``atol`` cannot both be 0).
      cooldown: windows to wait after a reduction before counting again, an integer >= 0.
      accumulation_size: steps per window, an integer >= 1.
      min_scale: the smallest scale, in [0, 1].

    Returns:
      A transformation whose state is a :class:`ReduceLROnPlateauState`; its ``update``
      needs the keyword argument ``value``.

    >>> import jax.numpy as jnp
    >>> t = reduce_on_plateau(factor=0.5, patience=2)
    >>> p = {"w": jnp.zeros(())}
    >>> s = t.init(p)
    >>> for loss in [1.0, 1.0, 1.0]:                  # improves once, then 2 flat windows
    ...     u, s = t.update({"w": jnp.array(1.0)}, s, p, value=loss)
    >>> (float(u["w"]), float(s.scale))
    (0.5, 0.5)
    """
    check_scalar("factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
    _check_count("patience", patience, 1)
    check_scalar("rtol", rtol, low=0.0, high=1.0)
    check_scalar("atol", atol, low=0.0)
    if (
        is_concrete((rtol, atol))
        and np.all(np.asarray(rtol) == 0)
        and np.all(np.asarray(atol) == 0)
    ):
        raise ValueError("reduce_on_plateau needs rtol > 0 or atol > 0 (both are 0).")
    _check_count("cooldown", cooldown, 0)
    _check_count("accumulation_size", accumulation_size, 1)
    check_scalar("min_scale", min_scale, low=0.0, high=1.0)

    def init(params):
        dts = _float_dtypes(params)
        high = num.result_dtype(*dts)
        low = min(dts, key=lambda d: jnp.finfo(d).bits)
        return ReduceLROnPlateauState(
            scale=jnp.ones([], low),
            best_value=jnp.full([], jnp.inf, high),
            plateau_count=jnp.zeros([], jnp.int32),
            cooldown_count=jnp.zeros([], jnp.int32),
            count=jnp.zeros([], jnp.int32),
            avg_value=jnp.zeros([], high),
        )

    def update(updates, state, params=None, *, value=None, **extra):
        del params, extra
        if value is None:
            raise TypeError(
                "reduce_on_plateau needs the loss: call update(grads, state, params, value=loss)."
            )
        count = safe_increment(state.count)
        value = jnp.asarray(value).astype(state.avg_value.dtype)
        # integer counters meet float values and the arguments may be arrays of another
        # dtype: promotions explicit (num.mul...)
        avg = num.div(num.add(num.mul(state.count, state.avg_value), value), count)
        avg = avg.astype(state.avg_value.dtype)
        window_done = count >= accumulation_size

        improved = jnp.less(*num.promote(avg, num.sub(num.mul(1 - rtol, state.best_value), atol)))
        best = jnp.where(improved, avg, state.best_value)
        plateau = jnp.where(improved, 0, safe_increment(state.plateau_count))
        cooling = state.cooldown_count > 0
        reduce = jnp.logical_and(
            jnp.logical_not(cooling), jnp.equal(*num.promote(plateau, patience))
        )
        scale = num.where(
            cooling,
            state.scale,
            num.maximum(num.where(reduce, num.mul(state.scale, factor), state.scale), min_scale),
        )
        plateau = jnp.where(jnp.logical_or(cooling, reduce), 0, plateau)
        cooldown_count = num.where(
            cooling, state.cooldown_count - 1, jnp.where(reduce, cooldown, 0)
        )

        def pick(new, old):
            return jnp.where(window_done, new, old).astype(old.dtype)

        new_state = ReduceLROnPlateauState(
            scale=pick(scale, state.scale),
            best_value=pick(best, state.best_value),
            plateau_count=pick(plateau, state.plateau_count),
            cooldown_count=pick(cooldown_count, state.cooldown_count),
            count=jnp.where(window_done, 0, count).astype(jnp.int32),
            avg_value=jnp.where(window_done, 0, avg).astype(state.avg_value.dtype),
        )
        out = jax.tree.map(lambda g: num.mul(new_state.scale, g).astype(g.dtype), updates)
        return out, new_state

    return GradientTransformation(init, update)


def __getattr__(name: str) -> Any:
    """``gdopt.schedules.inject_hyperparams``, ``inject_stateful_hyperparams``, their states,
    ``WrappedSchedule`` and ``StatefulSchedule``, as in optax.

    They live in :mod:`gdopt.hyperparams` (a layer below this one); optax also offers them
    under ``optax.schedules``, so they are looked up here on first use.
    """
    if name in (
        "inject_hyperparams",
        "InjectHyperparamsState",
        "inject_stateful_hyperparams",
        "InjectStatefulHyperparamsState",
        "WrappedSchedule",
        "StatefulSchedule",
    ):
        from gdopt import hyperparams

        return getattr(hyperparams, name)
    raise AttributeError(f"module 'gdopt.schedules' has no attribute {name!r}")
