"""Core single-purpose transforms: scaling, momentum, and the Adam / RMS / RSS moments.

Each function returns a :class:`~gdopt.base.GradientTransformation`. The named optimizers in
:mod:`gdopt.optimizers` are thin chains of these. Notation: ``g`` gradient, ``m`` first moment,
``v`` second moment, ``t`` step count starting at 1, ``β1, β2`` decay rates, ``ε`` stability.

Dtypes: each transform returns updates in the dtype of the incoming updates and keeps each
state leaf in the dtype it was created with, so bfloat16 models stay bfloat16 and the state's
dtypes never change across steps (``lax.scan`` and ``lax.cond`` need that).

Fusion: each update rule is one per-leaf function that returns the update and every new
state buffer together (:func:`map_leaves`), so a compiler can compute them all from one read
of ``g`` and the state. XLA:CPU (jaxlib 0.10.2) has no multi-output loop fusion, so a
compiled step (update + apply, donated) still writes each parameter-sized output in a loop of
its own: ``trace`` 2 passes with the parameters, ``scale_by_rms`` and ``scale_by_rss`` 2,
``scale_by_adam`` 3, ``scale_by_stddev`` 3 (the same as optax; ``benchmarks/fusion.py``).
Every transform here is elementwise and carries the marker of :func:`mark_elementwise`
(``add_decayed_weights`` only without a ``mask``), so it runs on packed parameters
(:mod:`gdopt.packing`) directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gdopt.base import (
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    Schedule,
    check_decay,
    check_learning_rate,
    check_nonnegative,
    check_scalar,
    identity,
    safe_increment,
)
from gdopt.tree import mask_leaves, tree_full_like, tree_zeros_like

__all__ = [
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "trace",
    "ema",
    "scale_by_adam",
    "scale_by_rms",
    "scale_by_stddev",
    "scale_by_rss",
    "add_decayed_weights",
    "ScaleState",
    "ScaleByScheduleState",
    "TraceState",
    "EmaState",
    "ScaleByAdamState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByStddevState",
    "ScaleByRssState",
    "update_moment",
    "bias_correction",
    "abs_sq",
    "map_leaves",
    "mark_elementwise",
    "is_elementwise",
]


# ----------------------------------------------------------------------------- helpers


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|^2`` elementwise (``x * conj(x)`` for complex, real-valued)."""
    return jnp.real(x * jnp.conj(x)) if jnp.iscomplexobj(x) else x * x


def update_moment(updates: jax.Array, moments: jax.Array, decay: Any, order: int) -> jax.Array:
    """Exponential moving average of ``g**order``: ``(1 - decay) * g^order + decay * m``.

    ``updates`` is ``g`` and ``moments`` is ``m`` (one array each). For ``order == 2`` the
    squared magnitude ``|g|^2`` is used (complex-safe).
    """
    g = updates
    x = g if order == 1 else (abs_sq(g) if order == 2 else jnp.abs(g) ** order)
    return (1 - decay) * x + decay * moments


def bias_correction(moment: jax.Array, decay: Any, count: jax.Array) -> jax.Array:
    """Adam's debiasing: ``moment / (1 - decay ** count)``; ``count`` starts at 1."""
    # A float exponent: an int32 ``count`` would specialise the power per step in eager code.
    correction = 1 - jnp.asarray(decay, dtype=jnp.float32) ** jnp.asarray(count, jnp.float32)
    return moment / correction.astype(moment.dtype)


def _like(x: jax.Array, ref: jax.Array) -> jax.Array:
    return x.astype(ref.dtype)


def _map(fn: Callable, *trees: Any) -> Any:
    """``jax.tree.map`` that treats ``None`` as a leaf and passes it through."""
    return jax.tree.map(
        lambda *xs: None if xs[0] is None else fn(*xs), *trees, is_leaf=lambda x: x is None
    )


def map_leaves(fn: Callable[..., tuple], n_out: int, first: Any, *rest: Any) -> tuple:
    """Apply ``fn`` leafwise and split its tuple of ``n_out`` results into ``n_out`` trees.

    ``rest`` must have the structure of ``first``; ``None`` leaves of ``first`` (masked or
    frozen parameters) give ``None`` in every output. This lets one per-leaf function compute
    the update and every new state buffer together, which is how an update rule is written on
    paper (and lets XLA fuse them).
    """
    leaves, treedef = jax.tree.flatten(first, is_leaf=lambda x: x is None)
    others = [treedef.flatten_up_to(t) for t in rest]
    outs: list[list[Any]] = [[] for _ in range(n_out)]
    for xs in zip(leaves, *others, strict=False):
        res = (None,) * n_out if xs[0] is None else fn(*xs)
        for o, r in zip(outs, res, strict=False):
            o.append(r)
    return tuple(treedef.unflatten(o) for o in outs)


