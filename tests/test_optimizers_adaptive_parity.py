"""Parity of the adaptive / sign / layer-wise / memory-lean optimizers and transforms with optax.

optax is only an oracle here: 100 steps of the fixed gradient sequence on the fixed pytree,
jitted updates, identical parameter trajectories (rtol 1e-5, atol 1e-6), with the defaults
and with non-default hyperparameters. Where gdopt deliberately differs from optax (adadelta's
and adafactor's ``learning_rate=None``), optax is given the equivalent explicit value and the
difference itself is pinned in ``test_optimizers_adaptive.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    run_trajectory,
)

optax = pytest.importorskip("optax")

# make_params' 0-D leaf is weak-typed; the state built from it would turn strongly typed after
# the first update and make every jitted trajectory compile twice, so strip the weak type.
PARAMS = jax.tree.map(lambda x: x.astype(x.dtype), make_params())
GRADS = gradient_sequence(PARAMS, steps=100)
# one compiled "params + updates" for every trajectory (run_trajectory's default is eager)
APPLY = jax.jit(gdopt.apply_updates)
MASK = {"dense": {"w": True, "b": False}, "layers": [True, True], "scale": False}


def _paper_relative_step(count):
    return jnp.minimum(1e-2, jax.lax.rsqrt(count.astype(jnp.float32) + 1.0))


def _decaying(count):
    return 0.01 / (1.0 + 0.1 * count)


# gdopt keeps hyperparameters as float32 arrays and computes RAdam's ρ_∞ = 2 / (1 - β2) - 1
# from the stored β2; optax computes ρ_∞ in float64 from the Python float but β2^t in float32.
# With a β2 that float32 represents exactly, both compute the same ρ_t (0.999 is 1e-8 off,
# which moves ρ_∞ by 0.03 and the rectifier r_t near the threshold by up to 1%).
B2_F32 = float(np.float32(0.999))

# (name, gdopt kwargs, optax kwargs or None for "the same")
OPTIMIZER_CASES = [
    ("sign_sgd", dict(learning_rate=0.01), None),
    ("signum", dict(learning_rate=0.01), None),
    ("signum", dict(learning_rate=0.02, beta=0.5), None),
    ("nadam", dict(learning_rate=0.01), None),
    ("nadam", dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8), None),
    ("nadamw", dict(learning_rate=0.01), None),
    ("nadamw", dict(learning_rate=0.01, b1=0.85, weight_decay=0.1, mask=MASK), None),
    ("radam", dict(learning_rate=0.01), dict(learning_rate=0.01, b2=B2_F32)),
    ("radam", dict(learning_rate=0.02, b1=0.8, b2=0.9921875, eps_root=1e-8, threshold=4.5), None),
    ("radam", dict(learning_rate=0.01, nesterov=True, b2=B2_F32), None),
    ("amsgrad", dict(learning_rate=0.01), None),
    ("amsgrad", dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8), None),
    (
        "amsgrad",
        dict(learning_rate=0.01, b2=B2_F32, bias_correction_mu=False, bias_correction_nu=False),
        None,
    ),
    ("adamax", dict(learning_rate=0.01), None),
    ("adamax", dict(learning_rate=0.02, b1=0.8, b2=0.95, eps=1e-4), None),
    ("adamaxw", dict(learning_rate=0.01), None),
    ("adamaxw", dict(learning_rate=0.01, b1=0.8, weight_decay=0.1, mask=MASK), None),
    ("adabelief", dict(learning_rate=0.01), None),
    ("adabelief", dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10), None),
    ("yogi", dict(learning_rate=0.01), None),
    ("yogi", dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-4), None),
    ("adadelta", dict(), dict(learning_rate=1.0)),
    (
        "adadelta",
        dict(learning_rate=0.5, rho=0.8, eps=1e-4, weight_decay=0.01, weight_decay_mask=MASK),
        None,
    ),
    ("novograd", dict(learning_rate=0.01), None),
    (
        "novograd",
        dict(learning_rate=0.02, b1=0.8, b2=0.5, eps=1e-4, eps_root=1e-6, weight_decay=0.01),
        None,
    ),
    ("fromage", dict(learning_rate=0.01), None),
    ("fromage", dict(learning_rate=0.05, min_norm=1.0), None),
    ("fromage", dict(learning_rate=_decaying), None),
    ("lamb", dict(learning_rate=0.01), None),
    (
        "lamb",
        dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-4, weight_decay=0.01, mask=MASK),
        None,
    ),
    ("lars", dict(learning_rate=0.1), None),
    (
        "lars",
        dict(
            learning_rate=0.5,
            weight_decay=0.01,
            weight_decay_mask=MASK,
            trust_coefficient=0.01,
            eps=1e-6,
            trust_ratio_mask=MASK,
            momentum=0.5,
            nesterov=True,
        ),
        None,
    ),
    ("adafactor", dict(), dict(learning_rate=_paper_relative_step)),
    (
        "adafactor",
        dict(
            learning_rate=0.05,
            min_dim_size_to_factor=2,
            decay_rate=0.7,
            clipping_threshold=0.5,
            momentum=0.9,
            weight_decay_rate=0.01,
            weight_decay_mask=MASK,
            eps=1e-20,
        ),
        None,
    ),
    (
        "adafactor",
        dict(
            learning_rate=_decaying,
            min_dim_size_to_factor=3,
            multiply_by_parameter_scale=False,
            clipping_threshold=None,
            factored=False,
        ),
        None,
    ),
    ("lion", dict(learning_rate=0.01), None),
    ("lion", dict(learning_rate=0.02, b1=0.8, b2=0.95, weight_decay=0.1, mask=MASK), None),
]


def _ids(cases):
    return [f"{c[0]}-{i}" for i, c in enumerate(cases)]


@pytest.mark.parametrize("name,kwargs,optax_kwargs", OPTIMIZER_CASES, ids=_ids(OPTIMIZER_CASES))
def test_optimizer_parity_with_optax(name, kwargs, optax_kwargs):
    ours = run_trajectory(getattr(gdopt, name)(**kwargs), PARAMS, GRADS, APPLY)
    theirs = run_trajectory(
        getattr(optax, name)(**(kwargs if optax_kwargs is None else optax_kwargs)),
        PARAMS,
        GRADS,
        APPLY,
    )
    assert_trajectories_close(ours, theirs, rtol=1e-5, atol=1e-6)


# SM3: optax 0.2.8 fails on 0-D leaves, so its side sees the scalar leaf as shape (1,) (the
# same single accumulator); the trajectories are compared after reshaping back.
def _vectorize(tree):
    return jax.tree.map(lambda x: jnp.reshape(x, (1,)) if jnp.ndim(x) == 0 else x, tree)


def _devectorize(tree, like):
    return jax.tree.map(lambda x, y: jnp.reshape(x, jnp.shape(y)), tree, like)


@pytest.mark.parametrize(
    "kwargs", [dict(learning_rate=0.01), dict(learning_rate=0.1, momentum=0.5)]
)
def test_sm3_parity_with_optax(kwargs):
    ours = run_trajectory(gdopt.sm3(**kwargs), PARAMS, GRADS, APPLY)
    theirs = run_trajectory(
        optax.sm3(**kwargs), _vectorize(PARAMS), [_vectorize(g) for g in GRADS], APPLY
    )
    assert_trajectories_close(ours, [_devectorize(t, PARAMS) for t in theirs])


def _updates(opt, grads):
    update = jax.jit(opt.update)
    state = opt.init(PARAMS)
    out = []
    for g in grads:
        u, state = update(g, state, PARAMS)
        out.append(u)
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(learning_rate=0.01),
        dict(
            learning_rate=0.02, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-3, max_step_size=0.05
        ),
    ],
)
def test_rprop_matches_optax_one_step_later(kwargs):
    """optax 0.2.8 applies at step t the step computed at t-1 (its first update is 0); gdopt
    applies the current one, as the paper does. Step sizes and sign logic agree:
    ``optax_u[t+1] = 0 where the sign flips at t+1, else gdopt's u_t``."""
    ours = jax.device_get(_updates(gdopt.rprop(**kwargs), GRADS))
    theirs = jax.device_get(_updates(optax.rprop(**kwargs), GRADS))
    grads = jax.device_get(GRADS)
    assert all(np.abs(x).max() == 0.0 for x in jax.tree.leaves(theirs[0]))
    # step t+1's sign test compares g_{t+1} with the stored Δ_t sign(g_t) = -u_t
    expected = [
        jax.tree.map(lambda u, g: np.where(g * u > 0, 0.0, u), ours[t], grads[t + 1])
        for t in range(len(grads) - 1)
    ]
    assert_trajectories_close(theirs[1:], expected, rtol=1e-6, atol=0.0)


