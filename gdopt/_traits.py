"""What gdopt knows about a gradient transformation beyond its ``(init, update)`` pair.

:class:`Traits` records two properties that every combinator propagates from its parts:

* ``packable``: the update does not depend on how the parameters are split into arrays. Maps
  applied coordinate by coordinate and reductions over *all* parameters (a global norm,
  Prodigy's global sums) are packable: on parameters packed into one flat buffer per dtype
  (:mod:`gdopt.packing`) they compute the same numbers as leaf by leaf. Anything that
  treats arrays separately (per-array norms, a mask or partition by leaf, a per-array
  random draw, a shape-dependent rule) is not.
* ``key``: a hashable identity of the *computation*: two transformations with equal keys
  compute the same ``update`` from the same arguments (hyperparameters held in the state
  are data, not part of the key). :func:`gdopt.fit` reuses compiled programs across calls
  whose optimizers have equal keys. ``None``: unknown (identity is used instead).

Traits live on the transformation's ``update`` function (the pair itself stays optax's
two-field tuple, so ``optax.chain`` and Flax accept it). A transformation that gdopt did not
build has ``Traits(packable=False, key=None)``.

:func:`transform` is the decorator of every transform factory in gdopt: it checks the
arguments against the constraints in the signature (:mod:`gdopt._validation`) and gives the
result its traits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import jax
import numpy as np

from gdopt._validation import FactorySpec

GradientTransformation = Any  # the protocol type (gdopt.base imports this module)

__all__ = [
    "Traits",
    "traits_of",
    "with_traits",
    "structural_key",
    "all_packable",
    "combined_key",
    "transform",
    "wrapper",
    "check_transform",
]

_ATTR = "__gdopt_traits__"


class Traits:
    """Properties of a transformation (see the module docstring).

    Attributes:
      packable: the update is independent of how the parameters are split into arrays.
      key: a hashable identity of the computation, or ``None`` (unknown). May be given as a
        function of no arguments, evaluated the first time it is read (keys are needed only
        by compile caches, so eager updates do not pay for them).
      factory: for a named optimizer, ``(rebuild, names)``: ``rebuild(values)`` makes the
        same optimizer with the hyperparameters ``values`` (a dict, values may be traced),
        ``names`` the hyperparameters it keeps in its state. ``None`` otherwise.
    """

    __slots__ = ("packable", "_key", "factory")

    def __init__(self, packable: bool = False, key: Any = None, factory: Any = None) -> None:
        self.packable = bool(packable)
        self._key = key
        self.factory = factory

    @property
    def key(self) -> Hashable | None:
        if callable(self._key):
            self._key = self._key()
        return self._key

    def __repr__(self) -> str:
        return f"Traits(packable={self.packable}, key={self.key!r})"


_UNKNOWN = Traits()


def traits_of(tx: Any) -> Traits:
    """The :class:`Traits` of ``tx`` (``Traits()`` for a transformation gdopt did not build)."""
    return getattr(getattr(tx, "update", None), _ATTR, _UNKNOWN)


def with_traits(tx: GradientTransformation, traits: Traits) -> GradientTransformation:
    """``tx`` carrying ``traits``: a new pair whose ``update`` calls ``tx.update`` (the input
    is never modified, so marking a transformation built elsewhere leaves it unmarked)."""
    inner = tx.update

    def update(updates, state, params=None, **extra):
        return inner(updates, state, params, **extra)

    setattr(update, _ATTR, traits)
    return tx._replace(update=update)


def all_packable(transforms: Any) -> bool:
    """Whether every transformation in ``transforms`` is packable."""
    return all(traits_of(t).packable for t in transforms)


def combined_key(kind: Hashable, transforms: Any, *static: Any) -> Hashable | None:
    """The key of a combination of ``transforms`` (``None`` if any part's is unknown or a
    static value is unhashable)."""
    keys = tuple(traits_of(t).key for t in transforms)
    if any(k is None for k in keys):
        return None
    return structural_key((kind, keys, *static))


def structural_key(value: Any) -> Hashable | None:
    """``value`` as a hashable key, or ``None`` when it holds something unhashable (an
    array: its contents are data, not structure).

    Numbers are keyed with their type (``1``, ``1.0`` and ``True`` differ); tuples, lists and
    dicts recursively; functions by identity.
    """
    if isinstance(value, (jax.Array, np.ndarray)):
        return None
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None), np.generic)):
        return (type(value), value)
    if isinstance(value, (tuple, list)):
        parts = tuple(structural_key(v) for v in value)
        return None if any(p is None for p in parts) else (type(value), parts)
    if isinstance(value, dict):
        items = tuple((k, structural_key(v)) for k, v in sorted(value.items(), key=repr))
        return None if any(p is None for _, p in items) else (dict, items)
    try:
        hash(value)
    except TypeError:
        return None
    return ("id", value)


def check_transform(t: Any, where: str) -> None:
    """Raise ``TypeError`` unless ``t`` looks like a gradient transformation."""
    if not (hasattr(t, "init") and hasattr(t, "update") and callable(t.init)):
        raise TypeError(
            f"{where} must be a GradientTransformation (an (init, update) pair), got "
            f"{type(t).__name__}. Did you pass an optimizer factory without calling it, "
            "e.g. gdopt.adam instead of gdopt.adam(1e-3)?"
        )


def transform(
    packable: bool | Callable[[dict[str, Any]], bool] = False,
) -> Callable[[Callable[..., GradientTransformation]], Callable[..., GradientTransformation]]:
    """Decorate a transform factory: check its arguments, give its result :class:`Traits`.

    The factory's constrained arguments (``Annotated`` with a
    :class:`~gdopt._validation.Constraint`) are checked on every call; the result's key is
    the factory and its arguments (``None`` if one is an array or unhashable).

    Args:
      packable: whether the transformation is packable, or a function of the bound
        arguments that says (e.g. ``lambda a: a["mask"] is None``).
    """

    def decorate(
        fn: Callable[..., GradientTransformation],
    ) -> Callable[..., GradientTransformation]:
        spec = FactorySpec(fn)
        name = f"{fn.__module__}.{fn.__qualname__}"

        @functools.wraps(fn)
        def factory(*args: Any, **kwargs: Any) -> GradientTransformation:
            arguments = spec.check(spec.bind(args, kwargs))
            tx = fn(**arguments)
            ok = packable(arguments) if callable(packable) else packable
            key = lambda: structural_key((name, tuple(sorted(arguments.items()))))  # noqa: E731
            return with_traits(tx, Traits(packable=bool(ok), key=key))

        factory.__gdopt_spec__ = spec  # type: ignore[attr-defined]
        return factory

    return decorate


def wrapper(
    inner: str | tuple[str, ...],
    *static: str,
    packable: Callable[[dict[str, Any]], bool] | None = None,
) -> Callable[[Callable[..., GradientTransformation]], Callable[..., GradientTransformation]]:
    """Decorate a wrapper factory (one that takes inner transformations): the counterpart
    of :func:`transform`.

    The argument named ``inner`` (or each of the arguments a tuple names) must be a
    transformation; the annotated arguments are checked against their constraints. The
    result is packable when every inner transformation is (and ``packable(arguments)``, if
    given, holds); its key is :func:`combined_key` of the inner transformations and the
    ``static`` arguments.
    """
    inners = (inner,) if isinstance(inner, str) else inner

    def decorate(
        fn: Callable[..., GradientTransformation],
    ) -> Callable[..., GradientTransformation]:
        spec = FactorySpec(fn)
        kind = f"{fn.__module__}.{fn.__qualname__}"

        @functools.wraps(fn)
        def factory(*args: Any, **kwargs: Any) -> GradientTransformation:
            arguments = spec.bind(args, kwargs)
            wrapped = [arguments[name] for name in inners]
            for name, tx_in in zip(inners, wrapped, strict=True):
                check_transform(tx_in, f"{fn.__name__}'s {name}")
            arguments = spec.check(arguments)
            tx = fn(**arguments)
            ok = all(traits_of(w).packable for w in wrapped) and (
                packable is None or packable(arguments)
            )
            key = lambda: combined_key(kind, wrapped, *(arguments[k] for k in static))  # noqa: E731
            return with_traits(tx, Traits(packable=bool(ok), key=key))

        factory.__gdopt_spec__ = spec  # type: ignore[attr-defined]
        return factory

    return decorate
