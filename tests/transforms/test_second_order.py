"""``gdopt/transforms/second_order.py``: Hutchinson's diagonal-Hessian estimator.

Its estimate is unbiased for a non-diagonal Hessian and really random (fixed keys). Sophia, the
optimizer built on it, is in ``tests/optimizers/test_second_order.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gdopt.transforms.second_order import hutchinson_estimator_diag_hessian


def test_hutchinson_estimate_is_unbiased():
    """Mean of u ⊙ Hu over draws approaches diag(H) for a non-diagonal Hessian."""
    h = jnp.array([[2.0, 1.0, 0.5], [1.0, 3.0, -1.0], [0.5, -1.0, 4.0]])
    loss = lambda x: 0.5 * x @ h @ x
    t = hutchinson_estimator_diag_hessian(jax.random.PRNGKey(7))
    p = jnp.zeros(3)

    def body(s, _):
        est, s = t.update(p, s, p, obj_fn=loss)
        return s, est

    _, ests = jax.jit(lambda s: jax.lax.scan(body, s, None, length=2000))(t.init(p))
    np.testing.assert_allclose(ests.mean(0), jnp.diag(h), atol=0.1)
    assert float(jnp.std(ests[:, 0])) > 0.5  # really random (off-diagonal terms)
