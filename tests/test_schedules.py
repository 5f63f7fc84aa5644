"""``gdopt/schedules.py``: parity with optax (oracle) at every step of every phase, hand-computed
WSD values, traced schedule values, a schedule inside an optimizer, ``reduce_on_plateau``
against optax on a scripted loss sequence, and validation errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gdopt
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    oracle,
    run_trajectory,
)

STEPS = np.arange(0, 131)


def _values(sched, steps=STEPS):
    """Values at every step (jitted, vmapped); eager calls on Python ints agree."""
    jitted = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(steps, jnp.int32)))
    for i in range(0, len(steps), 17):
        np.testing.assert_allclose(float(sched(int(steps[i]))), jitted[i], rtol=1e-6, atol=1e-7)
    return jitted


def _ref_values(sched, steps=STEPS):
    """optax's values (vmapped; a constant schedule returns a Python number)."""
    with oracle():
        out = jax.vmap(lambda t: jnp.asarray(sched(t), jnp.float32))(jnp.asarray(steps, jnp.int32))
    return np.asarray(out, np.float64)


CASES = [
    ("constant_schedule", dict(value=0.3)),
    ("linear_schedule", dict(init_value=1.0, end_value=0.1, transition_steps=50)),
    (
        "linear_schedule",
        dict(init_value=0.0, end_value=2.0, transition_steps=40, transition_begin=30),
    ),
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.01, power=2, transition_steps=100)),
    (
        "polynomial_schedule",
        dict(init_value=0.5, end_value=1.5, power=0.5, transition_steps=60, transition_begin=10),
    ),
    ("polynomial_schedule", dict(init_value=0.7, end_value=0.0, power=1, transition_steps=0)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=10, decay_rate=0.8)),
    (
        "exponential_decay",
        dict(
            init_value=2.0,
            transition_steps=7,
            decay_rate=0.5,
            transition_begin=20,
            staircase=True,
            end_value=0.05,
        ),
    ),
    (
        "exponential_decay",
        dict(init_value=0.1, transition_steps=10, decay_rate=1.5, end_value=2.0),
    ),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=100)),
    ("cosine_decay_schedule", dict(init_value=0.5, decay_steps=80, alpha=0.1, exponent=2.0)),
    (
        "warmup_cosine_decay_schedule",
        dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=100),
    ),
    (
        "warmup_cosine_decay_schedule",
        dict(
            init_value=0.1,
            peak_value=0.5,
            warmup_steps=25,
            decay_steps=120,
            end_value=0.05,
            exponent=1.5,
        ),
    ),
    (
        "warmup_cosine_decay_schedule",
        dict(init_value=0.0, peak_value=1.0, warmup_steps=0, decay_steps=50),
    ),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={10: 0.5, 40: 0.1})),
    ("piecewise_constant_schedule", dict(init_value=0.3, boundaries_and_scales=None)),
    (
        "piecewise_interpolate_schedule",
        dict(interpolate_type="linear", init_value=1.0, boundaries_and_scales={20: 0.5, 70: 0.1}),
    ),
    (
        "piecewise_interpolate_schedule",
        dict(interpolate_type="cosine", init_value=2.0, boundaries_and_scales={0: 0.5, 50: 3.0}),
    ),
    ("warmup_constant_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=30)),
    (
        "warmup_exponential_decay_schedule",
        dict(init_value=0.0, peak_value=1.0, warmup_steps=20, transition_steps=10, decay_rate=0.7),
    ),
    (
        "warmup_exponential_decay_schedule",
        dict(
            init_value=0.1,
            peak_value=1.0,
            warmup_steps=15,
            transition_steps=5,
            decay_rate=0.9,
            transition_begin=10,
            staircase=True,
            end_value=0.3,
        ),
    ),
    ("linear_onecycle_schedule", dict(transition_steps=100, peak_value=1.0)),
    (
        "linear_onecycle_schedule",
        dict(
            transition_steps=120,
            peak_value=0.5,
            pct_start=0.2,
            pct_final=0.7,
            div_factor=10.0,
            final_div_factor=100.0,
        ),
    ),
    ("cosine_onecycle_schedule", dict(transition_steps=100, peak_value=1.0)),
    (
        "cosine_onecycle_schedule",
        dict(
            transition_steps=90,
            peak_value=2.0,
            pct_start=0.4,
            div_factor=5.0,
            final_div_factor=50.0,
        ),
    ),
]


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_schedule_parity_with_optax(name, kwargs):
    ours = _values(getattr(gdopt, name)(**kwargs))
    ref = _ref_values(getattr(optax, name)(**kwargs))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


