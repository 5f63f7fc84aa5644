"""``gdopt/hyperparams.py``: hyperparameters held in the state.

* ``get_hyperparams``/``set_hyperparams`` (several optimizers in one state, unknown names),
  schedules evaluated at the step and recorded, no recompilation when a value changes, weakly
  typed inputs, traced values never inspected, ``vmap`` over several hyperparameters;
* ``HyperparamsState`` reads like optax's state (indexing, ``len``, iteration, attributes,
  ``_replace``, copies, pickling, key paths);
* ``Hyperparams`` writes: validated with the constructor's message, stored in the entry's
  dtype and shape, no new names, no deletions;
* ``inject_hyperparams`` over a named optimizer and over a user factory (oracle: optax's),
  ``with_hyperparams``, ``rebuild_with_hyperparams``, a named optimizer given a bare chain
  state, and the legacy ``named_optimizer(build, **values)`` form;
* ``inject_stateful_hyperparams`` with step schedules (``WrappedSchedule``) and a stateful
  schedule driven by the loss (oracle: optax's, state field by field, jitted), under
  ``lax.scan`` and ``fit``.

(Every optimizer's ``get_hyperparams``, ``set_hyperparams`` and ``vmap`` over its learning rate:
``tests/test_optimizers.py``.)
"""

from __future__ import annotations

import copy
import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdopt
from gdopt.problems import ill_conditioned_quadratic
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    oracle,
    run_trajectory,
)

# make_params' 0-D leaf is weakly typed: strip it, the state would otherwise change type.
PARAMS = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), make_params())
GRADS = gradient_sequence(PARAMS, steps=20)
P2 = {"w": jnp.array([1.0, -2.0])}
G2 = {"w": jnp.array([0.5, 0.25])}


def parabola(x):
    return 2.0 * ill_conditioned_quadratic(jnp.ravel(x) - 1.0, 1.0)


def error_of(make):
    with pytest.raises((ValueError, TypeError)) as e:
        make()
    return e.type, str(e.value)


