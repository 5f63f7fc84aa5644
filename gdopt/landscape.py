"""The shape of the loss landscape: slices, curvature from Hessian-vector products, sharpness.

Every function takes a loss and the point to look at, in one of two forms: ``loss_fn(params,
data)`` with ``data`` a batch pytree (e.g. ``(x, y)``, the whole batch is used), or
``loss_fn(params)`` for a deterministic objective (``data=None``, e.g. the test functions of
:mod:`gdopt.problems`). Each evaluates as one compiled, vectorised call, cached on the
identity of ``loss_fn`` (as :func:`gdopt.fit` is: define it once, not in a loop).

* Slices: :func:`interpolate` (the loss on the straight line between two solutions,
  Goodfellow et al. 2015) and :func:`slice_2d` (on a plane through ``params`` spanned by two
  filter-normalised random directions, Li et al. 2018, or two given ones).
* Curvature, never forming the Hessian: :func:`hessian_vector_product` (forward-over-reverse,
  ``jax.jvp`` of ``jax.grad``), :func:`hessian_eigenvalues` (Lanczos with full
  reorthogonalisation, eigenvectors as pytrees on request), :func:`hessian_trace`
  (Hutchinson) and :func:`hessian_spectrum` (the spectral density by stochastic Lanczos
  quadrature, Ghorbani et al. 2019).
* Sharpness during training: :func:`track_sharpness` runs the engine's pure core
  (:func:`gdopt.make_train_fn`) and measures the top Hessian eigenvalue between chunks of
  epochs, all in one compiled ``lax.scan`` (the edge of stability, Cohen et al. 2021:
  full-batch gradient descent's sharpness rises to about ``2 / learning_rate``).

Vectors are handled flat (``jax.flatten_util.ravel_pytree``): the Lanczos basis of
:func:`hessian_eigenvalues` holds ``num_iters + 1`` parameter-sized vectors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from gdopt import _numerics as num
from gdopt._validation import check_callable, check_choice, check_int, check_key, check_scalar
from gdopt.base import GradientTransformation
from gdopt.engine import init_fit_state, make_train_fn
from gdopt.tree import check_float_leaves, check_same_structure, tree_size

__all__ = [
    "LossSlice1D",
    "LossSlice2D",
    "interpolate",
    "slice_2d",
    "hessian_vector_product",
    "hessian_eigenvalues",
    "hessian_trace",
    "SpectralDensity",
    "hessian_spectrum",
    "hessian_top_eigenpair",
    "SharpnessHistory",
    "track_sharpness",
]

_CHUNK = 64  # points (or probes) evaluated at once inside lax.map


def _objective(loss_fn: Callable[..., Any], data: Any) -> Callable[[Any], jax.Array]:
    """``params -> scalar``: ``loss_fn(params)`` without data, ``loss_fn(params, data)`` with."""
    if data is None:
        return lambda p: jnp.asarray(loss_fn(p))
    return lambda p: jnp.asarray(loss_fn(p, data))


def _check_point(loss_fn: Any, params: Any, name: str = "params") -> None:
    check_callable("loss_fn", loss_fn, "a function loss_fn(params[, data]) -> scalar")
    check_float_leaves(params, name)
    if tree_size(params) == 0:
        raise ValueError(f"{name} has no elements; pass the parameters of a model.")


# ----------------------------------------------------------------------------- slices


class LossSlice1D(NamedTuple):
    """The loss along a line (:func:`interpolate`).

    Attributes:
      alpha: the positions ``α`` (NumPy, shape ``(n,)``): ``0`` is ``params_a``, ``1``
        ``params_b``.
      loss: the loss at each position (NumPy, shape ``(n,)``).
    """

    alpha: np.ndarray
    loss: np.ndarray


class LossSlice2D(NamedTuple):
    """The loss on a plane (:func:`slice_2d`).

    Attributes:
      x, y: the coordinates along the two directions (NumPy, shape ``(n,)`` each, from
        ``-span`` to ``span``).
      loss: NumPy, shape ``(n, n)``: ``loss[i, j]`` is the loss at
        ``params + x[j] d1 + y[i] d2`` (the layout of ``matplotlib``'s ``contour(x, y, loss)``).
      directions: ``(d1, d2)``, the directions used (pytrees like ``params``, after
        normalisation).
    """

    x: np.ndarray
    y: np.ndarray
    loss: np.ndarray
    directions: tuple[Any, Any]


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _line_losses(loss_fn, a, b, data, alphas):
    f = _objective(loss_fn, data)

    def at(alpha):
        def leaf(x, y):
            return num.add(x, num.mul(alpha, num.sub(y, x))).astype(jnp.asarray(x).dtype)

        return f(jax.tree.map(leaf, a, b))

    return lax.map(at, alphas, batch_size=_CHUNK)


def interpolate(
    loss_fn: Callable[..., Any],
    params_a: Any,
    params_b: Any,
    data: Any = None,
    *,
    n: int = 51,
    extend: float = 0.0,
) -> LossSlice1D:
    """The loss along the straight line from ``params_a`` to ``params_b``.

    Evaluates ``L((1 - α) θ_a + α θ_b)`` at ``n`` evenly spaced ``α`` in
    ``[-extend, 1 + extend]``, as one compiled call (vectorised in chunks of 64 points).
    A bump between two solutions is a barrier; a monotone decrease from an initialisation to
    a solution is what Goodfellow, Vinyals & Saxe found for many networks.

    Args:
      loss_fn: ``loss_fn(params, data) -> scalar``, or ``loss_fn(params)`` when ``data`` is
        ``None``.
      params_a, params_b: two points with the same structure and shapes.
      data: the batch the loss is measured on (all of it), or ``None``.
      n: the number of points (>= 2).
      extend: how far to go beyond both ends, as a fraction of the segment (>= 0).

    Returns:
      A :class:`LossSlice1D`.

    Raises:
      ValueError: the structures or shapes of ``params_a`` and ``params_b`` differ (the key
        path is named), ``n < 2``, ``extend < 0``.

    References:
      Goodfellow, Vinyals & Saxe, "Qualitatively characterizing neural network optimization
      problems", ICLR 2015, https://arxiv.org/abs/1412.6544.

    >>> import gdopt, jax.numpy as jnp
    >>> f = lambda p: jnp.sum(p["w"] ** 2)
    >>> s = gdopt.landscape.interpolate(f, {"w": jnp.array([-1.0])}, {"w": jnp.array([1.0])}, n=3)
    >>> s.alpha.tolist(), s.loss.tolist()
    ([0.0, 0.5, 1.0], [1.0, 0.0, 1.0])
    """
    _check_point(loss_fn, params_a, "params_a")
    check_same_structure(params_a, params_b, names=("params_a", "params_b"))
    n = check_int("n", n, 2)
    check_scalar("extend", extend, low=0.0)
    alphas = np.linspace(-extend, 1.0 + extend, n).astype(np.float32)
    losses = _line_losses(loss_fn, params_a, params_b, data, jnp.asarray(alphas))
    return LossSlice1D(alpha=alphas, loss=np.asarray(losses))


def _filter_normalize(direction: Any, params: Any) -> Any:
    """Li et al.'s filter normalisation: each filter of ``direction`` gets the norm of the
    same filter of ``params``. A filter is a slice along the last axis of a leaf with
    ``ndim >= 2`` (an output unit of a dense ``x @ w`` kernel, an output channel of an HWIO
    convolution kernel); a leaf with ``ndim <= 1`` counts as one filter."""

    def leaf(d, p):
        d, p = jnp.asarray(d), jnp.asarray(p).astype(jnp.asarray(d).dtype)
        axes = tuple(range(d.ndim - 1)) if d.ndim >= 2 else None
        dn = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=d.ndim >= 2))
        pn = jnp.sqrt(jnp.sum(jnp.square(p), axis=axes, keepdims=d.ndim >= 2))
        return d * (pn / (dn + 1e-10))

    return jax.tree.map(leaf, direction, params)


def _random_direction(key: jax.Array, params: Any) -> Any:
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [
            jax.random.normal(k, jnp.shape(x), jnp.asarray(x).dtype)
            for k, x in zip(keys, leaves, strict=True)
        ]
    )


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _plane_losses(loss_fn, params, d1, d2, data, xs, ys):
    f = _objective(loss_fn, data)

    def at(xy):
        def leaf(p, u, v):
            return num.add(p, num.add(num.mul(xy[0], u), num.mul(xy[1], v))).astype(p.dtype)

        return f(jax.tree.map(leaf, params, d1, d2))

    gx, gy = jnp.meshgrid(xs, ys)  # gx[i, j] = xs[j], gy[i, j] = ys[i]
    points = jnp.stack([gx.ravel(), gy.ravel()], axis=1)
    return lax.map(at, points, batch_size=_CHUNK).reshape(ys.shape[0], xs.shape[0])


def slice_2d(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Any = None,
    *,
    directions: tuple[Any, Any] | None = None,
    key: jax.Array | None = None,
    span: float = 1.0,
    n: int = 21,
    filter_normalize: bool = True,
) -> LossSlice2D:
    """The loss on the plane ``params + x d1 + y d2`` for ``x, y`` in ``[-span, span]``.

    Without ``directions``, ``d1`` and ``d2`` are drawn from a standard normal (``key``).
    With ``filter_normalize`` (Li et al. 2018) every filter of a direction is rescaled to the
    norm of the same filter of ``params``, so that the plot does not depend on the scale of
    each layer (a network with ReLUs computes the same function when a layer is scaled up
    and the next down): a filter is a slice along the last axis of a leaf with ``ndim >= 2``
    (an output unit of a dense ``x @ w`` kernel, an output channel of an HWIO convolution),
    and a leaf with ``ndim <= 1`` (a bias, a point of a test function) counts as one filter.
    Given ``directions`` are normalised the same way unless ``filter_normalize=False`` (use
    that for directions whose length means something, e.g. Hessian eigenvectors or the path
    to another solution). The ``n x n`` grid is evaluated as one compiled call.

    Args:
      loss_fn: ``loss_fn(params, data) -> scalar``, or ``loss_fn(params)`` when ``data`` is
        ``None``.
      params: the centre of the plane.
      data: the batch the loss is measured on (all of it), or ``None``.
      directions: ``(d1, d2)``, pytrees with the structure and shapes of ``params``; default
        two random directions.
      key: PRNG key of the random directions (default ``jax.random.PRNGKey(0)``).
      span: the half-width of the grid (> 0).
      n: points per axis (>= 2).
      filter_normalize: rescale the directions filter by filter (see above).

    Returns:
      A :class:`LossSlice2D`; ``loss[i, j]`` is at ``(x[j], y[i])``.

    Raises:
      ValueError: a direction whose structure or shapes differ from ``params`` (the key path
        is named), ``directions`` not a pair, ``span <= 0``, ``n < 2``.

    References:
      Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets",
      NeurIPS 2018, https://arxiv.org/abs/1712.09913.

    >>> import gdopt, jax.numpy as jnp
    >>> f = lambda p: jnp.sum(p ** 2)
    >>> d = (jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))
    >>> s = gdopt.landscape.slice_2d(f, jnp.zeros(2), directions=d, span=1.0, n=3,
    ...                              filter_normalize=False)
    >>> s.loss.tolist()
    [[2.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 2.0]]
    """
    _check_point(loss_fn, params)
    check_scalar("span", span, low=0.0, low_open=True)
    n = check_int("n", n, 2)
    if directions is None:
        k1, k2 = jax.random.split(check_key(key))
        d1, d2 = _random_direction(k1, params), _random_direction(k2, params)
    else:
        if not isinstance(directions, (tuple, list)) or len(directions) != 2:
            raise ValueError(
                "directions must be a pair (d1, d2) of pytrees shaped like params, got "
                f"{type(directions).__name__}"
                + (f" of length {len(directions)}" if isinstance(directions, (tuple, list)) else "")
                + "."
            )
        for i, d in enumerate(directions):
            check_same_structure(d, params, names=(f"directions[{i}]", "params"))
        d1, d2 = directions
    if filter_normalize:
        d1, d2 = _filter_normalize(d1, params), _filter_normalize(d2, params)
    else:
        d1, d2 = (jax.tree.map(lambda d, p: jnp.asarray(d, jnp.asarray(p).dtype), d, params)
                  for d in (d1, d2))  # fmt: skip
    xs = np.linspace(-span, span, n).astype(np.float32)
    losses = _plane_losses(loss_fn, params, d1, d2, data, jnp.asarray(xs), jnp.asarray(xs))
    return LossSlice2D(x=xs, y=xs.copy(), loss=np.asarray(losses), directions=(d1, d2))


# ----------------------------------------------------------------------------- curvature


def hessian_vector_product(
    loss_fn: Callable[..., Any], params: Any, data: Any = None
) -> Callable[[Any], Any]:
    """``v -> H v``, the Hessian of the loss at ``params`` times a pytree ``v`` like ``params``.

    Forward-over-reverse: ``jax.jvp(jax.grad(L), (params,), (v,))``, one forward and one
    backward pass with tangents (about the cost of two gradients), never the Hessian itself.
    The returned function is pure (``jit`` and ``vmap`` it).

    Args:
      loss_fn: ``loss_fn(params, data) -> scalar``, or ``loss_fn(params)`` with ``data=None``.
      params: the point.
      data: the batch, or ``None``.

    Returns:
      ``hvp(v) -> H v`` with the structure of ``params``.

    >>> import gdopt, jax.numpy as jnp
    >>> f = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 3.0]) * p ** 2)
    >>> hvp = gdopt.landscape.hessian_vector_product(f, jnp.zeros(2))
    >>> hvp(jnp.array([1.0, 1.0])).tolist()
    [1.0, 3.0]
    """
    grad = jax.grad(_objective(loss_fn, data))

    def hvp(v: Any) -> Any:
        return jax.jvp(grad, (params,), (v,))[1]

    return hvp


def _flat_hvp(loss_fn, params, data) -> tuple[Callable, jax.Array, Callable]:
    flat, unravel = ravel_pytree(params)
    hvp = hessian_vector_product(loss_fn, params, data)

    def matvec(v: jax.Array) -> jax.Array:
        out, _ = ravel_pytree(hvp(unravel(v)))
        return out.astype(flat.dtype)

    return matvec, flat, unravel


def _project_out(basis: jax.Array, w: jax.Array) -> jax.Array:
    """``w`` minus its projection on the rows of ``basis`` (orthonormal or zero), twice
    (classical Gram-Schmidt twice is enough for orthogonality to rounding)."""
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _lanczos(matvec: Callable, v0: jax.Array, m: int):
    """``m`` Lanczos steps with full reorthogonalisation from ``v0``.

    Returns ``(alphas (m,), betas (m - 1,), basis (m, n))``: ``basis @ H @ basis.T`` is the
    tridiagonal matrix with diagonal ``alphas`` and off-diagonals ``betas``. On a breakdown
    (an invariant subspace: the residual vanishes), the next vector is a fixed vector in
    general position orthogonalised against the basis and the coupling is 0, so ``m`` may be
    as large as ``n``.
    """
    n = v0.shape[0]
    dtype = v0.dtype
    eps = float(jnp.finfo(dtype).eps)
    basis = jnp.zeros((m + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))

    def body(j, carry):
        basis, alphas, betas, scale = carry
        v = basis[j]
        w = matvec(v)
        alpha = jnp.vdot(v, w)
        w = _project_out(basis, w)  # the three-term recurrence and full reorthogonalisation
        beta = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.maximum(jnp.abs(alpha), beta))
        # a fallback vector for a breakdown: deterministic, in general position
        r = jnp.cos(jnp.arange(n, dtype=dtype) * (0.7548776662 * (j + 1)) + num.cast_to(j, dtype))
        r = _project_out(basis, r)
        broken = beta <= 100.0 * eps * scale
        nxt = jnp.where(broken, r / jnp.linalg.norm(r), w / jnp.where(broken, 1.0, beta))
        basis = basis.at[j + 1].set(nxt)
        return (
            basis,
            alphas.at[j].set(alpha),
            betas.at[j].set(jnp.where(broken, 0.0, beta)),
            scale,
        )

    init = (basis, jnp.zeros((m,), dtype), jnp.zeros((m,), dtype), jnp.zeros((), dtype))
    basis, alphas, betas, _ = lax.fori_loop(0, m, body, init)
    return alphas, betas[: m - 1], basis[:m]


def _tridiagonal(alphas: jax.Array, betas: jax.Array) -> jax.Array:
    return jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)


def _default_iters(k: int, n: int) -> int:
    return min(n, max(4 * k + 40, 60))


def _eigs_traced(loss_fn, params, data, key, k, m, which, start=None):
    """Top (or bottom) ``k`` Ritz pairs: ``(eigenvalues (k,), flat vectors (k, n))``."""
    matvec, flat, _ = _flat_hvp(loss_fn, params, data)
    v0 = jax.random.normal(key, flat.shape, flat.dtype) if start is None else start
    alphas, betas, basis = _lanczos(matvec, v0, m)
    theta, s = jnp.linalg.eigh(_tridiagonal(alphas, betas))  # ascending
    idx = jnp.arange(m - 1, m - 1 - k, -1) if which == "largest" else jnp.arange(k)
    return theta[idx], (basis.T @ s[:, idx]).T


@functools.partial(jax.jit, static_argnames=("loss_fn", "k", "m", "which", "vectors"))
def _eigs(loss_fn, params, data, key, k, m, which, vectors):
    values, vecs = _eigs_traced(loss_fn, params, data, key, k, m, which)
    return (values, vecs) if vectors else (values, None)


def hessian_eigenvalues(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Any = None,
    k: int = 1,
    *,
    num_iters: int | None = None,
    which: str = "largest",
    return_eigenvectors: bool = False,
    key: jax.Array | None = None,
) -> Any:
    """The ``k`` largest (or smallest) eigenvalues of the Hessian of the loss at ``params``.

    Lanczos iteration on Hessian-vector products (:func:`hessian_vector_product`) with full
    reorthogonalisation (each new vector is orthogonalised against all earlier ones, twice,
    so no spurious copies of converged eigenvalues appear), from a random start; the
    eigenvalues returned are the extreme Ritz values of the ``num_iters x num_iters``
    tridiagonal matrix, which converge fastest for well-separated extreme eigenvalues. The
    whole iteration is one compiled call (cached on ``loss_fn``). Memory: ``num_iters + 1``
    parameter-sized vectors. With ``num_iters`` equal to the parameter count the result is
    exact (to rounding).

    Args:
      loss_fn: ``loss_fn(params, data) -> scalar``, or ``loss_fn(params)`` with ``data=None``.
      params: the point (a pytree of floating-point arrays).
      data: the batch the loss is measured on (all of it), or ``None``.
      k: how many eigenvalues, ``1 <= k <=`` the number of parameters.
      num_iters: Lanczos steps, ``k <= num_iters``; default ``max(4 k + 40, 60)`` (at most the
        parameter count).
      which: ``"largest"`` (the top of the spectrum: sharpness) or ``"smallest"`` (the most
        negative curvature).
      return_eigenvectors: also return the Ritz vectors.
      key: PRNG key of the starting vector (default ``jax.random.PRNGKey(0)``).

    Returns:
      A JAX array of the ``k`` eigenvalues (largest first for ``"largest"``, smallest first
      for ``"smallest"``); with ``return_eigenvectors``, ``(eigenvalues, eigenvectors)``
      where ``eigenvectors`` is a list of ``k`` unit-norm pytrees shaped like ``params``.

    Raises:
      ValueError: ``k`` below 1 or larger than the parameter count, ``num_iters < k``, an
        unknown ``which``.

    References:
      Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
      differential and integral operators", J. Res. Nat. Bur. Standards 45, 1950; Ghorbani,
      Krishnan & Xiao, "An Investigation into Neural Net Optimization via Hessian Eigenvalue
      Density", ICML 2019, https://arxiv.org/abs/1901.10159.

    >>> import gdopt, jax.numpy as jnp
    >>> f = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 2.0, 5.0]) * p ** 2)
    >>> vals = gdopt.landscape.hessian_eigenvalues(f, jnp.zeros(3), k=2)
    >>> [round(float(v), 4) for v in vals]
    [5.0, 2.0]
    """
    _check_point(loss_fn, params)
    size = tree_size(params)
    k = check_int("k", k, 1)
    if k > size:
        raise ValueError(f"k must be at most the number of parameters ({size}), got k={k}.")
    check_choice("which", which, ("largest", "smallest"))
    m = min(size, _default_iters(k, size)) if num_iters is None else num_iters
    m = check_int("num_iters", m, k)
    m = min(m, size)
    values, vecs = _eigs(
        loss_fn, params, data, check_key(key), k, m, which, bool(return_eigenvectors)
    )
    if not return_eigenvectors:
        return values
    _, unravel = ravel_pytree(params)
    return values, [unravel(vecs[i]) for i in range(k)]


def hessian_top_eigenpair(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Any = None,
    *,
    num_iters: int = 20,
    start: Any = None,
    key: jax.Array | None = None,
) -> tuple[jax.Array, Any]:
    """The top Hessian eigenvalue (the sharpness) and its eigenvector, warm-startable.

    ``num_iters`` steps of Lanczos with full reorthogonalisation (as in
    :func:`hessian_eigenvalues`) from ``start``, a pytree shaped like ``params`` (e.g. the
    eigenvector of an earlier measurement: along a training run the top eigenvector moves
    slowly, so few steps suffice), or from ``jax.random.normal(key, (n,))`` over the ``n``
    flattened parameters (``jax.flatten_util.ravel_pytree``'s order). The
    function is pure and checks nothing about values, so it runs inside ``jit``/``scan``:
    it is the measurement that :func:`track_sharpness` and :func:`gdopt.fit`'s
    ``sharpness_every`` make between chunks of epochs, passing each measurement's vector on
    as the next one's ``start``.

    Args:
      loss_fn: ``loss_fn(params, data) -> scalar``, or ``loss_fn(params)`` with ``data=None``.
      params: the point.
      data: the batch the loss is measured on (all of it), or ``None``.
      num_iters: Lanczos steps (>= 1; at most the parameter count are taken).
      start: the starting vector (a pytree like ``params``, any norm), or ``None``.
      key: PRNG key of the random start when ``start`` is ``None`` (default
        ``jax.random.PRNGKey(0)``).

    Returns:
      ``(eigenvalue, eigenvector)``: a scalar JAX array and a unit-norm pytree like
      ``params``.

    >>> import gdopt, jax.numpy as jnp
    >>> f = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 2.0, 5.0]) * p ** 2)
    >>> value, vec = gdopt.landscape.hessian_top_eigenpair(f, jnp.zeros(3), num_iters=3)
    >>> round(float(value), 4), [round(abs(float(v)), 4) for v in vec]
    (5.0, [0.0, 0.0, 1.0])
    """
    check_callable("loss_fn", loss_fn, "a function loss_fn(params[, data]) -> scalar")
    flat, unravel = ravel_pytree(params)
    m = min(check_int("num_iters", num_iters, 1), flat.shape[0])
    if start is None:
        v0 = jax.random.normal(check_key(key), flat.shape, flat.dtype)
    else:
        check_same_structure(start, params, names=("start", "params"))
        v0 = ravel_pytree(start)[0].astype(flat.dtype)
    values, vecs = _eigs_traced(loss_fn, params, data, None, 1, m, "largest", v0)
    return values[0], unravel(vecs[0])


@functools.partial(jax.jit, static_argnames=("loss_fn", "n_probes"))
def _trace(loss_fn, params, data, key, n_probes):
    matvec, flat, _ = _flat_hvp(loss_fn, params, data)
    probes = jax.random.rademacher(key, (n_probes, flat.shape[0]), flat.dtype)
    quad = lax.map(lambda z: jnp.vdot(z, matvec(z)), probes, batch_size=min(n_probes, 16))
    return jnp.mean(quad)


def hessian_trace(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Any = None,
    *,
    n_probes: int = 100,
    key: jax.Array | None = None,
) -> jax.Array:
    """Hutchinson's estimate of the trace of the Hessian: ``mean_i z_i^T H z_i``.

    ``z_i`` are Rademacher vectors (entries ±1), for which ``E[z^T H z] = tr H`` and the
    variance, ``2 sum_{i != j} H_ij^2`` per probe, is the smallest of any i.i.d. probe
    distribution; the standard error falls as ``1 / sqrt(n_probes)``. One compiled call
    (probes in vectorised chunks of 16).

    Args:
      loss_fn: ``loss_fn(params, data) -> scalar``, or ``loss_fn(params)`` with ``data=None``.
      params: the point.
      data: the batch, or ``None``.
      n_probes: the number of probe vectors (>= 1).
      key: PRNG key of the probes (default ``jax.random.PRNGKey(0)``).

    Returns:
      A scalar JAX array.

    References:
      Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
      smoothing splines", Comm. Statist. Simulation Comput. 18(3), 1989.

    >>> import gdopt, jax.numpy as jnp
    >>> f = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 2.0, 5.0]) * p ** 2)
    >>> float(gdopt.landscape.hessian_trace(f, jnp.zeros(3), n_probes=4))  # diagonal: exact
    8.0
    """
    _check_point(loss_fn, params)
    n_probes = check_int("n_probes", n_probes, 1)
    return _trace(loss_fn, params, data, check_key(key), n_probes)


class SpectralDensity(NamedTuple):
    """The Hessian's spectral density (:func:`hessian_spectrum`).

    Attributes:
      grid: NumPy, the eigenvalue axis (shape ``(n_grid,)``).
      density: NumPy, the smoothed density on ``grid`` (integrates to about 1).
      nodes: NumPy ``(n_probes, num_iters)``: the Ritz values of each probe's Lanczos run.
      weights: NumPy ``(n_probes, num_iters)``: their quadrature weights (the squared first
        components of the Ritz vectors; each row sums to 1).
      sigma: the width of the Gaussian kernel.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float


