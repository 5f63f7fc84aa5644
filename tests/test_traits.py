"""``gdopt/_traits.py``: packability composes through every combinator and wrapper
(``chain``, ``masked``, ``partition``, ``inject_hyperparams``, ``apply_if_finite``,
``accumulate``, ``lookahead``, ``ema_params``, ``schedule_free``) and ``mark_packable``; the
structural key identifies the computation (hyperparameter values are state, static arguments
are not, an array argument makes it unknown, combinations key from their parts);
``structural_key`` and the ``check_transform`` message."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import gdopt
from gdopt._traits import Traits, structural_key, traits_of, with_traits


def key(tx):
    return traits_of(tx).key


def foreign():
    """A transformation gdopt did not build (a plain pair)."""
    return gdopt.GradientTransformation(lambda p: (), lambda u, s, p=None, **kw: (u, s))


PACKABLE, NOT_PACKABLE = gdopt.adam(0.1), gdopt.lamb(0.1)  # elementwise; per-array trust ratios

WRAPPERS = {
    "apply_if_finite": lambda inner: gdopt.apply_if_finite(inner, 3),
    "accumulate": lambda inner: gdopt.accumulate(inner, 2),
    "lookahead": lambda inner: gdopt.lookahead(inner, 2, 0.5),
    "ema_params": lambda inner: gdopt.ema_params(inner, 0.9),
    "schedule_free": lambda inner: gdopt.schedule_free(inner, 0.1),
}


# ----------------------------------------------------------------------------- packability


def test_unknown_transformations_are_not_packable_and_have_no_key():
    assert traits_of(foreign()).packable is False and key(foreign()) is None
    assert traits_of(object()).packable is False


def test_chain_is_packable_when_every_part_is():
    assert gdopt.is_packable(gdopt.chain(gdopt.scale(1.0), gdopt.clip_by_global_norm(1.0)))
    assert gdopt.is_packable(gdopt.chain(gdopt.clip_by_global_norm(1.0), PACKABLE))
    assert not gdopt.is_packable(gdopt.chain(gdopt.scale(1.0), gdopt.clip_by_block_rms(1.0)))
    assert not gdopt.is_packable(gdopt.chain(PACKABLE, foreign()))
    assert not gdopt.is_packable(gdopt.chain(PACKABLE, NOT_PACKABLE))
    assert gdopt.is_packable(gdopt.chain(PACKABLE, gdopt.mark_packable(foreign())))


def test_masks_and_partitions():
    # a bool mask selects all or nothing; a tree mask selects leaves
    assert gdopt.is_packable(gdopt.masked(PACKABLE, True))
    assert not gdopt.is_packable(gdopt.masked(PACKABLE, {"w": True}))
    assert not gdopt.is_packable(gdopt.masked(NOT_PACKABLE, True))
    assert gdopt.is_packable(gdopt.add_decayed_weights(0.1, mask=True))
    assert not gdopt.is_packable(gdopt.add_decayed_weights(0.1, mask={"w": True}))
    assert not gdopt.is_packable(gdopt.adamw(0.1, mask=lambda p: p))
    # parameter groups split by leaf, however packable the groups are
    both = {"a": PACKABLE, "b": gdopt.sgd(0.1)}
    assert not gdopt.is_packable(gdopt.partition(both, {"w": "a", "b": "b"}))


def test_inject_hyperparams_keeps_the_factory_packability():
    assert gdopt.is_packable(gdopt.inject_hyperparams(gdopt.adam)(learning_rate=0.1))
    assert not gdopt.is_packable(gdopt.inject_hyperparams(gdopt.lamb)(learning_rate=0.1))
    assert gdopt.is_packable(gdopt.with_hyperparams(lambda lr: gdopt.sgd(lr), {"lr": 0.1}))


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_wrappers_are_packable_when_their_inner_transformation_is(name):
    wrap = WRAPPERS[name]
    assert gdopt.is_packable(wrap(PACKABLE))
    assert not gdopt.is_packable(wrap(NOT_PACKABLE))
    assert not gdopt.is_packable(wrap(foreign()))
    assert gdopt.is_packable(wrap(gdopt.mark_packable(foreign())))


def test_accumulate_with_a_skip_function_is_not_packable():
    skip = lambda updates, step, params: (jnp.asarray(False), ())
    assert not gdopt.is_packable(gdopt.accumulate(PACKABLE, 2, should_skip_update_fn=skip))


def test_mark_packable_keeps_the_key():
    assert gdopt.is_packable(gdopt.mark_packable(foreign()))
    adam = gdopt.adam(0.1)
    assert key(gdopt.mark_packable(adam)) == key(adam)
    assert traits_of(gdopt.mark_packable(adam)).factory is traits_of(adam).factory
    with pytest.raises(TypeError, match="GradientTransformation"):
        gdopt.mark_packable(gdopt.adam)


def test_mark_packable_does_not_modify_a_foreign_transformation():
    t = foreign()
    gdopt.mark_packable(t)
    assert not gdopt.is_packable(t)


def test_with_traits_never_modifies_its_input():
    t = gdopt.scale(2.0)
    before = traits_of(t)
    out = with_traits(t, Traits(packable=False, key=("other",)))
    assert traits_of(t) is before and key(out) == ("other",)
    assert out.update({"w": 1.0}, out.init({"w": 1.0}))[0] == {"w": 2.0}


# ----------------------------------------------------------------------------- keys


def test_named_optimizer_keys_ignore_hyperparameter_values():
    k = key(gdopt.adam(1e-3))
    assert k is not None
    assert key(gdopt.adam(3e-3)) == k  # values are state
    assert key(gdopt.adam(jnp.asarray(3e-3), b1=0.5)) == k
    assert key(gdopt.adam(1e-3, nesterov=True)) != k  # a static argument
    assert key(gdopt.adam(1e-3, mu_dtype=jnp.bfloat16)) != k
    assert key(gdopt.adam(gdopt.linear_schedule(1e-3, 0.0, 10))) != k  # schedules are code
    assert key(gdopt.adamw(1e-3)) != k and key(gdopt.sgd(1e-3)) != key(gdopt.sgd(1e-3, 0.9))


def test_transform_keys_hold_their_arguments():
    assert key(gdopt.scale(2.0)) == key(gdopt.scale(2.0)) is not None
    assert key(gdopt.scale(2.0)) != key(gdopt.scale(3.0))
    assert key(gdopt.scale(jnp.asarray(2.0))) is None  # an array's contents are data
    assert key(gdopt.clip(1.0)) != key(gdopt.scale(1.0))


def test_combination_keys_come_from_their_parts():
    a = gdopt.chain(gdopt.clip_by_global_norm(1.0), gdopt.adam(1e-3))
    assert key(a) is not None
    assert key(gdopt.chain(gdopt.clip_by_global_norm(1.0), gdopt.adam(3e-3))) == key(a)
    assert key(gdopt.chain(gdopt.clip_by_global_norm(2.0), gdopt.adam(1e-3))) != key(a)
    assert key(gdopt.chain(gdopt.adam(1e-3), gdopt.clip_by_global_norm(1.0))) != key(a)
    assert key(gdopt.chain(gdopt.scale(jnp.asarray(1.0)), gdopt.adam(1e-3))) is None
    assert key(gdopt.chain(foreign(), gdopt.adam(1e-3))) is None
    # wrappers: the inner key and the static arguments
    assert key(gdopt.apply_if_finite(gdopt.adam(1e-3), 3)) == key(
        gdopt.apply_if_finite(gdopt.adam(3e-3), 3)
    )
    assert key(gdopt.apply_if_finite(gdopt.adam(1e-3), 3)) != key(
        gdopt.apply_if_finite(gdopt.adam(1e-3), 4)
    )
    assert key(gdopt.masked(gdopt.adam(1e-3), {"w": True})) != key(
        gdopt.masked(gdopt.adam(1e-3), {"w": False})
    )
    assert key(gdopt.named_chain(("a", gdopt.scale(1.0)))) != key(
        gdopt.named_chain(("b", gdopt.scale(1.0)))
    )


def test_structural_key():
    assert len({structural_key(1), structural_key(1.0), structural_key(True)}) == 3
    assert structural_key((1, "a")) == structural_key((1, "a")) != structural_key([1, "a"])
    assert structural_key({"b": 1, "a": 2}) == structural_key({"a": 2, "b": 1})
    assert (
        structural_key({"a": jnp.ones(2)}) is None and structural_key([{}, [jnp.ones(1)]]) is None
    )
    f = lambda x: x
    assert structural_key(f) == ("id", f) and structural_key(f) != structural_key(lambda x: x)


def test_lazy_key_is_evaluated_once():
    calls = []
    traits = Traits(True, key=lambda: calls.append(1) or ("k",))
    assert traits.key == ("k",) and traits.key == ("k",) and calls == [1]


def test_factory_not_called_is_a_clear_error():
    with pytest.raises(TypeError, match="gdopt.adam instead of gdopt.adam"):
        gdopt.chain(gdopt.adam)
    with pytest.raises(TypeError, match="apply_if_finite's inner must be a GradientTransformation"):
        gdopt.apply_if_finite(gdopt.sgd, 3)
