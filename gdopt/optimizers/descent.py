"""Gradient descent: batch, stochastic and mini-batch SGD, with or without momentum.

Batch gradient descent, stochastic gradient descent and mini-batch SGD share one update
rule; what differs is where the gradient comes from (the whole dataset, one example, a
batch), which :func:`gdopt.fit`'s ``batch_size`` decides. Noisy SGD adds annealed Gaussian
noise to the gradient; Polyak SGD computes its step size from the loss value.

Each optimizer here is a chain of transforms made a named optimizer by
:func:`gdopt.named_optimizer`: its hyperparameters live in its state (read them with
:func:`gdopt.get_hyperparams`, change them with :func:`gdopt.set_hyperparams` without
recompiling, vmap over them). Argument names and defaults are those of the optax function of
the same name.
"""

from __future__ import annotations

from typing import Annotated, Any

from gdopt._validation import OneOf
from gdopt.base import (
    Decay,
    GradientTransformation,
    LearningRate,
    NonNegative,
    OptionalDecay,
    Real,
    identity,
)
from gdopt.combinators import chain
from gdopt.hyperparams import named_optimizer
from gdopt.transforms.lr_free import scale_by_polyak
from gdopt.transforms.moments import trace
from gdopt.transforms.regularization import add_noise
from gdopt.transforms.scaling import scale_by_learning_rate

__all__ = ["sgd", "momentum", "noisy_sgd", "polyak_sgd"]


@named_optimizer
def sgd(
    learning_rate: LearningRate,
    momentum: OptionalDecay = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    """Gradient descent, optionally with (Nesterov) momentum.

    It is batch gradient descent when each gradient comes from the whole dataset, stochastic
    gradient descent when it comes from one example and mini-batch SGD otherwise: the rule is
    the same, the data pipeline decides (see :func:`gdopt.fit`'s ``batch_size``).

    Update rule::

        p_t = p_{t-1} - α g_t                           (momentum=None)
        m_t = g_t + β m_{t-1};  p_t = p_{t-1} - α m_t   (heavy ball, Polyak 1964)
        p_t = p_{t-1} - α (g_t + β m_t)                 (nesterov=True)

    Args:
      learning_rate: ``α`` > 0: a number, an array or a schedule.
      momentum: ``β`` in [0, 1), or ``None`` for plain gradient descent.
      nesterov: Nesterov momentum (Sutskever et al., 2013).
      accumulator_dtype: dtype of the momentum buffer (default: the params').

    References:
      Robbins & Monro, "A Stochastic Approximation Method", 1951. Polyak, 1964.
      Sutskever, Martens, Dahl & Hinton, ICML 2013.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 3.0) ** 2)
    >>> opt = gdopt.sgd(0.1, momentum=0.9)
    >>> params = {"w": jnp.zeros(2)}
    >>> state = opt.init(params)
    >>> for _ in range(200):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     params = gdopt.apply_updates(params, updates)
    >>> [round(x, 4) for x in params["w"].tolist()]
    [3.0, 3.0]
    """
    return chain(
        trace(momentum, nesterov, accumulator_dtype) if momentum is not None else identity(),
        scale_by_learning_rate(learning_rate),
    )


@named_optimizer
def momentum(
    learning_rate: LearningRate, momentum: Decay = 0.9, nesterov: bool = False
) -> GradientTransformation:
    """SGD with heavy-ball momentum: ``sgd(learning_rate, momentum, nesterov)``.

    Update rule::

        m_t = g_t + β m_{t-1};  p_t = p_{t-1} - α m_t            (heavy ball)
        p_t = p_{t-1} - α (g_t + β m_t)                          (nesterov=True)

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      momentum: ``β`` in [0, 1).
      nesterov: Nesterov's look-ahead form.

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods", USSR
      Computational Mathematics and Mathematical Physics 4(5), 1964. Sutskever, Martens, Dahl
      & Hinton, "On the importance of initialization and momentum in deep learning", ICML 2013.

    >>> import gdopt
    >>> round(gdopt.get_hyperparams(gdopt.momentum(0.1).init({"w": 0.0}))["momentum"].item(), 6)
    0.9
    """
    return chain(trace(momentum, nesterov), scale_by_learning_rate(learning_rate))


@named_optimizer
def noisy_sgd(
    learning_rate: LearningRate,
    eta: NonNegative = 0.01,
    gamma: NonNegative = 0.55,
    key: Any = None,
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
    return chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))


@named_optimizer
def polyak_sgd(
    max_learning_rate: LearningRate = 1.0,
    scaling: LearningRate = 1.0,
    f_min: Real = 0.0,
    eps: NonNegative = 0.0,
    variant: Annotated[str, OneOf(("sps", "sps+"))] = "sps",
) -> GradientTransformation:
    """SGD with Polyak's step size (Polyak, 1987; Loizou et al., 2021).

    Update rule (``s`` = ``scaling``)::

        u_t = -s g_t
        p_t = p_{t-1} + min((f(p_{t-1}) - f*) / (||u_t||² + ε), α_max) u_t

    **The loss value is a required keyword extra**: ``opt.update(grads, state, params,
    value=loss)``; a missing ``value`` raises ``ValueError``.

    Args:
      max_learning_rate: ``α_max`` > 0, the cap of the step.
      scaling: ``s`` > 0 (number, array or schedule).
      f_min: ``f*``, the optimal value or a lower bound (0 for non-negative losses).
      eps: ``ε`` >= 0.
      variant: ``"sps"`` or ``"sps+"`` (clip ``f - f*`` at 0).

    References:
      Polyak, "Introduction to Optimization", 1987. Loizou, Vaswani, Laradji &
      Lacoste-Julien, "Stochastic Polyak Step-size for SGD: An Adaptive Learning Rate for Fast
      Convergence", AISTATS 2021, https://arxiv.org/abs/2002.10542.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> opt = gdopt.polyak_sgd()
    >>> p = jnp.zeros(2)
    >>> s = opt.init(p)
    >>> for _ in range(30):   # here the Polyak step is 1/4: the error halves at each step
    ...     value, grad = jax.value_and_grad(loss)(p)
    ...     u, s = opt.update(grad, s, p, value=value)
    ...     p = gdopt.apply_updates(p, u)
    >>> [round(x, 4) for x in p.tolist()]
    [1.0, 1.0]
    """
    return chain(
        chain(identity(), scale_by_learning_rate(scaling)),  # optax's sgd(learning_rate=scaling)
        scale_by_polyak(f_min, max_learning_rate, eps, variant),
    )
