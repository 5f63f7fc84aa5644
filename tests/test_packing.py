"""Packed execution (gdopt.packing): pack/unpack round trips, gradients that come out packed,
packed optimizers equal to unpacked ones, the elementwise marker and its check, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt.packing import (
    Packed,
    PackSpec,
    check_elementwise,
    pack,
    packed_optimizer,
    unpack,
    update_and_apply,
)
from tests.helpers import gradient_sequence, make_params


def _assert_trees_equal(a, b, rtol=0.0):
    """Same structure, dtypes and shapes; values equal (``rtol``: up to float32 rounding)."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert jnp.asarray(x).dtype == jnp.asarray(y).dtype
        assert np.shape(x) == np.shape(y)
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=rtol / 10
        )


def _mixed_tree():
    k = jax.random.PRNGKey(3)
    return {
        "dense": {"w": jax.random.normal(k, (3, 4)), "b": jnp.arange(4.0)},
        "half": jnp.linspace(-1, 1, 5).astype(jnp.bfloat16),
        "steps": jnp.arange(3, dtype=jnp.int32),
        "list": [jnp.asarray(2.5), (jnp.ones((2, 1, 2)), None)],
        "empty": jnp.zeros((0, 3)),
        "py": 1.5,
    }


# ----------------------------------------------------------------------------- pack / unpack


def test_round_trip_mixed_dtypes_scalars_none_and_empty_leaves():
    tree = _mixed_tree()
    packed = pack(tree)
    spec = packed.spec
    assert isinstance(spec, PackSpec)
    assert [np.dtype(d).name for d in spec.dtypes] == ["float32", "bfloat16", "int32"]
    assert spec.sizes == (4 + 12 + 0 + 1 + 4 + 1, 5, 3)
    assert [b.dtype for b in packed.buffers] == [jnp.float32, jnp.bfloat16, jnp.int32]
    back = unpack(packed)
    expected = jax.tree.map(jnp.asarray, tree)
    _assert_trees_equal(back, expected)
    assert back["list"][1][1] is None
    assert spec.nbytes == 4 * 22 + 2 * 5 + 4 * 3
    assert spec.num_leaves == 8 and spec.size == 30


def test_layout_is_row_major_in_flattening_order():
    packed = pack({"a": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.array(5.0)})
    assert packed.buffers[0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert packed.spec.slots == ((0, 0, (2, 2)), (0, 4, ()))


def test_empty_tree_and_single_array():
    packed = pack({})
    assert packed.buffers == () and unpack(packed) == {}
    x = jnp.arange(6.0).reshape(2, 3)
    _assert_trees_equal(unpack(pack(x)), x)


def test_bfloat16_only_tree_stays_bfloat16():
    tree = {"w": jnp.ones((3, 3), jnp.bfloat16), "b": jnp.zeros(3, jnp.bfloat16)}
    packed = pack(tree)
    assert len(packed.buffers) == 1 and packed.buffers[0].dtype == jnp.bfloat16
    _assert_trees_equal(unpack(packed), tree)


def test_spec_is_hashable_static_and_compared_by_value():
    a, b = pack(make_params()), pack(make_params(seed=5))
    # equal specs are interned: jit then compares them by identity at every call
    assert a.spec == b.spec and hash(a.spec) == hash(b.spec) and a.spec is b.spec
    assert pack({"x": jnp.ones(2)}).spec != pack({"x": jnp.ones(3)}).spec
    traces = []

    @jax.jit
    def f(p):
        traces.append(1)
        return jax.tree.map(lambda x: 2 * x, p)

    out = f(a)
    f(b)
    assert len(traces) == 1  # same spec: no retrace
    assert isinstance(out, Packed) and out.spec == a.spec
    assert "PackSpec(5 leaves in 1 buffer(s): float32[29])" == repr(a.spec)


def test_pack_with_spec_casts_and_checks():
    params = make_params()
    spec = pack(params).spec
    again = pack(jax.tree.map(lambda x: x.astype(jnp.bfloat16), params), spec)
    assert again.buffers[0].dtype == jnp.float32 and again.spec == spec
    with pytest.raises(ValueError, match=r"\['dense'\]\['w'\] has shape \(3, 4\)"):
        pack({**params, "dense": {**params["dense"], "w": jnp.ones((3, 4))}}, spec)
    with pytest.raises(ValueError, match="differ in structure"):
        pack({"w": jnp.ones(3)}, spec)
    with pytest.raises(TypeError, match="PackSpec"):
        pack(params, spec="nope")


def test_bad_input_errors():
    packed = pack({"w": jnp.ones(3)})
    with pytest.raises(TypeError, match="already a Packed"):
        pack(packed)
    with pytest.raises(TypeError, match="expects a Packed"):
        unpack({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"buffer 0 \(float32\) has shape \(4,\)"):
        unpack(Packed([jnp.ones(4)], packed.spec))
    with pytest.raises(ValueError, match="holds 2 buffer"):
        unpack(Packed([jnp.ones(3), jnp.ones(3)], packed.spec))
    with pytest.raises(TypeError, match=r"leaf at \['s'\] is a str"):
        pack({"s": "text"})


def test_gradient_comes_out_packed_and_equals_per_leaf_gradient():
    params = make_params()

    def loss(p):
        return (
            jnp.sum(jnp.sin(p["dense"]["w"]) * p["dense"]["b"])
            + jnp.sum(p["layers"][0] ** 3)
            + jnp.sum(p["layers"][1]) * p["scale"]
        )

    packed = pack(params)
    g = jax.jit(jax.grad(lambda q: loss(unpack(q))))(packed)
    assert isinstance(g, Packed) and g.spec == packed.spec
    expected = jax.grad(loss)(params)
    np.testing.assert_allclose(g.buffers[0], pack(expected).buffers[0], rtol=1e-6)
    # the backward pass of unpack is one concatenation, not a pad per leaf
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda q: loss(unpack(q))))(packed))
    assert "concatenate" in jaxpr and " pad" not in jaxpr


