"""``gdopt/optimizers/schedule_free.py``: schedule-free SGD and AdamW.

The evaluation point ``schedule_free_eval_params`` (from ``gdopt/wrappers.py``) of both
optimizers against optax.contrib's after 20 steps, its error on a state that is not
schedule-free, and ``params`` required by ``update``. Oracle parity (optax.contrib and the
authors' ``schedulefree`` package, warm-up included), convergence judged at the evaluation
point, and bad values are the registry's (``tests/test_optimizers.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from tests.helpers import assert_trajectories_close, gradient_sequence, make_params, oracle
from tests.registry import f32

PARAMS = make_params()
GRADS = gradient_sequence(PARAMS, steps=20)


def _eval_point(opt, eval_fn):
    apply = jax.jit(lambda p, u: jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u))
    p, s = PARAMS, opt.init(PARAMS)
    update = jax.jit(opt.update)
    for g in GRADS:
        u, s = update(g, s, p)
        p = apply(p, u)
    return eval_fn(s, p)


@pytest.mark.parametrize(
    "name,kwargs,optax_kwargs",
    [
        ("schedule_free_adamw", dict(learning_rate=0.05), dict(learning_rate=0.05, b1=f32(0.9))),
        (
            "schedule_free_sgd",
            dict(learning_rate=0.1, b1=0.7),
            dict(learning_rate=0.1, b1=f32(0.7)),
        ),
    ],
    ids=["adamw", "sgd"],
)
def test_schedule_free_eval_params_match_optax(name, kwargs, optax_kwargs):
    import optax.contrib as oc

    ours = _eval_point(getattr(gdopt, name)(**kwargs), gdopt.schedule_free_eval_params)
    with oracle():
        theirs = _eval_point(getattr(oc, name)(**optax_kwargs), oc.schedule_free_eval_params)
    assert_trajectories_close([ours], [theirs], rtol=1e-5, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(ours)[0], jax.tree.leaves(PARAMS)[0])


def test_schedule_free_eval_params_needs_a_schedule_free_state():
    with pytest.raises(ValueError, match="ScheduleFreeState"):
        gdopt.schedule_free_eval_params(gdopt.adam(0.1).init(jnp.zeros(2)), jnp.zeros(2))


@pytest.mark.parametrize("name", ["schedule_free_sgd", "schedule_free_adamw"])
def test_params_are_required(name):
    opt = getattr(gdopt, name)()
    with pytest.raises(ValueError, match="params"):
        opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
