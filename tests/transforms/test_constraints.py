"""``gdopt/transforms/constraints.py``: keep_params_nonnegative and the projections, as pure
functions (``project_*``) and as chain transforms (``projection_*``).

Against hand computations, a float64 NumPy reference of the simplex projection (Duchi et al.,
2008) and optax (``optax.projections``, projected SGD trajectories); dtypes and ``None``
leaves; errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    oracle,
    run_trajectory,
)

PARAMS = make_params()
GRADS = gradient_sequence(PARAMS, steps=100)


# ----------------------------------------------------------------------------- non-negativity


def test_keep_params_nonnegative():
    import optax

    positive = jax.tree.map(jnp.abs, PARAMS)
    ours = run_trajectory(
        gdopt.chain(gdopt.sgd(0.3), gdopt.keep_params_nonnegative()), positive, GRADS
    )
    with oracle():
        ref = run_trajectory(
            optax.chain(optax.sgd(0.3), optax.keep_params_nonnegative()), positive, GRADS
        )
    assert_trajectories_close(ours, ref)
    assert all(float(jnp.min(x)) >= 0 for p in ours for x in jax.tree.leaves(p))
    assert any(float(jnp.min(x)) == 0 for x in jax.tree.leaves(ours[-1]))  # the bound is hit


def test_constraints_need_params():
    g = {"w": jnp.ones(2)}
    for t in (gdopt.keep_params_nonnegative(), gdopt.projection_box(0.0, 1.0)):
        with pytest.raises(ValueError, match="params"):
            t.update(g, t.init(g))


# ----------------------------------------------------------------------------- projections


def _np_simplex(v, z):
    """Duchi et al. (2008), Fig. 1, in NumPy float64."""
    mu = np.sort(v)[::-1]
    css = np.cumsum(mu)
    rho = max(j for j in range(1, len(v) + 1) if mu[j - 1] - (css[j - 1] - z) / j > 0)
    theta = (css[rho - 1] - z) / rho
    return np.maximum(v - theta, 0.0)


@pytest.mark.parametrize("scale", [1.0, 3.5])
def test_project_simplex_matches_numpy_reference(scale):
    import optax.projections

    tree = jax.tree.map(lambda x: 2.0 * x, PARAMS)
    out = gdopt.project_simplex(tree, scale)
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(out)])
    ref = _np_simplex(
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)]).astype(np.float64), scale
    )
    np.testing.assert_allclose(flat, ref, rtol=1e-5, atol=1e-6)
    assert abs(flat.sum() - scale) < 1e-4 and flat.min() >= 0
    with oracle():
        ref_optax = optax.projections.projection_simplex(tree, scale)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref_optax), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # a point of the simplex is its own projection
    point = {"a": jnp.array([0.2, 0.3]), "b": jnp.array([0.5])}
    again = gdopt.project_simplex(point)
    np.testing.assert_allclose(again["a"], [0.2, 0.3], rtol=1e-6)


def test_project_l2_ball_and_box_and_nonneg():
    import optax.projections

    out = gdopt.project_l2_ball(PARAMS, 0.5)
    norm = float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(out))))
    assert norm <= 0.5 + 1e-6 and abs(norm - 0.5) < 1e-5
    inside = jax.tree.map(lambda x: 1e-3 * x, PARAMS)
    for a, b in zip(
        jax.tree.leaves(gdopt.project_l2_ball(inside, 0.5)), jax.tree.leaves(inside), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    box = gdopt.project_box(PARAMS, -0.5, 0.25)
    assert all(float(x.min()) >= -0.5 and float(x.max()) <= 0.25 for x in jax.tree.leaves(box))
    lower = jax.tree.map(lambda x: jnp.full_like(x, -0.1), PARAMS)
    upper = jax.tree.map(lambda x: jnp.full_like(x, 0.1), PARAMS)
    with oracle():
        ref_box = optax.projections.projection_box(PARAMS, lower, upper)
    for a, b in zip(
        jax.tree.leaves(gdopt.project_box(PARAMS, lower, upper)),
        jax.tree.leaves(ref_box),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    nn = gdopt.project_non_negative(PARAMS)
    for a, b in zip(jax.tree.leaves(nn), jax.tree.leaves(PARAMS), strict=True):
        np.testing.assert_array_equal(a, np.maximum(b, 0))


def _optax_projection(name, *args):
    def project(p):
        import optax.projections

        fn = getattr(optax.projections, name)
        if name == "projection_box":
            lo, hi = args
            return fn(p, *(jax.tree.map(lambda x, v=v: v * jnp.ones_like(x), p) for v in (lo, hi)))
        return fn(p, *args)

    return project


@pytest.mark.parametrize(
    "ours,ref",
    [
        (lambda: gdopt.projection_box(-0.3, 0.4), _optax_projection("projection_box", -0.3, 0.4)),
        (lambda: gdopt.projection_l2_ball(2.0), _optax_projection("projection_l2_ball", 2.0)),
        (lambda: gdopt.projection_non_negative(), _optax_projection("projection_non_negative")),
        (lambda: gdopt.projection_simplex(2.0), _optax_projection("projection_simplex", 2.0)),
    ],
    ids=["box", "l2_ball", "non_negative", "simplex"],
)
def test_projected_gradient_descent_parity(ours, ref):
    """Projected SGD: p <- P(p - 0.1 g), against optax's projection applied by hand."""
    grads = GRADS[:50]
    traj = run_trajectory(gdopt.chain(gdopt.sgd(0.1), ours()), PARAMS, grads)
    p, expected = PARAMS, []
    with oracle():
        for g in grads:
            p = ref(jax.tree.map(lambda x, y: x - 0.1 * y, p, g))
            expected.append(p)
    assert_trajectories_close(traj, expected, rtol=1e-5, atol=1e-6)


def test_projection_keeps_dtype_and_none_leaves():
    t = gdopt.projection_l2_ball(1.0)
    p = {"w": jnp.ones(4, jnp.bfloat16), "frozen": None}
    u, _ = t.update({"w": jnp.ones(4, jnp.bfloat16), "frozen": None}, t.init(p), p)
    assert u["w"].dtype == jnp.bfloat16 and u["frozen"] is None
    new = gdopt.apply_updates(p, u)
    assert abs(float(jnp.linalg.norm(new["w"].astype(jnp.float32))) - 1.0) < 1e-2


def test_projection_errors():
    with pytest.raises(ValueError, match="lower <= upper"):
        gdopt.projection_box(1.0, 0.0)
    with pytest.raises(ValueError, match="lower <= upper"):
        gdopt.project_box({"w": jnp.ones(2)}, {"w": jnp.array([0.0, 2.0])}, {"w": 1.0})
    with pytest.raises(ValueError, match=r"lower .*\['v'\]"):
        gdopt.project_box({"w": jnp.ones(2)}, {"v": 0.0}, 1.0)
    with pytest.raises(ValueError, match="scale"):
        gdopt.projection_l2_ball(-1.0)
    with pytest.raises(ValueError, match="scale"):
        gdopt.projection_simplex(0.0)
    with pytest.raises(TypeError, match="project"):
        gdopt.apply_projection(3.0)
