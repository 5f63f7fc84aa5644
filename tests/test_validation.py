"""``gdopt/_validation.py``: the constraints (``Interval``, ``Integer``, ``OneOf``) and their
messages, values skipped when they cannot be inspected (tracers, schedules), and
``FactorySpec``: binding a call (the fast path gives what ``inspect.Signature.bind`` gives and
raises its errors), checking it, and the ``normalize`` hook."""

from __future__ import annotations

import inspect
import re
from typing import Annotated, Any

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdopt import scale
from gdopt._traits import transform
from gdopt._validation import FactorySpec, Integer, Interval, OneOf, is_concrete

UNIT = Interval(0.0, 1.0)  # [0, 1]
OPEN = Interval(0.0, 1.0, low_open=True, high_open=True)  # (0, 1)
DECAY = Interval(0.0, 1.0, high_open=True)  # [0, 1)


def _message(constraint, name, value) -> str:
    with pytest.raises((ValueError, TypeError)) as e:
        constraint.check(name, value)
    return str(e.value)


# ----------------------------------------------------------------------------- Interval


@pytest.mark.parametrize(
    "constraint,good,bad,shown",
    [
        (UNIT, [0.0, 0.5, 1.0, 1], [-0.1, 1.01], "[0, 1]"),
        (OPEN, [1e-6, 0.5, 0.999], [0.0, 1.0], "(0, 1)"),
        (DECAY, [0.0, 0.999], [1.0, -1e-9], "[0, 1)"),
        (Interval(0.0, low_open=True), [1e-30, 1e30], [0.0, -1.0], "(0, inf)"),
        (Interval(high=2.0), [-1e30, 2.0], [2.5], "(-inf, 2]"),
    ],
)
def test_interval_bounds(constraint, good, bad, shown):
    for v in good:
        constraint.check("x", v)
        constraint.check("x", np.float32(v))
        constraint.check("x", jnp.asarray(v))
    for v in bad:
        with pytest.raises(ValueError) as e:
            constraint.check("x", v)
        assert str(e.value) == f"x must be a finite number in {shown}, got {v}."


def test_interval_arrays_are_checked_elementwise():
    DECAY.check("b", jnp.array([0.0, 0.5, 0.9]))
    with pytest.raises(ValueError, match=r"b must be a finite number in \[0, 1\), got \[0.5 1. \]"):
        DECAY.check("b", np.array([0.5, 1.0]))


def test_interval_accepts_bfloat16_arrays():
    Interval(0.0, low_open=True).check("learning_rate", jnp.asarray(1e-3, jnp.bfloat16))


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -float("inf"), np.array([1.0, np.nan])]
)
def test_interval_refuses_non_finite_values_even_unbounded(bad):
    with pytest.raises(ValueError, match="must be a finite number in"):
        Interval().check("x", bad)


@pytest.mark.parametrize("bad", [True, False, np.bool_(True)])
def test_interval_refuses_bools(bad):
    with pytest.raises(TypeError, match=re.escape(f"x must be a number, got the bool {bad!r}.")):
        Interval().check("x", bad)


@pytest.mark.parametrize("bad", ["0.1", 1j, np.array(["a"]), object()])
def test_interval_refuses_non_numbers(bad):
    with pytest.raises(TypeError, match="x must be a number, an array or a schedule"):
        Interval().check("x", bad)


def test_interval_tuple_names_the_bad_entry():
    pair = Interval(0.0, 1.0, high_open=True, length=2)  # DecayPair's constraint
    pair.check("betas", (0.9, 0.999))
    pair.check("betas", [0.0, 0.5])
    assert _message(pair, "betas", (0.9, 1.0)) == (
        "betas[1] must be a finite number in [0, 1), got 1.0."
    )
    assert _message(pair, "betas", (-0.5, 0.9)).startswith("betas[0] must be")
    # an entry may not be a schedule or a bool either
    assert "betas[0] must be a number or an array (a schedule is not accepted here)" in (
        _message(pair, "betas", (lambda c: 0.9, 0.9))
    )
    assert _message(pair, "betas", (0.9, True)) == "betas[1] must be a number, got the bool True."


@pytest.mark.parametrize("bad", [[0.1], (0.1, 0.2), []])
def test_interval_without_a_length_refuses_lists_and_tuples(bad):
    """A list where one number is meant (``learning_rate=[0.1]``) would silently become a
    per-element hyperparameter array; only constraints with a ``length`` take sequences."""
    with pytest.raises(TypeError, match=r"x must be a number, an array or a schedule, got the"):
        Interval().check("x", bad)
    import gdopt

    with pytest.raises(TypeError, match="learning_rate must be"):
        gdopt.sgd(learning_rate=bad)


