"""``gdopt/transforms/monitoring.py``: snapshot, monitor and measure_with_ema.

Parity with optax over jitted steps (updates and every state field after each update), the
documented difference at init (the measurements are there from the start, in the dtype they
keep), a state carried through ``lax.scan`` and ``fit``, and errors that name the argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdopt
from tests.helpers import gradient_sequence, make_params, oracle

PARAMS = jax.tree.map(lambda x: x.astype(x.dtype), make_params())
GRADS = gradient_sequence(PARAMS, steps=4)


def _leaves_equal(ours, ref, rtol=1e-6):
    a, b = jax.tree.leaves(ours), jax.tree.leaves(ref)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        x, y = jnp.asarray(x), jnp.asarray(y)
        assert x.shape == y.shape
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol)


def _run(opt, grads=GRADS, params=PARAMS):
    """(init state, [(updates, state) after each jitted step])."""
    update = jax.jit(opt.update)
    state = s0 = opt.init(params)
    out = []
    for g in grads:
        u, state = update(g, state, params)
        out.append((u, state))
    return s0, out


def _flag(threshold):
    """``norm(u) > threshold``, the flag of a clip that fires (gdopt's functions)."""
    return lambda u: gdopt.tree.norm(u) > threshold


def _flag_ref(threshold):
    return lambda u: optax.tree.norm(u) > threshold


# ----------------------------------------------------------------------------- snapshot


def test_snapshot_matches_optax_in_a_chain():
    ours = gdopt.chain(
        gdopt.sgd(0.1, momentum=0.9),
        gdopt.snapshot("norm_before_clip", gdopt.tree.norm),
        gdopt.clip_by_global_norm(0.05),
    )
    with oracle():
        ref = optax.chain(
            optax.sgd(0.1, momentum=0.9),
            optax.snapshot("norm_before_clip", optax.tree.norm),
            optax.clip_by_global_norm(0.05),
        )
    s0, steps = _run(ours)
    with oracle():
        r0, ref_steps = _run(ref)
    assert type(s0[1]) is gdopt.SnapshotState and s0[1]._fields == ("measurement",)
    _leaves_equal(s0[1].measurement, r0[1].measurement)  # init measures the params
    for (u, s), (ru, rs) in zip(steps, ref_steps, strict=True):
        _leaves_equal(u, ru)
        _leaves_equal(s[1].measurement, rs[1].measurement)
        assert float(gdopt.tree.get(s, "norm_before_clip")) > 0.05  # before the clip
    assert float(gdopt.tree.norm(steps[-1][0])) <= 0.05 + 1e-6


def test_snapshot_passes_updates_through_and_stores_any_pytree():
    t = gdopt.snapshot("double", lambda u: jax.tree.map(lambda x: 2 * x, u))
    g = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
    u, s = t.update(g, t.init(g))
    assert u is g
    np.testing.assert_array_equal(s.measurement["double"]["a"], [2.0, -4.0])
    assert float(s.measurement["double"]["b"]) == 6.0


# ----------------------------------------------------------------------------- measure_with_ema


@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("debiased", {}),
        ("biased", {"debias": False}),
        ("bfloat16 accumulator", {"accumulator_dtype": jnp.bfloat16}),
        ("float16 accumulator", {"debias": False, "accumulator_dtype": jnp.float16}),
    ],
)
def test_measure_with_ema_matches_optax(case, kwargs):
    ours = gdopt.measure_with_ema(gdopt.tree.norm, 0.8, **kwargs)
    with oracle():
        ref = optax.measure_with_ema(optax.tree.norm, 0.8, **kwargs)
    s0, steps = _run(ours)
    with oracle():
        r0, ref_steps = _run(ref)
    _leaves_equal(s0, r0)
    for (u, s), (ru, rs) in zip(steps, ref_steps, strict=True):
        _leaves_equal(u, ru, rtol=1e-2 if "16" in case else 1e-6)
        _leaves_equal(s, rs, rtol=1e-2 if "16" in case else 1e-6)
    assert type(steps[0][1][1]) is gdopt.EmaState


