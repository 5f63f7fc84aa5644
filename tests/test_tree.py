"""``gdopt/tree.py``: pytree arithmetic, norms, sizes and casts; the structure, shape, dtype and
mask checks whose messages name the key path (directly and through an optimizer's
``init``/``update``); mixed-dtype arithmetic computing what standard promotion computes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt import tree as gtree


def test_tree_utilities():
    t = {"a": jnp.array([3.0]), "b": [jnp.array([4.0]), jnp.zeros((2, 2))]}
    assert float(gtree.tree_l2_norm(t)) == pytest.approx(5.0)
    assert float(gtree.tree_l2_norm(t, squared=True)) == pytest.approx(25.0)
    assert float(gtree.tree_vdot(t, t)) == pytest.approx(25.0)
    assert gtree.tree_size(t) == 6
    assert gtree.tree_bytes(t) == 24
    assert float(gtree.tree_linf_norm(t)) == 4.0
    assert bool(gtree.tree_all_finite(t))
    assert not bool(gtree.tree_all_finite({"x": jnp.array([jnp.nan])}))
    cast = gtree.tree_cast(t, jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(cast))
    np.testing.assert_allclose(gtree.tree_add_scaled(t, 2.0, t)["a"], [9.0])


def test_mixed_dtype_arithmetic_equals_standard_promotion():
    """bfloat16 and float32 leaves meet in every binary map: the explicit casts give standard
    promotion's dtype and numbers, whatever the promotion mode."""
    a = {"h": jnp.linspace(-1.0, 1.0, 5).astype(jnp.bfloat16), "f": jnp.arange(3.0)}
    b = {"h": jnp.linspace(0.5, 2.0, 5), "f": jnp.arange(3.0).astype(jnp.bfloat16)}
    with jax.numpy_dtype_promotion("standard"):
        expected = {
            "add": jax.tree.map(lambda x, y: x + y, a, b),
            "mul": jax.tree.map(lambda x, y: x * y, a, b),
            "vdot": sum(
                jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
            ),
        }
    with jax.numpy_dtype_promotion("strict"):
        got = {
            "add": gtree.tree_add(a, b),
            "mul": gtree.tree_mul(a, b),
            "vdot": gtree.tree_vdot(a, b),
        }
    for name in ("add", "mul"):
        for x, y in zip(jax.tree.leaves(got[name]), jax.tree.leaves(expected[name]), strict=True):
            assert x.dtype == y.dtype == jnp.float32, name
            np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(got["vdot"], expected["vdot"], rtol=1e-6)


def test_mask_leaves_errors_name_paths():
    with pytest.raises(ValueError, match="mask"):
        gtree.mask_leaves({"w": True}, {"w": 1.0, "b": 2.0})


def test_structure_mismatch_names_key_path():
    opt = gdopt.adam(0.1)
    params = {"layer": {"w": jnp.ones(2), "b": jnp.ones(1)}}
    state = opt.init(params)
    grads = {"layer": {"w": jnp.ones(2), "bias": jnp.ones(1)}}
    with pytest.raises(ValueError, match=r"\['layer'\]\['b"):
        opt.update(grads, state, params)


def test_shape_mismatch_names_key_path():
    opt = gdopt.sgd(0.1)
    params = {"w": jnp.ones((2, 3))}
    with pytest.raises(ValueError, match=r"\['w'\].*\(3, 2\)"):
        opt.update({"w": jnp.ones((3, 2))}, opt.init(params), params)


@pytest.mark.parametrize("bad", [jnp.array([1, 2]), jnp.array([True, False])])
def test_integer_or_bool_params_are_rejected(bad):
    with pytest.raises(TypeError, match=r"params\['count'\].*floating point"):
        gdopt.adam(0.1).init({"w": jnp.ones(2), "count": bad})
