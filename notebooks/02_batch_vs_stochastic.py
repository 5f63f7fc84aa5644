# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Batch, stochastic and mini-batch gradient descent
#
# The same model, cost and optimizer rule, fed three ways: the whole training set per step
# (batch gradient descent), one example per step (stochastic gradient descent) and small
# batches (mini-batch SGD). We compare them on the bundled UCI digits against epochs, against
# optimizer steps and against wall time, and look at the per-step loss to see why SGD
# oscillates.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import gdopt

SMALL = os.environ.get("GDOPT_NOTEBOOK_SIZE", "full") == "small"
EPOCHS = 3 if SMALL else 30
problem = gdopt.problems.get_problem("digits-mlp")
x_train, y_train = problem.train
print(problem.description)
print(f"{x_train.shape[0]} training and {problem.test[0].shape[0]} test examples; {EPOCHS} epochs")

# %% [markdown]
# ## The loop: feed data, measure the cost, take the gradient, update
#
# `gdopt.fit` runs whole epochs as one compiled program. `batch_size=None` is batch gradient
# descent (one step per epoch), `1` per-example SGD and `32` mini-batches. The learning rates
# are the usual ones for each regime: batch GD can afford a larger step because its gradient
# is exact.

# %%
params0 = problem.init_params(jax.random.PRNGKey(0))
methods = {"batch GD": (None, 0.5), "SGD (batch 1)": (1, 0.01), "mini-batch SGD (32)": (32, 0.1)}
runs = {}
for name, (batch_size, lr) in methods.items():
    runs[name] = gdopt.fit(
        problem.loss_fn,
        params0,
        gdopt.sgd(lr),
        problem.train,
        epochs=EPOCHS,
        batch_size=batch_size,
        eval_data=problem.test,
        accuracy_fn=problem.accuracy_fn,
        key=jax.random.PRNGKey(1),
    )
