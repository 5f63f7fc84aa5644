"""``gdopt/tree.py``: pytree arithmetic, norms, sizes and casts; the structure, shape, dtype and
mask checks whose messages name the key path (directly and through an optimizer's
``init``/``update``); mixed-dtype arithmetic computing what standard promotion computes;
``map_params`` on gdopt states against optax's ``tree_map_params`` on optax's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt import tree as gtree


def test_tree_utilities():
    t = {"a": jnp.array([3.0]), "b": [jnp.array([4.0]), jnp.zeros((2, 2))]}
    assert float(gtree.tree_l2_norm(t)) == pytest.approx(5.0)
    assert float(gtree.tree_l2_norm(t, squared=True)) == pytest.approx(25.0)
    assert float(gtree.tree_vdot(t, t)) == pytest.approx(25.0)
    assert gtree.tree_size(t) == 6
    assert gtree.tree_bytes(t) == 24
    assert float(gtree.tree_linf_norm(t)) == 4.0
    assert bool(gtree.tree_all_finite(t))
    assert not bool(gtree.tree_all_finite({"x": jnp.array([jnp.nan])}))
    cast = gtree.tree_cast(t, jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(cast))
    np.testing.assert_allclose(gtree.tree_add_scaled(t, 2.0, t)["a"], [9.0])


def test_mixed_dtype_arithmetic_equals_standard_promotion():
    """bfloat16 and float32 leaves meet in every binary map: the explicit casts give standard
    promotion's dtype and numbers, whatever the promotion mode."""
    a = {"h": jnp.linspace(-1.0, 1.0, 5).astype(jnp.bfloat16), "f": jnp.arange(3.0)}
    b = {"h": jnp.linspace(0.5, 2.0, 5), "f": jnp.arange(3.0).astype(jnp.bfloat16)}
    with jax.numpy_dtype_promotion("standard"):
        expected = {
            "add": jax.tree.map(lambda x, y: x + y, a, b),
            "mul": jax.tree.map(lambda x, y: x * y, a, b),
            "vdot": sum(
                jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
            ),
        }
    with jax.numpy_dtype_promotion("strict"):
        got = {
            "add": gtree.tree_add(a, b),
            "mul": gtree.tree_mul(a, b),
            "vdot": gtree.tree_vdot(a, b),
        }
    for name in ("add", "mul"):
        for x, y in zip(jax.tree.leaves(got[name]), jax.tree.leaves(expected[name]), strict=True):
            assert x.dtype == y.dtype == jnp.float32, name
            np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(got["vdot"], expected["vdot"], rtol=1e-6)


def test_mask_leaves_errors_name_paths():
    with pytest.raises(ValueError, match="mask"):
        gtree.mask_leaves({"w": True}, {"w": 1.0, "b": 2.0})


def test_structure_mismatch_names_key_path():
    opt = gdopt.adam(0.1)
    params = {"layer": {"w": jnp.ones(2), "b": jnp.ones(1)}}
    state = opt.init(params)
    grads = {"layer": {"w": jnp.ones(2), "bias": jnp.ones(1)}}
    with pytest.raises(ValueError, match=r"\['layer'\]\['b"):
        opt.update(grads, state, params)


def test_shape_mismatch_names_key_path():
    opt = gdopt.sgd(0.1)
    params = {"w": jnp.ones((2, 3))}
    with pytest.raises(ValueError, match=r"\['w'\].*\(3, 2\)"):
        opt.update({"w": jnp.ones((3, 2))}, opt.init(params), params)


@pytest.mark.parametrize("bad", [jnp.array([1, 2]), jnp.array([True, False])])
def test_integer_or_bool_params_are_rejected(bad):
    with pytest.raises(TypeError, match=r"params\['count'\].*floating point"):
        gdopt.adam(0.1).init({"w": jnp.ones(2), "count": bad})


# ----------------------------------------------------------------------------- optax.tree

import optax  # noqa: E402  (the oracle)
import optax.tree_utils  # noqa: E402

from tests.helpers import oracle  # noqa: E402

