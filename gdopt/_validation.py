"""Argument validation: constraints on numbers, and the checks every factory runs.

The one place where gdopt decides whether an argument is acceptable. A factory (a transform
or a named optimizer) states each argument's constraint in its signature, as metadata of an
``Annotated`` type::

    def scale_by_adam(b1: Decay = 0.9, eps: NonNegative = 1e-8, ...): ...

and its decorator (:func:`gdopt._traits.transform`, :func:`gdopt.named_optimizer`) checks
the arguments of every call against :class:`FactorySpec` of the signature. The same
constraint checks a value written later (:func:`gdopt.set_hyperparams`,
``state.hyperparams[name] = value``), with the same message.

Values are checked only when they are concrete: a traced value (inside ``jit``/``vmap``) or
a schedule cannot be inspected, so it passes (validation never breaks tracing).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import inspect
import math
import operator
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Constraint",
    "Interval",
    "Integer",
    "OneOf",
    "FactorySpec",
    "is_tracer",
    "is_concrete",
    "check_scalar",
    "check_decay",
    "check_learning_rate",
    "check_nonnegative",
    "check_int",
    "check_choice",
    "check_callable",
    "need_params",
    "is_key_array",
    "check_key",
]


def is_tracer(value: Any) -> bool:
    """True when ``value`` is a tracer (an abstract value inside ``jit``/``vmap``/``grad``)."""
    return isinstance(value, jax.core.Tracer)


def is_concrete(value: Any) -> bool:
    """True when ``value`` can be inspected on the host (no leaf is a tracer)."""
    if is_tracer(value):
        return False
    if isinstance(value, (int, float, complex, np.ndarray, np.number)) or value is None:
        return True
    return not any(is_tracer(x) for x in jax.tree.leaves(value))


# ----------------------------------------------------------------------------- constraints


class Constraint:
    """What an argument accepts. Subclasses implement :meth:`check`.

    Attributes:
      dynamic: a value of this kind is a *hyperparameter*: a named optimizer keeps it in its
        state (so it can be changed without recompiling, scheduled and vmapped over). A
        non-dynamic argument (a step count that fixes a loop length, a choice of method) is
        checked and stays a Python constant.
    """

    dynamic: bool = False

    def check(self, name: str, value: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def normalize(self, value: Any) -> Any:
        """The value a factory works with (e.g. a preset name turned into its numbers);
        called after :meth:`check`. The identity by default."""
        return value


def _range_text(low, high, low_open, high_open) -> str:
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    left = "(" if low is None or low_open else "["
    right = ")" if high is None or high_open else "]"
    return f"{left}{lo}, {hi}{right}"


@dataclasses.dataclass(frozen=True)
class Interval(Constraint):
    """A real number (or an array, or a tuple of numbers) whose every element lies in a range.

    Accepts Python and NumPy numbers, arrays, a tuple of numbers (e.g. ``betas``; a bad entry
    is named ``betas[1]``), a schedule ``count -> value`` (``schedule=True``, the default) and,
    with ``optional``, ``None``.

    Attributes:
      low, high: the bounds (``None``: unbounded).
      low_open, high_open: exclude the bound.
      optional: ``None`` is accepted (the feature is off).
      schedule: a callable is accepted as a schedule.
      length: the number of entries a tuple (or 1-D array) must have (``None``: any shape).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    schedule: bool = True
    length: int | None = None
    dynamic: bool = True

    def describe(self) -> str:
        return (
            f"a finite number in {_range_text(self.low, self.high, self.low_open, self.high_open)}"
        )

    def __repr__(self) -> str:
        extra = " or None" if self.optional else ""
        return f"Interval{_range_text(self.low, self.high, self.low_open, self.high_open)}{extra}"

    def check(self, name: str, value: Any) -> None:
        if value is None:
            if self.optional:
                return
            raise TypeError(f"{name} must be {self._accepts()}, got None.")
        if callable(value) and not hasattr(value, "dtype"):
            if self.schedule:
                return
            raise TypeError(
                f"{name} must be a number or an array (a schedule is not accepted here), got "
                f"the callable {value!r}."
            )
        if not is_concrete(value):
            return
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a number, got the bool {value!r}.")
        if self.length is not None and np.shape(np.asarray(value)) != (self.length,):
            raise ValueError(
                f"{name} must be {self.length} numbers, each {self.describe()[2:]}; got {value!r}."
            )
        if isinstance(value, (tuple, list)):
            if self.length is None:
                raise TypeError(
                    f"{name} must be {self._accepts()}, got the {type(value).__name__} "
                    f"{value!r}: pass one number, or jnp.asarray(...) for an array of values."
                )
            for i, v in enumerate(value):
                Interval(self.low, self.high, self.low_open, self.high_open, schedule=False).check(
                    f"{name}[{i}]", v
                )
            return
        try:
            arr = np.asarray(value)
        except Exception as e:
            raise TypeError(f"{name} must be {self._accepts()}, got {value!r}.") from e
        if not jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(
            arr.dtype, jnp.complexfloating
        ):
            raise TypeError(
                f"{name} must be {self._accepts()}, got {type(value).__name__} {value!r}."
            )
        shown = value if arr.ndim == 0 or isinstance(value, tuple) else arr
        msg = f"{name} must be {self.describe()}, got {shown}."
        if not np.all(np.isfinite(arr)):
            raise ValueError(msg)
        if self.low is not None and (
            np.any(arr <= self.low) if self.low_open else np.any(arr < self.low)
        ):
            raise ValueError(msg)
        if self.high is not None and (
            np.any(arr >= self.high) if self.high_open else np.any(arr > self.high)
        ):
            raise ValueError(msg)

    def _accepts(self) -> str:
        out = "a number, an array" + (" or a schedule" if self.schedule else "")
        return out + (" (or None)" if self.optional else "")


