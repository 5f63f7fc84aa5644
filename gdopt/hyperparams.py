"""Hyperparameters in the state: one mechanism for every named optimizer.

A named optimizer is written once, as a chain of transforms, with its hyperparameters typed
in its signature (:data:`gdopt.LearningRate`, :data:`gdopt.Decay`, ...)::

    @named_optimizer
    def adam(learning_rate: LearningRate, b1: Decay = 0.9, ...):
        return chain(scale_by_adam(b1, ...), scale_by_learning_rate(learning_rate))

:func:`named_optimizer` reads that signature: the arguments whose type is a hyperparameter
type live in the state, the others (booleans, dtypes, masks, integer sizes) stay Python
constants. Every argument is checked against its type when the optimizer is made, and a
value written later is checked the same way (:func:`set_hyperparams`, or
``state.hyperparams[name] = value``), with the same message.

The state of a named optimizer is a :class:`HyperparamsState`: the state of its chain, with
optax's layout (``state[0].mu`` is Adam's first moment, as in optax), plus
``state.hyperparams``, a :class:`Hyperparams` dict of arrays. At every ``update`` the chain
runs with the values read from the state, so changing them needs no recompile, a schedule
``count -> value`` is evaluated at the step, and ``jax.vmap`` over states with different
values trains several configurations at once.

:func:`inject_hyperparams` (optax's API) and :func:`with_hyperparams` run the same mechanism
around any factory; their state is optax's ``InjectHyperparamsState(count, hyperparams,
inner_state)``. A named optimizer built inside them (or inside another named optimizer) runs
with the values they pass in: its part of the state is kept in its chain's layout, without
hyperparameters of its own.

:func:`inject_stateful_hyperparams` is the same mechanism again, with schedules that keep a
state of their own (a :class:`StatefulSchedule`, updated at every step from the keyword extras
of ``update``); its state is optax's ``InjectStatefulHyperparamsState``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from gdopt._numerics import follow_mesh, promote, safe_increment
from gdopt._traits import Traits, structural_key, traits_of, with_traits
from gdopt._validation import Constraint, FactorySpec, is_tracer, rebuilding
from gdopt.base import GradientTransformation
from gdopt.tree import check_float_leaves, check_same_structure, key_path_str

__all__ = [
    "Hyperparams",
    "HyperparamsState",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "StatefulSchedule",
    "WrappedSchedule",
    "named_optimizer",
    "with_hyperparams",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "get_hyperparams",
    "set_hyperparams",
    "rebuild_with_hyperparams",
]


# ----------------------------------------------------------------------------- values


def _as_value(value: Any, dtype: Any = None, like: Any = None) -> jax.Array:
    """A hyperparameter value as a strongly typed array (float32 by default)."""
    if like is not None:
        if isinstance(value, (tuple, list)):
            value = jnp.stack(promote(*(jnp.asarray(v) for v in value)))
        out = jnp.asarray(value, dtype=jnp.asarray(like).dtype)
        if jnp.size(out) != jnp.size(like):
            raise ValueError(
                f"a hyperparameter of shape {jnp.shape(like)} cannot take a value of shape "
                f"{jnp.shape(out)}."
            )
        return out.reshape(jnp.shape(like))
    if isinstance(value, (tuple, list)):
        value = jnp.stack(promote(*(jnp.asarray(v) for v in value)))
    value = jnp.asarray(value)
    if dtype is not None:
        return value.astype(dtype)
    if jnp.issubdtype(value.dtype, jnp.floating) and value.dtype != jnp.bfloat16:
        return value.astype(jnp.result_type(float))
    return jnp.asarray(value, value.dtype)


class Hyperparams(dict):
    """``{name: array}``: the hyperparameter values held in an optimizer state.

    A dict (and a pytree: its values are the leaves) that checks what is written into it:
    ``hyperparams[name] = value`` validates ``value`` like the optimizer's constructor does
    and stores it as an array of the entry's dtype and shape, so a jitted step that reads
    it does not recompile. New names and deletions are refused.

    >>> import gdopt, jax.numpy as jnp
    >>> state = gdopt.adam(1e-3).init({"w": jnp.zeros(2)})
    >>> state.hyperparams["learning_rate"] = 3e-4
    >>> state.hyperparams["learning_rate"].dtype
    dtype('float32')
    >>> state.hyperparams["b1"] = 1.5
    Traceback (most recent call last):
    ...
    ValueError: b1 must be a finite number in [0, 1), got 1.5.
    """

    __slots__ = ("constraints",)

    def __init__(self, values: Mapping[str, Any] | None = None, constraints: Mapping | None = None):
        super().__init__(values or {})
        self.constraints: dict[str, Constraint] = dict(constraints or {})

    @classmethod
    def _raw(cls, values: dict, constraints: Mapping) -> Hyperparams:
        out = cls.__new__(cls)
        dict.update(out, values)
        out.constraints = dict(constraints)
        return out

    def check(self, name: str, value: Any) -> None:
        """Check ``value`` for the entry ``name`` (unknown names raise ``KeyError``)."""
        if name not in self:
            raise KeyError(f"unknown hyperparameter {name!r}; this optimizer holds {sorted(self)}.")
        c = self.constraints.get(name)
        if c is not None:
            c.check(name, value)

    def __setitem__(self, name: str, value: Any) -> None:
        self.check(name, value)
        dict.__setitem__(self, name, _as_value(value, like=self[name]))

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, name: str, value: Any = None) -> Any:  # type: ignore[override]
        self.check(name, value)
        return self[name]

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "an optimizer's hyperparameters cannot be removed; set a new value instead."
        )

    __delitem__ = pop = popitem = clear = _refuse  # type: ignore[assignment]

    def replace(self, values: Mapping[str, Any]) -> Hyperparams:
        """A copy with some values replaced (not checked: values the mechanism computed)."""
        out = Hyperparams._raw(dict(self), self.constraints)
        dict.update(out, values)
        return out

    def __reduce__(self):
        return (Hyperparams._raw, (dict(self), self.constraints))

    def __repr__(self) -> str:
        return f"Hyperparams({dict.__repr__(self)})"


def _hp_flatten_with_keys(h: Hyperparams):
    keys = sorted(h)
    return [(jax.tree_util.DictKey(k), dict.__getitem__(h, k)) for k in keys], (
        tuple(keys),
        tuple(sorted(h.constraints.items())),
    )


def _hp_unflatten(aux, children):
    keys, constraints = aux
    return Hyperparams._raw(dict(zip(keys, children, strict=True)), dict(constraints))


jax.tree_util.register_pytree_with_keys(
    Hyperparams,
    _hp_flatten_with_keys,
    _hp_unflatten,
    lambda h: ([dict.__getitem__(h, k) for k in sorted(h)], _hp_flatten_with_keys(h)[1]),
)


# ----------------------------------------------------------------------------- states


class InjectHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams` / :func:`with_hyperparams` (optax's layout).

    Attributes:
      count: number of updates done (int32), the argument given to schedules.
      hyperparams: a :class:`Hyperparams` dict, the values used by the latest update (at
        init: the values for step 0). Write to it to change them.
      inner_state: the state of the wrapped transformation.
    """

    count: jax.Array
    hyperparams: Hyperparams
    inner_state: Any


