"""The classic, adaptive, sign-based, large-batch and memory-lean named optimizers.

noisy SGD, signSGD, Signum, NAdam(W), RAdam, AMSGrad, AdaMax(W), AdaBelief, Yogi, AdaDelta,
Rprop, NovoGrad, Fromage, SM3, LAMB, LARS, Adafactor and Lion. Each is a thin chain of public
transforms (see :mod:`gdopt.transforms`) built by :func:`gdopt.named_optimizer`, so its
numeric hyperparameters live in its state (read them with :func:`gdopt.get_hyperparams`,
change them with :func:`gdopt.set_hyperparams`, vmap over them). Argument names and defaults
are those of the optax function of the same name; where the meaning deliberately differs, the
docstring says how and why.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gdopt.base import (
    GradientTransformation,
    ScalarOrSchedule,
    check_decay,
    check_learning_rate,
    check_nonnegative,
    check_scalar,
    identity,
)
from gdopt.combinators import chain, masked
from gdopt.optimizers._core import adam, adamw, named_optimizer
from gdopt.transforms._adaptive import (
    scale_by_adadelta,
    scale_by_adamax,
    scale_by_amsgrad,
    scale_by_belief,
    scale_by_factored_rms,
    scale_by_lion,
    scale_by_novograd,
    scale_by_param_block_rms,
    scale_by_radam,
    scale_by_rprop,
    scale_by_sign,
    scale_by_sm3,
    scale_by_trust_ratio,
    scale_by_yogi,
)
from gdopt.transforms._clipping import clip_by_block_rms
from gdopt.transforms._constraints import add_noise
from gdopt.transforms._core import (
    add_decayed_weights,
    ema,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    trace,
)

__all__ = [
    "noisy_sgd",
    "sign_sgd",
    "signum",
    "nadam",
    "nadamw",
    "radam",
    "amsgrad",
    "adamax",
    "adamaxw",
    "adabelief",
    "yogi",
    "adadelta",
    "rprop",
    "novograd",
    "fromage",
    "sm3",
    "lamb",
    "lars",
    "adafactor",
    "lion",
]


# ----------------------------------------------------------------------------- SGD variants


def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: float = 0.01,
    gamma: float = 0.55,
    key: jax.Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """Gradient descent with annealed Gaussian gradient noise (Neelakantan et al., 2015).

    Update rule (``t`` starts at 1)::

        σ_t² = η / t^γ
        p_t = p_{t-1} - α (g_t + σ_t ξ_t),   ξ_t ~ N(0, I)

    The noise variance follows the paper's schedule ``η / (1 + t')^γ`` (its ``t'`` counts from
    0, so it is ``η / t^γ`` here); the paper recommends ``γ = 0.55`` and ``η`` in
    {0.01, 0.3, 1.0}. The PRNG key lives in the state, so a jitted step draws fresh noise every
    call and runs are reproducible.

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      eta: ``η`` >= 0, the noise variance at the first step.
      gamma: ``γ`` >= 0, the annealing exponent.
      key: an int seed or a PRNG key (default: seed 0).
      seed: an int seed (older optax spelling); give ``key`` or ``seed``, not both.

    References:
      Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep Networks",
      2015, https://arxiv.org/abs/1511.06807.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.noisy_sgd(0.1, eta=0.01, key=0)
    >>> params = {"w": jnp.zeros(3)}
    >>> state = opt.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     return gdopt.apply_updates(params, updates), state
    >>> for _ in range(200):
    ...     params, state = step(params, state)
    >>> bool(jnp.allclose(params["w"], 1.0, atol=0.05))
    True
    """
    check_learning_rate(learning_rate)
    add_noise(eta, gamma, key, seed=seed)  # validates eta, gamma, key and seed now

    def build(learning_rate, eta, gamma):
        return chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))

    return named_optimizer(build, learning_rate=learning_rate, eta=eta, gamma=gamma)


def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """signSGD: step along the sign of the gradient (Bernstein et al., 2018).

    Update rule::

        p_t = p_{t-1} - α sign(g_t)

    Every coordinate moves by exactly ``α`` (or not at all where ``g = 0``); only one bit per
    coordinate is needed, which is what makes it attractive for compressed communication.

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).

    References:
      Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD: Compressed Optimisation for
      Non-Convex Problems", ICML 2018, https://arxiv.org/abs/1802.04434.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.sign_sgd(0.1)
    >>> p = {"w": jnp.array([1.0, 1.0, 1.0])}
    >>> u, _ = opt.update({"w": jnp.array([3.0, -1e-3, 0.0])}, opt.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]
    [-0.1, 0.1, 0.0]
    """
    check_learning_rate(learning_rate)

    def build(learning_rate):
        return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))

    return named_optimizer(build, learning_rate=learning_rate)


def signum(
    learning_rate: ScalarOrSchedule, beta: float = 0.9, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Signum: signSGD with momentum (Bernstein et al., 2018).

    Update rule::

        m_t = β m_{t-1} + (1 - β) g_t
        p_t = p_{t-1} - α sign(m_t)

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      beta: the momentum ``β`` in [0, 1).
      accumulator_dtype: dtype of ``m`` (default: the params').

    References:
      Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD: Compressed Optimisation for
      Non-Convex Problems", ICML 2018, Algorithm 1, https://arxiv.org/abs/1802.04434.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.signum(0.1, beta=0.5)
    >>> p = {"w": jnp.array(0.0)}
    >>> s = opt.init(p)
    >>> u1, s = opt.update({"w": jnp.array(2.0)}, s, p)   # m = 1
    >>> u2, s = opt.update({"w": jnp.array(-1.0)}, s, p)  # m = 0.5 - 0.5 = 0
    >>> u3, s = opt.update({"w": jnp.array(-1.0)}, s, p)  # m = -0.5
    >>> [round(float(u["w"]), 4) for u in (u1, u2, u3)]
    [-0.1, 0.0, 0.1]
    """
    check_learning_rate(learning_rate)
    check_decay("beta", beta)

    def build(learning_rate, beta):
        return chain(
            ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
            scale_by_sign(),
            scale_by_learning_rate(learning_rate),
        )

    return named_optimizer(build, learning_rate=learning_rate, beta=beta)


