"""Learning-rate-free optimizers: Prodigy and D-Adapt AdamW.

Both are Adam whose step size ``d`` is learned: it starts at a tiny ``d_0`` and grows to a
lower bound of the distance to the solution estimated from the gradients. Their
``learning_rate`` is a multiplier of that step, to be left at 1 or used as a schedule's shape
(e.g. a cosine decay from 1).

Each is one transformation (optax's layout: the state is a ``ProdigyState`` /
``DAdaptAdamWState``, not a chain) made a named optimizer by :func:`gdopt.named_optimizer`:
its hyperparameters live in its state (read them with :func:`gdopt.get_hyperparams`, change
them with :func:`gdopt.set_hyperparams`, vmap over them). Argument names and defaults are
those of ``optax.contrib``'s functions of the same name.
"""

from __future__ import annotations

from gdopt.base import (
    DecayPair,
    GradientTransformation,
    LearningRate,
    NonNegative,
    OptionalDecay,
    Positive,
)
from gdopt.hyperparams import named_optimizer
from gdopt.transforms.lr_free import scale_by_dadapt_adamw, scale_by_prodigy

__all__ = ["prodigy", "dadapt_adamw"]


@named_optimizer
def prodigy(
    learning_rate: LearningRate = 1.0,
    betas: DecayPair = (0.9, 0.999),
    beta3: OptionalDecay = None,
    eps: NonNegative = 1e-8,
    estim_lr0: Positive = 1e-6,
    estim_lr_coef: Positive = 1.0,
    weight_decay: NonNegative = 0.0,
    safeguard_warmup: bool = False,
) -> GradientTransformation:
    """Prodigy (Mishchenko & Defazio, 2023): Adam whose step size is learned.

    The step size ``d`` estimates the distance to the solution from the correlation of the
    gradients with ``x_0 - x_t`` and only grows (see :func:`gdopt.scale_by_prodigy`)::

        m_t = β1 m_{t-1} + (1 - β1) d_t g_t,   v_t = β2 v_{t-1} + (1 - β2) d_t² g_t²
        p_t = p_{t-1} - γ_t d_t (m_t / (sqrt(v_t) + d_{t+1} ε) + λ p_{t-1})

    with ``γ_t = α_t sqrt(1 - β2^t) / (1 - β1^t)`` and ``d_{t+1}`` the estimate updated at
    this step (the authors' released order). Leave ``learning_rate`` at 1 (use it as a
    schedule's shape, e.g. cosine decay from 1).

    Args:
      learning_rate: ``α`` multiplier > 0 (number, array or schedule).
      betas: ``(β1, β2)`` in [0, 1); ``beta3``: decay of the estimate's sums (default
        ``sqrt(β2)``).
      eps: ``ε`` >= 0.
      estim_lr0: ``d_0`` > 0; ``estim_lr_coef``: multiplier of the estimate.
      weight_decay: ``λ`` >= 0.
      safeguard_warmup: keep ``α`` out of the estimate (for warm-up schedules).

    References:
      Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner",
      ICML 2024, https://arxiv.org/abs/2306.06101.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> opt = gdopt.prodigy()
    >>> p = jnp.zeros(2)
    >>> s = opt.init(p)
    >>> @jax.jit
    ... def step(p, s):
    ...     u, s = opt.update(jax.grad(loss)(p), s, p)
    ...     return gdopt.apply_updates(p, u), s
    >>> for _ in range(300):
    ...     p, s = step(p, s)
    >>> [round(x, 2) for x in p.tolist()]
    [1.0, 1.0]
    """
    return scale_by_prodigy(
        learning_rate,
        betas,
        beta3,
        eps,
        estim_lr0,
        estim_lr_coef,
        weight_decay,
        safeguard_warmup,
        flip_sign=True,
    )


@named_optimizer
def dadapt_adamw(
    learning_rate: LearningRate = 1.0,
    betas: DecayPair = (0.9, 0.999),
    eps: NonNegative = 1e-8,
    estim_lr0: Positive = 1e-6,
    weight_decay: NonNegative = 0.0,
) -> GradientTransformation:
    """D-Adapt AdamW (Defazio & Mishchenko, 2023): AdamW with a learned step size.

    See :func:`gdopt.scale_by_dadapt_adamw`. With ``γ_t = α_t d_t sqrt(1 - β2^t) / (1 - β1^t)``::

        m_t = β1 m_{t-1} + (1 - β1) γ_t g_t,   v_t = β2 v_{t-1} + (1 - β2) g_t²
        p_t = p_{t-1} - (m_t / (sqrt(v_t) + ε) + λ γ_t p_{t-1})

    and ``d`` grows to a lower bound of ``||x_0 - x*||`` estimated from the gradients.

    Args:
      learning_rate: ``α`` multiplier > 0 (number, array or schedule); leave at 1.
      betas: ``(β1, β2)`` in [0, 1).
      eps: ``ε`` >= 0.
      estim_lr0: ``d_0`` > 0.
      weight_decay: ``λ`` >= 0.

    References:
      Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023,
      https://arxiv.org/abs/2301.07733.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> opt = gdopt.dadapt_adamw()
    >>> p = jnp.zeros(2)
    >>> s = opt.init(p)
    >>> @jax.jit
    ... def step(p, s):
    ...     u, s = opt.update(jax.grad(loss)(p), s, p)
    ...     return gdopt.apply_updates(p, u), s
    >>> for _ in range(300):
    ...     p, s = step(p, s)
    >>> [round(x, 2) for x in p.tolist()]
    [1.0, 1.0]
    """
    return scale_by_dadapt_adamw(learning_rate, betas, eps, estim_lr0, weight_decay, flip_sign=True)