def test_noisy_sgd_without_noise_matches_optax():
    ours = run_trajectory(gdopt.noisy_sgd(0.05, eta=0.0, key=3), PARAMS, GRADS, APPLY)
    theirs = run_trajectory(optax.noisy_sgd(0.05, eta=0.0, key=3), PARAMS, GRADS, APPLY)
    assert_trajectories_close(ours, theirs)


# ----------------------------------------------------------------------------- transforms


@jax.jit
def _small_steps(p, u):
    """Move by 1% of each transform's output (the outputs are O(1) directions)."""
    return jax.tree.map(lambda a, b: (a + 0.01 * b).astype(a.dtype), p, u)


# Each named optimizer above is the same chain of transforms as optax's, so its parity cases
# already pin every transform at its defaults and at the optimizers' non-default values. The
# cases below cover the transform arguments no named optimizer reaches.
TRANSFORM_CASES = [
    ("scale_by_belief", dict(b1=0.5, b2=0.5, eps=1e-6, eps_root=1e-8, nesterov=True)),
    ("scale_by_yogi", dict(b1=0.5, b2=0.5, eps=1e-4, eps_root=1e-8, initial_accumulator_value=0.1)),
    ("scale_by_trust_ratio", dict(min_norm=1.5, trust_coefficient=0.1, eps=1e-3)),
    ("scale_by_lion", dict(b1=0.5, b2=0.5, mode="smooth", smooth_beta=3.0)),
    ("scale_by_lion", dict(mode="refined")),
    ("scale_by_param_block_norm", dict()),
    ("scale_by_param_block_norm", dict(min_scale=2.0)),
    ("scale_by_param_block_rms", dict(min_scale=1.0)),
]


