"""The Adam family: Adam, AdamW and their variants.

Each optimizer here is a chain of transforms made a named optimizer by
:func:`gdopt.named_optimizer`: its hyperparameters live in its state, and its state has
optax's layout (``state[0].mu`` is the first moment). Argument names and defaults are those
of the optax function of the same name; where the meaning deliberately differs, the
docstring says how and why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np

from gdopt._numerics import weak_float
from gdopt._validation import Interval, check_int, check_scalar
from gdopt.base import (
    Decay,
    GradientTransformation,
    LearningRate,
    NonNegative,
    Schedule,
)
from gdopt.combinators import chain
from gdopt.hyperparams import named_optimizer
from gdopt.transforms.moments import (
    scale_by_adam,
    scale_by_adamax,
    scale_by_ademamix,
    scale_by_adopt,
    scale_by_amsgrad,
    scale_by_belief,
    scale_by_radam,
    scale_by_yogi,
)
from gdopt.transforms.regularization import add_decayed_weights
from gdopt.transforms.scaling import scale_by_learning_rate

__all__ = [
    "adam",
    "adamw",
    "nadam",
    "nadamw",
    "radam",
    "amsgrad",
    "adamax",
    "adamaxw",
    "adabelief",
    "yogi",
    "adopt",
    "ademamix",
    "ademamix_alpha_scheduler",
    "ademamix_beta3_scheduler",
]


@named_optimizer
def adam(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Adam (Kingma & Ba, 2015).

    Update rule (``t`` starts at 1)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²
        p_t = p_{t-1} - α (m_t / (1 - β1^t)) / (sqrt(v_t / (1 - β2^t) + ε_root) + ε)

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps: ``ε`` >= 0, outside the square root.
      eps_root: ``ε_root`` >= 0, inside the square root.
      mu_dtype, nu_dtype: dtypes of the moments (``jnp.bfloat16`` halves state memory).
      nesterov: NAdam's Nesterov momentum (Dozat, 2016).

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
      https://arxiv.org/abs/1412.6980.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.adam(0.05)
    >>> params = {"w": jnp.zeros(3)}
    >>> state = opt.init(params)
    >>> for _ in range(500):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     params = gdopt.apply_updates(params, updates)
    >>> bool(jnp.allclose(params["w"], 1.0, atol=1e-3))
    True
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


@named_optimizer
def adamw(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: Any = None,
    weight_decay: NonNegative = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    Update rule: Adam's direction ``d_t`` (see :func:`adam`), then::

        p_t = p_{t-1} - α (d_t + λ p_{t-1})

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov: as in :func:`adam`.
      weight_decay: ``λ`` >= 0 (multiplied by the learning rate, as in the paper's
        implementation in PyTorch and optax).
      mask: which parameters decay: a pytree of bools like the params, or a function
        ``params -> such a tree`` (e.g. skip biases and norms). ``None``: all.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
      https://arxiv.org/abs/1711.05101.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.adamw(0.1, weight_decay=0.5)
    >>> p = {"w": jnp.array(2.0)}
    >>> u, _ = opt.update({"w": jnp.array(0.0)}, opt.init(p), p)
    >>> round(float(u["w"]), 6)   # zero gradient: only the decay, -α λ p
    -0.1
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- NAdam


@named_optimizer
def nadam(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """NAdam: Adam with Nesterov momentum (Dozat, 2016).

    Update rule (``t`` starts at 1)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²
        m̄_t = β1 m_t / (1 - β1^{t+1}) + (1 - β1) g_t / (1 - β1^t)
        p_t = p_{t-1} - α m̄_t / (sqrt(v_t / (1 - β2^t) + ε_root) + ε)

    The look-ahead mean ``m̄`` applies this step's momentum once more, as Nesterov's method
    does. It is :func:`gdopt.adam` with ``nesterov=True`` (``nesterov=False`` gives Adam).

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps: ``ε`` >= 0, outside the square root.
      eps_root: ``ε_root`` >= 0, inside the square root.
      mu_dtype, nu_dtype: dtypes of the moments (default: the params').
      nesterov: use the look-ahead mean.

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop,
      https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.nadam(0.05)
    >>> params = {"w": jnp.zeros(3)}
    >>> state = opt.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     return gdopt.apply_updates(params, updates), state
    >>> for _ in range(500):
    ...     params, state = step(params, state)
    >>> bool(jnp.allclose(params["w"], 1.0, atol=1e-3))
    True
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


@named_optimizer
def nadamw(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: Any = None,
    weight_decay: NonNegative = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """NAdamW: NAdam with decoupled weight decay (Dozat 2016; Loshchilov & Hutter 2019).

    Update rule: NAdam's direction ``d_t`` (see :func:`nadam`), then::

        p_t = p_{t-1} - α (d_t + λ p_{t-1})

    It is :func:`gdopt.adamw` with ``nesterov=True``.

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov: as in :func:`nadam`.
      weight_decay: ``λ`` >= 0 (number, array or schedule), multiplied by the learning rate.
      mask: which parameters decay (a pytree of bools or a function of the params).

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", 2016. Loshchilov & Hutter,
      "Decoupled Weight Decay Regularization", ICLR 2019, https://arxiv.org/abs/1711.05101.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.nadamw(0.1, weight_decay=0.5)
    >>> p = {"w": jnp.array(2.0)}
    >>> u, _ = opt.update({"w": jnp.array(0.0)}, opt.init(p), p)
    >>> round(float(u["w"]), 6)   # zero gradient: only the decay, -α λ p
    -0.1
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- RAdam


@named_optimizer
def radam(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    threshold: Annotated[float | jax.Array, Interval(4.0)] = 5.0,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """RAdam: Adam whose adaptive step is switched on once its variance is tractable (Liu et al., 2020).

    Update rule (``t`` starts at 1; see :func:`gdopt.scale_by_radam`)::

        ρ_∞ = 2 / (1 - β2) - 1,   ρ_t = ρ_∞ - 2 t β2^t / (1 - β2^t)
        p_t = p_{t-1} - α r_t m̂_t / (sqrt(v̂_t + ε_root) + ε)   if ρ_t >= threshold
        p_t = p_{t-1} - α m̂_t                                   otherwise
        r_t = sqrt((ρ_t - 4)(ρ_t - 2) ρ_∞ / ((ρ_∞ - 4)(ρ_∞ - 2) ρ_t))

    The rectification acts as an automatic warm-up: no learning-rate warm-up schedule needed.

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps: ``ε`` >= 0, outside the square root.
      eps_root: ``ε_root`` >= 0, inside the square root.
      threshold: rectify once ``ρ_t >= threshold`` (>= 4; the reference code's 5).
      nesterov: Nesterov's look-ahead mean.

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020,
      https://arxiv.org/abs/1908.03265.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.radam(0.05)
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
        scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- AMSGrad


@named_optimizer
def amsgrad(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """AMSGrad: Adam with a running maximum of the second moment (Reddi et al., 2018).

    Update rule (``t`` starts at 1; see :func:`gdopt.scale_by_amsgrad`)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²
        v̂_t = max(v̂_{t-1}, v_t / (1 - β2^t))
        p_t = p_{t-1} - α (m_t / (1 - β1^t)) / (sqrt(v̂_t + ε_root) + ε)

    The maximum is taken of the debiased ``v_t`` (as optax does), so ``v̂_t`` never decreases
    and neither does the effective step size ``α / sqrt(v̂_t)`` increase. Deliberate
    difference from PyTorch: ``torch.optim.Adam(amsgrad=True)`` takes the maximum of the raw
    ``v_t`` and divides it by the current ``1 - β2^t`` afterwards; its ``v̂_t`` then falls
    (its steps grow) while ``1 - β2^t`` grows, once the gradients shrink, against the
    non-increasing step size that is the point of the method (see
    :func:`gdopt.scale_by_amsgrad`).

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps, eps_root: ``ε`` outside and ``ε_root`` inside the square root (>= 0).
      mu_dtype, nu_dtype: dtypes of the moments (default: the params').
      bias_correction_mu, bias_correction_nu: debias ``m`` / ``v`` (both off: the paper's
        exact rule).

    References:
      Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018,
      https://arxiv.org/abs/1904.09237.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.amsgrad(0.05)
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
        scale_by_amsgrad(
            b1,
            b2,
            eps,
            eps_root,
            mu_dtype,
            bias_correction_mu,
            bias_correction_nu,
            nu_dtype=nu_dtype,
        ),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- AdaMax


@named_optimizer
def adamax(
    learning_rate: LearningRate, b1: Decay = 0.9, b2: Decay = 0.999, eps: NonNegative = 1e-8
) -> GradientTransformation:
    """AdaMax: Adam with the infinity norm (Kingma & Ba, 2015, Section 7.1).

    Update rule (``t`` starts at 1; see :func:`gdopt.scale_by_adamax`)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        u_t = max(β2 u_{t-1}, |g_t| + ε)
        p_t = p_{t-1} - α (m_t / (1 - β1^t)) / u_t

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps: ``ε`` >= 0, the floor added to ``|g|``.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Algorithm 2,
      https://arxiv.org/abs/1412.6980.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.adamax(0.1)
    >>> p = {"w": jnp.array([0.0, 0.0])}
    >>> u, _ = opt.update({"w": jnp.array([5.0, -0.2])}, opt.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]   # first step: -α sign(g)
    [-0.1, 0.1]
    """
    return chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))


@named_optimizer
def adamaxw(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-8,
    weight_decay: NonNegative = 1e-4,
    mask: Any = None,
) -> GradientTransformation:
    """AdaMaxW: AdaMax with decoupled weight decay (Kingma & Ba 2015; Loshchilov & Hutter 2019).

    Update rule: AdaMax's direction ``d_t`` (see :func:`adamax`), then::

        p_t = p_{t-1} - α (d_t + λ p_{t-1})

    Args:
      learning_rate, b1, b2, eps: as in :func:`adamax`.
      weight_decay: ``λ`` >= 0 (number, array or schedule), multiplied by the learning rate.
      mask: which parameters decay (a pytree of bools or a function of the params).

    References:
      Kingma & Ba, ICLR 2015, https://arxiv.org/abs/1412.6980. Loshchilov & Hutter,
      "Decoupled Weight Decay Regularization", ICLR 2019, https://arxiv.org/abs/1711.05101.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.adamaxw(0.1, weight_decay=0.5)
    >>> p = {"w": jnp.array(2.0)}
    >>> u, _ = opt.update({"w": jnp.array(0.0)}, opt.init(p), p)
    >>> round(float(u["w"]), 6)   # zero gradient: only the decay, -α λ p
    -0.1
    """
    return chain(
        scale_by_adamax(b1, b2, eps),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- AdaBelief


@named_optimizer
def adabelief(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-16,
    eps_root: NonNegative = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief: Adam that divides by the gradient's deviation from its mean (Zhuang et al., 2020).

    Update rule (``t`` starts at 1; see :func:`gdopt.scale_by_belief`)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        s_t = β2 s_{t-1} + (1 - β2) (g_t - m_t)² + ε_root
        p_t = p_{t-1} - α (m_t / (1 - β1^t)) / (sqrt(s_t / (1 - β2^t)) + ε)

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps: ``ε`` >= 0, outside the square root.
      eps_root: ``ε_root`` >= 0, added to ``s`` every step.
      nesterov: Nesterov's look-ahead mean.

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients", NeurIPS 2020, https://arxiv.org/abs/2010.07468.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.adabelief(0.05)
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
        scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- Yogi


@named_optimizer
def yogi(
    learning_rate: LearningRate, b1: Decay = 0.9, b2: Decay = 0.999, eps: NonNegative = 1e-3
) -> GradientTransformation:
    """Yogi: Adam with an additive, sign-controlled second moment (Zaheer et al., 2018).

    Update rule (``t`` starts at 1, ``m_0 = v_0 = 1e-6``; see :func:`gdopt.scale_by_yogi`)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = v_{t-1} - (1 - β2) sign(v_{t-1} - g_t²) g_t²
        p_t = p_{t-1} - α (m_t / (1 - β1^t)) / (sqrt(v_t / (1 - β2^t)) + ε)

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps: ``ε`` >= 0 (the paper recommends 1e-3).

    References:
      Zaheer, Reddi, Sachan, Kale & Kumar, "Adaptive Methods for Nonconvex Optimization",
      NeurIPS 2018, https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.yogi(0.05)
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
    return chain(scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------- ADOPT


@named_optimizer
def adopt(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.9999,
    eps: NonNegative = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = lambda step: weak_float(step) ** 0.25,
) -> GradientTransformation:
    """ADOPT (Taniguchi et al., 2024): Adam that converges for any ``β2``.

    Update rule (see :func:`gdopt.scale_by_adopt`; the first call only initialises
    ``v_0 = g_0²`` and does not move the parameters)::

        m_t = β1 m_{t-1} + (1 - β1) clip(g_t / max(sqrt(v_{t-1}), ε), t^{1/4})
        p_t = p_{t-1} - α m_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps: ``ε`` >= 0.
      mu_dtype: dtype of ``m``.
      nesterov: Nesterov-style look-ahead.
      use_clipping, clip_value_fn: the clipping of the normalised gradient (default
        ``t -> t^{1/4}``).

    References:
      Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki, Iwasawa & Matsuo,
      "ADOPT: Modified Adam Can Converge with Any β2 with the Optimal Rate", NeurIPS 2024,
      https://arxiv.org/abs/2411.02853.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> opt = gdopt.adopt(0.05)
    >>> p = jnp.zeros(2)
    >>> s = opt.init(p)
    >>> @jax.jit
    ... def step(p, s):
    ...     u, s = opt.update(jax.grad(loss)(p), s, p)
    ...     return gdopt.apply_updates(p, u), s
    >>> for _ in range(400):
    ...     p, s = step(p, s)
    >>> [round(x, 2) for x in p.tolist()]
    [1.0, 1.0]
    """
    return chain(
        scale_by_adopt(
            b1,
            b2,
            eps,
            mu_dtype,
            nesterov=nesterov,
            use_clipping=use_clipping,
            clip_value_fn=clip_value_fn,
        ),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- AdEMAMix


def ademamix_alpha_scheduler(alpha: float, warmup: int) -> Schedule:
    """AdEMAMix's warm-up of ``α``, linear from 0: ``α_t = min(t α / T_α, α)``.

    The paper's ``f_α`` (Pagliardini et al., 2024, Appendix, "alpha warm-up"): ``α`` grows
    linearly from 0 at ``t = 0`` to ``alpha`` at ``t = T_α`` and stays there.

    Args:
      alpha: the final ``α`` >= 0.
      warmup: ``T_α`` >= 1 steps.

    Returns:
      A schedule ``count -> α`` (float32; ``count`` from 0, as every gdopt schedule).

    References:
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
      ICLR 2025, https://arxiv.org/abs/2409.03113.

    >>> [float(ademamix_alpha_scheduler(8.0, 4)(t)) for t in (0, 2, 10)]
    [0.0, 4.0, 8.0]
    """
    check_scalar("alpha", alpha, low=0.0)
    warmup = check_int("warmup", warmup, 1)

    def schedule(count):
        return jnp.minimum(jnp.asarray(count, jnp.float32) * alpha / warmup, alpha)

    return schedule


def ademamix_beta3_scheduler(beta_start: float, beta_end: float, warmup: int) -> Schedule:
    """AdEMAMix's warm-up of ``β3``, linear in ``1 / ln(β)`` (so in the EMA's half-life).

    The paper's ``f_β3`` (Pagliardini et al., 2024, Appendix, "beta3 warm-up"), with
    ``f = t / T``::

        β3(t) = min(exp(ln β_s ln β_e / ((1 - f) ln β_e + f ln β_s)), β_e)

    goes from ``β_start`` (normally ``β1``) at ``t = 0`` to ``β_end`` at ``t = T`` and stays
    there (``f`` is clamped to 1, which the ``min`` would do too). The half-life of the slow
    EMA, ``ln(1/2) / ln β3``, grows linearly meanwhile, which a linear interpolation of
    ``β3`` itself would not do (it would spend most of the warm-up at short memories).

    Args:
      beta_start, beta_end: decays in (0, 1).
      warmup: ``T`` >= 1 steps.

    Returns:
      A schedule ``count -> β3`` (float32; ``count`` from 0).

    References:
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
      ICLR 2025, https://arxiv.org/abs/2409.03113.

    >>> sched = ademamix_beta3_scheduler(0.9, 0.9999, 100)
    >>> [round(float(sched(t)), 4) for t in (0, 100, 500)]
    [0.9, 0.9999, 0.9999]
    """
    check_scalar("beta_start", beta_start, low=0.0, high=1.0, low_open=True, high_open=True)
    check_scalar("beta_end", beta_end, low=0.0, high=1.0, low_open=True, high_open=True)
    warmup = check_int("warmup", warmup, 1)
    log_start, log_end = float(np.log(beta_start)), float(np.log(beta_end))

    def schedule(count):
        f = jnp.minimum(jnp.asarray(count, jnp.float32) / warmup, 1.0)
        exponent = log_start * log_end / ((1 - f) * log_end + f * log_start)
        return jnp.minimum(jnp.exp(exponent), beta_end)

    return schedule


@named_optimizer
def ademamix(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    b3: Decay = 0.9999,
    alpha: NonNegative = 5.0,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: Any = None,
    weight_decay: NonNegative = 0.0,
    mask: Any = None,
) -> GradientTransformation:
    """AdEMAMix (Pagliardini et al., 2024): AdamW plus a slow momentum that remembers
    gradients for ~10⁴ steps.

    Update rule (see :func:`gdopt.scale_by_ademamix`)::

        m1_t = β1 m1_{t-1} + (1 - β1) g_t,   m2_t = β3 m2_{t-1} + (1 - β3) g_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²
        p_t = p_{t-1} - α_lr ((m1_t / (1 - β1^t) + α m2_t) / (sqrt(v_t / (1 - β2^t)) + ε)
                              + λ p_{t-1})

    ``b3`` and ``alpha`` accept schedules; the paper warms both up with
    :func:`ademamix_beta3_scheduler` and :func:`ademamix_alpha_scheduler`.

    Args:
      learning_rate: ``α_lr`` > 0.
      b1, b2: ``β1, β2`` in [0, 1).
      b3: ``β3`` in [0, 1), the slow decay (number, array or schedule).
      alpha: ``α`` >= 0, the slow EMA's weight (number, array or schedule).
      eps, eps_root: ``ε`` outside / inside the square root.
      mu_dtype: dtype of the two EMAs.
      weight_decay: ``λ`` >= 0; ``mask`` selects which parameters decay.

    References:
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
      ICLR 2025, https://arxiv.org/abs/2409.03113.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> opt = gdopt.ademamix(0.05, b3=0.99, alpha=gdopt.ademamix_alpha_scheduler(2.0, 100))
    >>> p = jnp.zeros(2)
    >>> s = opt.init(p)
    >>> @jax.jit
    ... def step(p, s):
    ...     u, s = opt.update(jax.grad(loss)(p), s, p)
    ...     return gdopt.apply_updates(p, u), s
    >>> for _ in range(500):
    ...     p, s = step(p, s)
    >>> [round(x, 2) for x in p.tolist()]
    [1.0, 1.0]
    """
    return chain(
        scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