_ELEMENTWISE_ATTR = "__gdopt_elementwise__"


def mark_elementwise(transform: GradientTransformation) -> GradientTransformation:
    """Declare that ``transform`` acts coordinate by coordinate.

    A transformation is elementwise when the update (and new state) at each coordinate
    depends only on that coordinate's update, state and parameter and on scalars (step count,
    hyperparameters): then running it on parameters packed into one flat buffer
    (:mod:`gdopt.packing`) gives exactly the numbers it gives leaf by leaf. Per-leaf norms,
    masks or partitions by leaf, reshapes and random noise are not elementwise. The marker
    lives on the returned transformation's ``update`` function (the pair keeps its two
    fields); gdopt's packed execution checks it by tracing before relying on it.

    Args:
      transform: the transformation to mark (it is not modified).

    Returns:
      An equivalent transformation that carries the marker.

    >>> import gdopt, jax.numpy as jnp
    >>> t = gdopt.GradientTransformation(lambda p: (), lambda u, s, p=None, **kw: (u, s))
    >>> is_elementwise(t), is_elementwise(mark_elementwise(t))
    (False, True)
    """
    if not (hasattr(transform, "init") and hasattr(transform, "update")):
        raise TypeError(
            f"mark_elementwise expects a GradientTransformation, got {type(transform).__name__}."
        )
    inner = transform.update

    def update(updates, state, params=None, **extra):
        return inner(updates, state, params, **extra)

    return _elementwise(GradientTransformation(transform.init, update))


def is_elementwise(transform: GradientTransformation) -> bool:
    """True when ``transform`` carries the elementwise marker (see :func:`mark_elementwise`).

    Every elementwise transformation and named optimizer of gdopt is marked (``adamw`` only
    without a ``mask``); a transformation without the marker counts as not elementwise.

    >>> import gdopt
    >>> is_elementwise(gdopt.adam(1e-3)), is_elementwise(gdopt.adamw(1e-3, mask=lambda p: p))
    (True, False)
    """
    return bool(getattr(getattr(transform, "update", None), _ELEMENTWISE_ATTR, False))


def _elementwise(transform: GradientTransformation) -> GradientTransformation:
    """Set the marker on a transformation whose ``update`` was just created (not shared)."""
    setattr(transform.update, _ELEMENTWISE_ATTR, True)
    return transform


# ----------------------------------------------------------------------------- scaling


class ScaleState(NamedTuple):
    """Stateless; kept for symmetry with optax's ``ScaleState``."""


def scale(step_size: float | jax.Array) -> GradientTransformation:
    """Multiply every update by a constant: ``u <- step_size * u``.

    Args:
      step_size: a number or a (possibly traced) array.

    >>> t = scale(-0.5)
    >>> t.update({"w": jnp.array(2.0)}, t.init(None))[0]["w"].item()
    -1.0
    """
    check_scalar("step_size", step_size)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del params, extra
        return _map(lambda u: _like(step_size * u, u), updates), state

    return _elementwise(GradientTransformation(init, update))