# ----------------------------------------------------------------------------- Adam variants


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
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
    return adam(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype
    )


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
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
    return adamw(
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        weight_decay,
        mask,
        nesterov=nesterov,
        nu_dtype=nu_dtype,
    )


def radam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
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
    check_learning_rate(learning_rate)
    scale_by_radam(b1, b2, eps, eps_root, threshold)

    def build(learning_rate, b1, b2, eps, eps_root, threshold):
        return chain(
            scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov),
            scale_by_learning_rate(learning_rate),
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        threshold=threshold,
    )


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
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
    check_learning_rate(learning_rate)
    scale_by_amsgrad(b1, b2, eps, eps_root)

    def build(learning_rate, b1, b2, eps, eps_root):
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

    return named_optimizer(
        build, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root
    )


def adamax(
    learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
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
    check_learning_rate(learning_rate)
    scale_by_adamax(b1, b2, eps)

    def build(learning_rate, b1, b2, eps):
        return chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))

    return named_optimizer(build, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)


def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
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
    check_learning_rate(learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    scale_by_adamax(b1, b2, eps)

    def build(learning_rate, b1, b2, eps, weight_decay):
        return chain(
            scale_by_adamax(b1, b2, eps),
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )

    return named_optimizer(
        build, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay
    )


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
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
    check_learning_rate(learning_rate)
    scale_by_belief(b1, b2, eps, eps_root)

    def build(learning_rate, b1, b2, eps, eps_root):
        return chain(
            scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
            scale_by_learning_rate(learning_rate),
        )

    return named_optimizer(
        build, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root
    )


def yogi(
    learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-3
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
    check_learning_rate(learning_rate)
    scale_by_yogi(b1, b2, eps)

    def build(learning_rate, b1, b2, eps):
        return chain(scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))

    return named_optimizer(build, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)


def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
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
    if learning_rate is not None:
        check_learning_rate(learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    scale_by_adadelta(rho, eps)

    def build(learning_rate, rho, eps, weight_decay):
        return chain(
            add_decayed_weights(weight_decay, weight_decay_mask),
            scale_by_adadelta(rho, eps),
            scale_by_learning_rate(1.0 if learning_rate is None else learning_rate),
        )

    return named_optimizer(
        build, learning_rate=learning_rate, rho=rho, eps=eps, weight_decay=weight_decay
    )


# ----------------------------------------------------------------------------- Rprop


def rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
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
    if callable(learning_rate):
        raise TypeError(
            "rprop's learning_rate is the initial step size Δ_0 (a number or an array); the "
            "step sizes then adapt themselves, so a schedule is not accepted."
        )
    scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size)

    def build(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size):
        return chain(
            scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size),
            scale(-1.0),
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        eta_minus=eta_minus,
        eta_plus=eta_plus,
        min_step_size=min_step_size,
        max_step_size=max_step_size,
    )


