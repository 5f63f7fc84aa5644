"""Optax's "Getting started", part 2: fitting an MLP (parity of 8-bit integers), weight decay,
schedules and clipping, and the components section.

Adapted from google-deepmind/optax, docs/getting_started.ipynb (sections "Example: Fitting a
MLP", "Weight Decay, Schedules and Clipping" and "Components" up to the losses; "Accessing
learning rate" is optax_quick_start_inject_hyperparams.py),
https://github.com/google-deepmind/optax/blob/main/docs/getting_started.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: ``np.random.seed(0)`` before the data are drawn (the original is unseeded), 200
training steps instead of 1000, every step's loss appended to ``LOSSES`` and the results
collected in ``RESULTS``. The optimizer code is the original's.

Comparison (tests/test_ported.py): ``scale_by_rms`` and the schedule values are
bit-identical. gdopt's named optimizers keep their hyperparameters in their state as
float32, so ``1 - b2`` is computed from float32 ``b2`` (a relative difference of ~6e-6 in
the first update, docs/migration.md): the ``optax.adam`` run agrees to rtol 1e-4 with atol
1e-5 (losses of every step, final params; measured: 3e-5 relative on the losses, 2.6e-6
absolute on the params). The ``clip(1.0)`` + ``adamw(warmup-cosine to 1.0)`` run is
chaotic once the learning rate nears 1 (at 300 steps, the per-step losses differed by 4e-6
at step 30, 0.5% at step 50 and 60% at step 60): its first 30 losses are compared to rtol
1e-4 and its final full-data loss to rtol 1e-3, not its params.
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


LOSSES = []  # added: every step's loss


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
        LOSSES.append(loss_value)
        if i % 100 == 0:
            print(f"step {i}, loss: {loss_value}")

    return params, opt_state


# Finally, we can fit our parametrized function using the Adam optimizer
# provided by optax.
optimizer = optax.adam(learning_rate=1e-2)
adam_params, _ = fit(initial_params, optimizer)
adam_losses, LOSSES = jnp.stack(LOSSES), []

schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=1.0,
    warmup_steps=50,
    decay_steps=1_000,
    end_value=0.0,
)

optimizer = optax.chain(
    optax.clip(1.0),
    optax.adamw(learning_rate=schedule),
)

clip_adamw_params, _ = fit(initial_params, optimizer)
clip_adamw_losses = jnp.stack(LOSSES)

# Components (``params`` was set in "Accessing learning rate").
params = initial_params
tx = optax.scale_by_rms()
state = tx.init(params)  # init stats
grads = jax.grad(loss)(params, TRAINING_DATA, LABELS)
updates, state = tx.update(grads, state, params)  # transform & update stats.
rms_updates = updates

learning_rate = 1e-3
schedule_fn = optax.polynomial_schedule(init_value=1.0, end_value=0.0, power=1, transition_steps=5)

schedule_values = []
for step_count in range(6):
    print(schedule_fn(step_count))  # [1., 0.8, 0.6, 0.4, 0.2, 0.]
    schedule_values.append(schedule_fn(step_count))

RESULTS = {
    "adam_loss": loss(adam_params, TRAINING_DATA, LABELS),
    "adam_params": adam_params,
    "adam_losses": adam_losses,
    "clip_adamw_loss": loss(clip_adamw_params, TRAINING_DATA, LABELS),
    "clip_adamw_losses_warmup": clip_adamw_losses[:30],
    "rms_updates": rms_updates,
    "schedule_values": jnp.stack(schedule_values),
}