@dataclasses.dataclass(frozen=True)
class Integer(Constraint):
    """A Python (or NumPy) integer ``>= low``, or ``None`` with ``optional``; never a bool.

    Integers that fix shapes, loop lengths or PRNG streams are static (not hyperparameters).
    With ``schedule`` a callable ``count -> k`` is accepted too.
    """

    low: int = 0
    optional: bool = False
    schedule: bool = False
    real: bool = False
    dynamic: bool = False

    def check(self, name: str, value: Any) -> None:
        if value is None:
            if self.optional:
                return
            raise TypeError(f"{name} must be an integer >= {self.low}, got None.")
        if callable(value) and not hasattr(value, "dtype"):
            if self.schedule:
                return
            raise TypeError(f"{name} must be an integer >= {self.low}, got {value!r}.")
        if not is_concrete(value):
            return
        check_int(name, value, self.low, allow_float=self.real)


@dataclasses.dataclass(frozen=True)
class OneOf(Constraint):
    """One of a fixed set of values (strings, usually)."""

    choices: tuple = ()

    def check(self, name: str, value: Any) -> None:
        check_choice(name, value, self.choices)


# ----------------------------------------------------------------------------- checks


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

    Schedules and traced values are not inspected. Raises ``ValueError`` that names the
    argument, the accepted range and the value given, and ``TypeError`` when the value is
    not a number.

    >>> check_scalar("learning_rate", -1.0, low=0.0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be a finite number in (0, inf), got -1.0.
    """
    Interval(low, high, low_open, high_open, optional=allow_none).check(name, value)


def check_decay(name: str, value: Any) -> None:
    """Validate a decay rate / momentum coefficient: concrete values must lie in [0, 1)."""
    check_scalar(name, value, low=0.0, high=1.0, high_open=True)


def check_learning_rate(value: Any, name: str = "learning_rate") -> None:
    """Validate a learning rate: concrete values must be finite and > 0."""
    check_scalar(name, value, low=0.0, low_open=True)


def check_nonnegative(name: str, value: Any) -> None:
    """Validate a constant that must be finite and >= 0 (``eps``, ``weight_decay``...)."""
    check_scalar(name, value, low=0.0)


def check_int(name: str, value: Any, low: int = 0, *, allow_float: bool = False) -> int:
    """A count-like argument: an integer ``>= low`` (never a bool). Returns it as an ``int``.

    With ``allow_float`` a float with an integral value (``22.0``) is accepted too.

    >>> check_int("memory_size", 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: memory_size must be an integer >= 1, got 0.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}.")
    arr = np.asarray(value) if not isinstance(value, int) else None
    if arr is not None and arr.ndim != 0:
        raise TypeError(f"{name} must be an integer, got an array of shape {arr.shape}.")
    try:
        v = operator.index(value if arr is None else arr.item())
    except TypeError:
        item = value if arr is None else arr.item()
        if allow_float and isinstance(item, float) and math.isfinite(item) and item.is_integer():
            v = int(item)
        else:
            raise TypeError(
                f"{name} must be an integer, got {type(value).__name__} {value!r}."
            ) from None
    if v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v}.")
    return v


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """``value`` must be one of ``choices`` (the message lists them).

    >>> check_choice("mode", "fast", ("exact", "approx"))
    Traceback (most recent call last):
    ...
    ValueError: mode must be one of 'exact', 'approx'; got 'fast'.
    """
    try:
        ok = value in choices
    except TypeError:
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}.")


def check_callable(name: str, value: Any, what: str = "a function") -> None:
    """``value`` must be callable; the message says what was expected."""
    if not callable(value):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}.")


def need_params(params: Any, name: str, why: str) -> None:
    """Raise the error of an ``update`` that needs the parameters but was not given them."""
    if params is None:
        raise ValueError(
            f"{name} needs the current parameters ({why}): call "
            "update(grads, state, params) with the params as third argument."
        )


