"""``gdopt/optimizers/lr_free.py``: Prodigy and D-Adapt AdamW.

``params`` required by ``update``; Prodigy's message for a bad ``betas`` element names the
element; a hyperparameter written with ``set_hyperparams`` is the one read back. Oracle
parity (optax.contrib, prodigyopt, dadaptation), convergence and bad values are the
registry's (``tests/test_optimizers.py``).
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import gdopt


@pytest.mark.parametrize("name", ["prodigy", "dadapt_adamw"])
def test_params_are_required(name):
    opt = getattr(gdopt, name)()
    with pytest.raises(ValueError, match="params"):
        opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))


def test_prodigy_bad_beta_names_the_element():
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        gdopt.prodigy(betas=(0.9, 1.5))


def test_prodigy_weight_decay_lives_in_the_state():
    state = gdopt.set_hyperparams(gdopt.prodigy().init(jnp.zeros(2)), weight_decay=0.5)
    assert float(gdopt.get_hyperparams(state)["weight_decay"]) == 0.5
