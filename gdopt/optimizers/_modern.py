"""Modern named optimizers (2023-2024): Muon, ADOPT, AdEMAMix, schedule-free SGD and AdamW,
the learning-rate-free Prodigy and D-Adapt AdamW, Sophia and Polyak SGD.

Each is a thin chain of public transforms from :mod:`gdopt.transforms` built by
:func:`gdopt.named_optimizer`, so its numeric hyperparameters live in its state (read them with
:func:`gdopt.get_hyperparams`, change them with :func:`gdopt.set_hyperparams`, vmap over them).
Argument names and defaults are those of the optax / optax.contrib function of the same name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdopt.base import (
    GradientTransformation,
    ScalarOrSchedule,
    Schedule,
    check_decay,
    check_learning_rate,
    check_nonnegative,
    check_scalar,
    identity,
)
from gdopt.combinators import chain, masked
from gdopt.optimizers._core import named_optimizer
from gdopt.transforms._core import (
    add_decayed_weights,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
)
from gdopt.transforms._modern import (
    _NS_PRESETS,
    _check_choice,
    _check_int,
    _check_ns_coeffs,
    _resolve_dims,
    scale_by_ademamix,
    scale_by_adopt,
    scale_by_dadapt_adamw,
    scale_by_muon,
    scale_by_polyak,
    scale_by_prodigy,
    scale_by_shape,
    scale_by_sophia,
    schedule_free,
)

__all__ = [
    "muon",
    "adopt",
    "ademamix",
    "ademamix_alpha_scheduler",
    "ademamix_beta3_scheduler",
    "schedule_free_sgd",
    "schedule_free_adamw",
    "prodigy",
    "dadapt_adamw",
    "sophia",
    "polyak_sgd",
]

_is_none = lambda x: x is None


# ----------------------------------------------------------------------------- Muon


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = _NS_PRESETS["standard"],
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: float | None = None,
) -> GradientTransformation:
    """Muon: MomentUm Orthogonalized by Newton-Schulz (Jordan et al., 2024).

    Weight matrices follow the orthogonalised momentum (:func:`gdopt.scale_by_muon`), scaled
    for their shape (:func:`gdopt.scale_by_shape`); every other leaf (biases, gains, scalars,
    and any leaf whose dimension number is ``None``) is trained by Adam(W) with ``adam_*``
    arguments. Update rule for a matrix ``W`` (``NS`` the quintic Newton-Schulz iteration)::

        m_t = β m_{t-1} + (1 - β) g_t;  m̂_t the debiased (Nesterov) momentum
        W_t = W_{t-1} - α (s NS(m̂_t) + λ W_{t-1}),   s = sqrt(max(1, fan_out / fan_in))
                                                    (s = consistent_rms sqrt(max(fan_in, fan_out)))

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      ns_coeffs: the Newton-Schulz quintic ``(a, b, c)``, one triple per step, or a preset
        name (``"standard"``, ``"dion"``).
      ns_steps: Newton-Schulz iterations (for a single triple).
      beta: momentum ``β`` in [0, 1).
      eps: ``ε``, used by the normalisation and by the Adam fallback.
      weight_decay: ``λ`` >= 0 for the Muon matrices (multiplied by ``α``).
      weight_decay_mask: which Muon matrices decay (pytree of bools or function).
      mu_dtype: dtype of the momentum buffers.
      nesterov: Nesterov momentum (Muon and the Adam fallback).
      adaptive: scale by the dual norm ``<m̂, NS(m̂)>``.
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      adam_b1, adam_b2, adam_eps_root, adam_weight_decay: the Adam fallback's
        hyperparameters.
      adam_learning_rate: the fallback's learning rate (default: ``learning_rate``).
      muon_weight_dimension_numbers: which leaves are Muon matrices and how to view them:
        ``None`` (every 2-D leaf, as ``(fan_in, fan_out)``), a pytree (or prefix) of
        :class:`gdopt.MuonDimensionNumbers` / ``None`` (``None``: Adam), or a function
        ``params -> such a pytree``. (The function is also called on the Muon branch's
        sub-tree, in which non-Muon leaves are ``None``.)
      consistent_rms: target update RMS for the shape scaling (0.2 matches AdamW), or
        ``None`` for ``sqrt(max(1, fan_out / fan_in))``.

    References:
      Jordan, Jin, Boza, You, Cesista, Newhouse & Bernstein, "Muon: An optimizer for hidden
      layers in neural networks", 2024, https://kellerjordan.github.io/posts/muon/.
      Liu et al., "Muon is Scalable for LLM Training", 2025, https://arxiv.org/abs/2502.16982.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> target = jnp.arange(12.0).reshape(4, 3) / 10
    >>> loss = lambda p: jnp.sum((p["w"] - target) ** 2) + jnp.sum((p["b"] - 1.0) ** 2)
    >>> opt = gdopt.muon(gdopt.cosine_decay_schedule(0.1, 300))
    >>> params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}    # w: Muon, b: Adam
    >>> state = opt.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     return gdopt.apply_updates(params, updates), state
    >>> for _ in range(300):
    ...     params, state = step(params, state)
    >>> round(float(loss(params)), 3)
    0.0
    """
    check_learning_rate(learning_rate)
    if adam_learning_rate is not None:
        check_learning_rate(adam_learning_rate, "adam_learning_rate")
    _check_ns_coeffs(ns_coeffs)
    _check_int("ns_steps", ns_steps, 1)
    check_decay("beta", beta)
    check_nonnegative("eps", eps)
    check_nonnegative("weight_decay", weight_decay)
    _check_choice("preconditioning", preconditioning, ("frobenius", "spectral", "aol", "schatten"))
    check_decay("adam_b1", adam_b1)
    check_decay("adam_b2", adam_b2)
    check_nonnegative("adam_eps_root", adam_eps_root)
    check_nonnegative("adam_weight_decay", adam_weight_decay)
    if consistent_rms is not None:
        check_nonnegative("consistent_rms", consistent_rms)
    coeffs = np.asarray(
        _NS_PRESETS[ns_coeffs] if isinstance(ns_coeffs, str) else ns_coeffs, np.float32
    )
    spec = muon_weight_dimension_numbers

    def dims(tree):
        if spec is None:
            leaves, _ = jax.tree.flatten(tree, is_leaf=_is_none)
            out = _resolve_dims(None, tree, "muon_weight_dimension_numbers")
            return [d if x is not None and jnp.ndim(x) == 2 else None for x, d in zip(leaves, out)]
        return _resolve_dims(spec, tree, "muon_weight_dimension_numbers")

    def dims_tree(tree):
        _, treedef = jax.tree.flatten(tree, is_leaf=_is_none)
        return treedef.unflatten(dims(tree))

    def is_muon(tree):
        _, treedef = jax.tree.flatten(tree, is_leaf=_is_none)
        return treedef.unflatten([d is not None for d in dims(tree)])

    def is_adam(tree):
        _, treedef = jax.tree.flatten(tree, is_leaf=_is_none)
        return treedef.unflatten([d is None for d in dims(tree)])

    def build(
        learning_rate,
        ns_coeffs,
        beta,
        eps,
        weight_decay,
        adam_b1,
        adam_b2,
        adam_eps_root,
        adam_weight_decay,
        adam_learning_rate,
        consistent_rms,
    ):
        muon_branch = chain(
            scale_by_muon(
                ns_coeffs,
                ns_steps,
                beta,
                eps,
                mu_dtype,
                nesterov=nesterov,
                adaptive=adaptive,
                preconditioning=preconditioning,
                weight_dimension_numbers=dims_tree,
            ),
            scale_by_shape(dims_tree, consistent_rms),
            add_decayed_weights(weight_decay, weight_decay_mask),
            scale_by_learning_rate(learning_rate),
        )
        adam_branch = chain(
            scale_by_adam(adam_b1, adam_b2, eps, adam_eps_root, mu_dtype, nesterov=nesterov),
            add_decayed_weights(adam_weight_decay),
            scale_by_learning_rate(
                learning_rate if adam_learning_rate is None else adam_learning_rate
            ),
        )
        return chain(
            masked(_unless_empty(muon_branch), is_muon), masked(_unless_empty(adam_branch), is_adam)
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        ns_coeffs=coeffs,
        beta=beta,
        eps=eps,
        weight_decay=weight_decay,
        adam_b1=adam_b1,
        adam_b2=adam_b2,
        adam_eps_root=adam_eps_root,
        adam_weight_decay=adam_weight_decay,
        adam_learning_rate=adam_learning_rate,
        consistent_rms=consistent_rms,
    )


def _unless_empty(inner: GradientTransformation) -> GradientTransformation:
    """``inner``, except that an update with no array leaves (an empty branch) is a no-op."""

    def update(updates, state, params=None, **extra):
        if not jax.tree.leaves(updates):
            return updates, state
        return inner.update(updates, state, params, **extra)

    return GradientTransformation(inner.init, update)


# ----------------------------------------------------------------------------- ADOPT


def adopt(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = lambda step: step**0.25,
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
    check_learning_rate(learning_rate)
    scale_by_adopt(b1, b2, eps, clip_value_fn=clip_value_fn)

    def build(learning_rate, b1, b2, eps):
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

    return named_optimizer(build, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)


# ----------------------------------------------------------------------------- AdEMAMix


def ademamix_alpha_scheduler(alpha: float, warmup: int) -> Schedule:
    """AdEMAMix's warm-up of ``α``: ``α_t = min(t α / T_α, α)`` (Pagliardini et al., 2024).

    Args:
      alpha: the final ``α``.
      warmup: ``T_α`` >= 1 steps.

    >>> [float(ademamix_alpha_scheduler(8.0, 4)(t)) for t in (0, 2, 10)]
    [0.0, 4.0, 8.0]
    """
    check_nonnegative("alpha", alpha)
    _check_int("warmup", warmup, 1)
    return lambda count: jnp.minimum(jnp.asarray(count, jnp.float32) * alpha / warmup, alpha)


def ademamix_beta3_scheduler(beta_start: float, beta_end: float, warmup: int) -> Schedule:
    """AdEMAMix's warm-up of ``β3``, linear in the half-life ``1 / ln(β)``.

    ``β3(t) = min(exp(ln β_s ln β_e / ((1 - t/T) ln β_e + (t/T) ln β_s)), β_e)`` goes from
    ``β_start`` (normally ``β1``) at ``t = 0`` to ``β_end`` at ``t = T``.

    Args:
      beta_start, beta_end: decays in (0, 1).
      warmup: ``T`` >= 1 steps.

    References:
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
      ICLR 2025, https://arxiv.org/abs/2409.03113, Sec. 3 (Eq. 4).

    >>> sched = ademamix_beta3_scheduler(0.9, 0.9999, 100)
    >>> [round(float(sched(t)), 4) for t in (0, 100, 500)]
    [0.9, 0.9999, 0.9999]
    """
    check_scalar("beta_start", beta_start, low=0.0, high=1.0, low_open=True, high_open=True)
    check_scalar("beta_end", beta_end, low=0.0, high=1.0, low_open=True, high_open=True)
    _check_int("warmup", warmup, 1)
    ls, le = float(np.log(beta_start)), float(np.log(beta_end))

    def schedule(count):
        f = jnp.minimum(jnp.asarray(count, jnp.float32) / warmup, 1.0)
        return jnp.minimum(jnp.exp(ls * le / ((1 - f) * le + f * ls)), beta_end)

    return schedule


def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
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
    check_learning_rate(learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root)

    def build(learning_rate, b1, b2, b3, alpha, eps, eps_root, weight_decay):
        return chain(
            scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype),
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        b3=b3,
        alpha=alpha,
        eps=eps,
        eps_root=eps_root,
        weight_decay=weight_decay,
    )


# ----------------------------------------------------------------------------- schedule-free


def _warmup(peak: Any, warmup_steps: int | None) -> Any:
    if warmup_steps is None:
        return peak
    return lambda count: peak * jnp.clip(jnp.asarray(count, jnp.float32) / warmup_steps, 0, 1)


def schedule_free_sgd(
    learning_rate: float = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: float | None = None,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Schedule-free SGD (Defazio et al., 2024): no learning-rate decay schedule needed.

    Gradients are taken at ``y``, the parameters you hold; evaluate the model at ``x``
    (:func:`gdopt.schedule_free_eval_params`). Update rule (``c_{t+1} = α_t² / Σ_i α_i²``)::

        z_{t+1} = z_t - α_t (∇f(y_t) + λ y_t)
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}
        y_{t+1} = β x_{t+1} + (1 - β) z_{t+1}

    Args:
      learning_rate: ``α`` > 0.
      warmup_steps: linear warm-up of ``α`` from 0 over this many steps (``None``: none).
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
    check_learning_rate(learning_rate)
    if warmup_steps is not None:
        _check_int("warmup_steps", warmup_steps, 1)
    if weight_decay is not None:
        check_nonnegative("weight_decay", weight_decay)
    check_scalar("b1", b1, low=0.0, high=1.0, low_open=True, high_open=True)
    check_nonnegative("weight_lr_power", weight_lr_power)

    def build(learning_rate, b1, weight_lr_power, weight_decay):
        lr = _warmup(learning_rate, warmup_steps)
        base = chain(
            add_decayed_weights(weight_decay) if weight_decay is not None else identity(),
            scale_by_learning_rate(lr),
        )
        return schedule_free(base, lr, b1, weight_lr_power, state_dtype)

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        b1=b1,
        weight_lr_power=weight_lr_power,
        weight_decay=weight_decay,
    )


def schedule_free_adamw(
    learning_rate: float = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Schedule-free AdamW (Defazio et al., 2024).

    Schedule-free averaging (see :func:`schedule_free_sgd`) around an Adam step without
    momentum (the averaging plays the role of ``β1``)::

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
    check_learning_rate(learning_rate)
    if warmup_steps is not None:
        _check_int("warmup_steps", warmup_steps, 1)
    check_scalar("b1", b1, low=0.0, high=1.0, low_open=True, high_open=True)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("weight_lr_power", weight_lr_power)

    def build(learning_rate, b1, b2, eps, weight_decay, weight_lr_power):
        lr = _warmup(learning_rate, warmup_steps)
        base = chain(
            scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
            add_decayed_weights(weight_decay),
            scale_by_learning_rate(lr),
        )
        return schedule_free(base, lr, b1, weight_lr_power, state_dtype)

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        weight_lr_power=weight_lr_power,
    )


# ----------------------------------------------------------------------------- LR-free


def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    estim_lr_coef: float = 1.0,
    weight_decay: float = 0.0,
    safeguard_warmup: bool = False,
) -> GradientTransformation:
    """Prodigy (Mishchenko & Defazio, 2023): Adam whose step size is learned.

    The step size ``d`` estimates the distance to the solution from the correlation of the
    gradients with ``x_0 - x_t`` and only grows (see :func:`gdopt.scale_by_prodigy`)::

        m_t = β1 m_{t-1} + (1 - β1) d_t g_t,   v_t = β2 v_{t-1} + (1 - β2) d_t² g_t²
        p_t = p_{t-1} - γ_t d_t (m_t / (sqrt(v_t) + d_t ε) + λ p_{t-1})

    with ``γ_t = α_t sqrt(1 - β2^t) / (1 - β1^t)``. Leave ``learning_rate`` at 1 (use it as
    a schedule's shape, e.g. cosine decay from 1).

    Args:
      learning_rate: ``α`` multiplier (number, array or schedule).
      betas: ``(β1, β2)``; ``beta3``: decay of the estimate's sums (default ``sqrt(β2)``).
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
    scale_by_prodigy(learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef, weight_decay)

    def build(learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef, weight_decay):
        return chain(
            scale_by_prodigy(
                learning_rate,
                betas,
                beta3,
                eps,
                estim_lr0,
                estim_lr_coef,
                weight_decay,
                safeguard_warmup,
            ),
            scale(-1.0),
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        betas=_betas(betas),
        beta3=beta3,
        eps=eps,
        estim_lr0=estim_lr0,
        estim_lr_coef=estim_lr_coef,
        weight_decay=weight_decay,
    )


def _is_traced(x: Any) -> bool:
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(x))


