"""Line searches and the L-BFGS direction.

A line search is the *last* transform of a chain: it receives a descent direction ``u`` and
returns ``η u`` where the step size ``η`` makes ``f(x + η u)`` decrease enough. It evaluates
the objective, so ``update`` needs three keyword extras::

    updates, state = opt.update(grads, state, params,
                                value=loss, grad=grads, value_fn=loss_fn)

``loss_fn(params) -> scalar`` is the objective (extra keyword arguments of ``update`` whose
names are parameters of ``loss_fn`` are forwarded to it, e.g. ``batch=...``), ``loss`` and
``grads`` its value and gradient at ``params``. :func:`value_and_grad_from_state` reuses the
value and gradient the line search already computed at the accepted point, so each iteration
costs only the line search's own evaluations. The named optimizer built from these,
:func:`gdopt.lbfgs`, lives in :mod:`gdopt.optimizers.second_order`.

Everything is jit-compatible: the searches are ``lax.while_loop`` s with a bounded number of
iterations. Called eagerly (concrete arrays), the loops and branches run as Python control
flow over eager operations, so an eager step compiles nothing after the first one.

Every transform here reduces over *all* parameters (inner products, global norms) and calls
``value_fn`` on the parameters as given, so all are packable (:mod:`gdopt.packing`): on
packed parameters ``value_fn`` receives the :class:`~gdopt.packing.Packed` parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _control as control
from gdopt import _numerics as num
from gdopt._numerics import safe_increment, tree_map
from gdopt._traits import transform
from gdopt._validation import Integer, Interval, OneOf, is_concrete, need_params
from gdopt.base import GradientTransformation, Steps
from gdopt.hyperparams import HyperparamsState
from gdopt.tree import tree_l2_norm, tree_vdot, tree_where, tree_zeros_like

__all__ = [
    "BacktrackingLinesearchInfo",
    "ScaleByBacktrackingLinesearchState",
    "scale_by_backtracking_linesearch",
    "ZoomLinesearchInfo",
    "ScaleByZoomLinesearchState",
    "scale_by_zoom_linesearch",
    "ScaleByLBFGSState",
    "scale_by_lbfgs",
    "value_and_grad_from_state",
]

_CALL = (
    "opt.update(grads, state, params, value=loss, grad=grads, value_fn=loss_fn), where "
    "loss_fn(params) -> scalar is the objective and loss, grads = "
    "jax.value_and_grad(loss_fn)(params) (or gdopt.value_and_grad_from_state(loss_fn)(params, "
    "state=state))"
)
_WHY = "the objective is evaluated along the line from them"


# ----------------------------------------------------------------------------- constraints


# Constants of a line search: numbers or arrays (no schedules), checked when concrete.
_Number = float | jax.Array
_Fraction = Annotated[_Number, Interval(0.0, 1.0, high_open=True, schedule=False)]
_OpenFraction = Annotated[_Number, Interval(0.0, 1.0, True, True, schedule=False)]
_Constant = Annotated[_Number, Interval(0.0, schedule=False)]
_OptionalConstant = Annotated[_Number | None, Interval(0.0, optional=True, schedule=False)]
_AtLeastOne = Annotated[_Number, Interval(1.0, schedule=False)]
_AboveOne = Annotated[_Number, Interval(1.0, low_open=True, schedule=False)]
_PositiveConstant = Annotated[_Number, Interval(0.0, low_open=True, schedule=False)]
_OptionalPositive = Annotated[
    _Number | None, Interval(0.0, low_open=True, optional=True, schedule=False)
]


# ----------------------------------------------------------------------------- helpers


def _value_dtype(params: Any) -> Any:
    """dtype of values and step sizes: the widest *real* leaf dtype, at least float32 (the
    real dtype of a complex leaf counts, unlike :func:`gdopt._numerics.scalar_dtype`)."""
    out = jnp.float32
    for x in jax.tree.leaves(params):
        d = jnp.asarray(x).dtype
        if jnp.issubdtype(d, jnp.complexfloating):
            d = jnp.finfo(d).dtype
        if jnp.issubdtype(d, jnp.floating):
            out = num.promote_types(out, d)
    return out


def _less_equal(a: Any, b: Any) -> jax.Array:
    """``a <= b`` with the promotion made explicit (:func:`gdopt._numerics.promote`)."""
    return jnp.less_equal(*num.promote(a, b))


def _greater(a: Any, b: Any) -> jax.Array:
    """``a > b`` with the promotion made explicit."""
    return jnp.greater(*num.promote(a, b))


def _greater_equal(a: Any, b: Any) -> jax.Array:
    """``a >= b`` with the promotion made explicit."""
    return jnp.greater_equal(*num.promote(a, b))


def _extras(extra: dict, who: str) -> tuple[Any, Any, Callable, dict]:
    for name in ("value", "grad", "value_fn"):
        if extra.get(name) is None:
            raise ValueError(f"{who} needs the keyword extra {name!r}: call {_CALL}.")
    value_fn = extra["value_fn"]
    if not callable(value_fn):
        raise TypeError(f"{who}: value_fn must be a callable params -> scalar, got {value_fn!r}.")
    return extra["value"], extra["grad"], value_fn, _fn_kwargs(value_fn, extra)


def _fn_kwargs(value_fn: Callable, extra: dict) -> dict:
    """The extras whose names are (non-first) parameters of ``value_fn``."""
    try:
        params = list(inspect.signature(value_fn).parameters.values())
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [p.name for p in params[1:] if p.kind in kinds]
    return {k: extra[k] for k in names if k in extra and k not in ("value", "grad", "value_fn")}


def _real(dtype: Any) -> Any:
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def _step(params: Any, eta: Any, updates: Any) -> Any:
    """The trial point ``params + η updates`` in the params' dtypes."""

    def leaf(p, u):
        q, step = num.promote(p, num.mul(eta.astype(_real(p.dtype)), u))
        return (q + step).astype(p.dtype)

    return jax.tree.map(leaf, params, updates)


