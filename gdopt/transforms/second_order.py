"""Curvature estimates: Hutchinson's Hessian-diagonal estimator and Sophia's direction.

Both need the objective, passed to ``update`` as the keyword extra ``obj_fn`` (or
``value_fn``): ``opt.update(grads, state, params, obj_fn=loss_fn)`` with
``loss_fn(params) -> scalar`` (close over the mini-batch). Hessian-vector products are
forward-over-reverse (``jax.jvp`` of ``jax.grad``).

Packing (:mod:`gdopt.packing`): Hutchinson's estimator draws one random sign vector per
parameter array (a key per leaf), so its numbers depend on how the parameters are split
into arrays: it is not packable. :func:`scale_by_sophia` itself acts coordinate by
coordinate; it is packable exactly when its Hessian-diagonal estimator is (the default,
Hutchinson's, is not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _control as control
from gdopt import _numerics as num
from gdopt._numerics import cast_like, map_leaves, safe_increment, tree_map
from gdopt._traits import check_transform, traits_of, transform
from gdopt._validation import Integer, Interval, check_int, need_params
from gdopt.base import (
    DecayValue,
    GradientTransformation,
    PositiveValue,
)
from gdopt.tree import tree_zeros_like

__all__ = [
    "HutchinsonState",
    "hutchinson_estimator_diag_hessian",
    "SophiaState",
    "scale_by_sophia",
]


def _objective(extra: dict, who: str) -> Callable:
    """The objective passed as ``obj_fn`` (or ``value_fn``); a clear error without one."""
    fn = extra.get("obj_fn")
    if fn is None:
        fn = extra.get("value_fn")
    if fn is None:
        raise ValueError(
            f"{who} needs the objective to estimate the Hessian: call "
            "opt.update(grads, state, params, obj_fn=loss_fn) with loss_fn(params) -> scalar "
            "(value_fn= is accepted too)."
        )
    return fn


# ----------------------------------------------------------------------------- Hutchinson


class HutchinsonState(NamedTuple):
    """The PRNG key of the Hutchinson estimator."""

    key: jax.Array


@transform(packable=False)
def hutchinson_estimator_diag_hessian(random_seed: Any = None) -> GradientTransformation:
    """Hutchinson's unbiased estimate of the Hessian's diagonal: ``u ⊙ (H u)``.

    ``u`` has independent Rademacher (±1) entries, so ``E[u ⊙ H u] = diag(H)``; ``H u`` is one
    Hessian-vector product (forward-over-reverse, ``jax.jvp`` of ``jax.grad``). The incoming
    updates are ignored; the objective comes as the keyword extra ``obj_fn`` (or
    ``value_fn``): ``update(grads, state, params, obj_fn=loss_fn)``.

    Not packable: the signs of each parameter array come from its own key.

    Args:
      random_seed: a PRNG key (``jax.random.PRNGKey(...)``) or an int seed; default 0. A new
        key is split off at every call, so runs are reproducible.

    Returns:
      A transformation whose state is a :class:`HutchinsonState`; its updates are the
      estimate of ``diag(H)`` at ``params``.

    References:
      Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
      smoothing splines", Comm. Statist. Simulation Comput. 1990. Bekas, Kokiopoulou & Saad,
      "An estimator for the diagonal of a matrix", Appl. Numer. Math. 2007.

    >>> import jax.numpy as jnp
    >>> t = hutchinson_estimator_diag_hessian()
    >>> p = jnp.array([1.0, 2.0])
    >>> loss = lambda q: jnp.sum(jnp.array([3.0, 5.0]) * q ** 2)   # diag(H) = (6, 10)
    >>> h, _ = t.update(p, t.init(p), p, obj_fn=loss)
    >>> h.tolist()
    [6.0, 10.0]
    """
    if random_seed is None:
        key = jax.random.PRNGKey(0)
    elif isinstance(random_seed, (int, np.integer)) and not isinstance(random_seed, bool):
        key = jax.random.PRNGKey(int(random_seed))
    else:
        key = jnp.asarray(random_seed)

    def init(params):
        del params
        return HutchinsonState(key=key)

    def update(updates, state, params=None, **extra):
        del updates
        who = "hutchinson_estimator_diag_hessian"
        need_params(params, who, "the Hessian is taken at them")
        obj = _objective(extra, who)
        key, sub = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(sub, max(len(leaves), 1))
        signs = treedef.unflatten(
            [
                jax.random.rademacher(k, jnp.shape(x), jnp.float32).astype(jnp.asarray(x).dtype)
                for k, x in zip(keys[: len(leaves)], leaves, strict=True)
            ]
        )
        hvp = jax.jvp(jax.grad(obj), (params,), (signs,))[1]
        return jax.tree.map(lambda h, s: h * s, hvp, signs), HutchinsonState(key=key)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Sophia


class SophiaState(NamedTuple):
    """Step counter, momentum ``m``, Hessian-diagonal EMA ``h`` and the estimator's state."""

    count: jax.Array
    mu: Any
    nu: Any
    hessian_fn_state: Any


_OptionalPositive = Annotated[
    float | jax.Array | None, Interval(0.0, low_open=True, optional=True, schedule=False)
]
# A period that a named optimizer keeps in its state (optax takes an array here too).
_Period = Annotated[int | jax.Array, Integer(1, dynamic=True)]


def _sophia_packable(arguments: dict) -> bool:
    """Sophia's own rule is coordinatewise: packable when its estimator is."""
    hess = arguments["hessian_diagonal_fn"]
    return hess is not None and traits_of(hess).packable


