"""Layer-wise methods: LAMB, LARS, NovoGrad, Fromage and Muon.

Each treats every leaf of the parameters (a layer's weight matrix, a bias) as a unit: a
trust ratio of its norms (LAMB, LARS, Fromage), one second moment per layer (NovoGrad), or
its orthogonalised momentum as a matrix (Muon).

Each optimizer here is a chain of transforms made a named optimizer by
:func:`gdopt.named_optimizer`: its hyperparameters live in its state (read them with
:func:`gdopt.get_hyperparams`, change them with :func:`gdopt.set_hyperparams` without
recompiling, vmap over them), and its state has optax's layout. Argument names and defaults
are those of the optax (``optax.contrib`` for Muon) function of the same name.
"""

from __future__ import annotations

from typing import Annotated, Any

import jax
import jax.numpy as jnp

from gdopt._numerics import is_none, mul
from gdopt._validation import OneOf
from gdopt.base import (
    Decay,
    GradientTransformation,
    LearningRate,
    NonNegative,
    OptionalLearningRate,
    OptionalNonNegative,
    Steps,
)
from gdopt.combinators import chain, masked, partition
from gdopt.hyperparams import named_optimizer
from gdopt.transforms.moments import scale_by_adam, trace
from gdopt.transforms.normalization import (
    NewtonSchulzCoeffs,
    resolve_dimension_numbers,
    scale_by_muon,
    scale_by_novograd,
    scale_by_shape,
    scale_by_trust_ratio,
)
from gdopt.transforms.regularization import add_decayed_weights
from gdopt.transforms.scaling import scale_by_learning_rate

__all__ = ["lamb", "lars", "novograd", "fromage", "muon"]


# ----------------------------------------------------------------------------- trust ratios


@named_optimizer
def lamb(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-6,
    eps_root: NonNegative = 0.0,
    weight_decay: NonNegative = 0.0,
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
    return chain(
        scale_by_adam(b1, b2, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


@named_optimizer
def lars(
    learning_rate: LearningRate,
    weight_decay: NonNegative = 0.0,
    weight_decay_mask: Any = True,
    trust_coefficient: NonNegative = 0.001,
    eps: NonNegative = 0.0,
    trust_ratio_mask: Any = True,
    momentum: Decay = 0.9,
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
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),
        masked(
            scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps), trust_ratio_mask
        ),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov),
    )