_A = {"w": jnp.array([[1.0, -2.0], [3.0, 0.5]]), "b": [jnp.array([-4.0]), jnp.array(2.5)]}
_B = {"w": jnp.array([[0.5, 1.0], [-1.0, 2.0]]), "b": [jnp.array([3.0]), jnp.array(-1.5)]}
_C = {"w": jnp.array([[2.0, 0.0], [1.0, 1.0]]), "b": [jnp.array([1.0]), jnp.array(0.25)]}
_MIXED = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(3, jnp.float32)}

# (case id, optax.tree name, args, kwargs)
TREE_CASES = [
    ("add", "add", (_A, _B), {}),
    ("add_three", "add", (_A, _B, _C), {}),
    ("sub", "sub", (_A, _B), {}),
    ("mul", "mul", (_A, _B), {}),
    ("div", "div", (_A, _B), {}),
    ("scale", "scale", (0.5, _A), {}),
    ("scale_array", "scale", (jnp.float32(-2.0), _MIXED), {}),
    ("add_scale", "add_scale", (_A, 0.3, _B), {}),
    ("vdot", "vdot", (_A, _B), {}),
    ("sum", "sum", (_A,), {}),
    ("sum_associative", "sum", (_A,), {"associative_reduction": True}),
    ("max", "max", (_A,), {}),
    ("min", "min", (_A,), {}),
    ("norm", "norm", (_A,), {}),
    ("norm_squared", "norm", (_A,), {"squared": True}),
    ("norm_1", "norm", (_A,), {"ord": 1}),
    ("norm_inf", "norm", (_A,), {"ord": jnp.inf}),
    ("norm_inf_squared", "norm", (_A,), {"ord": jnp.inf, "squared": True}),
    ("size", "size", (_A,), {}),
    ("conj", "conj", ({"z": jnp.array([1 + 2j, -3j])},), {}),
    ("real", "real", ({"z": jnp.array([1 + 2j, -3j])},), {}),
    ("zeros_like", "zeros_like", (_A,), {}),
    ("ones_like", "ones_like", (_A,), {"dtype": jnp.bfloat16}),
    ("full_like", "full_like", (_A, 3.0), {}),
    ("cast", "cast", (_A, jnp.float16), {}),
    ("cast_like", "cast_like", (_A, jax.tree.map(lambda x: x.astype(jnp.bfloat16), _B)), {}),
    ("clip", "clip", (_A, -1.0, 1.5), {}),
    ("clip_low", "clip", (_A,), {"min_value": 0.0}),
    ("where", "where", (True, _A, _B), {}),
    ("allclose", "allclose", (_A, _A), {}),
    ("allclose_false", "allclose", (_A, _B), {}),
    ("batch_shape", "batch_shape", (_A, (3,)), {}),
    ("bias_correction", "bias_correction", (_A, 0.9, jnp.array(3)), {}),
    ("update_moment", "update_moment", (_A, _B, 0.9, 2), {}),
    ("update_infinity_moment", "update_infinity_moment", (_A, _B, 0.9, 1e-3), {}),
    ("update_moment_per_elem_norm", "update_moment_per_elem_norm", (_A, _B, 0.9, 2), {}),
    ("random_like", "random_like", (jax.random.key(3), _A), {}),
    ("random_like_uniform", "random_like", (jax.random.key(3), _A, jax.random.uniform), {}),
    ("split_key_like", "split_key_like", (jax.random.key(4), _A), {}),
    ("unwrap_random_key_data", "unwrap_random_key_data", ({"k": jax.random.key(5), "x": 1.0},), {}),
]


def _plain(tree):
    return jax.tree.map(
        lambda x: (
            jax.random.key_data(x)
            if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
            else x
        ),
        tree,
    )


def _assert_same_tree(ours, ref, case):
    ours, ref = _plain(ours), _plain(ref)
    assert jax.tree.structure(ours) == jax.tree.structure(ref), case
    for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        assert np.shape(x) == np.shape(y), case
        assert jnp.asarray(x).dtype == jnp.asarray(y).dtype, (case, jnp.asarray(x).dtype)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=case)


@pytest.mark.parametrize(
    ("case", "name", "args", "kwargs"), TREE_CASES, ids=[c[0] for c in TREE_CASES]
)
def test_tree_functions_match_optax(case, name, args, kwargs):
    ours = getattr(gtree, name)(*args, **kwargs)
    with oracle():
        ref = getattr(optax.tree, name)(*args, **kwargs)
    _assert_same_tree(ours, ref, case)