def test_join_schedules_parity():
    scheds = [gdopt.linear_schedule(0.0, 1.0, 10), gdopt.cosine_decay_schedule(1.0, 50)]
    refs = [optax.linear_schedule(0.0, 1.0, 10), optax.cosine_decay_schedule(1.0, 50)]
    ours = _values(gdopt.join_schedules(scheds, [10]))
    ref = _ref_values(optax.join_schedules(refs, [10]))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


def test_sgdr_parity():
    kw = [
        dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=40),
        dict(init_value=0.1, peak_value=0.5, warmup_steps=10, decay_steps=50, end_value=0.05),
        dict(init_value=0.0, peak_value=0.2, warmup_steps=0, decay_steps=30),
    ]
    ours = _values(gdopt.sgdr_schedule(kw))
    ref = _ref_values(optax.sgdr_schedule(kw))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


def test_piecewise_constant_boundary_applies_at_the_boundary():
    sched = gdopt.piecewise_constant_schedule(1.0, {3: 0.5})
    assert [float(sched(t)) for t in (2, 3, 4)] == [1.0, 0.5, 0.5]


def test_warmup_constant_with_no_warmup_is_the_peak():
    # deliberate deviation: optax returns init_value forever here
    sched = gdopt.warmup_constant_schedule(0.0, 0.7, 0)
    assert [round(float(sched(t)), 6) for t in (0, 5)] == [0.7, 0.7]


@pytest.mark.parametrize(
    "decay_type,shape",
    [
        ("linear", lambda s: 1 - s),
        ("cosine", lambda s: 0.5 * (1 + np.cos(np.pi * s))),
        ("1-sqrt", lambda s: 1 - np.sqrt(s)),
    ],
)
def test_warmup_stable_decay_by_hand(decay_type, shape):
    init, peak, end, w, st, d = 0.1, 1.0, 0.01, 10, 30, 20
    sched = gdopt.warmup_stable_decay_schedule(init, peak, w, st, d, end, decay_type=decay_type)

    def ref(t):
        if t < w:
            return init + (peak - init) * t / w
        if t < w + st:
            return peak
        s = min((t - w - st) / d, 1.0)
        return end + (peak - end) * shape(s)

    steps = np.arange(0, 80)
    np.testing.assert_allclose(_values(sched, steps), [ref(t) for t in steps], rtol=1e-6, atol=1e-7)


