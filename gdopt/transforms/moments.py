"""Moments and adaptive scaling: momentum, moving averages and the Adam/RMS/AdaGrad families.

Each function returns a :class:`~gdopt.base.GradientTransformation`; the named optimizers in
:mod:`gdopt.optimizers` are thin chains of these. Notation: ``g`` gradient, ``m`` first
moment, ``v`` second moment, ``t`` step count starting at 1, ``β1, β2`` decay rates, ``ε``
stability constant.

Dtypes: each transform returns updates in the dtype of the incoming updates and keeps each
state leaf in the dtype it was created with (``mu_dtype``/``nu_dtype``/``accumulator_dtype``
choose it), so bfloat16 models stay bfloat16 and the state's dtypes never change across
steps (``lax.scan`` and ``lax.cond`` need that). A moment wider than the gradient (float32
``nu`` of float16 parameters) receives the gradient cast up before it is squared.

Each update rule is one per-leaf function returning the update and every new state buffer
(:func:`gdopt.map_leaves`), so XLA can compute them from one read of ``g`` and the state.
Every transform here acts coordinate by coordinate, so all are packable
(:mod:`gdopt.packing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics as num
from gdopt._numerics import (
    abs_sq,
    add,
    cast_like,
    cast_tree_like,
    div,
    map_leaves,
    maximum,
    mul,
    promote,
    safe_increment,
    sub,
    tree_map,
    update_moment,
    where,
)
from gdopt._traits import transform
from gdopt._validation import Interval, check_callable, is_concrete
from gdopt.base import (
    DecayValue,
    GradientTransformation,
    NonNegativeValue,
    ScalarOrSchedule,
    resolve,
)
from gdopt.tree import tree_full_like, tree_zeros_like

__all__ = [
    "trace",
    "ema",
    "scale_by_adam",
    "scale_by_rms",
    "scale_by_stddev",
    "scale_by_rss",
    "scale_by_amsgrad",
    "scale_by_adamax",
    "scale_by_belief",
    "scale_by_yogi",
    "scale_by_adadelta",
    "scale_by_radam",
    "scale_by_rprop",
    "scale_by_adopt",
    "scale_by_ademamix",
    "TraceState",
    "EmaState",
    "ScaleByAdamState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByStddevState",
    "ScaleByRssState",
    "ScaleByAmsgradState",
    "ScaleByBeliefState",
    "ScaleByAdaDeltaState",
    "ScaleByRpropState",
    "ScaleByAdemamixState",
]


def second_moment_zeros(params: Any, nu_dtype: Any = None) -> Any:
    """Zeros for a second moment of ``params``: in ``nu_dtype`` if given, else each leaf's
    :func:`gdopt._numerics.second_moment_dtype` (float32 for float16 leaves)."""
    if nu_dtype is not None:
        return tree_zeros_like(params, dtype=nu_dtype)
    return jax.tree.map(
        lambda x: tree_zeros_like(x, dtype=num.second_moment_dtype(jnp.result_type(x))), params
    )


class TraceState(NamedTuple):
    """The momentum buffer (a pytree like the params)."""

    trace: Any


@transform(packable=True)
def trace(
    decay: DecayValue, nesterov: bool = False, accumulator_dtype: Any = None
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

    def init(params):
        return TraceState(trace=tree_zeros_like(params, dtype=accumulator_dtype))

    def update(updates, state, params=None, **extra):
        del params, extra
        new_trace = tree_map(lambda g, t: add(g, mul(decay, t)), updates, state.trace)
        if nesterov:
            out = tree_map(lambda g, t: cast_like(add(g, mul(decay, t)), g), updates, new_trace)
        else:
            out = cast_tree_like(new_trace, updates)
        new_trace = cast_tree_like(new_trace, state.trace)
        return out, TraceState(trace=new_trace)

    return GradientTransformation(init, update)


class EmaState(NamedTuple):
    """Step counter and the moving average."""

    count: jax.Array
    ema: Any


@transform(packable=True)
def ema(
    decay: DecayValue, debias: bool = True, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Exponential moving average of the updates: ``m_t = β m_{t-1} + (1 - β) g_t``.

    With ``debias`` the output is ``m_t / (1 - β^t)`` (Kingma & Ba, 2015, Sec. 3).

    >>> t = ema(0.5)
    >>> s = t.init({"w": jnp.zeros(())})
    >>> u, s = t.update({"w": jnp.array(2.0)}, s)
    >>> u["w"].item()
    2.0
    """

    def init(params):
        return EmaState(
            count=jnp.zeros([], jnp.int32), ema=tree_zeros_like(params, dtype=accumulator_dtype)
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)
        new = tree_map(lambda g, m: update_moment(g, m, decay, 1), updates, state.ema)
        out = tree_map(lambda m: num.bias_correction(m, decay, count), new) if debias else new
        out = cast_tree_like(out, updates)
        return out, EmaState(count=count, ema=cast_tree_like(new, state.ema))

    return GradientTransformation(init, update)


