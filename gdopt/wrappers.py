"""Wrappers: transformations that change how another transformation is run.

Each wraps an inner transformation: :func:`apply_if_finite` skips non-finite steps,
:func:`accumulate` (and the optax-compatible :class:`MultiSteps`) accumulates gradients over
micro-batches, :func:`lookahead` keeps slow weights, :func:`ema_params` keeps a moving average
of the parameters, :func:`schedule_free` replaces a base optimizer's momentum by
schedule-free interpolation and averaging, and :func:`sam` gives the base optimizer the
gradient at the worst point of a small neighbourhood (sharpness-aware minimisation).

Every wrapper is packable (:mod:`gdopt.packing`) when its inner transformation is (and,
for :func:`accumulate`, no ``should_skip_update_fn`` is given): what a wrapper adds is
coordinatewise or a reduction over all parameters (the finiteness test). Its key
(:class:`gdopt._traits.Traits`) combines the inner transformation's key with the wrapper's
own arguments.

Branches (``lax.cond``) run as plain Python branches when their predicate is concrete, so
an eager step compiles nothing after the first one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

import jax
import jax.numpy as jnp

from gdopt import _control as control
from gdopt import _numerics as num
from gdopt._numerics import (
    cast_tree_like,
    map_leaves,
    safe_increment,
    scalar_dtype,
    tree_map,
)
from gdopt._traits import wrapper
from gdopt._validation import Integer, Interval, need_params
from gdopt.base import GradientTransformation, ScalarOrSchedule, Steps, apply_updates, resolve
from gdopt.hyperparams import HyperparamsState
from gdopt.tree import tree_all_finite, tree_l2_norm

__all__ = [
    "ApplyIfFiniteState",
    "apply_if_finite",
    "MultiStepsState",
    "accumulate",
    "MultiSteps",
    "LookaheadState",
    "lookahead",
    "EmaParamsState",
    "ema_params",
    "ScheduleFreeState",
    "schedule_free",
    "schedule_free_eval_params",
    "sam",
    "adversarial_sam",
    "SAMState",
]


# ----------------------------------------------------------------------------- helpers


def _zeros(tree: Any) -> Any:
    return tree_map(jnp.zeros_like, tree)


# Numbers a wrapper multiplies by: arrays are fine, schedules are not supported.
_Fraction = Annotated[float | jax.Array, Interval(0.0, 1.0, schedule=False)]
_DecayRate = Annotated[float | jax.Array, Interval(0.0, 1.0, high_open=True, schedule=False)]
_Interpolation = Annotated[float | jax.Array, Interval(0.0, 1.0, True, True, schedule=False)]
_Power = Annotated[float | jax.Array, Interval(0.0, schedule=False)]
_Rate = Annotated[ScalarOrSchedule, Interval(0.0)]
_Period = Annotated[int | Callable[[jax.Array], Any], Integer(1, schedule=True)]


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


@wrapper("inner", "max_consecutive_errors")
def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: Annotated[int, Integer(0)]
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
            return cast_tree_like(new, updates), inner_state

        def skip():
            return _zeros(updates), state.inner_state

        go = jnp.logical_or(finite, notfinite_count > max_consecutive_errors)
        new_updates, inner_state = control.cond(go, apply, skip)
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


def _no_skip_function(arguments: dict[str, Any]) -> bool:
    """A user's skip function sees the whole updates tree: its packability is unknown."""
    return arguments["should_skip_update_fn"] is None


