"""Learned step sizes: Prodigy, D-Adaptation's AdamW and the Polyak step size.

Each of these replaces a hand-tuned learning rate by one computed from the optimisation
itself: Prodigy and D-Adaptation grow an estimate ``d`` of the distance to the solution from
the correlation of the gradients with the distance travelled, Polyak's step divides the gap
to the optimal value by the squared gradient norm. Notation: ``g`` gradient, ``m`` first
moment, ``v`` second moment, ``t`` step count starting at 1, ``α`` learning-rate multiplier,
``β1, β2`` decay rates, ``ε`` stability constant, ``λ`` weight decay.

Their reductions (``<g, x_0 - x>``, ``||s||_1``, ``||g||²``) run over *all* parameters as one
vector and every other operation is coordinate by coordinate, so all three are packable
(:mod:`gdopt.packing`). Updates come out in the dtype of the incoming updates and every
state leaf keeps its dtype; the scalars ``d`` and ``r`` are kept in the widest parameter
dtype, at least float32.
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

import jax
import jax.numpy as jnp

from gdopt import _numerics as num
from gdopt._numerics import cast_like, map_leaves, safe_increment, scalar_dtype, tree_map
from gdopt._traits import transform
from gdopt._validation import Interval, OneOf, need_params
from gdopt.base import (
    DecayPair,
    GradientTransformation,
    NonNegativeValue,
    OptionalDecayValue,
    PositiveValue,
    RealValue,
    ScalarOrSchedule,
    init_empty_state,
    resolve,
)
from gdopt.tree import tree_l2_norm, tree_vdot, tree_zeros_like

__all__ = [
    "ProdigyState",
    "scale_by_prodigy",
    "DAdaptAdamWState",
    "scale_by_dadapt_adamw",
    "scale_by_polyak",
]


Multiplier = Annotated[ScalarOrSchedule, Interval(0.0)]
"""A learning-rate multiplier >= 0 (a schedule may decay to 0)."""


def _l1_norm(tree: Any, dtype: Any) -> jax.Array:
    """``Σ |x|`` over all leaves, in ``dtype``."""
    parts = (jnp.sum(jnp.abs(x)).astype(dtype) for x in jax.tree.leaves(tree))
    return sum(parts, jnp.zeros([], dtype))


def _adam_step_factor(b1: Any, b2: Any, count: jax.Array, dtype: Any) -> jax.Array:
    """``sqrt(1 - β2^t) / (1 - β1^t)``: Adam's two bias corrections folded into the step."""
    c1 = num.bias_correction_factor(b1, count)
    c2 = num.bias_correction_factor(b2, count)
    return num.div(jnp.sqrt(c2), c1).astype(dtype)


# ----------------------------------------------------------------------------- Prodigy


class ProdigyState(NamedTuple):
    """Prodigy's moments, its ``s`` sum, the initial point and the distance estimate ``d``."""

    exp_avg: Any
    exp_avg_sq: Any
    grad_sum: Any
    params0: Any
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


