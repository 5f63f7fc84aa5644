"""Optax's Flax example: a linear regression with an ``nnx.Linear`` layer and
``nnx.Optimizer`` on ``optax.chain(optax.scale_by_adam(...), optax.scale(-LEARNING_RATE))``.

Adapted from google-deepmind/optax, examples/flax_example.ipynb,
https://github.com/google-deepmind/optax/blob/main/examples/flax_example.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: the plot (matplotlib) is left out; 50 steps instead of 100 (each is an eager
``nnx.Optimizer.update``); the loss history and the layer's final parameters are collected
in ``RESULTS``. Data, sizes and the optimizer code are the original's.

Comparison (tests/test_ported.py): the losses and parameters agree to rtol 1e-5 (measured
6e-7): ``nnx.Optimizer.update`` runs eagerly here (no ``jit``), and op-by-op evaluation
shows that gdopt's ``scale_by_adam`` orders its arithmetic differently from optax's (last
bits of float32). Under ``jit`` the two give the same bits (checked by hand on this chain,
and in tests/test_interop.py).
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

LEARNING_RATE = 1e-2
NUM_STEPS = 50
NUM_SAMPLES = 20
X_DIM = 10
Y_DIM = 5

rng = jax.random.PRNGKey(0)
params_rng, w_rng, b_rng, samples_rng, noise_rng = jax.random.split(rng, num=5)

# Creates a one linear layer instance.
model = nnx.Linear(in_features=X_DIM, out_features=Y_DIM, rngs=nnx.Rngs(params_rng))

# Generates ground truth w and b.
w = jax.random.normal(w_rng, (X_DIM, Y_DIM))
b = jax.random.normal(b_rng, (Y_DIM,))

# Generates training samples.
x_samples = jax.random.normal(samples_rng, (NUM_SAMPLES, X_DIM))
y_samples = jnp.dot(x_samples, w) + b
# Adds noise to the target.
y_samples += 0.1 * jax.random.normal(noise_rng, (NUM_SAMPLES, Y_DIM))


def make_mse_func(x_batched, y_batched):
    def mse(model):
        # Defines the squared loss for a single (x, y) pair.
        def squared_error(x, y):
            pred = model(x)
            return jnp.inner(y - pred, y - pred) / 2.0

        # Vectorizes the squared error and computes mean over the loss values.
        return jnp.mean(jax.vmap(squared_error)(x_batched, y_batched), axis=0)

    return jax.jit(mse)  # `jit`s the result.


# Instantiates the sampled loss.
loss = make_mse_func(x_samples, y_samples)

# Creates a function that returns value and gradient of the loss.
loss_grad_fn = jax.value_and_grad(loss)

tx = optax.chain(
    # Sets the parameters of Adam. Note the learning_rate is not here.
    optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
    # Puts a minus sign to *minimize* the loss.
    optax.scale(-LEARNING_RATE),
)

optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

loss_history = []

# Minimizes the loss.
for _ in range(NUM_STEPS):
    # Computes gradient of the loss.
    loss_val, grads = loss_grad_fn(model)
    loss_history.append(loss_val)
    # Updates the optimizer state and the parameters.
    optimizer.update(model, grads)

RESULTS = {
    "loss_history": jnp.stack(loss_history),
    "params": nnx.to_pure_dict(nnx.state(model, nnx.Param)),
}