def paths(tree) -> list[str]:
    return [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def node_types(tree) -> list[str]:
    """The class names of the NamedTuples in ``tree``, depth first (EmptyState included)."""
    out = []

    def visit(x):
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            out.append(type(x).__name__)
        if isinstance(x, (tuple, list)):
            for v in x:
                visit(v)
        elif isinstance(x, dict):
            for k in sorted(x):
                visit(x[k])

    visit(tree)
    return out


# ----------------------------------------------------------------------------- get / set


def test_get_and_set_hyperparams():
    opt = gdopt.adam(1e-3, b1=0.8)
    s = opt.init(P2)
    hp = gdopt.get_hyperparams(s)
    assert sorted(hp) == ["b1", "b2", "eps", "eps_root", "learning_rate"]
    assert float(hp["learning_rate"]) == pytest.approx(1e-3)
    assert float(hp["b1"]) == pytest.approx(0.8)
    s2 = gdopt.set_hyperparams(s, learning_rate=0.5)
    u, _ = opt.update({"w": jnp.ones(2)}, s2, P2)
    np.testing.assert_allclose(u["w"], -0.5, rtol=1e-5)
    assert float(gdopt.get_hyperparams(s)["learning_rate"]) == pytest.approx(1e-3)  # a copy
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['lr'\]"):
        gdopt.set_hyperparams(s, lr=1.0)
    with pytest.raises(ValueError, match="no hyperparameters"):
        gdopt.get_hyperparams(gdopt.scale(1.0).init(P2))


def test_set_hyperparams_changes_a_jitted_step_without_retracing():
    traces = []
    opt = gdopt.adam(0.1)

    def step(g, s, p):
        traces.append(1)
        return opt.update(g, s, p)

    step = jax.jit(step)
    s = opt.init(PARAMS)
    u1, _ = step(GRADS[0], s, PARAMS)
    s = gdopt.set_hyperparams(s, learning_rate=0.01)
    u2, s2 = step(GRADS[0], s, PARAMS)
    assert len(traces) == 1 and step._cache_size() == 1
    np.testing.assert_allclose(u2["dense"]["w"], 0.1 * u1["dense"]["w"], rtol=1e-5)
    assert float(gdopt.get_hyperparams(s2)["learning_rate"]) == pytest.approx(0.01)


def test_get_hyperparams_of_several_optimizers():
    opt = gdopt.partition(
        {"a": gdopt.adam(0.01), "b": gdopt.sgd(0.5)}, {"dense": "a", "layers": "b", "scale": "b"}
    )
    hp = gdopt.get_hyperparams(opt.init(PARAMS))
    assert sorted(hp) == [".inner_states['a']", ".inner_states['b']"]
    values = sorted(float(v["learning_rate"]) for v in hp.values())
    assert values == pytest.approx([0.01, 0.5])
    state = gdopt.set_hyperparams(opt.init(PARAMS), learning_rate=0.2, b1=0.5)
    assert all(
        float(v["learning_rate"]) == pytest.approx(0.2)
        for v in gdopt.get_hyperparams(state).values()
    )
    assert float(gdopt.get_hyperparams(state)[".inner_states['a']"]["b1"]) == 0.5


def test_new_array_learning_rate_does_not_recompile():
    params = {"w": jnp.ones(4)}
    grads = {"w": jnp.ones(4)}
    traces = []

    @jax.jit
    def step(lr, params, grads):
        traces.append(1)
        opt = gdopt.adam(lr)
        u, _ = opt.update(grads, opt.init(params), params)
        return gdopt.apply_updates(params, u)

    a = step(jnp.asarray(1e-3), params, grads)
    b = step(jnp.asarray(2e-3), params, grads)
    assert len(traces) == 1
    assert step._cache_size() == 1
    assert not np.allclose(a["w"], b["w"])


def test_weakly_typed_params_give_a_stable_state_type():
    opt = gdopt.adam(0.1)
    p = {"w": jnp.asarray(0.5)}  # weakly typed
    s = opt.init(p)
    assert not any(getattr(x, "weak_type", False) for x in jax.tree.leaves(s))
    step = jax.jit(lambda s: opt.update({"w": jnp.ones((), jnp.float32)}, s, p)[1])
    s = step(step(s))
    assert step._cache_size() == 1


def test_traced_hyperparameters_are_not_inspected():
    # Under jit the learning rate is a tracer: validation must be skipped, not crash.
    @jax.jit
    def first_update(lr):
        opt = gdopt.adam(lr, b1=lr * 0 + 0.9)
        p = {"w": jnp.ones(3)}
        return opt.update({"w": jnp.ones(3)}, opt.init(p), p)[0]["w"]

    np.testing.assert_allclose(first_update(0.1), -0.1 * jnp.ones(3), rtol=1e-5)
    np.testing.assert_allclose(first_update(-0.1), 0.1 * jnp.ones(3), rtol=1e-5)


# ----------------------------------------------------------------------------- schedules


def test_schedule_is_evaluated_and_recorded():
    opt = gdopt.sgd(gdopt.linear_schedule(1.0, 0.0, 4))
    p = {"w": jnp.zeros(())}
    s = opt.init(p)
    assert float(gdopt.get_hyperparams(s)["learning_rate"]) == 1.0  # step 0's value at init
    seen = []
    for _ in range(5):
        u, s = opt.update({"w": jnp.ones(())}, s, p)
        seen.append(-float(u["w"]))
        assert float(gdopt.get_hyperparams(s)["learning_rate"]) == pytest.approx(seen[-1])
    np.testing.assert_allclose(seen, [1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-7)
    assert int(s.hyperparams_count) == 5


SCHEDULED = {
    "adamw": (
        gdopt.adamw,
        {
            "learning_rate": gdopt.linear_schedule(1.0, 0.0, 10),
            "weight_decay": gdopt.exponential_decay(0.5, 1, 0.5),
        },
    ),
    "ademamix": (
        gdopt.ademamix,
        {
            "learning_rate": 0.1,
            "b3": gdopt.ademamix_beta3_scheduler(0.9, 0.999, 10),
            "alpha": gdopt.ademamix_alpha_scheduler(5.0, 10),
        },
    ),
    "polyak_sgd": (gdopt.polyak_sgd, {"scaling": gdopt.linear_schedule(1.0, 0.5, 10)}),
}


@pytest.mark.parametrize("name", sorted(SCHEDULED))
def test_get_hyperparams_evaluates_schedules_at_the_step(name):
    """After ``k`` updates a schedule shows the value the latest update used, ``f(k - 1)``
    (at init: ``f(0)``); constants stay as given."""
    factory, kwargs = SCHEDULED[name]
    opt = factory(**kwargs)
    x = jnp.zeros(2)
    state = opt.init(x)
    update = jax.jit(lambda g, s, x, v: opt.update(g, s, x, value=v))
    for step in range(4):
        if step:
            value, grad = jax.value_and_grad(parabola)(x)
            _, state = update(grad, state, x, value)
        held = gdopt.get_hyperparams(state)
        for k, v in kwargs.items():
            expected = v(jnp.asarray(max(step - 1, 0), jnp.int32)) if callable(v) else v
            np.testing.assert_allclose(
                np.asarray(held[k], np.float32),
                np.asarray(expected, np.float32),
                rtol=1e-6,
                err_msg=f"{name}.{k} after {step} updates",
            )


VMAP_CASES = {
    "adamw": (
        gdopt.adamw,
        {
            "learning_rate": [0.1, 0.01, 0.003],
            "b1": [0.9, 0.5, 0.0],
            "weight_decay": [0.0, 0.1, 1.0],
        },
    ),
    "sgd": (gdopt.sgd, {"learning_rate": [0.1, 0.01, 0.003], "momentum": [0.9, 0.5, 0.0]}),
}


@pytest.mark.parametrize("name", sorted(VMAP_CASES))
def test_vmap_over_several_hyperparameters_needs_no_wrapper(name):
    make, grid = VMAP_CASES[name]
    stacked = jax.tree.map(lambda *g: jnp.stack(g), *GRADS[:6])

    def final(hyper):
        opt = make(**hyper)

        def body(carry, g):
            p, state = carry
            updates, state = opt.update(g, state, p)
            return (gdopt.apply_updates(p, updates), state), None

        return jax.lax.scan(body, (PARAMS, opt.init(PARAMS)), stacked)[0][0]

    arrays = {k: jnp.asarray(v, jnp.float32) for k, v in grid.items()}
    swept = jax.jit(jax.vmap(final))(arrays)
    single = jax.jit(final)
    for i in range(3):
        one = single({k: float(np.float32(v[i])) for k, v in grid.items()})
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(swept)[0], jax.tree.leaves(one), strict=True
        ):
            np.testing.assert_allclose(
                np.asarray(a[i]),
                np.asarray(b),
                rtol=2e-6,
                atol=1e-7,
                err_msg=f"{name}, hyperparameters #{i}, leaf {jax.tree_util.keystr(path)}",
            )
    first = jax.tree.leaves(swept)[0]
    assert not np.allclose(first[0], first[1])  # the sweep really varied something


# ----------------------------------------------------------------------------- the state


def test_hyperparams_state_reads_like_optax_state():
    ours = gdopt.adam(1e-3).init(P2)
    with oracle():
        theirs = optax.adam(1e-3).init(P2)
    assert isinstance(ours, gdopt.HyperparamsState)
    assert len(ours) == len(theirs) == 2
    assert [type(x).__name__ for x in ours] == [type(x).__name__ for x in theirs]
    assert ours[0] is ours.inner_state[0] and ours[-1] == gdopt.EmptyState()
    assert ours[:1] == ours.inner_state[:1]
    np.testing.assert_array_equal(ours[0].mu["w"], theirs[0].mu["w"])
    assert ours[0].count.dtype == theirs[0].count.dtype
    with pytest.raises(AttributeError):
        ours.mu  # noqa: B018 - the inner state is a tuple: no such attribute
    with pytest.raises(AttributeError, match="immutable"):
        ours.inner_state = ()
    # the key paths are optax's, plus the values
    assert paths(ours) == paths(theirs) + [
        f".hyperparams['{k}']" for k in ("b1", "b2", "eps", "eps_root", "learning_rate")
    ]
    scheduled = gdopt.adam(gdopt.linear_schedule(1e-3, 0.0, 10)).init(P2)
    assert paths(scheduled)[-1] == ".hyperparams_count"


@gdopt.named_optimizer
def adam_moments(b1: gdopt.Decay = 0.9):
    """A named optimizer whose body is one transform: its inner state is a NamedTuple."""
    return gdopt.scale_by_adam(b1=b1)


def test_attributes_and_replace_go_to_the_inner_state():
    s = adam_moments().init(P2)
    assert type(s.inner_state).__name__ == "ScaleByAdamState"
    assert s.mu is s.inner_state.mu and int(s.count) == 0  # attribute delegation
    assert paths(s) == [".count", ".mu['w']", ".nu['w']", ".hyperparams['b1']"]
    moved = s._replace(mu={"w": jnp.full(2, 3.0)})
    assert isinstance(moved, gdopt.HyperparamsState) and moved.hyperparams is s.hyperparams
    np.testing.assert_array_equal(moved.mu["w"], 3.0)
    np.testing.assert_array_equal(s.mu["w"], 0.0)  # the original is unchanged
    hp = s.hyperparams.replace({"b1": jnp.asarray(0.5)})
    assert float(s._replace(hyperparams=hp).hyperparams["b1"]) == 0.5
    other = s._replace(inner_state=s.inner_state._replace(count=jnp.asarray(7, jnp.int32)))
    assert int(other.count) == 7


@pytest.mark.parametrize(
    "roundtrip",
    [copy.deepcopy, lambda s: pickle.loads(pickle.dumps(s))],
    ids=["deepcopy", "pickle"],
)
def test_state_copies_and_pickles(roundtrip):
    opt = gdopt.adam(gdopt.linear_schedule(1e-2, 0.0, 10), b1=0.8)
    s = opt.update(G2, opt.init(P2), P2)[1]
    back = roundtrip(s)
    assert isinstance(back, gdopt.HyperparamsState)
    assert jax.tree.structure(back) == jax.tree.structure(s)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(s), strict=True):
        np.testing.assert_array_equal(a, b)
    assert type(back.hyperparams) is gdopt.Hyperparams
    with pytest.raises(ValueError, match=re.escape("b1 must be a finite number in [0, 1)")):
        back.hyperparams["b1"] = 1.5  # the constraints came along
    u1, _ = opt.update(G2, s, P2)
    u2, _ = opt.update(G2, back, P2)
    np.testing.assert_array_equal(u1["w"], u2["w"])