# ----------------------------------------------------------------------------- layer-wise


def novograd(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
) -> GradientTransformation:
    """NovoGrad: layer-wise normalised gradients with momentum (Ginsburg et al., 2019).

    Update rule (one scalar ``v`` per leaf; see :func:`gdopt.scale_by_novograd`)::

        v_1 = ||g_1||²,   v_t = β2 v_{t-1} + (1 - β2) ||g_t||²
        m_t = β1 m_{t-1} + g_t / (sqrt(v_t + ε_root) + ε) + λ p_{t-1}
        p_t = p_{t-1} - α m_t

    ``update`` needs the params (weight decay).

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps, eps_root: ``ε`` outside and ``ε_root`` inside the square root (>= 0).
      weight_decay: ``λ`` >= 0 (number, array or schedule).

    References:
      Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
      Training of Deep Networks", 2019, https://arxiv.org/abs/1905.11286.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.novograd(0.01)
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
    check_learning_rate(learning_rate)
    scale_by_novograd(b1, b2, eps, eps_root, weight_decay)

    def build(learning_rate, b1, b2, eps, eps_root, weight_decay):
        return chain(
            scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
            scale_by_learning_rate(learning_rate),
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        weight_decay=weight_decay,
    )


def fromage(learning_rate: ScalarOrSchedule, min_norm: float = 1e-6) -> GradientTransformation:
    """Fromage: relative updates with a norm-preserving rescale (Bernstein et al., 2020).

    Update rule (per leaf, i.e. per layer)::

        p_t = (p_{t-1} - α (||p_{t-1}|| / ||g_t||) g_t) / sqrt(1 + α²)

    (norms floored at ``min_norm``; a zero gradient or parameter leaves the ratio at 1). The
    step moves each layer by a fixed fraction ``α`` of its norm, and the division by
    ``sqrt(1 + α²)`` undoes the growth of the norm that the orthogonal-ish step causes.

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      min_norm: ``>= 0``, floor on both norms.

    References:
      Bernstein, Vahdat, Yue & Liu, "On the distance between two neural networks and the
      stability of learning", NeurIPS 2020, https://arxiv.org/abs/2002.03432.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.fromage(0.75)
    >>> p = {"w": jnp.array([3.0, 4.0])}
    >>> u, _ = opt.update({"w": jnp.array([0.0, 1.0])}, opt.init(p), p)
    >>> [round(x, 4) for x in gdopt.apply_updates(p, u)["w"].tolist()]   # (3, 4 - 3.75) / 1.25
    [2.4, 0.2]
    """
    check_learning_rate(learning_rate)
    check_nonnegative("min_norm", min_norm)

    def build(learning_rate, min_norm):
        shrink = 1.0 / jnp.sqrt(1.0 + jnp.asarray(learning_rate) ** 2)
        return chain(
            scale_by_trust_ratio(min_norm),
            scale_by_learning_rate(learning_rate * shrink),
            # p + u = shrink · (p - α r g): the decay "λ" = shrink - 1 is <= 0 by design.
            add_decayed_weights(shrink - 1.0),
        )

    return named_optimizer(build, learning_rate=learning_rate, min_norm=min_norm)


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any = None,
) -> GradientTransformation:
    """LAMB: Adam with weight decay and a layer-wise trust ratio (You et al., 2020).

    Update rule (per leaf; ``t`` starts at 1)::

        r_t = (m_t / (1 - β1^t)) / (sqrt(v_t / (1 - β2^t) + ε_root) + ε)     (Adam's direction)
        d_t = r_t + λ p_{t-1}
        p_t = p_{t-1} - α (||p_{t-1}|| / ||d_t||) d_t

    (ratio 1 where either norm is 0). Each layer moves by ``α`` times its own norm, which is
    what lets LAMB train with very large batches.

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps, eps_root: ``ε`` outside and ``ε_root`` inside the square root (>= 0).
      weight_decay: ``λ`` >= 0 (number, array or schedule).
      mask: which parameters decay (a pytree of bools or a function of the params).

    References:
      You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
      ICLR 2020, https://arxiv.org/abs/1904.00962.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.lamb(0.1)
    >>> p = {"w": jnp.array([3.0, 4.0])}
    >>> u, _ = opt.update({"w": jnp.array([1.0, 0.0])}, opt.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]   # Adam step (1, 0) rescaled to α ||p||
    [-0.5, 0.0]
    """
    check_learning_rate(learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    scale_by_adam(b1, b2, eps, eps_root)

    def build(learning_rate, b1, b2, eps, eps_root, weight_decay):
        return chain(
            scale_by_adam(b1, b2, eps, eps_root),
            add_decayed_weights(weight_decay, mask),
            scale_by_trust_ratio(),
            scale_by_learning_rate(learning_rate),
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        weight_decay=weight_decay,
    )


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Any = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Any = True,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    """LARS: momentum SGD with a layer-wise trust ratio (You, Gitman & Ginsburg, 2017).

    Update rule (per leaf)::

        d_t = g_t + λ p_{t-1}
        d_t <- η ||p_{t-1}|| / (||d_t|| + ε) · d_t       (where trust_ratio_mask; ratio 1
                                                          where a norm is 0)
        b_t = β b_{t-1} + α d_t,   p_t = p_{t-1} - b_t   (nesterov: p_t = p_{t-1} - (α d_t + β b_t))

    The paper writes the denominator as ``||g|| + λ ||p||``; like optax, gdopt uses the norm of
    the decayed gradient ``||g + λ p||`` (the two coincide when ``λ = 0``).

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      weight_decay: ``λ`` >= 0 (number, array or schedule).
      weight_decay_mask: which parameters decay (bool, pytree of bools or function).
      trust_coefficient: ``η`` >= 0.
      eps: ``ε`` >= 0.
      trust_ratio_mask: which parameters get the trust ratio (typically not biases/norms).
      momentum: ``β`` in [0, 1).
      nesterov: Nesterov momentum.

    References:
      You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017,
      https://arxiv.org/abs/1708.03888.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.lars(1.0, trust_coefficient=0.01)
    >>> p = {"w": jnp.array([3.0, 4.0])}
    >>> u, _ = opt.update({"w": jnp.array([0.0, 2.0])}, opt.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]   # 0.01 · ||p|| along -g / ||g||
    [0.0, -0.05]
    """
    check_learning_rate(learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps)
    check_decay("momentum", momentum)

    def build(learning_rate, weight_decay, trust_coefficient, eps, momentum):
        return chain(
            add_decayed_weights(weight_decay, weight_decay_mask),
            masked(
                scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps),
                trust_ratio_mask,
            ),
            scale_by_learning_rate(learning_rate),
            trace(momentum, nesterov),
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        trust_coefficient=trust_coefficient,
        eps=eps,
        momentum=momentum,
    )


# ----------------------------------------------------------------------------- memory-lean


def sm3(learning_rate: ScalarOrSchedule, momentum: float = 0.9) -> GradientTransformation:
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
    check_learning_rate(learning_rate)
    check_decay("momentum", momentum)

    def build(learning_rate, momentum):
        return chain(scale_by_sm3(momentum), scale_by_learning_rate(learning_rate))

    return named_optimizer(build, learning_rate=learning_rate, momentum=momentum)


def _relative_step_size(count: jax.Array) -> jax.Array:
    """Adafactor's relative step size ``ρ_t = min(1e-2, 1 / sqrt(t))`` (``t = count + 1``)."""
    return jnp.minimum(1e-2, jax.lax.rsqrt(count.astype(jnp.float32) + 1.0))


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: float = 1e-30,
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
    if learning_rate is not None:
        check_learning_rate(learning_rate)
    scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    if clipping_threshold is not None:
        check_scalar("clipping_threshold", clipping_threshold, low=0.0, low_open=True)
    if momentum is not None:
        check_decay("momentum", momentum)
    if weight_decay_rate is not None:
        check_nonnegative("weight_decay_rate", weight_decay_rate)

    def build(
        learning_rate,
        decay_rate,
        decay_offset,
        clipping_threshold,
        momentum,
        weight_decay_rate,
        eps,
    ):
        step = _relative_step_size if learning_rate is None else learning_rate
        return chain(
            scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps),
            clip_by_block_rms(clipping_threshold) if clipping_threshold is not None else identity(),
            scale_by_learning_rate(step, flip_sign=False),
            scale_by_param_block_rms() if multiply_by_parameter_scale else identity(),
            ema(momentum, debias=False, accumulator_dtype=dtype_momentum)
            if momentum is not None
            else identity(),
            add_decayed_weights(weight_decay_rate, weight_decay_mask)
            if weight_decay_rate is not None
            else identity(),
            scale(-1.0),
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        decay_rate=decay_rate,
        decay_offset=decay_offset,
        clipping_threshold=clipping_threshold,
        momentum=momentum,
        weight_decay_rate=weight_decay_rate,
        eps=eps,
    )


