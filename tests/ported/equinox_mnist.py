"""Equinox's MNIST example: a CNN as an ``eqx.Module``, trained with ``optax.adamw`` on
``eqx.filter(model, eqx.is_array)``, ``eqx.filter_value_and_grad``, ``eqx.filter_jit`` and
``eqx.apply_updates``.

Adapted from patrick-kidger/equinox, docs/examples/mnist.ipynb,
https://github.com/patrick-kidger/equinox/blob/main/docs/examples/mnist.ipynb
Copyright Patrick Kidger; Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0).

Changed: data: gdopt's bundled 8x8 digits (``gdopt.data.load_digits``, pixels normalised to
[-1, 1] as the original's ``Normalize((0.5,), (0.5,))``), in channel-first whole batches
of ``BATCH_SIZE`` in one fixed shuffled order (``RandomState(0)``; 22 training and 5 test
batches, so that the jitted functions see one shape) instead of torchvision's
MNIST and torch ``DataLoader``s; sizes: the first ``Linear`` takes 3*2*2 features (the
conv of kernel 4 and the max-pool of kernel 2 on 8x8 images) instead of 1728, ``STEPS = 30``
and ``PRINT_EVERY = 30`` instead of 300 and 30; the cells that only show the model
(``print(model)``), an eager loss, an eager inference and the gradients on one batch
(``jax.value_and_grad`` failing on the model, ``eqx.partition``/``eqx.combine`` and
``eqx.filter_value_and_grad`` working) are left out, as are the hand-made batch
``dummy_x, dummy_y`` they used; the losses and test metrics
collected in ``RESULTS``. The optimizer code and the training loop are the original's.

Comparison (tests/test_ported.py): losses and metrics agree to rtol 1e-4: ``optax.adamw``
is a named optimizer, whose hyperparameters gdopt keeps in its state as float32, so
``1 - b2`` is computed from float32 ``b2`` (a relative ~6e-6 in an update,
docs/migration.md), which the training carries.
"""

# ruff: noqa: F722  (jaxtyping's shape strings in annotations)

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PyTree

from gdopt.data import load_digits

# Hyperparameters

BATCH_SIZE = 64
LEARNING_RATE = 3e-4
STEPS = 30
PRINT_EVERY = 30
SEED = 5678

key = jax.random.PRNGKey(SEED)


# gdopt's bundled digits in place of torchvision's MNIST (see the header).
def _loader(x, y, order):
    x = (np.asarray(x).reshape(-1, 1, 8, 8) / np.float32(16.0) - np.float32(0.5)) / np.float32(0.5)
    y = np.asarray(y)
    n = len(order) // BATCH_SIZE * BATCH_SIZE  # whole batches only
    return [
        (x[order[i : i + BATCH_SIZE]], y[order[i : i + BATCH_SIZE]])
        for i in range(0, n, BATCH_SIZE)
    ]


_split = load_digits(standardize=False)
trainloader = _loader(*_split.train, np.random.RandomState(0).permutation(len(_split.train[1])))
testloader = _loader(*_split.test, np.random.RandomState(1).permutation(len(_split.test[1])))


class CNN(eqx.Module):
    layers: list

    def __init__(self, key):
        key1, key2, key3, key4 = jax.random.split(key, 4)
        # Standard CNN setup: convolutional layer, followed by flattening,
        # with a small MLP on top.
        self.layers = [
            eqx.nn.Conv2d(1, 3, kernel_size=4, key=key1),
            eqx.nn.MaxPool2d(kernel_size=2),
            jax.nn.relu,
            jnp.ravel,
            eqx.nn.Linear(3 * 4 * 4, 512, key=key2),
            jax.nn.sigmoid,
            eqx.nn.Linear(512, 64, key=key3),
            jax.nn.relu,
            eqx.nn.Linear(64, 10, key=key4),
            jax.nn.log_softmax,
        ]

    def __call__(self, x: Float[Array, "1 8 8"]) -> Float[Array, "10"]:
        for layer in self.layers:
            x = layer(x)
        return x


