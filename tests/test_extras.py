"""``gdopt/extras.py``: optax's remaining combinators and utilities, compared with optax."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdopt
from tests.helpers import gradient_sequence, make_params, oracle, run_trajectory

_PARAMS = make_params()
_GRADS = gradient_sequence(_PARAMS, 8)

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
    ours = run_trajectory(build(gdopt), _PARAMS, _GRADS)
    with oracle():
        ref = run_trajectory(build(optax), _PARAMS, _GRADS, apply=optax.apply_updates)
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


def test_numeric_helpers_match_optax():
    x = jnp.array([[3.0, -4.0], [0.0, 0.0]])
    for ours, theirs in [
        (gdopt.safe_norm(x, 1e-3), optax.safe_norm(x, 1e-3)),
        (gdopt.safe_norm(x, 1e-3, axis=1), optax.safe_norm(x, 1e-3, axis=1)),
        (
            gdopt.safe_norm(x, 0.1, ord=1, axis=1, keepdims=True),
            optax.safe_norm(x, 0.1, ord=1, axis=1, keepdims=True),
        ),
        (gdopt.safe_root_mean_squares(x, 1e-3), optax.safe_root_mean_squares(x, 1e-3)),
        (
            gdopt.safe_root_mean_squares(jnp.zeros(3), 1e-3),
            optax.safe_root_mean_squares(jnp.zeros(3), 1e-3),
        ),
        (gdopt.global_norm(_PARAMS), optax.tree.norm(_PARAMS)),
        (
            gdopt.unitwise_clip(jnp.abs(x), jnp.full_like(x, 2.0), x),
            optax.transforms.unitwise_clip(jnp.abs(x), jnp.full_like(x, 2.0), x),
        ),
    ]:
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    grad = jax.grad(lambda v: gdopt.safe_norm(v, 1e-3))(jnp.zeros(2))
    assert np.all(np.isfinite(grad))
    new, old = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([0.0, 4.0])}
    np.testing.assert_allclose(
        gdopt.incremental_update(new, old, 0.25)["w"], optax.incremental_update(new, old, 0.25)["w"]
    )
    for step in (3, 4):
        np.testing.assert_array_equal(
            gdopt.periodic_update(new, old, jnp.array(step), 2)["w"],
            optax.periodic_update(new, old, jnp.array(step), 2)["w"],
        )
    grad = jax.grad(lambda v: jnp.sum(gdopt.scale_gradient(v, 0.25) ** 2))(jnp.array([2.0]))
    np.testing.assert_allclose(grad, [1.0])
    np.testing.assert_array_equal(gdopt.scale_gradient(jnp.array([2.0]), 0.25), [2.0])


@pytest.mark.parametrize("uniform", [True, False])
def test_per_example_layer_norm_clip_matches_optax(uniform):
    grads = [
        jnp.array([[0.0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]]),
        jnp.array([[1.0, 2], [3, 4], [0, 0], [0.1, 0.1]]),
    ]
    sums, counts = gdopt.per_example_layer_norm_clip(grads, 1.0, uniform=uniform)
    with oracle():
        ref_sums, ref_counts = optax.per_example_layer_norm_clip(grads, 1.0, uniform=uniform)
    for a, b in zip(sums, ref_sums, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert [int(c) for c in counts] == [int(c) for c in ref_counts]
