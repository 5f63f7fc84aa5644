"""Wrappers: transformations that change how another transformation is run.

``with_hyperparams`` / ``inject_hyperparams`` keep an optimizer's numeric hyperparameters in
its state, so they can be read (:func:`get_hyperparams`), changed without recompiling
(:func:`set_hyperparams`), scheduled, and vmapped over. Every named gdopt optimizer is built
with it.

The others wrap an inner transformation: :func:`apply_if_finite` skips non-finite steps,
:func:`accumulate` (and the optax-compatible :class:`MultiSteps`) accumulates gradients over
micro-batches, :func:`lookahead` keeps slow weights, :func:`ema_params` keeps a moving average
of the parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt.base import (
    GradientTransformation,
    check_decay,
    check_scalar,
    is_concrete,
    safe_increment,
    validation_disabled,
)
from gdopt.combinators import _check_transform
from gdopt.transforms._core import _map
from gdopt.tree import check_float_leaves, check_same_structure, tree_all_finite

__all__ = [
    "InjectHyperparamsState",
    "with_hyperparams",
    "inject_hyperparams",
    "get_hyperparams",
    "set_hyperparams",
    "ApplyIfFiniteState",
    "apply_if_finite",
    "MultiStepsState",
    "accumulate",
    "MultiSteps",
    "LookaheadState",
    "lookahead",
    "EmaParamsState",
    "ema_params",
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
        # Strongly typed state: a weakly typed leaf (``jnp.asarray(0.7)``) would give weakly
        # typed moments that turn strong after the first update, which recompiles a jitted
        # step and breaks a ``lax.scan`` carry.
        inner_state = jax.tree.map(
            lambda x: jnp.asarray(x, x.dtype) if getattr(x, "weak_type", False) else x,
            inner.init(params),
        )
        return InjectHyperparamsState(count=count, hyperparams=values, inner_state=inner_state)

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
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | tuple[str, ...] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """Wrap an optimizer factory so that its numeric arguments live in the state.

    Arguments that are numbers, arrays or callables (schedules) become hyperparameters,
    except those named in ``static_args``; booleans, ``None``, strings and dtypes stay
    static. gdopt's named optimizers already keep their hyperparameters in their state, so
    this is for factories of your own (and for code written against optax's function).

    Args:
      inner_factory: a function returning a ``GradientTransformation``.
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
    sig = inspect.signature(inner_factory)

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
            lambda **values: inner_factory(**static, **values),
            hyper,
            hyperparam_dtype=hyperparam_dtype,
            check_params=False,
        )

    wrapped.__doc__ = inner_factory.__doc__
    wrapped.__name__ = getattr(inner_factory, "__name__", "injected")
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


# ----------------------------------------------------------------------------- helpers

_is_none = lambda x: x is None  # noqa: E731


def _cast_like(tree: Any, like: Any) -> Any:
    """Each leaf of ``tree`` in the dtype of the matching leaf of ``like``."""
    return _map(lambda x, y: jnp.asarray(x).astype(jnp.asarray(y).dtype), tree, like)


def _zeros_like(tree: Any) -> Any:
    return _map(jnp.zeros_like, tree)


def _check_int(name: str, value: Any, minimum: int) -> None:
    """A count-like argument: a concrete value must be an integer >= minimum."""
    if callable(value) or not is_concrete(value):
        return
    arr = np.asarray(value)
    if isinstance(value, bool) or not np.issubdtype(arr.dtype, np.integer) or arr.ndim:
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    if int(arr) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


# ----------------------------------------------------------------------------- apply_if_finite


