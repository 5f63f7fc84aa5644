"""Monitoring: record measurements of the updates in the optimizer state.

Placed inside a chain, these transformations pass the updates through unchanged and keep
what a user function measures of them (a norm before clipping, a moving average of how often
clipping fires) in the state, where :func:`gdopt.tree.get` finds it by name:

* :func:`snapshot`: one measurement of the latest updates;
* :func:`monitor`: several named measurements, each a function or a stateful transformation;
* :func:`measure_with_ema`: a measurement averaged over steps, for :func:`monitor`.

They are optax's ``snapshot``, ``monitor`` and ``measure_with_ema`` (optax 0.2.6-0.2.7),
with the same arguments and state fields. One difference, on purpose: a :class:`MonitorState`
holds every measurement from ``init`` on (zeros shaped like the first update's), and the
moving average of an integer or boolean measurement is kept in a float from ``init`` on, so
the state has one structure and one dtype per leaf at every step (a jitted step compiles
once, and a state carried through ``lax.scan``, as :func:`gdopt.fit` does, keeps its type).
optax's starts with no measurements and changes the average's dtype at the first update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gdopt import _numerics as num
from gdopt._numerics import cast_like, safe_increment, tree_map, update_moment
from gdopt._traits import check_transform, transform
from gdopt._validation import check_callable
from gdopt.base import DecayValue, GradientTransformation, init_empty_state
from gdopt.combinators import chain
from gdopt.transforms.moments import EmaState

__all__ = ["snapshot", "SnapshotState", "monitor", "MonitorState", "measure_with_ema"]


class SnapshotState(NamedTuple):
    """State of :func:`snapshot`: ``{measure_name: measurement}`` of the latest updates (at
    init: the measurement of the parameters)."""

    measurement: dict[str, Any]


@transform(packable=False)
def snapshot(measure_name: str, measure: Callable[[Any], Any]) -> GradientTransformation:
    """Keep a measurement of the updates in the state (optax's ``snapshot``).

    The updates pass through unchanged; ``state.measurement[measure_name]`` becomes
    ``measure(updates)``, the updates as they reach this point of a chain (``init`` stores
    ``measure(params)``). Read it with ``gdopt.tree.get(state, measure_name)``.

    Args:
      measure_name: the name the measurement is stored under (a string).
      measure: ``measure(updates) -> pytree of arrays``.

    Returns:
      A transformation whose state is a :class:`SnapshotState`.

    Raises:
      TypeError: ``measure_name`` is not a string or ``measure`` is not callable.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.chain(gdopt.sgd(0.1), gdopt.snapshot("norm", gdopt.tree.norm))
    >>> params = jnp.array([3.0, 4.0])
    >>> _, state = opt.update(jnp.array([3.0, 4.0]), opt.init(params), params)
    >>> round(float(gdopt.tree.get(state, "norm")), 4)
    0.5
    """
    _check_name("snapshot's measure_name", measure_name)
    check_callable("snapshot's measure", measure, "a function updates -> measurement")

    def init(params):
        return SnapshotState({measure_name: measure(params)})

    def update(updates, state, params=None, **extra):
        del state, params, extra
        return updates, SnapshotState({measure_name: measure(updates)})

    return GradientTransformation(init, update)


class MonitorState(NamedTuple):
    """State of :func:`monitor`.

    Attributes:
      measurements: ``{name: measurement}`` of the latest update (at init: zeros of the shape
        and dtype each measurement will have; see the module docstring).
      measure_states: the states of the measures, in the order of ``measures`` (an
        ``EmptyState`` for a measure given as a function).
    """

    measurements: dict[str, Any]
    measure_states: tuple[Any, ...]


def _check_name(where: str, name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{where} must be a string, got {type(name).__name__} {name!r}.")


def _measure_function(fn: Callable[[Any], Any]) -> GradientTransformation:
    """A stateless transformation whose output is ``fn(updates)``."""

    def update(updates, state, params=None, **extra):
        del params, extra
        return fn(updates), state

    return GradientTransformation(init_empty_state, update)


def _zeros_of_first_update(tx: GradientTransformation, state: Any, params: Any) -> Any:
    """Zeros shaped like ``tx``'s output for updates shaped like ``params`` (nothing is
    computed), or ``None`` when that cannot be known before a real update (the measure
    needs keyword extras that ``init`` does not have)."""
    try:
        shapes = jax.eval_shape(lambda s, p: tx.update(p, s, p)[0], state, params)
    except (TypeError, ValueError, KeyError):
        return None
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@transform(packable=False)
def monitor(
    measures: dict[str, GradientTransformation | Callable[[Any], Any]],
) -> GradientTransformation:
    """Keep several named measurements of the updates in the state (optax's ``monitor``).

    The updates pass through unchanged. Each entry of ``measures`` is either a function
    ``updates -> measurement`` or a transformation whose ``update`` *returns the
    measurement* in place of updates and keeps its own state, such as
    :func:`measure_with_ema`. After each update ``state.measurements[name]`` holds the latest
    measurement; ``gdopt.tree.get(state, name)`` reads it. Keyword extras of ``update``
    (``value``...) reach every measure.

    Unlike optax's, the state holds every measurement from ``init`` on, as zeros of the shape
    and dtype the first update will produce (found without computing anything), so the
    state keeps one structure; a measure that cannot be evaluated without keyword extras
    appears only after the first update, as in optax.

    Args:
      measures: ``{name: function or transformation}``.

    Returns:
      A transformation whose state is a :class:`MonitorState`.

    Raises:
      TypeError: ``measures`` is not a dict of string names to functions or
        transformations (the message names the entry).

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.chain(
    ...     gdopt.monitor({"norm": gdopt.tree.norm,
    ...                    "norm_ema": gdopt.measure_with_ema(gdopt.tree.norm, decay=0.5)}),
    ...     gdopt.clip_by_global_norm(1.0),
    ... )
    >>> params = jnp.zeros(2)
    >>> state = opt.init(params)
    >>> for g in (jnp.array([3.0, 4.0]), jnp.array([0.0, 2.0])):
    ...     _, state = opt.update(g, state, params)
    >>> float(gdopt.tree.get(state, "norm")), round(float(gdopt.tree.get(state, "norm_ema")), 4)
    (2.0, 3.0)
    """
    if not isinstance(measures, Mapping):
        raise TypeError(
            "monitor's measures must be a dict {name: function or transformation}, got "
            f"{type(measures).__name__}."
        )
    txs: dict[str, GradientTransformation] = {}
    for name, measure in measures.items():
        _check_name("every key of monitor's measures", name)
        where = f"monitor's measures[{name!r}]"
        if callable(measure):
            txs[name] = _measure_function(measure)
        else:
            check_transform(measure, where)
            txs[name] = measure
    names = tuple(txs)

    def init(params):
        states = tuple(txs[k].init(params) for k in names)
        measurements = {}
        for k, s in zip(names, states, strict=True):
            zeros = _zeros_of_first_update(txs[k], s, params)
            if zeros is not None:
                measurements[k] = zeros
        return MonitorState(measurements, states)

    def update(updates, state, params=None, **extra):
        if not isinstance(state, MonitorState) or len(state.measure_states) != len(names):
            raise ValueError(
                f"monitor with {len(names)} measures needs the MonitorState its init returned, "
                f"got {type(state).__name__}."
            )
        measurements, states = {}, []
        for k, s in zip(names, state.measure_states, strict=True):
            measurements[k], new = txs[k].update(updates, s, params, **extra)
            states.append(new)
        return updates, MonitorState(measurements, tuple(states))

    return GradientTransformation(init, update)


def _ema_of_measurement(
    measure: Callable[[Any], Any], decay: Any, debias: bool, accumulator_dtype: Any
) -> GradientTransformation:
    """The moving average of the measurements it receives as updates; ``init`` shapes the
    average like ``measure(params)``."""

    def accumulator(x: Any) -> Any:
        if accumulator_dtype is not None:
            return jnp.dtype(accumulator_dtype)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return x.dtype
        return jnp.asarray(0.0).dtype  # the default float: an average of counts or flags

    def init(params):
        shapes = jax.eval_shape(measure, params)
        ema = jax.tree.map(lambda s: jnp.zeros(s.shape, accumulator(s)), shapes)
        return EmaState(count=jnp.zeros([], jnp.int32), ema=ema)

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)
        new = tree_map(lambda x, m: update_moment(x, m, decay, 1), updates, state.ema)
        out = tree_map(lambda m: num.bias_correction(m, decay, count), new) if debias else new
        return out, EmaState(count=count, ema=tree_map(cast_like, new, state.ema))

    return GradientTransformation(init, update)


@transform(packable=False)
def measure_with_ema(
    measure: Callable[[Any], Any],
    decay: DecayValue,
    debias: bool = True,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    """A measurement of the updates averaged over steps, a measure for :func:`monitor`.

    Its ``update`` returns, in place of updates, the exponential moving average of
    ``measure(updates)`` (optax's ``measure_with_ema``)::

        x_t = measure(u_t)
        m_t = β m_{t-1} + (1 - β) x_t,   m_0 = 0
        out = m_t / (1 - β^t)            (debias=True; m_t otherwise)

    Its state is a chain's, ``(EmptyState(), EmaState(count, ema))``, with the average shaped
    like ``measure(params)``. The average is kept in ``accumulator_dtype``; by default in the
    measurement's dtype, or the default float dtype for an integer or boolean measurement
    (the fraction of steps where a flag was set). The output has the dtype in which the
    average is computed (the measurement's and the accumulator's promoted).

    Args:
      measure: ``measure(updates) -> pytree of arrays``.
      decay: ``β`` in [0, 1).
      debias: divide by ``1 - β^t`` (Kingma & Ba, 2015, Sec. 3).
      accumulator_dtype: the dtype of the average (default: see above).

    Returns:
      A transformation that outputs the averaged measurement.

    Raises:
      TypeError: ``measure`` is not callable.
      ValueError: ``decay`` outside [0, 1).

    >>> import gdopt, jax.numpy as jnp
    >>> t = gdopt.measure_with_ema(lambda u: gdopt.tree.norm(u) > 1.0, decay=0.9)
    >>> s = t.init(jnp.zeros(2))
    >>> _, s = t.update(jnp.array([0.1, 0.1]), s)  # flag off
    >>> out, s = t.update(jnp.array([3.0, 4.0]), s)  # flag on: 0.1 / (1 - 0.81)
    >>> round(float(out), 4)
    0.5263
    """
    check_callable("measure_with_ema's measure", measure, "a function updates -> measurement")
    return chain(
        _measure_function(measure), _ema_of_measurement(measure, decay, debias, accumulator_dtype)
    )
