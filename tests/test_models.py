"""Tests for gdopt.models: shapes, dtypes, parameter structure, init scales, errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdopt import models

KEY = jax.random.PRNGKey(0)


def test_linear_shapes_and_dtypes():
    model = models.linear(3, 4)
    params = model.init(KEY)
    assert params["w"].shape == (3, 4) and params["b"].shape == (4,)
    assert params["w"].dtype == jnp.float32 and params["b"].dtype == jnp.float32
    np.testing.assert_array_equal(params["b"], 0.0)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    out = model.apply(params, x)
    assert out.shape == (6, 4) and out.dtype == jnp.float32
    np.testing.assert_allclose(
        out, np.asarray(x) @ np.asarray(params["w"]) + np.asarray(params["b"]), rtol=1e-5
    )


def test_linear_single_output_keeps_feature_axis():
    model = models.linear(3)
    assert model.apply(model.init(KEY), jnp.ones((5, 3))).shape == (5, 1)


def test_linear_regression_scalar_output():
    model = models.linear_regression(4)
    params = model.init(KEY)
    assert params["w"].shape == (4,) and params["b"].shape == ()
    params = {"w": jnp.array([1.0, -2.0, 0.5, 0.0]), "b": jnp.array(3.0)}
    x = jnp.array([[1.0, 1.0, 2.0, 9.0], [0.0, 0.5, 0.0, 1.0]])
    np.testing.assert_allclose(model.apply(params, x), [3.0, 2.0])


def test_logistic_regression_binary_and_multiclass():
    binary = models.logistic_regression(5)
    pb = binary.init(KEY)
    assert pb["w"].shape == (5,) and pb["b"].shape == ()
    assert binary.apply(pb, jnp.ones((7, 5))).shape == (7,)
    multi = models.logistic_regression(5, 3)
    pm = multi.init(KEY)
    assert pm["w"].shape == (5, 3) and pm["b"].shape == (3,)
    assert multi.apply(pm, jnp.ones((7, 5))).shape == (7, 3)


def test_bfloat16_models_stay_bfloat16():
    model = models.mlp([4, 8, 2], dtype=jnp.bfloat16)
    params = model.init(KEY)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))
    assert model.apply(params, jnp.ones((3, 4))).dtype == jnp.bfloat16
    lin = models.linear_regression(4, dtype=jnp.bfloat16)
    assert lin.apply(lin.init(KEY), jnp.ones((3, 4), jnp.float32)).dtype == jnp.bfloat16


def test_integer_inputs_are_cast():
    model = models.logistic_regression(3, 4)
    out = model.apply(model.init(KEY), jnp.array([[1, 2, 3]], jnp.uint8))
    assert out.dtype == jnp.float32 and out.shape == (1, 4)


def test_mlp_param_structure():
    model = models.mlp([64, 32, 16, 10])
    params = model.init(KEY)
    assert isinstance(params, list) and len(params) == 3
    shapes = [(p["w"].shape, p["b"].shape) for p in params]
    assert shapes == [((64, 32), (32,)), ((32, 16), (16,)), ((16, 10), (10,))]
    for p in params:
        assert set(p) == {"w", "b"}
        np.testing.assert_array_equal(p["b"], 0.0)
    assert model.apply(params, jnp.zeros((2, 64))).shape == (2, 10)
    # a single example without a batch axis works too
    assert model.apply(params, jnp.zeros(64)).shape == (10,)


def test_mlp_init_is_deterministic_per_key():
    model = models.mlp([8, 8, 2])
    a, b, c = model.init(KEY), model.init(KEY), model.init(jax.random.PRNGKey(1))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a[0]["w"], c[0]["w"])
    # layers get different keys
    sq = models.mlp([8, 8, 8]).init(KEY)
    assert not np.array_equal(sq[0]["w"], sq[1]["w"])


@pytest.mark.parametrize(
    ("activation", "expected_var"),
    [("relu", 2.0 / 400), ("gelu", 2.0 / 400), ("tanh", 2.0 / 800), ("sigmoid", 2.0 / 800)],
)
def test_mlp_init_scale(activation, expected_var):
    """He normal for the ReLU family, Glorot normal for tanh/sigmoid (fan_in = fan_out = 400)."""
    w = np.asarray(models.mlp([400, 400], activation).init(KEY)[0]["w"])
    assert abs(w.mean()) < 3e-3
    np.testing.assert_allclose(w.var(), expected_var, rtol=0.02)


def test_linear_init_scale_is_lecun():
    w = np.asarray(models.linear(400, 400).init(KEY)["w"])
    np.testing.assert_allclose(w.var(), 1.0 / 400, rtol=0.02)


def _np_gelu(z):
    return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))


NP_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "gelu": _np_gelu,
    "silu": lambda z: z / (1 + np.exp(-z)),
    "swish": lambda z: z / (1 + np.exp(-z)),
    "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "identity": lambda z: z,
}


def test_activation_names_are_all_tested():
    assert set(NP_ACTIVATIONS) == set(models.ACTIVATIONS)


@pytest.mark.parametrize("activation", sorted(NP_ACTIVATIONS))
def test_mlp_forward_matches_numpy(activation):
    model = models.mlp([3, 5, 4, 2], activation)
    params = model.init(KEY)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (6, 3)), np.float64)
    h = x
    for i, layer in enumerate(params):
        h = h @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64)
        if i < len(params) - 1:
            h = NP_ACTIVATIONS[activation](h)
    np.testing.assert_allclose(model.apply(params, x), h, rtol=1e-4, atol=1e-5)


def test_mlp_callable_activation_uses_glorot():
    model = models.mlp([400, 400, 2], lambda z: z**2)
    params = model.init(KEY)
    np.testing.assert_allclose(np.var(np.asarray(params[0]["w"])), 2.0 / 800, rtol=0.02)
    x = jnp.ones((1, 400))
    h = (x @ params[0]["w"]) ** 2
    np.testing.assert_allclose(model.apply(params, x), h @ params[1]["w"], rtol=1e-5)


def test_models_are_jittable_and_differentiable():
    model = models.mlp([3, 4, 1], "tanh")
    params = model.init(KEY)
    x = jnp.ones((2, 3))
    loss = lambda p: jnp.sum(model.apply(p, x) ** 2)
    grads = jax.jit(jax.grad(loss))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), model.apply(params, x), rtol=1e-6)


@pytest.mark.parametrize(
    ("sizes", "error", "match"),
    [
        ([], ValueError, "at least two entries"),
        ([3], ValueError, "at least two entries"),
        ([3, 0], ValueError, r"sizes\[1\] must be an int >= 1, got 0"),
        ([3, -2, 1], ValueError, r"sizes\[1\]"),
        ([3, 2.5], TypeError, r"sizes\[1\] must be an int"),
        ([True, 2], TypeError, r"sizes\[0\]"),
        ("64-10", TypeError, "sequence of ints"),
        (64, TypeError, "sequence of ints"),
    ],
)
def test_mlp_bad_sizes(sizes, error, match):
    with pytest.raises(error, match=match):
        models.mlp(sizes)


def test_mlp_unknown_activation_lists_names():
    with pytest.raises(ValueError, match="Unknown activation 'rleu'.*gelu.*leaky_relu.*tanh"):
        models.mlp([2, 2], "rleu")
    with pytest.raises(TypeError, match="activation must be a name or a callable"):
        models.mlp([2, 2], 3)


def test_bad_feature_counts():
    with pytest.raises(ValueError, match="in_features must be an int >= 1, got 0"):
        models.linear(0)
    with pytest.raises(ValueError, match="out_features"):
        models.linear(2, 0)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
        models.logistic_regression(3, 1)
    with pytest.raises(TypeError, match="in_features"):
        models.linear_regression(2.0)


def test_wrong_input_width_names_shapes():
    model = models.mlp([4, 3])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\).*got shape \(2, 5\)"):
        model.apply(model.init(KEY), jnp.ones((2, 5)))
    lin = models.linear_regression(2)
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        lin.apply(lin.init(KEY), jnp.array(1.0))


def test_init_is_shared_between_identical_models():
    assert models.mlp([5, 3, 2]).init is models.mlp([5, 3, 2], "gelu", dtype="float32").init
    assert models.mlp([5, 3, 2]).init is not models.mlp([5, 3, 2], "tanh").init


def test_bad_dtype():
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype.*int32"):
        models.mlp([2, 2], dtype=jnp.int32)
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype"):
        models.linear(2, dtype="nonsense")


def test_init_vmaps_over_keys_and_accepts_typed_keys():
    model = models.mlp([3, 4, 2])
    batched = jax.vmap(model.init)(jax.random.split(KEY, 5))
    assert batched[0]["w"].shape == (5, 3, 4) and batched[1]["b"].shape == (5, 2)
    np.testing.assert_array_equal(
        batched[0]["w"][2], model.init(jax.random.split(KEY, 5)[2])[0]["w"]
    )
    typed = model.init(jax.random.key(0))
    assert typed[0]["w"].shape == (3, 4)
