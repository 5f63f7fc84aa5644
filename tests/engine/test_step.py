"""``gdopt/engine/step.py``: ``make_step``, one compiled training step. The hand-written momentum
step, the loss passed as ``value`` and keyword extras passed on, donation and no recompile,
``has_aux``, ``jit=False`` (vmapped over learning rates held in the state), and the packed
step equal to the pytree step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt.engine import make_step
from gdopt.packing import packed_optimizer


def _quadratic(params, batch):
    return 0.5 * jnp.sum(batch * (params["w"] - 1.0) ** 2)


def test_make_step_matches_hand_written_momentum():
    a = jnp.array([1.0, 3.0])  # loss 0.5 * sum(a (w - 1)^2): grad a (w - 1)
    opt = gdopt.sgd(0.1, momentum=0.5)
    step = make_step(_quadratic, opt)
    params = {"w": jnp.array([0.0, 2.0])}
    state = opt.init(params)
    w, m = np.array([0.0, 2.0]), np.zeros(2)
    for _ in range(3):
        loss_ref = 0.5 * np.sum(np.asarray(a) * (w - 1.0) ** 2)
        g = np.asarray(a) * (w - 1.0)
        m = g + 0.5 * m
        w = w - 0.1 * m
        params, state, loss = step(params, state, a)
        np.testing.assert_allclose(float(loss), loss_ref, rtol=1e-6)
        np.testing.assert_allclose(params["w"], w, rtol=1e-6)


def test_make_step_passes_the_loss_as_value_and_the_extras_on():
    # A transform that scales the gradient by the loss it is given as ``value``.
    def update(updates, state, params=None, *, value=None, factor=1.0, **extra):
        if value is None:
            raise ValueError("value missing")
        assert callable(extra["value_fn"]) and extra["grad"] is not None
        return jax.tree.map(lambda g: -factor * value * g, updates), state

    opt = gdopt.GradientTransformation(lambda p: gdopt.EmptyState(), update)
    step = make_step(_quadratic, opt)
    params, _, loss = step({"w": jnp.array([3.0])}, gdopt.EmptyState(), jnp.array([1.0]))
    # loss = 0.5 * 4 = 2, grad = 2: w = 3 - 2 * 2 = -1
    assert float(loss) == 2.0
    assert float(params["w"][0]) == -1.0
    # extra keyword arguments reach optimizer.update: w = 3 - 0.5 * 2 * 2 = 1
    params, _, _ = step({"w": jnp.array([3.0])}, gdopt.EmptyState(), jnp.array([1.0]), factor=0.5)
    assert float(params["w"][0]) == 1.0


def test_make_step_value_fn_is_the_loss_on_the_same_batch():
    seen = []

    def update(updates, state, params=None, *, value_fn=None, value=None, **extra):
        seen.append(1)
        shifted = jax.tree.map(lambda p: p + 1.0, params)
        return jax.tree.map(lambda g: 0.0 * g + value_fn(shifted) - value, updates), state

    opt = gdopt.GradientTransformation(lambda p: gdopt.EmptyState(), update)
    step = make_step(_quadratic, opt, donate=False)
    params = {"w": jnp.array([1.0, 2.0])}
    new, _, loss = step(params, gdopt.EmptyState(), jnp.array([2.0, 4.0]))
    # loss at w: 0.5 (2 * 0 + 4 * 1) = 2; at w + 1: 0.5 (2 * 1 + 4 * 4) = 9
    np.testing.assert_allclose(new["w"] - params["w"], [7.0, 7.0])
    assert float(loss) == 2.0


def test_make_step_donation_and_no_recompile():
    traces = []

    def loss_fn(params, batch):
        traces.append(1)
        return _quadratic(params, batch)

    opt = gdopt.adam(0.1)
    step = make_step(loss_fn, opt)
    params = {"w": jnp.zeros(3)}
    state = opt.init(params)
    old = params["w"]
    for _ in range(5):
        params, state, _ = step(params, state, jnp.ones(3))
    assert old.is_deleted()  # donated: invalid after the call
    assert len(traces) == 1 and step._cache_size() == 1
    # fresh inputs with the same shapes reuse the compiled step
    p2 = {"w": jnp.ones(3)}
    p2, _, loss = step(p2, opt.init(p2), jnp.ones(3))
    assert float(loss) == 0.0 and len(traces) == 1 and step._cache_size() == 1


def test_make_step_without_donation_keeps_inputs():
    opt = gdopt.sgd(0.1)
    step = make_step(_quadratic, opt, donate=False)
    params = {"w": jnp.zeros(2)}
    new, _, _ = step(params, opt.init(params), jnp.ones(2))
    assert not params["w"].is_deleted()
    np.testing.assert_allclose(new["w"], [0.1, 0.1], rtol=1e-6)


def test_make_step_has_aux_and_no_jit():
    def loss_fn(params, batch):
        loss = _quadratic(params, batch)
        return loss, {"double": 2 * loss}

    opt = gdopt.sgd(0.1)
    step = make_step(loss_fn, opt, has_aux=True, jit=False)
    params = {"w": jnp.zeros(2)}
    _, _, loss, aux = step(params, opt.init(params), jnp.ones(2))
    assert float(aux["double"]) == 2 * float(loss) == 2.0
    # the plain step vmaps over learning rates held in the state
    state = opt.init(params)
    run = lambda lr: step(params, gdopt.set_hyperparams(state, learning_rate=lr), jnp.ones(2))
    batched = jax.vmap(run)(jnp.array([0.1, 0.2]))[0]["w"]
    np.testing.assert_allclose(batched, [[0.1, 0.1], [0.2, 0.2]], rtol=1e-6)


def _few_arrays():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w": 0.3 * jax.random.normal(k1, (4, 3)), "b": jnp.zeros(3), "s": jnp.ones(())}
    x = jax.random.normal(k2, (16, 4))
    y = jax.random.normal(k3, (16, 3))

    def loss(p, batch):
        return jnp.mean((p["s"] * jnp.tanh(batch[0] @ p["w"] + p["b"]) - batch[1]) ** 2)

    return loss, params, (x, y)


def test_make_step_packed_matches_the_pytree_step_and_checks_its_input():
    loss, params, data = _few_arrays()
    opt = gdopt.adamw(1e-2)
    step = make_step(loss, opt, donate=False)
    pstep = make_step(loss, opt, donate=False, pack=True)
    p, s = params, opt.init(params)
    q = gdopt.pack(params)
    qs = packed_optimizer(opt).init(q)
    for _ in range(3):
        p, s, value = step(p, s, data)
        q, qs, pvalue = pstep(q, qs, data)
        np.testing.assert_allclose(pvalue, value, rtol=1e-6)
    assert isinstance(q, gdopt.packing.Packed)
    for a, b in zip(jax.tree.leaves(gdopt.unpack(q)), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError, match=r"make_step\(pack=True\): params must be packed"):
        pstep(params, qs, data)
    with pytest.raises(TypeError, match="make_step's pack must be True or False"):
        make_step(loss, opt, pack=None)