# ----------------------------------------------------------------------------- writes


@pytest.mark.parametrize(
    "name,bad",
    [("b1", 1.5), ("b2", -0.1), ("learning_rate", -1.0), ("learning_rate", True), ("eps", np.nan)],
)
def test_writes_are_checked_with_the_constructor_message(name, bad):
    kind, message = error_of(lambda: gdopt.adam(**{"learning_rate": 1e-3, name: bad}))
    assert name in message
    s = gdopt.adam(1e-3).init(P2)
    before = s.hyperparams[name]
    with pytest.raises(kind, match=re.escape(message)):
        s.hyperparams[name] = bad
    with pytest.raises(kind, match=re.escape(message)):
        s.hyperparams.update({name: bad})
    with pytest.raises(kind, match=re.escape(message)):
        gdopt.set_hyperparams(s, **{name: bad})
    assert s.hyperparams[name] is before
    # still checked after a trip through jit (the constraints are static data of the pytree)
    back = jax.jit(lambda s: s)(s)
    with pytest.raises(kind, match=re.escape(message)):
        back.hyperparams[name] = bad


def test_writes_keep_the_entry_dtype_and_shape_and_do_not_recompile():
    opt = gdopt.sgd(0.1)
    s = opt.init(P2)
    step = jax.jit(lambda s: opt.update(G2, s, P2)[0])
    u1 = step(s)
    for value in (0.3, np.float64(0.3), jnp.asarray(0.3, jnp.float16), 1, np.asarray([0.3])):
        s.hyperparams["learning_rate"] = value
        stored = s.hyperparams["learning_rate"]
        assert stored.dtype == jnp.float32 and stored.shape == () and not stored.weak_type
        u = step(s)
        np.testing.assert_allclose(u["w"], float(stored) / 0.1 * u1["w"], rtol=1e-2)
    assert step._cache_size() == 1
    with pytest.raises(ValueError, match=r"of shape \(\) cannot take a value of shape \(2,\)"):
        s.hyperparams["learning_rate"] = jnp.ones(2)
    # a vector-valued hyperparameter keeps its shape
    v = gdopt.with_hyperparams(lambda w: gdopt.scale(w), {"w": jnp.ones(3)}).init(jnp.zeros(3))
    v.hyperparams["w"] = (1.0, 2.0, 3.0)
    assert v.hyperparams["w"].shape == (3,) and v.hyperparams["w"].tolist() == [1.0, 2.0, 3.0]