def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Any = None,
) -> GradientTransformation:
    """Lion: the sign of an interpolated momentum, with decoupled decay (Chen et al., 2023).

    Update rule (see :func:`gdopt.scale_by_lion`)::

        c_t = β1 m_{t-1} + (1 - β1) g_t
        p_t = p_{t-1} - α (sign(c_t) + λ p_{t-1})
        m_t = β2 m_{t-1} + (1 - β2) g_t

    Every coordinate moves by ``α`` per step, so Lion wants a learning rate 3-10x smaller
    than AdamW's and a correspondingly larger ``λ``.

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      mu_dtype: dtype of ``m`` (default: the params').
      weight_decay: ``λ`` >= 0 (number, array or schedule), multiplied by the learning rate.
      mask: which parameters decay (a pytree of bools or a function of the params).

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
      https://arxiv.org/abs/2302.06675.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.lion(0.01, weight_decay=0.0)
    >>> p = {"w": jnp.array([1.0, 1.0])}
    >>> u, _ = opt.update({"w": jnp.array([0.3, -20.0])}, opt.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]
    [-0.01, 0.01]
    """
    check_learning_rate(learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    scale_by_lion(b1, b2)

    def build(learning_rate, b1, b2, weight_decay):
        return chain(
            scale_by_lion(b1, b2, mu_dtype),
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )

    return named_optimizer(
        build, learning_rate=learning_rate, b1=b1, b2=b2, weight_decay=weight_decay
    )
