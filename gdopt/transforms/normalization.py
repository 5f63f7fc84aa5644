"""Normalised directions: sign methods, layer-wise trust ratios and orthogonalisation.

The building blocks of the sign methods (signSGD, Signum, Lion), the layer-wise methods
(LARS, LAMB, NovoGrad, Fromage, Adafactor's relative step) and Muon. Each returns a
:class:`~gdopt.base.GradientTransformation`. Notation: ``g`` gradient, ``m`` first moment,
``v`` second moment, ``t`` step count starting at 1, ``β1, β2`` decay rates, ``ε`` stability
constant, ``λ`` weight decay, ``p`` parameter.

Dtypes: updates come out in the dtype of the incoming updates and every state leaf keeps the
dtype it was created with (``mu_dtype`` / ``nu_dtype`` choose the moments' dtypes), so the
state's dtypes never change across steps (``lax.scan`` / ``lax.cond`` need that).

Packing (:mod:`gdopt.packing`): the sign methods act coordinate by coordinate and are
packable; everything else here works leaf by leaf (a layer's norm, its second moment, its
shape as a matrix) and is not.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics as num
from gdopt._numerics import (
    abs_sq,
    cast_like,
    cast_tree_like,
    compute_dtype,
    floor_norm,
    is_none,
    map_leaves,
    safe_increment,
    safe_norm,
    safe_rms,
    tree_map,
    update_moment,
)
from gdopt._traits import transform
from gdopt._validation import (
    Constraint,
    Interval,
    OneOf,
    check_choice,
    check_int,
    check_nonnegative,
    need_params,
)
from gdopt.base import (
    DecayValue,
    EmptyState,
    GradientTransformation,
    NonNegativeValue,
    OptionalNonNegativeValue,
    RealValue,
    Steps,
    init_empty_state,
)
from gdopt.tree import key_path_str, tree_l2_norm, tree_zeros_like

__all__ = [
    "scale_by_sign",
    "scale_by_lion",
    "scale_by_trust_ratio",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "scale_by_novograd",
    "scale_by_muon",
    "scale_by_shape",
    "orthogonalize_via_newton_schulz",
    "resolve_ns_coeffs",
    "resolve_dimension_numbers",
    "NewtonSchulzCoeffs",
    "MuonDimensionNumbers",
    "ScaleByLionState",
    "ScaleByNovogradState",
    "MuonState",
    "normalize_by_update_norm",
    "normalize",
    "NormalizeState",
]


# ----------------------------------------------------------------------------- signs


@transform(packable=True)
def scale_by_sign() -> GradientTransformation:
    """Replace every update by its sign: ``u <- sign(u)`` (signSGD; Bernstein et al., 2018).

    References:
      Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD: Compressed Optimisation for
      Non-Convex Problems", ICML 2018, https://arxiv.org/abs/1802.04434.

    >>> t = scale_by_sign()
    >>> t.update({"w": jnp.array([-0.3, 0.0, 7.0])}, t.init(None))[0]["w"].tolist()
    [-1.0, 0.0, 1.0]
    """

    def update(updates, state, params=None, **extra):
        del params, extra
        return tree_map(jnp.sign, updates), state

    return GradientTransformation(init_empty_state, update)


class ScaleByLionState(NamedTuple):
    """Step counter and Lion's momentum ``m``."""

    count: jax.Array
    mu: Any