def _scaled(eta: Any, updates: Any) -> Any:
    """``η updates`` in the updates' dtypes (``None`` leaves kept)."""
    return tree_map(lambda u: num.mul(eta.astype(_real(u.dtype)), u).astype(u.dtype), updates)


# Eager-friendly control flow. Under jit/vmap/grad these are lax.cond / lax.while_loop /
# lax.scan; when the predicate (or the loop's inputs) are concrete, i.e. the update is
# called eagerly, they run as Python control flow over eager operations: a lax control-flow
# primitive called eagerly compiles a new program at every call (its branches are fresh
# closures), these compile nothing after the first step.


# ----------------------------------------------------------------------------- backtracking


class BacktrackingLinesearchInfo(NamedTuple):
    """Diagnostics of the latest search.

    Attributes:
      num_linesearch_steps: function evaluations used.
      decrease_error: ``max(f(x + η u) - (1 + rtol) f(x) - c η <u, g>, 0)``; ``<= atol``
        means the Armijo condition held.
    """

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """The last tried step size, the value (and, with ``store_grad``, the gradient) at the
    accepted point, and diagnostics."""

    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    info: BacktrackingLinesearchInfo


@transform(packable=True)
def scale_by_backtracking_linesearch(
    max_backtracking_steps: Annotated[int, Integer(0)],
    slope_rtol: _Fraction = 1e-4,
    decrease_factor: _OpenFraction = 0.8,
    increase_factor: _AtLeastOne = 1.5,
    max_learning_rate: _PositiveConstant = 1.0,
    atol: _Constant = 0.0,
    rtol: _Constant = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> GradientTransformation:
    """Armijo backtracking line search (Armijo, 1966) with a warm start.

    Starting from ``η_0 = min(increase_factor · η_prev, max_learning_rate)``, try
    ``η_k = decrease_factor^k η_0`` until the sufficient-decrease (Armijo) condition holds::

        f(x + η u) <= (1 + rtol) f(x) + c η <u, ∇f(x)> + atol          (c = slope_rtol)

    and return ``η u``. At most ``max_backtracking_steps`` reductions are made; if none
    satisfies the condition the last (smallest) step is used, and a step of 0 if ``f`` was
    not finite there. The next search starts from ``increase_factor`` times the last step
    tried, so the step can grow back.

    Needs the keyword extras ``value``, ``grad`` and ``value_fn`` (see the module docstring).

    Args:
      max_backtracking_steps: maximal number of reductions (>= 0).
      slope_rtol: ``c`` in [0, 1).
      decrease_factor: the reduction factor in (0, 1).
      increase_factor: growth of the initial guess between searches, >= 1.
      max_learning_rate: the largest step tried, > 0.
      atol, rtol: absolute and relative slack in the condition, >= 0.
      store_grad: also compute and store the gradient at the accepted point (one extra
        gradient evaluation, which :func:`value_and_grad_from_state` then reuses).
      verbose: print a message (``jax.debug.print``) when the search fails.

    Returns:
      A transformation whose state is a :class:`ScaleByBacktrackingLinesearchState`.

    References:
      Armijo, "Minimization of functions having Lipschitz continuous first partial
      derivatives", Pacific J. Math. 16(1), 1966. Nocedal & Wright, "Numerical Optimization",
      2nd ed., Springer 2006, Alg. 3.1.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> opt = gdopt.chain(gdopt.sgd(1.0), scale_by_backtracking_linesearch(15))
    >>> p = jnp.zeros(2)
    >>> s = opt.init(p)
    >>> v, g = jax.value_and_grad(loss)(p)
    >>> u, s = opt.update(g, s, p, value=v, grad=g, value_fn=loss)
    >>> [round(x, 4) for x in gdopt.apply_updates(p, u).tolist()], round(float(s[1].value), 4)
    ([1.6, 1.6], 0.72)
    """

    def init(params):
        dtype = _value_dtype(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.asarray(1.0, dtype),
            value=jnp.asarray(jnp.inf, dtype),
            grad=tree_zeros_like(params) if store_grad else None,
            info=BacktrackingLinesearchInfo(
                num_linesearch_steps=jnp.zeros([], jnp.int32),
                decrease_error=jnp.asarray(jnp.inf, dtype),
            ),
        )

    def update(updates, state, params=None, **extra):
        who = "scale_by_backtracking_linesearch"
        need_params(params, who, _WHY)
        value, grad, value_fn, kw = _extras(extra, who)
        dtype = state.value.dtype
        value = jnp.asarray(value).astype(dtype)
        slope = tree_vdot(updates, grad).astype(dtype)
        f = lambda p: jnp.asarray(value_fn(p, **kw)).astype(dtype)  # noqa: E731

        def decrease_error(eta, new_value):
            # the constants may be arrays of another dtype: each operation computes in the
            # dtype standard promotion gives its operands (num.mul, num.sub...)
            err = num.sub(
                num.sub(new_value, num.mul(1.0 + rtol, value)),
                num.mul(num.mul(eta, slope_rtol), slope),
            )
            return jnp.where(jnp.isnan(err), jnp.inf, jnp.maximum(err, 0.0)).astype(dtype)

        def cond(carry):
            _, _, err, it = carry
            return _greater(err, atol) & (it <= max_backtracking_steps)

        def body(carry):
            eta, _, _, it = carry
            eta = num.where(it > 0, num.mul(decrease_factor, eta), eta).astype(dtype)
            new_value = f(_step(params, eta, updates))
            return eta, new_value, decrease_error(eta, new_value), it + 1

        eta0 = num.minimum(num.mul(increase_factor, state.learning_rate), max_learning_rate)
        eta0 = eta0.astype(dtype)
        carry = (eta0, value, jnp.asarray(jnp.inf, dtype), jnp.zeros([], jnp.int32))
        eta, new_value, err, it = control.while_loop(cond, body, carry)
        finite = jnp.isfinite(err)
        step = jnp.where(finite, eta, 0.0).astype(dtype)
        new_value = jnp.where(finite, new_value, value)
        if verbose:
            control.cond(
                _greater(err, atol),
                lambda: jax.debug.print(
                    "scale_by_backtracking_linesearch: no step satisfied the Armijo condition "
                    "(value {v}, slope {s}, last step {e}, decrease error {d}); using step {u}.",
                    v=value,
                    s=slope,
                    e=eta,
                    d=err,
                    u=step,
                ),
                lambda: None,
            )
        new_grad = None
        if store_grad:
            g = jax.grad(lambda p: value_fn(p, **kw))(_step(params, step, updates))
            new_grad = jax.tree.map(lambda a, b: a.astype(b.dtype), g, state.grad)
        new_state = ScaleByBacktrackingLinesearchState(
            learning_rate=eta,
            value=new_value,
            grad=new_grad,
            info=BacktrackingLinesearchInfo(num_linesearch_steps=it, decrease_error=err),
        )
        return _scaled(step, updates), new_state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- zoom (Wolfe)


class ZoomLinesearchInfo(NamedTuple):
    """Diagnostics of the latest search: evaluations used and the final errors in the
    sufficient-decrease and curvature conditions (0 when they hold)."""

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
    """The accepted step size, the value and gradient at the accepted point, diagnostics."""

    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    info: ZoomLinesearchInfo


class _Search(NamedTuple):
    it: jax.Array
    bracketed: jax.Array
    done: jax.Array
    failed: jax.Array
    # last evaluated trial
    step: jax.Array
    value: jax.Array
    grad: Any
    slope: jax.Array
    dec_err: jax.Array
    curv_err: jax.Array
    # bracket: lo has the lower value among points with sufficient decrease
    lo: jax.Array
    f_lo: jax.Array
    d_lo: jax.Array
    hi: jax.Array
    f_hi: jax.Array
    d_hi: jax.Array
    # third point for the cubic interpolation
    ref: jax.Array
    f_ref: jax.Array
    has_ref: jax.Array
    # best point with sufficient decrease (fallback)
    safe: jax.Array
    f_safe: jax.Array
    g_safe: Any


def _cubic_min(a, fa, da, b, fb, c, fc):
    """Minimiser of the cubic through ``(a, fa)`` with slope ``da``, ``(b, fb)``, ``(c, fc)``."""
    db, dc = b - a, c - a
    rb, rc = fb - fa - da * db, fc - fa - da * dc
    det = db * db * dc * dc * (db - dc)
    A = (dc * dc * rb - db * db * rc) / det
    B = (db * db * db * rc - dc * dc * dc * rb) / det
    return a + (-B + jnp.sqrt(B * B - 3.0 * A * da)) / (3.0 * A)


def _quad_min(a, fa, da, b, fb):
    """Minimiser of the parabola through ``(a, fa)`` with slope ``da`` and ``(b, fb)``."""
    db = b - a
    B = (fb - fa - da * db) / (db * db)
    return a - da / (2.0 * B)


@transform(packable=True)
def scale_by_zoom_linesearch(
    max_linesearch_steps: Annotated[int, Integer(1)],
    max_learning_rate: _OptionalPositive = None,
    tol: _Constant = 0.0,
    increase_factor: _AboveOne = 2.0,
    slope_rtol: _OpenFraction = 1e-4,
    curv_rtol: _OpenFraction = 0.9,
    approx_dec_rtol: _OptionalConstant = 1e-6,
    stepsize_precision: _Constant = 1e-5,
    initial_guess_strategy: Annotated[str, OneOf(("one", "keep"))] = "keep",
    verbose: bool = False,
) -> GradientTransformation:
    """Line search for the strong Wolfe conditions (Nocedal & Wright, Alg. 3.5 and 3.6).

    Finds ``η`` with, for ``φ(η) = f(x + η u)``, ``c1 = slope_rtol``, ``c2 = curv_rtol``::

        φ(η) <= φ(0) + c1 η φ'(0)              (sufficient decrease)
        |φ'(η)| <= c2 |φ'(0)|                   (strong curvature)

    Phase 1 (bracketing, Alg. 3.5) tries ``η_0`` (1, or the previous step with
    ``initial_guess_strategy="keep"``), then ``increase_factor`` times larger steps (capped
    at ``max_learning_rate``) until an interval containing acceptable steps is found. Phase 2
    (zoom, Alg. 3.6) shrinks it, choosing each trial by interpolation: the minimiser of the
    cubic through both ends and the previous end point when it lies well inside the interval,
    else of the quadratic through the low end's value and slope and the high end's value,
    else bisection.

    With ``approx_dec_rtol`` (default ``1e-6``) sufficient decrease is also accepted in the
    approximate form of Hager & Zhang (2006), ``φ'(η) <= (2 c1 - 1) φ'(0)`` and
    ``φ(η) <= φ(0) + approx_dec_rtol |φ(0)|``, which is robust to rounding near a minimum;
    ``None`` uses the exact condition only.

    If no step is accepted within ``max_linesearch_steps`` evaluations (or the interval gets
    shorter than ``stepsize_precision``), the best step found with sufficient decrease is
    used, else the last one tried if it lowered ``f`` at all, else 0 (so ``f`` never increases
    and a non-finite ``f`` is never stepped into; optax takes the last step in that case).

    Needs the keyword extras ``value``, ``grad`` and ``value_fn`` (see the module docstring).
    The state keeps the value and gradient at the accepted point for
    :func:`value_and_grad_from_state`.

    Args:
      max_linesearch_steps: maximal number of function-and-gradient evaluations (>= 1).
      max_learning_rate: the largest step tried (``None``: no cap).
      tol: slack on both conditions, >= 0.
      increase_factor: growth of the step while bracketing, > 1.
      slope_rtol: ``c1`` in (0, 1).
      curv_rtol: ``c2`` in (c1, 1).
      approx_dec_rtol: see above; ``None`` to disable.
      stepsize_precision: stop when the interval is shorter than this.
      initial_guess_strategy: ``"one"`` (always start at 1; right for quasi-Newton
        directions) or ``"keep"`` (start at the previous step).
      verbose: print a message when the search fails.

    Returns:
      A transformation whose state is a :class:`ScaleByZoomLinesearchState`.

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., Springer 2006, Sec. 3.5,
      Alg. 3.5-3.6. Hager & Zhang, "A new conjugate gradient method with guaranteed descent
      and an efficient line search", SIAM J. Optim. 16(1), 2005.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum(jnp.array([1.0, 10.0]) * p ** 2)
    >>> opt = gdopt.chain(gdopt.sgd(1.0), scale_by_zoom_linesearch(15, approx_dec_rtol=None))
    >>> p = jnp.array([1.0, 1.0])
    >>> v, g = jax.value_and_grad(loss)(p)
    >>> u, s = opt.update(g, opt.init(p), p, value=v, grad=g, value_fn=loss)
    >>> eta = float(s[1].learning_rate)
    >>> new = gdopt.apply_updates(p, u)
    >>> bool(loss(new) <= v + 1e-4 * eta * jnp.vdot(g, -g))          # sufficient decrease
    True
    >>> bool(abs(jnp.vdot(jax.grad(loss)(new), -g)) <= 0.9 * abs(jnp.vdot(g, -g)))  # curvature
    True
    """
    if is_concrete((slope_rtol, curv_rtol)) and np.any(
        np.asarray(curv_rtol) <= np.asarray(slope_rtol)
    ):
        raise ValueError(
            f"curv_rtol must be larger than slope_rtol (0 < c1 < c2 < 1), got "
            f"slope_rtol={slope_rtol}, curv_rtol={curv_rtol}."
        )

    def init(params):
        dtype = _value_dtype(params)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.asarray(1.0, dtype),
            value=jnp.asarray(jnp.inf, dtype),
            grad=tree_zeros_like(params),
            info=ZoomLinesearchInfo(
                num_linesearch_steps=jnp.zeros([], jnp.int32),
                decrease_error=jnp.asarray(jnp.inf, dtype),
                curvature_error=jnp.asarray(jnp.inf, dtype),
            ),
        )

    def update(updates, state, params=None, **extra):
        who = "scale_by_zoom_linesearch"
        need_params(params, who, _WHY)
        value, grad, value_fn, kw = _extras(extra, who)
        dtype = state.value.dtype
        as_v = lambda x: jnp.asarray(x).astype(dtype)
        f0 = as_v(value)
        g0 = jax.tree.map(lambda g, p: jnp.asarray(g).astype(p.dtype), grad, state.grad)
        d0 = as_v(tree_vdot(updates, g0))
        vg = jax.value_and_grad(lambda p: value_fn(p, **kw))

        def evaluate(eta):
            v, g = vg(_step(params, eta, updates))
            g = jax.tree.map(lambda a, b: a.astype(b.dtype), g, state.grad)
            return as_v(v), g, as_v(tree_vdot(updates, g))

        def errors(eta, v, d):
            # the constants may be arrays of another dtype: each operation computes in the
            # dtype standard promotion gives its operands (num.mul, num.sub...)
            dec = num.sub(v - f0, num.mul(num.mul(slope_rtol, eta), d0))
            if approx_dec_rtol is not None:
                approx = num.maximum(
                    num.sub(d, num.mul(2 * slope_rtol - 1.0, d0)),
                    num.sub(v - f0, num.mul(approx_dec_rtol, jnp.abs(f0))),
                )
                dec = num.minimum(dec, approx)
            dec = jnp.where(jnp.isnan(dec), jnp.inf, jnp.maximum(dec, 0.0))
            curv = num.sub(jnp.abs(d), num.mul(curv_rtol, jnp.abs(d0)))
            curv = jnp.where(jnp.isnan(curv), jnp.inf, jnp.maximum(curv, 0.0))
            return as_v(dec), as_v(curv)

        def record_safe(s, eta, v, g, dec):
            better = _less_equal(dec, tol) & ((s.safe <= 0) | (v < s.f_safe))
            safe, f_safe, g_safe = tree_where(better, (eta, v, g), (s.safe, s.f_safe, s.g_safe))
            return as_v(safe), as_v(f_safe), g_safe

        def bracket_phase(s):
            first = s.it == 0
            eta = num.where(first, s.step, num.mul(increase_factor, s.step))
            capped = jnp.asarray(False)
            if max_learning_rate is not None:
                capped = _greater_equal(eta, max_learning_rate)
                eta = num.minimum(eta, max_learning_rate)
            eta = as_v(eta)
            v, g, d = evaluate(eta)
            dec, curv = errors(eta, v, d)
            ok = _less_equal(jnp.maximum(dec, curv), tol)
            # Alg. 3.5: [prev, eta] brackets when eta lacks sufficient decrease or is no
            # better than prev; [eta, prev] when the slope at eta is already non-negative.
            high_is_new = (dec > 0) | ((v >= s.value) & ~first)
            low_is_new = (d >= 0) & ~high_is_new
            prev = (jnp.where(first, 0.0, s.step), s.value, s.slope)
            new = (eta, v, d)
            lo = tree_where(low_is_new, new, prev)
            hi = tree_where(low_is_new, prev, new)
            bracketed = (high_is_new | low_is_new) & ~ok
            safe = record_safe(s, eta, v, g, dec)
            return s._replace(
                bracketed=bracketed,
                done=ok | (capped & ~bracketed),
                step=eta, value=v, grad=g, slope=d, dec_err=dec, curv_err=curv,
                lo=as_v(lo[0]), f_lo=as_v(lo[1]), d_lo=as_v(lo[2]),
                hi=as_v(hi[0]), f_hi=as_v(hi[1]), d_hi=as_v(hi[2]),
                ref=as_v(lo[0]), f_ref=as_v(lo[1]), has_ref=jnp.asarray(False),
                safe=safe[0], f_safe=safe[1], g_safe=safe[2],
            )  # fmt: skip

        def zoom_phase(s):
            width = jnp.abs(s.hi - s.lo)
            left, right = jnp.minimum(s.lo, s.hi), jnp.maximum(s.lo, s.hi)
            cubic = _cubic_min(s.lo, s.f_lo, s.d_lo, s.hi, s.f_hi, s.ref, s.f_ref)
            use_cubic = (
                s.has_ref
                & jnp.isfinite(cubic)
                & (cubic > left + 0.2 * width)
                & (cubic < right - 0.2 * width)
            )
            quad = _quad_min(s.lo, s.f_lo, s.d_lo, s.hi, s.f_hi)
            use_quad = (
                ~use_cubic
                & jnp.isfinite(quad)
                & (quad > left + 0.1 * width)
                & (quad < right - 0.1 * width)
            )
            eta = jnp.where(use_cubic, cubic, jnp.where(use_quad, quad, 0.5 * (s.lo + s.hi)))
            eta = as_v(eta)
            v, g, d = evaluate(eta)
            dec, curv = errors(eta, v, d)
            ok = _less_equal(jnp.maximum(dec, curv), tol)
            # Alg. 3.6: eta replaces hi when it lacks sufficient decrease or is no better
            # than lo; otherwise it replaces lo, and the old lo becomes hi when the slope at
            # eta points away from hi.
            new_hi_is_eta = (dec > 0) | (v >= s.f_lo)
            hi_to_lo = ~new_hi_is_eta & (d * (s.hi - s.lo) >= 0)
            old_lo = (s.lo, s.f_lo, s.d_lo)
            old_hi = (s.hi, s.f_hi, s.d_hi)
            new = (eta, v, d)
            hi = tree_where(new_hi_is_eta, new, tree_where(hi_to_lo, old_lo, old_hi))
            lo = tree_where(new_hi_is_eta, old_lo, new)
            ref_is_hi = new_hi_is_eta | hi_to_lo
            ref = tree_where(ref_is_hi, old_hi[:2], old_lo[:2])
            safe = record_safe(s, eta, v, g, dec)
            tiny = _less_equal(jnp.abs(hi[0] - lo[0]), stepsize_precision) & (safe[0] > 0)
            return s._replace(
                done=ok, failed=tiny & ~ok,
                step=eta, value=v, grad=g, slope=d, dec_err=dec, curv_err=curv,
                lo=as_v(lo[0]), f_lo=as_v(lo[1]), d_lo=as_v(lo[2]),
                hi=as_v(hi[0]), f_hi=as_v(hi[1]), d_hi=as_v(hi[2]),
                ref=as_v(ref[0]), f_ref=as_v(ref[1]), has_ref=jnp.asarray(True),
                safe=safe[0], f_safe=safe[1], g_safe=safe[2],
            )  # fmt: skip

        def body(s):
            s = control.cond(s.bracketed, zoom_phase, bracket_phase, s)
            out_of_budget = (s.it + 1 >= max_linesearch_steps) & ~s.done
            return s._replace(it=safe_increment(s.it), failed=s.failed | out_of_budget)

        if initial_guess_strategy == "one":
            guess = jnp.asarray(1.0, dtype)
        else:
            guess = jnp.where(state.learning_rate > 0, state.learning_rate, 1.0).astype(dtype)
        zero = jnp.zeros([], dtype)
        false = jnp.asarray(False)
        inf = jnp.asarray(jnp.inf, dtype)
        start = _Search(
            it=jnp.zeros([], jnp.int32), bracketed=false, done=false, failed=false,
            step=guess, value=f0, grad=g0, slope=d0, dec_err=inf, curv_err=inf,
            lo=zero, f_lo=f0, d_lo=d0, hi=zero, f_hi=f0, d_hi=d0,
            ref=zero, f_ref=f0, has_ref=false, safe=zero, f_safe=f0, g_safe=g0,
        )  # fmt: skip
        s = control.while_loop(lambda s: ~(s.done | s.failed), body, start)
        # On failure: the best sufficient-decrease step, else the last step if it lowered f
        # at all, else no step (the safe point starts at η = 0).
        use_safe = s.failed & ((s.safe > 0) | ~(s.value < f0))
        eta, v, g = tree_where(use_safe, (s.safe, s.f_safe, s.g_safe), (s.step, s.value, s.grad))
        if verbose:
            control.cond(
                s.failed,
                lambda: jax.debug.print(
                    "scale_by_zoom_linesearch: no step satisfied the strong Wolfe conditions in "
                    "{n} evaluations (slope at 0: {d0}; decrease error {de}, curvature error "
                    "{ce}); using step {eta}.",
                    n=s.it,
                    d0=d0,
                    de=s.dec_err,
                    ce=s.curv_err,
                    eta=eta,
                ),
                lambda: None,
            )
        new_state = ScaleByZoomLinesearchState(
            learning_rate=as_v(eta),
            value=as_v(v),
            grad=g,
            info=ZoomLinesearchInfo(
                num_linesearch_steps=s.it, decrease_error=s.dec_err, curvature_error=s.curv_err
            ),
        )
        return _scaled(as_v(eta), updates), new_state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- L-BFGS