n = x_train.shape[0]
steps_per_epoch = {name: 1 if b is None else n // b for name, (b, _) in methods.items()}
for name, r in runs.items():
    train_s = r.wall_time - r.compile_time
    print(
        f"{name:22s} steps {r.steps_run:6d}  train loss {r.history.train_loss[-1]:.4f}  "
        f"test accuracy {r.history.eval_accuracy[-1]:.3f}  training time {train_s:.2f} s"
    )

# %% [markdown]
# ## Against epochs, steps and wall time
#
# Inside the compiled loop every epoch of a method costs the same, so its wall-time axis is
# the measured training time (compilation excluded) spread evenly over its epochs.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
for name, r in runs.items():
    epochs = r.history.epochs
    train_s = r.wall_time - r.compile_time
    axes[0].plot(epochs, r.history.eval_loss, label=name)
    axes[1].plot(epochs * steps_per_epoch[name], r.history.eval_loss, label=name)
    axes[2].plot(epochs * train_s / len(epochs), r.history.eval_loss, label=name)
for ax, xlabel in zip(axes, ["epoch", "optimizer steps", "training time (s)"], strict=True):
    ax.set_xlabel(xlabel)
    ax.set_yscale("log")
axes[1].set_xscale("log")
axes[0].set_ylabel("test loss")
axes[0].legend()
fig.suptitle("Test loss of the digits MLP")
plt.show()

# %% [markdown]
# ## Why SGD oscillates: the loss of every step
#
# Each SGD step follows the gradient of one example, an unbiased but noisy estimate of the
# full gradient. Recording, after every step, the loss on the whole training set shows the
# noise: the batch-GD curve falls smoothly, the per-example curve jitters around a downward
# trend. `gdopt.make_step(..., jit=False)` gives the step as a pure function to scan over.

# %%
n_steps = 200 if SMALL else 1000


def per_step_losses(opt, batches):
    step = gdopt.make_step(problem.loss_fn, opt, jit=False)

    @jax.jit
    def run(params, opt_state):
        def body(carry, batch):
            p, s = carry
            p, s, _ = step(p, s, batch)
            return (p, s), problem.loss_fn(p, problem.train)

        return jax.lax.scan(body, (params, opt_state), batches)[1]

    return np.asarray(run(params0, opt.init(params0)))


order = jax.random.permutation(jax.random.PRNGKey(2), n)[:n_steps]
single = (x_train[order][:, None], y_train[order][:, None])  # n_steps batches of one example
full = jax.tree.map(lambda a: jnp.broadcast_to(a, (n_steps,) + a.shape), problem.train)
curves = {
    "SGD, one example per step (lr 0.01)": per_step_losses(gdopt.sgd(0.01), single),
    "batch GD, all examples per step (lr 0.5)": per_step_losses(gdopt.sgd(0.5), full),
}
fig, ax = plt.subplots(figsize=(8, 4))
for name, c in curves.items():
    ax.plot(np.arange(1, n_steps + 1), c, label=name, lw=1)
ax.set_xlabel("step")
ax.set_ylabel("training loss (whole set)")
ax.set_yscale("log")
ax.legend()
plt.show()
sgd_curve = curves["SGD, one example per step (lr 0.01)"]
ups = float(np.mean(np.diff(sgd_curve) > 0))
gd_ups = float(np.mean(np.diff(curves["batch GD, all examples per step (lr 0.5)"]) > 0))
print(f"steps that increased the full training loss: SGD {ups:.0%}, batch GD {gd_ups:.0%}")

# %% [markdown]
# ## A sweep over batch sizes
#
# Between the two extremes, the batch size trades the noise of each step against the number
# of steps per epoch. Each run below uses the same number of epochs and a learning rate
# scaled with the square root of the batch size.

# %%
batch_sizes = [1, 4, 16, 64, 256] if not SMALL else [1, 16, 256]
sweep = {}
for b in batch_sizes:
    r = gdopt.fit(
        problem.loss_fn,
        params0,
        gdopt.sgd(0.01 * np.sqrt(b)),
        problem.train,
        epochs=EPOCHS,
        batch_size=b,
        eval_data=problem.test,
        accuracy_fn=problem.accuracy_fn,
        key=jax.random.PRNGKey(1),
    )
    sweep[b] = (float(r.history.eval_accuracy[-1]), r.wall_time - r.compile_time, r.steps_run)
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
ax[0].semilogx(batch_sizes, [sweep[b][0] for b in batch_sizes], "o-", base=2)
ax[0].set_xlabel("batch size")
ax[0].set_ylabel(f"test accuracy after {EPOCHS} epochs")
ax[1].loglog(batch_sizes, [sweep[b][2] for b in batch_sizes], "o-", base=2)
ax[1].set_xlabel("batch size")
ax[1].set_ylabel("optimizer steps")
plt.show()
for b in batch_sizes:
    acc, secs, steps = sweep[b]
    print(f"batch {b:4d}: {steps:6d} steps, test accuracy {acc:.3f}, training time {secs:.2f} s")

# %% [markdown]
# ## What we learned
#
# The cell below states the comparisons from the numbers of this run (the words "lower" and
# "higher" are computed, not typed). Per epoch, the stochastic methods take many more steps
# than batch GD; per step, batch GD uses the whole set. SGD's cheap, noisy gradient makes a
# share of its steps *increase* the full training loss: that is the oscillation, and the
# reason its learning rate must be small. Mini-batches average the noise down while keeping
# many steps per epoch.

# %%
def compare(a, b):
    return "lower" if a < b else "higher"


final = {k: float(r.history.eval_loss[-1]) for k, r in runs.items()}
print(
    f"After {EPOCHS} epochs, mini-batch SGD's test loss ({final['mini-batch SGD (32)']:.3f}) is "
    f"{compare(final['mini-batch SGD (32)'], final['batch GD'])} than batch GD's "
    f"({final['batch GD']:.3f}), and per-example SGD's ({final['SGD (batch 1)']:.3f}) is "
    f"{compare(final['SGD (batch 1)'], final['batch GD'])}."
)
print(
    f"{ups:.0%} of SGD's steps raised the full training loss, against {gd_ups:.0%} of batch "
    f"GD's steps."
)
best_b = max(sweep, key=lambda b: sweep[b][0])
print(f"In the batch-size sweep, the best test accuracy came with batch size {best_b}.")
