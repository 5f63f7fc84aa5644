"""Adaptive, sign-based, layer-wise and memory-lean transforms.

The building blocks of the classic adaptive optimizers (AMSGrad, AdaMax, AdaBelief, Yogi,
AdaDelta, RAdam), the sign methods (signSGD, Signum, Lion), Rprop, the layer-wise methods
(NovoGrad, LARS, LAMB, Fromage) and the memory-lean second-moment estimators (SM3,
Adafactor's factored moments). Each returns a :class:`~gdopt.base.GradientTransformation`.

Notation: ``g`` gradient, ``m`` first moment, ``v`` second moment, ``t`` step count starting
at 1, ``β1, β2`` decay rates, ``ε`` stability constant, ``λ`` weight decay, ``p`` parameter.

Dtypes: updates come out in the dtype of the incoming updates and every state leaf keeps the
dtype it was created with (``mu_dtype`` / ``nu_dtype`` choose the moments' dtypes), so the
state's dtypes never change across steps (``lax.scan`` / ``lax.cond`` need that).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt.base import (
    EmptyState,
    GradientTransformation,
    check_decay,
    check_nonnegative,
    check_scalar,
    is_concrete,
    safe_increment,
)
from gdopt.transforms._core import (
    ScaleByAdamState,
    _map,
    abs_sq,
    map_leaves,
    update_moment,
)
from gdopt.tree import tree_full_like, tree_zeros_like

__all__ = [
    "scale_by_amsgrad",
    "scale_by_adamax",
    "scale_by_belief",
    "scale_by_yogi",
    "scale_by_adadelta",
    "scale_by_radam",
    "scale_by_rprop",
    "scale_by_novograd",
    "scale_by_trust_ratio",
    "scale_by_sm3",
    "scale_by_factored_rms",
    "scale_by_lion",
    "scale_by_sign",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "ScaleByAmsgradState",
    "ScaleByBeliefState",
    "ScaleByAdaDeltaState",
    "ScaleByRpropState",
    "ScaleByNovogradState",
    "ScaleBySM3State",
    "FactoredState",
    "ScaleByLionState",
]


# ----------------------------------------------------------------------------- helpers


def _cast_like(new: Any, old: Any) -> Any:
    """Cast each leaf of ``new`` to the dtype of the matching leaf of ``old`` (``None`` kept)."""
    return _map(lambda x, y: x.astype(y.dtype), new, old)


def _f32(x: Any) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _debias(moment: jax.Array, decay: Any, count: jax.Array) -> jax.Array:
    """Adam's bias correction ``moment / (1 - decay^t)``, computed in float32.

    The power uses a float exponent: a concrete integer exponent would make eager code compile
    a new ``integer_pow`` kernel for every step count.
    """
    correction = 1 - _f32(decay) ** count.astype(jnp.float32)
    return moment / correction.astype(moment.dtype)


def _need_params(params: Any, name: str, why: str) -> None:
    if params is None:
        raise ValueError(
            f"{name} needs the current parameters ({why}): call "
            "update(grads, state, params) with the params as third argument."
        )


def _floor_norm(norm: jax.Array, floor: Any) -> jax.Array:
    """``norm`` where it exceeds ``floor``, else ``floor`` (a norm bounded away from 0)."""
    return jnp.where(norm <= floor, jnp.asarray(floor, norm.dtype), norm)


def _l2(x: jax.Array) -> jax.Array:
    """Euclidean norm of all elements (at least float32), with a finite gradient at 0."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    sq = jnp.sum(abs_sq(x))
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _rms(x: jax.Array) -> jax.Array:
    """Root mean square of all elements (finite gradient at 0; 0 for an empty array)."""
    norm = _l2(x)
    return norm / np.sqrt(max(int(np.size(x)), 1)).astype(norm.dtype)


# ----------------------------------------------------------------------------- AMSGrad


class ScaleByAmsgradState(NamedTuple):
    """Step counter, the moments ``m`` and ``v`` and the running maximum ``v_max``."""

    count: jax.Array
    mu: Any
    nu: Any
    nu_max: Any


