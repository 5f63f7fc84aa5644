"""Modern transforms (2023-2024): Muon, ADOPT, AdEMAMix, schedule-free averaging, the
learning-rate-free Prodigy and D-Adaptation, Sophia and the Polyak step size.

Each function returns a :class:`~gdopt.base.GradientTransformation`; the named optimizers in
:mod:`gdopt.optimizers` chain them. Notation: ``g`` gradient, ``m`` first moment, ``v`` second
moment, ``t`` step count starting at 1, ``α`` learning rate, ``β1, β2`` decay rates, ``ε``
stability constant, ``λ`` weight decay.

Conventions: ``scale_by_*`` transforms return a *direction* (or a positive step) that a later
``scale_by_learning_rate`` / ``scale(-1)`` turns into an update to add to the parameters;
:func:`schedule_free` wraps a whole optimizer and returns final updates. Updates come out in
the dtype of the incoming updates and every state leaf keeps its dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt.base import (
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    check_decay,
    check_learning_rate,
    check_nonnegative,
    check_scalar,
    resolve,
    safe_increment,
)
from gdopt.transforms._core import ScaleByAdamState, _map, update_moment
from gdopt.tree import key_path_str, tree_l2_norm, tree_vdot, tree_zeros_like

__all__ = [
    "MuonDimensionNumbers",
    "MuonState",
    "orthogonalize_via_newton_schulz",
    "scale_by_muon",
    "scale_by_shape",
    "scale_by_adopt",
    "ScaleByAdemamixState",
    "scale_by_ademamix",
    "ScheduleFreeState",
    "schedule_free",
    "schedule_free_eval_params",
    "ProdigyState",
    "scale_by_prodigy",
    "DAdaptAdamWState",
    "scale_by_dadapt_adamw",
    "HutchinsonState",
    "hutchinson_estimator_diag_hessian",
    "SophiaState",
    "scale_by_sophia",
    "scale_by_polyak",
]

_is_none = lambda x: x is None


def _cast(x: jax.Array, like: jax.Array) -> jax.Array:
    return x.astype(like.dtype)


def _compute_dtype(dtype: Any) -> Any:
    """At least float32: small reductions and iterations in bfloat16 lose too much."""
    return jnp.promote_types(dtype, jnp.float32)


def _scalar_dtype(tree: Any) -> Any:
    """dtype of a scalar statistic over ``tree``: the widest leaf dtype, at least float32."""
    dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(tree)]
    out = jnp.float32
    for d in dtypes:
        if jnp.issubdtype(d, jnp.floating):
            out = jnp.promote_types(out, d)
    return out


def _need_params(params: Any, who: str) -> None:
    if params is None:
        raise ValueError(
            f"{who} needs the current parameters: call opt.update(grads, state, params)."
        )


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _check_betas(name: str, betas: Any) -> None:
    try:
        n = len(betas)
    except TypeError:
        n = -1
    if n != 2:
        raise ValueError(
            f"{name} must be a pair (beta1, beta2) of decays in [0, 1), got {betas!r}."
        )
    check_decay(f"{name}[0]", betas[0])
    check_decay(f"{name}[1]", betas[1])


# ----------------------------------------------------------------------------- Muon

_NS_PRESETS = {
    # Jordan et al. (2024): one quintic, applied 5 times.
    "standard": (3.4445, -4.775, 2.0315),
    # Ahn et al. (2025), "Dion": one quintic per step, 5 steps.
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}
_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a parameter form the matrix that Muon orthogonalises.

    A weight used as ``y = x @ W`` has its reduction (fan-in) axis first and its output
    (fan-out) axis second: the default ``(0, 1)``. Axes named in neither are batch axes: each
    slice along them is orthogonalised on its own (e.g. a stack of per-head matrices). Several
    axes may be grouped: ``MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)``
    treats an ``(h, w, c_in, c_out)`` convolution kernel as an ``(h*w*c_in, c_out)`` matrix.
    """

    reduction_axis: int | Sequence[int] = 0
    output_axis: int | Sequence[int] = 1


_is_dims = lambda x: isinstance(x, MuonDimensionNumbers)


def _axes(dims: MuonDimensionNumbers, ndim: int, where: str) -> tuple[tuple, tuple, tuple]:
    def norm(a):
        a = (a,) if isinstance(a, (int, np.integer)) else tuple(a)
        for ax in a:
            if not -ndim <= ax < ndim:
                raise ValueError(f"{where}: axis {ax} is out of range for a rank-{ndim} array.")
        return tuple(int(ax) % ndim for ax in a)

    red, out = norm(dims.reduction_axis), norm(dims.output_axis)
    if not red or not out or set(red) & set(out):
        raise ValueError(
            f"{where}: reduction axes {red} and output axes {out} must be non-empty and disjoint."
        )
    batch = tuple(ax for ax in range(ndim) if ax not in red and ax not in out)
    return batch, red, out


def _fans(shape: tuple, dims: MuonDimensionNumbers, where: str) -> tuple[int, int]:
    _, red, out = _axes(dims, len(shape), where)
    return math.prod(shape[a] for a in red), math.prod(shape[a] for a in out)


