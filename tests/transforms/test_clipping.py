"""``gdopt/transforms/clipping.py``: clip, clip_by_global_norm, clip_by_block_rms,
adaptive_grad_clip (with unitwise_norm), zero_nans, per_example_global_norm_clip,
unitwise_clip and per_example_layer_norm_clip.

Hand-computed values; parity with optax along 100-step trajectories; dtypes and ``None``
leaves; traced (vmapped) thresholds; validation errors that name the argument or the leaf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
GRADS = gradient_sequence(PARAMS, steps=100, scale=2.0)


def _parity(ours, make_ref, grads=GRADS):
    """``ours`` and the optax chain ``make_ref()`` give the same trajectory along ``grads``."""
    traj = run_trajectory(ours, PARAMS, grads)
    with oracle():
        ref = run_trajectory(make_ref(), PARAMS, grads)
    assert_trajectories_close(traj, ref, 1e-5, 1e-6)


@pytest.mark.parametrize(
    "name,args",
    [
        ("clip", (0.5,)),
        ("clip_by_global_norm", (10.0,)),  # clips some steps, not all
        ("clip_by_block_rms", (2.0,)),
        ("adaptive_grad_clip", (0.1,)),
        ("adaptive_grad_clip", (0.5, 0.05)),
    ],
)
def test_parity_with_optax(name, args):
    import optax

    _parity(
        gdopt.chain(getattr(gdopt, name)(*args), gdopt.sgd(0.1)),
        lambda: optax.chain(getattr(optax, name)(*args), optax.sgd(0.1)),
    )


def test_zero_nans_parity_and_flags():
    import optax

    grads = [jax.tree.map(lambda x: x, g) for g in GRADS[:20]]
    for i in (3, 7, 8):
        grads[i]["dense"]["w"] = grads[i]["dense"]["w"].at[1, 2].set(jnp.nan)
    _parity(
        gdopt.chain(gdopt.zero_nans(), gdopt.sgd(0.1)),
        lambda: optax.chain(optax.zero_nans(), optax.sgd(0.1)),
        grads,
    )
    t = gdopt.zero_nans()
    u, s = t.update(grads[3], t.init(PARAMS))
    assert bool(s.found_nan["dense"]["w"]) and not bool(s.found_nan["dense"]["b"])
    assert float(u["dense"]["w"][1, 2]) == 0.0
    _, s = t.update(grads[4], s)
    assert not any(bool(x) for x in jax.tree.leaves(s.found_nan))


def test_clip_by_hand():
    t = gdopt.clip(1.5)
    u, _ = t.update({"w": jnp.array([-4.0, -1.0, 0.0, 1.25, 9.0])}, t.init(None))
    assert u["w"].tolist() == [-1.5, -1.0, 0.0, 1.25, 1.5]


def test_clip_by_global_norm_by_hand():
    g = {"a": jnp.array([[1.0, 2.0], [2.0, 0.0]]), "b": jnp.array([4.0])}  # norm 5
    t = gdopt.clip_by_global_norm(2.0)
    u, _ = t.update(g, t.init(None))
    np.testing.assert_allclose(u["a"], np.array([[1.0, 2.0], [2.0, 0.0]]) * 0.4, rtol=1e-6)
    np.testing.assert_allclose(u["b"], [1.6], rtol=1e-6)
    # below the threshold nothing changes (and a zero gradient stays zero, no NaN)
    t = gdopt.clip_by_global_norm(10.0)
    assert jax.tree.map(lambda x, y: bool(jnp.all(x == y)), t.update(g, ())[0], g) == {
        "a": True,
        "b": True,
    }
    z, _ = gdopt.clip_by_global_norm(1.0).update({"w": jnp.zeros(3)}, ())
    assert z["w"].tolist() == [0.0, 0.0, 0.0]


def test_clip_by_block_rms_by_hand():
    # rms([3, 4, 0, 0]) = sqrt(25 / 4) = 2.5 -> divided by 2.5 / 0.5 = 5
    t = gdopt.clip_by_block_rms(0.5)
    u, _ = t.update({"w": jnp.array([3.0, 4.0, 0.0, 0.0]), "b": jnp.array([0.1])}, ())
    np.testing.assert_allclose(u["w"], [0.6, 0.8, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(u["b"], [0.1], rtol=1e-6)


def test_adaptive_grad_clip_by_hand():
    # dense kernel (in=2, out=2): units are columns.
    p = {"w": jnp.array([[3.0, 0.0], [4.0, 0.0]]), "b": jnp.array([0.0, 0.0])}
    g = {"w": jnp.array([[0.3, 6.0], [0.4, 8.0]]), "b": jnp.array([1.0, 0.0])}
    t = gdopt.adaptive_grad_clip(0.5, eps=1e-3)
    u, _ = t.update(g, t.init(p), p)
    # column 0: |g| = 0.5 < 0.5 * 5 -> kept; column 1: |p| = 0 -> max norm 0.5 * 1e-3
    np.testing.assert_allclose(u["w"][:, 0], [0.3, 0.4], rtol=1e-6)
    np.testing.assert_allclose(u["w"][:, 1], np.array([6.0, 8.0]) / 10.0 * 5e-4, rtol=1e-5)
    # bias: one unit, |p| = 0 -> clipped to norm 5e-4
    np.testing.assert_allclose(u["b"], [5e-4, 0.0], rtol=1e-5)


def test_unitwise_norm_axes():
    x = jnp.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_allclose(
        gdopt.unitwise_norm(x),
        jnp.broadcast_to(jnp.sqrt(jnp.sum(x**2, axis=0, keepdims=True)), x.shape),
    )
    conv = jnp.ones((3, 3, 2, 5))
    np.testing.assert_allclose(gdopt.unitwise_norm(conv), np.full(conv.shape, np.sqrt(18.0)))
    np.testing.assert_allclose(gdopt.unitwise_norm(x, axis=(1, 2))[1, 0, 0], jnp.linalg.norm(x[1]))
    with pytest.raises(ValueError, match="axis"):
        gdopt.unitwise_norm(jnp.ones((1, 2, 1, 2, 1, 2)))


def test_agc_error_names_the_leaf():
    p = {"big": jnp.ones((2, 2, 2, 2, 2, 2))}
    t = gdopt.adaptive_grad_clip(0.1)
    with pytest.raises(ValueError, match=r"\['big'\]"):
        t.update(p, t.init(p), p)
    with pytest.raises(ValueError, match="params"):
        t.update(p, t.init(p))


def test_per_example_global_norm_clip_parity():
    import optax

    grads = gradient_sequence({"w": jnp.zeros((6, 3)), "b": jnp.zeros((6,))}, steps=1)[0]
    ours, n = gdopt.per_example_global_norm_clip(grads, 1.2)
    with oracle():
        ref, n_ref = optax.per_example_global_norm_clip(grads, 1.2)
    for key in ("w", "b"):
        np.testing.assert_allclose(ours[key], ref[key], rtol=1e-5, atol=1e-6)
    assert int(n) == int(n_ref) > 0
    with pytest.raises(ValueError, match=r"\['w'\] has shape \(4, 2\)"):
        gdopt.per_example_global_norm_clip({"w": jnp.ones((4, 2)), "b": jnp.ones((3,))}, 1.0)
    with pytest.raises(ValueError, match="axis 0"):
        gdopt.per_example_global_norm_clip({"w": jnp.ones(())}, 1.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gdopt.clip(0.1),
        lambda: gdopt.clip_by_global_norm(0.1),
        lambda: gdopt.clip_by_block_rms(0.1),
        lambda: gdopt.adaptive_grad_clip(0.1),
        lambda: gdopt.zero_nans(),
    ],
    ids=["clip", "clip_by_global_norm", "clip_by_block_rms", "adaptive_grad_clip", "zero_nans"],
)
def test_dtypes_and_none_leaves(make):
    t = make()
    p = {"w": jnp.ones((3, 2), jnp.bfloat16), "frozen": None, "b": jnp.ones(2)}
    g = {"w": jnp.full((3, 2), 5.0, jnp.bfloat16), "frozen": None, "b": jnp.full(2, 5.0)}
    u, _ = jax.jit(t.update)(g, t.init(p), p)
    assert u["w"].dtype == jnp.bfloat16 and u["b"].dtype == jnp.float32
    assert u["frozen"] is None


def test_traced_hyperparameters():
    g = {"w": jnp.array([3.0, 4.0])}
    f = jax.vmap(lambda m: gdopt.clip_by_global_norm(m).update(g, ())[0]["w"])
    np.testing.assert_allclose(f(jnp.array([1.0, 10.0])), [[0.6, 0.8], [3.0, 4.0]], rtol=1e-6)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: gdopt.clip(-1.0), "max_delta"),
        (lambda: gdopt.clip_by_global_norm(0.0), "max_norm"),
        (lambda: gdopt.clip_by_block_rms(-1.0), "threshold"),
        (lambda: gdopt.adaptive_grad_clip(0.0), "clipping"),
        (lambda: gdopt.adaptive_grad_clip(0.1, eps=-1.0), "eps"),
        (lambda: gdopt.per_example_global_norm_clip({"w": jnp.ones(2)}, -1.0), "l2_norm_clip"),
    ],
)
def test_validation(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("uniform", [True, False])
def test_per_example_layer_norm_clip_matches_optax(uniform):
    grads = [
        jnp.array([[0.0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]]),
        jnp.array([[1.0, 2], [3, 4], [0, 0], [0.1, 0.1]]),
    ]
    sums, counts = gdopt.per_example_layer_norm_clip(grads, 1.0, uniform=uniform)
    with oracle():
        ref_sums, ref_counts = optax.per_example_layer_norm_clip(grads, 1.0, uniform=uniform)
    for a, b in zip(sums, ref_sums, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert [int(c) for c in counts] == [int(c) for c in ref_counts]
