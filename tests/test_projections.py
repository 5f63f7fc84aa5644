"""``gdopt/projections.py``: optax.projections' functions, compared with optax's numbers,
and the defining property of each projection (the result lies in the set)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.projections
import pytest

from gdopt import projections
from tests.helpers import oracle

_X = {"w": jnp.array([[1.5, -2.0], [0.3, 0.7]]), "b": jnp.array([-0.4, 2.2])}
_A = {"w": jnp.array([[1.0, 0.5], [-1.0, 2.0]]), "b": jnp.array([0.0, -1.0])}
_SMALL = jax.tree.map(lambda x: 0.05 * x, _X)

CASES = [
    ("non_negative", "projection_non_negative", (_X,)),
    ("box_array", "projection_box", (_X["w"], -1.0, 1.0)),
    ("box_tree_bounds", "projection_box", (_X, jax.tree.map(lambda x: x - 1, _A), _A)),
    # optax 0.2.8's box and hypercube with scalar bounds take a single array (gdopt also
    # takes a pytree with scalar bounds: test_scalar_bounds_on_a_pytree)
    ("hypercube_array", "projection_hypercube", (_X["w"],)),
    ("hypercube_scale_array", "projection_hypercube", (_X["b"], 0.5)),
    ("linf_ball", "projection_linf_ball", (_X, 1.2)),
    ("l2_ball", "projection_l2_ball", (_X,)),
    ("l2_ball_inside", "projection_l2_ball", (_SMALL,)),
    ("l2_sphere", "projection_l2_sphere", (_X, 2.0)),
    ("simplex", "projection_simplex", (_X,)),
    ("simplex_scale", "projection_simplex", (_X, 3.0)),
    ("l1_sphere", "projection_l1_sphere", (_X,)),
    ("l1_ball", "projection_l1_ball", (_X, 2.0)),
    ("l1_ball_inside", "projection_l1_ball", (_SMALL,)),
    ("vector", "projection_vector", (_X, _A)),
    ("hyperplane", "projection_hyperplane", (_X, _A, 1.5)),
    ("halfspace_active", "projection_halfspace", (_X, _A, -1.0)),
    ("halfspace_inactive", "projection_halfspace", (_X, _A, 100.0)),
]


@pytest.mark.parametrize(("case", "name", "args"), CASES, ids=[c[0] for c in CASES])
def test_projections_match_optax(case, name, args):
    ours = getattr(projections, name)(*args)
    with oracle():
        ref = getattr(optax.projections, name)(*args)
    assert jax.tree.structure(ours) == jax.tree.structure(ref)
    for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_allclose(x, y, rtol=2e-6, atol=1e-6, err_msg=case)


def test_every_optax_projection_has_a_case():
    names = {n for n in dir(optax.projections) if n.startswith("projection_")}
    assert names == {name for _, name, _ in CASES} == set(projections.__all__)


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_results_lie_in_their_sets():
    v = _flat(_X)
    assert np.abs(_flat(projections.projection_l1_sphere(_X, 2.0))).sum() == pytest.approx(2.0)
    assert np.abs(_flat(projections.projection_l1_ball(_X, 2.0))).sum() == pytest.approx(2.0)
    assert np.linalg.norm(_flat(projections.projection_l2_sphere(_X, 2.0))) == pytest.approx(2.0)
    assert np.abs(_flat(projections.projection_linf_ball(_X, 1.2))).max() == pytest.approx(1.2)
    a = _flat(_A)
    assert a @ _flat(projections.projection_hyperplane(_X, _A, 1.5)) == pytest.approx(1.5)
    assert a @ _flat(projections.projection_halfspace(_X, _A, -1.0)) == pytest.approx(-1.0)
    along = _flat(projections.projection_vector(_X, _A))
    np.testing.assert_allclose(along, (a @ v) / (a @ a) * a, rtol=1e-6)


def test_scalar_bounds_on_a_pytree():
    out = projections.projection_hypercube(_X, 0.5)
    np.testing.assert_allclose(out["w"], [[0.5, 0.0], [0.3, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(out["b"], [0.0, 0.5])
