"""``gdopt/optimizers/sign.py``: sign_sgd, signum and Lion.

Lion's trajectory against a float64 NumPy reference of Chen et al. (2023), Algorithm 2 (with
decoupled weight decay), and its step linear in the learning rate written by
``set_hyperparams``. Oracle parity, convergence (signSGD's strict Rosenbrock xfail), dtypes
and bad values of these optimizers are the registry's (``tests/test_optimizers.py``).
"""

from __future__ import annotations

import jax
import numpy as np

import gdopt
from tests.helpers import assert_trajectories_close, run_trajectory
from tests.optimizers.references import GRADS, PARAMS, np_trajectory, zeros_if_none


def test_lion_matches_paper():
    b1, b2, lr, wd = 0.9, 0.99, 0.01, 0.1

    def step(t, p, g, st):
        m = zeros_if_none(p, st[0])
        c = b1 * m + (1 - b1) * g
        p = p - lr * (np.sign(c) + wd * p)
        return p, [b2 * m + (1 - b2) * g]

    expected = np_trajectory(step, 1)
    ours = run_trajectory(gdopt.lion(lr, weight_decay=wd), PARAMS, GRADS)
    assert_trajectories_close(ours, expected)


def test_lion_step_is_linear_in_the_learning_rate_in_the_state():
    opt = gdopt.lion(0.01)
    update = jax.jit(opt.update)
    state = opt.init(PARAMS)
    u1, _ = update(GRADS[0], state, PARAMS)
    u2, _ = update(GRADS[0], gdopt.set_hyperparams(state, learning_rate=0.02), PARAMS)
    np.testing.assert_allclose(
        np.asarray(u2["layers"][0]), 2 * np.asarray(u1["layers"][0]), rtol=1e-6
    )