@transform(packable=True)
def scale_by_lion(
    b1: DecayValue = 0.9,
    b2: DecayValue = 0.99,
    mu_dtype: Any = None,
    *,
    mode: Annotated[str, OneOf(("hard", "smooth", "refined"))] = "hard",
    smooth_beta: RealValue = 1.0,
) -> GradientTransformation:
    """Lion's direction: the sign of an interpolated momentum (Chen et al., 2023).

    Update rule::

        c_t = β1 m_{t-1} + (1 - β1) g_t
        u_t = sign(c_t)                      (mode="hard", the paper's rule)
        m_t = β2 m_{t-1} + (1 - β2) g_t

    Two interpolation momenta: ``β1`` for the step, the slower ``β2`` for the memory. Every
    coordinate moves by exactly the learning rate. ``mode="smooth"`` uses
    ``tanh(smooth_beta · c_t)`` and ``mode="refined"`` uses ``c_t`` where ``|c_t| < 1`` and its
    sign elsewhere (smooth relaxations of the sign).

    Args:
      b1: interpolation factor of the step, in [0, 1).
      b2: decay of the momentum, in [0, 1).
      mu_dtype: dtype of ``m`` (default: the params').
      mode: ``"hard"``, ``"smooth"`` or ``"refined"``.
      smooth_beta: the tanh slope of ``mode="smooth"`` (any finite number).

    Returns:
      The transformation; its state is a :class:`ScaleByLionState`.

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
      https://arxiv.org/abs/2302.06675.

    >>> t = scale_by_lion()
    >>> u, _ = t.update({"w": jnp.array([0.01, -5.0, 0.0])}, t.init({"w": jnp.zeros(3)}))
    >>> u["w"].tolist()
    [1.0, -1.0, 0.0]
    """

    def direction(c):
        if mode == "hard":
            return jnp.sign(c)
        if mode == "smooth":
            return jnp.tanh(num.mul(smooth_beta, c))
        return jnp.where(jnp.abs(c) < 1.0, c, jnp.sign(c))

    def init(params):
        return ScaleByLionState(
            count=jnp.zeros([], jnp.int32), mu=tree_zeros_like(params, dtype=mu_dtype)
        )

    def update(updates, state, params=None, **extra):
        del params, extra

        def leaf(g, m):
            u = direction(num.add(num.mul(1 - b1, g), num.mul(b1, m)))
            m = update_moment(g, m, b2, 1)
            return u.astype(g.dtype), m

        u, mu = map_leaves(leaf, 2, updates, state.mu)
        mu = cast_tree_like(mu, state.mu)
        return u, ScaleByLionState(count=safe_increment(state.count), mu=mu)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- layer-wise


@transform(packable=False)
def scale_by_trust_ratio(
    min_norm: NonNegativeValue = 0.0,
    trust_coefficient: NonNegativeValue = 1.0,
    eps: NonNegativeValue = 0.0,
) -> GradientTransformation:
    """Layer-wise trust ratio of LARS and LAMB (You et al., 2017 and 2020).

    Each leaf's update is rescaled so that its norm is proportional to the parameter's::

        ||p||' = max(||p||, min_norm),  ||u||' = max(||u||, min_norm)
        u <- u · η ||p||' / (||u||' + ε)       (η = trust_coefficient)
        u <- u                                  where ||p||' = 0 or ||u||' = 0

    Not packable: the norms are per leaf (per layer).

    Args:
      min_norm: floor on both norms (>= 0); 0 leaves zero-norm layers unscaled.
      trust_coefficient: ``η`` >= 0 (LARS uses ``1e-3``, LAMB ``1``).
      eps: added to the update's norm (>= 0).

    Returns:
      A stateless transformation (``update`` needs the params).

    References:
      You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017,
      https://arxiv.org/abs/1708.03888. You et al., "Large Batch Optimization for Deep
      Learning: Training BERT in 76 minutes", ICLR 2020, https://arxiv.org/abs/1904.00962.

    >>> t = scale_by_trust_ratio()
    >>> p = {"w": jnp.array([3.0, 4.0])}
    >>> u, _ = t.update({"w": jnp.array([0.0, 0.5])}, t.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]   # rescaled to norm ||p|| = 5
    [0.0, 5.0]
    """

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, "scale_by_trust_ratio", "the ratio uses ||p||")

        def leaf(u, p):
            p_norm = floor_norm(safe_norm(p), min_norm)
            u_norm = floor_norm(safe_norm(u), min_norm)
            ratio = num.div(num.mul(trust_coefficient, p_norm), num.add(u_norm, eps))
            ratio = jnp.where((p_norm == 0) | (u_norm == 0), 1.0, ratio)
            return num.mul(u, ratio).astype(u.dtype)

        return tree_map(leaf, updates, params), state

    return GradientTransformation(init_empty_state, update)