def test_schedules_accept_traced_values():
    """Values (not step counts) may be traced: a vmapped sweep over peak values."""

    def at(peak):
        sched = gdopt.warmup_cosine_decay_schedule(0.0, peak, 5, 20, end_value=0.1)
        return sched(jnp.asarray(10))

    peaks = jnp.array([0.5, 1.0, 0.0])
    got = jax.vmap(at)(peaks)
    want = [float(gdopt.warmup_cosine_decay_schedule(0.0, float(p), 5, 20, 0.1)(10)) for p in peaks]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_schedule_inside_an_optimizer():
    params = make_params()
    grads = gradient_sequence(params, steps=40)
    kw = dict(init_value=0.0, peak_value=0.1, warmup_steps=5, decay_steps=40)
    ours = run_trajectory(gdopt.sgd(gdopt.warmup_cosine_decay_schedule(**kw)), params, grads)
    with oracle():
        ref = run_trajectory(optax.sgd(optax.warmup_cosine_decay_schedule(**kw)), params, grads)
    assert_trajectories_close(ours, ref)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: gdopt.linear_schedule(0.0, 1.0, -1), "transition_steps"),
        (
            lambda: gdopt.polynomial_schedule(0.0, 1.0, 1, 10, transition_begin=-2),
            "transition_begin",
        ),
        (lambda: gdopt.exponential_decay(1.0, 0, 0.5), "transition_steps"),
        (lambda: gdopt.exponential_decay(1.0, 10, 0.0), "decay_rate"),
        (lambda: gdopt.cosine_decay_schedule(1.0, 0), "decay_steps"),
        (lambda: gdopt.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10), "decay_steps"),
        (lambda: gdopt.piecewise_constant_schedule(1.0, {5: -0.1}), "scale for boundary 5"),
        (lambda: gdopt.piecewise_constant_schedule(1.0, {-5: 0.1}), "boundary"),
        (lambda: gdopt.piecewise_interpolate_schedule("cubic", 1.0, {5: 0.1}), "interpolate_type"),
        (lambda: gdopt.join_schedules([gdopt.constant_schedule(1.0)], [3]), "one more schedule"),
        (
            lambda: gdopt.join_schedules([gdopt.constant_schedule(1.0)] * 3, [5, 2]),
            "increasing",
        ),
        (lambda: gdopt.warmup_constant_schedule(0.0, 1.0, -2.5), "warmup_steps"),
        (lambda: gdopt.linear_schedule(1.0, 0.0, float("nan")), "transition_steps"),
        (lambda: gdopt.linear_schedule(1.0, 0.0, True), "transition_steps"),
        (lambda: gdopt.linear_onecycle_schedule(0, 1.0), "transition_steps"),
        (lambda: gdopt.linear_onecycle_schedule(100, 1.0, pct_start=0.9), "distinct"),
        (lambda: gdopt.cosine_onecycle_schedule(100, 1.0, pct_start=1.5), "pct_start"),
        (lambda: gdopt.sgdr_schedule([dict(init_value=0.0, peak_value=1.0)]), "decay_steps"),
        (lambda: gdopt.sgdr_schedule([]), "at least one"),
        (lambda: gdopt.warmup_stable_decay_schedule(0.0, 1.0, 5, 5, 0), "decay_steps"),
        (lambda: gdopt.warmup_stable_decay_schedule(0.0, 1.0, 5, -1, 5), "stable_steps"),
        (
            lambda: gdopt.warmup_stable_decay_schedule(0.0, 1.0, 5, 5, 5, decay_type="exp"),
            "decay_type",
        ),
    ],
)
def test_schedule_validation(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# ----------------------------------------------------------------------------- reduce_on_plateau

LOSSES = (
    [5.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.9999, 3.0, 3.0, 3.0, 1.0]
    + [1.0] * 10
    + [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    + [0.4] * 10
)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(factor=0.5, patience=2, rtol=0.0, atol=1e-3, cooldown=2),
        dict(factor=0.3, patience=1, rtol=1e-2, cooldown=1, accumulation_size=3, min_scale=0.05),
    ],
)
def test_reduce_on_plateau_parity(kwargs):
    params = make_params()
    grads = gradient_sequence(params, steps=len(LOSSES))
    extra = lambda i, p: {"value": jnp.asarray(LOSSES[i])}
    ours_t = gdopt.chain(gdopt.sgd(0.1), gdopt.reduce_on_plateau(**kwargs))
    ref_t = optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(**kwargs))
    ours = run_trajectory(ours_t, params, grads, extra=extra)
    with oracle():
        ref = run_trajectory(ref_t, params, grads, extra=extra)
    assert_trajectories_close(ours, ref)
    # every field of the state agrees at every step
    g = {"w": jnp.ones(3)}

    def states(t):
        def body(s, loss):
            _, s = t.update(g, s, g, value=loss)
            return s, s

        return jax.lax.scan(body, t.init(g), jnp.asarray(LOSSES))[1]

    a = jax.jit(lambda: states(gdopt.reduce_on_plateau(**kwargs)))()
    with oracle():
        b = jax.jit(lambda: states(optax.contrib.reduce_on_plateau(**kwargs)))()
    for field in a._fields:
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), err_msg=field)
    assert float(a.scale.min()) < 1.0  # the scripted losses do trigger reductions


