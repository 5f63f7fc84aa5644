"""``gdopt/transforms/regularization.py``: centralize, add_noise and add_decayed_weights.

Hand-computed values; parity with optax (the noisy trajectories share optax's key splitting);
the annealed noise's statistics and its seeds; errors that name the argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    oracle,
    run_trajectory,
)

PARAMS = make_params()
GRADS = gradient_sequence(PARAMS, steps=100)


def _parity(ours, make_ref, grads=GRADS):
    traj = run_trajectory(ours, PARAMS, grads)
    with oracle():
        ref = run_trajectory(make_ref(), PARAMS, grads)
    assert_trajectories_close(traj, ref, 1e-5, 1e-6)


# ----------------------------------------------------------------------------- centralize


def test_centralize_by_hand():
    g = {
        "w": jnp.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]]),
        "b": jnp.array([1.0, 5.0]),
        "c": jnp.arange(8.0).reshape(2, 2, 2),
    }
    u, _ = gdopt.centralize().update(g, ())
    np.testing.assert_allclose(u["w"], [[-2.0, -1.0, 3.0], [-1.0, -1.0, 2.0]])
    np.testing.assert_allclose(u["b"], [1.0, 5.0])  # vectors are left alone
    np.testing.assert_allclose(u["c"], np.arange(8.0).reshape(2, 2, 2) - [[[1.5]], [[5.5]]])
    u, _ = gdopt.centralize(axis=0).update(g, ())
    np.testing.assert_allclose(u["w"], [[0.5, 1.0, 1.5], [-0.5, -1.0, -1.5]])


def test_centralize_parity():
    import optax

    _parity(
        gdopt.chain(gdopt.centralize(), gdopt.sgd(0.1)),
        lambda: optax.chain(optax.centralize(), optax.sgd(0.1)),
    )


# ----------------------------------------------------------------------------- add_noise


def test_add_noise_parity():
    """Same key, same splitting: the noisy trajectories agree (30 steps: PRNG code compiles
    slowly)."""
    import optax

    _parity(
        gdopt.chain(gdopt.add_noise(0.3, 0.55, 42), gdopt.sgd(0.1)),
        lambda: optax.chain(optax.add_noise(0.3, 0.55, 42), optax.sgd(0.1)),
        grads=GRADS[:30],
    )


def test_add_noise_statistics_and_keys():
    t = gdopt.add_noise(eta=4.0, gamma=1.0, key=jax.random.key(3))
    p = {"w": jnp.zeros(20000)}
    s = t.init(p)
    update = jax.jit(t.update)
    u1, s = update(p, s)
    u2, s = update(p, s)
    # sigma_1 = 2, sigma_2 = sqrt(2); draws differ from step to step
    assert abs(float(jnp.std(u1["w"])) - 2.0) < 0.05
    assert abs(float(jnp.std(u2["w"])) - np.sqrt(2.0)) < 0.05
    assert int(s.count) == 2
    assert not bool(jnp.allclose(u1["w"], u2["w"] * np.sqrt(2.0)))
    # the same seed given as seed= or key= gives the same noise
    a = gdopt.add_noise(1.0, 0.5, seed=7)
    b = gdopt.add_noise(1.0, 0.5, key=jax.random.PRNGKey(7))
    np.testing.assert_array_equal(a.update(p, a.init(p))[0]["w"], b.update(p, b.init(p))[0]["w"])


def test_add_noise_errors():
    with pytest.raises(ValueError, match="not both"):
        gdopt.add_noise(0.1, 0.5, key=1, seed=1)
    with pytest.raises(ValueError, match="eta"):
        gdopt.add_noise(-0.1, 0.5)
    with pytest.raises(TypeError, match="key"):
        gdopt.add_noise(0.1, 0.5, key="zero")


# ----------------------------------------------------------------------------- weight decay


def test_add_decayed_weights_by_hand():
    """``u + λ p`` where the mask is true, ``u`` elsewhere; any real ``λ``."""
    p = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([4.0])}
    g = {"w": jnp.array([0.5, 0.5]), "b": jnp.array([1.0])}
    t = gdopt.add_decayed_weights(0.1, mask={"w": True, "b": False})
    u, _ = t.update(g, t.init(p), p)
    np.testing.assert_allclose(u["w"], [0.6, 0.3], rtol=1e-6)
    np.testing.assert_allclose(u["b"], [1.0], rtol=1e-6)
    # as a building block λ may be negative (Fromage uses it); params are required
    t = gdopt.add_decayed_weights(-0.5)
    u, _ = t.update(g, t.init(p), p)
    np.testing.assert_allclose(u["b"], [-1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="params"):
        t.update(g, t.init(p))
