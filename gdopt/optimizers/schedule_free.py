"""Schedule-free SGD and AdamW (Defazio et al., 2024): no learning-rate decay schedule.

Each optimizer here is :func:`gdopt.schedule_free` around a base optimizer without
momentum, made a named optimizer by :func:`gdopt.named_optimizer`: its hyperparameters live
in its state, and its state has the layout of optax.contrib's function of the same name
(argument names and defaults are optax.contrib's too). Gradients are taken at ``y``, the
parameters you hold; evaluate the model at ``x``, :func:`gdopt.schedule_free_eval_params`.

Warm-up: ``warmup_steps = W`` scales the rate of step ``t`` (``t = 1, 2, ...``) by
``min(t / W, 1)``, and step ``t`` uses that rate both for the z-step and for the averaging
weight, as in the paper and the authors' ``schedulefree`` package (optax.contrib takes the
z-step with the previous step's rate, ``min((t - 1) / W, 1)``, so its first step does not
move ``z``).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gdopt import _numerics as num
from gdopt.base import (
    Decay,
    GradientTransformation,
    LearningRate,
    NonNegative,
    OpenUnit,
    OptionalNonNegative,
    OptionalSteps,
    ScalarOrSchedule,
    identity,
)
from gdopt.combinators import chain
from gdopt.hyperparams import named_optimizer
from gdopt.transforms.moments import scale_by_rms
from gdopt.transforms.regularization import add_decayed_weights
from gdopt.transforms.scaling import scale_by_learning_rate
from gdopt.wrappers import schedule_free

__all__ = ["schedule_free_sgd", "schedule_free_adamw"]

# The schedule-free interpolation β in (0, 1); a warm-up length >= 1 or None (static).


def _warmup(peak: Any, warmup_steps: int | None) -> ScalarOrSchedule:
    """The rate of the 1-based step ``t``: ``peak · min(t / warmup_steps, 1)``."""
    if warmup_steps is None:
        return peak
    # peak may be a float32 array (a hyperparameter): the promotion is explicit (num.mul)
    return lambda t: num.mul(peak, jnp.clip(jnp.asarray(t, jnp.float32) / warmup_steps, 0, 1))


def _from_zero(rate: ScalarOrSchedule) -> ScalarOrSchedule:
    """``rate`` of the 1-based step, for a transform whose own counter starts at 0."""
    if callable(rate):
        return lambda count: rate(count + 1)
    return rate


@named_optimizer
def schedule_free_sgd(
    learning_rate: LearningRate = 1.0,
    warmup_steps: OptionalSteps = None,
    b1: OpenUnit = 0.9,
    weight_decay: OptionalNonNegative = None,
    weight_lr_power: NonNegative = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Schedule-free SGD (Defazio et al., 2024): no learning-rate decay schedule needed.

    Gradients are taken at ``y``, the parameters you hold; evaluate the model at ``x``
    (:func:`gdopt.schedule_free_eval_params`). Update rule (``t = 1, 2, ...``,
    ``α_t = α min(t / W, 1)`` with ``W = warmup_steps``, ``α_t = α`` without warm-up,
    ``c_{t+1} = w_t / Σ_{i<=t} w_i``, ``w_t = (max_{i<=t} α_i)^{weight_lr_power}``)::

        z_{t+1} = z_t - α_t (∇f(y_t) + λ y_t)
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}
        y_{t+1} = β x_{t+1} + (1 - β) z_{t+1}

    Args:
      learning_rate: ``α`` > 0.
      warmup_steps: linear warm-up of ``α`` over this many steps (``None``: none).
      b1: ``β`` in (0, 1).
      weight_decay: ``λ`` >= 0 applied at ``y`` (``None``: none).
      weight_lr_power: the averaging weights are ``max_lr^weight_lr_power``.
      state_dtype: dtype of ``z``.

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled",
      NeurIPS 2024, https://arxiv.org/abs/2405.15682.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> opt = gdopt.schedule_free_sgd(0.2)
    >>> p = jnp.zeros(2)
    >>> s = opt.init(p)
    >>> @jax.jit
    ... def step(p, s):
    ...     u, s = opt.update(jax.grad(loss)(p), s, p)
    ...     return gdopt.apply_updates(p, u), s
    >>> for _ in range(100):
    ...     p, s = step(p, s)
    >>> [round(x, 3) for x in gdopt.schedule_free_eval_params(s, p).tolist()]
    [1.0, 1.0]
    """
    lr = _warmup(learning_rate, warmup_steps)
    base = chain(identity(), scale_by_learning_rate(_from_zero(lr)))  # optax's sgd(lr)
    if weight_decay is not None:
        base = chain(add_decayed_weights(weight_decay), base)
    return schedule_free(base, lr, b1, weight_lr_power, state_dtype)


@named_optimizer
def schedule_free_adamw(
    learning_rate: LearningRate = 0.0025,
    warmup_steps: OptionalSteps = None,
    b1: OpenUnit = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-8,
    weight_decay: NonNegative = 0.0,
    weight_lr_power: NonNegative = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Schedule-free AdamW (Defazio et al., 2024).

    Schedule-free averaging (see :func:`schedule_free_sgd`, same ``α_t`` and warm-up) around
    an Adam step without momentum (the averaging plays the role of ``β1``)::

        v_t = β2 v_{t-1} + (1 - β2) g_t²,   g_t = ∇f(y_t)
        z_{t+1} = z_t - α_t (g_t / (sqrt(v_t / (1 - β2^t)) + ε) + λ y_t)

    Args:
      learning_rate: ``α`` > 0.
      warmup_steps: linear warm-up of ``α`` (recommended for Adam; ``None``: none).
      b1: ``β`` in (0, 1), the interpolation.
      b2: ``β2`` in [0, 1).
      eps: ``ε`` >= 0.
      weight_decay: ``λ`` >= 0, applied at ``y``.
      weight_lr_power: exponent of the averaging weights.
      state_dtype: dtype of ``z``.

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled",
      NeurIPS 2024, https://arxiv.org/abs/2405.15682.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> opt = gdopt.schedule_free_adamw(0.1, warmup_steps=10)
    >>> p = jnp.zeros(2)
    >>> s = opt.init(p)
    >>> @jax.jit
    ... def step(p, s):
    ...     u, s = opt.update(jax.grad(loss)(p), s, p)
    ...     return gdopt.apply_updates(p, u), s
    >>> for _ in range(300):
    ...     p, s = step(p, s)
    >>> [round(x, 2) for x in gdopt.schedule_free_eval_params(s, p).tolist()]
    [1.0, 1.0]
    """
    lr = _warmup(learning_rate, warmup_steps)
    base = chain(
        scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(_from_zero(lr)),
    )
    return schedule_free(base, lr, b1, weight_lr_power, state_dtype)