def test_new_names_and_deletions_are_refused():
    h = gdopt.adam(1e-3).init(P2).hyperparams
    with pytest.raises(KeyError, match=r"unknown hyperparameter 'lr'; this optimizer holds \["):
        h["lr"] = 0.1
    with pytest.raises(KeyError, match="unknown hyperparameter 'lr'"):
        h.update(lr=0.1)
    with pytest.raises(KeyError, match="unknown hyperparameter 'lr'"):
        h.setdefault("lr", 0.1)
    for remove in (lambda: h.pop("b1"), h.popitem, h.clear, lambda: h.__delitem__("b1")):
        with pytest.raises(TypeError, match="cannot be removed"):
            remove()
    assert sorted(h) == ["b1", "b2", "eps", "eps_root", "learning_rate"]


# ----------------------------------------------------------------------------- inject


def test_inject_hyperparams_over_a_named_optimizer_is_optax_inject():
    """Schedules advance as optax's do, writes to ``state.hyperparams`` take effect, and the
    inner state has optax's chain layout."""
    kwargs = dict(learning_rate=0.05, b1=0.8)
    ours_opt = gdopt.inject_hyperparams(gdopt.adamw)(
        weight_decay=gdopt.linear_schedule(0.5, 0.0, 8), **kwargs
    )
    ours = ours_opt.init(PARAMS)
    with oracle():
        ref_opt = optax.inject_hyperparams(optax.adamw)(
            weight_decay=optax.linear_schedule(0.5, 0.0, 8), **kwargs
        )
        ref = ref_opt.init(PARAMS)
    assert isinstance(ours, gdopt.InjectHyperparamsState)
    assert node_types(ours.inner_state) == node_types(ref.inner_state)
    assert paths(ours.inner_state) == paths(ref.inner_state)
    assert sorted(ours.hyperparams) == sorted(ref.hyperparams)
    p, q = PARAMS, PARAMS
    for i, g in enumerate(GRADS[:8]):
        if i == 4:  # a write, on both sides
            ours.hyperparams["learning_rate"] = 0.01
            ref.hyperparams["learning_rate"] = jnp.asarray(0.01)
        u, ours = ours_opt.update(g, ours, p)
        p = gdopt.apply_updates(p, u)
        with oracle():
            v, ref = ref_opt.update(g, ref, q)
            q = optax.apply_updates(q, v)
        assert_trajectories_close([p], [q], rtol=1e-5, atol=1e-6)
        for k in ("learning_rate", "weight_decay", "b1"):
            np.testing.assert_allclose(
                float(ours.hyperparams[k]), float(ref.hyperparams[k]), rtol=1e-6, err_msg=k
            )
    assert float(ours.hyperparams["weight_decay"]) == pytest.approx(0.5 * (1 - 7 / 8))
    assert int(ours.count) == 8


