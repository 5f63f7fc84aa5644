"""Optax's "Getting started": reading the learning rate of ``inject_hyperparams(optax.adamw)``
driven by a warm-up cosine schedule.

Adapted from google-deepmind/optax, docs/getting_started.ipynb (section "Accessing learning
rate", with the MLP set-up of "Example: Fitting a MLP" it trains),
https://github.com/google-deepmind/optax/blob/main/docs/getting_started.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: ``np.random.seed(0)`` before the data are drawn (the original is unseeded), 200
training steps instead of 1000, the final params and learning rates collected in
``RESULTS``. The optimizer code is the original's.

Comparison (tests/test_ported.py): bit for bit once gdopt runs it
(``inject_hyperparams(adamw)`` is gdopt's own state layout, so no tolerance is expected);
today gdopt rejects the schedule's value at step 0 (``ValueError: learning_rate must be a
finite number in (0, inf), got 0.0``), a strict xfail.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

np.random.seed(0)
BATCH_SIZE = 5
NUM_TRAIN_STEPS = 200
RAW_TRAINING_DATA = np.random.randint(255, size=(NUM_TRAIN_STEPS, BATCH_SIZE, 1))

TRAINING_DATA = np.unpackbits(RAW_TRAINING_DATA.astype(np.uint8), axis=-1)
LABELS = (
    jax.nn.one_hot(RAW_TRAINING_DATA % 2, 2)
    .astype(jnp.float32)
    .reshape(NUM_TRAIN_STEPS, BATCH_SIZE, 2)
)

initial_params = {
    "hidden": jax.random.normal(shape=[8, 32], key=jax.random.PRNGKey(0)),
    "output": jax.random.normal(shape=[32, 2], key=jax.random.PRNGKey(1)),
}


def net(x: jnp.ndarray, params: optax.Params) -> jnp.ndarray:
    x = jnp.dot(x, params["hidden"])
    x = jax.nn.relu(x)
    x = jnp.dot(x, params["output"])
    return x


def loss(params: optax.Params, batch: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    y_hat = net(batch, params)

    # optax also provides a number of common loss functions.
    loss_value = optax.sigmoid_binary_cross_entropy(y_hat, labels).sum(axis=-1)

    return loss_value.mean()


def fit(params: optax.Params, optimizer: optax.GradientTransformation) -> optax.Params:
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch, labels):
        loss_value, grads = jax.value_and_grad(loss)(params, batch, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss_value

    for i, (batch, labels) in enumerate(zip(TRAINING_DATA, LABELS, strict=True)):
        params, opt_state, loss_value = step(params, opt_state, batch, labels)
        if i % 100 == 0:
            print(f"step {i}, loss: {loss_value}")

    return params, opt_state


schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=1.0,
    warmup_steps=50,
    decay_steps=1_000,
    end_value=0.0,
)

optimizer = optax.inject_hyperparams(optax.adamw)(learning_rate=schedule)

params = initial_params
state = optimizer.init(params)
print("initial learning rate:", state.hyperparams["learning_rate"])
initial_learning_rate = state.hyperparams["learning_rate"]

injected_params, state = fit(initial_params, optimizer)

print("final learning rate:", state.hyperparams["learning_rate"])
final_learning_rate = state.hyperparams["learning_rate"]


RESULTS = {
    "injected_params": injected_params,
    "learning_rates": jnp.stack([initial_learning_rate, final_learning_rate]),
}
