"""``gdopt/combinators.py``: chain, named_chain, masked, partition / multi_transform, freeze,
selective_transform, and optax's other combinators (conditionals, skip predicates,
flatten, apply_every, the stateless builders): parity with optax (the oracle runs under ``oracle()``), state memory,
and errors that name key paths."""

from __future__ import annotations

import functools

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
GRADS = gradient_sequence(PARAMS, steps=100)
LABELS = {"dense": {"w": "adam", "b": "sgd"}, "layers": ["adam", "sgd"], "scale": "sgd"}


def _n_elements(tree):
    return sum(np.size(x) for x in jax.tree.leaves(tree))


def _optax_trajectory(make, params=PARAMS, grads=GRADS):
    """The trajectory of the optax transformation ``make()`` (the oracle)."""
    with oracle():
        return run_trajectory(make(), params, grads)


def test_named_chain_parity_and_state():
    ours = gdopt.named_chain(("clip", gdopt.clip_by_global_norm(1.0)), ("opt", gdopt.adam(0.01)))
    ref = lambda: optax.named_chain(
        ("clip", optax.clip_by_global_norm(1.0)), ("opt", optax.adam(0.01))
    )
    assert_trajectories_close(run_trajectory(ours, PARAMS, GRADS), _optax_trajectory(ref))
    state = ours.init(PARAMS)
    assert list(state) == ["clip", "opt"]
    assert gdopt.get_hyperparams(state["opt"])["learning_rate"] == pytest.approx(0.01)


def test_named_chain_errors():
    with pytest.raises(ValueError, match="unique"):
        gdopt.named_chain(("a", gdopt.scale(1.0)), ("a", gdopt.scale(2.0)))
    with pytest.raises(TypeError, match="pair"):
        gdopt.named_chain(gdopt.scale(1.0))
    with pytest.raises(TypeError, match="gdopt.adam instead of"):
        gdopt.named_chain(("a", gdopt.adam))
    t = gdopt.named_chain(("a", gdopt.scale(1.0)))
    with pytest.raises(ValueError, match=r"\['a'\]"):
        t.update(PARAMS, {"b": ()})


@pytest.mark.parametrize("as_function", [False, True])
def test_partition_parity_with_optax(as_function):
    labels = (lambda p: LABELS) if as_function else LABELS
    ours = gdopt.partition({"adam": gdopt.adam(0.01), "sgd": gdopt.sgd(0.1, momentum=0.9)}, labels)
    ref = lambda: optax.partition(
        {"adam": optax.adam(0.01), "sgd": optax.sgd(0.1, momentum=0.9)}, labels
    )
    assert_trajectories_close(run_trajectory(ours, PARAMS, GRADS), _optax_trajectory(ref))
    # multi_transform is the same function under optax's older name
    alias = gdopt.multi_transform({"adam": gdopt.adam(0.01), "sgd": gdopt.sgd(0.1)}, labels)
    part = gdopt.partition({"adam": gdopt.adam(0.01), "sgd": gdopt.sgd(0.1)}, labels)
    ua, _ = alias.update(GRADS[0], alias.init(PARAMS), PARAMS)
    up, _ = part.update(GRADS[0], part.init(PARAMS), PARAMS)
    for a, b in zip(jax.tree.leaves(ua), jax.tree.leaves(up), strict=True):
        np.testing.assert_array_equal(a, b)


def _split(tree, keep):
    """The sub-tree of leaves labelled ``keep`` (others dropped), as a flat list."""
    leaves = jax.tree.leaves(tree)
    labels = jax.tree.leaves(LABELS)
    return [x for x, lab in zip(leaves, labels, strict=True) if lab == keep]


def test_partition_equals_separate_runs_and_keeps_no_foreign_state():
    opt = gdopt.partition({"adam": gdopt.adam(0.01), "sgd": gdopt.sgd(0.1)}, LABELS)
    traj = run_trajectory(opt, PARAMS, GRADS[:30])
    for label, inner in (("adam", gdopt.adam(0.01)), ("sgd", gdopt.sgd(0.1))):
        sep = run_trajectory(inner, _split(PARAMS, label), [_split(g, label) for g in GRADS[:30]])
        assert_trajectories_close([_split(p, label) for p in traj], sep)
    # each group's state is sized for its own parameters only
    state = opt.init(PARAMS)
    adam_alone = gdopt.adam(0.01).init(_split(PARAMS, "adam"))
    assert _n_elements(state.inner_states["adam"]) == _n_elements(adam_alone)
    assert _n_elements(state.inner_states["sgd"]) == _n_elements(gdopt.sgd(0.1).init([]))