def scale_by_amsgrad(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
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
    that. The default debiases both (as optax and PyTorch do).

    Args:
      b1, b2: decay rates in [0, 1).
      eps: added to the denominator outside the square root (>= 0).
      eps_root: added inside the square root (>= 0).
      mu_dtype: dtype of ``m`` (default: the params').
      bias_correction_mu: divide ``m`` by ``1 - β1^t``.
      bias_correction_nu: take the maximum of ``v_t / (1 - β2^t)`` instead of ``v_t``.
      nu_dtype: dtype of ``v`` and ``v_max`` (default: the params').

    Returns:
      The transformation; its state is a :class:`ScaleByAmsgradState`.

    References:
      Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018,
      https://arxiv.org/abs/1904.09237.

    >>> import jax.numpy as jnp
    >>> t = scale_by_amsgrad()
    >>> s = t.init({"w": jnp.zeros(2)})
    >>> u, s = t.update({"w": jnp.array([2.0, -1.0])}, s)
    >>> [round(x, 4) for x in u["w"].tolist()]
    [1.0, -1.0]
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        return ScaleByAmsgradState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=tree_zeros_like(params, dtype=nu_dtype),
            nu_max=tree_zeros_like(params, dtype=nu_dtype),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)

        def leaf(g, m, v, v_max):
            m = update_moment(g, m, b1, 1)
            v = update_moment(g, v, b2, 2)
            m_hat = _debias(m, b1, count) if bias_correction_mu else m
            v_eff = _debias(v, b2, count) if bias_correction_nu else v
            v_max = jnp.maximum(v_max, v_eff)
            u = m_hat / (jnp.sqrt(v_max + eps_root) + eps)
            return u.astype(g.dtype), m, v, v_max

        u, mu, nu, nu_max = map_leaves(leaf, 4, updates, state.mu, state.nu, state.nu_max)
        return u, ScaleByAmsgradState(
            count=count,
            mu=_cast_like(mu, state.mu),
            nu=_cast_like(nu, state.nu),
            nu_max=_cast_like(nu_max, state.nu_max),
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- AdaMax


def scale_by_adamax(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
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
      The transformation; its state is a :class:`~gdopt.ScaleByAdamState`.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Section 7.1
      (Algorithm 2), https://arxiv.org/abs/1412.6980.

    >>> import jax.numpy as jnp
    >>> t = scale_by_adamax()
    >>> u, _ = t.update({"w": jnp.array([4.0, -0.5])}, t.init({"w": jnp.zeros(2)}))
    >>> [round(x, 4) for x in u["w"].tolist()]
    [1.0, -1.0]
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)

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
            v = jnp.maximum(jnp.abs(g) + eps, b2 * v)
            u = _debias(m, b1, count) / v
            return u.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(
            count=count, mu=_cast_like(mu, state.mu), nu=_cast_like(nu, state.nu)
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- AdaBelief


class ScaleByBeliefState(NamedTuple):
    """Step counter, the first moment ``m`` and the belief ``s`` (variance of ``g`` around m)."""

    count: jax.Array
    mu: Any
    nu: Any


def _nesterov_mean(m, g, b1, count):
    """Nesterov's look-ahead debiased mean: ``β1 m / (1 - β1^{t+1}) + (1 - β1) g / (1 - β1^t)``."""
    return b1 * _debias(m, b1, safe_increment(count)) + (1 - b1) * _debias(g, b1, count)


def scale_by_belief(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-16,
    eps_root: float | jax.Array = 1e-16,
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
      mu_dtype, nu_dtype: dtypes of ``m`` and ``s`` (default: the params').

    Returns:
      The transformation; its state is a :class:`ScaleByBeliefState`.

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients", NeurIPS 2020, https://arxiv.org/abs/2010.07468.

    >>> import jax.numpy as jnp
    >>> t = scale_by_belief(eps=0.0, eps_root=0.0)
    >>> u, _ = t.update({"w": jnp.array(2.0)}, t.init({"w": jnp.zeros(())}))
    >>> round(float(u["w"]), 4)   # m1 = 0.2, s1 = 0.001 * 1.8², debiased: 2 / 1.8
    1.1111
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        return ScaleByBeliefState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=tree_zeros_like(params, dtype=nu_dtype),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)

        def leaf(g, m, s):
            m = update_moment(g, m, b1, 1)
            s = update_moment(g - m, s, b2, 2) + eps_root
            m_hat = _nesterov_mean(m, g, b1, count) if nesterov else _debias(m, b1, count)
            u = m_hat / (jnp.sqrt(_debias(s, b2, count)) + eps)
            return u.astype(g.dtype), m, s

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByBeliefState(
            count=count, mu=_cast_like(mu, state.mu), nu=_cast_like(nu, state.nu)
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Yogi


def scale_by_yogi(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-3,
    eps_root: float | jax.Array = 0.0,
    initial_accumulator_value: float | jax.Array = 1e-6,
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
      The transformation; its state is a :class:`~gdopt.ScaleByAdamState`.

    References:
      Zaheer, Reddi, Sachan, Kale & Kumar, "Adaptive Methods for Nonconvex Optimization",
      NeurIPS 2018, https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization.

    >>> import jax.numpy as jnp
    >>> t = scale_by_yogi(eps=0.0, initial_accumulator_value=0.0)
    >>> u, _ = t.update({"w": jnp.array(-3.0)}, t.init({"w": jnp.zeros(())}))
    >>> round(float(u["w"]), 4)   # from zero moments the first step is sign(g)
    -1.0
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)

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
            v = v - (1 - b2) * jnp.sign(v - g2) * g2
            m_hat = _debias(m, b1, count)
            v_hat = _debias(v, b2, count)
            u = m_hat / (jnp.sqrt(v_hat + eps_root) + eps)
            return u.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(
            count=count, mu=_cast_like(mu, state.mu), nu=_cast_like(nu, state.nu)
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- AdaDelta


class ScaleByAdaDeltaState(NamedTuple):
    """Running averages of the squared gradients ``E[g²]`` and squared updates ``E[Δ²]``."""

    e_g: Any
    e_x: Any


def scale_by_adadelta(
    rho: float | jax.Array = 0.9, eps: float | jax.Array = 1e-6
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

    >>> import jax.numpy as jnp
    >>> t = scale_by_adadelta(rho=0.0, eps=1e-4)
    >>> u, _ = t.update({"w": jnp.array(1.0)}, t.init({"w": jnp.zeros(())}))
    >>> round(float(u["w"]), 4)   # sqrt(1e-4) / sqrt(1 + 1e-4)
    0.01
    """
    check_decay("rho", rho)
    check_nonnegative("eps", eps)

    def init(params):
        return ScaleByAdaDeltaState(e_g=tree_zeros_like(params), e_x=tree_zeros_like(params))

    def update(updates, state, params=None, **extra):
        del params, extra

        def leaf(g, e_g, e_x):
            e_g = update_moment(g, e_g, rho, 2)
            delta = jnp.sqrt(e_x + eps) / jnp.sqrt(e_g + eps) * g
            e_x = update_moment(delta, e_x, rho, 2)
            return delta.astype(g.dtype), e_g, e_x

        u, e_g, e_x = map_leaves(leaf, 3, updates, state.e_g, state.e_x)
        return u, ScaleByAdaDeltaState(
            e_g=_cast_like(e_g, state.e_g), e_x=_cast_like(e_x, state.e_x)
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- RAdam


def scale_by_radam(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    threshold: float | jax.Array = 5.0,
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
      mu_dtype, nu_dtype: dtypes of ``m`` and ``v`` (default: the params').

    Returns:
      The transformation; its state is a :class:`~gdopt.ScaleByAdamState`.

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020,
      https://arxiv.org/abs/1908.03265.

    >>> import jax.numpy as jnp
    >>> t = scale_by_radam()
    >>> u, _ = t.update({"w": jnp.array(3.0)}, t.init({"w": jnp.zeros(())}))
    >>> round(float(u["w"]), 4)   # ρ_1 = 1 < 5: the debiased momentum m̂_1 = g_1
    3.0
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    check_scalar("threshold", threshold, low=4.0)

    def init(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=tree_zeros_like(params, dtype=nu_dtype),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)
        beta2 = _f32(b2)
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        b2t = beta2 ** count.astype(jnp.float32)
        rho = rho_inf - 2.0 * count.astype(jnp.float32) * b2t / (1.0 - b2t)
        ratio = (rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)
        rectified = rho >= threshold
        r = jnp.sqrt(jnp.where(rectified, ratio, 1.0))

        def leaf(g, m, v):
            m = update_moment(g, m, b1, 1)
            v = update_moment(g, v, b2, 2)
            m_hat = _nesterov_mean(m, g, b1, count) if nesterov else _debias(m, b1, count)
            v_hat = _debias(v, b2, count)
            adapted = r.astype(m_hat.dtype) * m_hat / (jnp.sqrt(v_hat + eps_root) + eps)
            u = jnp.where(rectified, adapted, m_hat)
            return u.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(
            count=count, mu=_cast_like(mu, state.mu), nu=_cast_like(nu, state.nu)
        )

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Rprop


class ScaleByRpropState(NamedTuple):
    """Per-coordinate step sizes and the previous update direction ``Δ_{t-1} sign(g_{t-1})``."""

    step_sizes: Any
    prev_updates: Any


def scale_by_rprop(
    learning_rate: float | jax.Array,
    eta_minus: float | jax.Array = 0.5,
    eta_plus: float | jax.Array = 1.2,
    min_step_size: float | jax.Array = 1e-6,
    max_step_size: float | jax.Array = 50.0,
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
      learning_rate: the initial step size ``Δ_0`` > 0.
      eta_minus: shrink factor ``η⁻`` in (0, 1].
      eta_plus: growth factor ``η⁺`` >= 1.
      min_step_size, max_step_size: bounds on ``Δ`` (``0 <= min <= max``).

    Returns:
      The transformation; its state is a :class:`ScaleByRpropState`.

    References:
      Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning: The
      RPROP Algorithm", ICNN 1993. Igel & Hüsken, "Improving the Rprop Learning Algorithm",
      NC 2000.

    >>> import jax.numpy as jnp
    >>> t = scale_by_rprop(0.1)
    >>> s = t.init({"w": jnp.zeros(())})
    >>> steps = []
    >>> for g in [1.0, 2.0, -1.0, -1.0]:
    ...     u, s = t.update({"w": jnp.array(g)}, s)
    ...     steps.append(round(float(u["w"]), 4))
    >>> steps   # same sign: grow; flip: skip and shrink; then move with the smaller step
    [0.1, 0.12, 0.0, -0.06]
    """
    check_scalar("learning_rate", learning_rate, low=0.0, low_open=True)
    check_scalar("eta_minus", eta_minus, low=0.0, high=1.0, low_open=True)
    check_scalar("eta_plus", eta_plus, low=1.0)
    check_nonnegative("min_step_size", min_step_size)
    check_nonnegative("max_step_size", max_step_size)
    if (
        is_concrete((min_step_size, max_step_size))
        and not callable(min_step_size)
        and not callable(max_step_size)
        and np.any(np.asarray(max_step_size) < np.asarray(min_step_size))
    ):
        raise ValueError(
            f"max_step_size must be >= min_step_size, got max_step_size={max_step_size} and "
            f"min_step_size={min_step_size}."
        )

    def init(params):
        return ScaleByRpropState(
            step_sizes=_map(
                lambda p: jnp.full_like(p, learning_rate, dtype=jnp.asarray(p).dtype), params
            ),
            prev_updates=tree_zeros_like(params),
        )

    def update(updates, state, params=None, **extra):
        del params, extra

        def leaf(g, step, prev):
            s = g * prev
            factor = jnp.where(s > 0, eta_plus, eta_minus)
            grown = jnp.clip(step * factor, min_step_size, max_step_size)
            step = jnp.where(s == 0, step, grown).astype(step.dtype)
            u = jnp.where(s < 0, 0.0, step * jnp.sign(g))
            return u.astype(g.dtype), step, u.astype(prev.dtype)

        u, steps, prev = map_leaves(leaf, 3, updates, state.step_sizes, state.prev_updates)
        return u, ScaleByRpropState(step_sizes=steps, prev_updates=prev)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- NovoGrad


class ScaleByNovogradState(NamedTuple):
    """Step counter, the first moment ``m`` (per coordinate) and ``v`` (one scalar per leaf)."""

    count: jax.Array
    mu: Any
    nu: Any


def scale_by_novograd(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.25,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    weight_decay: float | jax.Array = 0.0,
    mu_dtype: Any = None,
    *,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """NovoGrad's direction: layer-wise second moments and decoupled decay (Ginsburg et al., 2019).

    Each leaf (layer) keeps one scalar second moment of its gradient's squared norm::

        v_1 = ||g_1||²,   v_t = β2 v_{t-1} + (1 - β2) ||g_t||²
        m_t = β1 m_{t-1} + g_t / (sqrt(v_t + ε_root) + ε) + λ p_{t-1}     (m_0 = 0)
        u_t = m_t

    Note the momentum has no ``(1 - β1)`` factor, as in the paper.

    Args:
      b1, b2: decay rates in [0, 1).
      eps: added outside the square root (>= 0).
      eps_root: added inside the square root (>= 0).
      weight_decay: ``λ`` >= 0 (needs the params in ``update``).
      mu_dtype: dtype of ``m`` (default: the params').
      nu_dtype: dtype of the per-leaf ``v`` (default: the params').

    Returns:
      The transformation; its state is a :class:`ScaleByNovogradState`.

    References:
      Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
      Training of Deep Networks", 2019, https://arxiv.org/abs/1905.11286.

    >>> import jax.numpy as jnp
    >>> t = scale_by_novograd(eps=0.0)
    >>> p = {"w": jnp.zeros(2)}
    >>> u, _ = t.update({"w": jnp.array([3.0, 4.0])}, t.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]   # g / ||g||
    [0.6, 0.8]
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    check_nonnegative("weight_decay", weight_decay)

    def init(params):
        return ScaleByNovogradState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=_map(lambda p: jnp.zeros((), nu_dtype or jnp.asarray(p).dtype), params),
        )

    def update(updates, state, params=None, **extra):
        del extra
        _need_params(params, "scale_by_novograd", "its weight decay term λ p")
        count = safe_increment(state.count)
        first = count == 1

        def leaf(g, m, v, p):
            norm_sq = jnp.sum(abs_sq(g))
            v = jnp.where(first, norm_sq, b2 * v + (1 - b2) * norm_sq).astype(v.dtype)
            d = g / (jnp.sqrt(v + eps_root) + eps) + weight_decay * p
            m = b1 * m + d
            return m.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu, params)
        return u, ScaleByNovogradState(count=count, mu=_cast_like(mu, state.mu), nu=nu)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- trust ratio


def scale_by_trust_ratio(
    min_norm: float | jax.Array = 0.0,
    trust_coefficient: float | jax.Array = 1.0,
    eps: float | jax.Array = 0.0,
) -> GradientTransformation:
    """Layer-wise trust ratio of LARS and LAMB (You et al., 2017 and 2020).

    Each leaf's update is rescaled so that its norm is proportional to the parameter's::

        ||p||' = max(||p||, min_norm),  ||u||' = max(||u||, min_norm)
        u <- u · η ||p||' / (||u||' + ε)       (η = trust_coefficient)
        u <- u                                  where ||p||' = 0 or ||u||' = 0

    Args:
      min_norm: floor on both norms (>= 0); 0 leaves zero-norm layers unscaled.
      trust_coefficient: ``η`` >= 0 (LARS uses ``1e-3``, LAMB ``1``).
      eps: added to the update's norm (>= 0).

    Returns:
      A stateless transformation (``update`` needs the params).

    References:
      You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017,
      https://arxiv.org/abs/1708.03888. You et al., "Large Batch Optimization for Deep
      Learning: Training BERT in 76 minutes", ICLR 2020, https://arxiv.org/abs/1904.00962.

    >>> import jax.numpy as jnp
    >>> t = scale_by_trust_ratio()
    >>> p = {"w": jnp.array([3.0, 4.0])}
    >>> u, _ = t.update({"w": jnp.array([0.0, 0.5])}, t.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]   # rescaled to norm ||p|| = 5
    [0.0, 5.0]
    """
    check_nonnegative("min_norm", min_norm)
    check_nonnegative("trust_coefficient", trust_coefficient)
    check_nonnegative("eps", eps)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del extra
        _need_params(params, "scale_by_trust_ratio", "the ratio uses ||p||")

        def leaf(u, p):
            p_norm = _floor_norm(_l2(p), min_norm)
            u_norm = _floor_norm(_l2(u), min_norm)
            ratio = trust_coefficient * p_norm / (u_norm + eps)
            ratio = jnp.where((p_norm == 0) | (u_norm == 0), 1.0, ratio)
            return (u * ratio).astype(u.dtype)

        return _map(leaf, updates, params), state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- SM3


class ScaleBySM3State(NamedTuple):
    """Per leaf: a tuple of accumulators (one per axis; one full-shape one for 0-D/1-D leaves)
    in ``mu``, and the momentum ``nu``."""

    mu: Any
    nu: Any


def _sm3_accumulator_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    if len(shape) < 2:
        return [tuple(shape)]
    return [(n,) for n in shape]


def scale_by_sm3(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 1.0,
    eps: float | jax.Array = 1e-8,
) -> GradientTransformation:
    """SM3-II's direction: AdaGrad with sublinear memory via per-axis cover sets (Anil et al., 2019).

    A leaf of shape ``(n_1, ..., n_k)`` with ``k >= 2`` keeps one accumulator per axis
    (``n_1 + ... + n_k`` numbers instead of ``n_1 ··· n_k``); 0-D and 1-D leaves keep a full
    one. For each coordinate ``i`` and axis accumulators ``μ_r``::

        ν_t(i) = min_r μ_{t-1}(r(i)) + g_t(i)²        (β2 = 1, AdaGrad-like sum)
        ν_t(i) = β2 min_r μ_{t-1}(r(i)) + (1 - β2) g_t(i)²    (β2 < 1)
        μ_t(r) = max_{i in row/column r} ν_t(i)
        m_t    = β1 m_{t-1} + (1 - β1) g_t / sqrt(ν_t + ε)   (0 where ν_t = 0)
        u_t    = m_t

    Args:
      b1: momentum decay in [0, 1).
      b2: accumulator decay in [0, 1]; ``1`` (the paper's SM3) sums without decay.
      eps: added inside the square root (>= 0).

    Returns:
      The transformation; its state is a :class:`ScaleBySM3State`.

    References:
      Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization", NeurIPS 2019,
      https://arxiv.org/abs/1901.11150.

    >>> import jax.numpy as jnp
    >>> t = scale_by_sm3(b1=0.0, eps=0.0)
    >>> s = t.init({"w": jnp.zeros((3, 2))})
    >>> [a.shape for a in s.mu["w"]]   # 3 + 2 numbers instead of 6
    [(3,), (2,)]
    >>> u, s = t.update({"w": jnp.full((3, 2), -2.0)}, s)
    >>> float(u["w"][0, 0])
    -1.0
    """
    check_decay("b1", b1)
    check_scalar("b2", b2, low=0.0, high=1.0)
    check_nonnegative("eps", eps)

    def init(params):
        def accumulators(p):
            dtype = jnp.asarray(p).dtype
            if jnp.issubdtype(dtype, jnp.complexfloating):
                raise TypeError("scale_by_sm3 supports real parameters only, got complex ones.")
            return tuple(jnp.zeros(s, dtype) for s in _sm3_accumulator_shapes(np.shape(p)))

        return ScaleBySM3State(mu=_map(accumulators, params), nu=tree_zeros_like(params))

    def update(updates, state, params=None, **extra):
        del params, extra
        new_weight = jnp.where(_f32(b2) == 1.0, 1.0, 1.0 - _f32(b2))

        def leaf(g, accs, m):
            ndim = g.ndim
            if ndim < 2:
                prev = accs[0]
            else:
                prev = accs[0].reshape((-1,) + (1,) * (ndim - 1))
                for axis in range(1, ndim):
                    shape = (1,) * axis + (-1,) + (1,) * (ndim - axis - 1)
                    prev = jnp.minimum(prev, accs[axis].reshape(shape))
            nu = new_weight.astype(g.dtype) * g * g + b2 * prev
            pre = jnp.where(nu > 0, jax.lax.rsqrt(nu + eps), 0.0) * g
            m = update_moment(pre, m, b1, 1)
            if ndim < 2:
                new_accs = (nu.astype(accs[0].dtype),)
            else:
                new_accs = tuple(
                    jnp.max(nu, axis=tuple(a for a in range(ndim) if a != axis)).astype(
                        accs[axis].dtype
                    )
                    for axis in range(ndim)
                )
            return m.astype(g.dtype), new_accs, m

        flat_u, treedef = jax.tree.flatten(updates, is_leaf=lambda x: x is None)
        flat_mu = treedef.flatten_up_to(state.mu)
        flat_nu = treedef.flatten_up_to(state.nu)
        outs = [
            (None, None, None) if g is None else leaf(g, a, m)
            for g, a, m in zip(flat_u, flat_mu, flat_nu, strict=True)
        ]
        u = treedef.unflatten([o[0] for o in outs])
        mu = treedef.unflatten([o[1] for o in outs])
        nu = treedef.unflatten([o[2] for o in outs])
        return u, ScaleBySM3State(mu=mu, nu=_cast_like(nu, state.nu))

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Adafactor


class FactoredState(NamedTuple):
    """Step counter and, per leaf, the row/column statistics (factored leaves) or the full
    second moment ``v`` (other leaves); unused slots hold a 0-D zero."""

    count: jax.Array
    v_row: Any
    v_col: Any
    v: Any


def _factored_dims(
    shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int
) -> tuple[int, int] | None:
    """The (second largest, largest) axes to factor over, or ``None`` to keep a full moment."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape, kind="stable")
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _adafactor_decay(step: jax.Array, exponent: Any) -> jax.Array:
    """The paper's ``β̂2_t = 1 - t^(-exponent)`` for ``t = step + 1`` (clamped to ``t >= 1``)."""
    t = jnp.maximum(jnp.asarray(step, jnp.float32) + 1.0, 1.0)
    return 1.0 - t ** (-_f32(exponent))


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float | jax.Array = 0.8,
    step_offset: int | jax.Array = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float | jax.Array = 1e-30,
    decay_rate_fn: Callable[[jax.Array, Any], jax.Array] | None = None,
) -> GradientTransformation:
    """Adafactor's factored second-moment scaling (Shazeer & Stern, 2018).

    For a leaf with two axes of size >= ``min_dim_size_to_factor`` (the two largest; other
    axes are batch axes), only row and column averages of ``g² + ε1`` are kept (``n + m``
    numbers for an ``n × m`` matrix); other leaves keep the full average::

        β_t   = 1 - t^(-decay_rate)          (t = steps taken - step_offset + 1, clamped >= 1)
        R_t   = β_t R_{t-1} + (1 - β_t) mean_cols(g_t² + ε1)
        C_t   = β_t C_{t-1} + (1 - β_t) mean_rows(g_t² + ε1)
        V̂_t   = R_t C_t / mean(R_t)          (rank-1 reconstruction)
        u_t   = g_t / sqrt(V̂_t)
        (unfactored: V_t = β_t V_{t-1} + (1 - β_t)(g_t² + ε1),  u_t = g_t / sqrt(V_t))

    ``β_1 = 0``, so no bias correction is needed. Before ``step_offset`` steps have passed the
    decay stays at ``β = 0`` (optax evaluates ``0^(-c)`` there and returns NaN).

    Args:
      factored: factor the second moment of eligible leaves.
      decay_rate: the exponent ``c`` >= 0 of ``β_t = 1 - t^(-c)`` (the paper uses 0.8).
      step_offset: steps to subtract from the counter (>= 0), to restart the decay schedule
        when fine-tuning from a checkpoint.
      min_dim_size_to_factor: factor only when the second-largest axis is at least this long.
      epsilon: ``ε1`` >= 0 added to the squared gradient.
      decay_rate_fn: ``f(step, decay_rate) -> β`` replacing the schedule above (``step``
        counts from 0, less ``step_offset``).

    Returns:
      The transformation; its state is a :class:`FactoredState` (``update`` needs the params
      only for their shapes, which the gradients also carry, so ``params`` may be omitted).

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018, https://arxiv.org/abs/1804.04235.

    >>> import jax.numpy as jnp
    >>> t = scale_by_factored_rms(min_dim_size_to_factor=2)
    >>> s = t.init({"w": jnp.zeros((3, 4))})
    >>> (s.v_row["w"].shape, s.v_col["w"].shape)   # 3 + 4 numbers instead of 12
    ((3,), (4,))
    >>> u, s = t.update({"w": jnp.ones((3, 4))}, s)
    >>> round(float(u["w"][0, 0]), 4)
    1.0
    """
    check_nonnegative("decay_rate", decay_rate)
    check_nonnegative("step_offset", step_offset)
    check_nonnegative("epsilon", epsilon)
    if isinstance(min_dim_size_to_factor, bool) or not isinstance(
        min_dim_size_to_factor, (int, np.integer)
    ):
        raise TypeError(
            f"min_dim_size_to_factor must be a Python int (it decides state shapes), got "
            f"{min_dim_size_to_factor!r}."
        )
    decay_fn = _adafactor_decay if decay_rate_fn is None else decay_rate_fn

    def init(params):
        def slots(p):
            p = jnp.asarray(p)
            dims = _factored_dims(p.shape, factored, min_dim_size_to_factor)
            empty = jnp.zeros((), p.dtype)
            if dims is None:
                return empty, empty, jnp.zeros_like(p)
            d_second, d_largest = dims
            row = jnp.zeros(np.delete(p.shape, d_largest), p.dtype)
            col = jnp.zeros(np.delete(p.shape, d_second), p.dtype)
            return row, col, empty

        rows, cols, vs = map_leaves(slots, 3, params)
        return FactoredState(count=jnp.zeros([], jnp.int32), v_row=rows, v_col=cols, v=vs)

    def update(updates, state, params=None, **extra):
        del params, extra
        beta = decay_fn(state.count - step_offset, decay_rate)

        def leaf(g, row, col, v):
            g2 = abs_sq(g) + epsilon
            dims = _factored_dims(g.shape, factored, min_dim_size_to_factor)
            if dims is None:
                v = (beta * v + (1 - beta) * g2).astype(v.dtype)
                u = g * jax.lax.rsqrt(v.astype(g2.dtype))
                return u.astype(g.dtype), row, col, v
            d_second, d_largest = dims
            row = (beta * row + (1 - beta) * jnp.mean(g2, axis=d_largest)).astype(row.dtype)
            col = (beta * col + (1 - beta) * jnp.mean(g2, axis=d_second)).astype(col.dtype)
            # ``row`` lost axis d_largest, so d_second moved left by one if it came after it.
            row_axis = d_second - 1 if d_second > d_largest else d_second
            row_factor = jax.lax.rsqrt(row / jnp.mean(row, axis=row_axis, keepdims=True))
            col_factor = jax.lax.rsqrt(col)
            u = (
                g
                * jnp.expand_dims(row_factor, axis=d_largest)
                * jnp.expand_dims(col_factor, axis=d_second)
            )
            return u.astype(g.dtype), row, col, v

        u, rows, cols, vs = map_leaves(leaf, 4, updates, state.v_row, state.v_col, state.v)
        return u, FactoredState(count=safe_increment(state.count), v_row=rows, v_col=cols, v=vs)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Lion and signs


class ScaleByLionState(NamedTuple):
    """Step counter and Lion's momentum ``m``."""

    count: jax.Array
    mu: Any


def scale_by_lion(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.99,
    mu_dtype: Any = None,
    *,
    mode: str = "hard",
    smooth_beta: float = 1.0,
) -> GradientTransformation:
    """Lion's direction: the sign of an interpolated momentum (Chen et al., 2023).

    Update rule::

        c_t = β1 m_{t-1} + (1 - β1) g_t
        u_t = sign(c_t)                      (mode="hard", the paper's rule)
        m_t = β2 m_{t-1} + (1 - β2) g_t

    Two interpolation momenta: ``β1`` for the step, the slower ``β2`` for the memory. Every
    coordinate moves by exactly the learning rate. ``mode="smooth"`` uses
    ``tanh(smooth_beta · c_t)`` and ``mode="refined"`` uses ``c_t`` where ``|c_t| < 1`` and its
    sign elsewhere (smooth relaxations of the sign).

    Args:
      b1: interpolation factor of the step, in [0, 1).
      b2: decay of the momentum, in [0, 1).
      mu_dtype: dtype of ``m`` (default: the params').
      mode: ``"hard"``, ``"smooth"`` or ``"refined"``.
      smooth_beta: the tanh slope of ``mode="smooth"``.

    Returns:
      The transformation; its state is a :class:`ScaleByLionState`.

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
      https://arxiv.org/abs/2302.06675.

    >>> import jax.numpy as jnp
    >>> t = scale_by_lion()
    >>> u, _ = t.update({"w": jnp.array([0.01, -5.0, 0.0])}, t.init({"w": jnp.zeros(3)}))
    >>> u["w"].tolist()
    [1.0, -1.0, 0.0]
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    if mode not in ("hard", "smooth", "refined"):
        raise ValueError(f"mode must be 'hard', 'smooth' or 'refined', got {mode!r}.")
    check_scalar("smooth_beta", smooth_beta)

    def direction(c):
        if mode == "hard":
            return jnp.sign(c)
        if mode == "smooth":
            return jnp.tanh(smooth_beta * c)
        return jnp.where(jnp.abs(c) < 1.0, c, jnp.sign(c))

    def init(params):
        return ScaleByLionState(
            count=jnp.zeros([], jnp.int32), mu=tree_zeros_like(params, dtype=mu_dtype)
        )

    def update(updates, state, params=None, **extra):
        del params, extra

        def leaf(g, m):
            u = direction((1 - b1) * g + b1 * m)
            m = update_moment(g, m, b2, 1)
            return u.astype(g.dtype), m

        u, mu = map_leaves(leaf, 2, updates, state.mu)
        return u, ScaleByLionState(count=safe_increment(state.count), mu=_cast_like(mu, state.mu))

    return GradientTransformation(init, update)


def scale_by_sign() -> GradientTransformation:
    """Replace every update by its sign: ``u <- sign(u)`` (signSGD; Bernstein et al., 2018).

    References:
      Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD: Compressed Optimisation for
      Non-Convex Problems", ICML 2018, https://arxiv.org/abs/1802.04434.

    >>> import jax.numpy as jnp
    >>> t = scale_by_sign()
    >>> t.update({"w": jnp.array([-0.3, 0.0, 7.0])}, t.init(None))[0]["w"].tolist()
    [-1.0, 0.0, 1.0]
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del params, extra
        return _map(jnp.sign, updates), state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- parameter scale


def scale_by_param_block_norm(min_scale: float | jax.Array = 1e-3) -> GradientTransformation:
    """Multiply each leaf's update by its parameter's norm: ``u <- u · max(||p||, min_scale)``.

    Makes step sizes relative to the size of each parameter block (a layer), so one learning
    rate suits layers of very different scales.

    Args:
      min_scale: the floor on ``||p||`` (>= 0), so zero-initialised blocks still move.

    Returns:
      A stateless transformation (``update`` needs the params).

    References:
      Shazeer & Stern, "Adafactor", ICML 2018 (relative step size),
      https://arxiv.org/abs/1804.04235.

    >>> import jax.numpy as jnp
    >>> t = scale_by_param_block_norm()
    >>> p = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
    >>> u, _ = t.update({"w": jnp.ones(2), "b": jnp.ones(2)}, t.init(p), p)
    >>> (u["w"].tolist(), [round(x, 6) for x in u["b"].tolist()])
    ([5.0, 5.0], [0.001, 0.001])
    """
    check_nonnegative("min_scale", min_scale)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del extra
        _need_params(params, "scale_by_param_block_norm", "it scales by ||p||")
        return _map(
            lambda u, p: (u * _floor_norm(_l2(p), min_scale)).astype(u.dtype), updates, params
        ), state

    return GradientTransformation(init, update)


def scale_by_param_block_rms(min_scale: float | jax.Array = 1e-3) -> GradientTransformation:
    """Multiply each leaf's update by its parameter's RMS: ``u <- u · max(RMS(p), min_scale)``.

    Adafactor's relative step size: the step of each block is proportional to the typical
    magnitude of its entries, ``α_t = max(ε2, RMS(p_{t-1})) ρ_t``.

    Args:
      min_scale: ``ε2``, the floor on ``RMS(p)`` (>= 0); the paper uses ``1e-3``.

    Returns:
      A stateless transformation (``update`` needs the params).

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018, Section 8, https://arxiv.org/abs/1804.04235.

    >>> import jax.numpy as jnp
    >>> t = scale_by_param_block_rms()
    >>> p = {"w": jnp.array([3.0, -3.0])}
    >>> u, _ = t.update({"w": jnp.ones(2)}, t.init(p), p)
    >>> u["w"].tolist()
    [3.0, 3.0]
    """
    check_nonnegative("min_scale", min_scale)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del extra
        _need_params(params, "scale_by_param_block_rms", "it scales by RMS(p)")
        return _map(
            lambda u, p: (u * _floor_norm(_rms(p), min_scale)).astype(u.dtype), updates, params
        ), state

    return GradientTransformation(init, update)