@transform(packable=True)
def scale_by_prodigy(
    learning_rate: Multiplier = 1.0,
    betas: DecayPair = (0.9, 0.999),
    beta3: OptionalDecayValue = None,
    eps: NonNegativeValue = 1e-8,
    estim_lr0: PositiveValue = 1e-6,
    estim_lr_coef: PositiveValue = 1.0,
    weight_decay: NonNegativeValue = 0.0,
    safeguard_warmup: bool = False,
    *,
    flip_sign: bool = False,
) -> GradientTransformation:
    """Prodigy's step (Mishchenko & Defazio, 2023): Adam with a learned step size ``d``.

    ``d`` estimates the distance ``||x_0 - x*||`` from below and only grows. With
    ``γ_t = α_t sqrt(1 - β2^t) / (1 - β1^t)`` (``α_t`` the learning-rate multiplier,
    normally 1) and ``β3 = sqrt(β2)`` by default::

        m_t = β1 m_{t-1} + (1 - β1) d_t g_t
        v_t = β2 v_{t-1} + (1 - β2) d_t² g_t²
        s_t = β3 s_{t-1} + γ_t d_t² g_t / d_0            (safeguard_warmup: γ_t d_t² → d_t²)
        r_t = β3 r_{t-1} + γ_t d_t² <g_t, x_0 - x_t> / d_0
        d_{t+1} = max(d_t, coef · r_t / ||s_t||_1)
        step_t = γ_t d_t (m_t / (sqrt(v_t) + d_{t+1} ε) + λ x_t)

    This is the order of operations of the authors' released code (``prodigyopt.Prodigy``
    with ``use_bias_correction=True`` and decoupled weight decay) and of optax's
    ``contrib.prodigy``: the step size ``γ_t d_t`` uses the estimate before this update and
    the ``ε`` of the denominator the estimate after it. The ``(1 - β3)`` factors of the
    paper's Algorithm 4 cancel between ``r`` and ``s``, and both are divided by ``d_0``.

    While ``||s_t||_1 = 0`` (every gradient so far is zero, say) the estimate is undefined:
    as in the authors' code, such a step leaves ``d`` and the step count ``t`` as they are
    and outputs zero (the moments are updated; ``r`` is still 0).

    The output is the positive step; with ``flip_sign`` it is the update ``-step_t`` to add
    to the parameters (what :func:`gdopt.prodigy` returns, in one transformation with optax's
    state).

    Args:
      learning_rate: ``α`` >= 0, a multiplier of the learned step (number, array or schedule).
      betas: ``(β1, β2)`` in [0, 1).
      beta3: decay of ``r`` and ``s`` (default ``sqrt(β2)``).
      eps: ``ε`` >= 0 (multiplied by ``d``).
      estim_lr0: ``d_0`` > 0, the initial distance estimate.
      estim_lr_coef: ``coef`` > 0, a multiplier of the estimate.
      weight_decay: ``λ`` >= 0 (decoupled, scaled by ``γ_t d_t``).
      safeguard_warmup: drop the learning rate from ``s`` during warm-up (more stable with a
        warm-up schedule).
      flip_sign: return ``-step_t`` (the update) instead of ``step_t``.

    Returns:
      A transformation whose state is a :class:`ProdigyState`; its ``update`` needs
      ``params``.

    References:
      Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner",
      ICML 2024, https://arxiv.org/abs/2306.06101.

    >>> import jax.numpy as jnp
    >>> t = scale_by_prodigy()
    >>> p = {"w": jnp.array(1.0)}
    >>> u, s = t.update({"w": jnp.array(2.0)}, t.init(p), p)
    >>> round(float(u["w"]) / 1e-6, 4)       # the first step is d_0 sign(g), like Adam's
    1.0
    """

    def init(params):
        dtype = scalar_dtype(params)
        return ProdigyState(
            exp_avg=tree_zeros_like(params),
            exp_avg_sq=tree_zeros_like(params),
            grad_sum=tree_zeros_like(params),
            params0=jax.tree.map(jnp.array, params),
            estim_lr=jnp.asarray(estim_lr0, dtype),
            numerator_weighted=jnp.zeros([], dtype),
            count=jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, "prodigy", "its estimate uses the distance travelled, x_0 - x_t")
        b1, b2 = betas[0], betas[1]
        dtype = state.estim_lr.dtype
        b3 = jnp.sqrt(jnp.asarray(b2, dtype)) if beta3 is None else beta3
        count = safe_increment(state.count)
        lr = resolve(learning_rate, state.count)
        d = state.estim_lr
        dlr = jnp.asarray(num.mul(num.mul(d, lr), _adam_step_factor(b1, b2, count, dtype)), dtype)
        numer = tree_vdot(updates, jax.tree.map(num.sub, state.params0, params))
        sum_lr = d if safeguard_warmup else dlr

        def moments(g, ea, eas, s):
            dg = num.mul(d, g)
            ea_n = num.add(num.mul(b1, ea), num.mul(1 - b1, dg))
            eas_n = num.add(num.mul(b2, eas), num.mul(num.mul(1 - b2, dg), dg))
            s_n = num.add(num.mul(b3, s), num.div(num.mul(sum_lr, dg), estim_lr0))
            return g, cast_like(ea_n, ea), cast_like(eas_n, eas), cast_like(s_n, s)

        _, ea, eas, s = map_leaves(
            moments, 4, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum
        )
        num_w = num.add(
            num.mul(b3, state.numerator_weighted),
            num.mul(num.mul(num.div(d, estim_lr0), dlr), numer),
        )
        # ||s_t||_1 = 0 (every gradient so far is zero, say): the authors' code returns
        # before the estimate and the step, so d, the step count and the parameters stay as
        # they are (the moments are updated). r keeps its formula: with no step taken yet,
        # <g_t, x_0 - x_t> = 0 and r stays 0 (a select on it would change how XLA fuses its
        # reduction, and so the last bits of the later steps).
        l1 = _l1_norm(s, dtype)
        skip = l1 == 0
        new_d = num.maximum(d, num.div(num.mul(estim_lr_coef, num_w), jnp.where(skip, 1, l1)))
        new_d = num.where(skip, d, new_d)

        def step(g, m, v, p):
            out = num.mul(
                dlr,
                num.add(
                    num.mul(weight_decay, p), num.div(m, num.add(jnp.sqrt(v), num.mul(new_d, eps)))
                ),
            )
            out = (-out if flip_sign else out).astype(g.dtype)
            return jnp.where(skip, jnp.zeros_like(out), out)

        new_state = ProdigyState(
            exp_avg=ea,
            exp_avg_sq=eas,
            grad_sum=s,
            params0=state.params0,
            estim_lr=new_d.astype(dtype),
            numerator_weighted=num_w.astype(dtype),
            count=jnp.where(skip, state.count, count),
        )
        return tree_map(step, updates, ea, eas, params), new_state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- D-Adaptation