@named_optimizer
def novograd(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.25,
    eps: NonNegative = 1e-6,
    eps_root: NonNegative = 0.0,
    weight_decay: NonNegative = 0.0,
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
    return chain(
        scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
        scale_by_learning_rate(learning_rate),
    )


@named_optimizer
def fromage(learning_rate: LearningRate, min_norm: NonNegative = 1e-6) -> GradientTransformation:
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
    shrink = 1.0 / jnp.sqrt(1.0 + jnp.asarray(learning_rate) ** 2)
    return chain(
        scale_by_trust_ratio(min_norm),
        scale_by_learning_rate(mul(learning_rate, shrink)),
        # p + u = shrink · (p - α r g): the coefficient shrink - 1 is <= 0 by design.
        add_decayed_weights(shrink - 1.0),
    )


# ----------------------------------------------------------------------------- Muon


def _unless_empty(inner: GradientTransformation) -> GradientTransformation:
    """``inner``, except that an update with no array leaves (a group without parameters)
    passes through unchanged.

    A group's transformations see ``None`` at the other groups' leaves; when the parameters
    are a single array outside the group, the whole tree (``params`` too) is ``None``, and a
    transformation that needs the params (weight decay) would raise.
    """

    def update(updates, state, params=None, **extra):
        if not jax.tree.leaves(updates):
            return updates, state
        return inner.update(updates, state, params, **extra)

    return GradientTransformation(inner.init, update)


@named_optimizer
def muon(
    learning_rate: LearningRate,
    ns_coeffs: NewtonSchulzCoeffs = (3.4445, -4.775, 2.0315),
    ns_steps: Steps = 5,
    beta: Decay = 0.95,
    eps: NonNegative = 1e-8,
    weight_decay: NonNegative = 0.0,
    weight_decay_mask: Any = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: Annotated[
        str, OneOf(("frobenius", "spectral", "aol", "schatten"))
    ] = "frobenius",
    adam_b1: Decay = 0.9,
    adam_b2: Decay = 0.999,
    adam_eps_root: NonNegative = 0.0,
    adam_weight_decay: NonNegative = 0.0,
    adam_learning_rate: OptionalLearningRate = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: OptionalNonNegative = None,
) -> GradientTransformation:
    """Muon: MomentUm Orthogonalized by Newton-Schulz (Jordan et al., 2024).

    Weight matrices follow the orthogonalised momentum (:func:`gdopt.scale_by_muon`), scaled
    for their shape (:func:`gdopt.scale_by_shape`); every other leaf (biases, gains, scalars,
    and any leaf whose dimension number is ``None``) is trained by Adam(W) with ``adam_*``
    arguments. Update rule for a matrix ``W`` (``NS`` the quintic Newton-Schulz iteration)::

        m_t = β m_{t-1} + (1 - β) g_t
        m̂_t = m_t / (1 - β^t)                                     (nesterov=False)
        m̂_t = β m_t / (1 - β^{t+1}) + (1 - β) g_t / (1 - β^t)     (nesterov=True)
        W_t = W_{t-1} - α (s NS(m̂_t) + λ W_{t-1}),   s = sqrt(max(1, fan_out / fan_in))
                                                    (s = consistent_rms sqrt(max(fan_in, fan_out)))

    The momentum is debiased as in ``optax.contrib.muon`` (NAdam's debiased Nesterov step).
    ``torch.optim.Muon`` (and Jordan's reference code) step along
    ``NS(β m_t + (1 - β) g_t)`` without debiasing. As ``NS`` normalises its input, the two
    agree without Nesterov and at the first step; with Nesterov they differ during the first
    ``~1 / (1 - β)`` steps, where gdopt weights ``g_t`` against ``m_t``
    ``(1 - β^{t+1}) / (1 - β^t)`` times more (see :func:`gdopt.scale_by_muon`). Mapping from
    ``torch.optim.Muon``: ``learning_rate=lr``, ``beta=momentum``, ``ns_coeffs=ns_coefficients``,
    ``weight_decay``, ``nesterov`` and ``ns_steps`` alike, ``adjust_lr_fn="match_rms_adamw"``
    is ``consistent_rms=0.2``, and the weight is transposed (torch stores
    ``(fan_out, fan_in)``). torch clamps the norm at ``eps`` where gdopt adds ``eps``, and
    iterates in bfloat16.

    The state has optax's layout: ``state.inner_states["muon"].inner_state[0]`` is the
    :class:`gdopt.MuonState` and ``state.inner_states["adam"].inner_state[0]`` Adam's state.

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
    spec = muon_weight_dimension_numbers

    def labels(params):
        leaves, treedef = jax.tree.flatten(params, is_leaf=is_none)
        if spec is None:
            is_muon = [x is not None and jnp.ndim(x) == 2 for x in leaves]
        else:
            dims = resolve_dimension_numbers(spec, params, "muon_weight_dimension_numbers")
            is_muon = [d is not None for d in dims]
        return treedef.unflatten(["muon" if f else "adam" for f in is_muon])

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
            weight_dimension_numbers=spec,
        ),
        scale_by_shape(spec, consistent_rms),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
    adam_branch = chain(
        scale_by_adam(adam_b1, adam_b2, eps, adam_eps_root, mu_dtype, nesterov=nesterov),
        add_decayed_weights(adam_weight_decay),
        scale_by_learning_rate(learning_rate if adam_learning_rate is None else adam_learning_rate),
    )
    # optax's partition wraps every group in masked(); gdopt's does not, so each branch is
    # wrapped here to keep optax's layout (state.inner_states["muon"].inner_state[0].mu).
    return partition(
        {
            "muon": masked(_unless_empty(muon_branch), True),
            "adam": masked(_unless_empty(adam_branch), True),
        },
        labels,
    )
