"""Flax's NNX MNIST example: a CNN with BatchNorm and Dropout, ``nnx.Optimizer(model,
optax.sgd(learning_rate, momentum), wrt=nnx.Param)``, ``nnx.MultiMetric`` metrics,
``nnx.jit`` train and eval steps, train/eval modes.

Adapted from google/flax, examples/mnist/train.py (and configs/default.py),
https://github.com/google/flax/blob/main/examples/mnist/train.py
Copyright 2024 The Flax Authors; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: data: gdopt's bundled 8x8 digits (``gdopt.data.load_digits``, pixels scaled to
[0, 1]) in place of MNIST from tensorflow_datasets, batched in one fixed shuffled order
(``RandomState(0)``, for ``tf.data``'s ``shuffle(1024)``); sizes: ``batch_size = 128`` as in
the config, one epoch instead of 10, ``linear1`` takes 2*2*64 features (the 8x8 images
pooled twice) instead of 3136; the config is a ``SimpleNamespace`` instead of an
``ml_collections`` ConfigDict, the logging goes to ``print``, the TensorBoard summaries and
the orbax export are left out; the per-epoch metrics and the final parameters collected in
``RESULTS``. The optimizer code and the training loop are the original's.

Comparison (tests/test_ported.py): bit-identical.
"""

# ruff: noqa: UP031  (the original's %-formatting)

from functools import partial
from types import SimpleNamespace

import numpy as np
import optax
from flax import nnx

from gdopt.data import load_digits


class CNN(nnx.Module):
    """A simple CNN model."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
        self.batch_norm1 = nnx.BatchNorm(32, rngs=rngs)
        self.dropout1 = nnx.Dropout(rate=0.025)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
        self.batch_norm2 = nnx.BatchNorm(64, rngs=rngs)
        self.avg_pool = partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.linear1 = nnx.Linear(2 * 2 * 64, 256, rngs=rngs)
        self.dropout2 = nnx.Dropout(rate=0.025)
        self.linear2 = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x, rngs: nnx.Rngs):
        x = self.avg_pool(nnx.relu(self.batch_norm1(self.dropout1(self.conv1(x), rngs=rngs))))
        x = self.avg_pool(nnx.relu(self.batch_norm2(self.conv2(x))))
        x = x.reshape(x.shape[0], -1)  # flatten
        x = nnx.relu(self.dropout2(self.linear1(x), rngs=rngs))
        x = self.linear2(x)
        return x


def loss_fn(model: CNN, batch, rngs):
    logits = model(batch["image"], rngs)
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits=logits, labels=batch["label"]
    ).mean()
    return loss, logits


@nnx.jit
def train_step(model: CNN, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, batch, rngs):
    """Train for a single step."""
    grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
    (loss, logits), grads = grad_fn(model, batch, rngs)
    metrics.update(loss=loss, logits=logits, labels=batch["label"])  # In-place updates.
    optimizer.update(model, grads)  # In-place updates.


@nnx.jit
def eval_step(model: CNN, metrics: nnx.MultiMetric, batch):
    loss, logits = loss_fn(model, batch, None)
    metrics.update(loss=loss, logits=logits, labels=batch["label"])  # In-place updates.


def get_datasets(config):
    """Load the digits train and test batches into memory (MNIST in the original)."""
    split = load_digits(standardize=False)

    def batches(x, y, order):
        x = np.asarray(x).reshape(-1, 8, 8, 1) / np.float32(16.0)
        y = np.asarray(y)
        n = len(order) // config.batch_size * config.batch_size  # drop_remainder=True
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            yield {"image": x[idx], "label": y[idx]}

    train_order = np.random.RandomState(0).permutation(len(split.train[1]))
    train_ds = list(batches(*split.train, train_order))
    test_ds = list(batches(*split.test, np.arange(len(split.test[1]))))
    return train_ds, test_ds


def train_and_evaluate(config) -> CNN:
    """Execute model training and evaluation loop.

    Args:
      config: Hyperparameter configuration for training and evaluation.
    """
    train_ds, test_ds = get_datasets(config)

    # Instantiate the model.
    model = CNN(rngs=nnx.Rngs(0))

    learning_rate = config.learning_rate
    momentum = config.momentum

    optimizer = nnx.Optimizer(model, optax.sgd(learning_rate, momentum), wrt=nnx.Param)
    metrics = nnx.MultiMetric(
        accuracy=nnx.metrics.Accuracy(),
        loss=nnx.metrics.Average("loss"),
    )
    rngs = nnx.Rngs(0)

    for epoch in range(1, config.num_epochs + 1):
        model.train()  # Switch to train mode

        for batch in train_ds:
            train_step(model, optimizer, metrics, batch, rngs)
        #  Compute the training metrics.
        train_metrics = metrics.compute()
        metrics.reset()  # Reset the metrics for the test set.

        # Compute the metrics on the test set after each training epoch.
        model.eval()  # Switch to eval mode
        for batch in test_ds:
            eval_step(model, metrics, batch)

        # Compute the eval metrics.
        eval_metrics = metrics.compute()
        metrics.reset()  # Reset the metrics for the next training epoch.

        print(
            "epoch:% 3d, train_loss: %.4f, train_accuracy: %.2f, test_loss: %.4f,"
            " test_accuracy: %.2f"
            % (
                epoch,
                train_metrics["loss"],
                train_metrics["accuracy"] * 100,
                eval_metrics["loss"],
                eval_metrics["accuracy"] * 100,
            )
        )
        HISTORY.append(
            [
                train_metrics["loss"],
                train_metrics["accuracy"],
                eval_metrics["loss"],
                eval_metrics["accuracy"],
            ]
        )
    return model


def get_config():
    """Get the default hyperparameter configuration."""
    config = SimpleNamespace()
    config.learning_rate = 0.1
    config.momentum = 0.9
    config.batch_size = 128
    config.num_epochs = 1
    return config


HISTORY = []  # added: the per-epoch metrics
model = train_and_evaluate(get_config())
RESULTS = {
    "history": np.asarray(HISTORY),
    "params": nnx.to_pure_dict(nnx.state(model, nnx.Param)),
    "batch_stats": nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)),
}
