"""``gdopt/optimizers/second_order.py``: Sophia (and L-BFGS through the registry).

Sophia's error that says how to pass the objective, and its ``value_fn=`` alternative with a
given Hutchinson estimator whose key advances. Hutchinson's estimator is tested in
``tests/transforms/test_second_order.py``; L-BFGS with its line searches in
``tests/transforms/test_linesearch.py``; oracle parity, convergence and bad values in the registry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt.transforms.second_order import HutchinsonState, hutchinson_estimator_diag_hessian


def test_sophia_without_objective_says_how_to_pass_it():
    opt = gdopt.sophia(0.1)
    p = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"obj_fn=loss_fn"):
        opt.update(jnp.ones(2), opt.init(p), p)


def test_sophia_accepts_value_fn_and_a_key():
    loss = lambda q: jnp.sum(q**2)
    p = jnp.array([1.0, -2.0])
    hess = hutchinson_estimator_diag_hessian(jax.random.PRNGKey(5))
    opt = gdopt.sophia(0.1, update_interval=1, hessian_diagonal_fn=hess)
    u, s = opt.update(jax.grad(loss)(p), opt.init(p), p, value_fn=loss)
    assert bool(jnp.all(jnp.isfinite(u)))
    is_h = lambda x: isinstance(x, HutchinsonState)
    (h,) = [x for x in jax.tree.leaves(s, is_leaf=is_h) if is_h(x)]
    assert not np.array_equal(h.key, jax.random.PRNGKey(5))  # a fresh key for the next draw