key, subkey = jax.random.split(key, 2)
model = CNN(subkey)


def loss(model: CNN, x: Float[Array, "batch 1 8 8"], y: Int[Array, " batch"]) -> Float[Array, ""]:
    # Our input has the shape (BATCH_SIZE, 1, 8, 8), but our model operations on
    # a single input input image of shape (1, 8, 8).
    #
    # Therefore, we have to use jax.vmap, which in this case maps our model over the
    # leading (batch) axis.
    pred_y = jax.vmap(model)(x)
    return cross_entropy(y, pred_y)


def cross_entropy(y: Int[Array, " batch"], pred_y: Float[Array, "batch 10"]) -> Float[Array, ""]:
    # y are the true targets, and should be integers 0-9.
    # pred_y are the log-softmax'd predictions.
    pred_y = jnp.take_along_axis(pred_y, jnp.expand_dims(y, 1), axis=1)
    return -jnp.mean(pred_y)


loss = eqx.filter_jit(loss)  # JIT our loss function from earlier!


@eqx.filter_jit
def compute_accuracy(
    model: CNN, x: Float[Array, "batch 1 8 8"], y: Int[Array, " batch"]
) -> Float[Array, ""]:
    """This function takes as input the current model
    and computes the average accuracy on a batch.
    """
    pred_y = jax.vmap(model)(x)
    pred_y = jnp.argmax(pred_y, axis=1)
    return jnp.mean(y == pred_y)


def evaluate(model: CNN, testloader):
    """This function evaluates the model on the test dataset,
    computing both the average loss and the average accuracy.
    """
    avg_loss = 0
    avg_acc = 0
    for x, y in testloader:
        # Note that all the JAX operations happen inside `loss` and `compute_accuracy`,
        # and both have JIT wrappers, so this is fast.
        avg_loss += loss(model, x, y)
        avg_acc += compute_accuracy(model, x, y)
    return avg_loss / len(testloader), avg_acc / len(testloader)


evaluate(model, testloader)

optim = optax.adamw(LEARNING_RATE)

TRAIN_LOSSES, TEST_METRICS = [], []  # added: what the loop prints


def train(
    model: CNN,
    trainloader,
    testloader,
    optim: optax.GradientTransformation,
    steps: int,
    print_every: int,
) -> CNN:
    # Just like earlier: It only makes sense to train the arrays in our model,
    # so filter out everything else.
    opt_state = optim.init(eqx.filter(model, eqx.is_array))

    # Always wrap everything -- computing gradients, running the optimiser, updating
    # the model -- into a single JIT region. This ensures things run as fast as
    # possible.
    @eqx.filter_jit
    def make_step(
        model: CNN,
        opt_state: PyTree,
        x: Float[Array, "batch 1 8 8"],
        y: Int[Array, " batch"],
    ):
        loss_value, grads = eqx.filter_value_and_grad(loss)(model, x, y)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        model = eqx.apply_updates(model, updates)
        return model, opt_state, loss_value

    # Loop over our training dataset as many times as we need.
    def infinite_trainloader():
        while True:
            yield from trainloader

    for step, (x, y) in zip(range(steps), infinite_trainloader(), strict=False):
        model, opt_state, train_loss = make_step(model, opt_state, x, y)
        TRAIN_LOSSES.append(train_loss)
        if (step % print_every) == 0 or (step == steps - 1):
            test_loss, test_accuracy = evaluate(model, testloader)
            TEST_METRICS.append([test_loss, test_accuracy])
            print(
                f"{step=}, train_loss={train_loss.item()}, "
                f"test_loss={test_loss.item()}, test_accuracy={test_accuracy.item()}"
            )
    return model


model = train(model, trainloader, testloader, optim, STEPS, PRINT_EVERY)

RESULTS = {"train_losses": jnp.stack(TRAIN_LOSSES), "test_metrics": jnp.asarray(TEST_METRICS)}