@transform(packable=_sophia_packable)
def scale_by_sophia(
    b1: DecayValue = 0.965,
    b2: DecayValue = 0.99,
    eps: PositiveValue = 1e-8,
    gamma: PositiveValue = 0.01,
    clip_threshold: _OptionalPositive = 1.0,
    update_interval: _Period = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: Annotated[int, Integer(0)] = 0,
) -> GradientTransformation:
    """SophiaH's direction (Liu et al., 2023): momentum over a clipped diagonal Newton step.

    Update rule (``t`` starts at 1, ``k = update_interval``, ``ĥ`` the Hessian-diagonal
    estimate of ``hessian_diagonal_fn``, Hutchinson's by default)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        u_t = clip((m_t / (1 - β1^t)) / max(γ h_{t-1}, ε), ρ)         (ρ = clip_threshold)
        h_t = β2 h_{t-1} + (1 - β2) ĥ(x_t)     when (t - 1) mod k == 0, else h_t = h_{t-1}

    The step uses the Hessian estimate refreshed *before* this step, as in the authors'
    released code (so the first ``k`` steps, with ``h = 0``, are clipped sign steps); the
    momentum is debiased as in optax. Elementwise clipping bounds every coordinate's step by
    ``ρ`` and protects against negative or tiny curvature estimates.

    The objective is needed for the Hessian-vector product: pass it as a keyword extra,
    ``opt.update(grads, state, params, obj_fn=loss_fn)`` (``value_fn=`` works too), with
    ``loss_fn(params) -> scalar`` (close over the mini-batch).

    Args:
      b1, b2: decays of ``m`` and ``h`` in [0, 1).
      eps: ``ε`` > 0, the floor of the curvature.
      gamma: ``γ`` > 0, the curvature multiplier (Sophia's ``ρ`` in the paper's notation).
      clip_threshold: ``ρ`` > 0 or ``None`` for no clipping.
      update_interval: ``k`` >= 1, steps between Hessian estimates (an integer; it may be an
        array, so a named optimizer keeps it in its state).
      hessian_diagonal_fn: a transform returning a Hessian-diagonal estimate from
        ``update(grads, state, params, obj_fn=...)``; default
        :func:`hutchinson_estimator_diag_hessian` with seed 0.
      mu_dtype: dtype of ``m`` (default: the params').
      verbose: print the fraction of unclipped coordinates ("win rate") every
        ``print_win_rate_every_n_steps`` steps (``jax.debug.print``).
      print_win_rate_every_n_steps: printing period (>= 1 when ``verbose``).

    Returns:
      A transformation whose state is a :class:`SophiaState`; packable when
      ``hessian_diagonal_fn`` is.

    References:
      Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for
      Language Model Pre-training", ICLR 2024, https://arxiv.org/abs/2305.14342.

    >>> import jax, jax.numpy as jnp
    >>> t = scale_by_sophia(update_interval=1)
    >>> loss = lambda p: jnp.sum(p ** 2)
    >>> p = jnp.array([1.0, -2.0])
    >>> u, s = t.update(jax.grad(loss)(p), t.init(p), p, obj_fn=loss)
    >>> u.tolist()                      # h = 0 at the first step: clipped sign step
    [1.0, -1.0]
    >>> [round(x, 4) for x in s.nu.tolist()]      # (1 - b2) * diag(H)
    [0.02, 0.02]
    """
    if verbose:
        check_int("print_win_rate_every_n_steps", print_win_rate_every_n_steps, 1)
    if hessian_diagonal_fn is None:
        hess = hutchinson_estimator_diag_hessian()
    else:
        check_transform(hessian_diagonal_fn, "scale_by_sophia's hessian_diagonal_fn")
        hess = hessian_diagonal_fn

    def init(params):
        return SophiaState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, mu_dtype),
            nu=tree_zeros_like(params),
            hessian_fn_state=hess.init(params),
        )

    def update(updates, state, params=None, **extra):
        need_params(params, "sophia", "the Hessian is estimated at them")
        _objective(extra, "sophia")
        count = safe_increment(state.count)
        c1 = num.bias_correction_factor(b1, count)

        def leaf(g, m, h):
            m_new = num.update_moment(g, m, b1, 1)
            # hyperparameters may be float32 arrays: promotions explicit (num.mul...)
            u = num.div(m_new / c1.astype(m_new.dtype), num.maximum(num.mul(gamma, h), eps))
            if clip_threshold is not None:
                u = num.clip(u, -clip_threshold, clip_threshold)
            return u.astype(g.dtype), cast_like(m_new, m)

        u, mu = map_leaves(leaf, 2, updates, state.mu, state.nu)
        if verbose and clip_threshold is not None:
            kept = sum(
                jnp.sum(jnp.less(*num.promote(jnp.abs(x), clip_threshold)))
                for x in jax.tree.leaves(u)
            )
            rate = kept / max(sum(np.size(x) for x in jax.tree.leaves(u)), 1)
            control.cond(
                count % print_win_rate_every_n_steps == 0,
                lambda: jax.debug.print("sophia win rate (unclipped fraction): {}", rate),
                lambda: None,
            )

        def refresh(hs, nu):
            est, hs = hess.update(updates, hs, params, **extra)
            nu = tree_map(lambda e, h: cast_like(num.update_moment(e, h, b2, 1), h), est, nu)
            return hs, nu

        hs, nu = control.cond(
            jnp.remainder(*num.promote(state.count, update_interval)) == 0,
            refresh,
            lambda hs, nu: (hs, nu),
            state.hessian_fn_state,
            state.nu,
        )
        return u, SophiaState(count=count, mu=mu, nu=nu, hessian_fn_state=hs)

    return GradientTransformation(init, update)
