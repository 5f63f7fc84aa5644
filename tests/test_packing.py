"""``gdopt/packing.py``: packed execution.

* ``pack``/``unpack`` round trips (mixed dtypes, scalars, ``None`` and empty leaves), the
  row-major layout, the spec (hashable, interned, equal only for equal leaf shapes), bad input,
  gradients that come out packed, ``vmap``/``jvp`` through ``unpack``;
* packed optimizers equal to unpacked ones (state packed too, bfloat16 moments), optimizers
  that are not packable run leaf by leaf, the elementwise check;
* the compiled step ``update_and_apply`` on packed and unpacked parameters: parity with optax
  (oracle) and with hand-computed steps, mixed dtypes, keyword extras, and the compiled
  program's passes over memory and temporaries (read from the optimized HLO).

(Packability of every combinator and wrapper: ``tests/test_traits.py``; of every optimizer,
with packed runs equal to leaf-by-leaf ones: ``tests/test_optimizers.py``.)
"""

from __future__ import annotations

import re

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
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
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    oracle,
    run_trajectory,
)

# make_params' 0-D leaf is weakly typed: strip it, the state would otherwise change type.
PARAMS = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), make_params())


def _assert_trees_equal(a, b, rtol=0.0):
    """Same structure, dtypes and shapes; values equal (``rtol``: up to float32 rounding)."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
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


def test_spec_equality_includes_the_leaf_shapes():
    """Two trees with the same structure and sizes but other shapes have different specs: each
    unpacks to its own shapes, also through one jitted function called with both."""
    a = pack({"w": jnp.zeros((2, 3))})
    b = pack({"w": jnp.arange(6.0).reshape(3, 2)})
    assert a.spec.sizes == b.spec.sizes and a.spec != b.spec
    assert unpack(a)["w"].shape == (2, 3) and unpack(b)["w"].shape == (3, 2)
    double = jax.jit(lambda q: jax.tree.map(lambda x: 2 * x, unpack(q)))
    assert double(a)["w"].shape == (2, 3)
    out = double(b)["w"]
    assert out.shape == (3, 2)
    np.testing.assert_array_equal(out, 2 * np.arange(6.0).reshape(3, 2))
    assert double._cache_size() == 2


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
    for a, b in zip(ref, got, strict=True):
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
    for a, b in zip(ref_leaves, got_leaves, strict=True):
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
    for a, b in zip(ref, got, strict=True):
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
        gdopt.scale_by_schedule(lambda c: 1.0 / (jnp.asarray(c, jnp.float32) + 1.0)),
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
            jnp.sum((a - b) ** 2)
            for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(target), strict=True)
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
    for a, b in zip(jax.tree.leaves(unpack(packed)), jax.tree.leaves(target), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-2)


# ----------------------------------------------------------------------------- the compiled step


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
GRADS = gradient_sequence(PARAMS, steps=30)


@pytest.mark.parametrize("name,kwargs", CASES)
def test_packed_step_matches_optax(name, kwargs):
    with oracle():
        expected = run_trajectory(getattr(optax, name)(0.01, **kwargs), PARAMS, GRADS)
    got = fused_trajectory(getattr(gdopt, name)(0.01, **kwargs), PARAMS, GRADS, packed=True)
    assert_trajectories_close(got, expected, rtol=1e-5, atol=1e-6)


def test_tree_step_matches_optax():
    with oracle():
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
    for x, y in zip(jax.tree.leaves(p), jax.tree.leaves(unpack(pk)), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_allclose(
            np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=1e-6, atol=1e-7
        )


def test_non_elementwise_and_extra_arguments():
    params, grads = PARAMS, GRADS[:3]
    mask = jax.tree.map(lambda x: x.ndim > 1, params)
    opt = gdopt.adamw(0.01, weight_decay=0.5, mask=mask)
    with oracle():
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
    with oracle():
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


# ----------------------------------------------------------------------------- properties

_DTYPES = st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32])
_SHAPES = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def _trees(draw):
    """A dict of up to six arrays of small shapes and mixed dtypes, with distinct values."""
    n = draw(st.integers(1, 6))
    tree = {}
    for i in range(n):
        shape, dtype = draw(_SHAPES), draw(_DTYPES)
        size = int(np.prod(shape, dtype=np.int64))
        tree[f"a{i}"] = jnp.arange(size, dtype=jnp.float32).reshape(shape).astype(dtype) + i
    return tree


@hypothesis.settings(max_examples=12, deadline=None, derandomize=True)
@hypothesis.given(_trees())
def test_unpack_inverts_pack_for_any_tree(tree):
    back = gdopt.unpack(gdopt.pack(tree))
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    for key in tree:
        assert back[key].shape == tree[key].shape and back[key].dtype == tree[key].dtype
        np.testing.assert_array_equal(np.asarray(back[key]), np.asarray(tree[key]))


@hypothesis.settings(max_examples=20, deadline=None, derandomize=True)
@hypothesis.given(_SHAPES, _SHAPES)
def test_pack_specs_are_equal_exactly_when_the_shapes_are(a, b):
    spec_a = gdopt.pack({"w": jnp.zeros(a)}).spec
    spec_b = gdopt.pack({"w": jnp.zeros(b)}).spec
    assert (spec_a == spec_b) == (a == b)
    assert gdopt.unpack(gdopt.pack({"w": jnp.zeros(b)}))["w"].shape == b