def test_every_optax_tree_function_has_a_case_or_a_test():
    covered = {name for _, name, _, _ in TREE_CASES}
    covered |= {"dtype", "get", "get_all_with_path", "set", "map_params"}
    public = {
        n for n in dir(optax.tree) if not n.startswith("_") and callable(getattr(optax.tree, n))
    }
    assert public - covered == set()


def test_tree_utils_names_are_the_tree_functions():
    for name in dir(optax.tree_utils):
        if name.startswith("tree_"):
            assert getattr(gdopt.tree_utils, name) is getattr(gtree, name[len("tree_") :]), name


def test_tree_dtype_matches_optax():
    for tree, handler in [
        ({"a": jnp.ones(2)}, None),
        ({}, None),
        (_MIXED, "promote"),
        (_MIXED, "highest"),
        (_MIXED, "lowest"),
    ]:
        with oracle():
            ref = optax.tree.dtype(tree, handler)
        assert gtree.dtype(tree, handler) == ref
    with pytest.raises(ValueError, match="several dtypes"):
        gtree.dtype(_MIXED)
    with pytest.raises(ValueError, match="no highest"):
        gtree.dtype({"a": jnp.ones(1, jnp.bfloat16), "b": jnp.ones(1, jnp.float16)}, "highest")


def test_tree_get_and_set_on_an_optimizer_state_match_optax():
    params = {"w": jnp.ones(3)}
    ours_state = gdopt.adam(0.1).init(params)
    ref_state = optax.adam(0.1).init(params)
    np.testing.assert_array_equal(
        gtree.get(ours_state, "count"), optax.tree.get(ref_state, "count")
    )
    np.testing.assert_array_equal(
        gtree.get(ours_state, "mu")["w"], optax.tree.get(ref_state, "mu")["w"]
    )
    assert gtree.get(ours_state, "nonexistent", default=7) == 7
    new = gtree.set(ours_state, count=jnp.array(5, jnp.int32))
    assert int(gtree.get(new, "count")) == 5
    assert jax.tree.structure(new) == jax.tree.structure(ours_state)
    # the NamedTuple class name finds the whole state
    adam_state = gtree.get(ours_state, "ScaleByAdamState")
    assert type(adam_state).__name__ == "ScaleByAdamState"
    with pytest.raises(KeyError, match="no values for keys"):
        gtree.set(ours_state, nonexistent=1.0)
    # several matches: a KeyError that names them, unless a filter picks one
    two = {"a": {"lr": 1.0}, "b": {"lr": 2.0}}
    with pytest.raises(KeyError, match="Found 2 values"):
        gtree.get(two, "lr")
    picked = gtree.get(two, "lr", filtering=lambda path, _: path[0].key == "b")
    assert picked == 2.0
    paths = [jax.tree_util.keystr(p) for p, _ in gtree.get_all_with_path(two, "lr")]
    assert paths == ["['a']['lr']", "['b']['lr']"]


def test_tree_named_tuple_key_names_the_state():
    state = gdopt.adam(0.1).init({"w": jnp.ones(1)})
    found = gtree.get_all_with_path(state, "nu")
    ((path, _),) = found
    assert isinstance(path[-1], gtree.NamedTupleKey) and path[-1].tuple_name == "ScaleByAdamState"


def test_non_array_leaves_get_no_state_or_a_message():
    params = {"w": jnp.ones(2), "act": jax.nn.relu, "name": "layer"}
    assert [gtree.is_array_leaf(x) for x in jax.tree.leaves(params)] == [False, False, True]
    gtree.check_float_leaves(params)  # the function and the string are skipped
    # gradients hold None where the params hold non-array leaves (eqx.filter_grad does so)
    gtree.check_same_structure({"w": jnp.ones(2), "act": None, "name": None}, params)
    opt = gdopt.sgd(0.5)
    updates, _ = opt.update({"w": jnp.ones(2), "act": None, "name": None}, opt.init(params), params)
    np.testing.assert_array_equal(updates["w"], [-0.5, -0.5])
    with pytest.raises(TypeError, match=r"params\['act'\] is a .*not an array.*eqx\.filter"):
        gdopt.adam(0.1).init(params)


# ----------------------------------------------------------------------------- map_params

