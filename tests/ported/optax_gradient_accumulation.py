"""Optax's gradient accumulation example: ``optax.MultiSteps`` in a Flax NNX training loop
gives the same parameters as one step on the whole batch.

Adapted from google-deepmind/optax, examples/gradient_accumulation.ipynb,
https://github.com/google-deepmind/optax/blob/main/examples/gradient_accumulation.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: the MLP is 8*8 -> 32 -> 32 -> 10 on 8x8 inputs (the original: 28*28 -> 512 -> 512
-> 10 on 28x28), the final parameters of the four runs collected in ``RESULTS``. The
optimizer code (``sgd``, ``MultiSteps(every_k_schedule=3)``, a piecewise-constant schedule)
and the notebook's own ``assert_trees_all_close`` checks are the original's (they compare
the values ``fit`` returns, which are None, so they check nothing: ``RESULTS`` holds the
models' parameters instead, and the added ``assert_trees_all_close`` calls on them check
what the notebook means to). The train step is jitted with ``nnx.jit`` instead of
``jax.jit``: under ``jax.jit`` (flax 0.12.8) the in-place ``optimizer.update(model, grads)``
is lost, the parameters never change (checked: the trained models equal their initial
values), and the comparison would be vacuous.

Comparison (tests/test_ported.py): bit-identical.
"""

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


class MLP(nnx.Module):
    """A simple multilayer perceptron model using flax.nnx."""

    def __init__(self, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(8 * 8, 32, rngs=rngs)
        self.linear2 = nnx.Linear(32, 32, rngs=rngs)
        self.linear3 = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        # Flattens inputs in the batch.
        x = x.reshape((x.shape[0], -1))
        x = self.linear1(x)
        x = jax.nn.relu(x)
        x = self.linear2(x)
        x = jax.nn.relu(x)
        x = self.linear3(x)
        return x


def loss_fn(model, batch):
    """Computes loss over a mini-batch."""
    logits = model(batch["image"])
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits=logits, labels=batch["label"]
    ).mean()
    return loss


def build_train_step():
    """Builds a function for executing a single step in the optimization."""

    @nnx.jit  # the original's jax.jit: see the header
    def update(model, optimizer, batch):
        grads = nnx.grad(loss_fn)(model, batch)
        optimizer.update(model, grads)

    return update


def fit(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    batches: Iterable[dict[str, jnp.ndarray]],
):
    """Executes a train loop over the train batches using the given optimizer."""

    train_step = build_train_step()

    for batch in batches:
        train_step(model, optimizer, batch)


EXAMPLES = jax.random.uniform(jax.random.PRNGKey(0), (9, 8, 8, 1))
LABELS = jax.random.randint(jax.random.PRNGKey(0), (9,), minval=0, maxval=10)

optimizer = optax.sgd(1e-4)

model_single_batch = MLP(nnx.Rngs(0))
opt_single_batch = nnx.Optimizer(model_single_batch, optimizer, wrt=nnx.Param)

new_params_single_batch = fit(
    model_single_batch,
    opt_single_batch,
    batches=[
        dict(image=EXAMPLES, label=LABELS),
    ],
)

model_gradient_accumulation = MLP(nnx.Rngs(0))
opt_gradient_accumulation = nnx.Optimizer(
    model_gradient_accumulation, optax.MultiSteps(optimizer, every_k_schedule=3), wrt=nnx.Param
)

new_params_gradient_accumulation = fit(
    model_gradient_accumulation,
    opt_gradient_accumulation,
    batches=[
        dict(image=EXAMPLES[0:3], label=LABELS[0:3]),
        dict(image=EXAMPLES[3:6], label=LABELS[3:6]),
        dict(image=EXAMPLES[6:9], label=LABELS[6:9]),
    ],
)


def assert_trees_all_close(a, b):
    """Asserts that two pytrees of arrays are close within a tolerance."""
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-7)


assert_trees_all_close(
    new_params_single_batch,
    new_params_gradient_accumulation,
)
sgd_single = nnx.state(model_single_batch, nnx.Param)
sgd_accumulated = nnx.state(model_gradient_accumulation, nnx.Param)
assert_trees_all_close(sgd_single, sgd_accumulated)  # added

learning_rate_schedule = optax.piecewise_constant_schedule(
    init_value=1.0,
    boundaries_and_scales={
        0: 1e-4,
        1: 1e-1,
    },
)

optimizer = optax.sgd(learning_rate_schedule)

model_single_batch = MLP(nnx.Rngs(0))
opt_single_batch = nnx.Optimizer(model_single_batch, optimizer, wrt=nnx.Param)

new_params_single_batch = fit(
    model_single_batch,
    opt_single_batch,
    batches=[
        dict(image=EXAMPLES, label=LABELS),
    ],
)

model_gradient_accumulation = MLP(nnx.Rngs(0))
opt_gradient_accumulation = nnx.Optimizer(
    model_gradient_accumulation, optax.MultiSteps(optimizer, every_k_schedule=3), wrt=nnx.Param
)

new_params_gradient_accumulation = fit(
    model_gradient_accumulation,
    opt_gradient_accumulation,
    batches=[
        dict(image=EXAMPLES[0:3], label=LABELS[0:3]),
        dict(image=EXAMPLES[3:6], label=LABELS[3:6]),
        dict(image=EXAMPLES[6:9], label=LABELS[6:9]),
    ],
)

assert_trees_all_close(
    new_params_single_batch,
    new_params_gradient_accumulation,
)

assert_trees_all_close(  # added
    nnx.state(model_single_batch, nnx.Param), nnx.state(model_gradient_accumulation, nnx.Param)
)

RESULTS = {
    "sgd_single": nnx.to_pure_dict(sgd_single),
    "sgd_accumulated": nnx.to_pure_dict(sgd_accumulated),
    "schedule_single": nnx.to_pure_dict(nnx.state(model_single_batch, nnx.Param)),
    "schedule_accumulated": nnx.to_pure_dict(nnx.state(model_gradient_accumulation, nnx.Param)),
}
