"""Optax's L-BFGS and line-search example: ``scale_by_lbfgs`` by hand, ``sgd`` with a
backtracking line search (with and without ``store_grad`` and
``value_and_grad_from_state``), and ``lbfgs`` in a ``jax.lax.while_loop`` on Rosenbrock.

Adapted from google-deepmind/optax, examples/lbfgs.ipynb,
https://github.com/google-deepmind/optax/blob/main/examples/lbfgs.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: ``import optax.tree`` is dropped (``import optax`` already binds ``optax.tree``;
kept, it would rebind ``optax`` to the real package after ``import gdopt as optax``); the
cells after the Rosenbrock run (``lbfgs`` with a zoom line search behind a custom
``GradientTransformationExtraArgs`` on Zakharov's function, and the benchmark of
hyperparameters) are left out, for time; the three eager loops run 3 iterations instead of
16 (an eager line-search step costs up to ~0.5 s here); the final values collected in
``RESULTS``. The optimizer code is the original's.

Comparison (tests/test_ported.py): bit-identical, except the hand-driven ``scale_by_lbfgs``
loop, whose parameters agree to rtol 1e-5: gdopt's two-loop recursion accumulates its sums
in another order than optax's (measured 6.5e-7 after 3 steps).
"""

import jax
import jax.numpy as jnp
import jax.random as jrd
import optax

# Define objective
dim = 8
w_opt = jnp.ones(dim)
mat = jrd.normal(jrd.PRNGKey(0), (dim, dim))
mat = mat.dot(mat.T)


def fun(w):
    return 0.5 * (w - w_opt).dot(mat.dot(w - w_opt))


# Define optimizer
lr = 1e-1
opt = optax.scale_by_lbfgs()

# Initialize optimization
w = jrd.normal(jrd.PRNGKey(1), (dim,))
state = opt.init(w_opt)

# Run optimization
for i in range(3):
    v, g = jax.value_and_grad(fun)(w)
    print(f"Iteration: {i}, Value:{v:.2e}")
    u, state = opt.update(g, state, w)
    w = w - lr * u

print(f"Final value: {fun(w):.2e}")
scale_by_lbfgs_w = w


# Objective
def fun(w):
    return jnp.sum(jnp.abs(w))


# Linesearch, comment/uncomment the desired one
linesearch = optax.scale_by_backtracking_linesearch(max_backtracking_steps=15)
# linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=15)

# Optimizer
opt = optax.chain(
    optax.sgd(learning_rate=1.0),
    # Compare with or without linesearch by commenting this line
    linesearch,
)

# Initialize
w = jrd.normal(jrd.PRNGKey(0), (8,))
state = opt.init(w)

# Run optimization
for i in range(3):
    v, g = jax.value_and_grad(fun)(w)
    print(f"Iteration: {i}, Value:{v:.2e}")
    u, state = opt.update(g, state, w, value=v, grad=g, value_fn=fun)
    w = w + u

print(f"Final value: {fun(w):.2e}")
backtracking_w = w

# Linesearch
linesearch = optax.scale_by_backtracking_linesearch(max_backtracking_steps=15, store_grad=True)
# linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=15)

# Optimizer
opt = optax.chain(optax.sgd(learning_rate=1.0), linesearch)

# Initialize
w = jrd.normal(jrd.PRNGKey(0), (8,))
state = opt.init(w)

# Run optimization
for _ in range(3):
    # Replace `v, g = jax.value_and_grad(fun)(w)` by
    v, g = optax.value_and_grad_from_state(fun)(w, state=state)
    u, state = opt.update(g, state, w, value=v, grad=g, value_fn=fun)
    w = w + u

print(f"Final value: {fun(w):.2e}")
stored_grad_w = w


def run_opt(init_params, fun, opt, max_iter, tol):
    value_and_grad_fun = optax.value_and_grad_from_state(fun)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad_fun(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        params = optax.apply_updates(params, updates)
        return params, state

    def continuing_criterion(carry):
        _, state = carry
        iter_num = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        err = optax.tree.norm(grad)
        return (iter_num == 0) | ((iter_num < max_iter) & (err >= tol))

    init_carry = (init_params, opt.init(init_params))
    final_params, final_state = jax.lax.while_loop(continuing_criterion, step, init_carry)
    return final_params, final_state


def fun(w):
    return jnp.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)


opt = optax.lbfgs()
init_params = jnp.zeros((8,))
print(
    f"Initial value: {fun(init_params):.2e} "
    f"Initial gradient norm: {optax.tree.norm(jax.grad(fun)(init_params)):.2e}"
)
final_params, final_state = run_opt(init_params, fun, opt, max_iter=100, tol=1e-3)
print(
    f"Final value: {fun(final_params):.2e}, "
    f"Final gradient norm: {optax.tree.norm(jax.grad(fun)(final_params)):.2e}"
)
rosenbrock_params = final_params
rosenbrock_count = optax.tree.get(final_state, "count")


RESULTS = {
    "scale_by_lbfgs_w": scale_by_lbfgs_w,
    "backtracking_w": backtracking_w,
    "stored_grad_w": stored_grad_w,
    "rosenbrock_params": rosenbrock_params,
    "rosenbrock_count": rosenbrock_count,
}