def test_measure_with_ema_by_hand():
    # measurement sum(u): 2 then 4; decay 0.5: m = 1, then 0.5 + 2 = 2.5; debiased 2, 10/3
    t = gdopt.measure_with_ema(lambda u: jnp.sum(u), decay=0.5)
    s = t.init(jnp.zeros(2))
    out1, s = t.update(jnp.array([1.0, 1.0]), s)
    out2, s = t.update(jnp.array([1.0, 3.0]), s)
    assert float(out1) == pytest.approx(2.0)
    assert float(out2) == pytest.approx(2.5 / 0.75)
    assert int(s[1].count) == 2 and float(s[1].ema) == pytest.approx(2.5)


def test_measure_with_ema_of_a_flag_is_a_float_from_init():
    # optax keeps a bool zero at init and a float after the first update; gdopt keeps the
    # float from init (one dtype per leaf), with optax's numbers after every update.
    ours = gdopt.measure_with_ema(_flag(5.9), 0.9)  # off, off, on, on
    with oracle():
        ref = optax.measure_with_ema(_flag_ref(5.9), 0.9)
    s0, steps = _run(ours)
    with oracle():
        r0, ref_steps = _run(ref)
    assert s0[1].ema.dtype == jnp.float32 and r0[1].ema.dtype == jnp.bool_
    assert jax.tree.structure(s0) == jax.tree.structure(steps[-1][1])
    for (u, s), (ru, rs) in zip(steps, ref_steps, strict=True):
        _leaves_equal(u, ru)
        np.testing.assert_allclose(s[1].ema, rs[1].ema, rtol=1e-6)
        assert s[1].ema.dtype == s0[1].ema.dtype
    # by hand: m = 0, 0, 0.1, 0.19; debiased by 1 - 0.9^t
    want = [0.0, 0.0, 0.1 / (1 - 0.9**3), 0.19 / (1 - 0.9**4)]
    np.testing.assert_allclose([float(u) for u, _ in steps], want, rtol=1e-5)


# ----------------------------------------------------------------------------- monitor


def _monitors():
    ours = gdopt.chain(
        gdopt.sgd(0.1, momentum=0.9),
        gdopt.monitor(
            {
                "norm_before_clip": gdopt.tree.norm,
                "is_clipped_ema": gdopt.measure_with_ema(_flag(0.9), decay=0.9),
                "max_abs": lambda u: gdopt.tree.max(jax.tree.map(jnp.abs, u)),
            }
        ),
        gdopt.clip_by_global_norm(0.25),
    )
    with oracle():
        ref = optax.chain(
            optax.sgd(0.1, momentum=0.9),
            optax.monitor(
                {
                    "norm_before_clip": optax.tree.norm,
                    "is_clipped_ema": optax.measure_with_ema(_flag_ref(0.9), decay=0.9),
                    "max_abs": lambda u: optax.tree.max(jax.tree.map(jnp.abs, u)),
                }
            ),
            optax.clip_by_global_norm(0.25),
        )
    return ours, ref


def test_monitor_matches_optax_after_every_jitted_step():
    ours, ref = _monitors()
    s0, steps = _run(ours)
    with oracle():
        r0, ref_steps = _run(ref)
    assert type(s0[1]) is gdopt.MonitorState
    assert s0[1]._fields == r0[1]._fields == ("measurements", "measure_states")
    flags = []
    for (u, s), (ru, rs) in zip(steps, ref_steps, strict=True):
        _leaves_equal(u, ru)
        assert sorted(s[1].measurements) == sorted(rs[1].measurements)
        _leaves_equal(s[1].measurements, rs[1].measurements)
        _leaves_equal(s[1].measure_states[1][1], rs[1].measure_states[1][1])
        assert len(s[1].measure_states) == len(rs[1].measure_states) == 3
        flags.append(float(gdopt.tree.get(s, "is_clipped_ema")))
    # post-momentum norms 0.56, 0.80, 0.95, 1.05: the flag fires at steps 3 and 4
    np.testing.assert_allclose(flags, [0.0, 0.0, 0.1 / (1 - 0.9**3), 0.19 / (1 - 0.9**4)], 1e-5)