@transform(packable=False)
def scale_by_param_block_norm(min_scale: NonNegativeValue = 1e-3) -> GradientTransformation:
    """Multiply each leaf's update by its parameter's norm: ``u <- u · max(||p||, min_scale)``.

    Makes step sizes relative to the size of each parameter block (a layer), so one learning
    rate suits layers of very different scales. Not packable: the norm is per leaf.

    Args:
      min_scale: the floor on ``||p||`` (>= 0), so zero-initialised blocks still move.

    Returns:
      A stateless transformation (``update`` needs the params).

    References:
      Shazeer & Stern, "Adafactor", ICML 2018 (relative step size),
      https://arxiv.org/abs/1804.04235.

    >>> t = scale_by_param_block_norm()
    >>> p = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
    >>> u, _ = t.update({"w": jnp.ones(2), "b": jnp.ones(2)}, t.init(p), p)
    >>> (u["w"].tolist(), [round(x, 6) for x in u["b"].tolist()])
    ([5.0, 5.0], [0.001, 0.001])
    """

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, "scale_by_param_block_norm", "it scales by ||p||")
        return tree_map(
            lambda u, p: num.mul(u, floor_norm(safe_norm(p), min_scale)).astype(u.dtype),
            updates,
            params,
        ), state

    return GradientTransformation(init_empty_state, update)


@transform(packable=False)
def scale_by_param_block_rms(min_scale: NonNegativeValue = 1e-3) -> GradientTransformation:
    """Multiply each leaf's update by its parameter's RMS: ``u <- u · max(RMS(p), min_scale)``.

    Adafactor's relative step size: the step of each block is proportional to the typical
    magnitude of its entries, ``α_t = max(ε2, RMS(p_{t-1})) ρ_t``. Not packable: the RMS is
    per leaf.

    Args:
      min_scale: ``ε2``, the floor on ``RMS(p)`` (>= 0); the paper uses ``1e-3``.

    Returns:
      A stateless transformation (``update`` needs the params).

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018, Section 8, https://arxiv.org/abs/1804.04235.

    >>> t = scale_by_param_block_rms()
    >>> p = {"w": jnp.array([3.0, -3.0])}
    >>> u, _ = t.update({"w": jnp.ones(2)}, t.init(p), p)
    >>> u["w"].tolist()
    [3.0, 3.0]
    """

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, "scale_by_param_block_rms", "it scales by RMS(p)")
        return tree_map(
            lambda u, p: num.mul(u, floor_norm(safe_rms(p), min_scale)).astype(u.dtype),
            updates,
            params,
        ), state

    return GradientTransformation(init_empty_state, update)


class ScaleByNovogradState(NamedTuple):
    """Step counter, the first moment ``m`` (per coordinate) and ``v`` (one scalar per leaf)."""

    count: jax.Array
    mu: Any
    nu: Any


@transform(packable=False)
def scale_by_novograd(
    b1: DecayValue = 0.9,
    b2: DecayValue = 0.25,
    eps: NonNegativeValue = 1e-8,
    eps_root: NonNegativeValue = 0.0,
    weight_decay: NonNegativeValue = 0.0,
    mu_dtype: Any = None,
    *,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """NovoGrad's direction: layer-wise second moments and decoupled decay (Ginsburg et al., 2019).

    Each leaf (layer) keeps one scalar second moment of its gradient's squared norm::

        v_1 = ||g_1||²,   v_t = β2 v_{t-1} + (1 - β2) ||g_t||²
        m_t = β1 m_{t-1} + g_t / (sqrt(v_t + ε_root) + ε) + λ p_{t-1}     (m_0 = 0)
        u_t = m_t

    Note the momentum has no ``(1 - β1)`` factor, as in the paper. Not packable: ``v`` is
    one number per leaf.

    Args:
      b1, b2: decay rates in [0, 1).
      eps: added outside the square root (>= 0).
      eps_root: added inside the square root (>= 0).
      weight_decay: ``λ`` >= 0.
      mu_dtype: dtype of ``m`` (default: the params').
      nu_dtype: dtype of the per-leaf ``v`` (default: the params').

    Returns:
      The transformation; its state is a :class:`ScaleByNovogradState`. ``update`` needs the
      params (the decay term ``λ p``).

    References:
      Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
      Training of Deep Networks", 2019, https://arxiv.org/abs/1905.11286.

    >>> t = scale_by_novograd(eps=0.0)
    >>> p = {"w": jnp.zeros(2)}
    >>> u, _ = t.update({"w": jnp.array([3.0, 4.0])}, t.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]   # g / ||g||
    [0.6, 0.8]
    """

    def init(params):
        return ScaleByNovogradState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_zeros_like(params, dtype=mu_dtype),
            nu=tree_map(lambda p: jnp.zeros((), nu_dtype or jnp.asarray(p).dtype), params),
        )

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, "scale_by_novograd", "its weight decay term λ p")
        count = safe_increment(state.count)
        first = count == 1

        def leaf(g, m, v, p):
            norm_sq = jnp.sum(abs_sq(g))
            v_new = num.add(num.mul(b2, v), num.mul(1 - b2, norm_sq))
            v = num.where(first, norm_sq, v_new).astype(v.dtype)
            d = num.add(
                num.div(g, num.add(jnp.sqrt(num.add(v, eps_root)), eps)), num.mul(weight_decay, p)
            )
            m = num.add(num.mul(b1, m), d)
            return m.astype(g.dtype), m, v

        u, mu, nu = map_leaves(leaf, 3, updates, state.mu, state.nu, params)
        mu = cast_tree_like(mu, state.mu)
        return u, ScaleByNovogradState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Newton-Schulz

