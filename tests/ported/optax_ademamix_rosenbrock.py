"""Optax's AdEMAMix example on the Rosenbrock function: ``optax.adam`` with several ``b1``
against ``optax.contrib.ademamix`` with scheduled ``b3`` (a custom schedule) and ``alpha``
(``linear_schedule`` from 0), each run as a ``jax.lax.scan`` with ``jax.debug.print``
inside ``jax.lax.cond``.

Adapted from google-deepmind/optax, examples/contrib/rosenbrock_ademamix.ipynb,
https://github.com/google-deepmind/optax/blob/main/examples/contrib/rosenbrock_ademamix.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: ``num_iterations = 2000`` instead of 100000 (the prints every 500 iterations
instead of 25000); the unused ``from optax._src import base`` (a private module, which gdopt
does not mirror) and the plots (matplotlib, and the 1000x1000 grid they draw) are left out;
the final parameters of the six runs collected in ``RESULTS``. The optimizer code is the
original's.

Comparison (tests/test_ported.py): the ``adam`` runs agree to rtol 1e-4 (measured 4.7e-5
after 2000 steps) and the ``ademamix`` runs too (3.9e-6): both are named optimizers, whose
hyperparameters gdopt keeps in its state as float32, so ``1 - b2`` is computed from float32
``b2`` (docs/migration.md).
"""

from functools import partial

import jax
import jax.numpy as jnp
import optax
from optax.schedules import linear_schedule


def cond_print(cond, fmt, *args):
    return jax.lax.cond(cond, lambda: (jax.debug.print(fmt, *args), 0)[1], lambda: 0)


def rosenbrock(x):
    return jnp.square(1 - x[0]) + 100.0 * jnp.square(x[1] - jnp.square(x[0]))


num_iterations = 2000


def _body_fn(carry, _, *, solver, b1):
    params, opt_state, i = carry
    grad = jax.grad(rosenbrock)(params)
    updates, opt_state = solver.update(grad, opt_state, params)
    params = optax.apply_updates(params, updates)
    cond_print(
        i % 500 == 0,
        "Objective function for b1={} at iteration {} = {}",
        b1,
        i,
        rosenbrock(params),
    )
    return (params, opt_state, i + 1), params


all_b1_params = []
for b1 in [0.9, 0.99, 0.999, 0.9999]:
    solver = optax.adam(learning_rate=0.003, b1=b1, b2=0.9999)
    params = jnp.array([-3.0, 5.0])
    print("Objective function: ", rosenbrock(params))
    opt_state = solver.init(params)

    _, all_params = jax.lax.scan(
        partial(_body_fn, solver=solver, b1=b1), (params, opt_state, 0), length=num_iterations
    )
    all_b1_params.append(jnp.concatenate([params[None, ...], all_params], 0))
all_b1_params_array = jnp.array(all_b1_params)

alpha = 0.8
alpha = linear_schedule(0, alpha, num_iterations)


def b3_scheduler(beta_end: float, beta_start: float = 0, warmup: int = 0):
    def f(beta):
        return jnp.log(0.5) / jnp.log(beta) - 1

    def f_inv(t):
        return jnp.power(0.5, 1 / (t + 1))

    def schedule(step):
        is_warmup = jnp.array(step < warmup).astype(jnp.float32)
        alpha = step / float(warmup)
        return is_warmup * f_inv((1.0 - alpha) * f(beta_start) + alpha * f(beta_end)) + beta_end * (
            1.0 - is_warmup
        )

    return schedule


def _body_fn(carry, _, *, solver, b3):
    params, opt_state, i = carry
    grad = jax.grad(rosenbrock)(params)
    updates, opt_state = solver.update(grad, opt_state, params)
    params = optax.apply_updates(params, updates)
    cond_print(
        i % 500 == 0,
        "Objective function for b3={} at iteration {} = {}",
        b3(i),
        i,
        rosenbrock(params),
    )
    return (params, opt_state, i + 1), params


all_ademamix_params = []
for b3 in [0.999, 0.9999]:
    b3 = b3_scheduler(b3, 0, num_iterations)
    solver = optax.contrib.ademamix(learning_rate=0.003, b1=0.99, b2=0.999, b3=b3, alpha=alpha)
    params = jnp.array([-3.0, 5.0])
    print("Objective function: ", rosenbrock(params))
    opt_state = solver.init(params)

    _, all_params = jax.lax.scan(
        partial(_body_fn, solver=solver, b3=b3), (params, opt_state, 0), length=num_iterations
    )
    all_ademamix_params.append(jnp.concatenate([params[None, ...], all_params], 0))
all_ademamix_params_array = jnp.array(all_ademamix_params)

RESULTS = {
    "adam_final": all_b1_params_array[:, -1],
    "adam_trajectory_start": all_b1_params_array[:, :50],
    "ademamix_final": all_ademamix_params_array[:, -1],
    "ademamix_trajectory_start": all_ademamix_params_array[:, :50],
}
