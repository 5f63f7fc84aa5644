"""Optax's "Getting started", part 1: fitting a linear model.

Adapted from google-deepmind/optax, docs/getting_started.ipynb (sections "Example: Fitting a
Linear Model" and "Custom optimizers"), https://github.com/google-deepmind/optax/blob/main/docs/getting_started.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: the two update loops run 100 steps instead of 1000 (eager steps cost ~3 ms each) and
their ``allclose`` assertions take ``atol=1e-2`` accordingly; the final values are collected
in ``RESULTS``. The optimizer code is the original's.

Comparison (tests/test_ported.py): the custom chain (``scale_by_adam`` and friends) is
bit-identical; ``optax.adam``'s parameters agree to rtol 1e-5 (measured 1.2e-7), because
gdopt's named optimizers keep their hyperparameters in their state as float32 (optax's
``inject_hyperparams`` layout): ``1 - b2`` is computed from float32 ``b2``, not from the
Python float (docs/migration.md).
"""

import functools

import jax
import jax.numpy as jnp
import optax


@functools.partial(jax.vmap, in_axes=(None, 0))
def network(params, x):
    return jnp.dot(params, x)


def compute_loss(params, x, y):
    y_pred = network(params, x)
    loss = jnp.mean(optax.l2_loss(y_pred, y))
    return loss


key = jax.random.PRNGKey(42)
target_params = 0.5

# Generate some data.
xs = jax.random.normal(key, (16, 2))
ys = jnp.sum(xs * target_params, axis=-1)

start_learning_rate = 1e-1
optimizer = optax.adam(start_learning_rate)

# Initialize parameters of the model + optimizer.
params = jnp.array([0.0, 0.0])
opt_state = optimizer.init(params)

# A simple update loop.
for _ in range(100):
    grads = jax.grad(compute_loss)(params, xs, ys)
    updates, opt_state = optimizer.update(grads, opt_state)
    params = optax.apply_updates(params, updates)

assert jnp.allclose(params, target_params, atol=1e-2), (
    "Optimization should retrieve the target params used to generate the data."
)
adam_params = params

# Exponential decay of the learning rate.
scheduler = optax.exponential_decay(
    init_value=start_learning_rate, transition_steps=1000, decay_rate=0.99
)

# Combining gradient transforms using `optax.chain`.
gradient_transform = optax.chain(
    optax.clip_by_global_norm(1.0),  # Clip by the gradient by the global norm.
    optax.scale_by_adam(),  # Use the updates from adam.
    optax.scale_by_schedule(scheduler),  # Use the learning rate from the scheduler.
    # Scale updates by -1 since optax.apply_updates is additive and we want to descend on the loss.
    optax.scale(-1.0),
)

# Initialize parameters of the model + optimizer.
params = jnp.array([0.0, 0.0])  # Recall target_params=0.5.
opt_state = gradient_transform.init(params)

# A simple update loop.
for _ in range(100):
    grads = jax.grad(compute_loss)(params, xs, ys)
    updates, opt_state = gradient_transform.update(grads, opt_state)
    params = optax.apply_updates(params, updates)

assert jnp.allclose(params, target_params, atol=1e-2), (
    "Optimization should retrieve the target params used to generate the data."
)
chain_params = params

RESULTS = {
    "adam_params": adam_params,
    "chain_params": chain_params,
}
print({k: v.tolist() for k, v in RESULTS.items()})