_NS_PRESETS = {
    # Jordan et al. (2024): one quintic, applied ns_steps times.
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


@dataclasses.dataclass(frozen=True)
class _NewtonSchulzCoeffsConstraint(Constraint):
    """Newton-Schulz coefficients: a triple ``(a, b, c)``, a sequence of triples (one per
    step) or a preset name. Numbers are a hyperparameter (``dynamic``): a named optimizer
    keeps them in its state."""

    dynamic: bool = True

    def check(self, name: str, value: Any) -> None:
        if isinstance(value, str):
            check_choice(name, value, tuple(_NS_PRESETS))
            return
        shape = np.shape(value)
        if not (len(shape) in (1, 2) and shape[-1] == 3 and (len(shape) == 1 or shape[0] >= 1)):
            raise ValueError(
                f"{name} must be a triple (a, b, c), a sequence of triples (one per "
                f"Newton-Schulz step) or one of {list(_NS_PRESETS)}, got shape {shape}."
            )
        if isinstance(value, (tuple, list)):  # a triple or triples: one array of numbers
            value = np.asarray(value)
        Interval(schedule=False).check(name, value)

    def normalize(self, value: Any) -> Any:
        return resolve_ns_coeffs(value)


NewtonSchulzCoeffs = Annotated[Any, _NewtonSchulzCoeffsConstraint()]
"""The type of a ``ns_coeffs`` argument: a triple ``(a, b, c)`` applied at every
Newton-Schulz step, a sequence of triples (one per step, an ``(n, 3)`` array) or a preset name
(``"standard"``: Jordan et al.'s quintic; ``"dion"``: Ahn et al.'s five quintics). Factories
check it; a named optimizer keeps the numbers in its state (a name is first turned into its
numbers with :func:`resolve_ns_coeffs`)."""


def resolve_ns_coeffs(ns_coeffs: Any) -> Any:
    """The Newton-Schulz coefficients meant by ``ns_coeffs``: a preset name's numbers, any
    other value unchanged.

    Args:
      ns_coeffs: a preset name (``"standard"``, ``"dion"``), a triple or a sequence of
        triples.

    Returns:
      The preset's coefficients (a triple, or a tuple of triples) for a name; ``ns_coeffs``
      itself otherwise.

    Raises:
      ValueError: an unknown preset name (the message lists the known ones).

    >>> resolve_ns_coeffs("standard")
    (3.4445, -4.775, 2.0315)
    >>> len(resolve_ns_coeffs("dion"))
    5
    """
    if isinstance(ns_coeffs, str):
        check_choice("ns_coeffs", ns_coeffs, tuple(_NS_PRESETS))
        return _NS_PRESETS[ns_coeffs]
    return ns_coeffs


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


def _is_dims(x: Any) -> bool:
    return isinstance(x, MuonDimensionNumbers)


def _axes(dims: MuonDimensionNumbers, ndim: int, where: str) -> tuple[tuple, tuple, tuple]:
    """``(batch, reduction, output)`` axes of a rank-``ndim`` array, non-negative."""

    def normalized(a):
        a = (a,) if isinstance(a, (int, np.integer)) else tuple(a)
        for ax in a:
            if not -ndim <= ax < ndim:
                raise ValueError(f"{where}: axis {ax} is out of range for a rank-{ndim} array.")
        return tuple(int(ax) % ndim for ax in a)

    red, out = normalized(dims.reduction_axis), normalized(dims.output_axis)
    if not red or not out or set(red) & set(out):
        raise ValueError(
            f"{where}: reduction axes {red} and output axes {out} must be non-empty and disjoint."
        )
    batch = tuple(ax for ax in range(ndim) if ax not in red and ax not in out)
    return batch, red, out


def _fans(shape: tuple, dims: MuonDimensionNumbers, where: str) -> tuple[int, int]:
    _, red, out = _axes(dims, len(shape), where)
    return math.prod(shape[a] for a in red), math.prod(shape[a] for a in out)


def resolve_dimension_numbers(
    weight_dimension_numbers: Any, tree: Any, name: str = "weight_dimension_numbers"
) -> list[MuonDimensionNumbers | None]:
    """One :class:`MuonDimensionNumbers` or ``None`` per leaf of ``tree``.

    ``None`` marks a leaf that Muon does not orthogonalise (and every ``None`` leaf of
    ``tree``, a frozen or masked parameter).

    Args:
      weight_dimension_numbers: ``None`` (every leaf is a matrix ``(fan_in, fan_out)``), a
        :class:`MuonDimensionNumbers` for every leaf, a pytree of them and ``None`` with the
        structure of ``tree`` (or a prefix of it: a value at a node covers its subtree), or a
        function ``tree -> such a pytree``.
      tree: the parameters (or updates); ``None`` leaves count as leaves.
      name: the argument's name for error messages.

    Returns:
      A list in the flattening order of ``tree`` (``None`` leaves included), like
      :func:`gdopt.tree.mask_leaves`.

    Raises:
      ValueError: the pytree does not match ``tree``'s structure.

    >>> resolve_dimension_numbers({"w": MuonDimensionNumbers(), "b": None},
    ...                           {"b": jnp.zeros(2), "w": jnp.zeros((2, 2))})
    [None, MuonDimensionNumbers(reduction_axis=0, output_axis=1)]
    """
    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_none)
    spec = weight_dimension_numbers
    if callable(spec) and not _is_dims(spec):
        spec = spec(tree)
    if spec is None:
        return [None if x is None else MuonDimensionNumbers() for x in leaves]
    if _is_dims(spec):
        one: MuonDimensionNumbers = spec  # type: ignore[assignment]
        return [None if x is None else one for x in leaves]
    try:
        full = jax.tree.map(
            lambda d, sub: jax.tree.map(lambda _: d, sub, is_leaf=is_none),
            spec,
            tree,
            is_leaf=lambda x: x is None or _is_dims(x),
        )
        dims: list[Any] = treedef.flatten_up_to(full)
    except ValueError as e:
        raise ValueError(
            f"{name} must be None, a MuonDimensionNumbers, a pytree of MuonDimensionNumbers / "
            "None with the params' structure (or a prefix of it), or a function params -> such "
            f"a pytree; it does not match the params: {e}"
        ) from None
    return [None if x is None else d for x, d in zip(leaves, dims, strict=True)]