def optax_free_sgd(learning_rate, momentum=None):
    """A user factory: only gdopt pieces."""
    return gdopt.chain(
        gdopt.trace(momentum) if momentum is not None else gdopt.identity(),
        gdopt.scale(-learning_rate),
    )


def test_inject_hyperparams_over_a_user_factory_equals_optax():
    ours = gdopt.inject_hyperparams(optax_free_sgd)(
        learning_rate=gdopt.linear_schedule(0.1, 0.01, 50), momentum=0.5
    )
    with oracle():
        ref = optax.inject_hyperparams(optax.sgd)(
            learning_rate=optax.linear_schedule(0.1, 0.01, 50), momentum=0.5
        )
        expected = run_trajectory(ref, PARAMS, GRADS)
    assert_trajectories_close(run_trajectory(ours, PARAMS, GRADS), expected)
    s = ours.init(PARAMS)
    for g in GRADS[:3]:
        _, s = ours.update(g, s, PARAMS)
    assert float(gdopt.get_hyperparams(s)["learning_rate"]) == pytest.approx(0.1 - 0.09 * 2 / 50)
    assert sorted(s.hyperparams) == ["learning_rate", "momentum"]


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_inject_takes_schedules_reaching_zero_and_for_any_numeric_argument(jit):
    """optax's getting-started cases: a warm-up from a learning rate of 0 (a schedule's values
    are not checked as constants, neither at step 0 nor when an eager step rebuilds the
    transformation), and a schedule for clip_by_global_norm's max_norm, whose factory itself
    takes no schedule; both as optax's."""

    def build(lib):
        warm = lib.warmup_cosine_decay_schedule(0.0, 0.1, 5, 20, end_value=0.0)
        clip = lib.inject_hyperparams(lib.clip_by_global_norm)(
            max_norm=lib.linear_schedule(1.0, 0.0, transition_steps=10)
        )
        return lib.chain(clip, lib.inject_hyperparams(lib.adamw)(learning_rate=warm))

    ours = run_trajectory(build(gdopt), PARAMS, GRADS, jit=jit)
    with oracle():
        ref = run_trajectory(build(optax), PARAMS, GRADS, apply=optax.apply_updates, jit=jit)
    assert_trajectories_close(ours, ref, rtol=1e-6, atol=1e-7)
    # a constant is still checked
    with pytest.raises(ValueError, match="learning_rate must be a finite number in"):
        gdopt.inject_hyperparams(gdopt.adamw)(learning_rate=-0.1)
    with pytest.raises(TypeError, match="max_norm must be"):
        gdopt.inject_hyperparams(gdopt.clip_by_global_norm)(max_norm="1")


def clipped_sgd(learning_rate, momentum=0.5):
    """A user factory that builds a named optimizer inside."""
    return gdopt.chain(gdopt.clip(1.0), gdopt.sgd(learning_rate, momentum=momentum))


def test_inject_over_a_factory_with_a_named_optimizer_inside_uses_the_injected_values():
    opt = gdopt.inject_hyperparams(clipped_sgd)(learning_rate=0.1)
    g = {"w": jnp.array([3.0, -0.5])}
    s = opt.init(P2)
    # the inner named optimizer's part of the state is its chain's, without values of its own
    assert not any(
        isinstance(x, gdopt.HyperparamsState)
        for x in jax.tree.leaves(
            s.inner_state, is_leaf=lambda x: isinstance(x, gdopt.HyperparamsState)
        )
    )
    assert node_types(s.inner_state) == ["EmptyState", "TraceState", "EmptyState"]
    assert sorted(gdopt.get_hyperparams(s)) == ["learning_rate", "momentum"]
    s.hyperparams["learning_rate"] = 0.01  # not the 0.1 the inner sgd was built with at init
    s.hyperparams["momentum"] = 0.0
    u, s = opt.update(g, s, P2)
    np.testing.assert_allclose(u["w"], [-0.01, 0.005], rtol=1e-6)
    u, s = jax.jit(opt.update)(g, s, P2)  # momentum 0: the trace is the clipped gradient
    np.testing.assert_allclose(u["w"], [-0.01, 0.005], rtol=1e-6)


