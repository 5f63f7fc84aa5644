"""Constraints: centralize, add_noise, keep_params_nonnegative and the projections (pure
functions and chain transforms), against hand computations, a NumPy simplex reference and
optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.projections
import pytest

import gdopt
from tests.helpers import assert_trajectories_close, gradient_sequence, make_params, run_trajectory

PARAMS = make_params()
GRADS = gradient_sequence(PARAMS, steps=100)


def _parity(ours, ref, params=PARAMS, grads=GRADS):
    assert_trajectories_close(
        run_trajectory(ours, params, grads), run_trajectory(ref, params, grads), 1e-5, 1e-6
    )


# ----------------------------------------------------------------------------- centralize


def test_centralize_by_hand():
    g = {
        "w": jnp.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]]),
        "b": jnp.array([1.0, 5.0]),
        "c": jnp.arange(8.0).reshape(2, 2, 2),
    }
    u, _ = gdopt.centralize().update(g, ())
    np.testing.assert_allclose(u["w"], [[-2.0, -1.0, 3.0], [-1.0, -1.0, 2.0]])
    np.testing.assert_allclose(u["b"], [1.0, 5.0])  # vectors are left alone
    np.testing.assert_allclose(u["c"], np.arange(8.0).reshape(2, 2, 2) - [[[1.5]], [[5.5]]])
    u, _ = gdopt.centralize(axis=0).update(g, ())
    np.testing.assert_allclose(u["w"], [[0.5, 1.0, 1.5], [-0.5, -1.0, -1.5]])


def test_centralize_parity():
    _parity(
        gdopt.chain(gdopt.centralize(), gdopt.sgd(0.1)),
        optax.chain(optax.centralize(), optax.sgd(0.1)),
    )


# ----------------------------------------------------------------------------- add_noise


def test_add_noise_parity():
    """Same key, same splitting: the noisy trajectories agree (30 steps: PRNG code compiles
    slowly)."""
    _parity(
        gdopt.chain(gdopt.add_noise(0.3, 0.55, 42), gdopt.sgd(0.1)),
        optax.chain(optax.add_noise(0.3, 0.55, 42), optax.sgd(0.1)),
        grads=GRADS[:30],
    )


def test_add_noise_statistics_and_keys():
    t = gdopt.add_noise(eta=4.0, gamma=1.0, key=jax.random.key(3))
    p = {"w": jnp.zeros(20000)}
    s = t.init(p)
    update = jax.jit(t.update)
    u1, s = update(p, s)
    u2, s = update(p, s)
    # sigma_1 = 2, sigma_2 = sqrt(2); draws differ from step to step
    assert abs(float(jnp.std(u1["w"])) - 2.0) < 0.05
    assert abs(float(jnp.std(u2["w"])) - np.sqrt(2.0)) < 0.05
    assert int(s.count) == 2
    assert not bool(jnp.allclose(u1["w"], u2["w"] * np.sqrt(2.0)))
    # the same seed given as seed= or key= gives the same noise
    a = gdopt.add_noise(1.0, 0.5, seed=7)
    b = gdopt.add_noise(1.0, 0.5, key=jax.random.PRNGKey(7))
    np.testing.assert_array_equal(a.update(p, a.init(p))[0]["w"], b.update(p, b.init(p))[0]["w"])


def test_add_noise_errors():
    with pytest.raises(ValueError, match="not both"):
        gdopt.add_noise(0.1, 0.5, key=1, seed=1)
    with pytest.raises(ValueError, match="eta"):
        gdopt.add_noise(-0.1, 0.5)
    with pytest.raises(TypeError, match="key"):
        gdopt.add_noise(0.1, 0.5, key="zero")


# ----------------------------------------------------------------------------- non-negativity


def test_keep_params_nonnegative():
    positive = jax.tree.map(jnp.abs, PARAMS)
    ours = run_trajectory(
        gdopt.chain(gdopt.sgd(0.3), gdopt.keep_params_nonnegative()), positive, GRADS
    )
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
    tree = jax.tree.map(lambda x: 2.0 * x, PARAMS)
    out = gdopt.project_simplex(tree, scale)
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(out)])
    ref = _np_simplex(
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)]).astype(np.float64), scale
    )
    np.testing.assert_allclose(flat, ref, rtol=1e-5, atol=1e-6)
    assert abs(flat.sum() - scale) < 1e-4 and flat.min() >= 0
    ref_optax = optax.projections.projection_simplex(tree, scale)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref_optax)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # a point of the simplex is its own projection
    point = {"a": jnp.array([0.2, 0.3]), "b": jnp.array([0.5])}
    again = gdopt.project_simplex(point)
    np.testing.assert_allclose(again["a"], [0.2, 0.3], rtol=1e-6)


def test_project_l2_ball_and_box_and_nonneg():
    out = gdopt.project_l2_ball(PARAMS, 0.5)
    norm = float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(out))))
    assert norm <= 0.5 + 1e-6 and abs(norm - 0.5) < 1e-5
    inside = jax.tree.map(lambda x: 1e-3 * x, PARAMS)
    for a, b in zip(jax.tree.leaves(gdopt.project_l2_ball(inside, 0.5)), jax.tree.leaves(inside)):
        np.testing.assert_array_equal(a, b)
    box = gdopt.project_box(PARAMS, -0.5, 0.25)
    assert all(float(x.min()) >= -0.5 and float(x.max()) <= 0.25 for x in jax.tree.leaves(box))
    lower = jax.tree.map(lambda x: jnp.full_like(x, -0.1), PARAMS)
    upper = jax.tree.map(lambda x: jnp.full_like(x, 0.1), PARAMS)
    for a, b in zip(
        jax.tree.leaves(gdopt.project_box(PARAMS, lower, upper)),
        jax.tree.leaves(optax.projections.projection_box(PARAMS, lower, upper)),
    ):
        np.testing.assert_array_equal(a, b)
    nn = gdopt.project_non_negative(PARAMS)
    for a, b in zip(jax.tree.leaves(nn), jax.tree.leaves(PARAMS)):
        np.testing.assert_array_equal(a, np.maximum(b, 0))


@pytest.mark.parametrize(
    "ours,ref",
    [
        (
            lambda: gdopt.projection_box(-0.3, 0.4),
            lambda p: optax.projections.projection_box(
                p,
                jax.tree.map(lambda x: -0.3 * jnp.ones_like(x), p),
                jax.tree.map(lambda x: 0.4 * jnp.ones_like(x), p),
            ),
        ),
        (
            lambda: gdopt.projection_l2_ball(2.0),
            lambda p: optax.projections.projection_l2_ball(p, 2.0),
        ),
        (lambda: gdopt.projection_non_negative(), optax.projections.projection_non_negative),
        (
            lambda: gdopt.projection_simplex(2.0),
            lambda p: optax.projections.projection_simplex(p, 2.0),
        ),
    ],
    ids=["box", "l2_ball", "non_negative", "simplex"],
)
def test_projected_gradient_descent_parity(ours, ref):
    """Projected SGD: p <- P(p - 0.1 g), against optax's projection applied by hand."""
    grads = GRADS[:50]
    traj = run_trajectory(gdopt.chain(gdopt.sgd(0.1), ours()), PARAMS, grads)
    p, expected = PARAMS, []
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
