"""``gdopt/linear_algebra.py``: power_iteration, matrix_inverse_pth_root and nnls.

Closed forms (eigendecompositions in float64, SciPy's NNLS), optax's functions as oracles,
pytree matrix-vector products, ``jit``/``vmap``, and errors that name the argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import gdopt
from gdopt.linear_algebra import matrix_inverse_pth_root, nnls, power_iteration
from tests.helpers import oracle

_X = jax.random.normal(jax.random.PRNGKey(1), (6, 6))
SPD = _X @ _X.T + 0.1 * jnp.eye(6)  # symmetric positive definite, eigenvalues apart
_EV, _V = np.linalg.eigh(np.asarray(SPD, np.float64))


# ----------------------------------------------------------------------------- power_iteration


def test_power_iteration_matches_the_eigendecomposition_and_optax():
    lam, v = power_iteration(SPD)
    assert float(lam) == pytest.approx(_EV[-1], rel=1e-5)
    assert abs(float(np.dot(np.asarray(v, np.float64), _V[:, -1]))) == pytest.approx(1, abs=1e-5)
    with oracle():
        ref_lam, ref_v = optax.power_iteration(SPD)
    np.testing.assert_allclose(lam, ref_lam, rtol=1e-6)
    np.testing.assert_allclose(v, ref_v, atol=1e-6)
    # the eigenvalue of largest magnitude keeps its sign
    lam, _ = power_iteration(jnp.diag(jnp.array([1.0, -3.0, 2.0])), key=jax.random.PRNGKey(5))
    assert float(lam) == pytest.approx(-3.0, rel=1e-5)


def test_power_iteration_on_a_pytree_product_and_under_jit_and_vmap():
    def hvp(t):  # a Hessian-vector product of sum(2 a² / 2 + 5 b² / 2)
        return {"a": 2.0 * t["a"], "b": 5.0 * t["b"]}

    lam, v = power_iteration(hvp, v0={"a": jnp.ones(2), "b": jnp.ones(3)})
    assert float(lam) == pytest.approx(5.0, rel=1e-5)
    np.testing.assert_allclose(v["b"], np.full(3, 3**-0.5), atol=1e-5)
    np.testing.assert_allclose(v["a"], 0.0, atol=1e-5)
    jitted = jax.jit(lambda m: power_iteration(m)[0])(SPD)
    assert float(jitted) == pytest.approx(_EV[-1], rel=1e-5)
    scales = jnp.array([1.0, 2.0])
    lams = jax.vmap(lambda s: power_iteration(s * SPD)[0])(scales)
    np.testing.assert_allclose(lams, _EV[-1] * np.array([1.0, 2.0]), rtol=1e-5)
    # num_iters bounds the work: one step from v0 = e1 gives the Rayleigh quotient of A e1
    a = jnp.array([[2.0, 1.0], [1.0, 3.0]])
    lam1, _ = power_iteration(a, v0=jnp.array([1.0, 0.0]), num_iters=1)
    z = np.array([2.0, 1.0]) / np.sqrt(5.0)
    assert float(lam1) == pytest.approx(float(z @ np.asarray(a) @ z), rel=1e-6)


# ----------------------------------------------------------------------------- matrix roots


def _exact_root(p, ridge=1e-6):
    lam = _EV + ridge * _EV[-1]
    return (_V * lam ** (-1.0 / p)) @ _V.T


@pytest.mark.parametrize("p", [1, 2, 4, 8])
def test_matrix_inverse_pth_root_matches_the_closed_form_and_optax(p):
    root, error = matrix_inverse_pth_root(SPD, p)
    np.testing.assert_allclose(root, _exact_root(p), atol=5e-6 * np.abs(_exact_root(p)).max())
    assert float(error) < 1e-5
    with oracle():
        ref_root, ref_error = optax.matrix_inverse_pth_root(SPD, p)
    np.testing.assert_allclose(root, ref_root, rtol=1e-5, atol=1e-7)
    assert float(error) == pytest.approx(float(ref_error), abs=1e-6)


def test_matrix_inverse_pth_root_any_integer_root_small_and_jit():
    # p = 3: optax's (powers of two only) is off; the Newton iteration here is exact
    root, _ = matrix_inverse_pth_root(SPD, 3)
    np.testing.assert_allclose(root, _exact_root(3), atol=1e-5)
    r3 = np.asarray(root, np.float64)
    np.testing.assert_allclose(
        r3 @ r3 @ r3 @ (np.asarray(SPD) + 1e-6 * _EV[-1] * np.eye(6)), np.eye(6), atol=1e-4
    )
    one, error = matrix_inverse_pth_root(jnp.array([[4.0]]), 2, ridge_epsilon=0.0)
    assert float(one[0, 0]) == pytest.approx(0.5) and float(error) == 0.0
    jitted, _ = jax.jit(lambda m: matrix_inverse_pth_root(m, 4))(SPD)
    np.testing.assert_allclose(jitted, _exact_root(4), atol=1e-5)
    half, _ = matrix_inverse_pth_root(SPD.astype(jnp.bfloat16), 2)
    assert half.dtype == jnp.bfloat16  # computed in float32, returned in the matrix's dtype


# ----------------------------------------------------------------------------- nnls


def test_nnls_matches_scipy_and_optax():
    a = jax.random.normal(jax.random.PRNGKey(2), (8, 4))
    b = jax.random.normal(jax.random.PRNGKey(3), (8,))
    x = nnls(a, b, 1000)
    want, _ = scipy.optimize.nnls(np.asarray(a, np.float64), np.asarray(b, np.float64))
    np.testing.assert_allclose(x, want, atol=1e-5)
    assert float(jnp.min(x)) >= 0.0 and np.count_nonzero(want == 0) >= 1  # a bound is active
    with oracle():
        ref = optax.nnls(a, b, 1000)
    np.testing.assert_allclose(x, ref, rtol=1e-6, atol=1e-7)
    # several right-hand sides at once, an explicit L, and jit
    bs = jnp.stack([b, -b], axis=1)
    xs = jax.jit(lambda a, bs: nnls(a, bs, 1000, L=50.0))(a, bs)
    assert xs.shape == (4, 2)
    for k in range(2):
        want, _ = scipy.optimize.nnls(np.asarray(a, np.float64), np.asarray(bs[:, k], np.float64))
        np.testing.assert_allclose(xs[:, k], want, atol=1e-4)


def test_linear_algebra_bad_input_and_names():
    with pytest.raises(ValueError, match="power_iteration needs v0 when matrix is a function"):
        power_iteration(lambda v: v)
    with pytest.raises(ValueError, match=r"matrix must be a square matrix \(n, n\)"):
        power_iteration(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="p must be an integer >= 1, got 0"):
        matrix_inverse_pth_root(SPD, 0)
    with pytest.raises(TypeError, match="p must be an integer, got float"):
        matrix_inverse_pth_root(SPD, 2.5)
    with pytest.raises(TypeError, match="must be a floating-point matrix"):
        matrix_inverse_pth_root(jnp.eye(2, dtype=jnp.int32), 2)
    with pytest.raises(ValueError, match=r"nnls' b must have shape \(8,\) or \(8, K\)"):
        nnls(jnp.ones((8, 4)), jnp.ones(7), 10)
    with pytest.raises(ValueError, match="nnls' A must be a matrix"):
        nnls(jnp.ones(8), jnp.ones(8), 10)
    with pytest.raises(ValueError, match="nnls' iters must be an integer >= 0"):
        nnls(jnp.ones((8, 4)), jnp.ones(8), -1)
    for name in ("power_iteration", "matrix_inverse_pth_root", "nnls"):
        assert getattr(gdopt, name) is getattr(gdopt.linear_algebra, name)