def test_with_hyperparams():
    opt = gdopt.with_hyperparams(
        lambda lr, wd: gdopt.chain(gdopt.add_decayed_weights(wd), gdopt.scale(-lr)),
        {"lr": 0.5, "wd": gdopt.linear_schedule(1.0, 0.0, 2)},
    )
    s = opt.init(P2)
    assert isinstance(s, gdopt.InjectHyperparamsState)
    assert {k: float(v) for k, v in s.hyperparams.items()} == {"lr": 0.5, "wd": 1.0}
    u, s = opt.update(G2, s, P2)  # wd = 1: -0.5 * (g + p)
    np.testing.assert_allclose(u["w"], -0.5 * (G2["w"] + P2["w"]), rtol=1e-6)
    s = gdopt.set_hyperparams(s, lr=0.25)
    u, s = opt.update(G2, s, P2)  # wd = 0.5
    np.testing.assert_allclose(u["w"], -0.25 * (G2["w"] + 0.5 * P2["w"]), rtol=1e-6)
    assert float(s.hyperparams["wd"]) == 0.5 and int(s.count) == 2
    # the stored dtype, and the checks of params
    bf = gdopt.with_hyperparams(
        lambda lr: gdopt.scale(-lr), {"lr": 0.5}, hyperparam_dtype=jnp.bfloat16
    )
    assert bf.init(P2).hyperparams["lr"].dtype == jnp.bfloat16
    with pytest.raises(TypeError, match=r"params\['n'\] has dtype int32"):
        opt.init({"w": jnp.ones(2), "n": jnp.asarray(1)})
    with pytest.raises(ValueError, match=r"\['v'\]"):
        opt.update({"v": jnp.ones(2)}, opt.init(P2), P2)
    unchecked = gdopt.with_hyperparams(lambda lr: gdopt.scale(-lr), {"lr": 0.5}, check_params=False)
    unchecked.init({"n": jnp.asarray(1)})
    with pytest.raises(TypeError, match="InjectHyperparamsState"):
        opt.update(G2, opt.init(P2).inner_state, P2)


def test_rebuild_with_hyperparams():
    opt = gdopt.adagrad(0.1, initial_accumulator_value=0.1)
    rebuilt = gdopt.rebuild_with_hyperparams(opt, initial_accumulator_value=0.5)
    s = rebuilt.init(P2)
    np.testing.assert_array_equal(s[0].sum_of_squares["w"], 0.5)  # init uses the new value
    np.testing.assert_array_equal(opt.init(P2)[0].sum_of_squares["w"], np.float32(0.1))
    assert float(s.hyperparams["initial_accumulator_value"]) == 0.5
    assert float(s.hyperparams["learning_rate"]) == pytest.approx(0.1)  # the others kept
    # traced values: one state per value under vmap
    values = jnp.array([0.0, 0.25, 1.0])
    sums = jax.vmap(
        lambda v: (
            gdopt.rebuild_with_hyperparams(opt, initial_accumulator_value=v)
            .init(P2)[0]
            .sum_of_squares["w"]
        )
    )(values)
    np.testing.assert_array_equal(sums, np.repeat(values[:, None], 2, axis=1))
    lrs = jax.vmap(
        lambda lr: (
            gdopt.rebuild_with_hyperparams(opt, learning_rate=lr)
            .init(P2)
            .hyperparams["learning_rate"]
        )
    )(values + 0.1)
    np.testing.assert_allclose(lrs, values + 0.1)
    # concrete values are checked like the constructor's
    with pytest.raises(ValueError, match="initial_accumulator_value must be a finite number"):
        gdopt.rebuild_with_hyperparams(opt, initial_accumulator_value=-1.0)
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['lr'\]"):
        gdopt.rebuild_with_hyperparams(opt, lr=0.1)
    scheduled = gdopt.sgd(gdopt.linear_schedule(0.1, 0.0, 5))
    with pytest.raises(ValueError, match="schedules cannot be replaced"):
        gdopt.rebuild_with_hyperparams(scheduled, learning_rate=0.1)
    with pytest.raises(TypeError, match="needs a named gdopt optimizer"):
        gdopt.rebuild_with_hyperparams(gdopt.scale(1.0), step_size=2.0)


def test_a_bare_chain_state_runs_with_the_construction_values():
    # values that float32 holds exactly: the state's copies compute what the constructor's do
    opt = gdopt.adam(0.5, b1=0.5, b2=0.75)
    full = opt.init(P2)
    changed = gdopt.set_hyperparams(full, learning_rate=0.01)
    u_full, s_full = opt.update(G2, full, P2)
    u_bare, s_bare = opt.update(G2, changed.inner_state, P2)  # no values: the constructor's
    np.testing.assert_allclose(u_bare["w"], u_full["w"], rtol=1e-7)
    assert type(s_bare) is tuple and jax.tree.structure(s_bare) == jax.tree.structure(
        s_full.inner_state
    )
    scheduled = gdopt.sgd(gdopt.linear_schedule(0.1, 0.0, 5))
    with pytest.raises(ValueError, match="without its hyperparameters"):
        scheduled.update(G2, scheduled.init(P2).inner_state, P2)


def test_legacy_named_optimizer_form():
    build = lambda learning_rate, momentum, nesterov: gdopt.chain(
        gdopt.trace(momentum, nesterov=nesterov), gdopt.scale_by_learning_rate(learning_rate)
    )
    opt = gdopt.named_optimizer(build, learning_rate=0.1, momentum=0.5, nesterov=None)
    s = opt.init(P2)
    assert isinstance(s, gdopt.HyperparamsState)
    assert sorted(s.hyperparams) == ["learning_rate", "momentum"]  # None stays static
    u, s = opt.update(G2, s, P2)
    np.testing.assert_allclose(u["w"], -0.1 * G2["w"], rtol=1e-6)
    s = gdopt.set_hyperparams(s, learning_rate=1.0, momentum=0.0)
    u, _ = opt.update(G2, s, P2)
    np.testing.assert_allclose(u["w"], -G2["w"], rtol=1e-6)
    scheduled = gdopt.named_optimizer(
        lambda learning_rate: gdopt.scale_by_learning_rate(learning_rate),
        learning_rate=gdopt.linear_schedule(1.0, 0.0, 2),
    )
    s = scheduled.init(P2)
    seen = []
    for _ in range(3):
        u, s = scheduled.update(G2, s, P2)
        seen.append(float(s.hyperparams["learning_rate"]))
    assert seen == [1.0, 0.5, 0.0]


