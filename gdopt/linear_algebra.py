"""Linear algebra used in optimization: optax's top-level ``power_iteration``,
``matrix_inverse_pth_root`` and ``nnls``.

* :func:`power_iteration`: the dominant eigenvalue and eigenvector of a matrix or of a
  matrix-vector product on pytrees (a Hessian-vector product, say);
* :func:`matrix_inverse_pth_root`: ``A^(-1/p)`` of a symmetric positive semi-definite matrix
  by coupled Newton iterations (Shampoo's preconditioner);
* :func:`nnls`: non-negative least squares by Polyak's fast projected gradient.

Each is a pure function of arrays that runs under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdopt._numerics import cast_to, compute_dtype, promote
from gdopt.tree import norm as tree_norm
from gdopt.tree import scale as tree_scale
from gdopt.tree import sub as tree_sub
from gdopt.tree import vdot as tree_vdot

__all__ = ["power_iteration", "matrix_inverse_pth_root", "nnls"]

_HIGHEST = jax.lax.Precision.HIGHEST


def _normalized(tree: Any) -> Any:
    return tree_scale(1.0 / tree_norm(tree), tree)


def _square_matrix(name: str, matrix: Any) -> jax.Array:
    matrix = jnp.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be a square matrix (n, n), got shape {matrix.shape}.")
    if not jnp.issubdtype(matrix.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point matrix, got dtype {matrix.dtype}.")
    return matrix


def _count(name: str, value: Any, low: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    try:
        k = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}."
        ) from None
    if k < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {k}.")
    return k


def power_iteration(
    matrix: jax.Array | Callable[[Any], Any],
    *,
    v0: Any = None,
    num_iters: int | jax.Array = 100,
    error_tolerance: float | jax.Array = 1e-6,
    precision: jax.lax.Precision = _HIGHEST,
    key: jax.Array | None = None,
) -> tuple[jax.Array, Any]:
    """The dominant eigenvalue and its eigenvector by power iteration (optax's
    ``power_iteration``).

    Rule (von Mises, 1929)::

        v <- z / ||z||,  z <- A v,  λ <- <v, z>

    from ``v = v0 / ||v0||``, ``z = A v``, until the relative residual
    ``||z - λ v|| / |λ|`` is below ``error_tolerance`` or after ``num_iters`` steps. The
    eigenvalue found is the one of largest magnitude (the spectral radius, with its sign);
    a matrix whose two largest eigenvalues have the same magnitude may not converge.

    Args:
      matrix: a square matrix ``(n, n)``, or a function ``v -> A v`` on pytrees (a
        Hessian-vector product), in which case ``v0`` is required.
      v0: the starting vector (a pytree shaped like the function's input). Default for a
        matrix: uniform in ``[-1, 1]`` drawn with ``key`` (``PRNGKey(0)`` when ``None``),
        optax's default.
      num_iters: the most iterations.
      error_tolerance: the relative residual at which to stop.
      precision: the precision of the matrix-vector products of a matrix.
      key: the key of the default ``v0``.

    Returns:
      ``(eigenvalue, eigenvector)``, the eigenvector of norm 1 (a pytree like ``v0`` for a
      function).

    Raises:
      ValueError: a function without ``v0``, or a matrix that is not square.

    >>> import jax.numpy as jnp
    >>> lam, v = power_iteration(jnp.array([[2.0, 1.0], [1.0, 2.0]]))
    >>> round(float(lam), 4), [round(abs(float(x)), 4) for x in v]
    (3.0, [0.7071, 0.7071])
    """
    if callable(matrix):
        mvp = matrix
        if v0 is None:
            raise ValueError(
                "power_iteration needs v0 when matrix is a function v -> A v (the function's "
                "input structure is not known)."
            )
    else:
        a = _square_matrix("power_iteration's matrix", matrix)
        mvp = lambda v: jnp.matmul(a, v, precision=precision)  # noqa: E731
        if v0 is None:
            k = jax.random.PRNGKey(0) if key is None else key
            v0 = jax.random.uniform(k, a.shape[-1:], a.dtype, minval=-1.0, maxval=1.0)
    v = _normalized(v0)
    z = mvp(v)
    eig0 = jnp.zeros((), jnp.real(tree_vdot(v, z)).dtype)

    def cond(carry: tuple) -> jax.Array:
        v, z, eig, i = carry
        residual = tree_norm(tree_sub(z, tree_scale(eig, v)))
        converged = jnp.abs(residual / eig) < error_tolerance
        return ~converged & (i < num_iters)

    def body(carry: tuple) -> tuple:
        _, z, _, i = carry
        v = _normalized(z)
        z = mvp(v)
        return v, z, jnp.real(tree_vdot(v, z)).astype(eig0.dtype), i + 1

    _, z, eig, _ = jax.lax.while_loop(cond, body, (v, z, eig0, jnp.asarray(0)))
    return eig, _normalized(z)


def _matrix_power(m: jax.Array, p: int, precision: Any) -> jax.Array:
    """``m^p`` for a positive integer ``p`` by repeated squaring."""
    out = None
    while True:
        if p & 1:
            out = m if out is None else jnp.matmul(out, m, precision=precision)
        p >>= 1
        if not p:
            return out  # type: ignore[return-value]
        m = jnp.matmul(m, m, precision=precision)


def matrix_inverse_pth_root(
    matrix: jax.Array,
    p: int,
    num_iters: int | jax.Array = 100,
    ridge_epsilon: float | jax.Array = 1e-6,
    error_tolerance: float | jax.Array = 1e-6,
    precision: jax.lax.Precision = _HIGHEST,
) -> tuple[jax.Array, jax.Array]:
    """``A^(-1/p)`` of a symmetric positive semi-definite matrix by coupled Newton
    iterations (optax's ``matrix_inverse_pth_root``, the root Shampoo preconditions with).

    Rule (Higham, *Functions of Matrices*, 2008, eq. 7.18; Gupta et al., 2018)::

        A_ε = A + ε λ_max(A) I                     (λ_max by power_iteration, ε = ridge_epsilon)
        z = (1 + p) / (2 ||A_ε||_F),  M_0 = z A_ε,  H_0 = z^(1/p) I
        T_k = (1 + 1/p) I - M_k / p
        M_{k+1} = T_k^p M_k,  H_{k+1} = H_k T_k    (H_k -> A_ε^(-1/p) as M_k -> I)

    until ``max|M - I| <= error_tolerance``, after ``num_iters`` steps, or at a step where
    that error grows by more than 1.2x (the step before it is kept). Computed in float32 (or
    the matrix's dtype when wider); a 1x1 matrix is ``(a + ε λ_max)^(-1/p)`` directly.
    Unlike optax's (which handles ``p`` in {1, 2, 4, 8}), any positive integer ``p`` works.

    Args:
      matrix: a symmetric positive semi-definite ``(n, n)`` matrix.
      p: the root, a positive integer.
      num_iters: the most Newton iterations.
      ridge_epsilon: the ridge ``ε``, relative to the largest eigenvalue.
      error_tolerance: the ``max|M - I|`` at which to stop.
      precision: the precision of the matrix products.

    Returns:
      ``(root, error)``: ``A_ε^(-1/p)`` in the matrix's dtype and the final ``max|M - I|``.

    Raises:
      ValueError: the matrix is not square or ``p`` is not a positive integer.

    >>> import jax.numpy as jnp
    >>> root, error = matrix_inverse_pth_root(jnp.diag(jnp.array([4.0, 16.0])), 2, ridge_epsilon=0.0)
    >>> [round(float(x), 4) for x in jnp.diag(root)], bool(error < 1e-5)
    ([0.5, 0.25], True)
    """
    a = _square_matrix("matrix_inverse_pth_root's matrix", matrix)
    p = _count("matrix_inverse_pth_root's p", p, 1)
    dtype = compute_dtype(a.dtype)
    m = cast_to(a, dtype)
    n = a.shape[0]
    alpha = jnp.asarray(-1.0 / p, dtype)
    eye = jnp.eye(n, dtype=dtype)
    max_ev, _ = power_iteration(m, num_iters=100, error_tolerance=1e-6, precision=precision)
    ridge = cast_to(ridge_epsilon, dtype) * jnp.maximum(max_ev, 1e-16)
    if n == 1:
        return cast_to((m + ridge) ** alpha, a.dtype), jnp.zeros((), dtype)
    damped = m + ridge * eye
    z = (1 + p) / (2 * jnp.linalg.norm(damped))
    m0 = damped * z
    h0 = eye * jnp.power(z, 1.0 / p)
    error0 = jnp.max(jnp.abs(m0 - eye))

    def cond(carry: tuple) -> jax.Array:
        i, _, _, _, error, improving = carry
        return (i < num_iters) & (error > error_tolerance) & improving

    def body(carry: tuple) -> tuple:
        i, mk, hk, _, error, _ = carry
        t = (1 - alpha) * eye + alpha * mk
        new_m = jnp.matmul(_matrix_power(t, p, precision), mk, precision=precision)
        new_h = jnp.matmul(hk, t, precision=precision)
        new_error = jnp.max(jnp.abs(new_m - eye))
        return i + 1, new_m, new_h, hk, new_error, new_error < error * 1.2

    init = (jnp.asarray(0), m0, h0, h0, error0, jnp.asarray(True))
    _, mk, hk, previous, _, improving = jax.lax.while_loop(cond, body, init)
    root = jnp.where(improving, hk, previous)
    return cast_to(root, a.dtype), jnp.max(jnp.abs(mk - eye))


def nnls(
    A: jax.Array,  # noqa: N803  (optax's argument names)
    b: jax.Array,
    iters: int,
    unroll: int | bool = 1,
    L: float | jax.Array | None = None,  # noqa: N803
) -> jax.Array:
    """Non-negative least squares: ``argmin_{x >= 0} ||A x - b||_2`` (optax's ``nnls``), by
    Polyak's fast projected gradient.

    Rule (Polyak, 2015), with ``Q = AᵀA``, ``q = Aᵀb`` and ``L >= λ_max(Q)``::

        c_{k+1} = (1 + sqrt(1 + 4 c_k²)) / 2,   s = (c_k - 1) / c_{k+1}
        x_{k+1} = max(0, y_k - (Q y_k - q) / L)
        y_{k+1} = x_{k+1} + s (x_{k+1} - x_k)

    from ``x_0 = y_0 = 0``, ``c_0 = 0``, for ``iters`` steps (a ``lax.scan``).

    Args:
      A: the ``(M, N)`` matrix.
      b: the ``(M,)`` vector, or ``(M, K)`` for ``K`` problems at once.
      iters: the number of iterations.
      unroll: ``lax.scan``'s unroll.
      L: an upper bound of the largest eigenvalue of ``AᵀA`` (default
        ``min(||AᵀA||_F, ||AᵀA||_1)``).

    Returns:
      ``x`` of shape ``(N,)`` (or ``(N, K)``), non-negative.

    Raises:
      ValueError: ``A`` is not a matrix, ``b`` not a vector or matrix, their first axes
        differ, or ``iters`` is negative.

    References:
      Polyak, "Projected gradient method for non-negative least square", Contemporary
      Mathematics 636, 2015.

    >>> import jax.numpy as jnp
    >>> x = nnls(jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([5.0, 6.0]), 1000)
    >>> [round(float(v), 2) for v in x]
    [0.0, 1.7]
    """
    A, b = promote(jnp.asarray(A), jnp.asarray(b))
    if A.ndim != 2:
        raise ValueError(f"nnls' A must be a matrix (M, N), got shape {A.shape}.")
    if b.ndim not in (1, 2) or b.shape[0] != A.shape[0]:
        raise ValueError(
            f"nnls' b must have shape ({A.shape[0]},) or ({A.shape[0]}, K) to match A of shape "
            f"{A.shape}, got {b.shape}."
        )
    iters = _count("nnls' iters", iters, 0)
    q_mat = A.mT @ A
    q_vec = A.mT @ b
    if L is None:
        fro = jnp.linalg.matrix_norm(q_mat, ord="fro")
        L = jnp.minimum(fro, jnp.linalg.matrix_norm(q_mat, ord=1)) if q_mat.size else fro
    lip = jnp.asarray(L, q_mat.dtype)
    lip = jnp.where(lip == 0, jnp.ones_like(lip), lip)

    def step(carry: tuple, _: Any) -> tuple:
        x, y, c = carry
        c_next = (1 + jnp.sqrt(1 + 4 * c**2)) / 2
        s = (c - 1) / c_next
        x_next = jnp.maximum(y - (q_mat @ y - q_vec) / lip, 0)
        return (x_next, x_next + s * (x_next - x), c_next), None

    x0 = jnp.zeros(A.shape[-1:] + b.shape[1:], jnp.result_type(q_vec))
    c0 = jnp.zeros((), x0.dtype)
    (x, _, _), _ = jax.lax.scan(step, (x0, x0, c0), length=iters, unroll=unroll)
    return x