class ScaleByScheduleState(NamedTuple):
    """The step counter of a schedule."""

    count: jax.Array


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiply the updates by ``step_size_fn(count)``; ``count`` starts at 0.

    >>> t = scale_by_schedule(lambda c: 1.0 / (c + 1))
    >>> s = t.init({"w": 0.0})
    >>> u, s = t.update({"w": jnp.array(1.0)}, s)
    >>> u, s = t.update({"w": jnp.array(1.0)}, s)
    >>> u["w"].item()
    0.5
    """
    if not callable(step_size_fn):
        raise TypeError(f"step_size_fn must be a callable count -> value, got {step_size_fn!r}.")

    def init(params):
        del params
        return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, **extra):
        del params, extra
        step = step_size_fn(state.count)
        updates = _map(lambda u: _like(step * u, u), updates)
        return updates, ScaleByScheduleState(count=safe_increment(state.count))

    return _elementwise(GradientTransformation(init, update))


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule | None = None, *, flip_sign: bool = True
) -> GradientTransformation:
    """Multiply the updates by ``-learning_rate`` (``+`` with ``flip_sign=False``).

    The sign flip turns a descent direction into an update to *add* to the parameters.
    A schedule is evaluated at this transform's own step counter.

    Args:
      learning_rate: a number, an array (may be traced) or a schedule ``count -> value``;
        ``None`` (the default, as in optax) returns :func:`gdopt.identity` (no scaling and
        no sign flip: for chains whose direction already is the update, e.g. line searches).
      flip_sign: multiply by ``-learning_rate`` (gradient descent) when True.

    >>> t = scale_by_learning_rate(0.1)
    >>> round(t.update({"w": jnp.array(1.0)}, t.init(None))[0]["w"].item(), 6)
    -0.1
    """
    if learning_rate is None:
        return identity()
    check_learning_rate(learning_rate)
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


# ----------------------------------------------------------------------------- momentum


class TraceState(NamedTuple):
    """The momentum buffer (a pytree like the params)."""

    trace: Any


def trace(
    decay: float | jax.Array, nesterov: bool = False, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Heavy-ball momentum (Polyak, 1964) and Nesterov's variant (Sutskever et al., 2013).

    Update rule::

        m_t = g_t + β m_{t-1}
        u_t = m_t                 (heavy ball)
        u_t = g_t + β m_t         (nesterov=True)

    Args:
      decay: the momentum coefficient ``β`` in [0, 1).
      nesterov: use Nesterov's look-ahead form.
      accumulator_dtype: dtype of the buffer (default: the params').

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
      Sutskever et al., "On the importance of initialization and momentum in deep
      learning", ICML 2013.

    >>> t = trace(0.5)
    >>> s = t.init({"w": jnp.zeros(())})
    >>> u, s = t.update({"w": jnp.array(1.0)}, s)
    >>> u, s = t.update({"w": jnp.array(1.0)}, s)
    >>> u["w"].item()
    1.5
    """
    check_decay("decay", decay)

    def init(params):
        return TraceState(trace=tree_zeros_like(params, dtype=accumulator_dtype))

    def update(updates, state, params=None, **extra):
        del params, extra
        new_trace = _map(lambda g, t: g + decay * t, updates, state.trace)
        if nesterov:
            out = _map(lambda g, t: _like(g + decay * t, g), updates, new_trace)
        else:
            out = _map(_like, new_trace, updates)
        new_trace = _map(_like, new_trace, state.trace)
        return out, TraceState(trace=new_trace)

    return _elementwise(GradientTransformation(init, update))


class EmaState(NamedTuple):
    """Step counter and the moving average."""

    count: jax.Array
    ema: Any


