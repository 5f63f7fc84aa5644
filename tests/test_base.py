"""``gdopt/base.py``, the protocol: keyword extras an ``update`` does not use are ignored down a
chain; ``apply_updates`` keeps each parameter's dtype, leaves ``None`` updates' parameters
alone and names the key path where updates and params differ; ``identity``/``set_to_zero``."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest

import gdopt


def test_unknown_extra_arguments_are_ignored():
    opt = gdopt.chain(gdopt.scale(2.0), gdopt.adam(0.1))
    p = {"w": jnp.ones(2)}
    u, _ = opt.update({"w": jnp.ones(2)}, opt.init(p), p, value=jnp.array(1.0), whatever=3)
    assert u["w"].shape == (2,)
    np.testing.assert_allclose(u["w"], -0.1, rtol=1e-6)


def test_apply_updates_keeps_dtype_and_none():
    p = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2)}
    out = gdopt.apply_updates(p, {"a": jnp.ones(2, jnp.float32), "b": None})
    assert out["a"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(out["a"], 2.0)
    np.testing.assert_array_equal(out["b"], p["b"])


def test_apply_updates_mismatch_names_the_key_path():
    with pytest.raises(ValueError, match="updates and params"):
        gdopt.apply_updates({"w": jnp.ones(1)}, {"v": jnp.ones(1)})
    params = {"a": jnp.zeros((2, 2)), "b": {"c": jnp.zeros(3)}}
    with pytest.raises(ValueError, match=re.escape("['b']['c']")):
        gdopt.apply_updates(params, {"a": jnp.zeros((2, 2))})


def test_identity_and_set_to_zero():
    g = {"w": jnp.array([1.0, -2.0])}
    u, s = gdopt.identity().update(g, gdopt.identity().init(g))
    assert u is g and s == gdopt.EmptyState()
    u, _ = gdopt.set_to_zero().update(g, gdopt.EmptyState())
    np.testing.assert_array_equal(u["w"], [0.0, 0.0])
    assert gdopt.is_packable(gdopt.identity()) and gdopt.is_packable(gdopt.set_to_zero())