def _ns_rows(ns_coeffs: Any, ns_steps: int) -> jax.Array:
    """The coefficients as an ``(n, 3)`` array: a single triple repeated ``ns_steps`` times."""
    coeffs = jnp.asarray(resolve_ns_coeffs(ns_coeffs))
    if coeffs.ndim == 1:
        return jnp.broadcast_to(coeffs, (ns_steps, 3))
    return coeffs


def _newton_schulz_2d(x: jax.Array, rows: jax.Array, preconditioning: str, eps: Any) -> jax.Array:
    """Quintic Newton-Schulz on one matrix, computed in a wide (``m <= n``) orientation."""
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    if preconditioning == "frobenius":
        x = num.div(x, num.add(jnp.linalg.norm(x), eps))
    elif preconditioning == "spectral":
        x = num.div(x, num.add(jnp.linalg.norm(x, ord=2), eps))
    for i in range(rows.shape[0]):
        a, b, c = rows[i, 0], rows[i, 1], rows[i, 2]
        gram = x @ x.conj().T
        if i == 0 and preconditioning == "aol":
            # Scale row i by 1/sqrt(sum_j |G_ij|): makes the spectrum <= 1 (Gershgorin).
            d = jax.lax.rsqrt(num.maximum(jnp.sum(jnp.abs(gram), axis=-1), eps))
            x = num.mul(d[:, None], x)
            gram = num.mul(num.mul(d[:, None], gram), d[None, :])
        elif i == 0 and preconditioning == "schatten":
            # ||G||_F = ||X||_{S4}^2 >= ||X||_2^2.
            s = jax.lax.rsqrt(num.maximum(jnp.linalg.norm(gram), eps))
            x = num.mul(s, x)
            gram = num.mul(s * s, gram)
        poly = num.add(num.mul(b, gram), num.mul(c, gram @ gram))
        x = num.add(num.mul(a, x), jnp.matmul(*num.promote(poly, x)))
    return x.T if transposed else x


