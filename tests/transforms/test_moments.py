"""``gdopt/transforms/moments.py``: the moment-based scalings (AMSGrad, AdaMax, AdaBelief, Yogi,
AdaDelta, RAdam, Rprop...).

Parity with optax's transform of the same name at the arguments no named optimizer reaches
(the optimizers' own parity cases live in ``tests/registry.py``); bfloat16 moments
(``mu_dtype``/``nu_dtype``) kept across steps and under ``lax.cond``; bfloat16 parameters and
``None`` leaves passed through; optax's argument kinds. Hand-computed steps of the named
optimizers built on these transforms are in ``tests/optimizers/``.
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import gdopt
from gdopt.transforms import moments
from tests.transforms.common import (
    assert_argument_kinds_are_optax,
    assert_bfloat16_and_none_leaves_pass_through,
    assert_moment_dtypes_kept_under_cond,
    assert_parity_with_optax,
    optax_counterparts,
)

# Each named optimizer is the same chain of transforms as optax's, so the registry's parity
# cases pin every transform at its defaults and at the optimizers' non-default values. These
# cover the transform arguments no named optimizer reaches.
TRANSFORM_CASES = [
    ("scale_by_belief", dict(b1=0.5, b2=0.5, eps=1e-6, eps_root=1e-8, nesterov=True)),
    ("scale_by_yogi", dict(b1=0.5, b2=0.5, eps=1e-4, eps_root=1e-8, initial_accumulator_value=0.1)),
]


@pytest.mark.parametrize("name,kwargs", TRANSFORM_CASES, ids=[c[0] for c in TRANSFORM_CASES])
def test_transform_parity_with_optax(name, kwargs):
    assert_parity_with_optax(name, kwargs)


MOMENT_DTYPE_TRANSFORMS = {
    "scale_by_amsgrad": lambda d: gdopt.scale_by_amsgrad(mu_dtype=d, nu_dtype=d),
    "scale_by_adamax": lambda d: gdopt.scale_by_adamax(mu_dtype=d, nu_dtype=d),
    "scale_by_belief": lambda d: gdopt.scale_by_belief(mu_dtype=d, nu_dtype=d),
    "scale_by_yogi": lambda d: gdopt.scale_by_yogi(mu_dtype=d, nu_dtype=d),
    "scale_by_radam": lambda d: gdopt.scale_by_radam(mu_dtype=d, nu_dtype=d),
}


@pytest.mark.parametrize("name", sorted(MOMENT_DTYPE_TRANSFORMS))
def test_moment_dtypes_are_kept_across_steps_and_under_cond(name):
    assert_moment_dtypes_kept_under_cond(MOMENT_DTYPE_TRANSFORMS[name](jnp.bfloat16))


TRANSFORMS = {
    "scale_by_amsgrad": lambda: gdopt.scale_by_amsgrad(),
    "scale_by_adamax": lambda: gdopt.scale_by_adamax(),
    "scale_by_belief": lambda: gdopt.scale_by_belief(),
    "scale_by_yogi": lambda: gdopt.scale_by_yogi(),
    "scale_by_adadelta": lambda: gdopt.scale_by_adadelta(),
    "scale_by_radam": lambda: gdopt.scale_by_radam(),
    "scale_by_rprop": lambda: gdopt.scale_by_rprop(0.1),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_bfloat16_params_and_none_leaves_pass_through(name):
    assert_bfloat16_and_none_leaves_pass_through(TRANSFORMS[name]())


@pytest.mark.parametrize("name", optax_counterparts(moments))
def test_argument_kinds_are_optax(name):
    assert_argument_kinds_are_optax(name)
