"""``gdopt/distributions.py``: multi_normal's samples, log densities and parameters, against
closed forms and optax's ``multi_normal``; reparameterised gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

import gdopt
from gdopt.distributions import MultiNormalDiagFromLogScale, multi_normal
from tests.helpers import oracle

LOC = jnp.array([[0.5, -1.0, 2.0], [0.0, 1.0, -0.5]])
LOG_SCALE = jnp.log(jnp.array([1.0, 2.0, 0.5]))  # broadcast over the rows
KEY = jax.random.PRNGKey(4)


def test_multi_normal_matches_optax_and_scipy():
    d = multi_normal(LOC, LOG_SCALE)
    with oracle():
        ref = optax.multi_normal(LOC, LOG_SCALE)
        ref_samples = ref.sample((4,), KEY)
    samples = d.sample((4,), KEY)
    assert samples.shape == (4, 2, 3)
    np.testing.assert_allclose(samples, ref_samples, rtol=1e-6, atol=1e-6)
    with oracle():
        ref_lp = ref.log_prob(samples)
    lp = d.log_prob(samples)
    assert lp.shape == (4,)
    np.testing.assert_allclose(lp, ref_lp, rtol=1e-5)
    want = scipy.stats.norm.logpdf(
        np.asarray(samples, np.float64), np.asarray(LOC), np.exp(np.asarray(LOG_SCALE))
    ).sum(axis=(1, 2))
    np.testing.assert_allclose(lp, want, rtol=1e-5)
    assert [p.shape for p in d.params] == [(2, 3), (3,)]
    np.testing.assert_array_equal(d.log_scale, LOG_SCALE)
    assert isinstance(d, MultiNormalDiagFromLogScale) and gdopt.multi_normal is multi_normal


def test_multi_normal_samples_are_reparameterised():
    # d/dμ E[x] = 1 and d/dlogσ of the sample is σ ε: the estimators of optax's examples
    def mean_sample(loc, log_scale):
        return jnp.mean(multi_normal(loc, log_scale).sample((4000,), KEY))

    g_loc, g_log_scale = jax.grad(mean_sample, argnums=(0, 1))(jnp.zeros(()), jnp.zeros(()))
    assert float(g_loc) == pytest.approx(1.0)
    eps = jax.random.normal(KEY, (4000,))
    assert float(g_log_scale) == pytest.approx(float(jnp.mean(eps)), abs=1e-6)
    s = multi_normal(jnp.zeros(3), jnp.log(jnp.full(3, 2.0))).sample((20000,), KEY)
    np.testing.assert_allclose(jnp.std(s, axis=0), 2.0, rtol=0.03)