def test_pack_inside_jit_writes_multidimensional_leaves_without_concatenate():
    # XLA:CPU's concatenate of raveled matrices is ~10x slower than a copy: pack() writes
    # each multi-dimensional leaf with dynamic_update_slice and concatenates only 1-D runs
    tree = {
        "a": jnp.arange(3.0),
        "b": jnp.arange(6.0).reshape(2, 3),
        "c": jnp.ones(2),
        "d": jnp.full((), 7.0),
        "e": jnp.arange(4.0).reshape(2, 2),
    }
    jaxpr = str(jax.make_jaxpr(lambda t: pack(t).buffers[0])(tree))
    assert jaxpr.count("dynamic_update_slice") == 4  # a, b, the run (c, d), e
    got = jax.jit(lambda t: pack(t).buffers[0])(tree)
    expected = np.concatenate([np.ravel(np.asarray(tree[k])) for k in "abcde"])
    np.testing.assert_array_equal(got, expected)
    assert pack({"w": jnp.ones((2, 2))}).buffers[0].shape == (4,)


def test_vmap_and_jvp_through_unpack():
    packed = pack({"a": jnp.ones(2), "b": jnp.ones((2, 2))})
    batch = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), packed)
    sums = jax.vmap(lambda q: jnp.sum(unpack(q)["b"]))(batch)
    assert sums.tolist() == [4.0, 8.0]
    _, tangent = jax.jvp(lambda q: jnp.sum(unpack(q)["a"] ** 2), (packed,), (packed,))
    assert float(tangent) == 4.0


# ----------------------------------------------------------------------------- optimizers

ELEMENTWISE = {
    "sgd": lambda: gdopt.sgd(0.1),
    "momentum": lambda: gdopt.sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: gdopt.adam(0.01, b1=0.8, eps_root=1e-8),
    "adamw": lambda: gdopt.adamw(0.01, weight_decay=0.1),
    "rmsprop": lambda: gdopt.rmsprop(0.01, centered=True, momentum=0.5),
    "adagrad": lambda: gdopt.adagrad(0.1),
}