def _orthogonalize(
    x: jax.Array,
    rows: jax.Array,
    preconditioning: str,
    eps: Any,
    dims: MuonDimensionNumbers,
    where: str,
) -> jax.Array:
    """Newton-Schulz of every ``(reduction, output)`` slice of ``x`` (at least float32)."""
    batch, red, out = _axes(dims, x.ndim, where)
    perm = batch + red + out
    moved = jnp.transpose(x, perm)
    mshape = moved.shape
    nb = math.prod(mshape[: len(batch)])
    flat = moved.reshape(nb, math.prod(x.shape[a] for a in red), math.prod(x.shape[a] for a in out))
    wide = compute_dtype(x.dtype)
    rows = rows.astype(wide)
    ortho = jax.vmap(lambda m: _newton_schulz_2d(m, rows, preconditioning, eps))(flat.astype(wide))
    inverse = tuple(int(i) for i in np.argsort(perm))
    return jnp.transpose(ortho.reshape(mshape), inverse).astype(x.dtype)


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: NewtonSchulzCoeffs = _NS_PRESETS["standard"],
    ns_steps: Steps = 5,
    preconditioning: str = "frobenius",
    eps: NonNegativeValue = 1e-8,
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

    >>> x = jax.random.normal(jax.random.PRNGKey(0), (6, 4))
    >>> s = jnp.linalg.svd(orthogonalize_via_newton_schulz(x), compute_uv=False)
    >>> bool(jnp.all((s > 0.6) & (s < 1.2)))
    True
    """
    _NewtonSchulzCoeffsConstraint().check("ns_coeffs", ns_coeffs)
    check_int("ns_steps", ns_steps, 1)
    check_choice("preconditioning", preconditioning, _PRECONDITIONINGS)
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


# ----------------------------------------------------------------------------- Muon


class MuonState(NamedTuple):
    """Step counter and the momentum buffer.

    optax's ``MuonState`` also holds ``ns_coeffs``; in gdopt the coefficients are an argument
    of :func:`scale_by_muon` (a hyperparameter in the state of :func:`gdopt.muon`).
    """

    count: jax.Array
    mu: Any


@transform(packable=False)
def scale_by_muon(
    ns_coeffs: NewtonSchulzCoeffs = _NS_PRESETS["standard"],
    ns_steps: Steps = 5,
    beta: DecayValue = 0.95,
    eps: NonNegativeValue = 1e-8,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: Annotated[str, OneOf(_PRECONDITIONINGS)] = "frobenius",
    weight_dimension_numbers: Any = None,
) -> GradientTransformation:
    """Muon's direction: momentum, orthogonalised by Newton-Schulz (Jordan et al., 2024).

    Update rule (``t`` starts at 1, ``NS`` is :func:`orthogonalize_via_newton_schulz`)::

        m_t = β m_{t-1} + (1 - β) g_t
        m̂_t = m_t / (1 - β^t)                                        (nesterov=False)
        m̂_t = β m_t / (1 - β^{t+1}) + (1 - β) g_t / (1 - β^t)        (nesterov=True)
        u_t = NS(m̂_t)                 (adaptive: u_t = <m̂_t, NS(m̂_t)> NS(m̂_t))

    This is steepest descent under the spectral norm: every direction of the weight matrix
    moves by about the same amount. Not packable: each leaf is orthogonalised as a matrix.

    The momentum is debiased: gdopt follows ``optax.contrib.scale_by_muon`` (its test
    oracle), whose Nesterov direction is NAdam's debiased one (Dozat, 2016; the form of
    ``scale_by_adam(nesterov=True)``). ``torch.optim.Muon`` and Jordan's reference code use
    ``β m_t + (1 - β) g_t`` without debiasing (and iterate in bfloat16). ``NS`` divides by
    the norm first, so only the ratio of the two terms matters: the rules give the same
    direction without Nesterov, and with Nesterov at ``t = 1`` (both are ``∝ g_1``); from
    ``t = 2`` gdopt weights ``g_t`` against ``m_t`` ``(1 - β^{t+1}) / (1 - β^t)`` times more
    than torch (``(1 + β + β²) / (1 + β)`` at ``t = 2``), a factor that tends to 1 over
    ``~1 / (1 - β)`` steps.

    Args:
      ns_coeffs, ns_steps, preconditioning, eps: the Newton-Schulz iteration (see
        :func:`orthogonalize_via_newton_schulz`).
      beta: momentum decay ``β`` in [0, 1).
      mu_dtype: dtype of the momentum buffer (default: the params').
      nesterov: use Nesterov's look-ahead momentum (the default, as in the paper's code).
      adaptive: scale by the dual norm ``<m̂, NS(m̂)>`` (Bernstein & Newhouse, 2024).
      weight_dimension_numbers: ``None`` (every leaf is a matrix ``(fan_in, fan_out)``), a
        :class:`MuonDimensionNumbers` for all leaves, a pytree of them (``None`` entries pass
        their update through unchanged) or a function ``params -> such a pytree`` (see
        :func:`resolve_dimension_numbers`).

    Returns:
      The transformation; its state is a :class:`MuonState`.

    Raises:
      ValueError: at ``update``, a leaf that is not a matrix and has no dimension numbers
        (the message names its key path).

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
      https://kellerjordan.github.io/posts/muon/. Bernstein & Newhouse, "Old Optimizer, New
      Norm: An Anthology", 2024, https://arxiv.org/abs/2409.20325.

    >>> t = scale_by_muon(nesterov=False)
    >>> g = {"w": jnp.array([[3.0, 0.0], [0.0, 1.0]])}
    >>> u, _ = t.update(g, t.init(g))
    >>> s = jnp.linalg.svd(u["w"], compute_uv=False)   # both directions move about equally
    >>> bool(jnp.all((s > 0.6) & (s < 1.2)))
    True
    """

    def init(params):
        return MuonState(count=jnp.zeros([], jnp.int32), mu=tree_zeros_like(params, mu_dtype))

    def update(updates, state, params=None, **extra):
        del extra
        count = safe_increment(state.count)
        rows = _ns_rows(ns_coeffs, ns_steps)
        c1 = num.bias_correction_factor(beta, count)
        c1_next = num.bias_correction_factor(beta, safe_increment(count))
        flat, treedef = jax.tree_util.tree_flatten_with_path(updates, is_leaf=is_none)
        mus = treedef.flatten_up_to(state.mu)
        dims = resolve_dimension_numbers(
            weight_dimension_numbers, params if params is not None else updates
        )
        out_u, out_m = [], []
        for (path, g), m, d in zip(flat, mus, dims, strict=True):
            if g is None or d is None:
                out_u.append(g)
                out_m.append(m)
                continue
            where = "updates" + (key_path_str(path) if path else "")
            if weight_dimension_numbers is None and jnp.ndim(g) != 2:
                raise ValueError(
                    f"scale_by_muon orthogonalises matrices, but {where} has shape "
                    f"{jnp.shape(g)}. Give weight_dimension_numbers for it (or None to skip "
                    "it), or use gdopt.muon, which sends non-matrix leaves to Adam."
                )
            m_new = update_moment(g, m, beta, 1)
            if nesterov:
                m_hat = num.add(
                    num.mul(beta, m_new / c1_next.astype(m_new.dtype)),
                    num.mul(1 - beta, g / c1.astype(g.dtype)),
                )
            else:
                m_hat = m_new / c1.astype(m_new.dtype)
            o = _orthogonalize(m_hat, rows, preconditioning, eps, d, where)
            if adaptive:
                o = jnp.real(jnp.sum(jnp.conj(m_hat) * o)) * o
            out_u.append(o.astype(g.dtype))
            out_m.append(cast_like(m_new, m))
        return treedef.unflatten(out_u), MuonState(count=count, mu=treedef.unflatten(out_m))

    return GradientTransformation(init, update)


@transform(packable=False)
def scale_by_shape(
    weight_dimension_numbers: Any = None, consistent_rms: OptionalNonNegativeValue = None
) -> GradientTransformation:
    """Rescale orthogonalised matrix updates by a factor that depends on their shape.

    An orthogonal ``fan_in x fan_out`` update has RMS entry ``1/sqrt(max(fan_in, fan_out))``.
    Two rules::

        u <- sqrt(max(1, fan_out / fan_in)) u          (consistent_rms=None; Jordan et al.)
        u <- consistent_rms * sqrt(max(fan_in, fan_out)) u      (Liu et al., 2025)

    The second makes the update's RMS equal ``consistent_rms`` for every shape (0.2 matches
    AdamW's typical RMS, so AdamW learning rates carry over). Not packable: the factor
    depends on each leaf's shape.

    Args:
      weight_dimension_numbers: as in :func:`scale_by_muon`; ``None`` entries are untouched.
      consistent_rms: the target RMS (>= 0), or ``None`` for the width-transfer rule.

    Returns:
      A stateless transformation.

    References:
      Liu et al., "Muon is Scalable for LLM Training", 2025, https://arxiv.org/abs/2502.16982.

    >>> t = scale_by_shape(consistent_rms=0.2)
    >>> u, _ = t.update({"w": jnp.ones((4, 16))}, t.init(None))
    >>> round(float(u["w"][0, 0]), 4)     # 0.2 * sqrt(16)
    0.8
    """

    def update(updates, state, params=None, **extra):
        del extra
        leaves, treedef = jax.tree.flatten(updates, is_leaf=is_none)
        dims = resolve_dimension_numbers(
            weight_dimension_numbers, params if params is not None else updates
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
            out.append(num.mul(s, u).astype(u.dtype))
        return treedef.unflatten(out), state

    return GradientTransformation(init_empty_state, update)


@transform(packable=True)
def normalize_by_update_norm(
    scale_factor: float = 1.0, eps: float = 1e-6
) -> GradientTransformation:
    """Scale the updates to global norm ``scale_factor``: ``u · scale_factor / (‖u‖ + eps)``.

    Args:
      scale_factor: the norm of the result.
      eps: added to the norm.

    Returns:
      A stateless transformation.

    >>> t = normalize_by_update_norm(eps=0.0)
    >>> t.update({"w": jnp.array([3.0, 4.0])}, t.init(None))[0]["w"].tolist()
    [0.6000000238418579, 0.800000011920929]
    """

    def update(updates, state, params=None, **extra):
        del params, extra
        factor = num.div(scale_factor, num.add(tree_l2_norm(updates), eps))
        return num.tree_map(lambda u: num.cast_like(num.mul(u, factor), u), updates), state

    return GradientTransformation(init_empty_state, update)


NormalizeState = EmptyState
"""The state of :func:`normalize` (optax.contrib's name): empty."""


@transform(packable=True)
def normalize() -> GradientTransformation:
    """Divide the updates by their global norm: ``u ← u / ‖u‖₂`` (optax.contrib's name).

    The norm is over all leaves taken as one vector. A zero update gives ``0 / 0`` (NaN), as
    in optax; :func:`normalize_by_update_norm` adds an ``eps`` instead. Its use is SAM's
    adversarial step, ``chain(normalize(), sgd(rho))`` in :func:`gdopt.contrib.sam`.

    Returns:
      A stateless transformation.

    >>> t = normalize()
    >>> t.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, t.init(None))[0]["b"].tolist()
    [0.800000011920929]
    """

    def update(updates, state, params=None, **extra):
        del params, extra
        total = tree_l2_norm(updates)
        return num.tree_map(lambda u: num.div(u, total).astype(u.dtype), updates), state

    return GradientTransformation(init_empty_state, update)
