"""Adaptive per-coordinate step sizes: RMSprop, AdaGrad and their relatives.

Each optimizer here is a chain of transforms made a named optimizer by
:func:`gdopt.named_optimizer` (hyperparameters in its state, optax's state layout).
Argument names and defaults are those of the optax function of the same name; where the
meaning deliberately differs, the docstring says how and why.
"""

from __future__ import annotations

from typing import Annotated, Any

import jax
import jax.numpy as jnp

from gdopt._validation import Integer, Interval
from gdopt.base import (
    Decay,
    GradientTransformation,
    LearningRate,
    NonNegative,
    OptionalDecay,
    OptionalLearningRate,
    OptionalNonNegative,
    identity,
)
from gdopt.combinators import chain
from gdopt.hyperparams import named_optimizer
from gdopt.transforms.clipping import clip_by_block_rms
from gdopt.transforms.factored import scale_by_factored_rms, scale_by_sm3
from gdopt.transforms.moments import (
    ema,
    scale_by_adadelta,
    scale_by_rms,
    scale_by_rprop,
    scale_by_rss,
    scale_by_stddev,
    trace,
)
from gdopt.transforms.normalization import scale_by_param_block_rms
from gdopt.transforms.regularization import add_decayed_weights
from gdopt.transforms.scaling import scale, scale_by_learning_rate

__all__ = ["rmsprop", "adagrad", "adadelta", "rprop", "sm3", "adafactor"]


@named_optimizer
def rmsprop(
    learning_rate: LearningRate,
    decay: Decay = 0.9,
    eps: NonNegative = 1e-8,
    initial_scale: NonNegative = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: OptionalDecay = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformation:
    """RMSprop (Tieleman & Hinton, 2012), optionally centered (Graves, 2013) and with momentum.

    Update rule::

        v_t = ρ v_{t-1} + (1 - ρ) g_t²
        d_t = g_t / sqrt(v_t + ε)                       (centered: sqrt(v_t - m_t² + ε),
                                                          m_t = ρ m_{t-1} + (1 - ρ) g_t)
        p_t = p_{t-1} - α d_t                           (momentum=None)
        b_t = β b_{t-1} + α d_t;  p_t = p_{t-1} - b_t   (momentum β)

    Args:
      learning_rate: ``α`` > 0.
      decay: ``ρ`` in [0, 1).
      eps: ``ε`` >= 0; ``eps_in_sqrt`` puts it inside the root (default) or outside.
      initial_scale: the starting ``v_0``.
      centered: divide by the estimated standard deviation instead of the RMS.
      momentum: ``β`` in [0, 1) or ``None``; ``nesterov`` for the look-ahead form.
      bias_correction: debias the running averages as Adam does.

    References:
      Tieleman & Hinton, Coursera "Neural Networks for Machine Learning", Lecture 6.5, 2012.
      Graves, "Generating Sequences With Recurrent Neural Networks", 2013.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.rmsprop(0.1, decay=0.0, eps=0.0)
    >>> p = {"w": jnp.array(1.0)}
    >>> u, _ = opt.update({"w": jnp.array(-4.0)}, opt.init(p), p)
    >>> round(float(u["w"]), 6)
    0.1
    """
    scaler = scale_by_stddev if centered else scale_by_rms
    return chain(
        scaler(decay, eps, initial_scale, eps_in_sqrt, bias_correction),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov) if momentum is not None else identity(),
    )


@named_optimizer
def adagrad(
    learning_rate: LearningRate,
    initial_accumulator_value: NonNegative = 0.1,
    eps: NonNegative = 1e-7,
) -> GradientTransformation:
    """AdaGrad (Duchi et al., 2011): per-coordinate steps shrinking with the summed squares.

    Update rule::

        s_t = s_{t-1} + g_t²          (s_0 = initial_accumulator_value)
        p_t = p_{t-1} - α g_t / sqrt(s_t + ε)

    Args:
      learning_rate: ``α`` > 0.
      initial_accumulator_value: ``s_0`` >= 0.
      eps: ``ε`` >= 0.

    References:
      Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization", JMLR 12, 2011.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)
    >>> p = {"w": jnp.array(0.0)}
    >>> u, _ = opt.update({"w": jnp.array(2.0)}, opt.init(p), p)
    >>> float(u["w"])
    -1.0
    """
    return chain(
        scale_by_rss(initial_accumulator_value, eps), scale_by_learning_rate(learning_rate)
    )


# ----------------------------------------------------------------------------- AdaDelta