def _trajectories(opt, params, grads, packed_update):
    """Per-leaf and packed trajectories, each step (update + apply) compiled as one program."""

    @jax.jit
    def step(g, state, p):
        u, state = opt.update(g, state, p)
        return gdopt.apply_updates(p, u), state

    state = opt.init(params)
    p = params
    out = []
    for g in grads:
        p, state = step(g, state, p)
        out.append(p)
    pk = pack(params)
    popt = packed_optimizer(opt)
    pstate = popt.init(pk)
    out_packed = []
    for g in grads:
        pk, pstate = packed_update(popt, pack(g, pk.spec), pstate, pk)
        out_packed.append(unpack(pk))
    return out, out_packed, state, pstate


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_packed_optimizer_equals_unpacked(name):
    opt = ELEMENTWISE[name]()
    assert gdopt.is_elementwise(opt)
    params = make_params()
    grads = gradient_sequence(params, steps=12)

    @jax.jit
    def step(popt_state, g, pk):
        u, s = popt.update(g, popt_state, pk)
        return gdopt.apply_updates(pk, u), s

    popt = packed_optimizer(opt)

    def packed_update(popt_, g, s, pk):
        return step(s, g, pk)

    ref, got, state, pstate = _trajectories(opt, params, grads, packed_update)
    # The same operations on the same numbers; XLA may contract a * b + c into one fused
    # multiply-add in one program and not in the other, hence one ulp of slack.
    for a, b in zip(ref, got):
        _assert_trees_equal(a, b, rtol=1e-6)
    # the state is packed: every moment is one buffer, equal to the per-leaf moments
    moments = [x for x in jax.tree.leaves(pstate, is_leaf=lambda x: isinstance(x, Packed))]
    packed_moments = [x for x in moments if isinstance(x, Packed)]
    if name != "sgd":
        assert packed_moments
    ref_leaves = jax.tree.leaves(state)
    got_leaves = jax.tree.leaves(
        jax.tree.map(
            lambda x: unpack(x) if isinstance(x, Packed) else x,
            pstate,
            is_leaf=lambda x: isinstance(x, Packed),
        )
    )
    assert len(ref_leaves) == len(got_leaves)
    for a, b in zip(ref_leaves, got_leaves):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_bfloat16_moments_on_packed_buffers():
    opt = gdopt.adam(0.01, mu_dtype=jnp.bfloat16)
    params = make_params()
    popt = packed_optimizer(opt)
    pk = pack(params)
    state = popt.init(pk)
    mu = state.inner_state[0].mu
    assert isinstance(mu, Packed) and mu.buffers[0].dtype == jnp.bfloat16
    g = pack(gradient_sequence(params, steps=1)[0], pk.spec)
    _, state = jax.jit(popt.update)(g, state, pk)
    assert state.inner_state[0].mu.buffers[0].dtype == jnp.bfloat16
    assert unpack(state.inner_state[0].mu)["dense"]["w"].dtype == jnp.bfloat16


def test_masked_adamw_is_not_elementwise_and_runs_leaf_by_leaf():
    params = make_params()
    mask = jax.tree.map(lambda x: x.ndim > 1, params)
    opt = gdopt.adamw(0.01, weight_decay=0.5, mask=mask)
    assert not gdopt.is_elementwise(opt)
    popt = packed_optimizer(opt)
    assert not gdopt.is_elementwise(popt)
    grads = gradient_sequence(params, steps=5)

    @jax.jit
    def packed_update(g, s, pk):
        u, s = popt.update(g, s, pk)
        return gdopt.apply_updates(pk, u), s

    ref, got, state, pstate = _trajectories(
        opt, params, grads, lambda popt_, g, s, pk: packed_update(g, s, pk)
    )
    for a, b in zip(ref, got):
        _assert_trees_equal(a, b)
    # the state is per leaf, like the unpacked optimizer's
    assert jax.tree.structure(state) == jax.tree.structure(pstate)


def _per_leaf_normalize():
    """Divides each leaf by its norm: per-leaf, so not elementwise."""

    def update(updates, state, params=None, **extra):
        return jax.tree.map(lambda u: u / (jnp.linalg.norm(u) + 1e-12), updates), state

    return gdopt.GradientTransformation(lambda p: gdopt.EmptyState(), update)


def test_forcing_leaf_by_leaf_gives_per_leaf_numbers():
    params = pack(make_params())
    marked = gdopt.mark_packable(_per_leaf_normalize())
    assert gdopt.is_packable(marked)
    leafwise = packed_optimizer(marked, elementwise=False)
    u, _ = leafwise.update(params, leafwise.init(params), params)
    norms = jax.tree.map(lambda x: float(jnp.linalg.norm(x)), unpack(u))
    assert all(abs(n - 1.0) < 1e-5 for n in jax.tree.leaves(norms))