class ScaleByLBFGSState(NamedTuple):
    """L-BFGS memory.

    Attributes:
      count: number of updates done.
      params, updates: the parameters and gradient of the previous call.
      diff_params_memory: the last ``memory_size`` differences ``s_i = x_{i+1} - x_i``,
        stacked along a leading axis (a ring buffer).
      diff_updates_memory: the matching ``y_i = g_{i+1} - g_i``.
      weights_memory: ``ρ_i = 1 / <s_i, y_i>`` (0 for empty or rejected pairs).
      identity_scale: ``γ``, the scale of the initial inverse Hessian ``H_0 = γ I``.
    """

    count: jax.Array
    params: Any
    updates: Any
    diff_params_memory: Any
    diff_updates_memory: Any
    weights_memory: jax.Array
    identity_scale: jax.Array


@transform(packable=True)
def scale_by_lbfgs(
    memory_size: Steps = 10, scale_init_precond: bool = True
) -> GradientTransformation:
    """L-BFGS's direction: the gradient multiplied by a limited-memory inverse-Hessian
    approximation (Liu & Nocedal, 1989), by the two-loop recursion (Nocedal & Wright,
    Alg. 7.4).

    At each call (with ``x_k`` the params and ``g_k`` the incoming gradient) the pair
    ``s = x_k - x_{k-1}``, ``y = g_k - g_{k-1}`` enters the memory, then::

        q = g_k
        for i = newest ... oldest:  α_i = ρ_i <s_i, q>;  q = q - α_i y_i
        r = γ q                         γ = <s, y> / <y, y> of the newest pair
        for i = oldest ... newest:  β_i = ρ_i <y_i, r>;  r = r + (α_i - β_i) s_i
        u_k = r   (≈ H_k^{-1} g_k; chain a negative scale and a line search after it)

    At the first call ``γ = min(1, 1 / ||g_0||)`` (``scale_init_precond``; else 1). Pairs with
    ``<s, y> <= ε ||s|| ||y||`` (non-positive curvature, impossible after a Wolfe line search
    but possible with a fixed step) are not stored and ``γ`` keeps its value, so the
    approximation stays positive definite. Otherwise the rule matches optax's.

    Args:
      memory_size: number of pairs kept (>= 1).
      scale_init_precond: use ``γ`` above (else ``H_0 = I``).

    Returns:
      A transformation whose state is a :class:`ScaleByLBFGSState`.

    References:
      Liu & Nocedal, "On the limited memory BFGS method for large scale optimization",
      Math. Programming 45, 1989. Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006,
      Alg. 7.4.

    >>> import jax.numpy as jnp
    >>> t = scale_by_lbfgs()
    >>> p, s = jnp.array([1.0, 1.0]), None
    >>> s = t.init(p)
    >>> u, s = t.update(jnp.array([0.6, 0.8]), s, p)   # first call: γ = min(1, 1/||g||) = 1
    >>> [round(x, 4) for x in u.tolist()]
    [0.6, 0.8]
    """

    def init(params):
        dtype = _value_dtype(params)
        # each memory slot placed like its parameter (tree_zeros_like follows shardings)
        stacked = jax.tree.map(
            lambda z: jnp.broadcast_to(z, (memory_size, *jnp.shape(z))).astype(z.dtype),
            tree_zeros_like(params),
        )
        return ScaleByLBFGSState(
            count=jnp.zeros([], jnp.int32),
            params=tree_zeros_like(params),
            updates=tree_zeros_like(params),
            diff_params_memory=stacked,
            diff_updates_memory=stacked,
            weights_memory=jnp.zeros([memory_size], dtype),
            identity_scale=jnp.ones([], dtype),
        )

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, "scale_by_lbfgs", "the curvature pairs are differences of them")
        dtype = state.weights_memory.dtype
        count = state.count
        started = count > 0
        g = jax.tree.map(lambda u, p: jnp.asarray(u).astype(p.dtype), updates, state.updates)
        s = jax.tree.map(lambda a, b: num.sub(a, b).astype(b.dtype), params, state.params)
        y = jax.tree.map(lambda a, b: a - b, g, state.updates)
        sy = tree_vdot(s, y).astype(dtype)
        yy = tree_l2_norm(y, squared=True).astype(dtype)
        ss = tree_l2_norm(s, squared=True).astype(dtype)
        valid = started & (sy > jnp.finfo(dtype).eps * jnp.sqrt(ss * yy))
        rho = jnp.where(valid, 1.0 / jnp.where(valid, sy, 1.0), 0.0).astype(dtype)
        s = jax.tree.map(lambda x: jnp.where(valid, x, jnp.zeros_like(x)), s)
        y = jax.tree.map(lambda x: jnp.where(valid, x, jnp.zeros_like(x)), y)
        newest = (count - 1) % memory_size
        s_mem = jax.tree.map(lambda m, x: m.at[newest].set(x), state.diff_params_memory, s)
        y_mem = jax.tree.map(lambda m, x: m.at[newest].set(x), state.diff_updates_memory, y)
        rhos = state.weights_memory.at[newest].set(rho)
        if scale_init_precond:
            first = jnp.minimum(1.0, 1.0 / tree_l2_norm(jax.lax.stop_gradient(g)).astype(dtype))
            gamma = jnp.where(valid, sy / jnp.where(valid, yy, 1.0), state.identity_scale)
            gamma = jnp.where(started, gamma, first).astype(dtype)
        else:
            gamma = jnp.ones([], dtype)
        # Ring buffer: slot (count + j) % m, j = 0..m-1, runs from oldest to newest.
        slots = jnp.arange(memory_size)
        order = (count.astype(slots.dtype) + slots) % memory_size

        def take(mem, i):
            return jax.tree.map(lambda m: m[i], mem)

        def backward(q, i):
            a = rhos[i] * tree_vdot(take(s_mem, i), q).astype(dtype)
            q = jax.tree.map(
                lambda qq, yy_: (qq - a.astype(qq.dtype) * yy_).astype(qq.dtype), q, take(y_mem, i)
            )
            return q, a

        q, alphas = control.scan(backward, g, order, reverse=True)
        r = jax.tree.map(lambda x: (gamma.astype(x.dtype) * x).astype(x.dtype), q)

        def forward(r, ia):
            i, a = ia
            b = rhos[i] * tree_vdot(take(y_mem, i), r).astype(dtype)
            r = jax.tree.map(
                lambda rr, ss_: (rr + (a - b).astype(rr.dtype) * ss_).astype(rr.dtype),
                r,
                take(s_mem, i),
            )
            return r, None

        r, _ = control.scan(forward, r, (order, alphas))
        out = jax.tree.map(lambda x, u: x.astype(jnp.asarray(u).dtype), r, updates)
        new_state = ScaleByLBFGSState(
            count=safe_increment(count),
            params=jax.tree.map(lambda p, o: jnp.asarray(p).astype(o.dtype), params, state.params),
            updates=g,
            diff_params_memory=s_mem,
            diff_updates_memory=y_mem,
            weights_memory=rhos,
            identity_scale=gamma,
        )
        return out, new_state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- reusing the search