class InjectStatefulHyperparamsState(NamedTuple):
    """State of :func:`inject_stateful_hyperparams` (optax's layout).

    Attributes:
      count: number of updates done (int32).
      hyperparams: a :class:`Hyperparams` dict, the values used by the latest update (at
        init: the schedules' values for their initial states). Write to it to change the
        values that are not scheduled.
      hyperparams_states: ``{name: schedule state}`` of every scheduled hyperparameter (a
        :class:`WrappedScheduleState` for a schedule of the step count).
      inner_state: the state of the wrapped transformation.
    """

    count: jax.Array
    hyperparams: Hyperparams
    hyperparams_states: dict[str, Any]
    inner_state: Any


@runtime_checkable
class StatefulSchedule(Protocol):
    """A schedule that keeps a state (optax's protocol): ``init() -> state``,
    ``update(state, **extra) -> state`` and ``schedule(state, **extra) -> value``.

    :func:`inject_stateful_hyperparams` calls ``schedule(state, **extra)`` for the value of a
    step and then ``update(state, **extra)``, with the keyword extras given to the
    optimizer's ``update`` (``value``, ...). Any object with these three methods is one
    (``isinstance`` checks for them).

    >>> import gdopt
    >>> isinstance(gdopt.WrappedSchedule(lambda count: 0.1), gdopt.StatefulSchedule)
    True
    """

    def init(self) -> Any:
        """The schedule's initial state."""
        ...

    def update(self, state: Any, **extra_args: Any) -> Any:
        """The state after one step."""
        ...

    def __call__(self, state: Any, **extra_args: Any) -> Any:
        """The value for the step whose state is ``state``."""
        ...


class WrappedScheduleState(NamedTuple):
    """State of a :class:`WrappedSchedule`: the step count (int32)."""

    count: jax.Array


