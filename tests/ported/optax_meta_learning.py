"""Optax's meta-learning example: the learning rate of ``inject_hyperparams(optax.rmsprop)``
is itself learned with ``optax.adam``, by differentiating through inner updates in which the
program writes ``state.hyperparams['learning_rate']``.

Adapted from google-deepmind/optax, examples/meta_learning.ipynb,
https://github.com/google-deepmind/optax/blob/main/examples/meta_learning.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: 100 outer steps instead of 2000; the plots (matplotlib) are left out; the learned
learning rates and thetas collected in ``RESULTS``. The optimizer code is the original's.

Comparison (tests/test_ported.py): learning rates and thetas agree to rtol 1e-5: the
meta-optimizer is ``optax.adam`` (gdopt's named optimizers keep their hyperparameters in
their state as float32, so ``1 - b2`` is computed from float32 ``b2``, docs/migration.md); the
inner ``inject_hyperparams(optax.rmsprop)`` is gdopt's own layout.
"""

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax


def generator() -> Iterator[tuple[jax.Array, jax.Array]]:
    rng = jax.random.PRNGKey(0)

    while True:
        rng, k1, k2 = jax.random.split(rng, num=3)
        x = jax.random.uniform(k1, minval=0.0, maxval=10.0)
        y = 10.0 * x + jax.random.normal(k2)
        yield x, y


g = generator()

for _ in range(5):
    x, y = next(g)
    print(f"Sampled y = {y:.3f}, x = {x:.3f}")


def f(theta: jax.typing.ArrayLike, x: jax.typing.ArrayLike) -> jax.typing.ArrayLike:
    return x * theta


theta = jax.random.normal(jax.random.PRNGKey(42))

init_learning_rate = jnp.array(0.1)
meta_learning_rate = jnp.array(0.03)

opt = optax.inject_hyperparams(optax.rmsprop)(learning_rate=init_learning_rate)
meta_opt = optax.adam(learning_rate=meta_learning_rate)


def loss(theta, x, y):
    return optax.l2_loss(y, f(theta, x))


def step(theta, state, x, y):
    grad = jax.grad(loss)(theta, x, y)
    updates, state = opt.update(grad, state)
    theta = optax.apply_updates(theta, updates)
    return theta, state


def outer_loss(eta, theta, state, samples):
    state.hyperparams["learning_rate"] = jax.nn.sigmoid(eta)

    for x, y in samples[:-1]:
        theta, state = step(theta, state, x, y)

    x, y = samples[-1]

    return loss(theta, x, y), (theta, state)


@jax.jit
def outer_step(eta, theta, meta_state, state, samples):
    grad, (theta, state) = jax.grad(outer_loss, has_aux=True)(eta, theta, state, samples)

    meta_updates, meta_state = meta_opt.update(grad, meta_state)
    eta = optax.apply_updates(eta, meta_updates)

    return eta, theta, meta_state, state


state = opt.init(theta)
# inverse sigmoid, to match the value we initialized the inner optimizer with.
eta = -np.log(1.0 / init_learning_rate - 1)
meta_state = meta_opt.init(eta)

N = 7
learning_rates = []
thetas = []

for _i in range(100):
    samples = [next(g) for i in range(N)]
    eta, theta, meta_state, state = outer_step(eta, theta, meta_state, state, samples)
    learning_rates.append(jax.nn.sigmoid(eta))
    thetas.append(theta)

RESULTS = {"learning_rates": jnp.stack(learning_rates), "thetas": jnp.stack(thetas)}