def test_partition_prefix_labels():
    opt = gdopt.partition(
        {"a": gdopt.sgd(1.0), "b": gdopt.sgd(0.0 + 1e-3)},
        {"dense": "a", "layers": "b", "scale": "a"},
    )
    u, _ = opt.update(GRADS[0], opt.init(PARAMS), PARAMS)
    np.testing.assert_allclose(u["dense"]["w"], -GRADS[0]["dense"]["w"], rtol=1e-6)
    np.testing.assert_allclose(u["layers"][1], -1e-3 * GRADS[0]["layers"][1], rtol=1e-6)


def test_partition_errors_name_the_key_path_and_label():
    bad = {"dense": {"w": "adam", "b": "sgdd"}, "layers": ["adam", "sgd"], "scale": "sgd"}
    opt = gdopt.partition({"adam": gdopt.adam(0.1), "sgd": gdopt.sgd(0.1)}, bad)
    with pytest.raises(ValueError, match=r"\['dense'\]\['b'\].*'sgdd'.*'adam', 'sgd'"):
        opt.init(PARAMS)
    wrong = {"dense": {"w": "adam", "bias": "sgd"}, "layers": ["adam", "sgd"], "scale": "sgd"}
    opt = gdopt.partition({"adam": gdopt.adam(0.1), "sgd": gdopt.sgd(0.1)}, wrong)
    with pytest.raises(ValueError, match=r"param_labels.*\['dense'\]\['b"):
        opt.init(PARAMS)
    with pytest.raises(TypeError, match="not hashable"):
        gdopt.partition(
            {"a": gdopt.sgd(0.1)}, lambda p: jax.tree.map(lambda x: np.zeros(1), p)
        ).init(PARAMS)
    with pytest.raises(TypeError, match="mapping"):
        gdopt.partition([gdopt.sgd(0.1)], "a")
    with pytest.raises(TypeError, match=r"transforms\['a'\]"):
        gdopt.partition({"a": gdopt.sgd}, "a")


def test_masked_mask_forms_and_errors():
    mask = {"dense": {"w": True, "b": False}, "layers": [True, False], "scale": False}
    for m in (mask, lambda p: mask):
        t = gdopt.masked(gdopt.scale(-2.0), m)
        u, _ = t.update(GRADS[0], t.init(PARAMS), PARAMS)
        np.testing.assert_allclose(u["dense"]["w"], -2.0 * GRADS[0]["dense"]["w"])
        np.testing.assert_allclose(u["dense"]["b"], GRADS[0]["dense"]["b"])
        np.testing.assert_allclose(u["layers"][0], -2.0 * GRADS[0]["layers"][0])
    ours = gdopt.chain(gdopt.masked(gdopt.scale_by_adam(), mask), gdopt.sgd(0.05))
    ref = lambda: optax.chain(optax.masked(optax.scale_by_adam(), mask), optax.sgd(0.05))
    assert_trajectories_close(run_trajectory(ours, PARAMS, GRADS), _optax_trajectory(ref))
    with pytest.raises(ValueError, match=r"\['dense'\]"):
        gdopt.masked(
            gdopt.scale(1.0), {"dense": {"w": True}, "layers": [True, True], "scale": True}
        ).init(PARAMS)
    with pytest.raises(TypeError, match=r"mask must hold Python bools.*\['dense'\]\['b'\]"):
        gdopt.masked(gdopt.scale(1.0), jax.tree.map(lambda x: x, PARAMS)).init(PARAMS)


def test_freeze_zeroes_and_keeps_no_state():
    mask = {"dense": True, "layers": [False, True], "scale": False}
    t = gdopt.freeze(mask)
    state = t.init(PARAMS)
    assert jax.tree.leaves(state) == []
    ours = gdopt.chain(gdopt.freeze(mask), gdopt.adam(0.01))
    ref = lambda: optax.chain(optax.freeze(mask), optax.adam(0.01))
    traj = run_trajectory(ours, PARAMS, GRADS)
    assert_trajectories_close(traj, _optax_trajectory(ref))
    np.testing.assert_array_equal(traj[-1]["dense"]["w"], PARAMS["dense"]["w"])
    np.testing.assert_array_equal(traj[-1]["layers"][1], PARAMS["layers"][1])