class DAdaptAdamWState(NamedTuple):
    """D-Adapt AdamW's moments, its ``s`` sum and the distance estimate ``d``."""

    exp_avg: Any
    exp_avg_sq: Any
    grad_sum: Any
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


@transform(packable=True)
def scale_by_dadapt_adamw(
    learning_rate: Multiplier = 1.0,
    betas: DecayPair = (0.9, 0.999),
    eps: NonNegativeValue = 1e-8,
    estim_lr0: PositiveValue = 1e-6,
    weight_decay: NonNegativeValue = 0.0,
    *,
    flip_sign: bool = False,
) -> GradientTransformation:
    """D-Adaptation's Adam step (Defazio & Mishchenko, 2023): AdamW with a learned ``d``.

    With ``γ_t = α_t d_t sqrt(1 - β2^t) / (1 - β1^t)`` and ``β = sqrt(β2)``::

        m_t = β1 m_{t-1} + (1 - β1) γ_t g_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²
        r_t = β r_{t-1} + (1 - β) γ_t <g_t, s_{t-1} / (sqrt(v_{t-1}) + ε)>
        s_t = β s_{t-1} + (1 - β) γ_t g_t
        d_{t+1} = max(d_t, r_t / ((1 - β) ||s_t||_1))
        step_t = m_t / (sqrt(v_t) + ε) + λ γ_t x_t

    This is the order of operations of the authors' ``dadaptation.DAdaptAdam`` (with
    ``use_bias_correction=True`` and ``decouple=True``) and of optax's
    ``contrib.dadapt_adamw``. While ``||s_t||_1 = 0`` (every gradient so far is zero, say) the
    estimate is undefined: as in the authors' code, such a step leaves ``d`` and the step
    count ``t`` as they are and outputs zero (the moments are updated; ``r`` is still 0).
    The output is the positive step; with ``flip_sign`` it is the update ``-step_t`` (what
    :func:`gdopt.dadapt_adamw` returns, in one transformation with optax's state).

    Args:
      learning_rate: ``α`` >= 0, a multiplier of the learned step (number, array or schedule).
      betas: ``(β1, β2)`` in [0, 1).
      eps: ``ε`` >= 0.
      estim_lr0: ``d_0`` > 0, the initial estimate.
      weight_decay: ``λ`` >= 0 (decoupled, scaled by ``γ_t``).
      flip_sign: return ``-step_t`` (the update) instead of ``step_t``.

    Returns:
      A transformation whose state is a :class:`DAdaptAdamWState`; its ``update`` needs
      ``params``.

    References:
      Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023,
      https://arxiv.org/abs/2301.07733.

    >>> import jax.numpy as jnp
    >>> t = scale_by_dadapt_adamw()
    >>> p = {"w": jnp.array(1.0)}
    >>> u, s = t.update({"w": jnp.array(2.0)}, t.init(p), p)
    >>> round(float(u["w"]) / 1e-6, 4)       # the first step is d_0 sign(g): tiny
    1.0
    """

    def init(params):
        dtype = scalar_dtype(params)
        return DAdaptAdamWState(
            exp_avg=tree_zeros_like(params),
            exp_avg_sq=tree_zeros_like(params),
            grad_sum=tree_zeros_like(params),
            estim_lr=jnp.asarray(estim_lr0, dtype),
            numerator_weighted=jnp.zeros([], dtype),
            count=jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, "dadapt_adamw", "its weight decay is proportional to them")
        b1, b2 = betas[0], betas[1]
        dtype = state.estim_lr.dtype
        sb2 = jnp.sqrt(jnp.asarray(b2, dtype))
        count = safe_increment(state.count)
        lr = resolve(learning_rate, state.count)
        dlr = jnp.asarray(
            num.mul(num.mul(state.estim_lr, lr), _adam_step_factor(b1, b2, count, dtype)), dtype
        )
        numer = tree_vdot(
            updates,
            jax.tree.map(
                lambda s, v: num.div(s, num.add(jnp.sqrt(v), eps)), state.grad_sum, state.exp_avg_sq
            ),
        )

        def moments(g, ea, eas, s):
            ea_n = num.add(num.mul(b1, ea), num.mul(num.mul(1 - b1, dlr), g))
            eas_n = num.add(num.mul(b2, eas), num.mul(num.mul(1 - b2, g), g))
            s_n = num.add(num.mul(sb2, s), num.mul(num.mul(1 - sb2, dlr), g))
            return g, cast_like(ea_n, ea), cast_like(eas_n, eas), cast_like(s_n, s)

        _, ea, eas, s = map_leaves(
            moments, 4, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum
        )
        num_w = num.add(
            num.mul(sb2, state.numerator_weighted), num.mul(num.mul(1 - sb2, dlr), numer)
        )
        # ||s_t||_1 = 0 (every gradient so far is zero, say): the authors' code returns
        # before the estimate and the step, so d, the step count and the parameters stay as
        # they are (the moments are updated). r keeps its formula: s_{t-1} = 0 keeps it 0 (a
        # select on it would change how XLA fuses its reduction).
        l1 = _l1_norm(s, dtype)
        skip = l1 == 0
        new_d = num.maximum(state.estim_lr, num.div(num_w, (1 - sb2) * jnp.where(skip, 1, l1)))
        new_d = num.where(skip, state.estim_lr, new_d)

        def step(g, m, v, p):
            out = num.add(
                num.mul(num.mul(weight_decay, dlr), p), num.div(m, num.add(jnp.sqrt(v), eps))
            )
            out = (-out if flip_sign else out).astype(g.dtype)
            return jnp.where(skip, jnp.zeros_like(out), out)

        new_state = DAdaptAdamWState(
            exp_avg=ea,
            exp_avg_sq=eas,
            grad_sum=s,
            estim_lr=new_d.astype(dtype),
            numerator_weighted=num_w.astype(dtype),
            count=jnp.where(skip, state.count, count),
        )
        return tree_map(step, updates, ea, eas, params), new_state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Polyak