class WrappedSchedule:
    """A schedule of the step count ``count -> value`` as a :class:`StatefulSchedule` (optax's
    ``WrappedSchedule``): its state counts the steps, its value is ``schedule_fn(count)``.

    Args:
      schedule_fn: ``count -> value``.

    >>> import gdopt
    >>> s = gdopt.WrappedSchedule(lambda count: 2 * count)
    >>> state = s.update(s.update(s.init()))
    >>> int(s(state))
    4
    """

    def __init__(self, schedule_fn: Callable[[jax.Array], Any]) -> None:
        if not callable(schedule_fn):
            raise TypeError(
                "WrappedSchedule's schedule_fn must be a function count -> value, got "
                f"{type(schedule_fn).__name__}."
            )
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        """Step 0."""
        return WrappedScheduleState(count=jnp.zeros([], jnp.int32))

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        """One step more (the extras are ignored)."""
        del extra_args
        return WrappedScheduleState(count=safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> Any:
        """``schedule_fn(state.count)``."""
        del extra_args
        return self.schedule_fn(state.count)

    # Two wrappers of one function compute the same values (compile caches key on it).
    def __eq__(self, other: object) -> bool:
        return type(other) is WrappedSchedule and other.schedule_fn is self.schedule_fn

    def __hash__(self) -> int:
        return hash((WrappedSchedule, id(self.schedule_fn)))

    def __repr__(self) -> str:
        return f"WrappedSchedule({self.schedule_fn!r})"


class HyperparamsState:
    """The state of a named optimizer: its chain's state (optax's layout) and its values.

    Indexing, iteration, ``len`` and attribute access go to the chain's state, so code
    written against optax's state reads it unchanged (``state[0].mu`` is Adam's first
    moment). Its key paths are optax's too, plus ``.hyperparams[name]`` (and
    ``.hyperparams_count`` when a hyperparameter is a schedule).

    Attributes:
      inner_state: the state of the optimizer's transformations, as optax lays it out.
      hyperparams: a :class:`Hyperparams` dict of the values the next update uses (schedules:
        the value of the latest update; at init the value at step 0).
      hyperparams_count: int32 step counter for the schedules, ``None`` when there is none.

    >>> import gdopt, jax.numpy as jnp
    >>> state = gdopt.adam(1e-3).init({"w": jnp.zeros(2)})
    >>> type(state[0]).__name__, state[0].mu["w"].shape
    ('ScaleByAdamState', (2,))
    >>> float(state.hyperparams["b1"])
    0.9...
    """

    __slots__ = ("inner_state", "hyperparams", "hyperparams_count")

    def __init__(self, inner_state: Any, hyperparams: Hyperparams, hyperparams_count: Any = None):
        object.__setattr__(self, "inner_state", inner_state)
        object.__setattr__(self, "hyperparams", hyperparams)
        object.__setattr__(self, "hyperparams_count", hyperparams_count)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(object.__getattribute__(self, "inner_state"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("an optimizer state is immutable; use _replace or set_hyperparams.")

    def __getitem__(self, index: Any) -> Any:
        return self.inner_state[index]

    def __len__(self) -> int:
        return len(self.inner_state)

    def __iter__(self):
        return iter(self.inner_state)

    def _replace(self, **fields: Any) -> HyperparamsState:
        """A copy with fields replaced: ``inner_state``/``hyperparams``/``hyperparams_count``,
        or fields of the inner state (when it is a NamedTuple)."""
        own = {k: fields.pop(k) for k in list(fields) if k in HyperparamsState.__slots__}
        inner = own.get("inner_state", self.inner_state)
        if fields:
            inner = inner._replace(**fields)
        return HyperparamsState(
            inner,
            own.get("hyperparams", self.hyperparams),
            own.get("hyperparams_count", self.hyperparams_count),
        )

    def __reduce__(self):
        return (HyperparamsState, (self.inner_state, self.hyperparams, self.hyperparams_count))

    def __repr__(self) -> str:
        count = (
            ""
            if self.hyperparams_count is None
            else f", hyperparams_count={self.hyperparams_count!r}"
        )
        return f"HyperparamsState({self.inner_state!r}, hyperparams={self.hyperparams!r}{count})"


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


class _FieldAfterTuple(jax.tree_util.SequenceKey):
    """The key of a field that follows a tuple's entries (``.hyperparams`` after ``[0]``,
    ``[1]``): an index, so that the state's keys are all of one kind (libraries such as
    Flax NNX sort key paths), shown as the attribute it is."""

    def __init__(self, idx: int, name: str) -> None:
        super().__init__(idx)
        self.name = name

    def __str__(self) -> str:
        return f".{self.name}"

    __repr__ = __str__


def _hs_flatten_with_keys(s: HyperparamsState):
    inner = s.inner_state
    GetAttrKey, SequenceKey = jax.tree_util.GetAttrKey, jax.tree_util.SequenceKey
    if type(inner) is tuple:
        kind, meta = "tuple", len(inner)
        children = [(SequenceKey(i), x) for i, x in enumerate(inner)]

        def field(name: str) -> Any:
            return _FieldAfterTuple(len(children), name)

    else:
        if _is_namedtuple(inner):
            kind, meta = "namedtuple", type(inner)
            children = [(GetAttrKey(f), getattr(inner, f)) for f in inner._fields]
        else:
            kind, meta = "other", None
            children = [(GetAttrKey("inner_state"), inner)]
        field = GetAttrKey
    children.append((field("hyperparams"), s.hyperparams))
    has_count = s.hyperparams_count is not None
    if has_count:
        children.append((field("hyperparams_count"), s.hyperparams_count))
    return children, (kind, meta, has_count)


def _hs_unflatten(aux, children):
    kind, meta, has_count = aux
    children = list(children)
    count = children.pop() if has_count else None
    hyperparams = children.pop()
    if kind == "tuple":
        inner = tuple(children)
    elif kind == "namedtuple":
        inner = meta(*children)
    else:
        (inner,) = children
    return HyperparamsState(inner, hyperparams, count)


jax.tree_util.register_pytree_with_keys(
    HyperparamsState,
    _hs_flatten_with_keys,
    _hs_unflatten,
    lambda s: ([x for _, x in _hs_flatten_with_keys(s)[0]], _hs_flatten_with_keys(s)[1]),
)


def _is_hp_state(x: Any) -> bool:
    return isinstance(x, HyperparamsState)


def _strip(state: Any) -> Any:
    """``state`` with every :class:`HyperparamsState` in it replaced by its inner state."""
    return jax.tree.map(
        lambda x: _strip(x.inner_state) if isinstance(x, HyperparamsState) else x,
        state,
        is_leaf=_is_hp_state,
    )


def _strongly_typed(tree: Any) -> Any:
    # A weakly typed leaf (``jnp.asarray(0.7)``) would give weakly typed moments that turn
    # strong after the first update, which recompiles a jitted step and breaks a scan carry.
    return jax.tree.map(
        lambda x: jnp.asarray(x, x.dtype) if getattr(x, "weak_type", False) else x, tree
    )


# ----------------------------------------------------------------------------- the mechanism


def _split(
    arguments: Mapping[str, Any], dynamic: Iterable[str]
) -> tuple[dict[str, Any], dict[str, Callable], dict[str, Any]]:
    """``(constants, schedules, static)``: the hyperparameters given as values, those given as
    schedules, and every other argument."""
    dynamic = set(dynamic)
    constants, schedules, static = {}, {}, {}
    for k, v in arguments.items():
        if k not in dynamic or v is None:
            static[k] = v
        elif callable(v) and not hasattr(v, "dtype"):
            schedules[k] = v
        else:
            constants[k] = v
    return constants, schedules, static


def _hyperparams_transformation(
    body: Callable[[dict[str, Any]], GradientTransformation],
    constants: dict[str, Any],
    schedules: dict[str, Callable],
    constraints: Mapping[str, Constraint],
    *,
    inject: bool,
    dtype: Any = None,
    check_params: bool = True,
    key: Any = None,
    rebuild: Callable[[dict[str, Any]], GradientTransformation] | None = None,
    stateful: Mapping[str, Any] | None = None,
    prechecked: bool = False,
) -> GradientTransformation:
    """The one implementation: run ``body(values)`` with ``values`` read from the state.

    ``inject`` chooses the state: ``InjectHyperparamsState`` (optax's inject layout) or
    :class:`HyperparamsState` (the chain's layout plus the values); with ``stateful`` (a dict
    of :class:`StatefulSchedule`, for ``inject=True`` only) it is
    ``InjectStatefulHyperparamsState`` and those schedules' states are kept and updated with
    the keyword extras. ``body`` is called with the original constants (and the schedules'
    initial values) once, now: the result gives the traits, the initial state, and the
    update of a state that holds no values (a named optimizer nested inside another one).
    With ``prechecked`` (the caller checked the constants against ``constraints``), ``body``
    runs without checking its arguments (:func:`~gdopt._validation.rebuilding`): a schedule's
    values are not checked by value, and the state's values were checked where they entered.
    """
    unchecked = rebuilding if prechecked else contextlib.nullcontext
    if stateful is not None and not inject:
        raise ValueError("stateful schedules are kept by an InjectStatefulHyperparamsState only")
    stateful_schedules = dict(stateful or {})
    scheduled = set(schedules) | set(stateful_schedules)
    constraints = {k: c for k, c in constraints.items() if k in constants or k in scheduled}

    def at_zero() -> dict[str, Any]:
        zero = jnp.zeros([], jnp.int32)
        out = {k: s(zero) for k, s in schedules.items()}
        out.update({k: s(s.init()) for k, s in stateful_schedules.items()})
        return out

    with unchecked():
        tx0 = body({**constants, **at_zero()})
    traits0 = traits_of(tx0)

    # The transformation built for the latest values. Eager updates read the same arrays
    # from the state step after step: rebuilding the chain for them would only cost time.
    last: list[Any] = [None]

    def built(values: dict[str, Any]) -> GradientTransformation:
        items = tuple(values.items())
        hit = last[0]
        if hit is not None and len(hit[0]) == len(items):
            if all(k == k2 and v is v2 for (k, v), (k2, v2) in zip(items, hit[0], strict=True)):
                return hit[1]
        with unchecked():
            tx = body(values)
        if not any(is_tracer(v) for _, v in items):
            last[0] = (items, tx)
        return tx

    def values_at(
        count: jax.Array,
        stored: Mapping[str, Any],
        schedule_states: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        values = dict(stored)
        for k, s in schedules.items():
            values[k] = _as_value(s(count), dtype)
        states = schedule_states or {}
        for k, s in stateful_schedules.items():
            values[k] = _as_value(s(states[k], **(extra or {})), dtype)
        return values

    def init(params):
        if check_params:
            check_float_leaves(params)
        values = {k: _as_value(v, dtype) for k, v in constants.items()}
        values.update({k: _as_value(v, dtype) for k, v in at_zero().items()})
        values = follow_mesh(values, params)  # on the parameters' mesh under jit
        hyperparams = Hyperparams._raw(values, constraints)
        inner = _strongly_typed(_strip(tx0.init(params)))
        if stateful is not None:
            schedule_states = {k: s.init() for k, s in stateful_schedules.items()}
            zero = jnp.zeros([], jnp.int32)
            return InjectStatefulHyperparamsState(zero, hyperparams, schedule_states, inner)
        if inject:
            return InjectHyperparamsState(jnp.zeros([], jnp.int32), hyperparams, inner)
        count = jnp.zeros([], jnp.int32) if schedules else None
        return HyperparamsState(inner, hyperparams, count)

    def update(updates, state, params=None, **extra):
        if check_params and params is not None:
            check_same_structure(updates, params, ("grads", "params"))
        if stateful is not None:
            if not isinstance(state, InjectStatefulHyperparamsState):
                raise TypeError(
                    "this optimizer's state must be the InjectStatefulHyperparamsState its "
                    f"init returned, got {type(state).__name__}."
                )
            values = values_at(state.count, state.hyperparams, state.hyperparams_states, extra)
            new_updates, inner = built(values).update(updates, state.inner_state, params, **extra)
            schedule_states = {
                k: s.update(state.hyperparams_states[k], **extra)
                for k, s in stateful_schedules.items()
            }
            hyperparams = state.hyperparams.replace(values) if scheduled else state.hyperparams
            return new_updates, InjectStatefulHyperparamsState(
                safe_increment(state.count), hyperparams, schedule_states, inner
            )
        if inject:
            if not isinstance(state, InjectHyperparamsState):
                raise TypeError(
                    "this optimizer's state must be the InjectHyperparamsState its init "
                    f"returned, got {type(state).__name__}."
                )
            count = state.count
        elif isinstance(state, HyperparamsState):
            count = state.hyperparams_count
        else:
            # A bare chain state: this optimizer was built inside another one (or inside
            # inject_hyperparams), which passes the values in; run as constructed.
            if schedules:
                raise ValueError(
                    f"an optimizer with the schedule(s) {sorted(schedules)} was given a state "
                    "without its hyperparameters (it is built inside another optimizer or "
                    "inject_hyperparams); pass the schedule to the outer one instead."
                )
            return tx0.update(updates, state, params, **extra)
        values = values_at(count, state.hyperparams)
        new_updates, inner = built(values).update(updates, state.inner_state, params, **extra)
        hyperparams = state.hyperparams.replace(values) if schedules else state.hyperparams
        if inject:
            return new_updates, InjectHyperparamsState(safe_increment(count), hyperparams, inner)
        new_count = safe_increment(count) if schedules else None
        return new_updates, HyperparamsState(inner, hyperparams, new_count)

    factory = None if rebuild is None else (rebuild, tuple(constants))
    traits = Traits(packable=traits0.packable, key=key, factory=factory)
    return with_traits(GradientTransformation(init, update), traits)


def named_optimizer(fn: Callable[..., GradientTransformation], /, **legacy: Any) -> Any:
    """Make ``fn`` a named optimizer: its hyperparameters live in its state.

    Used as a decorator on a factory whose hyperparameters are typed with gdopt's
    hyperparameter types (:data:`gdopt.LearningRate`, :data:`gdopt.Decay`,
    :data:`gdopt.NonNegative`...). Calling the decorated factory:

    1. checks every annotated argument (a ``ValueError``/``TypeError`` names it, the
       accepted range and the value);
    2. builds ``fn``'s transformation once, for its traits and its initial state;
    3. returns a transformation whose state is a :class:`HyperparamsState` holding the
       hyperparameters given as numbers or arrays, and the step-0 value of those given as
       schedules. Each ``update`` runs ``fn``'s transformation with the values in the state
       (schedules evaluated at the step).

    Arguments of other types (booleans, dtypes, masks, integer sizes, ``None``) are Python
    constants of the optimizer. The decorated factory keeps ``fn``'s name, signature and
    docstring.

    ``named_optimizer(build, **hyperparams)`` (the older form) makes an optimizer from
    ``build(**hyperparams)`` directly: every value that is not ``None`` lives in the state.

    >>> import gdopt, jax.numpy as jnp
    >>> @gdopt.named_optimizer
    ... def my_sgd(learning_rate: gdopt.LearningRate, momentum: gdopt.Decay = 0.5):
    ...     return gdopt.chain(gdopt.trace(momentum), gdopt.scale_by_learning_rate(learning_rate))
    >>> opt = my_sgd(0.1)
    >>> state = opt.init({"w": jnp.zeros(2)})
    >>> sorted(state.hyperparams)
    ['learning_rate', 'momentum']
    >>> my_sgd(-0.1)
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be a finite number in (0, inf), got -0.1.
    """
    if legacy or not hasattr(fn, "__code__") and not inspect.isfunction(fn):
        return _named_from_values(fn, legacy)
    spec = FactorySpec(fn)
    qualname = f"{fn.__module__}.{fn.__qualname__}"
    dynamic = spec.dynamic

    @functools.wraps(fn)
    def factory(*args: Any, **kwargs: Any) -> GradientTransformation:
        arguments = spec.check(spec.bind(args, kwargs))
        constants, schedules, static = _split(arguments, dynamic)

        def body(values: dict[str, Any]) -> GradientTransformation:
            return fn(**static, **values)

        def rebuild(values: dict[str, Any]) -> GradientTransformation:
            return factory(**{**arguments, **values})

        def key() -> Any:
            k = structural_key(
                ("named", qualname, tuple(sorted(static.items())), tuple(sorted(schedules.items())))
            )
            return None if k is None else (k, tuple(sorted(constants)))

        return _hyperparams_transformation(
            body,
            constants,
            schedules,
            spec.constraints,
            inject=False,
            key=key,
            rebuild=rebuild,
            prechecked=True,
        )

    factory.__gdopt_spec__ = spec  # type: ignore[attr-defined]
    return factory


def _named_from_values(build: Callable[..., GradientTransformation], hyperparams: dict):
    static = {k: v for k, v in hyperparams.items() if v is None}
    constants, schedules, _ = _split(hyperparams, [k for k in hyperparams if k not in static])

    def body(values: dict[str, Any]) -> GradientTransformation:
        return build(**static, **values)

    return _hyperparams_transformation(body, constants, schedules, {}, inject=False)


def with_hyperparams(
    build: Callable[..., GradientTransformation],
    hyperparams: Mapping[str, Any],
    *,
    hyperparam_dtype: Any = None,
    check_params: bool = True,
) -> GradientTransformation:
    """Run ``build(**hyperparams)`` with the hyperparameters held in the state.

    Each hyperparameter may be a number, an array (possibly traced) or a schedule
    ``count -> value``. Numbers and arrays are stored in the state at ``init`` and read back
    at every ``update`` (so :func:`set_hyperparams` changes them without a recompile);
    schedules are evaluated at the step counter and the value used is recorded.

    Args:
      build: ``build(**values) -> GradientTransformation``; called at trace time with arrays.
      hyperparams: ``{name: number | array | schedule}``.
      hyperparam_dtype: dtype of the stored values (default: the default float dtype).
      check_params: check at ``init`` that the params are floating point and at ``update``
        that grads and params have the same structure (errors name the key path).

    Returns:
      A transformation whose state is an :class:`InjectHyperparamsState`.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = with_hyperparams(lambda lr: gdopt.scale(-lr), {"lr": 0.5})
    >>> state = opt.init({"w": jnp.zeros(())})
    >>> float(get_hyperparams(state)["lr"])
    0.5
    """
    constants, schedules, _ = _split(dict(hyperparams), list(hyperparams))

    def body(values: dict[str, Any]) -> GradientTransformation:
        return build(**values)

    return _hyperparams_transformation(
        body,
        constants,
        schedules,
        {},
        inject=True,
        dtype=hyperparam_dtype,
        check_params=check_params,
    )


def _is_schedule_candidate(value: Any) -> bool:
    return callable(value) and not hasattr(value, "dtype") and not inspect.isclass(value)


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.number, jax.Array)):
        return True
    return isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number)


def _injectable(spec: FactorySpec, name: str, value: Any) -> bool:
    """Whether inject_hyperparams makes the argument ``name`` a hyperparameter."""
    c = spec.constraints.get(name)
    if spec.constraints:  # a gdopt factory: its types decide
        if c is None or not c.dynamic:
            return False
        return (
            _is_number(value) or _is_schedule_candidate(value) or isinstance(value, (tuple, list))
        )
    return _is_number(value) or _is_schedule_candidate(value)  # optax's rule


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | tuple[str, ...] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """Wrap an optimizer factory so that its numeric arguments live in the state (optax's API).

    The arguments given as numbers or arrays become hyperparameters held in
    ``state.hyperparams``, those given as callables become schedules evaluated at every step,
    except the arguments named in ``static_args``; booleans, ``None``, strings and dtypes stay
    static. For a gdopt factory, the types in its signature decide instead (a mask function
    is not a schedule). Each ``update`` rebuilds the factory's transformation with the
    current values: a schedule advances, and writing ``state.hyperparams[name] = value``
    takes effect at the next step.

    A named optimizer made inside (``inject_hyperparams(gdopt.adamw)``, or a factory that
    calls one) runs with the values given here; its part of ``inner_state`` has its chain's
    layout, as optax's has.

    Args:
      inner_factory: a function returning a ``GradientTransformation``.
      static_args: names of arguments never to treat as hyperparameters.
      hyperparam_dtype: dtype of the stored values (default: float32).

    Returns:
      A function with the factory's signature, whose transformations keep an
      :class:`InjectHyperparamsState`.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = inject_hyperparams(gdopt.sgd)(learning_rate=gdopt.linear_schedule(1.0, 0.0, 10))
    >>> s = opt.init({"w": jnp.zeros(())})
    >>> _, s = opt.update({"w": jnp.ones(())}, s)
    >>> _, s = opt.update({"w": jnp.ones(())}, s)
    >>> round(float(s.hyperparams["learning_rate"]), 4)
    0.9
    """
    return _inject(inner_factory, static_args, hyperparam_dtype, stateful=False)


def inject_stateful_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | tuple[str, ...] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """:func:`inject_hyperparams` with schedules that keep a state (optax's API).

    Like :func:`inject_hyperparams`, the numeric arguments become hyperparameters held in
    ``state.hyperparams``; a hyperparameter may also be a :class:`StatefulSchedule`, an
    object with ``init() -> s``, ``update(s, **extra) -> s`` and ``__call__(s, **extra) ->
    value``, whose state is kept in ``state.hyperparams_states[name]``. At every ``update``
    the value is ``schedule(s, **extra)`` and then the schedule's state becomes
    ``schedule.update(s, **extra)``, where ``extra`` are the keyword extras of the
    optimizer's ``update`` (``value=loss`` for a schedule that reacts to the loss). A plain
    schedule ``count -> value`` is wrapped in a :class:`WrappedSchedule` (its state counts
    the steps), so it gives the same values as with :func:`inject_hyperparams`.

    optax 0.2.8 also accepts stateful schedules in ``inject_hyperparams`` and deprecates this
    name; gdopt's :func:`inject_hyperparams` keeps optax's older ``InjectHyperparamsState``
    (no schedule states), so this is the function for stateful schedules, without a warning.

    Args:
      inner_factory: a function returning a ``GradientTransformation``.
      static_args: names of arguments never to treat as hyperparameters.
      hyperparam_dtype: dtype of the stored values (default: float32).

    Returns:
      A function with the factory's signature, whose transformations keep an
      :class:`InjectStatefulHyperparamsState`.

    >>> import gdopt, jax.numpy as jnp
    >>> class Halving:  # halve the value each step the loss went up
    ...     def init(self):
    ...         return {"lr": jnp.asarray(1.0), "last": jnp.asarray(jnp.inf)}
    ...     def update(self, s, value, **extra):
    ...         lr = jnp.where(value > s["last"], s["lr"] / 2, s["lr"])
    ...         return {"lr": lr, "last": value}
    ...     def __call__(self, s, **extra):
    ...         return s["lr"]
    >>> opt = inject_stateful_hyperparams(gdopt.sgd)(learning_rate=Halving())
    >>> p = jnp.zeros(())
    >>> s = opt.init(p)
    >>> for loss in (3.0, 4.0, 2.0):
    ...     _, s = opt.update(jnp.ones(()), s, p, value=jnp.asarray(loss))
    >>> float(s.hyperparams_states["learning_rate"]["lr"])
    0.5
    """
    return _inject(inner_factory, static_args, hyperparam_dtype, stateful=True)


def _inject(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | tuple[str, ...],
    hyperparam_dtype: Any,
    *,
    stateful: bool,
) -> Callable[..., GradientTransformation]:
    """inject_hyperparams (``stateful=False``) and inject_stateful_hyperparams."""
    if isinstance(static_args, str):
        static_args = (static_args,)
    static_args = tuple(static_args)
    target = getattr(inner_factory, "__gdopt_spec__", None)
    spec = target if isinstance(target, FactorySpec) else FactorySpec(inner_factory)
    sig = inspect.signature(inner_factory)
    unknown = sorted(set(static_args) - set(sig.parameters))
    if unknown:
        raise ValueError(
            f"static_args {unknown} are not arguments of {getattr(inner_factory, '__name__', 'inner_factory')}; "
            f"its arguments are {list(sig.parameters)}."
        )

    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = spec.bind(args, kwargs)
        # a schedule may drive any numeric hyperparameter, also one whose factory takes no
        # schedule (optax's rule): those are not checked here, only the constants are
        scheduled = {
            k: v
            for k, v in bound.items()
            if k not in static_args
            and _is_schedule_candidate(v)
            and getattr(spec.constraints.get(k), "dynamic", not spec.constraints)
        }
        arguments = spec.check({k: v for k, v in bound.items() if k not in scheduled})
        arguments.update(scheduled)
        dynamic = [
            k for k, v in arguments.items() if k not in static_args and _injectable(spec, k, v)
        ]
        constants, schedules, static = _split(arguments, dynamic)
        with_state: dict[str, Any] | None = None
        if stateful:
            with_state = {
                k: v if isinstance(v, StatefulSchedule) else WrappedSchedule(v)
                for k, v in schedules.items()
            }
            schedules = {}
        else:
            for k, v in schedules.items():
                if isinstance(v, StatefulSchedule):
                    raise TypeError(
                        f"{k} is a stateful schedule (it has init and update): "
                        "inject_hyperparams takes schedules count -> value; use "
                        "gdopt.inject_stateful_hyperparams for this one."
                    )

        def body(values: dict[str, Any]) -> GradientTransformation:
            return inner_factory(**static, **values)

        def key() -> Any:
            k = structural_key(
                (
                    "inject_stateful" if stateful else "inject",
                    inner_factory,
                    static_args,
                    tuple(sorted(static.items())),
                    tuple(sorted(schedules.items())),
                    tuple(sorted((with_state or {}).items())),
                    str(hyperparam_dtype),
                )
            )
            return None if k is None else (k, tuple(sorted(constants)))

        return _hyperparams_transformation(
            body,
            constants,
            schedules,
            spec.constraints,
            inject=True,
            dtype=hyperparam_dtype,
            check_params=False,
            key=key,
            stateful=with_state,
            prechecked=True,
        )

    wrapped.__doc__ = inner_factory.__doc__
    wrapped.__name__ = getattr(inner_factory, "__name__", "injected")
    wrapped.__signature__ = sig  # type: ignore[attr-defined]
    return wrapped


# ----------------------------------------------------------------------------- reading, writing


def _is_hyperparams(x: Any) -> bool:
    return isinstance(x, Hyperparams)


def _find(state: Any) -> list[tuple[str, Hyperparams]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_hyperparams)
    out = []
    for path, x in flat:
        if isinstance(x, Hyperparams):
            # the key path of the state that holds it (drop the trailing ``.hyperparams``)
            out.append((key_path_str(path[:-1]) if path else "<root>", x))
    return out


def get_hyperparams(state: Any) -> dict:
    """The current hyperparameter values held in an optimizer state.

    Schedules appear as the value used by the latest update (at init: the value at step 0).

    Args:
      state: a state returned by a gdopt optimizer's ``init`` or ``update``.

    Returns:
      ``{name: array}`` when the state holds one optimizer; ``{key_path: {name: array}}`` when
      it holds several (param groups, chains of named optimizers).

    Raises:
      ValueError: when the state holds no hyperparameters.

    >>> import gdopt, jax.numpy as jnp
    >>> state = gdopt.adam(1e-3).init({"w": jnp.zeros(3)})
    >>> sorted(get_hyperparams(state))
    ['b1', 'b2', 'eps', 'eps_root', 'learning_rate']
    """
    found = _find(state)
    if not found:
        raise ValueError(
            "this optimizer state holds no hyperparameters: it was not made by a named gdopt "
            "optimizer or inject_hyperparams/with_hyperparams."
        )
    if len(found) == 1:
        return dict(found[0][1])
    return {path: dict(node) for path, node in found}


def set_hyperparams(state: Any, **values: Any) -> Any:
    """Return ``state`` with some hyperparameters replaced (no recompile of a jitted step).

    Each value is checked like the optimizer's constructor checks it (same message) when it
    is concrete, and stored in the dtype and shape of the current one. A hyperparameter
    given as a schedule is recomputed at each step, so setting it has no lasting effect; set
    only constant ones. Every optimizer in the state that has a hyperparameter of that name
    gets the new value.

    Raises:
      ValueError: an unknown name (the message lists the known ones), or a value outside the
        accepted range.

    >>> import gdopt, jax.numpy as jnp
    >>> state = gdopt.sgd(0.1).init({"w": jnp.zeros(())})
    >>> state = set_hyperparams(state, learning_rate=0.01)
    >>> round(float(get_hyperparams(state)["learning_rate"]), 6)
    0.01
    >>> set_hyperparams(state, learning_rate=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be a finite number in (0, inf), got -1.0.
    """
    nodes = _find(state)
    known = {k for _, n in nodes for k in n}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown}; this state holds {sorted(known) or 'none'}."
        )
    for _, node in nodes:
        for k, v in values.items():
            if k in node:
                node.check(k, v)

    def replace(node: Any) -> Any:
        if not isinstance(node, Hyperparams):
            return node
        new = {k: _as_value(v, like=node[k]) for k, v in values.items() if k in node}
        return node.replace(new)

    return jax.tree.map(replace, state, is_leaf=_is_hyperparams)


def rebuild_with_hyperparams(
    optimizer: GradientTransformation, **values: Any
) -> GradientTransformation:
    """The named optimizer ``optimizer`` made again with some hyperparameters replaced.

    Unlike :func:`set_hyperparams` (which edits a state), this makes a new optimizer whose
    ``init`` uses the new values too, e.g. an initial accumulator value. Values may be
    traced: ``jax.vmap(lambda lr: rebuild_with_hyperparams(opt, learning_rate=lr).init(p))``
    builds one state per value.

    Raises:
      TypeError: ``optimizer`` is not a named gdopt optimizer.
      ValueError: a name that is not one of its hyperparameters given as values.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = rebuild_with_hyperparams(gdopt.adam(1e-3), b1=0.5)
    >>> float(opt.init({"w": jnp.zeros(2)}).hyperparams["b1"])
    0.5
    """
    factory = traits_of(optimizer).factory
    if factory is None:
        raise TypeError(
            "rebuild_with_hyperparams needs a named gdopt optimizer (gdopt.adam(...), or a "
            "factory decorated with gdopt.named_optimizer)."
        )
    rebuild, names = factory
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown}; this optimizer holds {sorted(names)} as "
            "values (schedules cannot be replaced this way)."
        )
    return rebuild(values)