@named_optimizer
def adadelta(
    learning_rate: OptionalLearningRate = None,
    rho: Decay = 0.9,
    eps: NonNegative = 1e-6,
    weight_decay: NonNegative = 0.0,
    weight_decay_mask: Any = None,
) -> GradientTransformation:
    """AdaDelta: steps whose units match the parameters', no learning rate needed (Zeiler, 2012).

    Update rule (``g_t`` includes the weight decay ``λ p_{t-1}``)::

        E[g²]_t = ρ E[g²]_{t-1} + (1 - ρ) g_t²
        Δ_t     = sqrt(E[Δ²]_{t-1} + ε) / sqrt(E[g²]_t + ε) · g_t
        E[Δ²]_t = ρ E[Δ²]_{t-1} + (1 - ρ) Δ_t²
        p_t     = p_{t-1} - α Δ_t

    Deliberate difference from optax: ``learning_rate=None`` (the default) means ``α = 1``,
    the paper's method, which *descends*. optax 0.2.8 drops the sign flip along with the
    learning rate when it is ``None``, so its default ``adadelta()`` ascends the loss.

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule); ``None`` for the paper's ``1``.
      rho: ``ρ`` in [0, 1).
      eps: ``ε`` >= 0 inside both square roots.
      weight_decay: ``λ`` >= 0, added to the gradient before the scaling (number, array or
        schedule).
      weight_decay_mask: which parameters decay (a pytree of bools or a function).

    References:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012, Algorithm 1,
      https://arxiv.org/abs/1212.5701.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.adadelta(rho=0.9, eps=1e-3)
    >>> params = {"w": jnp.zeros(3)}
    >>> state = opt.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     return gdopt.apply_updates(params, updates), state
    >>> for _ in range(500):
    ...     params, state = step(params, state)
    >>> bool(jnp.allclose(params["w"], 1.0, atol=1e-2))
    True
    """
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(1.0 if learning_rate is None else learning_rate),
    )


# ----------------------------------------------------------------------------- Rprop


@named_optimizer
def rprop(
    learning_rate: Annotated[float | jax.Array, Interval(0.0, low_open=True, schedule=False)],
    eta_minus: Annotated[float | jax.Array, Interval(0.0, 1.0, low_open=True)] = 0.5,
    eta_plus: Annotated[float | jax.Array, Interval(1.0)] = 1.2,
    min_step_size: NonNegative = 1e-6,
    max_step_size: NonNegative = 50.0,
) -> GradientTransformation:
    """Rprop (iRprop⁻): per-coordinate step sizes driven by gradient signs (Riedmiller & Braun, 1993).

    Update rule (see :func:`gdopt.scale_by_rprop`)::

        Δ_t = clip(η⁺ Δ_{t-1}, Δ_min, Δ_max)   if g_t g_{t-1} > 0
        Δ_t = clip(η⁻ Δ_{t-1}, Δ_min, Δ_max)   if g_t g_{t-1} < 0  (step skipped, g_t := 0)
        p_t = p_{t-1} - Δ_t sign(g_t)

    A full-batch method: with noisy mini-batch gradients the signs flip at random.

    Deliberate difference from optax: optax 0.2.8 applies at step ``t`` the step computed at
    ``t - 1`` (its first update is zero, and it lags one gradient behind); gdopt applies the
    current step, as the paper does. The step sizes and sign logic are the same.

    Args:
      learning_rate: the initial step size ``Δ_0`` > 0 (a number or array; not a schedule,
        since the step sizes adapt themselves).
      eta_minus: ``η⁻`` in (0, 1].
      eta_plus: ``η⁺`` >= 1.
      min_step_size, max_step_size: ``Δ_min <= Δ_max``, both >= 0.

    References:
      Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning: The
      RPROP Algorithm", ICNN 1993. Igel & Hüsken, "Improving the Rprop Learning Algorithm",
      NC 2000.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.rprop(0.1)
    >>> params = {"w": jnp.zeros(3)}
    >>> state = opt.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     return gdopt.apply_updates(params, updates), state
    >>> for _ in range(100):
    ...     params, state = step(params, state)
    >>> bool(jnp.allclose(params["w"], 1.0, atol=1e-3))
    True
    """
    return chain(
        scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size),
        scale(-1.0),
    )


# ----------------------------------------------------------------------------- memory-lean


@named_optimizer
def sm3(learning_rate: LearningRate, momentum: Decay = 0.9) -> GradientTransformation:
    """SM3: AdaGrad-like steps with per-axis accumulators (Anil et al., 2019).

    Update rule (per coordinate ``i`` of a leaf with axis accumulators ``μ_r``; see
    :func:`gdopt.scale_by_sm3`)::

        ν_t(i) = min_r μ_{t-1}(r(i)) + g_t(i)²,    μ_t(r) = max_{i in r} ν_t(i)
        m_t = β m_{t-1} + (1 - β) g_t / sqrt(ν_t)
        p_t = p_{t-1} - α m_t

    A ``n × m`` matrix costs ``n + m`` accumulator numbers instead of AdaGrad's ``n m``. 0-D
    and 1-D leaves keep a full accumulator (optax 0.2.8 fails on 0-D leaves).

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      momentum: ``β`` in [0, 1).

    References:
      Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization", NeurIPS 2019,
      https://arxiv.org/abs/1901.11150.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.sm3(0.5)
    >>> params = {"w": jnp.zeros((2, 3))}
    >>> state = opt.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     return gdopt.apply_updates(params, updates), state
    >>> for _ in range(300):
    ...     params, state = step(params, state)
    >>> bool(jnp.allclose(params["w"], 1.0, atol=1e-2))
    True
    """
    return chain(scale_by_sm3(momentum), scale_by_learning_rate(learning_rate))


