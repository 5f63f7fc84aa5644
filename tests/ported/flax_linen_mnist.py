"""Flax's Linen MNIST example: a CNN in a ``flax.training.train_state.TrainState`` with
``tx=optax.sgd(learning_rate, momentum)``, trained epoch by epoch on shuffled batches.

Adapted from google/flax, examples/mnist/train.py at commit 7e9bb7619d8d (the Linen version,
before the example moved to NNX),
https://github.com/google/flax/blob/7e9bb7619d8da9d7b5d24e805e7e3e6a31551c75/examples/mnist/train.py
and examples/mnist/configs/default.py; Copyright 2023 The Flax Authors; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: data: gdopt's bundled 8x8 digits (``gdopt.data.load_digits``, pixels scaled to
[0, 1]) in place of MNIST from tensorflow_datasets; sizes: ``batch_size = 64`` and
``num_epochs = 1`` instead of 128 and 10, the CNN's input 8x8 (``init`` on ones of shape
``[1, 8, 8, 1]``); the config is a ``SimpleNamespace`` instead of an ``ml_collections``
ConfigDict, the logging goes to ``print`` and the TensorBoard summaries are left out; the
per-epoch metrics and final parameters collected in ``RESULTS``. The optimizer code and the
training loop are the original's.

Comparison (tests/test_ported.py): bit-identical.
"""

# ruff: noqa: UP031  (the original's %-formatting)

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state

from gdopt.data import load_digits


class CNN(nn.Module):
    """A simple CNN model."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(features=32, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nn.Conv(features=64, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))  # flatten
        x = nn.Dense(features=256)(x)
        x = nn.relu(x)
        x = nn.Dense(features=10)(x)
        return x


@jax.jit
def apply_model(state, images, labels):
    """Computes gradients, loss and accuracy for a single batch."""

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, images)
        one_hot = jax.nn.one_hot(labels, 10)
        loss = jnp.mean(optax.softmax_cross_entropy(logits=logits, labels=one_hot))
        return loss, logits

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, logits), grads = grad_fn(state.params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return grads, loss, accuracy


@jax.jit
def update_model(state, grads):
    return state.apply_gradients(grads=grads)


def train_epoch(state, train_ds, batch_size, rng):
    """Train for a single epoch."""
    train_ds_size = len(train_ds["image"])
    steps_per_epoch = train_ds_size // batch_size

    perms = jax.random.permutation(rng, len(train_ds["image"]))
    perms = perms[: steps_per_epoch * batch_size]  # skip incomplete batch
    perms = perms.reshape((steps_per_epoch, batch_size))

    epoch_loss = []
    epoch_accuracy = []

    for perm in perms:
        batch_images = train_ds["image"][perm, ...]
        batch_labels = train_ds["label"][perm, ...]
        grads, loss, accuracy = apply_model(state, batch_images, batch_labels)
        state = update_model(state, grads)
        epoch_loss.append(loss)
        epoch_accuracy.append(accuracy)
    train_loss = np.mean(epoch_loss)
    train_accuracy = np.mean(epoch_accuracy)
    return state, train_loss, train_accuracy


def get_datasets():
    """Load the digits train and test datasets into memory (MNIST in the original)."""
    split = load_digits(standardize=False)
    train_ds = {"image": split.train[0].reshape(-1, 8, 8, 1), "label": split.train[1]}
    test_ds = {"image": split.test[0].reshape(-1, 8, 8, 1), "label": split.test[1]}
    train_ds["image"] = jnp.float32(train_ds["image"]) / 16.0
    test_ds["image"] = jnp.float32(test_ds["image"]) / 16.0
    return train_ds, test_ds


def create_train_state(rng, config):
    """Creates initial `TrainState`."""
    cnn = CNN()
    params = cnn.init(rng, jnp.ones([1, 8, 8, 1]))["params"]
    tx = optax.sgd(config.learning_rate, config.momentum)
    return train_state.TrainState.create(apply_fn=cnn.apply, params=params, tx=tx)


def train_and_evaluate(config) -> train_state.TrainState:
    """Execute model training and evaluation loop.

    Args:
      config: Hyperparameter configuration for training and evaluation.

    Returns:
      The train state (which includes the `.params`).
    """
    train_ds, test_ds = get_datasets()
    rng = jax.random.key(0)

    rng, init_rng = jax.random.split(rng)
    state = create_train_state(init_rng, config)

    for epoch in range(1, config.num_epochs + 1):
        rng, input_rng = jax.random.split(rng)
        state, train_loss, train_accuracy = train_epoch(
            state, train_ds, config.batch_size, input_rng
        )
        _, test_loss, test_accuracy = apply_model(state, test_ds["image"], test_ds["label"])

        print(
            "epoch:% 3d, train_loss: %.4f, train_accuracy: %.2f, test_loss: %.4f,"
            " test_accuracy: %.2f"
            % (epoch, train_loss, train_accuracy * 100, test_loss, test_accuracy * 100)
        )
        HISTORY.append([train_loss, train_accuracy, test_loss, test_accuracy])

    return state


def get_config():
    """Get the default hyperparameter configuration."""
    config = SimpleNamespace()

    config.learning_rate = 0.1
    config.momentum = 0.9
    config.batch_size = 64
    config.num_epochs = 1
    return config


HISTORY = []  # added: the per-epoch metrics
state = train_and_evaluate(get_config())
RESULTS = {"history": np.asarray(HISTORY), "params": state.params, "step": state.step}