@wrapper(
    "inner",
    "every_k_schedule",
    "use_grad_mean",
    "should_skip_update_fn",
    "accumulator_dtype",
    packable=_no_skip_function,
)
def accumulate(
    inner: GradientTransformation,
    every_k_schedule: _Period,
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

    Packable when ``inner`` is and no ``should_skip_update_fn`` is given (that function sees
    the updates as they are split into arrays).

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
    if callable(every_k_schedule):
        k_fn = every_k_schedule
    else:
        k_fn = lambda step: every_k_schedule  # noqa: E731

    def acc_dtype(x):
        if accumulator_dtype is not None:
            return accumulator_dtype
        return num.promote_types(jnp.asarray(x).dtype, jnp.float32)

    def init(params):
        acc = tree_map(lambda p: jnp.zeros(jnp.shape(p), acc_dtype(p)), params)
        skip_state = ()
        if should_skip_update_fn is not None:
            _, skip_state = should_skip_update_fn(_zeros(params), jnp.zeros([], jnp.int32), params)
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
        acc = tree_map(lambda g, a: jnp.where(skip, a, step(g, a)), updates, state.acc_grads)
        emit = jnp.logical_and(n >= k - 1, jnp.logical_not(skip))

        def apply():
            new, inner_state = inner.update(
                cast_tree_like(acc, updates), state.inner_opt_state, params, **extra
            )
            return cast_tree_like(new, updates), inner_state, _zeros(acc)

        def hold():
            return _zeros(updates), state.inner_opt_state, acc

        new_updates, inner_state, acc = control.cond(emit, apply, hold)
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
    for ``optax.MultiSteps`` runs unchanged (and gdopt sees the traits of ``accumulate``:
    ``gdopt.chain(MultiSteps(...), ...)`` is packable when the inner optimizer is). New code
    can call :func:`accumulate` directly.

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

    @property
    def init(self) -> Callable[[Any], MultiStepsState]:
        """``init(params) -> MultiStepsState``: the initial state (see :func:`accumulate`)."""
        return self._tx.init

    @property
    def update(self) -> Callable[..., tuple[Any, MultiStepsState]]:
        """``update(updates, state, params=None, **extra)``: one micro-step (see
        :func:`accumulate`)."""
        return self._tx.update

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


@wrapper("fast_optimizer", "sync_period", "slow_step_size", "reset_state")
def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: Steps,
    slow_step_size: _Fraction,
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

    def init(params):
        return LookaheadState(
            fast_state=fast_optimizer.init(params),
            slow=tree_map(jnp.asarray, params),
            steps_since_sync=jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None, **extra):
        need_params(params, "lookahead", "they are the fast weights")
        fast_updates, fast_state = fast_optimizer.update(updates, state.fast_state, params, **extra)
        sync = state.steps_since_sync >= sync_period - 1

        def leaf(u, s, p):
            # slow_step_size may be a float32 array: promotions explicit (num.mul...)
            new_slow = num.add(s, num.mul(slow_step_size, num.sub(num.add(p, u), s)))
            out = num.where(sync, num.sub(new_slow, p), u).astype(u.dtype)
            return out, num.where(sync, new_slow, s).astype(s.dtype)

        out, slow = map_leaves(leaf, 2, fast_updates, state.slow, params)
        if reset_state:
            fresh = fast_optimizer.init(slow)
            fast_state = jax.tree.map(
                lambda new, cur: num.where(sync, new, cur).astype(cur.dtype), fresh, fast_state
            )
        steps = jnp.where(sync, 0, safe_increment(state.steps_since_sync)).astype(jnp.int32)
        return out, LookaheadState(fast_state=fast_state, slow=slow, steps_since_sync=steps)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- parameter EMA


class EmaParamsState(NamedTuple):
    """State of :func:`ema_params`: the averaged parameters and the inner state."""

    ema: Any
    inner_state: Any


@wrapper("inner", "decay", "accumulator_dtype")
def ema_params(
    inner: GradientTransformation, decay: _DecayRate = 0.999, accumulator_dtype: Any = None
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

    def init(params):
        return EmaParamsState(
            ema=tree_map(lambda p: jnp.asarray(p, dtype=accumulator_dtype), params),
            inner_state=inner.init(params),
        )

    def update(updates, state, params=None, **extra):
        need_params(params, "ema_params", "their moving average is kept")
        new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
        ema = tree_map(
            lambda e, p, u: num.add(num.mul(decay, e), num.mul(1 - decay, num.add(p, u))).astype(
                e.dtype
            ),
            state.ema,
            params,
            new_updates,
        )
        return new_updates, EmaParamsState(ema=ema, inner_state=inner_state)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- SAM

_Radius = Annotated[float | jax.Array, Interval(0.0, low_open=True, schedule=False)]


@wrapper("optimizer", "rho", "adaptive")
def sam(
    optimizer: GradientTransformation, rho: _Radius = 0.05, adaptive: bool = False
) -> GradientTransformation:
    """Sharpness-aware minimisation (SAM, Foret et al. 2021; ASAM, Kwon et al. 2021).

    SAM minimises ``max_{||ε|| <= ρ} L(w + ε)``: each step takes the gradient at the point
    of (first-order) worst loss within radius ``ρ`` and gives it to ``optimizer``::

        g  = ∇L(w)                        (the incoming updates)
        ε  = ρ T² g / ||T g||₂            (T = 1 for SAM; T = |w| elementwise for ASAM)
        g' = ∇L(w + ε)                    (a second gradient, through value_fn)
        updates, state = optimizer.update(g', state, w, **extras)

    ``||·||₂`` is the norm over all parameters (the implementation of Foret et al., and of
    Kwon et al. with ``T_w = |w|``, without ASAM's offset η); ``1e-12`` is added to it so a
    zero gradient gives ``ε = 0``. The second gradient comes from the keyword extra
    ``value_fn`` (the loss on the same batch as a function of the params), which
    :func:`gdopt.fit` and :func:`gdopt.make_step` pass to every ``update``: use ``sam`` as
    the outermost transformation (its incoming updates must be the gradient of
    ``value_fn``). Each step costs two gradients. The other extras are passed to
    ``optimizer`` unchanged. Packable when ``optimizer`` is (ε is elementwise times a
    global norm).

    Args:
      optimizer: the base optimizer, e.g. ``gdopt.sgd(0.1, momentum=0.9)``.
      rho: the neighbourhood radius ``ρ`` > 0 (Foret et al. use 0.05; ASAM's scale-invariant
        radius is larger, e.g. 0.5 to 2).
      adaptive: ASAM's scale-invariant neighbourhood (``T = |w|``).

    Returns:
      A transformation whose state is ``optimizer``'s; its ``update`` needs ``params`` and
      the ``value_fn`` extra.

    References:
      Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently
      Improving Generalization", ICLR 2021, https://arxiv.org/abs/2010.01412; Kwon, Kim,
      Park & Choi, "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant Learning
      of Deep Neural Networks", ICML 2021, https://arxiv.org/abs/2102.11600.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * p ** 2)
    >>> opt = sam(gdopt.sgd(0.1), rho=0.1)
    >>> p = jnp.array([3.0, 0.0])
    >>> g = jax.grad(loss)(p)                       # (3, 0): ε = (0.1, 0)
    >>> u, s = opt.update(g, opt.init(p), p, value_fn=loss)
    >>> [round(float(v), 4) for v in u]             # -0.1 * ∇L(3.1, 0)
    [-0.31, 0.0]
    """

    def init(params):
        return optimizer.init(params)

    def update(updates, state, params=None, **extra):
        need_params(params, "sam", "the second gradient is taken at params + ε")
        value_fn = extra.get("value_fn")
        if value_fn is None:
            raise ValueError(
                "sam needs the keyword extra 'value_fn' (the loss on the same batch as a "
                "function of the params): gdopt.fit and gdopt.make_step pass it; by hand call "
                "opt.update(grads, state, params, value_fn=lambda p: loss_fn(p, batch))."
            )
        if not callable(value_fn):
            raise TypeError(f"sam: value_fn must be a callable params -> scalar, got {value_fn!r}.")
        if adaptive:
            scaled = tree_map(lambda g, w: num.mul(g, jnp.abs(w)), updates, params)
        else:
            scaled = updates
        factor = num.div(rho, num.add(tree_l2_norm(scaled), 1e-12))

        def perturb(w, g):
            if g is None:
                return w
            e = num.mul(g, jnp.square(jnp.abs(w))) if adaptive else g
            return num.add(w, num.mul(factor, e)).astype(jnp.asarray(w).dtype)

        perturbed = tree_map(perturb, params, updates)
        sharp_grads = jax.grad(lambda p: jnp.asarray(value_fn(p)))(perturbed)
        sharp_grads = tree_map(lambda u, g: g.astype(u.dtype), updates, sharp_grads)
        return optimizer.update(sharp_grads, state, params, **extra)

    return GradientTransformation(init, update)


class SAMState(NamedTuple):
    """State of :func:`adversarial_sam` (``gdopt.contrib.sam``; optax.contrib's layout).

    Attributes:
      steps_since_sync: adversarial steps taken since the last outer step.
      opt_state: the outer optimizer's state.
      adv_state: the adversarial optimizer's state.
      cache: the parameters at the start of the period (``None`` in opaque mode).
    """

    steps_since_sync: jax.Array
    opt_state: Any
    adv_state: Any
    cache: Any


@wrapper(
    ("optimizer", "adv_optimizer"),
    "sync_period",
    "reset_state",
    "opaque_mode",
    "batch_axis_name",
    packable=lambda a: not a["opaque_mode"],
)
def adversarial_sam(
    optimizer: GradientTransformation,
    adv_optimizer: GradientTransformation,
    sync_period: Annotated[int, Integer(1)] = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
) -> GradientTransformation:
    """SAM as alternating adversarial and outer steps: optax.contrib's ``sam`` API.

    This is ``gdopt.contrib.sam``, for programs written against ``optax.contrib.sam``;
    :func:`sam` is the same method as one wrapper whose second gradient comes from the
    ``value_fn`` extra. A period has ``k = sync_period`` calls of ``update``. The first
    ``k - 1`` are adversarial: with ``a`` the adversarial optimizer's update of the incoming
    gradient ``g``, the parameters move to ``w - a`` (an ascent step; with
    ``adv_optimizer = chain(normalize(), sgd(ρ))`` that is ``w + ρ g / ‖g‖``, SAM's
    perturbation). The last is the outer step, from the parameters ``w₀`` cached at the
    period's start::

        adversarial call:  update = -a(g)                 (params w → w - a(g))
        outer call:        u = optimizer(g, at w₀);  update = w₀ - w + u   (params → w₀ + u)

    so the outer optimizer sees the gradient taken at the perturbed point and moves the
    unperturbed parameters. Its state advances on outer calls only; the adversarial state is
    re-initialised after each outer call when ``reset_state``, else kept.

    With ``opaque_mode=True`` every call does a whole period inside: ``k - 1`` adversarial
    steps on a copy of the parameters, each new gradient from the keyword extra
    ``grad_fn(params, i)`` (averaged over ``batch_axis_name`` with ``lax.pmean`` when given),
    then the outer step at the given parameters; nothing adversarial is visible outside
    (use it when the training loop has other side effects per call, e.g. batch statistics).

    Args:
      optimizer: the outer optimizer.
      adv_optimizer: the adversarial optimizer (optax's example: ``chain(normalize(),
        sgd(rho))``).
      sync_period: ``k`` >= 1, calls per period (2: one adversarial, one outer).
      reset_state: re-initialise the adversarial state after each outer step.
      opaque_mode: run the whole period in each call (needs ``grad_fn``).
      batch_axis_name: the mapped axis to average the adversarial gradients over (opaque
        mode only).

    Returns:
      A transformation whose state is a :class:`SAMState`; its ``update`` needs ``params``
      (and ``grad_fn`` in opaque mode).

    References:
      Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently
      Improving Generalization", ICLR 2021, https://arxiv.org/abs/2010.01412.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * p ** 2)
    >>> adv = gdopt.chain(gdopt.contrib.normalize(), gdopt.sgd(0.1))
    >>> opt = gdopt.contrib.sam(gdopt.sgd(0.1), adv, sync_period=2)
    >>> p = jnp.array([3.0, 0.0])
    >>> s = opt.init(p)
    >>> u, s = opt.update(jax.grad(loss)(p), s, p)      # adversarial: ε = 0.1 g / ‖g‖
    >>> p = gdopt.apply_updates(p, u)
    >>> [round(float(v), 4) for v in p]
    [3.1, 0.0]
    >>> u, s = opt.update(jax.grad(loss)(p), s, p)      # outer: 3 - 0.1 ∇L(3.1, 0)
    >>> [round(float(v), 4) for v in gdopt.apply_updates(p, u)]
    [2.69, 0.0]
    """

    def init(params):
        return SAMState(
            steps_since_sync=jnp.zeros([], jnp.int32),
            opt_state=optimizer.init(params),
            adv_state=adv_optimizer.init(params),
            cache=None if opaque_mode else tree_map(jnp.asarray, params),
        )

    def choose(flag, a, b):
        return jax.tree.map(lambda x, y: num.where(flag, x, y).astype(jnp.result_type(y)), a, b)

    def negate(tree):
        return tree_map(jnp.negative, tree)

    def transparent(updates, state, params=None, **extra):
        need_params(params, "sam", "the outer step returns to the cached parameters")
        extra.pop("grad_fn", None)
        first = state.steps_since_sync == 0
        last = state.steps_since_sync == sync_period - 1
        adv_updates, adv_state = adv_optimizer.update(updates, state.adv_state, params, **extra)
        adv_updates = negate(adv_updates)
        outer, opt_state = optimizer.update(updates, state.opt_state, state.cache, **extra)
        outer = tree_map(
            lambda c, w, u: num.add(num.sub(c, w), u).astype(u.dtype), state.cache, params, outer
        )
        fresh = adv_optimizer.init(params) if reset_state else state.adv_state
        new_state = SAMState(
            steps_since_sync=jnp.remainder(safe_increment(state.steps_since_sync), sync_period),
            opt_state=choose(last, opt_state, state.opt_state),
            adv_state=choose(last, fresh, adv_state),
            cache=choose(first, tree_map(jnp.asarray, params), state.cache),
        )
        return choose(last, outer, adv_updates), new_state

    def opaque(updates, state, params=None, **extra):
        need_params(params, "sam", "the adversarial steps start from them")
        grad_fn = extra.pop("grad_fn", None)
        if grad_fn is None:
            raise ValueError(
                "sam with opaque_mode=True needs the keyword extra grad_fn(params, i) -> the "
                "gradient at params (i: the adversarial step): opt.update(grads, state, "
                "params, grad_fn=jax.grad(lambda p, _: loss(p, batch)))."
            )
        adv_params, adv_updates, adv_state = params, updates, state.adv_state
        for i in range(sync_period - 1):
            step, adv_state = adv_optimizer.update(adv_updates, adv_state, adv_params, **extra)
            adv_params = apply_updates(adv_params, negate(step))
            adv_updates = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                adv_updates = jax.lax.pmean(adv_updates, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        out, opt_state = optimizer.update(adv_updates, state.opt_state, params, **extra)
        return out, SAMState(jnp.zeros([], jnp.int32), opt_state, adv_state, None)

    return GradientTransformation(init, opaque if opaque_mode else transparent)


# ----------------------------------------------------------------------------- schedule-free


class ScheduleFreeState(NamedTuple):
    """Schedule-free averaging (optax's layout).

    Attributes:
      b1: the interpolation ``β`` (kept here so :func:`schedule_free_eval_params` can use it).
      weight_sum: ``Σ_i w_i``, the total averaging weight so far.
      step_count: step counter, starting at 1.
      max_lr: the largest learning rate seen so far.
      base_optimizer_state: the state of the wrapped optimizer.
      z: the base optimizer's iterate ``z_t``.
    """

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: Any
    z: Any


@wrapper("base_optimizer", "learning_rate", "b1", "weight_lr_power", "state_dtype")
def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: _Rate,
    b1: _Interpolation = 0.9,
    weight_lr_power: _Power = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Schedule-free averaging around a base optimizer (Defazio et al., 2024).

    Three sequences: the base optimizer moves ``z``, ``x`` is a weighted average of the
    ``z``'s, and gradients are taken at their interpolation ``y`` (the parameters you hold)::

        z_{t+1} = z_t + base_update(∇f(y_t))
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1},   c_{t+1} = w_t / Σ_{i<=t} w_i
        y_{t+1} = β x_{t+1} + (1 - β) z_{t+1}

    with weights ``w_t = (max_{i<=t} α_i)^{weight_lr_power}``. ``x`` is not stored: it is
    recovered as ``x = (y - (1 - β) z) / β``. Evaluate (and ship) the model at ``x``, with
    :func:`schedule_free_eval_params`. No learning-rate decay schedule is needed.

    ``learning_rate`` is evaluated at the 1-based step ``t`` (the step being taken); a base
    optimizer that schedules its own rate counts from 0, so give it ``lambda c: lr(c + 1)``
    to take the z-step with the same rate ``α_t`` (as :func:`gdopt.schedule_free_sgd` and
    :func:`gdopt.schedule_free_adamw` do for their warm-up).

    Args:
      base_optimizer: the optimizer that moves ``z`` (e.g. SGD, or Adam without momentum);
        its updates include the learning rate.
      learning_rate: the base optimizer's learning rate (for the averaging weights), >= 0: a
        number, array or schedule evaluated at the 1-based step count.
      b1: ``β`` in (0, 1): the interpolation between ``x`` and ``z``.
      weight_lr_power: exponent of the averaging weights, >= 0.
      state_dtype: dtype of ``z`` (default: the params').

    Returns:
      A transformation whose state is a :class:`ScheduleFreeState`; its ``update`` needs
      ``params`` (the ``y`` sequence) and returns the final updates.

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled",
      NeurIPS 2024, https://arxiv.org/abs/2405.15682.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> opt = schedule_free(gdopt.sgd(0.5), learning_rate=0.5)
    >>> p = {"w": jnp.array(4.0)}
    >>> s = opt.init(p)
    >>> for _ in range(30):
    ...     u, s = opt.update(jax.grad(lambda q: (q["w"] - 1.0) ** 2)(p), s, p)
    ...     p = gdopt.apply_updates(p, u)
    >>> round(float(schedule_free_eval_params(s, p)["w"]), 3)
    1.0
    """

    def init(params):
        dtype = scalar_dtype(params)
        z = jax.tree.map(lambda p: jnp.array(p, dtype=state_dtype or jnp.asarray(p).dtype), params)
        return ScheduleFreeState(
            b1=jnp.asarray(b1, dtype),
            weight_sum=jnp.zeros([], dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=z,
        )

    def update(updates, state, params=None, **extra):
        need_params(params, "schedule_free", "they are the interpolated iterate y")
        dtype = state.max_lr.dtype
        lr = jnp.asarray(resolve(learning_rate, state.step_count), dtype)
        max_lr = jnp.maximum(state.max_lr, lr)
        # the hyperparameters may be float32 arrays: promotions explicit (num.add...)
        weight = jnp.power(*num.promote(max_lr, weight_lr_power))
        total = num.add(state.weight_sum, weight)
        ck = jnp.where(total > 0, num.div(weight, jnp.where(total > 0, total, 1)), 0.0)
        ck = jnp.where(jnp.isnan(weight) | jnp.isnan(total), jnp.nan, ck)
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra
        )
        # y was formed with the β of the previous step (state.b1); the new y uses the current
        # β (they differ only if b1 is changed between steps, e.g. by set_hyperparams).
        beta_old, beta = state.b1, jnp.asarray(b1, dtype)

        def leaf(g, z, y, bu):
            if bu is None:
                return g, z
            z_new = num.add(z, bu)
            x = num.div(num.sub(y, num.mul(1 - beta_old, z)), beta_old)
            x = num.add(num.mul(1 - ck, x), num.mul(ck, z_new))
            y_new = num.add(num.mul(beta, x), num.mul(1 - beta, z_new))
            return num.sub(y_new, y).astype(g.dtype), z_new.astype(z.dtype)

        u, z = map_leaves(leaf, 2, updates, state.z, params, base_updates)
        new_state = ScheduleFreeState(
            b1=beta,
            weight_sum=total.astype(dtype),
            step_count=safe_increment(state.step_count),
            max_lr=max_lr.astype(dtype),
            base_optimizer_state=base_state,
            z=z,
        )
        return u, new_state

    return GradientTransformation(init, update)


def _find_schedule_free_state(state: Any) -> ScheduleFreeState | None:
    """The first :class:`ScheduleFreeState` in ``state`` (a named optimizer's
    :class:`~gdopt.HyperparamsState` flattens its inner NamedTuple away: look inside)."""

    def is_node(x: Any) -> bool:
        return isinstance(x, (ScheduleFreeState, HyperparamsState))

    for x in jax.tree.leaves(state, is_leaf=is_node):
        if isinstance(x, ScheduleFreeState):
            return x
        if isinstance(x, HyperparamsState):
            found = _find_schedule_free_state(x.inner_state)
            if found is not None:
                return found
    return None


def schedule_free_eval_params(state: Any, params: Any) -> Any:
    """The schedule-free average ``x = (y - (1 - β) z) / β``: the parameters to evaluate.

    Args:
      state: a state of :func:`schedule_free` or of an optimizer containing one (e.g.
        :func:`gdopt.schedule_free_adamw`).
      params: the parameters being trained (the ``y`` sequence).

    Returns:
      The ``x`` sequence's current value, with the params' structure and dtypes.

    Raises:
      ValueError: when ``state`` holds no :class:`ScheduleFreeState`.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.schedule_free_sgd(0.1)
    >>> p = {"w": jnp.array(1.0)}
    >>> float(schedule_free_eval_params(opt.init(p), p)["w"])   # at init x = y = z
    1.0
    """
    found = _find_schedule_free_state(state)
    if found is None:
        raise ValueError(
            "schedule_free_eval_params needs the state of a schedule-free optimizer "
            "(gdopt.schedule_free, schedule_free_sgd or schedule_free_adamw); this state holds "
            "no ScheduleFreeState."
        )
    beta = found.b1
    return jax.tree.map(
        lambda y, z: num.div(num.sub(y, num.mul(1 - beta, z)), beta).astype(jnp.asarray(y).dtype),
        params,
        found.z,
    )