@pytest.mark.parametrize("name,kwargs", TRANSFORM_CASES, ids=_ids(TRANSFORM_CASES))
def test_transform_parity_with_optax(name, kwargs):
    ours = run_trajectory(getattr(gdopt, name)(**kwargs), PARAMS, GRADS[:50], _small_steps)
    theirs = run_trajectory(getattr(optax, name)(**kwargs), PARAMS, GRADS[:50], _small_steps)
    assert_trajectories_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(b1=0.5, b2=0.5, eps=1e-4)])
def test_scale_by_sm3_parity_with_optax(kwargs):
    ours = run_trajectory(gdopt.scale_by_sm3(**kwargs), PARAMS, GRADS[:50], _small_steps)
    theirs = run_trajectory(
        optax.scale_by_sm3(**kwargs),
        _vectorize(PARAMS),
        [_vectorize(g) for g in GRADS[:50]],
        _small_steps,
    )
    assert_trajectories_close(ours, [_devectorize(t, PARAMS) for t in theirs])


def test_default_signatures_match_optax():
    """Same argument names, order and defaults as optax (gdopt may add keyword-only extras)."""
    import inspect

    names = [c[0] for c in OPTIMIZER_CASES] + ["sm3", "noisy_sgd"]
    names += [c[0] for c in TRANSFORM_CASES] + ["scale_by_sm3"]
    for name in sorted(set(names)):
        ours = inspect.signature(getattr(gdopt, name)).parameters
        theirs = inspect.signature(getattr(optax, name)).parameters
        for arg, p in theirs.items():
            assert arg in ours, f"{name} lacks optax's argument {arg}"
            q = ours[arg]
            if name == "scale_by_factored_rms" and arg == "decay_rate_fn":
                continue  # optax's default is its private function; gdopt's None means the same
            assert q.kind == p.kind, f"{name}({arg}) kind differs"
            default = p.default
            if isinstance(default, float | int) and not isinstance(default, bool):
                np.testing.assert_equal(q.default, default, err_msg=f"{name}({arg})")
            else:
                assert q.default == default or q.default is default, f"{name}({arg})"
        extra = [a for a, q in ours.items() if a not in theirs]
        assert all(ours[a].kind is inspect.Parameter.KEYWORD_ONLY for a in extra), name