class ScaleByAdamState(NamedTuple):
    """Step counter ``t`` and the first and second moments ``m``, ``v``."""

    count: jax.Array
    mu: Any
    nu: Any


@transform(packable=True)
def scale_by_adam(
    b1: DecayValue = 0.9,
    b2: DecayValue = 0.999,
    eps: NonNegativeValue = 1e-8,
    eps_root: NonNegativeValue = 0.0,
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
      nu_dtype: dtype of ``v``; default params' (float32 for float16 params: float16 cannot
        hold ``(1 - β2) g²`` of small gradients).

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
      https://arxiv.org/abs/1412.6980. Dozat, "Incorporating Nesterov Momentum into Adam", 2016.

    >>> t = scale_by_adam()
    >>> u, _ = t.update({"w": jnp.array([3.0, -0.5])}, t.init({"w": jnp.zeros(2)}))
    >>> [round(x, 5) for x in u["w"].tolist()]   # first Adam step is sign(g)
    [1.0, -1.0]
    """

    def init(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=second_moment_zeros(params, nu_dtype),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)
        c1 = num.bias_correction_factor(b1, count)
        c2 = num.bias_correction_factor(b2, count)
        c1_next = num.bias_correction_factor(b1, safe_increment(count)) if nesterov else c1

        def leaf(g, m, v):
            m = update_moment(g, m, b1, 1)
            v = update_moment(g, v, b2, 2)
            if nesterov:
                m_hat = add(
                    mul(b1, m / c1_next.astype(m.dtype)), mul(1 - b1, g / c1.astype(g.dtype))
                )
            else:
                m_hat = m / c1.astype(m.dtype)
            v_hat = v / c2.astype(v.dtype)
            u = div(m_hat, add(jnp.sqrt(add(v_hat, eps_root)), eps))
            return u.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        mu = cast_tree_like(mu, state.mu)
        nu = cast_tree_like(nu, state.nu)
        return u, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init, update)


class ScaleByRmsState(NamedTuple):
    """The running average of squared gradients ``v``."""

    nu: Any


class ScaleByRmsWithCountState(NamedTuple):
    """Step counter and ``v`` (when bias correction is on)."""

    count: jax.Array
    nu: Any


@transform(packable=True)
def scale_by_rms(
    decay: DecayValue = 0.9,
    eps: NonNegativeValue = 1e-8,
    initial_scale: NonNegativeValue = 0.0,
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
    correct = bias_correction

    def init(params):
        nu = tree_full_like(params, initial_scale)
        if correct:
            return ScaleByRmsWithCountState(count=jnp.zeros([], jnp.int32), nu=nu)
        return ScaleByRmsState(nu=nu)

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count) if correct else jnp.zeros([], jnp.int32)

        def leaf(g, v):
            v = update_moment(g, v, decay, 2)
            v_hat = num.bias_correction(v, decay, count) if correct else v
            if eps_in_sqrt:
                u = mul(g, jax.lax.rsqrt(add(v_hat, eps)))
            else:
                u = div(g, add(jnp.sqrt(v_hat), eps))
            return u.astype(g.dtype), v

        u, nu = map_leaves(leaf, 2, updates, state.nu)
        nu = cast_tree_like(nu, state.nu)
        if correct:
            return u, ScaleByRmsWithCountState(count=count, nu=nu)
        return u, ScaleByRmsState(nu=nu)

    return GradientTransformation(init, update)


class ScaleByStddevState(NamedTuple):
    """Running averages of ``g`` and ``g²`` (and a counter when bias correction is on)."""

    count: jax.Array
    mu: Any
    nu: Any


@transform(packable=True)
def scale_by_stddev(
    decay: DecayValue = 0.9,
    eps: NonNegativeValue = 1e-8,
    initial_scale: NonNegativeValue = 0.0,
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
            m_hat = num.bias_correction(m, decay, count) if correct else m
            v_hat = num.bias_correction(v, decay, count) if correct else v
            var = sub(v_hat, abs_sq(m_hat))
            if eps_in_sqrt:
                u = mul(g, jax.lax.rsqrt(add(var, eps)))
            else:
                u = div(g, add(jnp.sqrt(var), eps))
            return u.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        mu = cast_tree_like(mu, state.mu)
        nu = cast_tree_like(nu, state.nu)
        return u, ScaleByStddevState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init, update)


class ScaleByRssState(NamedTuple):
    """The running sum of squared gradients."""

    sum_of_squares: Any


@transform(packable=True)
def scale_by_rss(
    initial_accumulator_value: NonNegativeValue = 0.1, eps: NonNegativeValue = 1e-7
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

    def init(params):
        return ScaleByRssState(sum_of_squares=tree_full_like(params, initial_accumulator_value))

    def update(updates, state, params=None, **extra):
        del params, extra

        def leaf(g, s):
            s = add(abs_sq(g), s)
            u = mul(jnp.where(s > 0, jax.lax.rsqrt(add(s, eps)), 0.0), g)
            return u.astype(g.dtype), s

        u, sos = map_leaves(leaf, 2, updates, state.sum_of_squares)
        return u, ScaleByRssState(sum_of_squares=cast_tree_like(sos, state.sum_of_squares))

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- AMSGrad


class ScaleByAmsgradState(NamedTuple):
    """Step counter, the moments ``m`` and ``v`` and the running maximum ``v_max``."""

    count: jax.Array
    mu: Any
    nu: Any
    nu_max: Any


@transform(packable=True)
def scale_by_amsgrad(
    b1: DecayValue = 0.9,
    b2: DecayValue = 0.999,
    eps: NonNegativeValue = 1e-8,
    eps_root: NonNegativeValue = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """AMSGrad's direction: Adam with a non-decreasing second moment (Reddi et al., 2018).

    Update rule (``t`` starts at 1)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²
        v̂_t = max(v̂_{t-1}, v_t / (1 - β2^t))       (bias_correction_nu=False: max(v̂_{t-1}, v_t))
        u_t = (m_t / (1 - β1^t)) / (sqrt(v̂_t + ε_root) + ε)

    The maximum keeps the effective per-coordinate step size non-increasing, which is what
    repairs Adam's convergence proof. The paper takes the maximum of the raw ``v_t`` and does
    no bias correction; ``bias_correction_mu=False, bias_correction_nu=False`` gives exactly
    that. The default debiases both, and takes the maximum of the *debiased* ``v_t``, as
    optax does.

    Deliberate difference from PyTorch: ``torch.optim.Adam(amsgrad=True)`` takes the maximum
    of the raw ``v_t`` and divides that maximum by the current ``1 - β2^t`` afterwards,
    ``v̂_t = max_{s <= t} v_s / (1 - β2^t)``. The two agree while ``v`` only grows, and
    differ once the gradients shrink: ``1 - β2^t`` keeps growing, so PyTorch's ``v̂_t``
    falls (and its effective step size ``1 / sqrt(v̂_t)`` rises) even when no new large
    gradient arrives, against the non-increasing step size the method exists for. Debiasing
    before the maximum compares estimates on the same scale, so ``v̂_t`` never decreases.

    Args:
      b1, b2: decay rates in [0, 1).
      eps: added to the denominator outside the square root (>= 0).
      eps_root: added inside the square root (>= 0).
      mu_dtype: dtype of ``m`` (default: the params').
      bias_correction_mu: divide ``m`` by ``1 - β1^t``.
      bias_correction_nu: take the maximum of ``v_t / (1 - β2^t)`` instead of ``v_t``.
      nu_dtype: dtype of ``v`` and ``v_max`` (default: the params', float32 for float16).

    Returns:
      The transformation; its state is a :class:`ScaleByAmsgradState`.

    References:
      Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018,
      https://arxiv.org/abs/1904.09237.

    >>> t = scale_by_amsgrad()
    >>> s = t.init({"w": jnp.zeros(2)})
    >>> u, s = t.update({"w": jnp.array([2.0, -1.0])}, s)
    >>> [round(x, 4) for x in u["w"].tolist()]
    [1.0, -1.0]
    """

    def init(params):
        return ScaleByAmsgradState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=second_moment_zeros(params, nu_dtype),
            nu_max=second_moment_zeros(params, nu_dtype),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)

        def leaf(g, m, v, v_max):
            m = update_moment(g, m, b1, 1)
            v = update_moment(g, v, b2, 2)
            m_hat = num.bias_correction(m, b1, count) if bias_correction_mu else m
            v_eff = num.bias_correction(v, b2, count) if bias_correction_nu else v
            v_max = maximum(v_max, v_eff)
            u = div(m_hat, add(jnp.sqrt(add(v_max, eps_root)), eps))
            return u.astype(g.dtype), m, v, v_max

        u, mu, nu, nu_max = map_leaves(leaf, 4, updates, state.mu, state.nu, state.nu_max)
        return u, ScaleByAmsgradState(
            count=count,
            mu=cast_tree_like(mu, state.mu),
            nu=cast_tree_like(nu, state.nu),
            nu_max=cast_tree_like(nu_max, state.nu_max),
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- AdaMax


@transform(packable=True)
def scale_by_adamax(
    b1: DecayValue = 0.9,
    b2: DecayValue = 0.999,
    eps: NonNegativeValue = 1e-8,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """AdaMax's direction: Adam with the infinity norm in place of the RMS (Kingma & Ba, 2015).

    Update rule (``t`` starts at 1)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = max(β2 v_{t-1}, |g_t| + ε)
        u_t = (m_t / (1 - β1^t)) / v_t

    The paper writes ``v_t = max(β2 v_{t-1}, |g_t|)``; ``ε`` inside the maximum keeps the
    division finite where a coordinate has only seen zero gradients.

    Args:
      b1, b2: decay rates in [0, 1).
      eps: the floor added to ``|g|`` (>= 0).
      mu_dtype, nu_dtype: dtypes of ``m`` and ``v`` (default: the params').

    Returns:
      The transformation; its state is a :class:`ScaleByAdamState`.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Section 7.1
      (Algorithm 2), https://arxiv.org/abs/1412.6980.

    >>> t = scale_by_adamax()
    >>> u, _ = t.update({"w": jnp.array([4.0, -0.5])}, t.init({"w": jnp.zeros(2)}))
    >>> [round(x, 4) for x in u["w"].tolist()]
    [1.0, -1.0]
    """

    def init(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=tree_zeros_like(params, dtype=nu_dtype),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)

        def leaf(g, m, v):
            m = update_moment(g, m, b1, 1)
            v = maximum(add(jnp.abs(g), eps), mul(b2, v))
            u = div(num.bias_correction(m, b1, count), v)
            return u.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(
            count=count, mu=cast_tree_like(mu, state.mu), nu=cast_tree_like(nu, state.nu)
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- AdaBelief


class ScaleByBeliefState(NamedTuple):
    """Step counter, the first moment ``m`` and the belief ``s`` (variance of ``g`` around m)."""

    count: jax.Array
    mu: Any
    nu: Any


def _nesterov_mean(m: jax.Array, g: jax.Array, b1: Any, count: jax.Array) -> jax.Array:
    """Nesterov's look-ahead debiased mean: ``β1 m / (1 - β1^{t+1}) + (1 - β1) g / (1 - β1^t)``."""
    return add(
        mul(b1, num.bias_correction(m, b1, safe_increment(count))),
        mul(1 - b1, num.bias_correction(g, b1, count)),
    )


@transform(packable=True)
def scale_by_belief(
    b1: DecayValue = 0.9,
    b2: DecayValue = 0.999,
    eps: NonNegativeValue = 1e-16,
    eps_root: NonNegativeValue = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """AdaBelief's direction: divide by the spread of ``g`` around its mean (Zhuang et al., 2020).

    Update rule (``t`` starts at 1)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        s_t = β2 s_{t-1} + (1 - β2) (g_t - m_t)² + ε_root
        u_t = (m_t / (1 - β1^t)) / (sqrt(s_t / (1 - β2^t)) + ε)

    A gradient close to its prediction ``m_t`` (high "belief") gets a large step. With
    ``nesterov=True`` the debiased mean is ``β1 m_t / (1 - β1^{t+1}) + (1 - β1) g_t /
    (1 - β1^t)``.

    Args:
      b1, b2: decay rates in [0, 1).
      eps: added outside the square root (>= 0).
      eps_root: added to ``s`` at every step, inside the square root (>= 0), as in the paper's
        Algorithm 2.
      nesterov: Nesterov's look-ahead mean.
      mu_dtype, nu_dtype: dtypes of ``m`` and ``s`` (default: the params', ``s`` float32
        for float16 params).

    Returns:
      The transformation; its state is a :class:`ScaleByBeliefState`.

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients", NeurIPS 2020, https://arxiv.org/abs/2010.07468.

    >>> t = scale_by_belief(eps=0.0, eps_root=0.0)
    >>> u, _ = t.update({"w": jnp.array(2.0)}, t.init({"w": jnp.zeros(())}))
    >>> round(float(u["w"]), 4)   # m1 = 0.2, s1 = 0.001 * 1.8², debiased: 2 / 1.8
    1.1111
    """

    def init(params):
        return ScaleByBeliefState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=second_moment_zeros(params, nu_dtype),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)

        def leaf(g, m, s):
            m = update_moment(g, m, b1, 1)
            s = add(update_moment(sub(g, m), s, b2, 2), eps_root)
            if nesterov:
                m_hat = _nesterov_mean(m, g, b1, count)
            else:
                m_hat = num.bias_correction(m, b1, count)
            u = div(m_hat, add(jnp.sqrt(num.bias_correction(s, b2, count)), eps))
            return u.astype(g.dtype), m, s

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByBeliefState(
            count=count, mu=cast_tree_like(mu, state.mu), nu=cast_tree_like(nu, state.nu)
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Yogi


@transform(packable=True)
def scale_by_yogi(
    b1: DecayValue = 0.9,
    b2: DecayValue = 0.999,
    eps: NonNegativeValue = 1e-3,
    eps_root: NonNegativeValue = 0.0,
    initial_accumulator_value: NonNegativeValue = 1e-6,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Yogi's direction: an additive, sign-controlled second moment (Zaheer et al., 2018).

    Update rule (``t`` starts at 1, ``m_0 = v_0 = initial_accumulator_value``)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = v_{t-1} - (1 - β2) sign(v_{t-1} - g_t²) g_t²
        u_t = (m_t / (1 - β1^t)) / (sqrt(v_t / (1 - β2^t) + ε_root) + ε)

    Unlike Adam's multiplicative average, ``v`` moves by at most ``(1 - β2) g²`` per step, so
    one burst of large gradients cannot blow the effective learning rate down (or up) at once.
    The moments are debiased as in Adam and ``m_0`` starts at ``initial_accumulator_value``
    too (the convention of optax's implementation; the paper's Algorithm 2 starts ``m`` at 0
    and recommends a small positive ``v_0``; the ``m_0`` term decays as ``β1^t``).

    Args:
      b1, b2: decay rates in [0, 1).
      eps: added outside the square root (>= 0); the paper recommends ``1e-3``.
      eps_root: added inside the square root (>= 0).
      initial_accumulator_value: ``v_0`` (and ``m_0``), >= 0.
      mu_dtype, nu_dtype: dtypes of ``m`` and ``v`` (default: the params').

    Returns:
      The transformation; its state is a :class:`ScaleByAdamState`.

    References:
      Zaheer, Reddi, Sachan, Kale & Kumar, "Adaptive Methods for Nonconvex Optimization",
      NeurIPS 2018, https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization.

    >>> t = scale_by_yogi(eps=0.0, initial_accumulator_value=0.0)
    >>> u, _ = t.update({"w": jnp.array(-3.0)}, t.init({"w": jnp.zeros(())}))
    >>> round(float(u["w"]), 4)   # from zero moments the first step is sign(g)
    -1.0
    """

    def init(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_full_like(params, initial_accumulator_value, dtype=mu_dtype),
            nu=tree_full_like(params, initial_accumulator_value, dtype=nu_dtype),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)

        def leaf(g, m, v):
            m = update_moment(g, m, b1, 1)
            g2 = abs_sq(g)
            v = sub(v, mul(mul(1 - b2, jnp.sign(sub(v, g2))), g2))
            m_hat = num.bias_correction(m, b1, count)
            v_hat = num.bias_correction(v, b2, count)
            u = div(m_hat, add(jnp.sqrt(add(v_hat, eps_root)), eps))
            return u.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(
            count=count, mu=cast_tree_like(mu, state.mu), nu=cast_tree_like(nu, state.nu)
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- AdaDelta


class ScaleByAdaDeltaState(NamedTuple):
    """Running averages of the squared gradients ``E[g²]`` and squared updates ``E[Δ²]``."""

    e_g: Any
    e_x: Any


@transform(packable=True)
def scale_by_adadelta(
    rho: DecayValue = 0.9, eps: NonNegativeValue = 1e-6
) -> GradientTransformation:
    """AdaDelta's direction: a unit-consistent ratio of two RMS averages (Zeiler, 2012).

    Update rule::

        E[g²]_t = ρ E[g²]_{t-1} + (1 - ρ) g_t²
        Δ_t     = sqrt(E[Δ²]_{t-1} + ε) / sqrt(E[g²]_t + ε) · g_t
        E[Δ²]_t = ρ E[Δ²]_{t-1} + (1 - ρ) Δ_t²
        u_t     = Δ_t

    The paper's parameter change is ``-Δ_t`` (no learning rate): chain with
    ``scale_by_learning_rate(1.0)`` for the original method.

    Args:
      rho: decay rate ``ρ`` in [0, 1).
      eps: ``ε`` >= 0 inside both square roots (it also sets the size of the first steps).

    Returns:
      The transformation; its state is a :class:`ScaleByAdaDeltaState`.

    References:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012, Algorithm 1,
      https://arxiv.org/abs/1212.5701.

    >>> t = scale_by_adadelta(rho=0.0, eps=1e-4)
    >>> u, _ = t.update({"w": jnp.array(1.0)}, t.init({"w": jnp.zeros(())}))
    >>> round(float(u["w"]), 4)   # sqrt(1e-4) / sqrt(1 + 1e-4)
    0.01
    """

    def init(params):
        return ScaleByAdaDeltaState(e_g=tree_zeros_like(params), e_x=tree_zeros_like(params))

    def update(updates, state, params=None, **extra):
        del params, extra

        def leaf(g, e_g, e_x):
            e_g = update_moment(g, e_g, rho, 2)
            delta = mul(div(jnp.sqrt(add(e_x, eps)), jnp.sqrt(add(e_g, eps))), g)
            e_x = update_moment(delta, e_x, rho, 2)
            return delta.astype(g.dtype), e_g, e_x

        u, e_g, e_x = map_leaves(leaf, 3, updates, state.e_g, state.e_x)
        return u, ScaleByAdaDeltaState(
            e_g=cast_tree_like(e_g, state.e_g), e_x=cast_tree_like(e_x, state.e_x)
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- RAdam


@transform(packable=True)
def scale_by_radam(
    b1: DecayValue = 0.9,
    b2: DecayValue = 0.999,
    eps: NonNegativeValue = 1e-8,
    eps_root: NonNegativeValue = 0.0,
    threshold: Annotated[float | jax.Array, Interval(4.0)] = 5.0,
    *,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Rectified Adam's direction: Adam with a variance rectification term (Liu et al., 2020).

    Update rule (``t`` starts at 1)::

        m_t = β1 m_{t-1} + (1 - β1) g_t,   m̂_t = m_t / (1 - β1^t)
        v_t = β2 v_{t-1} + (1 - β2) g_t²,  v̂_t = v_t / (1 - β2^t)
        ρ_∞ = 2 / (1 - β2) - 1
        ρ_t = ρ_∞ - 2 t β2^t / (1 - β2^t)
        r_t = sqrt((ρ_t - 4)(ρ_t - 2) ρ_∞ / ((ρ_∞ - 4)(ρ_∞ - 2) ρ_t))
        u_t = r_t m̂_t / (sqrt(v̂_t + ε_root) + ε)     if ρ_t >= threshold
        u_t = m̂_t                                     otherwise (momentum SGD)

    While too few gradients have been seen for the adaptive learning rate's variance to be
    finite (small ``ρ_t``), RAdam takes un-adapted momentum steps. The paper's condition is
    ``ρ_t > 4``; its reference code (and optax) use ``ρ_t >= 5``, the default ``threshold``.
    ``ρ`` is computed in float32 from ``β2`` as stored (float32), consistently in both places.

    Args:
      b1, b2: decay rates in [0, 1).
      eps: added outside the square root (>= 0).
      eps_root: added inside the square root (>= 0).
      threshold: the rectification threshold on ``ρ_t``, >= 4 (``r_t`` is imaginary for
        ``2 < ρ_t < 4``).
      nesterov: Nesterov's look-ahead mean (as in :func:`scale_by_belief`).
      mu_dtype, nu_dtype: dtypes of ``m`` and ``v`` (default: the params', ``v`` float32
        for float16 params).

    Returns:
      The transformation; its state is a :class:`ScaleByAdamState`.

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020,
      https://arxiv.org/abs/1908.03265.

    >>> t = scale_by_radam()
    >>> u, _ = t.update({"w": jnp.array(3.0)}, t.init({"w": jnp.zeros(())}))
    >>> round(float(u["w"]), 4)   # ρ_1 = 1 < 5: the debiased momentum m̂_1 = g_1
    3.0
    """

    def init(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=second_moment_zeros(params, nu_dtype),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)
        beta2 = num.as_float32(b2)
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        c2 = num.bias_correction_factor(b2, count)  # 1 - β2^t
        rho = sub(rho_inf, div(mul(2.0 * count.astype(jnp.float32), 1.0 - c2), c2))
        ratio = div(
            mul((rho - 4.0) * (rho - 2.0), rho_inf), mul((rho_inf - 4.0) * (rho_inf - 2.0), rho)
        )
        rectified = jnp.greater_equal(*promote(rho, threshold))
        r = jnp.sqrt(jnp.where(rectified, ratio, 1.0))

        def leaf(g, m, v):
            m = update_moment(g, m, b1, 1)
            v = update_moment(g, v, b2, 2)
            if nesterov:
                m_hat = _nesterov_mean(m, g, b1, count)
            else:
                m_hat = num.bias_correction(m, b1, count)
            v_hat = num.bias_correction(v, b2, count)
            adapted = div(r.astype(m_hat.dtype) * m_hat, add(jnp.sqrt(add(v_hat, eps_root)), eps))
            u = where(rectified, adapted, m_hat)
            return u.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(
            count=count, mu=cast_tree_like(mu, state.mu), nu=cast_tree_like(nu, state.nu)
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Rprop


class ScaleByRpropState(NamedTuple):
    """Per-coordinate step sizes and the previous update direction ``Δ_{t-1} sign(g_{t-1})``."""

    step_sizes: Any
    prev_updates: Any


@transform(packable=True)
def scale_by_rprop(
    learning_rate: Annotated[float | jax.Array, Interval(0.0, low_open=True, schedule=False)],
    eta_minus: Annotated[float | jax.Array, Interval(0.0, 1.0, low_open=True)] = 0.5,
    eta_plus: Annotated[float | jax.Array, Interval(1.0)] = 1.2,
    min_step_size: NonNegativeValue = 1e-6,
    max_step_size: NonNegativeValue = 50.0,
) -> GradientTransformation:
    """Resilient backpropagation's direction (iRprop⁻; Riedmiller & Braun 1993, Igel & Hüsken 2000).

    Only the sign of each gradient coordinate is used; each coordinate has its own step size
    ``Δ`` (``Δ_0 = learning_rate``) that grows while the sign holds and shrinks when it flips::

        s = g_t · g_{t-1}
        Δ_t = clip(η⁺ Δ_{t-1}, Δ_min, Δ_max)   if s > 0
        Δ_t = clip(η⁻ Δ_{t-1}, Δ_min, Δ_max)   if s < 0
        Δ_t = Δ_{t-1}                           if s = 0
        u_t = 0                                 if s < 0 (and g_t is forgotten: g_t := 0)
        u_t = Δ_t sign(g_t)                     otherwise

    After a sign flip the step is skipped and the gradient forgotten, so the next step neither
    grows nor shrinks ``Δ`` (the iRprop⁻ variant, also used by PyTorch and optax). The output
    is the descent step's magnitude along ``+sign(g)``: chain with ``scale(-1.0)``.

    Deliberate difference from optax: optax 0.2.8 outputs at step ``t`` the step computed at
    ``t - 1`` (its first update is zero); gdopt outputs the current step, as in the paper.

    Args:
      learning_rate: the initial step size ``Δ_0`` > 0 (a number or an array, not a schedule).
      eta_minus: shrink factor ``η⁻`` in (0, 1].
      eta_plus: growth factor ``η⁺`` >= 1.
      min_step_size, max_step_size: bounds on ``Δ`` (``0 <= min <= max``).

    Returns:
      The transformation; its state is a :class:`ScaleByRpropState`.

    Raises:
      ValueError: when ``max_step_size < min_step_size`` (concrete values).

    References:
      Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning: The
      RPROP Algorithm", ICNN 1993. Igel & Hüsken, "Improving the Rprop Learning Algorithm",
      NC 2000.

    >>> t = scale_by_rprop(0.1)
    >>> s = t.init({"w": jnp.zeros(())})
    >>> steps = []
    >>> for g in [1.0, 2.0, -1.0, -1.0]:
    ...     u, s = t.update({"w": jnp.array(g)}, s)
    ...     steps.append(round(float(u["w"]), 4))
    >>> steps   # same sign: grow; flip: skip and shrink; then move with the smaller step
    [0.1, 0.12, 0.0, -0.06]
    """
    if (
        not callable(min_step_size)
        and not callable(max_step_size)
        and is_concrete((min_step_size, max_step_size))
        and np.any(np.asarray(max_step_size) < np.asarray(min_step_size))
    ):
        raise ValueError(
            f"max_step_size must be >= min_step_size, got max_step_size={max_step_size} and "
            f"min_step_size={min_step_size}."
        )

    def init(params):
        return ScaleByRpropState(
            step_sizes=tree_full_like(params, learning_rate),
            prev_updates=tree_zeros_like(params),
        )

    def update(updates, state, params=None, **extra):
        del params, extra

        def leaf(g, step, prev):
            s = mul(g, prev)
            factor = where(s > 0, eta_plus, eta_minus)
            grown = num.clip(mul(step, factor), min_step_size, max_step_size)
            step = where(s == 0, step, grown).astype(step.dtype)
            u = jnp.where(s < 0, 0.0, mul(step, jnp.sign(g)))
            return u.astype(g.dtype), step, u.astype(prev.dtype)

        u, steps, prev = map_leaves(leaf, 3, updates, state.step_sizes, state.prev_updates)
        return u, ScaleByRpropState(step_sizes=steps, prev_updates=prev)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- ADOPT


@transform(packable=True)
def scale_by_adopt(
    b1: DecayValue = 0.9,
    b2: DecayValue = 0.9999,
    eps: NonNegativeValue = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = lambda step: num.weak_float(step) ** 0.25,
) -> GradientTransformation:
    """ADOPT's direction (Taniguchi et al., 2024): normalise by the *previous* second moment.

    Adam divides ``g_t`` by a ``v_t`` that contains ``g_t`` itself, which correlates the two
    and breaks convergence for small ``β2``. ADOPT normalises with ``v_{t-1}`` and applies the
    momentum *after* normalising. Update rule (``t = 0`` is the first call)::

        t = 0:   v_0 = g_0²,  m_0 = 0,  u_0 = 0                   (the first call only fills v)
        t >= 1:  m_t = β1 m_{t-1} + (1 - β1) clip(g_t / max(sqrt(v_{t-1}), ε), c_t)
                 v_t = β2 v_{t-1} + (1 - β2) g_t²
                 u_t = m_t        (nesterov: β1 m_t + (1 - β1) clip(...))

    with ``c_t = clip_value_fn(t)`` (``t^{1/4}`` by default; ``use_clipping=False`` drops it).

    Args:
      b1, b2: ``β1, β2`` in [0, 1).
      eps: ``ε`` >= 0, the floor of ``sqrt(v)``.
      mu_dtype: dtype of ``m`` (default: the params').
      nesterov: Nesterov-style look-ahead on the momentum.
      use_clipping: clip the normalised gradient to ``[-c_t, c_t]`` (recommended: it is what
        makes the first steps stable).
      clip_value_fn: ``t -> c_t``; ``t`` is the int32 step counter (cast it before it meets
        a Python float under strict dtype promotion; the default is
        ``weak_float(t) ** 0.25``, which computes what ``t ** 0.25`` does).

    Returns:
      The transformation; its state is a :class:`ScaleByAdamState`.

    References:
      Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any β2 with the Optimal
      Rate", NeurIPS 2024, https://arxiv.org/abs/2411.02853.

    >>> t = scale_by_adopt(b1=0.0)
    >>> s = t.init({"w": jnp.zeros(())})
    >>> u, s = t.update({"w": jnp.array(2.0)}, s)     # first call: only v_0 = 4
    >>> float(u["w"])
    0.0
    >>> u, s = t.update({"w": jnp.array(1.0)}, s)     # 1 / sqrt(4)
    >>> float(u["w"])
    0.5
    """
    check_callable("clip_value_fn", clip_value_fn, "a callable step -> value")

    def init(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=tree_zeros_like(params),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        started = state.count > 0
        b1_ = jnp.where(started, b1, 1.0)
        b2_ = jnp.where(started, b2, 0.0)
        bound = clip_value_fn(state.count) if use_clipping else None

        def leaf(g, m, v):
            n = div(g, maximum(jnp.sqrt(v), eps))
            if bound is not None:
                n = num.clip(n, -bound, bound)
            m_new = update_moment(n, m, b1_, 1)
            v_new = update_moment(g, v, b2_, 2)
            u = update_moment(n, m_new, b1_, 1) if nesterov else m_new
            return u.astype(g.dtype), cast_like(m_new, m), cast_like(v_new, v)

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(count=safe_increment(state.count), mu=mu, nu=nu)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- AdEMAMix


class ScaleByAdemamixState(NamedTuple):
    """Step counters, fast EMA ``m1``, slow EMA ``m2`` and second moment ``v``.

    ``count`` drives the bias corrections, ``count_m2`` the ``b3``/``alpha`` schedules (optax's
    layout; the two are always equal).
    """

    count: jax.Array
    count_m2: jax.Array
    m1: Any
    m2: Any
    nu: Any


@transform(packable=True)
def scale_by_ademamix(
    b1: DecayValue = 0.9,
    b2: DecayValue = 0.999,
    b3: Annotated[ScalarOrSchedule, Interval(0.0, 1.0, high_open=True)] = 0.9999,
    alpha: Annotated[ScalarOrSchedule, Interval(0.0)] = 6.0,
    eps: NonNegativeValue = 1e-8,
    eps_root: NonNegativeValue = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    """AdEMAMix's direction (Pagliardini et al., 2024): Adam plus a very slow momentum.

    Update rule (``t`` starts at 1)::

        m1_t = β1 m1_{t-1} + (1 - β1) g_t          (fast EMA, debiased)
        m2_t = β3 m2_{t-1} + (1 - β3) g_t          (slow EMA, not debiased)
        v_t  = β2 v_{t-1} + (1 - β2) g_t²
        u_t  = (m1_t / (1 - β1^t) + α m2_t) / (sqrt(v_t / (1 - β2^t) + ε_root) + ε)

    ``b3`` and ``alpha`` may be schedules ``count -> value`` (count from 0); the paper warms
    them up (see :func:`gdopt.ademamix_alpha_scheduler` and
    :func:`gdopt.ademamix_beta3_scheduler`).

    Args:
      b1, b2: ``β1, β2`` in [0, 1).
      b3: ``β3`` in [0, 1) (number, array or schedule).
      alpha: ``α`` >= 0, the weight of the slow EMA (number, array or schedule).
      eps, eps_root: ``ε`` outside and ``ε_root`` inside the square root.
      mu_dtype: dtype of ``m1`` and ``m2`` (default: the params'). ``v`` keeps the params'
        dtype (optax stores ``v`` in ``mu_dtype`` too).

    Returns:
      The transformation; its state is a :class:`ScaleByAdemamixState`.

    References:
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
      ICLR 2025, https://arxiv.org/abs/2409.03113.

    >>> t = scale_by_ademamix(alpha=0.0)      # alpha = 0 is Adam
    >>> u, _ = t.update({"w": jnp.array(-3.0)}, t.init({"w": jnp.zeros(())}))
    >>> round(float(u["w"]), 4)
    -1.0
    """

    def init(params):
        return ScaleByAdemamixState(
            count=jnp.zeros([], jnp.int32),
            count_m2=jnp.zeros([], jnp.int32),
            m1=tree_zeros_like(params, dtype=mu_dtype),
            m2=tree_zeros_like(params, dtype=mu_dtype),
            nu=tree_zeros_like(params),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        b3_t = resolve(b3, state.count_m2)
        alpha_t = resolve(alpha, state.count_m2)
        count = safe_increment(state.count)
        c1 = num.bias_correction_factor(b1, count)
        c2 = num.bias_correction_factor(b2, count)

        def leaf(g, m1, m2, v):
            m1n = update_moment(g, m1, b1, 1)
            m2n = update_moment(g, m2, b3_t, 1)
            vn = update_moment(g, v, b2, 2)
            den = add(jnp.sqrt(add(vn / c2.astype(vn.dtype), eps_root)), eps)
            u = div(add(m1n / c1.astype(m1n.dtype), mul(alpha_t, m2n)), den)
            return u.astype(g.dtype), cast_like(m1n, m1), cast_like(m2n, m2), cast_like(vn, v)

        u, m1, m2, nu = map_leaves(leaf, 4, updates, state.m1, state.m2, state.nu)
        return u, ScaleByAdemamixState(
            count=count, count_m2=safe_increment(state.count_m2), m1=m1, m2=m2, nu=nu
        )

    return GradientTransformation(init, update)