def test_interval_length():
    pair = Interval(0.0, 1.0, high_open=True, length=2)
    pair.check("betas", (0.9, 0.999))
    pair.check("betas", jnp.array([0.9, 0.999]))
    for bad in [(0.9,), (0.9, 0.99, 0.999), 0.9, np.zeros((2, 1))]:
        with pytest.raises(ValueError) as e:
            pair.check("betas", bad)
        assert str(e.value).startswith(
            "betas must be 2 numbers, each finite number in [0, 1); got "
        )
    assert _message(pair, "betas", (0.9, 1.5)).startswith("betas[1] must be a finite number")


def test_interval_optional_and_none():
    Interval(0.0, optional=True).check("x", None)
    assert _message(Interval(0.0), "x", None) == (
        "x must be a number, an array or a schedule, got None."
    )
    assert _message(Interval(0.0, schedule=False), "x", None) == (
        "x must be a number, an array, got None."
    )
    assert "(or None)" in _message(Interval(0.0, optional=True), "x", "text")
    assert repr(Interval(0.0, optional=True)) == "Interval[0, inf) or None"


def test_interval_schedules():
    schedule = lambda count: 0.1 * count
    Interval(0.0, 1.0).check("lr", schedule)  # accepted, never called
    msg = _message(Interval(0.0, 1.0, schedule=False), "lr", schedule)
    assert msg.startswith("lr must be a number or an array (a schedule is not accepted here)")
    Interval(0.0, 1.0, schedule=False).check("lr", jnp.asarray(0.5))


def test_traced_values_are_not_inspected():
    seen = []

    @jax.jit
    def f(x):
        seen.append(is_concrete(x))
        UNIT.check("x", x)  # -5 lies outside, but a tracer cannot be inspected
        DECAY.check("betas", (x, 0.5))
        Integer(1).check("n", x.astype(jnp.int32))
        return x

    assert float(f(-5.0)) == -5.0
    assert seen == [False]
    assert is_concrete(1.0) and is_concrete(np.ones(2)) and is_concrete({"a": jnp.ones(2)})


# ----------------------------------------------------------------------------- Integer, OneOf


def test_integer():
    steps = Integer(1)
    for v in (1, 7, np.int64(3), jnp.asarray(2), np.asarray(5)):
        steps.check("n", v)
    assert _message(steps, "n", 0) == "n must be an integer >= 1, got 0."
    assert _message(steps, "n", True) == "n must be an integer, got the bool True."
    assert _message(steps, "n", 2.5) == "n must be an integer, got float 2.5."
    assert _message(steps, "n", 2.0) == "n must be an integer, got float 2.0."
    Integer(1, real=True).check("n", 22.0)  # an integral float, where allowed
    assert _message(Integer(1, real=True), "n", 2.5) == "n must be an integer, got float 2.5."
    assert _message(steps, "n", np.ones(2, np.int32)).startswith(
        "n must be an integer, got an array of shape (2,)"
    )
    assert _message(steps, "n", None) == "n must be an integer >= 1, got None."
    Integer(1, optional=True).check("n", None)
    k = lambda count: 2
    assert _message(steps, "n", k).startswith("n must be an integer >= 1, got <function")
    Integer(1, schedule=True).check("n", k)
    assert not steps.dynamic and Integer(1, dynamic=True).dynamic


def test_one_of():
    mode = OneOf(("exact", "approx"))
    mode.check("mode", "exact")
    assert _message(mode, "mode", "fast") == "mode must be one of 'exact', 'approx'; got 'fast'."
    # an unhashable value is refused the same way, not with a TypeError of ``in``
    with pytest.raises(ValueError, match="mode must be one of"):
        OneOf(frozenset({"exact"})).check("mode", ["exact"])
    assert not mode.dynamic


# ----------------------------------------------------------------------------- FactorySpec


def simple(a, b=2, c: Annotated[float, UNIT] = 0.5, *, d=None, e: Annotated[float, DECAY] = 0.9):
    return a, b, c, d, e


def extended(a, /, b, *args, c=3, **kwargs):
    return a, b, args, c, kwargs


class _NoSlowPath:
    """A signature whose ``bind`` fails: a call bound without it took the fast path."""

    parameters = inspect.signature(simple).parameters

    def bind(self, *args, **kwargs):
        raise AssertionError("the slow path was taken")


