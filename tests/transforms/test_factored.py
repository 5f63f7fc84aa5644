"""``gdopt/transforms/factored.py``: SM3 and Adafactor's factored second moment.

The factored state's shapes (optax's layout) and its row/column statistics against a float64
NumPy reference of Shazeer & Stern (2018); the decay offset (β = 0 until it has passed);
``scale_by_sm3`` against optax (0-D leaves seen as shape (1,) on optax's side, which fails on
them); complex parameters refused; bfloat16 parameters and ``None`` leaves; optax's argument
kinds. The named ``adafactor`` and ``sm3`` are in ``tests/optimizers/test_adaptive.py``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt.transforms import factored
from tests.transforms.common import (
    GRADS,
    assert_argument_kinds_are_optax,
    assert_bfloat16_and_none_leaves_pass_through,
    assert_parity_with_optax,
    np_factored_rms,
    optax_counterparts,
)


def test_factored_moment_state_and_reconstruction():
    t = gdopt.scale_by_factored_rms(min_dim_size_to_factor=3)
    g = {"m": GRADS[0]["dense"]["w"], "v": GRADS[0]["dense"]["b"]}  # (4, 3) and (3,)
    state = t.init(g)
    assert state.v_row["m"].shape == (3,) and state.v_col["m"].shape == (4,)
    assert state.v["m"].shape == (1,) and state.v["v"].shape == (3,)  # optax's unused slot
    u, state = t.update(g, state)
    g2 = np.asarray(g["m"], np.float64) ** 2 + 1e-30
    np.testing.assert_allclose(state.v_row["m"], g2.mean(axis=0), rtol=1e-6)  # β_1 = 0
    np.testing.assert_allclose(state.v_col["m"], g2.mean(axis=1), rtol=1e-6)
    u2, state = t.update(g, state)  # β_2 = 1 - 2^-0.8 on the same gradient: same statistics
    expected, _ = np_factored_rms(np.asarray(g["m"], np.float64), None, 0.0)
    np.testing.assert_allclose(u["m"], expected, rtol=1e-5)
    np.testing.assert_allclose(u2["m"], expected, rtol=1e-5)
    np.testing.assert_allclose(np.abs(u["v"]), 1.0, rtol=1e-5)  # unfactored, β_1 = 0


def test_decay_offset_holds_fresh_statistics_then_decays():
    """gdopt holds β = 0 until ``step_offset`` steps have passed (optax returns NaN there)."""
    t = gdopt.scale_by_factored_rms(factored=False, step_offset=3)
    g = [jnp.array([1.0, 2.0]), jnp.array([3.0, 1.0]), jnp.array([2.0, 2.0])] * 2
    state = t.init(g[0])
    for k, gk in enumerate(g):
        _, state = t.update(gk, state)
        if k < 4:  # steps 1..4: t = max(count - 3 + 1, 1) = 1, β = 0
            np.testing.assert_allclose(state.v, np.asarray(gk) ** 2, rtol=1e-6)
    beta5 = 1 - 2.0**-0.8
    v5 = beta5 * np.asarray(g[3]) ** 2 + (1 - beta5) * np.asarray(g[4]) ** 2
    beta6 = 1 - 3.0**-0.8
    np.testing.assert_allclose(state.v, beta6 * v5 + (1 - beta6) * np.asarray(g[5]) ** 2, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(b1=0.5, b2=0.5, eps=1e-4)])
def test_scale_by_sm3_parity_with_optax(kwargs):
    assert_parity_with_optax("scale_by_sm3", kwargs, vectorize=True)


def test_sm3_refuses_complex_parameters():
    with pytest.raises(TypeError, match="real"):
        gdopt.scale_by_sm3().init({"z": jnp.ones(2, jnp.complex64)})


TRANSFORMS = {
    "scale_by_sm3": lambda: gdopt.scale_by_sm3(),
    "scale_by_factored_rms": lambda: gdopt.scale_by_factored_rms(min_dim_size_to_factor=2),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_bfloat16_params_and_none_leaves_pass_through(name):
    assert_bfloat16_and_none_leaves_pass_through(TRANSFORMS[name]())


@pytest.mark.parametrize("name", optax_counterparts(factored))
def test_argument_kinds_are_optax(name):
    assert_argument_kinds_are_optax(name)