def _relative_step_size(count: jax.Array) -> jax.Array:
    """Adafactor's relative step size ``ρ_t = min(1e-2, 1 / sqrt(t))`` (``t = count + 1``)."""
    return jnp.minimum(1e-2, jax.lax.rsqrt(count.astype(jnp.float32) + 1.0))


@named_optimizer
def adafactor(
    learning_rate: OptionalLearningRate = None,
    min_dim_size_to_factor: Annotated[int, Integer(0)] = 128,
    decay_rate: NonNegative = 0.8,
    decay_offset: NonNegative = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Annotated[
        float | jax.Array | None, Interval(0.0, low_open=True, optional=True)
    ] = 1.0,
    momentum: OptionalDecay = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: OptionalNonNegative = None,
    eps: NonNegative = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any = None,
) -> GradientTransformation:
    """Adafactor: factored second moments, update clipping, relative steps (Shazeer & Stern, 2018).

    Update rule (``t`` starts at 1; see :func:`gdopt.scale_by_factored_rms`)::

        β̂_t = 1 - t^(-decay_rate)
        V̂_t = factored (row × column) or full EMA of g_t² + ε1 with decay β̂_t
        U_t = g_t / sqrt(V̂_t)
        Û_t = U_t / max(1, RMS(U_t) / d)                      (d = clipping_threshold)
        α_t = max(1e-3, RMS(p_{t-1})) ρ_t                     (multiply_by_parameter_scale)
        p_t = p_{t-1} - α_t Û_t      (then optional momentum β1 on α_t Û_t and decay λ p)

    Memory: for an ``n × m`` weight (both sides >= ``min_dim_size_to_factor``) the second
    moment costs ``n + m`` numbers; no first moment unless ``momentum`` is set.

    Deliberate difference from optax: ``learning_rate=None`` (the default) means the paper's
    relative step size ``ρ_t = min(1e-2, 1/sqrt(t))`` (Section 9); optax 0.2.8 uses ``ρ_t = 1``
    there, so every default step moves each block by its full RMS. Pass a number or schedule
    to set ``ρ_t`` yourself (then gdopt equals optax). Also, ``decay_offset`` > 0 holds the
    decay at ``β̂ = 0`` until that many steps have passed, where optax returns NaN.

    Args:
      learning_rate: ``ρ_t`` (number, array or schedule); ``None`` for the paper's schedule.
      min_dim_size_to_factor: factor leaves whose second-largest axis is at least this long.
      decay_rate: the exponent of ``β̂_t`` (>= 0; the paper's 0.8).
      decay_offset: steps subtracted before the decay schedule (>= 0; fine-tuning restarts).
      multiply_by_parameter_scale: relative step ``α_t = max(1e-3, RMS(p)) ρ_t``; otherwise
        ``α_t = ρ_t``.
      clipping_threshold: ``d`` > 0, or ``None`` for no update clipping.
      momentum: ``β1`` in [0, 1) for an (undebiased) EMA of the steps, or ``None``.
      dtype_momentum: dtype of the momentum buffer.
      weight_decay_rate: ``λ`` >= 0 (not multiplied by ``ρ_t``), or ``None``.
      eps: ``ε1`` >= 0 added to the squared gradients.
      factored: factor the second moments at all.
      weight_decay_mask: which parameters decay (a pytree of bools or a function).

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018, https://arxiv.org/abs/1804.04235.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.adafactor(learning_rate=0.1, min_dim_size_to_factor=2)
    >>> params = {"w": jnp.full((2, 3), 0.5)}
    >>> state = opt.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     return gdopt.apply_updates(params, updates), state
    >>> for _ in range(300):
    ...     params, state = step(params, state)
    >>> bool(jnp.allclose(params["w"], 1.0, atol=0.05))
    True
    """
    # The chain has optax's parts in optax's order, a part present only when enabled (so the
    # state has optax's layout); learning_rate=None puts the paper's ρ_t where optax has none.
    step = _relative_step_size if learning_rate is None else learning_rate
    parts = [scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)]
    if clipping_threshold is not None:
        parts.append(clip_by_block_rms(clipping_threshold))
    parts.append(scale_by_learning_rate(step, flip_sign=False))
    if multiply_by_parameter_scale:
        parts.append(scale_by_param_block_rms())
    if momentum is not None:
        parts.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        parts.append(add_decayed_weights(weight_decay_rate, weight_decay_mask))
    parts.append(scale(-1.0))
    return chain(*parts)