def test_reduce_on_plateau_by_hand():
    t = gdopt.reduce_on_plateau(factor=0.5, patience=2, rtol=0.0, atol=0.1, cooldown=1)
    p = {"w": jnp.zeros(())}
    s = t.init(p)
    scales = []
    for loss in [1.0, 0.95, 0.95, 0.95, 0.95, 0.95, 0.5]:
        _, s = t.update({"w": jnp.array(1.0)}, s, p, value=loss)
        scales.append(float(s.scale))
    # 1.0 improves on inf; 0.95 is not 0.1 better: plateau 1, 2 -> halve, cool-down 1 step,
    # then plateau 1, 2 -> halve again; 0.5 improves.
    assert scales == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_reduce_on_plateau_needs_value():
    t = gdopt.reduce_on_plateau()
    p = {"w": jnp.zeros(())}
    with pytest.raises(TypeError, match="value=loss"):
        t.update(p, t.init(p), p)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(factor=1.0), "factor"),
        (dict(factor=0.0), "factor"),
        (dict(rtol=-0.1), "rtol"),
        (dict(rtol=2.0), "rtol"),
        (dict(atol=-1.0), "atol"),
        (dict(rtol=0.0, atol=0.0), "rtol > 0 or atol > 0"),
        (dict(patience=0), "patience"),
        (dict(cooldown=-1), "cooldown"),
        (dict(accumulation_size=0), "accumulation_size"),
        (dict(min_scale=1.5), "min_scale"),
    ],
)
def test_reduce_on_plateau_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gdopt.reduce_on_plateau(**kwargs)


# ----------------------------------------------------------------------------- float step counts


FLOAT_STEP_CASES = [
    (
        "linear_schedule",
        dict(init_value=1.0, end_value=0.1, transition_steps=22.0, transition_begin=3.0),
    ),
    (
        "polynomial_schedule",
        dict(init_value=1.0, end_value=0.1, power=2, transition_steps=22.0, transition_begin=3.0),
    ),
    (
        "exponential_decay",
        dict(
            init_value=1.0,
            transition_steps=7.0,
            decay_rate=0.5,
            transition_begin=2.0,
            staircase=True,
        ),
    ),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=30.0, alpha=0.1)),
    (
        "warmup_cosine_decay_schedule",
        dict(init_value=0.0, peak_value=1.0, warmup_steps=5.0, decay_steps=30.0),
    ),
    ("warmup_constant_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=5.0)),
    (
        "warmup_exponential_decay_schedule",
        dict(
            init_value=0.0, peak_value=1.0, warmup_steps=5.0, transition_steps=4.0, decay_rate=0.5
        ),
    ),
    ("linear_onecycle_schedule", dict(transition_steps=30.0, peak_value=1.0)),
    ("cosine_onecycle_schedule", dict(transition_steps=30.0, peak_value=1.0)),
    (
        "piecewise_constant_schedule",
        dict(init_value=1.0, boundaries_and_scales={5.0: 0.5, 10: 0.1}),
    ),
    (
        "piecewise_interpolate_schedule",
        dict(
            interpolate_type="cosine", init_value=1.0, boundaries_and_scales={5.0: 0.5, 12.5: 0.1}
        ),
    ),
]


@pytest.mark.parametrize(("name", "kwargs"), FLOAT_STEP_CASES, ids=[c[0] for c in FLOAT_STEP_CASES])
def test_float_step_counts_are_accepted_as_optax_accepts_them(name, kwargs):
    """Flax's ImageNet configuration passes ``steps_per_epoch * epochs`` as a float."""
    # strongly typed int32 counts, as an optimizer's state holds them
    steps = [jnp.asarray(t, jnp.int32) for t in range(0, 40, 3)]
    ours = getattr(gdopt, name)(**kwargs)
    got = np.array([ours(t) for t in steps])
    with oracle():
        ref_fn = getattr(optax, name)(**kwargs)
        ref = np.array([ref_fn(t) for t in steps])
    np.testing.assert_array_equal(got, ref)


def test_optax_schedules_namespace_has_inject_hyperparams():
    assert gdopt.schedules.inject_hyperparams is gdopt.inject_hyperparams
    assert gdopt.schedules.InjectHyperparamsState is gdopt.InjectHyperparamsState
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        gdopt.schedules.nonexistent  # noqa: B018