_P = {"dense": {"w": jnp.arange(6.0).reshape(3, 2), "b": jnp.ones(2)}, "s": jnp.asarray(0.5)}
_G = jax.tree.map(lambda x: 0.1 * x + 0.2, _P)


def _to_bf16(x):
    return x.astype(jnp.bfloat16)


def _same_paths_and_leaves(ours, ref, case):
    """Equal key paths (``[0].mu['dense']['w']``), dtypes and values: gdopt's and optax's
    states are different classes with the same layout."""
    fa, fb = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (ours, ref))
    assert [jax.tree_util.keystr(p) for p, _ in fa] == [jax.tree_util.keystr(p) for p, _ in fb]
    _assert_same_tree([x for _, x in fa], [y for _, y in fb], case)


def _stepped(opt, params=_P, grads=_G):
    state = opt.init(params)
    return opt.update(grads, state, params)[1]


@pytest.mark.parametrize(
    ("case", "ours", "ref"),
    [
        ("adam", lambda: gdopt.adam(1e-2), lambda: optax.adam(1e-2)),
        ("sgd with momentum", lambda: gdopt.sgd(1e-2, 0.9), lambda: optax.sgd(1e-2, 0.9)),
        (
            "chain",
            lambda: gdopt.chain(gdopt.clip_by_global_norm(1.0), gdopt.scale_by_adam()),
            lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam()),
        ),
        (
            "injected",
            lambda: gdopt.inject_stateful_hyperparams(gdopt.adamw)(learning_rate=1e-2),
            lambda: optax.inject_hyperparams(optax.adamw)(learning_rate=1e-2),
        ),
    ],
)
def test_map_params_casts_a_state_like_optax(case, ours, ref):
    """bfloat16 copies of the parameter-shaped parts; the counters and hyperparameters are
    left alone (or marked by transform_non_params), as optax's tree_map_params does on
    optax's state of the same layout."""
    ours_opt = ours()
    state = _stepped(ours_opt)
    out = gtree.map_params(ours_opt, _to_bf16, state)
    marked = gtree.map_params(ours_opt, _to_bf16, state, transform_non_params=lambda _: -1)
    with oracle():
        ref_opt = ref()
        ref_state = _stepped(ref_opt)
        ref_out = optax.tree_utils.tree_map_params(ref_opt, _to_bf16, ref_state)
        ref_marked = optax.tree.map_params(
            ref_opt, _to_bf16, ref_state, transform_non_params=lambda _: -1
        )
    inner = lambda s: s.inner_state if isinstance(s, gdopt.HyperparamsState) else s  # noqa: E731
    assert jax.tree.structure(out) == jax.tree.structure(state)
    for a, b in ((out, ref_out), (marked, ref_marked)):
        if case == "injected":  # compare by field; gdopt's hyperparams is its checked dict
            _same_paths_and_leaves(a.inner_state, b.inner_state, case)
            _same_paths_and_leaves(dict(a.hyperparams), dict(b.hyperparams), case)
            _same_paths_and_leaves(a.hyperparams_states, b.hyperparams_states, case)
            _same_paths_and_leaves(a.count, b.count, case)
        else:
            _same_paths_and_leaves(inner(a), b, case)
    # the values are the state's, rounded to bfloat16; gdopt's hyperparameters are non-params
    for x, y in zip(jax.tree.leaves(inner(out)), jax.tree.leaves(inner(state)), strict=True):
        expected = y.astype(jnp.bfloat16) if jnp.issubdtype(y.dtype, jnp.floating) else y
        if x.dtype == jnp.bfloat16:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(expected))
        else:
            assert x.dtype == y.dtype
    if isinstance(out, gdopt.HyperparamsState):
        assert out.hyperparams["learning_rate"].dtype == jnp.float32
        assert set(marked.hyperparams.values()) == {-1}


def test_map_params_builds_specs_from_extra_trees():
    # optax's example: the state's copies of the params take the params' specs
    opt = gdopt.adam(1e-3)
    specs = {"dense": {"w": "rows", "b": None}, "s": "scalar"}
    out = gtree.map_params(
        opt, lambda _, spec: spec, opt.init(_P), specs, transform_non_params=lambda _: "other"
    )
    assert out[0].mu == specs and out[0].nu == specs and out[0].count == "other"
    assert set(out.hyperparams.values()) == {"other"}
    # an init function works like the optimizer; *rest leaves reach f one by one
    total = gtree.map_params(opt.init, lambda m, p, g: m + p + g, _stepped(opt), _P, _G)
    np.testing.assert_allclose(
        total[0].nu["dense"]["w"],
        _stepped(opt)[0].nu["dense"]["w"] + _P["dense"]["w"] + _G["dense"]["w"],
    )