SIMPLE_CALLS = [
    ((1,), {}),
    ((1, 5), {}),
    ((1, 5, 0.1), {}),
    ((1,), {"c": 0.2, "e": 0.0}),
    ((), {"a": 1, "b": 3}),
    ((1,), {"d": "x"}),
    ((), {"a": 1, "b": 2, "c": 1.0, "d": 4, "e": 0.5}),
]


def _reference(fn, args, kwargs) -> dict:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


@pytest.mark.parametrize("args,kwargs", SIMPLE_CALLS)
def test_bind_fast_path_equals_signature_bind(args, kwargs):
    spec = FactorySpec(simple)
    spec.signature = _NoSlowPath()  # every call here must bind on the fast path
    assert spec.bind(args, kwargs) == _reference(simple, args, kwargs)


@pytest.mark.parametrize(
    "args,kwargs",
    [
        ((), {}),  # a required argument missing
        ((1, 2, 3, 4), {}),  # d is keyword-only
        ((1,), {"f": 1}),  # unknown keyword
        ((1,), {"a": 1}),  # given twice
        ((), {"b": 2}),  # missing a, with a keyword given
    ],
)
def test_bind_raises_what_signature_bind_raises(args, kwargs):
    with pytest.raises(TypeError) as expected:
        inspect.signature(simple).bind(*args, **kwargs)
    with pytest.raises(TypeError) as got:
        FactorySpec(simple).bind(args, kwargs)
    assert str(got.value) == str(expected.value)


def test_bind_of_other_signatures_merges_var_keyword():
    spec = FactorySpec(extended)
    assert spec.bind((1, 2, 3), {"z": 4}) == {"a": 1, "b": 2, "args": (3,), "c": 3, "z": 4}
    with pytest.raises(TypeError) as expected:
        inspect.signature(extended).bind(a=1, b=2)
    with pytest.raises(TypeError) as got:
        spec.bind((), {"a": 1, "b": 2})
    assert str(got.value) == str(expected.value)


def test_check_applies_the_annotated_constraints():
    spec = FactorySpec(simple)
    assert set(spec.constraints) == {"c", "e"} and spec.dynamic == ("c", "e")
    arguments = spec.bind((1,), {"c": 1.0})
    assert spec.check(arguments) == arguments
    with pytest.raises(
        ValueError, match=re.escape("e must be a finite number in [0, 1), got 1.0.")
    ):
        spec.check(spec.bind((1,), {"e": 1.0}))
    # unannotated arguments are not checked
    spec.check(spec.bind(("anything", object()), {"d": [1, 2]}))


class Preset(OneOf):
    """A constraint that turns a preset name into its numbers."""

    def normalize(self, value: Any) -> Any:
        return {"small": (0.1, 0.2), "large": (1.0, 2.0)}[value]


def test_normalize_hook():
    def factory(preset: Annotated[str, Preset(("small", "large"))] = "small", other=None):
        return preset, other

    spec = FactorySpec(factory)
    assert spec.check(spec.bind((), {})) == {"preset": (0.1, 0.2), "other": None}
    assert spec.check(spec.bind(("large",), {"other": "large"})) == {
        "preset": (1.0, 2.0),
        "other": "large",  # not constrained: not normalized
    }
    # the check runs first: a bad value is refused, not looked up
    with pytest.raises(ValueError, match="preset must be one of 'small', 'large'; got 'huge'"):
        spec.check(spec.bind(("huge",), {}))

    # a decorated factory works with the normalized value
    seen = []

    @transform(packable=True)
    def scaled(preset: Annotated[str, Preset(("small", "large"))] = "small"):
        seen.append(preset)
        return scale(preset[0])

    scaled("large")
    assert seen == [(1.0, 2.0)]


@hypothesis.settings(max_examples=100, deadline=None, derandomize=True)
@hypothesis.given(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([(False, False), (True, False), (False, True), (True, True)]),
)
def test_interval_accepts_exactly_the_finite_values_inside(x, openness):
    low_open, high_open = openness
    interval = Interval(0.0, 1.0, low_open=low_open, high_open=high_open)
    inside = np.isfinite(x) and (x > 0 if low_open else x >= 0) and (x < 1 if high_open else x <= 1)
    if inside:
        interval.check("b", x)
    else:
        with pytest.raises(ValueError, match=r"^b must be "):
            interval.check("b", x)