def test_state_keys_are_of_one_kind_and_read_as_attributes():
    # Flax NNX sorts the key paths of an optimizer state: a tuple's indices and the
    # hyperparameters' key must compare, so all are indices; the path still names the field
    state = gdopt.adamw(1e-2).init({"w": jnp.ones(2)})
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert all(isinstance(p[0], jax.tree_util.SequenceKey) for p in paths)

    def plain(k):  # what a library sorts by: the index, the dict key, the attribute name
        if isinstance(k, jax.tree_util.SequenceKey):
            return k.idx
        return k.key if isinstance(k, jax.tree_util.DictKey) else k.name

    assert len(sorted(tuple(plain(k) for k in p) for p in paths)) == len(paths)  # comparable
    names = {jax.tree_util.keystr(p) for p in paths}
    assert "[0].mu['w']" in names and ".hyperparams['learning_rate']" in names


# ----------------------------------------------------------------------------- stateful schedules


class HalveOnIncrease:
    """A stateful schedule: the value halves at each step whose loss (``value``) went up.

    Plain JAX, so the same object drives gdopt's and optax's inject_stateful_hyperparams.
    """

    def __init__(self, start: float) -> None:
        self.start = start

    def init(self):
        return {"lr": jnp.asarray(self.start, jnp.float32), "last": jnp.asarray(jnp.inf)}

    def update(self, state, value=None, **extra):
        lr = jnp.where(value > state["last"], state["lr"] / 2, state["lr"])
        return {"lr": lr, "last": jnp.asarray(value, jnp.float32)}

    def __call__(self, state, **extra):
        return state["lr"]


LOSSES = [3.0, 4.0, 2.0, 5.0, 6.0, 1.0]


def _stateful_pair(ours_factory, ref_factory, **hyper):
    ours = gdopt.inject_stateful_hyperparams(ours_factory)(**hyper)
    with oracle(), pytest.warns(DeprecationWarning):
        ref = optax.inject_stateful_hyperparams(ref_factory)(**hyper)
    return ours, ref


def _steps(opt):
    update = jax.jit(opt.update)
    state = s0 = opt.init(PARAMS)
    out = []
    for g, loss in zip(GRADS[: len(LOSSES)], LOSSES, strict=True):
        u, state = update(g, state, PARAMS, value=jnp.asarray(loss))
        out.append((u, state))
    return s0, out


def _same(ours, ref, rtol=1e-6):
    a, b = jax.tree.leaves(ours), jax.tree.leaves(ref)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert jnp.asarray(x).dtype == jnp.asarray(y).dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-7)


@pytest.mark.parametrize(
    ("case", "hyper"),
    [
        ("step schedule", {"learning_rate": optax.linear_schedule(0.1, 0.01, 4), "b1": 0.8}),
        ("stateful schedule", {"learning_rate": HalveOnIncrease(0.1)}),
        (
            "both",
            {"learning_rate": HalveOnIncrease(0.05), "b2": optax.linear_schedule(0.9, 0.99, 3)},
        ),
    ],
)
def test_inject_stateful_hyperparams_matches_optax(case, hyper):
    ours, ref = _stateful_pair(gdopt.adam, optax.adam, **hyper)
    s0, steps = _steps(ours)
    with oracle():
        r0, ref_steps = _steps(ref)
    assert type(s0) is gdopt.InjectStatefulHyperparamsState
    assert s0._fields == r0._fields == ("count", "hyperparams", "hyperparams_states", "inner_state")
    for (u, s), (ru, rs) in [((None, s0), (None, r0)), *zip(steps, ref_steps, strict=True)]:
        if u is not None:
            _same(u, ru)
        assert int(s.count) == int(rs.count)
        assert sorted(s.hyperparams) == sorted(rs.hyperparams)
        _same(dict(s.hyperparams), dict(rs.hyperparams))
        assert sorted(s.hyperparams_states) == sorted(rs.hyperparams_states)
        for k, v in s.hyperparams_states.items():
            assert type(v).__name__ == type(rs.hyperparams_states[k]).__name__
            _same(v, rs.hyperparams_states[k])
        _same(s.inner_state, rs.inner_state)