def _resolve_dims(spec: Any, tree: Any, name: str) -> list:
    """One ``MuonDimensionNumbers`` or ``None`` per leaf of ``tree`` (``None`` as a leaf)."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_none)
    if callable(spec) and not _is_dims(spec):
        spec = spec(tree)
    if spec is None:
        return [None if x is None else MuonDimensionNumbers() for x in leaves]
    if _is_dims(spec):
        return [None if x is None else spec for x in leaves]
    try:
        full = jax.tree.map(
            lambda d, sub: jax.tree.map(lambda _: d, sub, is_leaf=_is_none),
            spec,
            tree,
            is_leaf=lambda x: x is None or _is_dims(x),
        )
        dims = treedef.flatten_up_to(full)
    except ValueError as e:
        raise ValueError(
            f"{name} must be None, a MuonDimensionNumbers, a pytree of MuonDimensionNumbers / "
            "None with the params' structure (or a prefix of it), or a function params -> such "
            f"a pytree; it does not match the params: {e}"
        ) from None
    return [None if x is None else d for x, d in zip(leaves, dims, strict=True)]


def _ns_rows(ns_coeffs: Any, ns_steps: int) -> jax.Array:
    coeffs = jnp.asarray(
        _NS_PRESETS.get(ns_coeffs, ns_coeffs) if isinstance(ns_coeffs, str) else ns_coeffs
    )
    if coeffs.ndim == 1:
        return jnp.broadcast_to(coeffs, (ns_steps, 3))
    return coeffs


def _check_ns_coeffs(ns_coeffs: Any) -> None:
    if isinstance(ns_coeffs, str):
        _check_choice("ns_coeffs", ns_coeffs, tuple(_NS_PRESETS))
        return
    shape = np.shape(ns_coeffs)
    if not (len(shape) in (1, 2) and shape[-1] == 3 and (len(shape) == 1 or shape[0] >= 1)):
        raise ValueError(
            "ns_coeffs must be a triple (a, b, c), a sequence of triples (one per "
            f"Newton-Schulz step) or one of {list(_NS_PRESETS)}, got shape {shape}."
        )


def _newton_schulz_2d(x: jax.Array, rows: jax.Array, preconditioning: str, eps: Any):
    """Quintic Newton-Schulz on one matrix, computed in a wide (``m <= n``) orientation."""
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    if preconditioning == "frobenius":
        x = x / (jnp.linalg.norm(x) + eps)
    elif preconditioning == "spectral":
        x = x / (jnp.linalg.norm(x, ord=2) + eps)
    for i in range(rows.shape[0]):
        a, b, c = rows[i, 0], rows[i, 1], rows[i, 2]
        gram = x @ x.conj().T
        if i == 0 and preconditioning == "aol":
            # Scale row i by 1/sqrt(sum_j |G_ij|): makes the spectrum <= 1 (Gershgorin).
            d = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(gram), axis=-1), eps))
            x = d[:, None] * x
            gram = d[:, None] * gram * d[None, :]
        elif i == 0 and preconditioning == "schatten":
            # ||G||_F = ||X||_{S4}^2 >= ||X||_2^2.
            s = jax.lax.rsqrt(jnp.maximum(jnp.linalg.norm(gram), eps))
            x = s * x
            gram = (s * s) * gram
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if transposed else x


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: Any = _NS_PRESETS["standard"],
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: float | jax.Array = 1e-8,
    dimension_numbers: MuonDimensionNumbers | None = None,
) -> jax.Array:
    """Approximate the orthogonal polar factor ``U Vᵀ`` of ``x = U Σ Vᵀ`` by Newton-Schulz.

    The matrix is first normalised so that its singular values lie in (0, 1] and then
    iterated with an odd quintic, which maps every singular value ``σ`` to
    ``p(σ) = a σ + b σ³ + c σ⁵`` and leaves ``U`` and ``V`` alone::

        X_0 = x / (||x||_F + ε)
        X_{k+1} = a X_k + (b A_k + c A_k²) X_k,   A_k = X_k X_kᴴ

    Muon's default coefficients ``(3.4445, -4.775, 2.0315)`` maximise the slope at 0, so small
    singular values grow fast; after 5 steps every singular value lies roughly in
    [0.68, 1.13] rather than exactly at 1 (which, empirically, does not hurt training).

    Args:
      x: a matrix, or an array whose matrix axes are given by ``dimension_numbers`` (the other
        axes are batch axes, each slice is orthogonalised separately).
      ns_coeffs: ``(a, b, c)``, a sequence of such triples (one per step; ``ns_steps`` is then
        ignored) or a preset name: ``"standard"`` (Jordan et al.) or ``"dion"``
        (Ahn et al., 2025).
      ns_steps: number of iterations when ``ns_coeffs`` is a single triple.
      preconditioning: how ``X_0`` is normalised: ``"frobenius"`` (divide by ``||x||_F``),
        ``"spectral"`` (by ``||x||_2``, exact but costs an SVD), ``"aol"`` (row scaling by the
        Gram matrix's absolute row sums, Boissin et al. 2025) or ``"schatten"`` (by the
        Schatten-4 norm, Grishina et al. 2025).
      eps: guards the normalisation against a zero matrix.
      dimension_numbers: a :class:`MuonDimensionNumbers`; required unless ``x`` is 2-D.

    Returns:
      An array like ``x`` (same shape and dtype); computed in at least float32.

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
      https://kellerjordan.github.io/posts/muon/. Bernstein & Newhouse, "Old Optimizer, New
      Norm: An Anthology", 2024, https://arxiv.org/abs/2409.20325.

    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (6, 4))
    >>> s = jnp.linalg.svd(orthogonalize_via_newton_schulz(x), compute_uv=False)
    >>> bool(jnp.all((s > 0.6) & (s < 1.2)))
    True
    """
    _check_ns_coeffs(ns_coeffs)
    _check_int("ns_steps", ns_steps, 1)
    _check_choice("preconditioning", preconditioning, _PRECONDITIONINGS)
    check_nonnegative("eps", eps)
    x = jnp.asarray(x)
    if dimension_numbers is None:
        if x.ndim != 2:
            raise ValueError(
                f"orthogonalize_via_newton_schulz needs a matrix or dimension_numbers; got shape "
                f"{x.shape}. Pass dimension_numbers=MuonDimensionNumbers(reduction_axis=..., "
                "output_axis=...)."
            )
        dimension_numbers = MuonDimensionNumbers()
    rows = _ns_rows(ns_coeffs, ns_steps)
    return _orthogonalize(x, rows, preconditioning, eps, dimension_numbers, "x")


def _orthogonalize(x, rows, preconditioning, eps, dims, where):
    batch, red, out = _axes(dims, x.ndim, where)
    perm = batch + red + out
    moved = jnp.transpose(x, perm)
    mshape = moved.shape
    nb = math.prod(mshape[: len(batch)])
    flat = moved.reshape(nb, math.prod(x.shape[a] for a in red), math.prod(x.shape[a] for a in out))
    wide = _compute_dtype(x.dtype)
    rows = rows.astype(wide)
    ortho = jax.vmap(lambda m: _newton_schulz_2d(m, rows, preconditioning, eps))(flat.astype(wide))
    return jnp.transpose(ortho.reshape(mshape), np.argsort(perm)).astype(x.dtype)


class MuonState(NamedTuple):
    """Step counter and the momentum buffer."""

    count: jax.Array
    mu: Any


def scale_by_muon(
    ns_coeffs: Any = _NS_PRESETS["standard"],
    ns_steps: int = 5,
    beta: float | jax.Array = 0.95,
    eps: float | jax.Array = 1e-8,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: Any = None,
) -> GradientTransformation:
    """Muon's direction: momentum, orthogonalised by Newton-Schulz (Jordan et al., 2024).

    Update rule (``t`` starts at 1, ``NS`` is :func:`orthogonalize_via_newton_schulz`)::

        m_t = β m_{t-1} + (1 - β) g_t
        m̂_t = m_t / (1 - β^t)                                        (nesterov=False)
        m̂_t = β m_t / (1 - β^{t+1}) + (1 - β) g_t / (1 - β^t)        (nesterov=True)
        u_t = NS(m̂_t)                 (adaptive: u_t = <m̂_t, NS(m̂_t)> NS(m̂_t))

    This is steepest descent under the spectral norm: every direction of the weight matrix
    moves by about the same amount. The momentum EMA is debiased (as optax does); Jordan's
    reference code does not debias, and since the Newton-Schulz input is normalised the two
    differ only through the debiasing weights of the first ~``1 / (1 - β)`` steps.

    Args:
      ns_coeffs, ns_steps, preconditioning, eps: the Newton-Schulz iteration (see
        :func:`orthogonalize_via_newton_schulz`).
      beta: momentum decay ``β`` in [0, 1).
      mu_dtype: dtype of the momentum buffer (default: the params').
      nesterov: use Nesterov's look-ahead momentum (the default, as in the paper's code).
      adaptive: scale by the dual norm ``<m̂, NS(m̂)>`` (Bernstein & Newhouse, 2024).
      weight_dimension_numbers: ``None`` (every leaf is a matrix ``(fan_in, fan_out)``), a
        :class:`MuonDimensionNumbers` for all leaves, a pytree of them (``None`` entries pass
        their update through unchanged) or a function ``params -> such a pytree``.

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
      https://kellerjordan.github.io/posts/muon/. Bernstein & Newhouse, "Old Optimizer, New
      Norm: An Anthology", 2024, https://arxiv.org/abs/2409.20325.

    >>> import jax.numpy as jnp
    >>> t = scale_by_muon(nesterov=False)
    >>> g = {"w": jnp.array([[3.0, 0.0], [0.0, 1.0]])}
    >>> u, _ = t.update(g, t.init(g))
    >>> s = jnp.linalg.svd(u["w"], compute_uv=False)   # both directions move about equally
    >>> bool(jnp.all((s > 0.6) & (s < 1.2)))
    True
    """
    _check_ns_coeffs(ns_coeffs)
    _check_int("ns_steps", ns_steps, 1)
    check_decay("beta", beta)
    check_nonnegative("eps", eps)
    _check_choice("preconditioning", preconditioning, _PRECONDITIONINGS)

    def init(params):
        return MuonState(count=jnp.zeros([], jnp.int32), mu=tree_zeros_like(params, mu_dtype))

    def update(updates, state, params=None, **extra):
        del extra
        count = safe_increment(state.count)
        rows = _ns_rows(ns_coeffs, ns_steps)
        c1 = 1 - jnp.asarray(beta, jnp.float32) ** count
        c1_next = 1 - jnp.asarray(beta, jnp.float32) ** safe_increment(count)
        leaves, treedef = jax.tree.flatten(updates, is_leaf=_is_none)
        paths = [
            key_path_str(p)
            for p, _ in jax.tree_util.tree_flatten_with_path(updates, is_leaf=_is_none)[0]
        ]
        mus = treedef.flatten_up_to(state.mu)
        dims = _resolve_dims(
            weight_dimension_numbers,
            params if params is not None else updates,
            "weight_dimension_numbers",
        )
        out_u, out_m = [], []
        for path, g, m, d in zip(paths, leaves, mus, dims, strict=True):
            if g is None or d is None:
                out_u.append(g)
                out_m.append(m)
                continue
            where = f"updates{path if path != '<root>' else ''}"
            if weight_dimension_numbers is None and jnp.ndim(g) != 2:
                raise ValueError(
                    f"scale_by_muon orthogonalises matrices, but {where} has shape "
                    f"{jnp.shape(g)}. Give weight_dimension_numbers for it (or None to skip "
                    "it), or use gdopt.muon, which sends non-matrix leaves to Adam."
                )
            m_new = update_moment(g, m, beta, 1)
            if nesterov:
                m_hat = beta * (m_new / c1_next.astype(m_new.dtype)) + (1 - beta) * (
                    g / c1.astype(g.dtype)
                )
            else:
                m_hat = m_new / c1.astype(m_new.dtype)
            o = _orthogonalize(m_hat, rows, preconditioning, eps, d, where)
            if adaptive:
                o = jnp.real(jnp.sum(jnp.conj(m_hat) * o)) * o
            out_u.append(o.astype(g.dtype))
            out_m.append(_cast(m_new, m))
        return treedef.unflatten(out_u), MuonState(count=count, mu=treedef.unflatten(out_m))

    return GradientTransformation(init, update)


def scale_by_shape(
    weight_dimension_numbers: Any = None, consistent_rms: float | jax.Array | None = None
) -> GradientTransformation:
    """Rescale orthogonalised matrix updates by a factor that depends on their shape.

    An orthogonal ``fan_in x fan_out`` update has RMS entry ``1/sqrt(max(fan_in, fan_out))``.
    Two rules::

        u <- sqrt(max(1, fan_out / fan_in)) u          (consistent_rms=None; Jordan et al.)
        u <- consistent_rms * sqrt(max(fan_in, fan_out)) u      (Liu et al., 2025)

    The second makes the update's RMS equal ``consistent_rms`` for every shape (0.2 matches
    AdamW's typical RMS, so AdamW learning rates carry over).

    Args:
      weight_dimension_numbers: as in :func:`scale_by_muon`; ``None`` entries are untouched.
      consistent_rms: the target RMS, or ``None`` for the width-transfer rule.

    References:
      Liu et al., "Muon is Scalable for LLM Training", 2025, https://arxiv.org/abs/2502.16982.

    >>> import jax.numpy as jnp
    >>> t = scale_by_shape(consistent_rms=0.2)
    >>> u, _ = t.update({"w": jnp.ones((4, 16))}, t.init(None))
    >>> round(float(u["w"][0, 0]), 4)     # 0.2 * sqrt(16)
    0.8
    """
    if consistent_rms is not None:
        check_nonnegative("consistent_rms", consistent_rms)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del extra
        leaves, treedef = jax.tree.flatten(updates, is_leaf=_is_none)
        dims = _resolve_dims(
            weight_dimension_numbers,
            params if params is not None else updates,
            "weight_dimension_numbers",
        )
        out = []
        for u, d in zip(leaves, dims, strict=True):
            if u is None or d is None:
                out.append(u)
                continue
            fan_in, fan_out = _fans(jnp.shape(u), d, "scale_by_shape")
            if consistent_rms is None:
                s = math.sqrt(max(1.0, fan_out / fan_in))
            else:
                s = consistent_rms * math.sqrt(max(fan_in, fan_out))
            out.append((s * u).astype(u.dtype))
        return treedef.unflatten(out), state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- ADOPT


def scale_by_adopt(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.9999,
    eps: float | jax.Array = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = lambda step: step**0.25,
) -> GradientTransformation:
    """ADOPT's direction (Taniguchi et al., 2024): normalise by the *previous* second moment.

    Adam divides ``g_t`` by a ``v_t`` that contains ``g_t`` itself, which correlates the two
    and breaks convergence for small ``β2``. ADOPT normalises with ``v_{t-1}`` and applies the
    momentum *after* normalising. Update rule (``t = 0`` is the first call)::

        t = 0:   v_0 = g_0²,  m_0 = 0,  u_0 = 0                   (the first call only fills v)
        t >= 1:  m_t = β1 m_{t-1} + (1 - β1) clip(g_t / max(sqrt(v_{t-1}), ε), c_t)
                 v_t = β2 v_{t-1} + (1 - β2) g_t²
                 u_t = m_t        (nesterov: β1 m_t + (1 - β1) clip(...))

    with ``c_t = clip_value_fn(t)`` (``t^{1/4}`` by default; ``use_clipping=False`` drops it).

    Args:
      b1, b2: ``β1, β2`` in [0, 1).
      eps: ``ε`` >= 0, the floor of ``sqrt(v)``.
      mu_dtype: dtype of ``m`` (default: the params').
      nesterov: Nesterov-style look-ahead on the momentum.
      use_clipping: clip the normalised gradient to ``[-c_t, c_t]`` (recommended: it is what
        makes the first steps stable).
      clip_value_fn: ``t -> c_t``.

    References:
      Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any β2 with the Optimal
      Rate", NeurIPS 2024, https://arxiv.org/abs/2411.02853.

    >>> import jax.numpy as jnp
    >>> t = scale_by_adopt(b1=0.0)
    >>> s = t.init({"w": jnp.zeros(())})
    >>> u, s = t.update({"w": jnp.array(2.0)}, s)     # first call: only v_0 = 4
    >>> float(u["w"])
    0.0
    >>> u, s = t.update({"w": jnp.array(1.0)}, s)     # 1 / sqrt(4)
    >>> float(u["w"])
    0.5
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    if not callable(clip_value_fn):
        raise TypeError(f"clip_value_fn must be a callable step -> value, got {clip_value_fn!r}.")

    def init(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, mu_dtype),
            nu=tree_zeros_like(params),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        started = state.count > 0
        b1_ = jnp.where(started, b1, 1.0)
        b2_ = jnp.where(started, b2, 0.0)
        clip = clip_value_fn(state.count) if use_clipping else None

        def leaf(g, m, v):
            n = g / jnp.maximum(jnp.sqrt(v), eps)
            if clip is not None:
                n = jnp.clip(n, -clip, clip)
            m_new = update_moment(n, m, b1_, 1)
            v_new = update_moment(g, v, b2_, 2)
            u = update_moment(n, m_new, b1_, 1) if nesterov else m_new
            return u.astype(g.dtype), _cast(m_new, m), _cast(v_new, v)

        u, mu, nu = _leafwise(leaf, 3, updates, state.mu, state.nu)
        return u, ScaleByAdamState(count=safe_increment(state.count), mu=mu, nu=nu)

    return GradientTransformation(init, update)


def _leafwise(fn: Callable, n_out: int, first: Any, *rest: Any) -> tuple:
    """Apply ``fn`` to matching leaves; ``None`` leaves of ``first`` give ``None``/pass state."""
    leaves, treedef = jax.tree.flatten(first, is_leaf=_is_none)
    others = [treedef.flatten_up_to(t) for t in rest]
    outs: list[list[Any]] = [[] for _ in range(n_out)]
    for xs in zip(leaves, *others, strict=True):
        res = (None, *xs[1:n_out]) if xs[0] is None else fn(*xs)
        for o, r in zip(outs, res, strict=True):
            o.append(r)
    return tuple(treedef.unflatten(o) for o in outs)


# ----------------------------------------------------------------------------- AdEMAMix


class ScaleByAdemamixState(NamedTuple):
    """Step counter, fast EMA ``m1``, slow EMA ``m2`` and second moment ``v``."""

    count: jax.Array
    m1: Any
    m2: Any
    nu: Any


def scale_by_ademamix(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 6.0,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    """AdEMAMix's direction (Pagliardini et al., 2024): Adam plus a very slow momentum.

    Update rule (``t`` starts at 1)::

        m1_t = β1 m1_{t-1} + (1 - β1) g_t          (fast EMA, debiased)
        m2_t = β3 m2_{t-1} + (1 - β3) g_t          (slow EMA, not debiased)
        v_t  = β2 v_{t-1} + (1 - β2) g_t²
        u_t  = (m1_t / (1 - β1^t) + α m2_t) / (sqrt(v_t / (1 - β2^t) + ε_root) + ε)

    ``b3`` and ``alpha`` may be schedules ``count -> value`` (count from 0); the paper warms
    them up (see :func:`gdopt.ademamix_alpha_scheduler` and
    :func:`gdopt.ademamix_beta3_scheduler`).

    Args:
      b1, b2: ``β1, β2`` in [0, 1).
      b3: ``β3`` in [0, 1) (number, array or schedule).
      alpha: ``α`` >= 0, the weight of the slow EMA (number, array or schedule).
      eps, eps_root: ``ε`` outside and ``ε_root`` inside the square root.
      mu_dtype: dtype of ``m1`` and ``m2`` (default: the params').

    References:
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
      ICLR 2025, https://arxiv.org/abs/2409.03113.

    >>> import jax.numpy as jnp
    >>> t = scale_by_ademamix(alpha=0.0)      # alpha = 0 is Adam
    >>> u, _ = t.update({"w": jnp.array(-3.0)}, t.init({"w": jnp.zeros(())}))
    >>> round(float(u["w"]), 4)
    -1.0
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_decay("b3", b3)
    check_nonnegative("alpha", alpha)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        return ScaleByAdemamixState(
            count=jnp.zeros([], jnp.int32),
            m1=tree_zeros_like(params, mu_dtype),
            m2=tree_zeros_like(params, mu_dtype),
            nu=tree_zeros_like(params),
        )

    def update(updates, state, params=None, **extra):
        del params, extra
        b3_t = resolve(b3, state.count)
        alpha_t = resolve(alpha, state.count)
        count = safe_increment(state.count)
        c1 = 1 - jnp.asarray(b1, jnp.float32) ** count
        c2 = 1 - jnp.asarray(b2, jnp.float32) ** count

        def leaf(g, m1, m2, v):
            m1n = update_moment(g, m1, b1, 1)
            m2n = update_moment(g, m2, b3_t, 1)
            vn = update_moment(g, v, b2, 2)
            den = jnp.sqrt(vn / c2.astype(vn.dtype) + eps_root) + eps
            u = (m1n / c1.astype(m1n.dtype) + alpha_t * m2n) / den
            return u.astype(g.dtype), _cast(m1n, m1), _cast(m2n, m2), _cast(vn, v)

        u, m1, m2, nu = _leafwise(leaf, 4, updates, state.m1, state.m2, state.nu)
        return u, ScaleByAdemamixState(count=count, m1=m1, m2=m2, nu=nu)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- schedule-free


class ScheduleFreeState(NamedTuple):
    """Schedule-free averaging.

    Attributes:
      b1: the interpolation ``β`` (kept here so :func:`schedule_free_eval_params` can use it).
      weight_sum: ``Σ_i w_i``, the total averaging weight so far.
      step_count: step counter, starting at 1.
      max_lr: the largest learning rate seen so far.
      base_optimizer_state: the state of the wrapped optimizer.
      z: the base optimizer's iterate ``z_t``.
    """

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: Any
    z: Any


def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    b1: float | jax.Array = 0.9,
    weight_lr_power: float | jax.Array = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Schedule-free averaging around a base optimizer (Defazio et al., 2024).

    Three sequences: the base optimizer moves ``z``, ``x`` is a weighted average of the
    ``z``'s, and gradients are taken at their interpolation ``y`` (the parameters you hold)::

        z_{t+1} = z_t + base_update(∇f(y_t))
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1},   c_{t+1} = w_t / Σ_{i<=t} w_i
        y_{t+1} = β x_{t+1} + (1 - β) z_{t+1}

    with weights ``w_t = (max_{i<=t} α_i)^{weight_lr_power}``. ``x`` is not stored: it is
    recovered as ``x = (y - (1 - β) z) / β``. Evaluate (and ship) the model at ``x``, with
    :func:`schedule_free_eval_params`. No learning-rate decay schedule is needed.

    Args:
      base_optimizer: the optimizer that moves ``z`` (e.g. SGD, or Adam without momentum);
        its updates include the learning rate.
      learning_rate: the base optimizer's learning rate (for the averaging weights); a number,
        array or schedule evaluated at the 1-based step count.
      b1: ``β`` in (0, 1): the interpolation between ``x`` and ``z``.
      weight_lr_power: exponent of the averaging weights.
      state_dtype: dtype of ``z`` (default: the params').

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled",
      NeurIPS 2024, https://arxiv.org/abs/2405.15682.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> opt = schedule_free(gdopt.sgd(0.5), learning_rate=0.5)
    >>> p = {"w": jnp.array(4.0)}
    >>> s = opt.init(p)
    >>> for _ in range(30):
    ...     u, s = opt.update(jax.grad(lambda q: (q["w"] - 1.0) ** 2)(p), s, p)
    ...     p = gdopt.apply_updates(p, u)
    >>> round(float(schedule_free_eval_params(s, p)["w"]), 3)
    1.0
    """
    if not (hasattr(base_optimizer, "init") and hasattr(base_optimizer, "update")):
        raise TypeError(
            f"base_optimizer must be a GradientTransformation, got {type(base_optimizer).__name__}."
        )
    check_learning_rate(learning_rate)
    check_scalar("b1", b1, low=0.0, high=1.0, low_open=True, high_open=True)
    check_nonnegative("weight_lr_power", weight_lr_power)

    def init(params):
        dtype = _scalar_dtype(params)
        z = jax.tree.map(lambda p: jnp.array(p, dtype=state_dtype or jnp.asarray(p).dtype), params)
        return ScheduleFreeState(
            b1=jnp.asarray(b1, dtype),
            weight_sum=jnp.zeros([], dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=z,
        )

    def update(updates, state, params=None, **extra):
        _need_params(params, "schedule_free")
        dtype = state.max_lr.dtype
        lr = jnp.asarray(resolve(learning_rate, state.step_count), dtype)
        max_lr = jnp.maximum(state.max_lr, lr)
        weight = max_lr**weight_lr_power
        total = state.weight_sum + weight
        ck = jnp.where(total > 0, weight / jnp.where(total > 0, total, 1), 0.0)
        ck = jnp.where(jnp.isnan(weight) | jnp.isnan(total), jnp.nan, ck)
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra
        )
        # y was formed with the β of the previous step (state.b1); the new y uses the current
        # β (they differ only if b1 is changed between steps, e.g. by set_hyperparams).
        beta_old, beta = state.b1, jnp.asarray(b1, dtype)

        def leaf(g, y, z, bu):
            z_new = z + bu
            x = (y - (1 - beta_old) * z) / beta_old
            x = (1 - ck) * x + ck * z_new
            y_new = beta * x + (1 - beta) * z_new
            return (y_new - y).astype(g.dtype), _cast(z_new, z)

        u, z = _leafwise2(leaf, updates, params, state.z, base_updates)
        new_state = ScheduleFreeState(
            b1=beta,
            weight_sum=total.astype(dtype),
            step_count=safe_increment(state.step_count),
            max_lr=max_lr.astype(dtype),
            base_optimizer_state=base_state,
            z=z,
        )
        return u, new_state

    return GradientTransformation(init, update)


def _leafwise2(fn: Callable, updates: Any, params: Any, z: Any, bu: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(updates, is_leaf=_is_none)
    ps, zs, bus = (treedef.flatten_up_to(t) for t in (params, z, bu))
    out_u, out_z = [], []
    for g, p, zz, b in zip(leaves, ps, zs, bus, strict=True):
        if g is None or b is None:
            out_u.append(g)
            out_z.append(zz)
        else:
            uu, zn = fn(g, p, zz, b)
            out_u.append(uu)
            out_z.append(zn)
    return treedef.unflatten(out_u), treedef.unflatten(out_z)


def schedule_free_eval_params(state: Any, params: Any) -> Any:
    """The schedule-free average ``x = (y - (1 - β) z) / β``: the parameters to evaluate.

    Args:
      state: a state of :func:`schedule_free` or of an optimizer containing one (e.g.
        :func:`gdopt.schedule_free_adamw`).
      params: the parameters being trained (the ``y`` sequence).

    Returns:
      The ``x`` sequence's current value, with the params' structure and dtypes.

    Raises:
      ValueError: when ``state`` holds no :class:`ScheduleFreeState`.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.schedule_free_sgd(0.1)
    >>> p = {"w": jnp.array(1.0)}
    >>> float(schedule_free_eval_params(opt.init(p), p)["w"])   # at init x = y = z
    1.0
    """
    is_sf = lambda x: isinstance(x, ScheduleFreeState)
    found = [x for x in jax.tree.leaves(state, is_leaf=is_sf) if is_sf(x)]
    if not found:
        raise ValueError(
            "schedule_free_eval_params needs the state of a schedule-free optimizer "
            "(gdopt.schedule_free, schedule_free_sgd or schedule_free_adamw); this state holds "
            "no ScheduleFreeState."
        )
    sf = found[0]
    beta = sf.b1
    return jax.tree.map(
        lambda y, z: ((y - (1 - beta) * z) / beta).astype(jnp.asarray(y).dtype), params, sf.z
    )


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


def scale_by_prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple = (0.9, 0.999),
    beta3: float | jax.Array | None = None,
    eps: float | jax.Array = 1e-8,
    estim_lr0: float | jax.Array = 1e-6,
    estim_lr_coef: float | jax.Array = 1.0,
    weight_decay: float | jax.Array = 0.0,
    safeguard_warmup: bool = False,
) -> GradientTransformation:
    """Prodigy's step (Mishchenko & Defazio, 2023): Adam with a learned step size ``d``.

    ``d`` estimates the distance ``||x_0 - x*||`` from below and only grows. With
    ``γ_t = α_t sqrt(1 - β2^t) / (1 - β1^t)`` (``α_t`` the learning-rate multiplier,
    normally 1) and ``β3 = sqrt(β2)`` by default::

        m_t = β1 m_{t-1} + (1 - β1) d_t g_t
        v_t = β2 v_{t-1} + (1 - β2) d_t² g_t²
        s_t = β3 s_{t-1} + γ_t d_t² g_t / d_0            (safeguard_warmup: d_t² → d_t)
        r_t = β3 r_{t-1} + γ_t d_t² <g_t, x_0 - x_t> / d_0
        d_{t+1} = max(d_t, coef · r_t / ||s_t||_1)
        step_t = γ_t d_t (m_t / (sqrt(v_t) + d_t ε) + λ x_t)

    The output is the positive step; :func:`gdopt.prodigy` negates it. (This is the authors'
    released form, with the ``(1 - β3)`` factors of the paper's Algorithm 4 cancelled between
    ``r`` and ``s`` and both divided by ``d_0``.)

    Args:
      learning_rate: ``α``, a multiplier of the learned step (number, array or schedule).
      betas: ``(β1, β2)`` in [0, 1).
      beta3: decay of ``r`` and ``s`` (default ``sqrt(β2)``).
      eps: ``ε`` >= 0 (multiplied by ``d``).
      estim_lr0: ``d_0`` > 0, the initial distance estimate.
      estim_lr_coef: ``coef`` > 0, a multiplier of the estimate.
      weight_decay: ``λ`` >= 0 (decoupled, scaled by ``γ_t d_t``).
      safeguard_warmup: drop the learning rate from ``s`` during warm-up (more stable with a
        warm-up schedule).

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
    if not callable(learning_rate):
        check_nonnegative("learning_rate", learning_rate)
    _check_betas("betas", betas)
    if beta3 is not None:
        check_decay("beta3", beta3)
    check_nonnegative("eps", eps)
    check_scalar("estim_lr0", estim_lr0, low=0.0, low_open=True)
    check_scalar("estim_lr_coef", estim_lr_coef, low=0.0, low_open=True)
    check_nonnegative("weight_decay", weight_decay)

    def init(params):
        dtype = _scalar_dtype(params)
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
        _need_params(params, "prodigy")
        b1, b2 = betas[0], betas[1]
        b3 = jnp.sqrt(jnp.asarray(b2, jnp.float32)) if beta3 is None else beta3
        dtype = state.estim_lr.dtype
        count = safe_increment(state.count)
        lr = resolve(learning_rate, state.count)
        bc = jnp.sqrt(1 - jnp.asarray(b2, dtype) ** count) / (1 - jnp.asarray(b1, dtype) ** count)
        d = state.estim_lr
        dlr = jnp.asarray(d * lr * bc, dtype)
        numer = tree_vdot(updates, jax.tree.map(lambda p0, p: p0 - p, state.params0, params))
        sum_lr = d if safeguard_warmup else dlr

        def leaf(g, ea, eas, s, p):
            dg = d * g
            ea_n = b1 * ea + (1 - b1) * dg
            eas_n = b2 * eas + (1 - b2) * dg * dg
            s_n = b3 * s + sum_lr * dg / estim_lr0
            return _cast(ea_n, ea), _cast(eas_n, eas), _cast(s_n, s)

        ea, eas, s = _leafwise_state(
            leaf, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum, params
        )
        num_w = b3 * state.numerator_weighted + (d / estim_lr0) * dlr * numer
        den = sum(
            (jnp.sum(jnp.abs(x)).astype(dtype) for x in jax.tree.leaves(s)), jnp.zeros([], dtype)
        )
        new_d = jnp.maximum(d, estim_lr_coef * num_w / den)
        step = _map(
            lambda g, m, v, p: (dlr * (weight_decay * p + m / (jnp.sqrt(v) + d * eps))).astype(
                g.dtype
            ),
            updates,
            ea,
            eas,
            params,
        )
        new_state = ProdigyState(
            exp_avg=ea,
            exp_avg_sq=eas,
            grad_sum=s,
            params0=state.params0,
            estim_lr=new_d.astype(dtype),
            numerator_weighted=num_w.astype(dtype),
            count=count,
        )
        return step, new_state

    return GradientTransformation(init, update)


def _leafwise_state(fn: Callable, updates: Any, *trees: Any) -> tuple:
    """Per-leaf new state buffers; ``trees[:-1]`` are state trees, ``trees[-1]`` the params."""
    leaves, treedef = jax.tree.flatten(updates, is_leaf=_is_none)
    flat = [treedef.flatten_up_to(t) for t in trees]
    n = len(trees) - 1
    outs: list[list[Any]] = [[] for _ in range(n)]
    for g, *xs in zip(leaves, *flat, strict=True):
        res = tuple(xs[:n]) if g is None else fn(g, *xs)
        for o, r in zip(outs, res, strict=True):
            o.append(r)
    return tuple(treedef.unflatten(o) for o in outs)


class DAdaptAdamWState(NamedTuple):
    """D-Adapt AdamW's moments, its ``s`` sum and the distance estimate ``d``."""

    exp_avg: Any
    exp_avg_sq: Any
    grad_sum: Any
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


def scale_by_dadapt_adamw(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple = (0.9, 0.999),
    eps: float | jax.Array = 1e-8,
    estim_lr0: float | jax.Array = 1e-6,
    weight_decay: float | jax.Array = 0.0,
) -> GradientTransformation:
    """D-Adaptation's Adam step (Defazio & Mishchenko, 2023): AdamW with a learned ``d``.

    With ``γ_t = α_t d_t sqrt(1 - β2^t) / (1 - β1^t)`` and ``β = sqrt(β2)``::

        m_t = β1 m_{t-1} + (1 - β1) γ_t g_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²
        r_t = β r_{t-1} + (1 - β) γ_t <g_t, s_{t-1} / (sqrt(v_{t-1}) + ε)>
        s_t = β s_{t-1} + (1 - β) γ_t g_t
        d_{t+1} = max(d_t, r_t / ((1 - β) ||s_t||_1))
        step_t = m_t / (sqrt(v_t) + ε) + λ γ_t x_t

    The output is the positive step; :func:`gdopt.dadapt_adamw` negates it.

    Args:
      learning_rate: ``α``, a multiplier of the learned step (number, array or schedule).
      betas: ``(β1, β2)`` in [0, 1).
      eps: ``ε`` >= 0.
      estim_lr0: ``d_0`` > 0, the initial estimate.
      weight_decay: ``λ`` >= 0 (decoupled, scaled by ``γ_t``).

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
    if not callable(learning_rate):
        check_nonnegative("learning_rate", learning_rate)
    _check_betas("betas", betas)
    check_nonnegative("eps", eps)
    check_scalar("estim_lr0", estim_lr0, low=0.0, low_open=True)
    check_nonnegative("weight_decay", weight_decay)

    def init(params):
        dtype = _scalar_dtype(params)
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
        _need_params(params, "dadapt_adamw")
        b1, b2 = betas[0], betas[1]
        dtype = state.estim_lr.dtype
        sb2 = jnp.sqrt(jnp.asarray(b2, dtype))
        count = safe_increment(state.count)
        lr = resolve(learning_rate, state.count)
        bc = jnp.sqrt(1 - jnp.asarray(b2, dtype) ** count) / (1 - jnp.asarray(b1, dtype) ** count)
        dlr = jnp.asarray(state.estim_lr * lr * bc, dtype)
        numer = tree_vdot(
            updates,
            jax.tree.map(lambda s, v: s / (jnp.sqrt(v) + eps), state.grad_sum, state.exp_avg_sq),
        )

        def leaf(g, ea, eas, s, p):
            del p
            ea_n = b1 * ea + (1 - b1) * dlr * g
            eas_n = b2 * eas + (1 - b2) * g * g
            s_n = sb2 * s + (1 - sb2) * dlr * g
            return _cast(ea_n, ea), _cast(eas_n, eas), _cast(s_n, s)

        ea, eas, s = _leafwise_state(
            leaf, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum, params
        )
        l1 = sum(
            (jnp.sum(jnp.abs(x)).astype(dtype) for x in jax.tree.leaves(s)), jnp.zeros([], dtype)
        )
        num_w = sb2 * state.numerator_weighted + (1 - sb2) * dlr * numer
        new_d = jnp.maximum(state.estim_lr, num_w / ((1 - sb2) * l1))
        step = _map(
            lambda g, m, v, p: (weight_decay * dlr * p + m / (jnp.sqrt(v) + eps)).astype(g.dtype),
            updates,
            ea,
            eas,
            params,
        )
        new_state = DAdaptAdamWState(
            exp_avg=ea,
            exp_avg_sq=eas,
            grad_sum=s,
            estim_lr=new_d.astype(dtype),
            numerator_weighted=num_w.astype(dtype),
            count=count,
        )
        return step, new_state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Sophia


class HutchinsonState(NamedTuple):
    """The PRNG key of the Hutchinson estimator."""

    key: jax.Array


def _objective(extra: dict, who: str) -> Callable:
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


def hutchinson_estimator_diag_hessian(random_seed: Any = None) -> GradientTransformation:
    """Hutchinson's unbiased estimate of the Hessian's diagonal: ``u ⊙ (H u)``.

    ``u`` has independent Rademacher (±1) entries, so ``E[u ⊙ H u] = diag(H)``; ``H u`` is one
    Hessian-vector product (forward-over-reverse, ``jax.jvp`` of ``jax.grad``). The incoming
    updates are ignored; the objective comes as the keyword extra ``obj_fn`` (or
    ``value_fn``): ``update(grads, state, params, obj_fn=loss_fn)``.

    Args:
      random_seed: a PRNG key (``jax.random.PRNGKey(...)``) or an int seed; default 0. A new
        key is split off at every call, so runs are reproducible.

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
        _need_params(params, "hutchinson_estimator_diag_hessian")
        obj = _objective(extra, "hutchinson_estimator_diag_hessian")
        key, sub = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(sub, max(len(leaves), 1))
        signs = treedef.unflatten(
            [
                jax.random.rademacher(k, jnp.shape(x), jnp.float32).astype(jnp.asarray(x).dtype)
                for k, x in zip(keys, leaves, strict=False)
            ]
        )
        hvp = jax.jvp(jax.grad(obj), (params,), (signs,))[1]
        return jax.tree.map(lambda h, s: h * s, hvp, signs), HutchinsonState(key=key)

    return GradientTransformation(init, update)


class SophiaState(NamedTuple):
    """Step counter, momentum ``m``, Hessian-diagonal EMA ``h`` and the estimator's state."""

    count: jax.Array
    mu: Any
    nu: Any
    hessian_fn_state: Any


def scale_by_sophia(
    b1: float | jax.Array = 0.965,
    b2: float | jax.Array = 0.99,
    eps: float | jax.Array = 1e-8,
    gamma: float | jax.Array = 0.01,
    clip_threshold: float | jax.Array | None = 1.0,
    update_interval: int | jax.Array = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
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
      update_interval: ``k`` >= 1, steps between Hessian estimates.
      hessian_diagonal_fn: a transform returning a Hessian-diagonal estimate from
        ``update(grads, state, params, obj_fn=...)``; default
        :func:`hutchinson_estimator_diag_hessian` with seed 0.
      mu_dtype: dtype of ``m`` (default: the params').
      verbose: print the fraction of unclipped coordinates ("win rate") every
        ``print_win_rate_every_n_steps`` steps (``jax.debug.print``).
      print_win_rate_every_n_steps: printing period (used when ``verbose``).

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
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_scalar("eps", eps, low=0.0, low_open=True)
    check_scalar("gamma", gamma, low=0.0, low_open=True)
    if clip_threshold is not None:
        check_scalar("clip_threshold", clip_threshold, low=0.0, low_open=True)
    if isinstance(update_interval, (int, np.integer)):
        _check_int("update_interval", update_interval, 1)
    if verbose:
        _check_int("print_win_rate_every_n_steps", print_win_rate_every_n_steps, 1)
    hess = (
        hessian_diagonal_fn
        if hessian_diagonal_fn is not None
        else (hutchinson_estimator_diag_hessian())
    )

    def init(params):
        return SophiaState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, mu_dtype),
            nu=tree_zeros_like(params),
            hessian_fn_state=hess.init(params),
        )

    def update(updates, state, params=None, **extra):
        _need_params(params, "sophia")
        _objective(extra, "sophia")
        count = safe_increment(state.count)
        c1 = 1 - jnp.asarray(b1, jnp.float32) ** count

        def leaf(g, m, h):
            m_new = update_moment(g, m, b1, 1)
            u = (m_new / c1.astype(m_new.dtype)) / jnp.maximum(gamma * h, eps)
            if clip_threshold is not None:
                u = jnp.clip(u, -clip_threshold, clip_threshold)
            return u.astype(g.dtype), _cast(m_new, m)

        u, mu = _leafwise(leaf, 2, updates, state.mu, state.nu)
        if verbose and clip_threshold is not None:
            kept = sum(jnp.sum(jnp.abs(x) < clip_threshold) for x in jax.tree.leaves(u))
            rate = kept / max(sum(np.size(x) for x in jax.tree.leaves(u)), 1)
            jax.lax.cond(
                count % print_win_rate_every_n_steps == 0,
                lambda: jax.debug.print("sophia win rate (unclipped fraction): {}", rate),
                lambda: None,
            )

        def refresh(hs, nu):
            est, hs = hess.update(updates, hs, params, **extra)
            nu = _map(lambda e, h: _cast(update_moment(e, h, b2, 1), h), est, nu)
            return hs, nu

        hs, nu = jax.lax.cond(
            state.count % update_interval == 0,
            refresh,
            lambda hs, nu: (hs, nu),
            state.hessian_fn_state,
            state.nu,
        )
        return u, SophiaState(count=count, mu=mu, nu=nu, hessian_fn_state=hs)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Polyak


def scale_by_polyak(
    f_min: float | jax.Array = 0.0,
    max_learning_rate: float | jax.Array = 1.0,
    eps: float | jax.Array = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    """Polyak's step size: multiply the updates by ``min((f(x) - f*) / (||u||² + ε), α_max)``.

    With ``u = g`` this jumps to where the linearisation of ``f`` reaches ``f*`` (exact for
    ``f* = min f`` on a 1-D quadratic's tangent); ``α_max`` caps the step (the "SPS_max" rule
    of Loizou et al.). ``variant="sps+"`` uses ``max(f(x) - f*, 0)``. The step is 0 where
    ``||u||² + ε`` is below machine precision.

    The loss value is needed: pass it as a keyword extra,
    ``opt.update(grads, state, params, value=loss)``.

    Args:
      f_min: ``f*``, a lower bound of the objective (0 for non-negative losses).
      max_learning_rate: ``α_max`` > 0.
      eps: ``ε`` >= 0 added to ``||u||²``.
      variant: ``"sps"`` or ``"sps+"``.

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
    check_scalar("f_min", f_min)
    check_learning_rate(max_learning_rate, "max_learning_rate")
    check_nonnegative("eps", eps)
    _check_choice("variant", variant, ("sps", "sps+"))

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del params
        value = extra.get("value")
        if value is None:
            raise ValueError(
                "scale_by_polyak (polyak_sgd) needs the loss value at the current params: call "
                "opt.update(grads, state, params, value=loss)."
            )
        sq = tree_l2_norm(updates, squared=True)
        gap = jnp.asarray(value - f_min).astype(sq.dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0.0)
        den = sq + eps
        tiny = den <= jnp.finfo(sq.dtype).tiny
        step = jnp.where(tiny, 0.0, jnp.minimum(gap / jnp.where(tiny, 1.0, den), max_learning_rate))
        return _map(lambda u: (step * u).astype(u.dtype), updates), state

    return GradientTransformation(init, update)
