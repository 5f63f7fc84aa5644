"""Framework models passed whole to the engine: Equinox modules and Flax NNX models.

:func:`gdopt.fit` trains a pytree of arrays (:func:`gdopt.make_step` takes one only). A model of a
framework holds more than its trainable arrays: an Equinox module holds its activation
functions and other non-array fields, a Flax NNX model is a mutable object graph. This
module splits such a model into the arrays the engine trains and the rest, wraps the user's
loss (written for the model, ``loss_fn(model, batch)``) into a loss of the arrays, and puts
the trained arrays back into a model of the same kind:

* Equinox (``isinstance(model, eqx.Module)``): ``arrays, static = eqx.partition(model,
  eqx.is_inexact_array)`` (the floating-point arrays, what ``eqx.filter_grad``
  differentiates; integer arrays such as index buffers stay in the static part); the loss
  sees ``eqx.combine(arrays, static)``; the result is ``eqx.combine(trained, static)``.
* Flax NNX (``isinstance(model, nnx.Module)``): ``graphdef, params, rest = nnx.split(model,
  nnx.Param, ...)``; the engine trains ``nnx.as_pure(params)`` (an ``nnx.State`` of plain
  arrays, what ``nnx.Optimizer`` gives its transformation); the loss sees
  ``nnx.merge(graphdef, params, rest)``; the result is a new model merged the same way (the
  model passed in is not modified). The non-``Param`` state (``rest``: batch statistics, RNG
  counters) is held fixed during training and comes back as it was.

Neither framework is imported here: a model is recognised through the modules already in
``sys.modules`` (an object of a framework exists only once its module is imported), so
gdopt neither needs nor imports them.

The wrapped losses are cached on the user's loss and the static part (compared by value for
hashable leaves, by identity otherwise), so repeated calls on the same kind of model reuse
:func:`gdopt.fit`'s compiled programs, as for a plain pytree.
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax

__all__ = ["Adapted", "adapt", "kind_of"]

_MAX_ENTRIES = 64
_WRAPPED: collections.OrderedDict[Hashable, tuple[Callable[..., Any], Any]] = (
    collections.OrderedDict()
)


class Adapted(NamedTuple):
    """A framework model split for the engine.

    Attributes:
      kind: ``"equinox"`` or ``"nnx"``.
      name: the model's class name (for messages).
      arrays: the pytree of arrays the engine trains.
      static: what is held fixed (Equinox: the non-array part of the module; NNX: the pair
        ``(graphdef, rest)``).
      rebuild: ``arrays -> model``, the model of the same kind around (trained) arrays.
    """

    kind: str
    name: str
    arrays: Any
    static: Any
    rebuild: Callable[[Any], Any]

    def wrap(self, fn: Callable[..., Any] | None, with_data: bool = True) -> Any:
        """``fn(model[, batch])`` as a function of the arrays: ``fn(rebuild(arrays)[,
        batch])`` (cached: the same ``fn`` and static part give the same function)."""
        if fn is None:
            return None
        key = (self.kind, fn, with_data, _static_key(self.kind, self.static))
        hit = _WRAPPED.get(key)
        if hit is not None:
            _WRAPPED.move_to_end(key)
            return hit[0]
        wrapped = _wrapper(fn, self.rebuild, self.kind, self.name, with_data)
        _WRAPPED[key] = (wrapped, self.static)  # keeps the static part (and its ids) alive
        while len(_WRAPPED) > _MAX_ENTRIES:
            _WRAPPED.popitem(last=False)
        return wrapped


def kind_of(model: Any) -> str | None:
    """``"equinox"`` for an Equinox module, ``"nnx"`` for a Flax NNX module, else ``None``
    (a plain pytree). Imports neither framework."""
    eqx = sys.modules.get("equinox")
    if eqx is not None and isinstance(model, eqx.Module):
        return "equinox"
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(model, nnx.Module):
        return "nnx"
    return None


def adapt(model: Any) -> Adapted | None:
    """The split of a framework model (see the module's docstring), ``None`` for anything
    else (a pytree of arrays is trained as it is).

    Raises:
      ValueError: the model has no array to train (no array field for Equinox, no
        ``nnx.Param`` for NNX).
    """
    kind = kind_of(model)
    if kind is None:
        return None
    name = type(model).__name__
    if kind == "equinox":
        eqx = sys.modules["equinox"]
        arrays, static = eqx.partition(model, eqx.is_inexact_array)

        def rebuild_eqx(trained: Any) -> Any:
            return eqx.combine(trained, static)

        adapted = Adapted(kind, name, arrays, static, rebuild_eqx)
        what = "floating-point array (eqx.is_inexact_array)"
    else:
        nnx = sys.modules["flax.nnx"]
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        arrays = nnx.as_pure(params)

        def rebuild_nnx(trained: Any) -> Any:
            return nnx.merge(graphdef, trained, rest)

        adapted = Adapted(kind, name, arrays, (graphdef, rest), rebuild_nnx)
        what = "an nnx.Param"
    if not jax.tree.leaves(adapted.arrays):
        raise ValueError(
            f"params is a {'Flax NNX' if kind == 'nnx' else 'Equinox'} model ({name}) with no "
            f"parameter to train: it has no {what}."
        )
    return adapted


def _hashable(x: Any) -> Hashable:
    try:
        hash(x)
    except TypeError:
        return ("id", id(x))
    return (type(x), x)


def _static_key(kind: str, static: Any) -> Hashable:
    """The static part as a cache key: its structure and its leaves (by value when hashable,
    by identity otherwise: arrays, whose values a traced loss would bake in)."""
    if kind == "nnx":
        graphdef, rest = static
        leaves = jax.tree.leaves(rest)
        return graphdef, jax.tree.structure(rest), tuple(("id", id(x)) for x in leaves)
    leaves, treedef = jax.tree.flatten(static)
    return treedef, tuple(_hashable(x) for x in leaves)


def _wrapper(
    fn: Callable[..., Any], rebuild: Callable[[Any], Any], kind: str, name: str, with_data: bool
) -> Callable[..., Any]:
    framework = "Flax NNX" if kind == "nnx" else "Equinox"
    article = "a" if kind == "nnx" else "an"

    def call(arrays: Any, *batch: Any) -> Any:
        model = rebuild(arrays)
        try:
            return fn(model, *batch)
        except (jax.errors.JAXTypeError, jax.errors.JAXIndexError):
            raise  # JAX's own tracing errors say what they need to
        except (TypeError, AttributeError, KeyError, IndexError) as e:
            raise TypeError(
                f"loss_fn failed on the {framework} model: with params {article} {framework} model "
                f"({name}), gdopt calls loss_fn(model{', batch' if with_data else ''}) with the "
                f"whole model (its trained arrays put back in), not a pytree of arrays; it "
                f"raised {type(e).__name__}: {e}"
            ) from e

    if with_data:
        return lambda arrays, batch: call(arrays, batch)
    return lambda arrays: call(arrays)