def _line_search_states(state: Any) -> list:
    """The line-search states in ``state``, in order (a named optimizer's
    :class:`~gdopt.HyperparamsState` flattens its inner NamedTuple away: look inside)."""
    kinds = (ScaleByZoomLinesearchState, ScaleByBacktrackingLinesearchState)
    out = []
    for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, (*kinds, HyperparamsState))):
        if isinstance(x, kinds):
            out.append(x)
        elif isinstance(x, HyperparamsState):
            out.extend(_line_search_states(x.inner_state))
    return out


def value_and_grad_from_state(value_fn: Callable[..., Any]) -> Callable[..., tuple[Any, Any]]:
    """``jax.value_and_grad(value_fn)`` that reuses what a line search stored in the state.

    The line searches keep the value and gradient at the point they accepted, which is where
    the next iteration starts; the returned function gives them back instead of recomputing
    (it computes them when the state has none yet, i.e. at the first step, or when they are
    not finite). It works under ``jit`` (a ``lax.cond``) and eagerly (a Python branch).

    Args:
      value_fn: the objective ``value_fn(params, *args, **kwargs) -> scalar``.

    Returns:
      ``f(params, *args, state, **kwargs) -> (value, grad)``; ``state`` is keyword-only and
      must contain a :class:`ScaleByZoomLinesearchState` or a
      :class:`ScaleByBacktrackingLinesearchState` made with ``store_grad=True``.

    >>> import gdopt, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum(p ** 2)
    >>> opt = gdopt.lbfgs()
    >>> p = jnp.array([1.0, 2.0])
    >>> v, g = value_and_grad_from_state(loss)(p, state=opt.init(p))   # computed: none stored
    >>> float(v), g.tolist()
    (5.0, [2.0, 4.0])
    """
    if not callable(value_fn):
        raise TypeError(f"value_fn must be a callable params -> scalar, got {value_fn!r}.")

    def fn(params, *args, state, **kwargs):
        found = _line_search_states(state)
        if not found or found[-1].grad is None:
            raise ValueError(
                "value_and_grad_from_state needs a state holding a line search's value and "
                "gradient: an optimizer with scale_by_zoom_linesearch (e.g. gdopt.lbfgs()) or "
                "scale_by_backtracking_linesearch(..., store_grad=True)."
            )
        ls = found[-1]

        def compute(_):
            v, g = jax.value_and_grad(value_fn)(params, *args, **kwargs)
            g = jax.tree.map(lambda a, b: jnp.asarray(a).astype(b.dtype), g, ls.grad)
            return jnp.asarray(v).astype(ls.value.dtype), g

        return control.cond(jnp.isfinite(ls.value), lambda _: (ls.value, ls.grad), compute, None)

    return fn