@functools.partial(jax.jit, static_argnames=("loss_fn", "n_probes", "m"))
def _slq(loss_fn, params, data, key, n_probes, m):
    matvec, flat, _ = _flat_hvp(loss_fn, params, data)
    keys = jax.random.split(key, n_probes)

    def one(k):
        alphas, betas, _ = _lanczos(matvec, jax.random.normal(k, flat.shape, flat.dtype), m)
        theta, s = jnp.linalg.eigh(_tridiagonal(alphas, betas))
        return theta, jnp.square(s[0])

    return lax.map(one, keys)


def hessian_spectrum(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Any = None,
    *,
    num_iters: int = 90,
    n_probes: int = 10,
    key: jax.Array | None = None,
    n_grid: int = 1000,
    sigma: float | None = None,
) -> SpectralDensity:
    """The spectral density of the Hessian by stochastic Lanczos quadrature (SLQ).

    For each of ``n_probes`` random unit vectors ``v``, ``num_iters`` Lanczos steps give the
    tridiagonal ``T = S diag(θ) S^T``; the nodes ``θ_j`` with weights ``τ_j = S_{0j}^2`` are a
    Gauss quadrature of ``v^T f(H) v``, whose mean over ``v`` estimates
    ``(1/n) tr f(H) = ∫ f(λ) φ(λ) dλ``. The density is ``φ(t) = mean_v sum_j τ_j g(t - θ_j)``
    with a Gaussian kernel ``g`` of width ``sigma`` (Ghorbani et al. 2019: 90 steps, 10
    probes; their ``σ^2 = 10^-5`` on the spectrum scaled to ``[-1, 1]`` is the default
    ``sigma = 0.00158 (λ_max - λ_min)``). One compiled call.

    Args:
      loss_fn: ``loss_fn(params, data) -> scalar``, or ``loss_fn(params)`` with ``data=None``.
      params: the point.
      data: the batch, or ``None``.
      num_iters: Lanczos steps per probe (>= 1; at most the parameter count).
      n_probes: random probe vectors (>= 1).
      key: PRNG key (default ``jax.random.PRNGKey(0)``).
      n_grid: points of the returned grid (>= 2).
      sigma: the kernel width (> 0); default as above.

    Returns:
      A :class:`SpectralDensity`.

    References:
      Ghorbani, Krishnan & Xiao, "An Investigation into Neural Net Optimization via Hessian
      Eigenvalue Density", ICML 2019, https://arxiv.org/abs/1901.10159; Lin, Saad & Yang,
      "Approximating spectral densities of large matrices", SIAM Review 58(1), 2016.

    >>> import gdopt, jax.numpy as jnp
    >>> f = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 2.0, 5.0]) * p ** 2)
    >>> s = gdopt.landscape.hessian_spectrum(f, jnp.zeros(3), num_iters=3, n_probes=2)
    >>> [round(float(v), 4) for v in s.nodes[0]], round(float(s.weights[0].sum()), 4)
    ([1.0, 2.0, 5.0], 1.0)
    """
    _check_point(loss_fn, params)
    size = tree_size(params)
    m = min(check_int("num_iters", num_iters, 1), size)
    n_probes = check_int("n_probes", n_probes, 1)
    n_grid = check_int("n_grid", n_grid, 2)
    check_scalar("sigma", sigma, low=0.0, low_open=True, allow_none=True)
    nodes, weights = (np.asarray(x, np.float64) for x in _slq(loss_fn, params, data, check_key(key),
                                                              n_probes, m))  # fmt: skip
    lo, hi = float(nodes.min()), float(nodes.max())
    width = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    s = 0.00158 * width if sigma is None else float(sigma)
    grid = np.linspace(lo - 3 * s - 0.01 * width, hi + 3 * s + 0.01 * width, n_grid)
    z = (grid[:, None, None] - nodes[None]) / s
    density = np.sum(weights[None] * np.exp(-0.5 * z**2), axis=2).mean(axis=1)
    density /= s * math.sqrt(2.0 * math.pi)
    return SpectralDensity(
        grid=grid,
        density=density,
        nodes=nodes,
        weights=weights,
        sigma=s,
    )