# ----------------------------------------------------------------------------- signatures


def _constraint_of(annotation: Any) -> Constraint | None:
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, Constraint):
                return meta
    return None


_REBUILDING = contextvars.ContextVar("gdopt_rebuilding", default=False)


@contextlib.contextmanager
def rebuilding() -> Iterator[None]:
    """Inside, factories normalize their arguments but do not check them.

    For one use: a transformation whose hyperparameters live in its state is rebuilt from
    the state's values at every step (and built once from a schedule's step-0 value). Those
    values were checked where they entered the state (the constructor, ``set_hyperparams``,
    a write to ``state.hyperparams``), or come from a schedule, which is never checked by
    value (a warm-up starting at 0, a decay ending at 0), so they are not checked again.
    """
    token = _REBUILDING.set(True)
    try:
        yield
    finally:
        _REBUILDING.reset(token)


class FactorySpec:
    """The arguments of a factory and the constraint each one states in its annotation.

    Built once per factory (at decoration time): binding and checking a call is then a
    dictionary walk, cheap enough to run at every eager ``update``.

    Attributes:
      name: the factory's name (for messages).
      signature: its :class:`inspect.Signature`.
      constraints: ``{argument: Constraint}`` for the annotated arguments.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.name = getattr(fn, "__name__", "factory")
        self.signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:  # unresolvable annotations: no constraints
            hints = {}
        self.constraints: dict[str, Constraint] = {}
        for name in self.signature.parameters:
            c = _constraint_of(hints.get(name))
            if c is not None:
                self.constraints[name] = c
        params = list(self.signature.parameters.values())
        P = inspect.Parameter
        self._simple = all(p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) for p in params)
        self._positional = tuple(p.name for p in params if p.kind is P.POSITIONAL_OR_KEYWORD)
        self._defaults = {p.name: p.default for p in params}
        self._var_keyword = next(
            (
                p.name
                for p in self.signature.parameters.values()
                if p.kind is inspect.Parameter.VAR_KEYWORD
            ),
            None,
        )

    @property
    def dynamic(self) -> tuple[str, ...]:
        """The arguments that are hyperparameters (their constraint is dynamic)."""
        return tuple(k for k, c in self.constraints.items() if c.dynamic)

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """``{name: value}`` for every argument, defaults filled in (``**kwargs`` merged)."""
        if self._simple and len(args) <= len(self._positional):
            out = dict(self._defaults)
            given = self._positional[: len(args)]
            out.update(zip(given, args, strict=True))
            if all(k in out and k not in given for k in kwargs):
                out.update(kwargs)
                if not any(v is inspect.Parameter.empty for v in out.values()):
                    return out
        bound = self.signature.bind(*args, **kwargs)  # the slow path raises the right error
        bound.apply_defaults()
        out = dict(bound.arguments)
        if self._var_keyword is not None and self._var_keyword in out:
            out.update(out.pop(self._var_keyword))
        return out

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check every constrained argument (concrete values only); return the arguments
        with each constrained value normalized (:meth:`Constraint.normalize`)."""
        out = dict(arguments)
        checking = not _REBUILDING.get()
        for name, c in self.constraints.items():
            if name in arguments:
                if checking:
                    c.check(name, arguments[name])
                out[name] = c.normalize(arguments[name])
        return out


# ----------------------------------------------------------------------------- PRNG keys


def is_key_array(x: Any) -> bool:
    """Whether ``x`` is a typed PRNG key array (``jax.random.key``)."""
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _refuse_bool_key(key: Any) -> Any:
    if isinstance(key, (bool, np.bool_)):
        raise TypeError(
            "key must be an int seed, jax.random.PRNGKey(seed) (uint32 of shape (2,)) or "
            f"jax.random.key(seed), got bool {key!r}."
        )
    return key


def check_key(key: Any) -> jax.Array:
    """A PRNG key from ``None`` (``PRNGKey(0)``), an int seed, a ``jax.random.PRNGKey`` or a
    typed ``jax.random.key``."""
    if key is None:
        return jax.random.PRNGKey(0)
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.PRNGKey(operator.index(key))
    key = _refuse_bool_key(key)
    if is_key_array(key):
        if key.shape != ():
            raise ValueError(
                f"key must be a single PRNG key, got a key array of shape {key.shape}."
            )
        return key
    shape, dtype = getattr(key, "shape", None), getattr(key, "dtype", None)
    if shape == (2,) and dtype == np.uint32:
        return jnp.asarray(key)
    raise TypeError(
        "key must be an int seed, jax.random.PRNGKey(seed) (uint32 of shape (2,)) or "
        f"jax.random.key(seed), got {type(key).__name__}"
        + (f" of shape {shape} and dtype {dtype}" if shape is not None else f" {key!r}")
        + "."
    )
