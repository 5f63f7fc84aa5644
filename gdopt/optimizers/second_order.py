"""Second-order methods: Sophia (a clipped diagonal Newton step) and L-BFGS.

Each optimizer here is a chain of transforms made a named optimizer by
:func:`gdopt.named_optimizer`: its hyperparameters live in its state, and its state has
the layout of optax's (optax.contrib's for Sophia) function of the same name. Both need the
objective as a keyword extra of ``update``: Sophia ``obj_fn=loss_fn`` (for its
Hessian-vector products), L-BFGS's line search ``value=``, ``grad=`` and ``value_fn=`` (see
:mod:`gdopt.transforms.linesearch`).
"""

from __future__ import annotations

from typing import Annotated, Any

from gdopt._traits import check_transform
from gdopt._validation import Integer
from gdopt.base import (
    Decay,
    GradientTransformation,
    LearningRate,
    NonNegative,
    OptionalLearningRate,
    OptionalPositive,
    Period,
    Positive,
    identity,
)
from gdopt.combinators import chain
from gdopt.hyperparams import named_optimizer
from gdopt.transforms.linesearch import scale_by_lbfgs, scale_by_zoom_linesearch
from gdopt.transforms.regularization import add_decayed_weights
from gdopt.transforms.scaling import scale, scale_by_learning_rate
from gdopt.transforms.second_order import scale_by_sophia

__all__ = ["sophia", "lbfgs"]

# A threshold > 0 or None (off); a period >= 1 kept in the state (optax takes an array too);
# an optional learning rate > 0.


# ----------------------------------------------------------------------------- Sophia


@named_optimizer
def sophia(
    learning_rate: LearningRate,
    b1: Decay = 0.965,
    b2: Decay = 0.99,
    eps: Positive = 1e-8,
    weight_decay: NonNegative = 1e-4,
    weight_decay_mask: Any = None,
    gamma: Positive = 0.01,
    clip_threshold: OptionalPositive = 1.0,
    update_interval: Period = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: Annotated[int, Integer(0)] = 0,
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


# ----------------------------------------------------------------------------- L-BFGS

_DEFAULT_LINESEARCH = scale_by_zoom_linesearch(
    max_linesearch_steps=20, initial_guess_strategy="one"
)


@named_optimizer
def lbfgs(
    learning_rate: OptionalLearningRate = None,
    memory_size: Annotated[int, Integer(1)] = 10,
    scale_init_precond: bool = True,
    linesearch: GradientTransformation | None = _DEFAULT_LINESEARCH,
) -> GradientTransformation:
    """L-BFGS (Liu & Nocedal, 1989) with a strong-Wolfe line search.

    Update rule: ``d_k = -H_k g_k`` from :func:`gdopt.scale_by_lbfgs` (two-loop recursion
    over the last ``memory_size`` pairs), scaled by ``learning_rate`` if given, then a step
    size from ``linesearch`` (by default :func:`gdopt.scale_by_zoom_linesearch` with 20
    evaluations, starting at 1)::

        x_{k+1} = x_k + η_k d_k,   η_k satisfies the strong Wolfe conditions

    **Keyword extras**: the default line search needs ``value``, ``grad`` and ``value_fn``;
    :func:`gdopt.value_and_grad_from_state` avoids recomputing them::

        vg = gdopt.value_and_grad_from_state(loss_fn)
        value, grad = vg(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad,
                                    value_fn=loss_fn)

    Args:
      learning_rate: a fixed scale of the direction (``None``: 1, let the line search choose).
      memory_size: number of curvature pairs (>= 1).
      scale_init_precond: scale ``H_0`` by ``<s, y> / <y, y>``.
      linesearch: the line search transform, or ``None`` for none (then give
        ``learning_rate``).

    References:
      Liu & Nocedal, "On the limited memory BFGS method for large scale optimization",
      Math. Programming 45, 1989. Nocedal & Wright, "Numerical Optimization", 2nd ed.,
      Springer 2006, Alg. 7.4-7.5.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> rosenbrock = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    >>> opt = gdopt.lbfgs()
    >>> x = jnp.array([-1.2, 1.0])
    >>> state = opt.init(x)
    >>> vg = gdopt.value_and_grad_from_state(rosenbrock)
    >>> @jax.jit
    ... def step(x, state):
    ...     v, g = vg(x, state=state)
    ...     u, state = opt.update(g, state, x, value=v, grad=g, value_fn=rosenbrock)
    ...     return gdopt.apply_updates(x, u), state
    >>> for _ in range(50):
    ...     x, state = step(x, state)
    >>> [round(v, 3) for v in x.tolist()]
    [1.0, 1.0]
    """
    if linesearch is not None:
        check_transform(linesearch, "lbfgs's linesearch")
    return chain(
        scale_by_lbfgs(memory_size, scale_init_precond),
        scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate),
        linesearch if linesearch is not None else identity(),
    )