def test_stateful_schedule_by_hand_and_get_hyperparams():
    opt = gdopt.inject_stateful_hyperparams(gdopt.sgd)(learning_rate=HalveOnIncrease(0.4))
    _, steps = _steps(opt)
    # losses 3, 4, 2, 5, 6, 1: the value used at a step is the state's before that step's
    # update; it halves after the steps whose loss rose (4 > 3, 5 > 2, 6 > 5)
    used = [float(s.hyperparams["learning_rate"]) for _, s in steps]
    assert used == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1, 0.05])
    last = steps[-1][1]
    assert float(last.hyperparams_states["learning_rate"]["lr"]) == pytest.approx(0.05)
    assert float(gdopt.get_hyperparams(last)["learning_rate"]) == pytest.approx(0.05)
    # the update is -lr * g with the value of the step
    np.testing.assert_allclose(
        steps[2][0]["dense"]["b"], -0.2 * np.asarray(GRADS[2]["dense"]["b"]), rtol=1e-6
    )


def test_a_wrapped_schedule_gives_inject_hyperparams_values():
    sched = gdopt.cosine_decay_schedule(0.1, 10)
    plain = gdopt.inject_hyperparams(gdopt.adam)(learning_rate=sched)
    stateful = gdopt.inject_stateful_hyperparams(gdopt.adam)(learning_rate=sched)
    assert_trajectories_close(
        run_trajectory(stateful, PARAMS, GRADS), run_trajectory(plain, PARAMS, GRADS), 0, 0
    )
    s = stateful.init(PARAMS)
    assert isinstance(s.hyperparams_states["learning_rate"], gdopt.hyperparams.WrappedScheduleState)
    w = gdopt.WrappedSchedule(sched)
    assert w == gdopt.WrappedSchedule(sched) and hash(w) == hash(gdopt.WrappedSchedule(sched))
    assert isinstance(w, gdopt.StatefulSchedule) and not isinstance(sched, gdopt.StatefulSchedule)
    assert float(w(w.update(w.init()))) == pytest.approx(float(sched(1)))


def test_stateful_state_is_one_type_under_scan_and_constants_can_be_written():
    opt = gdopt.inject_stateful_hyperparams(gdopt.adam)(learning_rate=HalveOnIncrease(0.1))
    s0 = opt.init(PARAMS)

    def body(state, xs):
        g, loss = xs
        return opt.update(g, state, PARAMS, value=loss)[1], None

    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *GRADS[:6])
    final, _ = jax.lax.scan(body, s0, (stacked, jnp.asarray(LOSSES)))
    _, steps = _steps(opt)
    _same(final, steps[-1][1])
    s0.hyperparams["b1"] = 0.5  # a constant is written like inject_hyperparams'
    assert float(s0.hyperparams["b1"]) == 0.5
    with pytest.raises(ValueError, match=r"b1 must be a finite number in \[0, 1\)"):
        s0.hyperparams["b1"] = 1.5


def test_stateful_schedule_names_are_exported_where_optax_has_them():
    for name in (
        "inject_stateful_hyperparams",
        "InjectStatefulHyperparamsState",
        "WrappedSchedule",
        "StatefulSchedule",
    ):
        assert getattr(gdopt.schedules, name) is getattr(gdopt.hyperparams, name)
    for name in (
        "inject_stateful_hyperparams",
        "InjectStatefulHyperparamsState",
        "WrappedSchedule",
    ):
        assert getattr(gdopt, name) is getattr(gdopt.hyperparams, name)


def test_stateful_schedule_bad_input():
    with pytest.raises(TypeError, match="use gdopt.inject_stateful_hyperparams"):
        gdopt.inject_hyperparams(gdopt.sgd)(learning_rate=HalveOnIncrease(0.1))
    with pytest.raises(ValueError, match=r"static_args \['lr'\] are not arguments of sgd"):
        gdopt.inject_stateful_hyperparams(gdopt.sgd, static_args="lr")
    with pytest.raises(TypeError, match="WrappedSchedule's schedule_fn must be a function"):
        gdopt.WrappedSchedule(0.1)
    with pytest.raises(ValueError, match=r"learning_rate must be a finite number in \(0, inf\)"):
        gdopt.inject_stateful_hyperparams(gdopt.sgd)(learning_rate=-0.1)
    opt = gdopt.inject_stateful_hyperparams(gdopt.sgd)(learning_rate=0.1)
    plain = gdopt.inject_hyperparams(gdopt.sgd)(learning_rate=0.1)
    with pytest.raises(TypeError, match="must be the InjectStatefulHyperparamsState"):
        opt.update(P2, plain.init(P2), P2)


def test_a_stateful_schedule_in_fit_sees_the_loss():
    # fit passes the batch loss as ``value``: the schedule halves the rate when it rises
    x = jnp.arange(8.0).reshape(4, 2)
    y = jnp.array([1.0, 2.0, 3.0, 4.0])
    opt = gdopt.inject_stateful_hyperparams(gdopt.sgd)(learning_rate=HalveOnIncrease(0.2))
    res = gdopt.fit(
        lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2), jnp.zeros(2), opt, (x, y), epochs=10
    )
    lr = float(res.opt_state.hyperparams_states["learning_rate"]["lr"])
    halvings = np.log2(0.2 / lr)
    assert halvings >= 1 and halvings == pytest.approx(round(halvings), abs=1e-4)
    final = float(jnp.mean((x @ res.params - y) ** 2))
    assert final < float(jnp.mean(y**2))
