"""``gdopt/_numerics.py``: ``update_moment`` (gradients cast up to a wider moment dtype),
``bias_correction_factor`` (``1 - b**t``, nothing compiled per eager step), ``map_leaves`` and
``tree_map`` with ``None`` leaves, and the promotion helpers (``promote``, ``add``, ``mul``...)
computing under strict promotion exactly what standard promotion computes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdopt
from gdopt import _numerics as num
from tests.helpers import counting_compiles, make_params

# ----------------------------------------------------------------------------- moments


def test_update_moment_casts_gradients_up_to_the_moment_dtype():
    g = jnp.full((3,), 1e-4, jnp.float16)  # g² = 1e-8 is below float16's smallest subnormal
    assert float(jnp.max(g * g)) == 0.0
    m = jnp.zeros((3,), jnp.float32)
    out = num.update_moment(g, m, 0.5, 2)
    assert out.dtype == jnp.float32
    expected = 0.5 * np.float64(np.float16(1e-4)) ** 2
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # first order, and a decay given as a float32 array
    out = num.update_moment(g, m + 1.0, jnp.float32(0.9), 1)
    np.testing.assert_allclose(out, 0.1 * np.float64(np.float16(1e-4)) + 0.9, rtol=1e-6)


def test_update_moment_of_complex_gradients_is_real():
    g = jnp.array([3.0 + 4.0j])
    out = num.update_moment(g, jnp.zeros(1, jnp.float32), 0.0, 2)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, [25.0])


def test_bias_correction_factor_equals_one_minus_decay_to_the_count():
    for decay in (0.9, 0.999, 0.5):
        for t in (1, 2, 3, 10, 1000):
            got = num.bias_correction_factor(decay, jnp.asarray(t, jnp.int32))
            assert got.dtype == jnp.float32
            np.testing.assert_allclose(float(got), 1 - np.float32(decay) ** t, rtol=1e-6)
    # a bfloat16 decay is computed in float32; a float count works too
    got = num.bias_correction_factor(jnp.asarray(0.5, jnp.bfloat16), jnp.asarray(3.0))
    assert got.dtype == jnp.float32 and float(got) == 0.875
    moment = jnp.asarray(0.1, jnp.bfloat16)
    corrected = num.bias_correction(moment, 0.9, jnp.asarray(1, jnp.int32))
    assert corrected.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(corrected), 1.0, rtol=1e-2)


def test_bias_correction_compiles_nothing_per_eager_step():
    moment = jnp.ones(3)
    num.bias_correction(moment, 0.9, jnp.asarray(1, jnp.int32))  # compiles its kernels once
    counts = []
    for t in range(2, 8):
        with counting_compiles() as c:
            jax.block_until_ready(num.bias_correction(moment, 0.9, jnp.asarray(t, jnp.int32)))
            jax.block_until_ready(num.bias_correction_factor(0.999, jnp.asarray(t, jnp.int32)))
        counts.append(c.count)
    assert counts == [0] * 6, f"compilations per eager step: {counts}"


# ----------------------------------------------------------------------------- leaf maps


def test_map_leaves_with_none_leaves_returns_n_out_outputs():
    g = {"a": jnp.array([1.0, 2.0]), "b": None}
    m = {"a": jnp.array([10.0, 20.0]), "b": jnp.array([7.0])}
    v = {"a": jnp.array([100.0, 200.0]), "b": jnp.array([8.0])}
    # as many outputs as trees: the update and one new buffer per state tree
    u, m2, v2 = num.map_leaves(lambda g, m, v: (g + m + v, 2 * m, 3 * v), 3, g, m, v)
    np.testing.assert_array_equal(u["a"], [111.0, 222.0])
    np.testing.assert_array_equal(m2["a"], [20.0, 40.0])
    np.testing.assert_array_equal(v2["a"], [300.0, 600.0])
    assert u["b"] is None and m2["b"] is m["b"] and v2["b"] is v["b"]  # the state passes through
    # more outputs than trees: the missing ones are None where the update is None
    outs = num.map_leaves(lambda g, m: (g, m, g * m), 3, g, m)
    assert len(outs) == 3
    assert outs[0]["b"] is None and outs[1]["b"] is m["b"] and outs[2]["b"] is None
    np.testing.assert_array_equal(outs[2]["a"], [10.0, 40.0])
    # fewer outputs than trees
    outs = num.map_leaves(lambda g, m, v: (g * v, m), 2, g, m, v)
    assert len(outs) == 2 and outs[0]["b"] is None and outs[1]["b"] is m["b"]
    # one output
    (only,) = num.map_leaves(lambda g: (2 * g,), 1, g)
    assert only["b"] is None
    np.testing.assert_array_equal(only["a"], [2.0, 4.0])


def test_tree_map_passes_none_leaves_through():
    out = num.tree_map(lambda x, y: x * y, {"a": jnp.ones(2), "b": None}, {"a": 3.0, "b": 5.0})
    assert out["b"] is None
    np.testing.assert_array_equal(out["a"], [3.0, 3.0])


# ----------------------------------------------------------------------------- promotion

BF16 = jnp.linspace(-2.0, 2.0, 5).astype(jnp.bfloat16)
F16 = jnp.linspace(-1.0, 3.0, 5).astype(jnp.float16)
F32 = jnp.linspace(0.5, 1.5, 5)
I32 = jnp.arange(5, dtype=jnp.int32)
PAIRS = {
    "bf16-f32": (BF16, F32),
    "f32-bf16": (F32, BF16),
    "bf16-f16": (BF16, F16),
    "bf16-pyfloat": (BF16, 0.9),
    "pyfloat-f16": (0.9, F16),
    "bf16-f32scalar": (BF16, jnp.float32(0.9)),
    "bf16-weakf32": (BF16, jnp.asarray(0.9)),
    "i32-f32": (I32, F32),
    "i32scalar-pyfloat": (jnp.asarray(3, jnp.int32), 0.25),
    "i32-pyfloat": (I32, 0.25),
    "pyint-bf16": (2, BF16),
}
OPS = {
    "add": (num.add, lambda a, b: a + b),
    "sub": (num.sub, lambda a, b: a - b),
    "mul": (num.mul, lambda a, b: a * b),
    "div": (num.div, lambda a, b: a / b),
    "maximum": (num.maximum, jnp.maximum),
    "where": (
        lambda a, b: num.where(I32 % 2 == 0, a, b),
        lambda a, b: jnp.where(I32 % 2 == 0, a, b),
    ),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_promotion_helpers_under_strict_equal_standard(pair, op):
    a, b = PAIRS[pair]
    ours, standard = OPS[op]
    with jax.numpy_dtype_promotion("standard"):
        expected = standard(a, b)
    with jax.numpy_dtype_promotion("strict"):
        got = ours(a, b)
        assert num.result_dtype(a, b) == expected.dtype
    assert got.dtype == expected.dtype
    if pair != "i32-pyfloat":  # see test_int_array_meeting_a_python_float_stays_weak
        assert got.weak_type == expected.weak_type
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(expected, np.float64))


def test_int_array_meeting_a_python_float_stays_weak():
    with jax.numpy_dtype_promotion("standard"):
        expected = I32 * 0.25
    assert expected.weak_type
    with jax.numpy_dtype_promotion("strict"):
        assert num.mul(I32, 0.25).weak_type


def test_promote_leaves_operands_that_need_no_cast_untouched():
    a, b = F32, F32 + 1.0
    out = num.promote(a, b, 0.5)
    assert out[0] is a and out[1] is b and out[2] == 0.5
    x, y = num.promote(BF16, F32)
    assert x.dtype == y.dtype == jnp.float32 and y is F32
    (w,) = num.promote(jnp.asarray(3, jnp.int32), 0.5)[:1]
    assert w.dtype == jnp.float32 and w.weak_type  # an int32 counter meeting a Python float
    with jax.numpy_dtype_promotion("strict"):
        assert num.promote_types(jnp.bfloat16, jnp.float32) == jnp.float32


# ----------------------------------------------------------------------------- public helpers (gdopt/numerics.py, base.py)


def test_numeric_helpers_match_optax():
    x = jnp.array([[3.0, -4.0], [0.0, 0.0]])
    for ours, theirs in [
        (gdopt.safe_norm(x, 1e-3), optax.safe_norm(x, 1e-3)),
        (gdopt.safe_norm(x, 1e-3, axis=1), optax.safe_norm(x, 1e-3, axis=1)),
        (
            gdopt.safe_norm(x, 0.1, ord=1, axis=1, keepdims=True),
            optax.safe_norm(x, 0.1, ord=1, axis=1, keepdims=True),
        ),
        (gdopt.safe_root_mean_squares(x, 1e-3), optax.safe_root_mean_squares(x, 1e-3)),
        (
            gdopt.safe_root_mean_squares(jnp.zeros(3), 1e-3),
            optax.safe_root_mean_squares(jnp.zeros(3), 1e-3),
        ),
        (gdopt.global_norm(make_params()), optax.tree.norm(make_params())),
        (
            gdopt.unitwise_clip(jnp.abs(x), jnp.full_like(x, 2.0), x),
            optax.transforms.unitwise_clip(jnp.abs(x), jnp.full_like(x, 2.0), x),
        ),
    ]:
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    grad = jax.grad(lambda v: gdopt.safe_norm(v, 1e-3))(jnp.zeros(2))
    assert np.all(np.isfinite(grad))
    new, old = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([0.0, 4.0])}
    np.testing.assert_allclose(
        gdopt.incremental_update(new, old, 0.25)["w"], optax.incremental_update(new, old, 0.25)["w"]
    )
    for step in (3, 4):
        np.testing.assert_array_equal(
            gdopt.periodic_update(new, old, jnp.array(step), 2)["w"],
            optax.periodic_update(new, old, jnp.array(step), 2)["w"],
        )
    grad = jax.grad(lambda v: jnp.sum(gdopt.scale_gradient(v, 0.25) ** 2))(jnp.array([2.0]))
    np.testing.assert_allclose(grad, [1.0])
    np.testing.assert_array_equal(gdopt.scale_gradient(jnp.array([2.0]), 0.25), [2.0])