@transform(packable=True)
def scale_by_polyak(
    f_min: RealValue = 0.0,
    max_learning_rate: NonNegativeValue = 1.0,
    eps: NonNegativeValue = 0.0,
    variant: Annotated[str, OneOf(("sps", "sps+"))] = "sps",
) -> GradientTransformation:
    """Polyak's step size: multiply the updates by ``min((f(x) - f*) / (||u||² + ε), α_max)``.

    With ``u = g`` this jumps to where the linearisation of ``f`` reaches ``f*`` (exact for
    ``f* = min f`` on a 1-D quadratic's tangent); ``α_max`` caps the step (the "SPS_max" rule
    of Loizou et al.). ``variant="sps+"`` uses ``max(f(x) - f*, 0)``. The step is 0 where
    ``||u||² + ε`` is below machine precision. ``||u||²`` is taken over all parameters.

    The loss value is needed: pass it as a keyword extra,
    ``opt.update(grads, state, params, value=loss)``.

    Args:
      f_min: ``f*``, a lower bound of the objective (0 for non-negative losses).
      max_learning_rate: ``α_max`` >= 0 (the named :func:`gdopt.polyak_sgd` asks for > 0).
      eps: ``ε`` >= 0 added to ``||u||²``.
      variant: ``"sps"`` or ``"sps+"``.

    Returns:
      A stateless transformation; its ``update`` needs the keyword extra ``value``.

    References:
      Polyak, "Introduction to Optimization", 1987, Sec. 5.3. Loizou, Vaswani, Laradji &
      Lacoste-Julien, "Stochastic Polyak Step-size for SGD", AISTATS 2021,
      https://arxiv.org/abs/2002.10542.

    >>> import jax.numpy as jnp
    >>> t = scale_by_polyak(max_learning_rate=10.0)
    >>> u, _ = t.update({"w": jnp.array(2.0)}, t.init(None), value=jnp.array(1.0))
    >>> float(u["w"])                  # (1 - 0) / 2² * 2
    0.5
    """

    def update(updates, state, params=None, **extra):
        del params
        value = extra.get("value")
        if value is None:
            raise ValueError(
                "scale_by_polyak (polyak_sgd) needs the loss value at the current params: call "
                "opt.update(grads, state, params, value=loss)."
            )
        sq = tree_l2_norm(updates, squared=True)
        gap = jnp.asarray(num.sub(value, f_min)).astype(sq.dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0.0)
        den = num.add(sq, eps)
        tiny = jnp.less_equal(*num.promote(den, jnp.finfo(sq.dtype).tiny))
        step = jnp.where(
            tiny, 0.0, num.minimum(num.div(gap, jnp.where(tiny, 1.0, den)), max_learning_rate)
        )
        return tree_map(lambda u: num.mul(step, u).astype(u.dtype), updates), state

    return GradientTransformation(init_empty_state, update)
