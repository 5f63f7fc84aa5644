"""Wrappers: transformations that change how another transformation is run.

``with_hyperparams`` / ``inject_hyperparams`` keep an optimizer's numeric hyperparameters in
its state, so they can be read (:func:`get_hyperparams`), changed without recompiling
(:func:`set_hyperparams`), scheduled, and vmapped over. Every named gdopt optimizer is built
with it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt.base import GradientTransformation, safe_increment, validation_disabled
from gdopt.tree import check_float_leaves, check_same_structure

__all__ = [
    "InjectHyperparamsState",
    "with_hyperparams",
    "inject_hyperparams",
    "get_hyperparams",
    "set_hyperparams",
]


class InjectHyperparamsState(NamedTuple):
    """State of an optimizer whose hyperparameters live in its state.

    Attributes:
      count: number of updates done (int32), the argument given to schedules.
      hyperparams: ``{name: value}``, the values used by the latest update (at init: the
        values for step 0). Edit them with :func:`set_hyperparams`.
      inner_state: the state of the wrapped transformation.
    """

    count: jax.Array
    hyperparams: dict
    inner_state: Any


def _as_hyperparam(value: Any, dtype: Any) -> jax.Array:
    value = jnp.asarray(value)
    if dtype is not None:
        return value.astype(dtype)
    if jnp.issubdtype(value.dtype, jnp.floating):
        return value.astype(jnp.result_type(float)) if value.dtype != jnp.bfloat16 else value
    return value


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
    from it at every ``update`` (so :func:`set_hyperparams` changes them without a
    recompile); schedules are evaluated at the step counter and the value used is recorded.

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
    hyperparams = dict(hyperparams)
    schedules = {k: v for k, v in hyperparams.items() if callable(v)}

    def values_at(count, stored=None):
        out = {}
        for k, v in hyperparams.items():
            if k in schedules:
                out[k] = _as_hyperparam(v(count), hyperparam_dtype)
            elif stored is not None:
                out[k] = stored[k]
            else:
                out[k] = _as_hyperparam(v, hyperparam_dtype)
        return out

    def init(params):
        if check_params:
            check_float_leaves(params)
        count = jnp.zeros([], jnp.int32)
        values = values_at(count)
        with validation_disabled():
            inner = build(**values)
        return InjectHyperparamsState(
            count=count, hyperparams=values, inner_state=inner.init(params)
        )

    def update(updates, state, params=None, **extra):
        if check_params and params is not None:
            check_same_structure(updates, params, ("grads", "params"))
        values = values_at(state.count, state.hyperparams)
        with validation_disabled():
            inner = build(**values)
        new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
        return new_updates, InjectHyperparamsState(
            count=safe_increment(state.count), hyperparams=values, inner_state=inner_state
        )

    return GradientTransformation(init, update)


def _is_hyperparam(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, str):
        return False
    if callable(value):
        return True
    if isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
        return not isinstance(value, np.ndarray) or np.issubdtype(value.dtype, np.number)
    return False


def inject_hyperparams(
    factory: Callable[..., GradientTransformation],
    static_args: str | tuple[str, ...] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """Wrap an optimizer factory so that its numeric arguments live in the state.

    Arguments that are numbers, arrays or callables (schedules) become hyperparameters,
    except those named in ``static_args``; booleans, ``None``, strings and dtypes stay
    static. gdopt's named optimizers already keep their hyperparameters in their state, so
    this is for factories of your own (and for code written against optax's function).

    Args:
      factory: a function returning a ``GradientTransformation``.
      static_args: names of arguments never to treat as hyperparameters.
      hyperparam_dtype: dtype of the stored values.

    Returns:
      A function with the factory's signature.

    >>> import gdopt
    >>> def my_sgd(learning_rate):
    ...     return gdopt.scale(-learning_rate)
    >>> opt = inject_hyperparams(my_sgd)(learning_rate=gdopt.linear_schedule(1.0, 0.0, 10))
    >>> s = opt.init({"w": jnp.zeros(())})
    >>> _, s = opt.update({"w": jnp.ones(())}, s)
    >>> _, s = opt.update({"w": jnp.ones(())}, s)
    >>> round(float(get_hyperparams(s)["learning_rate"]), 4)
    0.9
    """
    if isinstance(static_args, str):
        static_args = (static_args,)
    sig = inspect.signature(factory)

    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for name, param in sig.parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD and name in arguments:
                arguments.update(arguments.pop(name))
        hyper = {k: v for k, v in arguments.items() if k not in static_args and _is_hyperparam(v)}
        static = {k: v for k, v in arguments.items() if k not in hyper}
        return with_hyperparams(
            lambda **values: factory(**static, **values),
            hyper,
            hyperparam_dtype=hyperparam_dtype,
            check_params=False,
        )

    wrapped.__doc__ = factory.__doc__
    wrapped.__name__ = getattr(factory, "__name__", "injected")
    return wrapped


def _find(state: Any) -> list[tuple[str, InjectHyperparamsState]]:
    is_node = lambda x: isinstance(x, InjectHyperparamsState)  # noqa: E731
    flat, _ = jax.tree_util.tree_flatten_with_path(state, is_leaf=is_node)
    return [(jax.tree_util.keystr(p), x) for p, x in flat if is_node(x)]


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
        return dict(found[0][1].hyperparams)
    return {path or "<root>": dict(node.hyperparams) for path, node in found}


def set_hyperparams(state: Any, **values: Any) -> Any:
    """Return ``state`` with some hyperparameters replaced (no recompile of a jitted step).

    A hyperparameter given as a schedule is recomputed at each step, so setting it has no
    lasting effect; set only constant ones. Every optimizer in the state that has a
    hyperparameter of that name gets the new value.

    >>> import gdopt, jax.numpy as jnp
    >>> state = gdopt.sgd(0.1).init({"w": jnp.zeros(())})
    >>> state = set_hyperparams(state, learning_rate=0.01)
    >>> round(float(get_hyperparams(state)["learning_rate"]), 6)
    0.01
    """
    nodes = _find(state)
    known = {k for _, n in nodes for k in n.hyperparams}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown}; this state holds {sorted(known) or 'none'}."
        )

    def replace(node):
        if not isinstance(node, InjectHyperparamsState):
            return node
        hp = dict(node.hyperparams)
        for k, v in values.items():
            if k in hp:
                hp[k] = jnp.asarray(v, dtype=hp[k].dtype).reshape(jnp.shape(hp[k]))
        return node._replace(hyperparams=hp)

    return jax.tree.map(replace, state, is_leaf=lambda x: isinstance(x, InjectHyperparamsState))