# ----------------------------------------------------------------------------- sharpness


class SharpnessHistory(NamedTuple):
    """What :func:`track_sharpness` returns.

    Attributes:
      epochs: NumPy int, the epochs after which the sharpness was measured (0: at the start).
      sharpness: NumPy, the top Hessian eigenvalue at those epochs.
      train_loss: NumPy, the mean train loss of every epoch run (as in ``fit``'s history).
      params: the parameters at the end.
      opt_state: the optimizer state at the end.
      diverged: training diverged (it stopped there; later measurements repeat the last one).
    """

    epochs: np.ndarray
    sharpness: np.ndarray
    train_loss: np.ndarray
    params: Any
    opt_state: Any
    diverged: bool


def track_sharpness(
    loss_fn: Callable[..., Any],
    params: Any,
    optimizer: GradientTransformation,
    data: Any = None,
    *,
    epochs: int,
    every: int = 1,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    num_iters: int = 20,
    sharpness_data: Any = None,
) -> SharpnessHistory:
    """Train and record the sharpness (the top Hessian eigenvalue) every ``every`` epochs.

    Runs the engine's pure core (:func:`gdopt.make_train_fn`, the same epochs as
    :func:`gdopt.fit` with ``pack=False``) ``every`` epochs at a time and, between chunks,
    :func:`hessian_eigenvalues` with ``k=1`` on ``sharpness_data`` (default the training
    data), warm-started from the previous top eigenvector; the whole run is one compiled
    ``lax.scan``. For full-batch gradient descent at learning rate ``η`` the sharpness rises
    until it reaches about ``2 / η`` and then hovers there, the edge of stability (Cohen et
    al. 2021): plot it with :func:`gdopt.plot.sharpness_curve`.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, or ``loss_fn(params)`` with
        ``data=None`` (then one epoch is one step).
      params: the initial parameters.
      optimizer: the gradient transformation.
      data: the training data (a pytree of arrays sharing the example axis), or ``None``.
      epochs: epochs to train (>= 1).
      every: measure after every ``every`` epochs (>= 1).
      batch_size: as in :func:`gdopt.fit` (``None``: full batch).
      key: PRNG key of the shuffles and of the Lanczos start (default ``PRNGKey(0)``).
      num_iters: Lanczos steps per measurement (>= 1).
      sharpness_data: the batch the Hessian is measured on (default ``data``; pass a subset
        for a large data set).

    Returns:
      A :class:`SharpnessHistory`.

    References:
      Cohen, Kaur, Li, Kolter & Talwalkar, "Gradient Descent on Neural Networks Typically
      Occurs at the Edge of Stability", ICLR 2021, https://arxiv.org/abs/2103.00065.

    >>> import gdopt, jax.numpy as jnp
    >>> f = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * p ** 2)
    >>> h = gdopt.landscape.track_sharpness(f, jnp.ones(2), gdopt.sgd(0.1), epochs=4, every=2)
    >>> h.epochs.tolist(), [round(float(s), 4) for s in h.sharpness]
    ([0, 2, 4], [4.0, 4.0, 4.0])
    """
    _check_point(loss_fn, params)
    epochs = check_int("epochs", epochs, 1)
    every = min(check_int("every", every, 1), epochs)
    size = tree_size(params)
    m = min(check_int("num_iters", num_iters, 1), size)
    if data is None:
        if batch_size is not None:
            raise ValueError(
                "batch_size needs data: a deterministic loss_fn(params) is full-batch."
            )
        if sharpness_data is not None:
            raise ValueError("sharpness_data needs data: a deterministic loss_fn(params) has none.")
        batch_loss = _deterministic(loss_fn)
        train_data: Any = None  # the core's data=None epochs: one full step each
        measure_data = None
    else:
        batch_loss = loss_fn
        train_data = jax.tree.map(jnp.asarray, data)
        measure_data = train_data if sharpness_data is None else sharpness_data
    n_chunks = -(-epochs // every)
    train = make_train_fn(batch_loss, optimizer, n_epochs=every, batch_size=batch_size)
    key = check_key(key)
    results = _run_tracker(
        train, loss_fn, params, optimizer, train_data, measure_data, key, n_chunks, m, epochs
    )
    state, sharp, hist = jax.device_get(results)
    ran = np.asarray(hist.epochs).ravel() > 0
    measured = np.arange(n_chunks + 1) * every
    measured[-1] = min(measured[-1], epochs)
    return SharpnessHistory(
        epochs=measured.astype(np.int64),
        sharpness=np.asarray(sharp),
        train_loss=np.asarray(hist.train_loss).ravel()[ran],
        params=state.params,
        opt_state=state.opt_state,
        diverged=bool(state.diverged),
    )


def _deterministic(loss_fn: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    return lambda p, batch: loss_fn(p)


def _run_tracker(train, measure_fn, params, optimizer, data, measure_data, key, n_chunks, m, stop):
    every_stop = jnp.asarray(stop, jnp.int32)

    def run(params, key):
        state = init_fit_state(params, optimizer.init(params))
        flat, unravel = ravel_pytree(params)
        v0 = unravel(jax.random.normal(key, flat.shape, flat.dtype))  # as start=None draws it

        def chunk(carry, i):
            # chunk 0 trains nothing (stop_epoch 0) and measures the start: one Lanczos trace
            state, v = carry
            state, hist = train(state, data, key, None, jnp.where(i == 0, 0, every_stop))
            value, v = hessian_top_eigenpair(
                measure_fn, state.params, measure_data, num_iters=m, start=v
            )
            return (state, v), (value, hist)

        (state, _), (sharp, hist) = lax.scan(chunk, (state, v0), jnp.arange(n_chunks + 1))
        return state, sharp, hist

    return jax.jit(run)(params, key)
