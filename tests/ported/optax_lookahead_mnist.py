"""Optax's lookahead example: a Flax NNX CNN trained with ``optax.lookahead(optax.adam(...),
SYNC_PERIOD, SLOW_LEARNING_RATE)`` on ``optax.LookaheadParams``, evaluated on the slow
weights.

Adapted from google-deepmind/optax, examples/lookahead_mnist.ipynb,
https://github.com/google-deepmind/optax/blob/main/examples/lookahead_mnist.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: data: gdopt's bundled 8x8 digits (``gdopt.data.load_digits``, pixels scaled to
[0, 1]) in place of MNIST from tensorflow_datasets, batched in one fixed shuffled order
(``RandomState(45)``, for grain's ``shuffle(seed=45)``); sizes: ``BATCH_SIZE = 128`` instead
of 256, ``dense1`` takes 2*2*64 features (the 8x8 images pooled twice) instead of 7*7*64;
the per-step metrics and the final slow weights' test metrics collected in ``RESULTS``. The
optimizer code is the original's.

Comparison (tests/test_ported.py): gdopt cannot run it: it has no ``optax.LookaheadParams``
(gdopt's ``lookahead`` keeps the slow weights in its state and takes plain parameters,
docs/migration.md), so ``optax.LookaheadParams.init_synced(params)`` raises
``AttributeError``.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gdopt.data import load_digits

FAST_LEARNING_RATE = 0.002
SLOW_LEARNING_RATE = 0.1
SYNC_PERIOD = 5
BATCH_SIZE = 128
N_EPOCHS = 1

# gdopt's bundled digits in place of tfds' MNIST (see the header).
_split = load_digits(standardize=False)
_train_x, _train_y = (np.asarray(a) for a in _split.train)
_test_x, _test_y = (np.asarray(a) for a in _split.test)
_order = np.random.RandomState(45).permutation(len(_train_y))


def _batches(x, y, order=None):
    order = np.arange(len(y)) if order is None else order
    for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
        idx = order[start : start + BATCH_SIZE]
        yield x[idx].reshape(-1, 8, 8, 1) / 16.0, y[idx]


train_loader_batched = list(_batches(_train_x, _train_y, _order))
test_loader_batched = list(_batches(_test_x, _test_y))
IMG_SIZE = (8, 8, 1)
NUM_CLASSES = 10


class CNN(nnx.Module):
    """A simple CNN model."""

    def __init__(self, in_features, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(
            in_features=in_features, out_features=32, kernel_size=(3, 3), rngs=rngs
        )
        self.pool1 = partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.conv2 = nnx.Conv(in_features=32, out_features=64, kernel_size=(3, 3), rngs=rngs)
        self.pool2 = partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.dense1 = nnx.Linear(in_features=2 * 2 * 64, out_features=256, rngs=rngs)
        self.dense2 = nnx.Linear(in_features=256, out_features=10, rngs=rngs)

    def __call__(self, x):
        x = self.conv1(x)
        x = nnx.relu(x)
        x = self.pool1(x)
        x = self.conv2(x)
        x = nnx.relu(x)
        x = self.pool2(x)
        x = x.reshape((x.shape[0], -1))  # flatten
        x = self.dense1(x)
        x = nnx.relu(x)
        x = self.dense2(x)
        return x


net = CNN(IMG_SIZE[-1], nnx.Rngs(0))


@jax.jit
def predict(params, model, inputs):
    nnx.update(model, params)
    return model(inputs)


@jax.jit
def loss_accuracy(params, model, data):
    """Computes loss and accuracy over a mini-batch.

    Args:
      params: parameters of the model.
      model: Instance of the nnx.Module.
      data: tuple of (inputs, labels).

    Returns:
      loss: float
      accuracy: float
    """
    inputs, labels = data
    logits = predict(params, model, inputs)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits=logits, labels=labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, {"accuracy": accuracy}


fast_solver = optax.adam(FAST_LEARNING_RATE)
solver = optax.lookahead(fast_solver, SYNC_PERIOD, SLOW_LEARNING_RATE)
rng = jax.random.PRNGKey(0)
dummy_data = jnp.ones((1,) + IMG_SIZE, dtype=jnp.float32)

_ = net(dummy_data)
params = nnx.state(net, nnx.Param)

# Initializes the lookahead optimizer with the initial model parameters.
params = optax.LookaheadParams.init_synced(params)
solver_state = solver.init(params)


def dataset_stats(params, model, data_loader):
    """Computes loss and accuracy over the dataset `data_loader`."""
    all_accuracy = []
    all_loss = []
    for batch in data_loader:
        batch_loss, batch_aux = loss_accuracy(params, model, batch)
        all_loss.append(batch_loss)
        all_accuracy.append(batch_aux["accuracy"])
    return {"loss": jnp.mean(jnp.array(all_loss)), "accuracy": jnp.mean(jnp.array(all_accuracy))}


train_accuracy = []
train_losses = []

# Computes test set accuracy at initialization.
test_stats = dataset_stats(params.slow, net, test_loader_batched)
test_accuracy = [test_stats["accuracy"]]
test_losses = [test_stats["loss"]]


@jax.jit
def train_step(params, model, solver_state, batch):
    # Performs a one step update.
    (loss, aux), grad = jax.value_and_grad(loss_accuracy, has_aux=True)(params.fast, model, batch)
    updates, solver_state = solver.update(grad, solver_state, params)
    params = optax.apply_updates(params, updates)
    return params, solver_state, loss, aux


for _epoch in range(N_EPOCHS):
    train_accuracy_epoch = []
    train_losses_epoch = []

    for step, train_batch in enumerate(train_loader_batched):
        params, solver_state, train_loss, train_aux = train_step(
            params, net, solver_state, train_batch
        )
        train_accuracy_epoch.append(train_aux["accuracy"])
        train_losses_epoch.append(train_loss)
        if step % 20 == 0:
            print(
                f"step {step}, train loss: {train_loss:.2e}, train accuracy:"
                f" {train_aux['accuracy']:.2f}"
            )

    # Validation is done on the slow lookahead parameters.
    test_stats = dataset_stats(params.slow, net, test_loader_batched)
    test_accuracy.append(test_stats["accuracy"])
    test_losses.append(test_stats["loss"])
    train_accuracy.append(jnp.mean(jnp.array(train_accuracy_epoch)))
    train_losses.append(jnp.mean(jnp.array(train_losses_epoch)))

print(f"Improved accuracy on test DS from {test_accuracy[0]} to {test_accuracy[-1]}")

RESULTS = {
    "train_losses_epoch": jnp.stack(train_losses_epoch),
    "test_accuracy": jnp.stack(test_accuracy),
    "test_losses": jnp.stack(test_losses),
}