def test_selective_transform_frozen_leaves_keep_no_state():
    freeze_mask = {"dense": {"w": True, "b": False}, "layers": [True, False], "scale": False}
    opt = gdopt.selective_transform(gdopt.adam(0.01), freeze_mask=freeze_mask)
    ref = lambda: optax.selective_transform(optax.adam(0.01), freeze_mask=freeze_mask)
    traj = run_trajectory(opt, PARAMS, GRADS[:30])
    assert_trajectories_close(traj, _optax_trajectory(ref, grads=GRADS[:30]))
    np.testing.assert_array_equal(traj[-1]["dense"]["w"], PARAMS["dense"]["w"])
    np.testing.assert_array_equal(traj[-1]["layers"][0], PARAMS["layers"][0])
    trainable = [PARAMS["dense"]["b"], PARAMS["layers"][1], PARAMS["scale"]]
    sep = run_trajectory(
        gdopt.adam(0.01),
        trainable,
        [[g["dense"]["b"], g["layers"][1], g["scale"]] for g in GRADS[:30]],
    )
    assert_trajectories_close([[p["dense"]["b"], p["layers"][1], p["scale"]] for p in traj], sep)
    # the optimizer's state holds exactly what Adam needs for the trainable leaves
    state = opt.init(PARAMS)
    assert _n_elements(state) == _n_elements(gdopt.adam(0.01).init(trainable))
    frozen_size = PARAMS["dense"]["w"].size + PARAMS["layers"][0].size
    assert _n_elements(gdopt.adam(0.01).init(PARAMS)) - _n_elements(state) == 2 * frozen_size


def test_masked_inner_sees_none_for_other_leaves():
    """The inner transformation gets None at masked-out leaves, at init and at update."""
    seen = {}

    def init(params):
        seen["init"] = params
        return ()

    def update(updates, state, params=None, **extra):
        seen["update"] = (updates, params)
        return updates, state

    t = gdopt.masked(
        gdopt.GradientTransformation(init, update), {"dense": False, "layers": True, "scale": False}
    )
    t.update(GRADS[0], t.init(PARAMS), PARAMS)
    for tree in (seen["init"], *seen["update"]):
        assert tree["dense"]["w"] is None and tree["scale"] is None
        assert tree["layers"][0].shape == (5,)


# ----------------------------------------------------------------------------- optax's other combinators

_OPTAX_PARAMS = make_params()
_OPTAX_GRADS = gradient_sequence(_OPTAX_PARAMS, 8)

# (case, gdopt factory, optax factory): 8 steps, the same parameters after each.
CASES = [
    (
        "conditionally_transform",
        lambda lib: lib.conditionally_transform(lib.scale(3.0), lambda step: step % 3 == 1),
    ),
    (
        "conditionally_mask",
        lambda lib: lib.conditionally_mask(lib.trace(0.9), lambda step: step >= 2),
    ),
    ("flatten", lambda lib: lib.flatten(lib.scale_by_adam())),
    ("apply_every", lambda lib: lib.apply_every(3)),
    ("normalize_by_update_norm", lambda lib: lib.normalize_by_update_norm(0.5)),
    ("stateless", lambda lib: lib.stateless(lambda u, p: jax.tree.map(lambda g, x: g * x, u, p))),
    ("stateless_with_tree_map", lambda lib: lib.stateless_with_tree_map(lambda g, p: g - p)),
    ("with_extra_args_support", lambda lib: lib.with_extra_args_support(lib.scale(2.0))),
]


@pytest.mark.parametrize(("case", "build"), CASES, ids=[c[0] for c in CASES])
def test_combinators_match_optax(case, build):
    ours = run_trajectory(build(gdopt), _OPTAX_PARAMS, _OPTAX_GRADS)
    with oracle():
        ref = run_trajectory(build(optax), _OPTAX_PARAMS, _OPTAX_GRADS, apply=optax.apply_updates)
    for a, b in zip(ours, ref, strict=True):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=case)


def test_transforms_namespace_has_the_conditionals():
    assert gdopt.transforms.conditionally_mask is gdopt.conditionally_mask
    assert gdopt.transforms.chain is gdopt.chain
    assert gdopt.transforms.MultiSteps is gdopt.MultiSteps


def test_skip_functions_match_optax_and_drive_multisteps():
    bad = {"w": jnp.array([1.0, jnp.nan, jnp.inf])}
    for fn in [
        gdopt.skip_not_finite,
        functools.partial(gdopt.skip_large_updates, max_squared_norm=1.0),
    ]:
        name = getattr(fn, "func", fn).__name__
        ref_fn = getattr(optax, name)
        if isinstance(fn, functools.partial):
            ref_fn = functools.partial(ref_fn, **fn.keywords)
        for updates in (bad, {"w": jnp.array([0.1, 0.2])}, {"w": jnp.array([3.0, 4.0])}):
            skip, aux = fn(updates, jnp.array(0), None)
            with oracle():
                ref_skip, ref_aux = ref_fn(updates, jnp.array(0), None)
            assert bool(skip) == bool(ref_skip), (name, updates)
            assert sorted(aux) == sorted(ref_aux)
            for k in aux:
                np.testing.assert_array_equal(aux[k], ref_aux[k])
    opt = gdopt.MultiSteps(gdopt.sgd(1.0), 2, should_skip_update_fn=gdopt.skip_not_finite)
    params = {"w": jnp.zeros(3)}
    state = opt.init(params)
    updates, state = opt.update(bad, state, params)
    assert float(jnp.abs(updates["w"]).sum()) == 0.0
