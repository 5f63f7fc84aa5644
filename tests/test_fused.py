"""The compiled optimizer step (update + apply, gdopt.packing.update_and_apply) on packed and
unpacked parameters: parity with optax (oracle) and with hand-computed steps, dtypes, and the
compiled program's passes over memory and temporaries (read from the optimized HLO)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdopt
from gdopt.packing import Packed, pack, packed_optimizer, unpack, update_and_apply
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    run_trajectory,
)


def fused_trajectory(opt, params, grads, *, packed):
    """Parameters after each step of update_and_apply, all steps in one compiled scan."""
    if packed:
        popt = packed_optimizer(opt)
        p0 = pack(params)
        gs = jnp.stack([pack(g, p0.spec).buffers[0] for g in grads])
    else:
        popt, p0 = opt, params
        gs = jax.tree.map(lambda *xs: jnp.stack(xs), *grads)

    @jax.jit
    def run(p, gs):
        def body(carry, g):
            p, s = carry
            if packed:
                g = Packed([g], p0.spec)
            p, s = update_and_apply(popt, g, s, p)
            return (p, s), (p.buffers[0] if packed else p)

        return jax.lax.scan(body, (p, popt.init(p)), gs)[1]

    out = run(p0, gs)
    if packed:
        return [unpack(Packed([b], p0.spec)) for b in out]
    return [jax.tree.map(lambda x, i=i: x[i], out) for i in range(len(grads))]


CASES = [
    ("adam", {}),
    ("adam", {"b1": 0.5, "b2": 0.9, "eps": 1e-3, "eps_root": 1e-6}),
    ("adamw", {"weight_decay": 0.1}),
    ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("rmsprop", {"centered": True, "momentum": 0.5, "decay": 0.8}),
    ("adagrad", {}),
]
PARAMS = make_params()
GRADS = gradient_sequence(PARAMS, steps=100)


@pytest.mark.parametrize("name,kwargs", CASES)
def test_packed_step_matches_optax(name, kwargs):
    expected = run_trajectory(getattr(optax, name)(0.01, **kwargs), PARAMS, GRADS)
    got = fused_trajectory(getattr(gdopt, name)(0.01, **kwargs), PARAMS, GRADS, packed=True)
    assert_trajectories_close(got, expected, rtol=1e-5, atol=1e-6)


def test_tree_step_matches_optax():
    expected = run_trajectory(optax.adam(0.01), PARAMS, GRADS)
    got = fused_trajectory(gdopt.adam(0.01), PARAMS, GRADS, packed=False)
    assert_trajectories_close(got, expected, rtol=1e-5, atol=1e-6)


def _np_adam_steps(p, gs, lr, b1=0.9, b2=0.999, eps=1e-8):
    p = np.asarray(p, np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(gs, start=1):
        g = np.asarray(g, np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


def test_hand_computed_adam_and_momentum_steps():
    p0 = jnp.linspace(-1.0, 1.0, 10)
    g1 = jnp.linspace(2.0, -3.0, 10)
    g2 = jnp.cos(jnp.arange(10.0))
    for packed in (True, False):
        opt = packed_optimizer(gdopt.adam(0.1)) if packed else gdopt.adam(0.1)
        params = pack({"w": p0}) if packed else {"w": p0}
        state = opt.init(params)
        step = jax.jit(lambda g, s, p, o=opt: update_and_apply(o, g, s, p))
        # first step: p - 0.1 sign(g) (up to eps)
        params, state = step(pack({"w": g1}) if packed else {"w": g1}, state, params)
        w = unpack(params)["w"] if packed else params["w"]
        np.testing.assert_allclose(w, p0 - 0.1 * jnp.sign(g1), rtol=1e-6, atol=1e-6)
        params, state = step(pack({"w": g2}) if packed else {"w": g2}, state, params)
        w = unpack(params)["w"] if packed else params["w"]
        # Kingma & Ba's formula by hand in float64; float32 loses digits in 1 - β2^t
        np.testing.assert_allclose(w, _np_adam_steps(p0, [g1, g2], 0.1), rtol=1e-5, atol=1e-6)
    # heavy ball: p2 = p0 - α g1 - α (g2 + β g1)
    opt = packed_optimizer(gdopt.sgd(0.1, momentum=0.5))
    params = pack({"w": p0})
    state = opt.init(params)
    for g in (g1, g2):
        params, state = update_and_apply(opt, pack({"w": g}), state, params)
    expected = np.asarray(p0) - 0.1 * np.asarray(g1) - 0.1 * (np.asarray(g2) + 0.5 * np.asarray(g1))
    np.testing.assert_allclose(unpack(params)["w"], expected, rtol=1e-6, atol=1e-7)


def test_mixed_dtypes_and_bfloat16_moments_packed_equals_tree():
    key = jax.random.PRNGKey(0)
    tree = {
        "a": jax.random.normal(key, (37,)),
        "h": jax.random.normal(key, (5, 7)).astype(jnp.bfloat16),
        "s": jnp.asarray(0.3),
    }
    grads = [
        jax.tree.map(lambda x, k=k: jax.random.normal(k, x.shape).astype(x.dtype), tree)
        for k in jax.random.split(key, 5)
    ]
    opt = gdopt.adamw(0.01, mu_dtype=jnp.bfloat16, weight_decay=0.1)
    popt = packed_optimizer(opt)
    p, s = tree, opt.init(tree)
    pk, ps = pack(tree), popt.init(pack(tree))
    step = jax.jit(update_and_apply, static_argnums=0)
    for g in grads:
        p, s = step(opt, g, s, p)
        pk, ps = step(popt, pack(g, pk.spec), ps, pk)
    assert [b.dtype for b in pk.buffers] == [jnp.float32, jnp.bfloat16]
    assert [b.dtype for b in ps.inner_state[0].mu.buffers] == [jnp.bfloat16, jnp.bfloat16]
    assert [b.dtype for b in ps.inner_state[0].nu.buffers] == [jnp.float32, jnp.bfloat16]
    for x, y in zip(jax.tree.leaves(p), jax.tree.leaves(unpack(pk))):
        assert x.dtype == y.dtype
        np.testing.assert_allclose(
            np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=1e-6, atol=1e-7
        )


def test_non_elementwise_and_extra_arguments():
    params, grads = PARAMS, GRADS[:3]
    mask = jax.tree.map(lambda x: x.ndim > 1, params)
    opt = gdopt.adamw(0.01, weight_decay=0.5, mask=mask)
    expected = run_trajectory(optax.adamw(0.01, weight_decay=0.5, mask=mask), params, grads)
    assert_trajectories_close(fused_trajectory(opt, params, grads, packed=True), expected)

    def update(updates, state, params=None, *, value=None, **extra):
        if value is None:
            raise TypeError("needs value: update(grads, state, params, value=loss)")
        return jax.tree.map(lambda u: -value * u, updates), state

    by_value = gdopt.mark_elementwise(gdopt.GradientTransformation(lambda p: (), update))
    p = pack({"w": jnp.ones(9)})
    state = packed_optimizer(by_value).init(p)
    new, _ = update_and_apply(by_value, p, state, p, value=jnp.asarray(0.25))
    np.testing.assert_allclose(new.buffers[0], 0.75)
    with pytest.raises(TypeError, match="needs value"):
        update_and_apply(by_value, p, state, p)


N_PASS = 1 << 14
# One pass per parameter-sized output (XLA:CPU has no multi-output loop fusion): never more
# than the buffers the rule writes, the same as optax.
PASSES = {"sgd": ({}, 1), "momentum": ({"momentum": 0.9}, 2), "rmsprop": ({}, 2), "adam": ({}, 3)}


def _passes_and_temp(opt, apply, packed):
    params = {"w": jax.ShapeDtypeStruct((N_PASS,), jnp.float32)}
    if packed:
        opt = packed_optimizer(opt)
        params = jax.eval_shape(pack, params)

    def step(p, s, g):
        if packed:
            return update_and_apply(opt, g, s, p)
        u, s = opt.update(g, s, p)
        return apply(p, u), s

    state = jax.eval_shape(opt.init, params)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    text = compiled.as_text()
    entry = text[text.index("ENTRY") :]
    passes = len(re.findall(rf"= [a-z0-9]+\[{N_PASS}\]\{{0\}} fusion\(", entry))
    copies = len(re.findall(rf"= [a-z0-9]+\[{N_PASS}\]\{{0\}} copy\(", entry))
    return passes, copies, compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("name", sorted(PASSES))
def test_compiled_step_passes_and_temporaries(name):
    kwargs, most = PASSES[name]
    base = "sgd" if name == "momentum" else name
    optax_passes, _, _ = _passes_and_temp(
        getattr(optax, base)(0.1, **kwargs), optax.apply_updates, False
    )
    for packed in (False, True):
        passes, copies, temp = _passes_and_temp(
            getattr(gdopt, base)(0.1, **kwargs), gdopt.apply_updates, packed
        )
        assert 1 <= passes <= min(most, optax_passes)
        # donated buffers are updated in place: no copy, no parameter-sized temporary
        assert copies == 0
        assert temp < 4 * N_PASS