def test_monitor_holds_every_measurement_from_init():
    ours, ref = _monitors()
    s0, steps = _run(ours)
    with oracle():
        r0, _ = _run(ref)
    assert r0[1].measurements == {}  # optax's: filled at the first update
    m0 = s0[1].measurements
    assert sorted(m0) == ["is_clipped_ema", "max_abs", "norm_before_clip"]
    for k, v in m0.items():
        after = steps[0][1][1].measurements[k]
        assert v.shape == after.shape and v.dtype == after.dtype, k
        assert float(v) == 0.0
    # one structure and dtype at every step: a scan carries the state
    assert jax.tree.structure(s0) == jax.tree.structure(steps[-1][1])

    def body(state, g):
        u, state = ours.update(g, state, PARAMS)
        return state, gdopt.tree.get(state, "norm_before_clip")

    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *GRADS)
    _, norms = jax.lax.scan(body, s0, stacked)
    want = [float(s[1].measurements["norm_before_clip"]) for _, s in steps]
    np.testing.assert_allclose(norms, want, rtol=1e-6)


def test_monitor_in_fit():
    # fit carries the optimizer state through its compiled loop: the state's structure must
    # not change at the first update
    x = jnp.arange(8.0).reshape(4, 2)
    y = jnp.array([1.0, 2.0, 3.0, 4.0])
    opt = gdopt.chain(gdopt.monitor({"norm": gdopt.tree.norm}), gdopt.sgd(0.01))
    res = gdopt.fit(
        lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2), jnp.zeros(2), opt, (x, y), epochs=3
    )
    assert float(gdopt.tree.get(res.opt_state, "norm")) > 0.0


def test_monitor_passes_keyword_extras_to_the_measures():
    def with_value(updates, state, params=None, *, value, **extra):
        return value * 2.0, state

    measure = gdopt.GradientTransformation(lambda p: gdopt.EmptyState(), with_value)
    t = gdopt.monitor({"twice_value": measure, "norm": gdopt.tree.norm})
    s = t.init(jnp.zeros(2))
    # the measure needs ``value``: it cannot be shaped at init, so it appears at the update
    assert sorted(s.measurements) == ["norm"]
    _, s = t.update(jnp.array([3.0, 4.0]), s, value=jnp.asarray(1.5))
    assert float(s.measurements["twice_value"]) == 3.0 and float(s.measurements["norm"]) == 5.0


def test_monitoring_names_are_exported_where_optax_has_them():
    for name in ("monitor", "snapshot", "measure_with_ema", "MonitorState", "SnapshotState"):
        assert getattr(gdopt, name) is getattr(gdopt.transforms, name)
        assert getattr(gdopt.transforms.monitoring, name) is getattr(gdopt, name)


# ----------------------------------------------------------------------------- bad input


def test_bad_arguments_name_the_argument():
    with pytest.raises(TypeError, match="monitor's measures must be a dict"):
        gdopt.monitor([gdopt.tree.norm])
    with pytest.raises(TypeError, match="every key of monitor's measures must be a string"):
        gdopt.monitor({1: gdopt.tree.norm})
    with pytest.raises(TypeError, match=r"monitor's measures\['n'\] must be a Gradient"):
        gdopt.monitor({"n": 3.0})
    with pytest.raises(TypeError, match="snapshot's measure_name must be a string"):
        gdopt.snapshot(3, gdopt.tree.norm)
    with pytest.raises(TypeError, match="snapshot's measure"):
        gdopt.snapshot("n", 3.0)
    with pytest.raises(TypeError, match="measure_with_ema's measure"):
        gdopt.measure_with_ema("norm", 0.9)
    with pytest.raises(ValueError, match=r"decay must be a finite number in \[0, 1\)"):
        gdopt.measure_with_ema(gdopt.tree.norm, 1.5)
    t = gdopt.monitor({"n": gdopt.tree.norm})
    with pytest.raises(ValueError, match="needs the MonitorState its init returned"):
        t.update(jnp.zeros(2), (), None)
