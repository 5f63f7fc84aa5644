"""Optax's "Getting started": a schedule for a hyperparameter other than the learning rate,
``inject_hyperparams(optax.clip_by_global_norm)(max_norm=optax.linear_schedule(...))``.

Adapted from google-deepmind/optax, docs/getting_started.ipynb (section "Modifying
hyperparameters of optimizers in a schedule"),
https://github.com/google-deepmind/optax/blob/main/docs/getting_started.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: the schedule's values along the 100 updates are collected in ``RESULTS``. The
optimizer code is the original's (including ``update(None, state)``: a stateless transform
given no gradients).

Comparison (tests/test_ported.py): bit for bit once gdopt runs it; today gdopt refuses the
schedule (``TypeError: max_norm must be a number or an array (a schedule is not accepted
here)``), a strict xfail.
"""

import jax.numpy as jnp
import optax

decaying_global_norm_tx = optax.inject_hyperparams(optax.clip_by_global_norm)(
    max_norm=optax.linear_schedule(1.0, 0.0, transition_steps=99)
)

opt_state = decaying_global_norm_tx.init(None)
assert opt_state.hyperparams["max_norm"] == 1.0, "Max norm should start at 1.0"
max_norms = []
for _ in range(100):
    _, opt_state = decaying_global_norm_tx.update(None, opt_state)
    max_norms.append(opt_state.hyperparams["max_norm"])

assert opt_state.hyperparams["max_norm"] == 0.0, "Max norm should end at 0.0"


RESULTS = {"max_norm_schedule": jnp.stack(max_norms)}