def test_map_params_over_every_optimizer_state():
    """Every named optimizer's state: its init runs on the stand-in for the parameters
    and an identity f gives the state back unchanged (Adam: f sees mu and nu only)."""
    from tests.registry import NAMES, REGISTRY

    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
    for name in NAMES:
        opt = REGISTRY[name].make()
        state = opt.init(params)
        out = gtree.map_params(opt, lambda x: x, state)
        assert jax.tree.structure(out) == jax.tree.structure(state), name
        for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(state), strict=True):
            assert x is y, name
    adam_seen = []
    gtree.map_params(
        gdopt.adam(0.1), lambda x: adam_seen.append(x.shape), gdopt.adam(0.1).init(params)
    )
    assert adam_seen == [(2,), (3, 2), (2,), (3, 2)]  # mu and nu, nothing else


def test_map_params_is_leaf_and_masked_states():
    # is_leaf stops f at a subtree of the parameter-shaped parts
    params = {"pair": (jnp.ones(2), jnp.zeros(2)), "x": jnp.ones(3)}
    opt = gdopt.sgd(0.1, momentum=0.9)
    out = gtree.map_params(
        opt,
        lambda t: "pair" if isinstance(t, tuple) else "leaf",
        opt.init(params),
        is_leaf=lambda t: isinstance(t, tuple),
    )
    assert out[0].trace == {"pair": "pair", "x": "leaf"}
    # masked-out leaves have no state (None): f never sees them; optax's has MaskedNode there
    masked = gdopt.masked(gdopt.scale_by_adam(), {"pair": False, "x": True})
    out = gtree.map_params(masked, _to_bf16, masked.init(params))
    assert out.inner_state.mu["pair"] == (None, None)
    assert (
        out.inner_state.mu["x"].dtype == jnp.bfloat16 and out.inner_state.count.dtype == jnp.int32
    )
    with oracle():
        ref = optax.masked(optax.scale_by_adam(), {"pair": False, "x": True})
        ref_out = optax.tree.map_params(ref, _to_bf16, ref.init(params))
    _assert_same_tree(out.inner_state.nu["x"], ref_out.inner_state.nu["x"], "masked")
    # a partition by a pytree of labels: each group's moments cast, the others' None
    labels = {"pair": "A", "x": "B"}
    part = gdopt.partition({"A": gdopt.adam(1e-3), "B": gdopt.sgd(0.1, momentum=0.9)}, labels)
    out = gtree.map_params(part, _to_bf16, part.init(params))
    adam_state, trace_state = out.inner_states["A"][0], out.inner_states["B"][0]
    assert adam_state.mu["x"] is None and trace_state.trace["pair"] == (None, None)
    assert adam_state.count.dtype == jnp.int32
    with oracle():
        ref = optax.partition({"A": optax.adam(1e-3), "B": optax.sgd(0.1, momentum=0.9)}, labels)
        ref_out = optax.tree.map_params(ref, _to_bf16, ref.init(params))
    ref_a, ref_b = (
        ref_out.inner_states["A"].inner_state[0],
        ref_out.inner_states["B"].inner_state[0],
    )
    _assert_same_tree(adam_state.mu["pair"], ref_a.mu["pair"], "partition mu")
    _assert_same_tree(adam_state.nu["pair"], ref_a.nu["pair"], "partition nu")
    _assert_same_tree(trace_state.trace["x"], ref_b.trace["x"], "partition trace")


def test_map_params_bad_input_and_names():
    opt = gdopt.adam(1e-3)
    with pytest.raises(TypeError, match="initable must be an optimizer"):
        gtree.map_params(3.0, _to_bf16, opt.init(_P))
    with pytest.raises(ValueError, match="not a state of this optimizer"):
        gtree.map_params(gdopt.sgd(0.1, 0.9), _to_bf16, opt.init(_P))
    assert gdopt.tree_utils.tree_map_params is gtree.map_params
