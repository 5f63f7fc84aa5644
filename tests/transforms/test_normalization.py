"""``gdopt/transforms/normalization.py``: sign, Lion, trust ratio, parameter-block norms,
NovoGrad and Muon's Newton-Schulz orthogonalization.

The trust ratio where a norm is zero; parity with optax's transforms at the arguments no named
optimizer reaches; Newton-Schulz against the scalar quintic on the singular values (SVD),
against optax's variants, and with batch axes; bfloat16 moments kept under ``lax.cond``;
bfloat16 parameters and ``None`` leaves; the errors (a missing ``params``, an unknown mode, a
non-matrix for Muon); optax's argument kinds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt.transforms import normalization
from gdopt.transforms.normalization import (
    _NS_PRESETS,
    MuonDimensionNumbers,
    orthogonalize_via_newton_schulz,
    scale_by_muon,
)
from tests.helpers import oracle
from tests.transforms.common import (
    assert_argument_kinds_are_optax,
    assert_bfloat16_and_none_leaves_pass_through,
    assert_moment_dtypes_kept_under_cond,
    assert_parity_with_optax,
    optax_counterparts,
)

# ----------------------------------------------------------------------------- trust ratio


def test_trust_ratio_is_one_where_a_norm_is_zero():
    t = gdopt.scale_by_trust_ratio(trust_coefficient=0.5)
    p = {"zero_param": jnp.zeros(3), "w": jnp.array([3.0, 4.0]), "zero_update": jnp.ones(2)}
    g = {
        "zero_param": jnp.array([1.0, 2.0, 2.0]),
        "w": jnp.array([0.0, 2.0]),
        "zero_update": jnp.zeros(2),
    }
    u, _ = t.update(g, t.init(p), p)
    np.testing.assert_allclose(u["zero_param"], [1.0, 2.0, 2.0])
    np.testing.assert_allclose(u["w"], [0.0, 2.5])  # 0.5 · 5 / 2 · (0, 2)
    np.testing.assert_allclose(u["zero_update"], [0.0, 0.0])


# ----------------------------------------------------------------------------- parity

# The registry's optimizer cases pin these transforms at the optimizers' values; these cover
# the arguments no named optimizer reaches.
TRANSFORM_CASES = [
    ("scale_by_trust_ratio", dict(min_norm=1.5, trust_coefficient=0.1, eps=1e-3)),
    ("scale_by_lion", dict(b1=0.5, b2=0.5, mode="smooth", smooth_beta=3.0)),
    ("scale_by_lion", dict(mode="refined")),
    ("scale_by_param_block_norm", dict()),
    ("scale_by_param_block_norm", dict(min_scale=2.0)),
    ("scale_by_param_block_rms", dict(min_scale=1.0)),
]


@pytest.mark.parametrize(
    "name,kwargs", TRANSFORM_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(TRANSFORM_CASES)]
)
def test_transform_parity_with_optax(name, kwargs):
    assert_parity_with_optax(name, kwargs)


# ----------------------------------------------------------------------------- Newton-Schulz


def _quintic(s, coeffs, steps):
    a, b, c = coeffs
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


def test_newton_schulz_8x8_against_the_scalar_quintic():
    """NS acts on singular values only: NS(x) = U p⁵(Σ / ||x||_F) Vᵀ with the quintic p."""
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (8, 8)), np.float64)
    out = np.asarray(orthogonalize_via_newton_schulz(jnp.asarray(x, jnp.float32)), np.float64)
    u, s, vt = np.linalg.svd(x)
    coeffs = (3.4445, -4.775, 2.0315)
    expected = u @ np.diag(_quintic(s / np.linalg.norm(x), coeffs, 5)) @ vt
    np.testing.assert_allclose(out, expected, atol=2e-5)
    # The quintic's band: 5 iterations map (σ_min/||x||_F, 1] into about [0.68, 1.13].
    band = _quintic(np.linspace(s.min() / np.linalg.norm(x), 1.0, 10001), coeffs, 5)
    sv = np.linalg.svd(out, compute_uv=False)
    assert band.min() - 1e-4 <= sv.min() and sv.max() <= band.max() + 1e-4
    assert 0.65 < sv.min() and sv.max() < 1.2


def test_newton_schulz_variants_match_optax():
    """The preconditionings and presets that the registry's Muon cases do not reach (they use
    Frobenius and spectral), on a tall matrix (exercises the transpose)."""
    import optax.contrib as oc

    variants = [("standard", "aol"), ("standard", "schatten"), ("dion", "frobenius")]
    table = {"standard": (3.4445, -4.775, 2.0315), "dion": _NS_PRESETS["dion"]}
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    ours = jax.jit(lambda x: [orthogonalize_via_newton_schulz(x, c, 5, p) for c, p in variants])
    with oracle():
        ns = oc._muon.orthogonalize_via_newton_schulz
        theirs = jax.jit(lambda x: [ns(x, jnp.asarray(table[c]), 5, p) for c, p in variants])(x)
    for v, a, b in zip(variants, ours(x), theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=str(v))


def test_newton_schulz_batch_axes_are_independent():
    stack = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 6))
    kernel = jax.random.normal(jax.random.PRNGKey(4), (2, 2, 3, 5))

    @jax.jit
    def run(stack, kernel):
        ns = orthogonalize_via_newton_schulz
        batched = ns(stack, dimension_numbers=MuonDimensionNumbers(1, 2))
        slices = [ns(stack[i]) for i in range(3)]
        # (h, w, c_in, c_out) kernel viewed as an (h*w*c_in, c_out) matrix.
        conv = ns(kernel, dimension_numbers=MuonDimensionNumbers((0, 1, 2), 3))
        return batched, slices, conv, ns(kernel.reshape(12, 5))

    batched, slices, conv, flat = run(stack, kernel)
    for i in range(3):
        np.testing.assert_allclose(batched[i], slices[i], atol=1e-6)
    np.testing.assert_allclose(conv.reshape(12, 5), flat, atol=1e-6)


def test_scale_by_muon_rejects_non_matrices_with_the_key_path():
    t = scale_by_muon()
    g = {"b": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"updates\['b'\] has shape \(3,\)"):
        t.update(g, t.init(g))


# ----------------------------------------------------------------------------- dtypes


MOMENT_DTYPE_TRANSFORMS = {
    "scale_by_novograd": lambda d: gdopt.scale_by_novograd(mu_dtype=d, nu_dtype=d),
    "scale_by_lion": lambda d: gdopt.scale_by_lion(mu_dtype=d),
}


@pytest.mark.parametrize("name", sorted(MOMENT_DTYPE_TRANSFORMS))
def test_moment_dtypes_are_kept_across_steps_and_under_cond(name):
    assert_moment_dtypes_kept_under_cond(MOMENT_DTYPE_TRANSFORMS[name](jnp.bfloat16))


TRANSFORMS = {
    "scale_by_novograd": lambda: gdopt.scale_by_novograd(weight_decay=0.1),
    "scale_by_trust_ratio": lambda: gdopt.scale_by_trust_ratio(),
    "scale_by_lion": lambda: gdopt.scale_by_lion(),
    "scale_by_sign": lambda: gdopt.scale_by_sign(),
    "scale_by_param_block_norm": lambda: gdopt.scale_by_param_block_norm(),
    "scale_by_param_block_rms": lambda: gdopt.scale_by_param_block_rms(),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_bfloat16_params_and_none_leaves_pass_through(name):
    assert_bfloat16_and_none_leaves_pass_through(TRANSFORMS[name]())


# ----------------------------------------------------------------------------- errors, API


def test_bad_input_is_explained():
    p = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="mode"):
        gdopt.scale_by_lion(mode="soft")
    for t in (
        gdopt.scale_by_novograd(),
        gdopt.scale_by_trust_ratio(),
        gdopt.scale_by_param_block_rms(),
    ):
        with pytest.raises(ValueError, match=r"update\(grads, state, params\)"):
            t.update(p, t.init(p))


@pytest.mark.parametrize("name", optax_counterparts(normalization))
def test_argument_kinds_are_optax(name):
    assert_argument_kinds_are_optax(name)
