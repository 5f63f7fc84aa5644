"""``gdopt/optimizers/layerwise.py``: LAMB, LARS, NovoGrad, Fromage and Muon.

LAMB's trust ratio against a float64 NumPy reference of You et al. (2020), Algorithm 2;
Muon's leaves without dimension numbers going to its AdamW fallback. Newton-Schulz itself is
tested in ``tests/transforms/test_normalization.py``; oracle parity, convergence, dtypes and
bad values of these optimizers are the registry's (``tests/test_optimizers.py``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import gdopt
from tests.helpers import assert_trajectories_close, run_trajectory
from tests.optimizers.references import GRADS, PARAMS, np_trajectory, zeros_if_none


def test_lamb_trust_ratio_matches_paper():
    b1, b2, eps, lr, wd = 0.9, 0.999, 1e-6, 0.01, 0.1

    def step(t, p, g, st):
        m, v = zeros_if_none(p, st[0]), zeros_if_none(p, st[1])
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps) + wd * p
        ratio = np.linalg.norm(p) / np.linalg.norm(r)
        return p - lr * ratio * r, [m, v]

    expected = np_trajectory(step, 2)
    ours = run_trajectory(gdopt.lamb(lr, weight_decay=wd), PARAMS, GRADS)
    assert_trajectories_close(ours, expected)


def test_muon_masked_leaf_goes_to_adam():
    p = {"w": jnp.ones((3, 2)), "v": jnp.ones((3, 2))}
    g = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0], [0.0, 1.0]]), "v": jnp.ones((3, 2))}
    dims = {"w": None, "v": gdopt.MuonDimensionNumbers()}
    opt = gdopt.muon(0.1, muon_weight_dimension_numbers=dims)
    u, _ = opt.update(g, opt.init(p), p)
    ref = gdopt.adamw(0.1, weight_decay=0.0, nesterov=True)
    u_ref, _ = ref.update(g, ref.init(p), p)
    np.testing.assert_allclose(u["w"], u_ref["w"], rtol=1e-6)
    assert not np.allclose(u["v"], u_ref["v"])