class ApplyIfFiniteState(NamedTuple):
    """Bookkeeping of :func:`apply_if_finite`.

    Attributes:
      notfinite_count: consecutive non-finite updates so far (0 after a finite one).
      last_finite: whether the latest update was finite.
      total_notfinite: non-finite updates seen in total.
      inner_state: the wrapped transformation's state.
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: Any


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int
) -> GradientTransformation:
    """Skip steps whose incoming updates contain NaN or infinity.

    A non-finite step returns zero updates and leaves the inner state untouched (the
    optimizer's moments are not poisoned), and counts it. After more than
    ``max_consecutive_errors`` non-finite steps in a row the inner update is applied anyway
    (as optax does), so a run that keeps producing NaNs fails visibly instead of stalling.
    Only the incoming updates are checked, not what the inner transformation returns.

    Args:
      inner: the transformation to protect.
      max_consecutive_errors: how many non-finite steps in a row to skip, an integer >= 0.

    Returns:
      A transformation whose state is an :class:`ApplyIfFiniteState`.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = apply_if_finite(gdopt.sgd(0.1), max_consecutive_errors=2)
    >>> p = {"w": jnp.array(1.0)}
    >>> u, s = opt.update({"w": jnp.array(jnp.nan)}, opt.init(p), p)
    >>> (float(u["w"]), int(s.notfinite_count), int(s.total_notfinite))
    (0.0, 1, 1)
    """
    _check_transform(inner, "apply_if_finite's inner")
    _check_int("max_consecutive_errors", max_consecutive_errors, 0)

    def init(params):
        return ApplyIfFiniteState(
            notfinite_count=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True),
            total_notfinite=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
        )

    def update(updates, state, params=None, **extra):
        finite = tree_all_finite(updates)
        notfinite_count = jnp.where(finite, 0, safe_increment(state.notfinite_count))

        def apply():
            new, inner_state = inner.update(updates, state.inner_state, params, **extra)
            return _cast_like(new, updates), inner_state

        def skip():
            return _zeros_like(updates), state.inner_state

        go = jnp.logical_or(finite, notfinite_count > max_consecutive_errors)
        new_updates, inner_state = jax.lax.cond(go, apply, skip)
        return new_updates, ApplyIfFiniteState(
            notfinite_count=notfinite_count.astype(jnp.int32),
            last_finite=finite,
            total_notfinite=jnp.where(
                finite, state.total_notfinite, safe_increment(state.total_notfinite)
            ),
            inner_state=inner_state,
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- accumulation


class MultiStepsState(NamedTuple):
    """State of :func:`accumulate` (field names as in optax's ``MultiStepsState``).

    Attributes:
      mini_step: micro-steps accumulated since the last real update.
      gradient_step: real (inner) updates done so far.
      inner_opt_state: the inner transformation's state.
      acc_grads: the one accumulator: the running mean (or sum) of the micro-step gradients.
      skip_state: whatever ``should_skip_update_fn`` keeps (``()`` by default).
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_opt_state: Any
    acc_grads: Any
    skip_state: Any = ()


def accumulate(
    inner: GradientTransformation,
    every_k_schedule: int | Callable[[jax.Array], Any],
    use_grad_mean: bool = True,
    should_skip_update_fn: Callable[..., tuple[jax.Array, Any]] | None = None,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    """Gradient accumulation: one inner update every ``k`` micro-steps, with the mean gradient.

    Micro-steps ``1..k-1`` only accumulate and return zero updates (the parameters stay
    put); micro-step ``k`` feeds the accumulated gradient to ``inner`` and returns its
    update. So ``k`` micro-batches give exactly the step that one batch ``k`` times as large
    would (for a loss that is a mean over examples). The running mean is kept as
    ``a_n = a_{n-1} + (g_n - a_{n-1}) / n``, in ONE parameter-sized buffer; the inner
    transformation runs only on the final micro-step (``lax.cond``; under ``vmap`` both
    branches are computed and one is selected).

    Args:
      inner: the transformation to run on the accumulated gradients.
      every_k_schedule: ``k``, an integer >= 1, or a function ``gradient_step -> k``.
      use_grad_mean: pass the mean of the ``k`` gradients (True) or their sum.
      should_skip_update_fn: optional ``fn(updates, gradient_step, params) -> (skip,
        skip_state)`` with ``skip`` a scalar bool: a skipped micro-step returns zeros and
        changes nothing but ``skip_state`` (e.g. drop non-finite gradients).
      accumulator_dtype: dtype of the accumulator (default: each parameter's dtype
        promoted to at least float32, so bfloat16 models accumulate in float32).

    Returns:
      A transformation whose state is a :class:`MultiStepsState`. An inner update happened
      at the latest step when ``state.mini_step == 0`` and ``state.gradient_step > 0``.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = accumulate(gdopt.sgd(1.0), every_k_schedule=2)
    >>> p = {"w": jnp.array(0.0)}
    >>> s = opt.init(p)
    >>> u1, s = opt.update({"w": jnp.array(1.0)}, s, p)
    >>> u2, s = opt.update({"w": jnp.array(3.0)}, s, p)
    >>> (float(u1["w"]), float(u2["w"]))           # zeros, then -1.0 * mean(1, 3)
    (0.0, -2.0)
    """
    _check_transform(inner, "accumulate's inner")
    if callable(every_k_schedule):
        k_fn = every_k_schedule
    else:
        _check_int("every_k_schedule", every_k_schedule, 1)
        k_fn = lambda step: every_k_schedule  # noqa: E731

    def acc_dtype(x):
        if accumulator_dtype is not None:
            return accumulator_dtype
        return jnp.promote_types(jnp.asarray(x).dtype, jnp.float32)

    def init(params):
        acc = _map(lambda p: jnp.zeros(jnp.shape(p), acc_dtype(p)), params)
        skip_state = ()
        if should_skip_update_fn is not None:
            _, skip_state = should_skip_update_fn(
                _zeros_like(params), jnp.zeros([], jnp.int32), params
            )
        return MultiStepsState(
            mini_step=jnp.zeros([], jnp.int32),
            gradient_step=jnp.zeros([], jnp.int32),
            inner_opt_state=inner.init(params),
            acc_grads=acc,
            skip_state=skip_state,
        )

    def update(updates, state, params=None, **extra):
        k = k_fn(state.gradient_step)
        n = state.mini_step
        skip, skip_state = jnp.array(False), state.skip_state
        if should_skip_update_fn is not None:
            skip, skip_state = should_skip_update_fn(updates, state.gradient_step, params)
            skip = jnp.asarray(skip)
            if skip.shape != () or skip.dtype != jnp.bool_:
                raise ValueError(
                    "should_skip_update_fn must return (a scalar bool array, state); its first "
                    f"output has dtype {skip.dtype} and shape {skip.shape}."
                )
        if use_grad_mean:
            step = lambda g, a: a + (g.astype(a.dtype) - a) / (n + 1).astype(a.dtype)  # noqa: E731
        else:
            step = lambda g, a: a + g.astype(a.dtype)  # noqa: E731
        acc = _map(lambda g, a: jnp.where(skip, a, step(g, a)), updates, state.acc_grads)
        emit = jnp.logical_and(n >= k - 1, jnp.logical_not(skip))

        def apply():
            new, inner_state = inner.update(
                _cast_like(acc, updates), state.inner_opt_state, params, **extra
            )
            return _cast_like(new, updates), inner_state, _zeros_like(acc)

        def hold():
            return _zeros_like(updates), state.inner_opt_state, acc

        new_updates, inner_state, acc = jax.lax.cond(emit, apply, hold)
        mini_step = jnp.where(skip, n, jnp.where(emit, 0, safe_increment(n)))
        gradient_step = jnp.where(emit, safe_increment(state.gradient_step), state.gradient_step)
        return new_updates, MultiStepsState(
            mini_step=mini_step.astype(jnp.int32),
            gradient_step=gradient_step.astype(jnp.int32),
            inner_opt_state=inner_state,
            acc_grads=acc,
            skip_state=skip_state,
        )

    return GradientTransformation(init, update)


class MultiSteps:
    """optax-compatible gradient accumulation: a thin class around :func:`accumulate`.

    ``MultiSteps(opt, k).gradient_transformation()`` is ``accumulate(opt, k)``; the object
    also has ``init``, ``update``, ``has_updated(state)`` and ``inner_opt``, so code written
    for ``optax.MultiSteps`` runs unchanged. New code can call :func:`accumulate` directly.

    Args:
      opt, every_k_schedule, use_grad_mean, should_skip_update_fn, accumulator_dtype: as
        ``inner`` and the other arguments of :func:`accumulate`.

    >>> import gdopt, jax.numpy as jnp
    >>> ms = MultiSteps(gdopt.sgd(1.0), every_k_schedule=2)
    >>> p = {"w": jnp.array(0.0)}
    >>> s = ms.init(p)
    >>> _, s = ms.update({"w": jnp.array(1.0)}, s, p)
    >>> bool(ms.has_updated(s))
    False
    >>> _, s = ms.update({"w": jnp.array(1.0)}, s, p)
    >>> bool(ms.has_updated(s))
    True
    """

    def __init__(
        self,
        opt: GradientTransformation,
        every_k_schedule: int | Callable[[jax.Array], Any],
        use_grad_mean: bool = True,
        should_skip_update_fn: Callable[..., tuple[jax.Array, Any]] | None = None,
        accumulator_dtype: Any = None,
    ) -> None:
        self._opt = opt
        self._tx = accumulate(
            opt, every_k_schedule, use_grad_mean, should_skip_update_fn, accumulator_dtype
        )

    @property
    def inner_opt(self) -> GradientTransformation:
        """The wrapped transformation."""
        return self._opt

    def init(self, params: Any) -> MultiStepsState:
        """The initial state (see :func:`accumulate`)."""
        return self._tx.init(params)

    def update(
        self, updates: Any, state: MultiStepsState, params: Any = None, **extra: Any
    ) -> tuple[Any, MultiStepsState]:
        """One micro-step (see :func:`accumulate`)."""
        return self._tx.update(updates, state, params, **extra)

    @staticmethod
    def has_updated(state: MultiStepsState) -> jax.Array:
        """Whether the latest micro-step ran the inner update (a scalar bool)."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformation:
        """The ``(init, update)`` pair, usable anywhere a transformation is."""
        return self._tx


# ----------------------------------------------------------------------------- lookahead


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`.

    Attributes:
      fast_state: the fast optimizer's state.
      slow: the slow weights (a pytree like the params).
      steps_since_sync: fast steps since the last synchronisation.
    """

    fast_state: Any
    slow: Any
    steps_since_sync: jax.Array


def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: int,
    slow_step_size: float | jax.Array,
    reset_state: bool = False,
) -> GradientTransformation:
    """Lookahead (Zhang et al., 2019): fast weights explore, slow weights follow every k steps.

    The parameters you pass and get back are the fast weights ``θ``; the slow weights ``φ``
    live in the state (``state.slow``). With ``u_t`` the fast optimizer's update::

        θ_t = θ_{t-1} + u_t                            (each step)
        every k = sync_period steps:
            φ ← φ + α (θ_t - φ);   θ_t ← φ              (α = slow_step_size)

    Right after a synchronisation the params equal the slow weights.

    Unlike optax, which takes a ``LookaheadParams(fast, slow)`` pair as the parameters and
    the gradient of the fast ones, gdopt keeps the slow weights in the optimizer state, so
    params and gradients are plain pytrees (the same memory: one extra copy of the params)
    and the wrapper drops into any training loop. The fast trajectory equals optax's.

    Args:
      fast_optimizer: the inner optimizer.
      sync_period: ``k``, an integer >= 1.
      slow_step_size: ``α`` in [0, 1].
      reset_state: re-initialise the fast optimizer's state (at the synchronised params)
        after each synchronisation.

    Returns:
      A transformation whose state is a :class:`LookaheadState`; its ``update`` needs
      ``params``.

    References:
      Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back",
      NeurIPS 2019, https://arxiv.org/abs/1907.08610.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = lookahead(gdopt.sgd(1.0), sync_period=2, slow_step_size=0.5)
    >>> p = {"w": jnp.array(0.0)}
    >>> s = opt.init(p)
    >>> for _ in range(2):
    ...     u, s = opt.update({"w": jnp.array(-1.0)}, s, p)
    ...     p = gdopt.apply_updates(p, u)
    >>> float(p["w"])                                # fast reached 2, slow moved half way
    1.0
    """
    _check_transform(fast_optimizer, "lookahead's fast_optimizer")
    _check_int("sync_period", sync_period, 1)
    check_scalar("slow_step_size", slow_step_size, low=0.0, high=1.0)

    def init(params):
        return LookaheadState(
            fast_state=fast_optimizer.init(params),
            slow=_map(jnp.asarray, params),
            steps_since_sync=jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None, **extra):
        if params is None:
            raise ValueError(
                "lookahead needs the current (fast) parameters: call update(grads, state, params)."
            )
        fast_updates, fast_state = fast_optimizer.update(updates, state.fast_state, params, **extra)
        sync = state.steps_since_sync >= sync_period - 1

        def leaf(u, p, s):
            new_slow = s + slow_step_size * (p + u - s)
            out = jnp.where(sync, new_slow - p, u).astype(u.dtype)
            return out, jnp.where(sync, new_slow, s).astype(s.dtype)

        leaves, treedef = jax.tree.flatten(fast_updates, is_leaf=_is_none)
        p_leaves = treedef.flatten_up_to(params)
        s_leaves = treedef.flatten_up_to(state.slow)
        pairs = [
            (None, s) if u is None else leaf(u, p, s)
            for u, p, s in zip(leaves, p_leaves, s_leaves, strict=True)
        ]
        out = treedef.unflatten([a for a, _ in pairs])
        slow = treedef.unflatten([b for _, b in pairs])
        if reset_state:
            fresh = fast_optimizer.init(slow)
            fast_state = jax.tree.map(
                lambda new, cur: jnp.where(sync, new, cur).astype(cur.dtype), fresh, fast_state
            )
        steps = jnp.where(sync, 0, safe_increment(state.steps_since_sync)).astype(jnp.int32)
        return out, LookaheadState(fast_state=fast_state, slow=slow, steps_since_sync=steps)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- parameter EMA


class EmaParamsState(NamedTuple):
    """State of :func:`ema_params`: the averaged parameters and the inner state."""

    ema: Any
    inner_state: Any


def ema_params(
    inner: GradientTransformation, decay: float | jax.Array = 0.999, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Keep an exponential moving average of the parameters next to any optimizer.

    The updates are the inner transformation's, unchanged; the state also tracks::

        ema_0 = p_0
        ema_t = β ema_{t-1} + (1 - β) p_t          (p_t = p_{t-1} + u_t, the new params)

    Averaged weights often evaluate better than the last iterate (Polyak averaging). Read
    them from ``state.ema`` (``state`` as returned by this wrapper).

    Args:
      inner: the optimizer.
      decay: ``β`` in [0, 1).
      accumulator_dtype: dtype of the average (default: the params').

    Returns:
      A transformation whose state is an :class:`EmaParamsState`; its ``update`` needs
      ``params``.

    References:
      Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J.
      Control Optim. 1992.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = ema_params(gdopt.sgd(1.0), decay=0.5)
    >>> p = {"w": jnp.array(0.0)}
    >>> u, s = opt.update({"w": jnp.array(-2.0)}, opt.init(p), p)   # p_1 = 2
    >>> float(s.ema["w"])
    1.0
    """
    _check_transform(inner, "ema_params's inner")
    check_decay("decay", decay)

    def init(params):
        return EmaParamsState(
            ema=_map(lambda p: jnp.asarray(p, dtype=accumulator_dtype), params),
            inner_state=inner.init(params),
        )

    def update(updates, state, params=None, **extra):
        if params is None:
            raise ValueError(
                "ema_params needs the current parameters: call update(grads, state, params)."
            )
        new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
        ema = _map(
            lambda e, p, u: (decay * e + (1 - decay) * (p + u)).astype(e.dtype),
            state.ema,
            params,
            new_updates,
        )
        return new_updates, EmaParamsState(ema=ema, inner_state=inner_state)

    return GradientTransformation(init, update)