def test_unmarked_transform_runs_leaf_by_leaf():
    params = pack(make_params())
    popt = packed_optimizer(_per_leaf_normalize())
    u, _ = popt.update(params, popt.init(params), params)
    assert abs(float(jnp.linalg.norm(unpack(u)["dense"]["w"])) - 1.0) < 1e-5


@pytest.mark.parametrize(
    "transform",
    [
        gdopt.scale(0.5),
        gdopt.scale_by_schedule(lambda c: 1.0 / (c + 1)),
        gdopt.trace(0.9, nesterov=True),
        gdopt.ema(0.9),
        gdopt.scale_by_adam(nesterov=True),
        gdopt.scale_by_rms(bias_correction=True, eps_in_sqrt=False),
        gdopt.scale_by_stddev(),
        gdopt.scale_by_rss(),
        gdopt.add_decayed_weights(0.1),
        gdopt.sgd(0.1, momentum=0.9),
        gdopt.adamw(0.1, nu_dtype=jnp.bfloat16),
        gdopt.rmsprop(0.1, centered=True, momentum=0.9, bias_correction=True),
        gdopt.adagrad(0.1),
    ],
)
def test_every_marked_core_transform_is_really_elementwise(transform):
    assert gdopt.is_elementwise(transform)
    check_elementwise(transform, pack(make_params()))


def test_packability_composes():
    assert not gdopt.is_packable(gdopt.add_decayed_weights(0.1, mask={"w": True}))
    assert gdopt.is_packable(gdopt.add_decayed_weights(0.1, mask=True))
    assert gdopt.is_packable(gdopt.chain(gdopt.scale(1.0), gdopt.clip_by_global_norm(1.0)))
    assert not gdopt.is_packable(gdopt.chain(gdopt.scale(1.0), gdopt.clip_by_block_rms(1.0)))
    assert not gdopt.is_packable(gdopt.masked(gdopt.adam(0.1), {"w": True}))
    assert gdopt.is_packable(gdopt.inject_hyperparams(gdopt.adam)(learning_rate=0.1))
    assert gdopt.is_packable(gdopt.apply_if_finite(gdopt.adam(0.1), 3))
    assert not gdopt.is_packable(gdopt.apply_if_finite(gdopt.lamb(0.1), 3))
    assert not gdopt.is_packable(
        gdopt.GradientTransformation(lambda p: (), lambda u, s, p=None: (u, s))
    )
    with pytest.raises(TypeError, match="GradientTransformation"):
        gdopt.mark_packable(gdopt.adam)


def test_packed_optimizer_wrapping_and_input_errors():
    popt = packed_optimizer(gdopt.adam(0.1))
    assert packed_optimizer(popt) is popt
    assert not gdopt.is_elementwise(packed_optimizer(popt, elementwise=False))
    with pytest.raises(TypeError, match="needs params as a Packed"):
        popt.init({"w": jnp.ones(2)})
    p = pack({"w": jnp.ones(2)})
    with pytest.raises(TypeError, match="needs updates as a Packed"):
        popt.update({"w": jnp.ones(2)}, popt.init(p), p)
    with pytest.raises(ValueError, match="buffer sizes"):
        popt.update(p, popt.init(p), pack({"w": jnp.ones(3)}))
    with pytest.raises(TypeError, match="GradientTransformation"):
        packed_optimizer(gdopt.adam)


def test_hand_written_loop_with_update_and_apply():
    """Pack once, step many times in a compiled step with donated buffers, unpack."""
    target = make_params(seed=7)
    params = jax.tree.map(jnp.zeros_like, target)

    def loss(p):
        return sum(
            jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(target))
        )

    opt = packed_optimizer(gdopt.adam(0.05))
    packed = pack(params)
    state = opt.init(packed)

    @jax.jit
    def step(packed, state):
        value, grads = jax.value_and_grad(lambda q: loss(unpack(q)))(packed)
        packed, state = update_and_apply(opt, grads, state, packed)
        return packed, state, value

    step = jax.jit(step, donate_argnums=(0, 1))
    for _ in range(400):
        packed, state, value = step(packed, state)
    assert float(value) < 1e-4
    for a, b in zip(jax.tree.leaves(unpack(packed)), jax.tree.leaves(target)):
        np.testing.assert_allclose(a, b, atol=1e-2)