def ema(
    decay: float | jax.Array, debias: bool = True, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Exponential moving average of the updates: ``m_t = β m_{t-1} + (1 - β) g_t``.

    With ``debias`` the output is ``m_t / (1 - β^t)`` (Kingma & Ba, 2015, Sec. 3).

    >>> t = ema(0.5)
    >>> s = t.init({"w": jnp.zeros(())})
    >>> u, s = t.update({"w": jnp.array(2.0)}, s)
    >>> u["w"].item()
    2.0
    """
    check_decay("decay", decay)

    def init(params):
        return EmaState(
            count=jnp.zeros([], jnp.int32), ema=tree_zeros_like(params, dtype=accumulator_dtype)
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)
        new = _map(lambda g, m: update_moment(g, m, decay, 1), updates, state.ema)
        out = _map(lambda m: bias_correction(m, decay, count), new) if debias else new
        out = _map(_like, out, updates)
        return out, EmaState(count=count, ema=_map(_like, new, state.ema))

    return _elementwise(GradientTransformation(init, update))


# ----------------------------------------------------------------------------- Adam


class ScaleByAdamState(NamedTuple):
    """Step counter ``t`` and the first and second moments ``m``, ``v``."""

    count: jax.Array
    mu: Any
    nu: Any


def scale_by_adam(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Adam's preconditioned direction (Kingma & Ba, 2015).

    Update rule (``t`` starts at 1)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²
        m̂_t = m_t / (1 - β1^t)          (nesterov: β1 m_t / (1 - β1^{t+1}) + (1 - β1) g_t / (1 - β1^t))
        v̂_t = v_t / (1 - β2^t)
        u_t = m̂_t / (sqrt(v̂_t + ε_root) + ε)

    Args:
      b1, b2: decay rates of the first and second moments, in [0, 1).
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root (useful when differentiating through Adam).
      mu_dtype: dtype of ``m`` (e.g. ``jnp.bfloat16`` halves its memory); default params'.
      nesterov: Nesterov momentum (NAdam, Dozat 2016).
      nu_dtype: dtype of ``v``; default params'.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
      https://arxiv.org/abs/1412.6980. Dozat, "Incorporating Nesterov Momentum into Adam", 2016.

    >>> t = scale_by_adam()
    >>> u, _ = t.update({"w": jnp.array([3.0, -0.5])}, t.init({"w": jnp.zeros(2)}))
    >>> [round(x, 5) for x in u["w"].tolist()]   # first Adam step is sign(g)
    [1.0, -1.0]
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=tree_zeros_like(params, dtype=nu_dtype),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)
        c1 = 1 - jnp.asarray(b1, jnp.float32) ** count
        c2 = 1 - jnp.asarray(b2, jnp.float32) ** count
        if nesterov:
            c1_next = 1 - jnp.asarray(b1, jnp.float32) ** safe_increment(count)

        def leaf(g, m, v):
            m = update_moment(g, m, b1, 1)
            v = update_moment(g, v, b2, 2)
            if nesterov:
                m_hat = b1 * (m / c1_next.astype(m.dtype)) + (1 - b1) * (g / c1.astype(g.dtype))
            else:
                m_hat = m / c1.astype(m.dtype)
            v_hat = v / c2.astype(v.dtype)
            u = m_hat / (jnp.sqrt(v_hat + eps_root) + eps)
            return u.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        mu = _map(_like, mu, state.mu)
        nu = _map(_like, nu, state.nu)
        return u, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return _elementwise(GradientTransformation(init, update))


# ----------------------------------------------------------------------------- RMS family


class ScaleByRmsState(NamedTuple):
    """The running average of squared gradients ``v``."""

    nu: Any


class ScaleByRmsWithCountState(NamedTuple):
    """Step counter and ``v`` (when bias correction is on)."""

    count: jax.Array
    nu: Any


def scale_by_rms(
    decay: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-8,
    initial_scale: float | jax.Array = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """RMSprop's scaling (Tieleman & Hinton, 2012): divide by the root mean square gradient.

    Update rule::

        v_t = ρ v_{t-1} + (1 - ρ) g_t²          (v_0 = initial_scale)
        u_t = g_t / sqrt(v_t + ε)               (eps_in_sqrt=True)
        u_t = g_t / (sqrt(v_t) + ε)             (eps_in_sqrt=False)

    With ``bias_correction`` ``v_t`` is divided by ``1 - ρ^t`` first.

    Args:
      decay: ``ρ`` in [0, 1).
      eps: stability constant, >= 0.
      initial_scale: the starting value of ``v``.
      eps_in_sqrt: where ``ε`` goes (inside the root is the classic form).
      bias_correction: debias ``v`` as Adam does.

    References:
      Tieleman & Hinton, Lecture 6.5 of "Neural Networks for Machine Learning", Coursera, 2012.

    >>> t = scale_by_rms(decay=0.0, eps=0.0)
    >>> t.update({"w": jnp.array(-4.0)}, t.init({"w": jnp.zeros(())}))[0]["w"].item()
    -1.0
    """
    check_decay("decay", decay)
    check_nonnegative("eps", eps)
    check_nonnegative("initial_scale", initial_scale)
    correct = bias_correction

    def init(params):
        nu = tree_full_like(params, initial_scale)
        if correct:
            return ScaleByRmsWithCountState(count=jnp.zeros([], jnp.int32), nu=nu)
        return ScaleByRmsState(nu=nu)

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count) if correct else None

        def leaf(g, v):
            v = update_moment(g, v, decay, 2)
            v_hat = _bias(v, decay, count) if correct else v
            if eps_in_sqrt:
                u = g * jax.lax.rsqrt(v_hat + eps)
            else:
                u = g / (jnp.sqrt(v_hat) + eps)
            return u.astype(g.dtype), v

        u, nu = map_leaves(leaf, 2, updates, state.nu)
        nu = _map(_like, nu, state.nu)
        if correct:
            return u, ScaleByRmsWithCountState(count=count, nu=nu)
        return u, ScaleByRmsState(nu=nu)

    return _elementwise(GradientTransformation(init, update))


def _bias(moment, decay, count):
    return bias_correction(moment, decay, count)


class ScaleByStddevState(NamedTuple):
    """Running averages of ``g`` and ``g²`` (and a counter when bias correction is on)."""

    count: jax.Array
    mu: Any
    nu: Any


def scale_by_stddev(
    decay: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-8,
    initial_scale: float | jax.Array = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """Centered RMSprop's scaling (Graves, 2013): divide by the gradient's running std. dev.

    Update rule::

        m_t = ρ m_{t-1} + (1 - ρ) g_t
        v_t = ρ v_{t-1} + (1 - ρ) g_t²          (v_0 = initial_scale)
        u_t = g_t / sqrt(v_t - m_t² + ε)        (eps_in_sqrt=True)
        u_t = g_t / (sqrt(v_t - m_t²) + ε)      (eps_in_sqrt=False)

    References:
      Graves, "Generating Sequences With Recurrent Neural Networks", 2013, Eq. 38-41,
      https://arxiv.org/abs/1308.0850.

    >>> t = scale_by_stddev(decay=0.5, eps=0.0)
    >>> t.update({"w": jnp.array(2.0)}, t.init({"w": jnp.zeros(())}))[0]["w"].item()
    2.0
    """
    check_decay("decay", decay)
    check_nonnegative("eps", eps)
    check_nonnegative("initial_scale", initial_scale)
    correct = bias_correction

    def init(params):
        return ScaleByStddevState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params),
            nu=tree_full_like(params, initial_scale),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count) if correct else state.count

        def leaf(g, m, v):
            m = update_moment(g, m, decay, 1)
            v = update_moment(g, v, decay, 2)
            m_hat = _bias(m, decay, count) if correct else m
            v_hat = _bias(v, decay, count) if correct else v
            var = v_hat - abs_sq(m_hat)
            if eps_in_sqrt:
                u = g * jax.lax.rsqrt(var + eps)
            else:
                u = g / (jnp.sqrt(var) + eps)
            return u.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        mu = _map(_like, mu, state.mu)
        nu = _map(_like, nu, state.nu)
        return u, ScaleByStddevState(count=count, mu=mu, nu=nu)

    return _elementwise(GradientTransformation(init, update))


class ScaleByRssState(NamedTuple):
    """The running sum of squared gradients."""

    sum_of_squares: Any


def scale_by_rss(
    initial_accumulator_value: float | jax.Array = 0.1, eps: float | jax.Array = 1e-7
) -> GradientTransformation:
    """AdaGrad's scaling (Duchi et al., 2011): divide by the root of the summed squares.

    Update rule::

        s_t = s_{t-1} + g_t²        (s_0 = initial_accumulator_value)
        u_t = g_t / sqrt(s_t + ε)   (0 where s_t == 0)

    References:
      Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization", JMLR 2011.

    >>> t = scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
    >>> t.update({"w": jnp.array(3.0)}, t.init({"w": jnp.zeros(())}))[0]["w"].item()
    1.0
    """
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)
    check_nonnegative("eps", eps)

    def init(params):
        return ScaleByRssState(sum_of_squares=tree_full_like(params, initial_accumulator_value))

    def update(updates, state, params=None, **extra):
        del params, extra

        def leaf(g, s):
            s = abs_sq(g) + s
            u = jnp.where(s > 0, jax.lax.rsqrt(s + eps), 0.0) * g
            return u.astype(g.dtype), s

        u, sos = map_leaves(leaf, 2, updates, state.sum_of_squares)
        return u, ScaleByRssState(sum_of_squares=_map(_like, sos, state.sum_of_squares))

    return _elementwise(GradientTransformation(init, update))


# ----------------------------------------------------------------------------- weight decay


def add_decayed_weights(
    weight_decay: float | jax.Array = 0.0, mask: Any = None
) -> GradientTransformation:
    """Decoupled weight decay (Loshchilov & Hutter, 2019): ``u <- u + λ p``.

    Placed before ``scale_by_learning_rate`` this gives AdamW's ``p <- p - α (u + λ p)``.

    Args:
      weight_decay: ``λ`` >= 0.
      mask: which parameters decay: a pytree of bools with the params' structure (or a
        prefix of it), a function ``params -> such a tree``, or ``None`` for all.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
      https://arxiv.org/abs/1711.05101.

    >>> t = add_decayed_weights(0.1, mask={"w": True, "b": False})
    >>> p = {"w": jnp.array(2.0), "b": jnp.array(2.0)}
    >>> u, _ = t.update({"w": jnp.array(0.0), "b": jnp.array(0.0)}, t.init(p), p)
    >>> (round(u["w"].item(), 6), u["b"].item())
    (0.2, 0.0)
    """
    check_nonnegative("weight_decay", weight_decay)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del extra
        if params is None:
            raise ValueError(
                "add_decayed_weights needs the current parameters: call "
                "update(grads, state, params) (weight decay is proportional to them)."
            )
        flags = mask_leaves(mask, params)
        leaves, treedef = jax.tree.flatten(updates, is_leaf=lambda x: x is None)
        p_leaves = treedef.flatten_up_to(params)
        out = [
            u if (u is None or not f) else (u + weight_decay * p).astype(u.dtype)
            for u, p, f in zip(leaves, p_leaves, flags, strict=False)
        ]
        return treedef.unflatten(out), state

    out = GradientTransformation(init, update)
    # with a mask the decay depends on which leaf a coordinate belongs to
    return _elementwise(out) if mask is None or isinstance(mask, bool) else out