def _betas(betas: Any) -> Any:
    return np.asarray(betas, np.float32) if not _is_traced(betas) else jnp.stack(list(betas))


def dadapt_adamw(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple = (0.9, 0.999),
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """D-Adapt AdamW (Defazio & Mishchenko, 2023): AdamW with a learned step size.

    See :func:`gdopt.scale_by_dadapt_adamw`. With ``γ_t = α_t d_t sqrt(1 - β2^t) / (1 - β1^t)``::

        m_t = β1 m_{t-1} + (1 - β1) γ_t g_t,   v_t = β2 v_{t-1} + (1 - β2) g_t²
        p_t = p_{t-1} - (m_t / (sqrt(v_t) + ε) + λ γ_t p_{t-1})

    and ``d`` grows to a lower bound of ``||x_0 - x*||`` estimated from the gradients.

    Args:
      learning_rate: ``α`` multiplier (number, array or schedule); leave at 1.
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
    scale_by_dadapt_adamw(learning_rate, betas, eps, estim_lr0, weight_decay)

    def build(learning_rate, betas, eps, estim_lr0, weight_decay):
        return chain(
            scale_by_dadapt_adamw(learning_rate, betas, eps, estim_lr0, weight_decay),
            scale(-1.0),
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        betas=_betas(betas),
        eps=eps,
        estim_lr0=estim_lr0,
        weight_decay=weight_decay,
    )


# ----------------------------------------------------------------------------- Sophia


def sophia(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    weight_decay_mask: Any = None,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformation:
    """SophiaH (Liu et al., 2023): a clipped diagonal Newton step with a Hutchinson Hessian.

    Update rule (``ĥ`` a Hessian-diagonal estimate every ``k = update_interval`` steps; see
    :func:`gdopt.scale_by_sophia`)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        p_t = p_{t-1} - α (clip(m̂_t / max(γ h, ε), ρ) + λ p_{t-1})
        h <- β2 h + (1 - β2) ĥ(p)          (every k steps, after the step's direction)

    **The objective is a required keyword extra**: ``opt.update(grads, state, params,
    obj_fn=loss_fn)`` (or ``value_fn=loss_fn``), where ``loss_fn(params) -> scalar`` closes over
    the mini-batch; it is used for one Hessian-vector product every ``k`` steps. The
    estimator's PRNG key lives in the state: pass ``hessian_diagonal_fn=
    gdopt.hutchinson_estimator_diag_hessian(random_seed=key)`` to choose it (default seed 0).
    A missing ``obj_fn`` raises ``ValueError``.

    Args:
      learning_rate: ``α`` > 0.
      b1, b2: decays of ``m`` and ``h`` in [0, 1).
      eps: ``ε`` > 0.
      weight_decay: ``λ`` >= 0; ``weight_decay_mask`` selects which parameters decay.
      gamma: ``γ`` > 0.
      clip_threshold: ``ρ`` > 0 or ``None``.
      update_interval: ``k`` >= 1.
      hessian_diagonal_fn: the estimator (default: Hutchinson, seed 0).
      mu_dtype: dtype of ``m``.
      verbose, print_win_rate_every_n_steps: print the unclipped fraction periodically.

    References:
      Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for
      Language Model Pre-training", ICLR 2024, https://arxiv.org/abs/2305.14342.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> opt = gdopt.sophia(0.05, weight_decay=0.0)
    >>> p = jnp.zeros(2)
    >>> s = opt.init(p)
    >>> u, s = opt.update(jax.grad(loss)(p), s, p, obj_fn=loss)
    >>> [round(x, 4) for x in u.tolist()]   # h = 0 before the first estimate: -α sign(g)
    [0.05, 0.05]
    >>> u, s = opt.update(jax.grad(loss)(p), s, p, obj_fn=loss)
    >>> [round(x, 4) for x in u.tolist()]    # h = (1 - b2) 2 now: still clipped
    [0.05, 0.05]
    """
    check_learning_rate(learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    scale_by_sophia(
        b1,
        b2,
        eps,
        gamma,
        clip_threshold,
        update_interval,
        hessian_diagonal_fn,
        verbose=verbose,
        print_win_rate_every_n_steps=print_win_rate_every_n_steps,
    )

    def build(learning_rate, b1, b2, eps, weight_decay, gamma, clip_threshold, update_interval):
        return chain(
            scale_by_sophia(
                b1,
                b2,
                eps,
                gamma,
                clip_threshold,
                update_interval,
                hessian_diagonal_fn,
                mu_dtype,
                verbose,
                print_win_rate_every_n_steps,
            ),
            add_decayed_weights(weight_decay, weight_decay_mask),
            scale_by_learning_rate(learning_rate),
        )

    return named_optimizer(
        build,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        gamma=gamma,
        clip_threshold=clip_threshold,
        update_interval=update_interval,
    )


# ----------------------------------------------------------------------------- Polyak


def polyak_sgd(
    max_learning_rate: float = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: float = 0.0,
    eps: float = 0.0,
    variant: str = "sps",
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
    check_learning_rate(scaling, "scaling")
    scale_by_polyak(f_min, max_learning_rate, eps, variant)

    def build(max_learning_rate, scaling, f_min, eps):
        return chain(
            scale_by_learning_rate(scaling),
            scale_by_polyak(f_min, max_learning_rate, eps, variant),
        )

    return named_optimizer(
        build, max_learning_rate=max_learning_rate, scaling=scaling, f_min=f_min, eps=eps
    )
