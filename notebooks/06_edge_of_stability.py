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
# # The edge of stability
#
# On a quadratic, gradient descent with learning rate η is stable only while the curvature
# (the top Hessian eigenvalue, the *sharpness*) stays below 2 / η; on a neural network,
# full-batch gradient descent drives the sharpness *up* until it reaches 2 / η and then keeps
# it hovering there while the loss still falls, non-monotonically (Cohen et al. 2021). We
# watch this at several learning rates on a small tanh network, and then see where momentum
# and Adam put their own edges.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import gdopt

SMALL = os.environ.get("GDOPT_NOTEBOOK_SIZE", "full") == "small"
STEPS = 1000 if SMALL else 3000
EVERY = 25 if SMALL else 50
N = 512
split = gdopt.data.load_digits(seed=0)
x, y = split.train[0][:N], jax.nn.one_hot(split.train[1][:N], 10)
data = (x, y)
model = gdopt.models.mlp([64, 64, 64, 10], "tanh")
loss_fn = jax.jit(gdopt.losses.supervised_loss(model.apply, "mse"))
params0 = model.init(jax.random.PRNGKey(0))
sharp0 = float(gdopt.landscape.hessian_eigenvalues(loss_fn, params0, data)[0])
print(f"{N} digits, MLP 64-64-64-10 (tanh), mean squared error on one-hot targets")
print(f"initial loss {float(loss_fn(params0, data)):.4f}, initial sharpness {sharp0:.3f}")

# %% [markdown]
# ## Full-batch gradient descent at several learning rates
#
# `gdopt.landscape.track_sharpness` trains and measures the top Hessian eigenvalue (Lanczos
# on Hessian-vector products, warm-started) every few steps, all in one compiled program.
# The dashed lines are each rate's stability limit 2 / η.

# %%
RATES = [0.8, 1.2] if SMALL else [0.5, 0.8, 1.2]
gd = {
    lr: gdopt.landscape.track_sharpness(
        loss_fn, params0, gdopt.sgd(lr), data, epochs=STEPS, every=EVERY
    )  # fmt: skip
    for lr in RATES
}
fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
for (lr, h), color in zip(gd.items(), ["C0", "C1", "C2"], strict=False):
    axes[0].plot(h.epochs, h.sharpness, ".-", color=color, label=f"lr {lr}")
    axes[0].axhline(2 / lr, color=color, ls="--", lw=1)
    axes[1].semilogy(np.arange(1, len(h.train_loss) + 1), h.train_loss, color=color, lw=0.8,
                     label=f"lr {lr}")  # fmt: skip
axes[0].set_xlabel("step")
axes[0].set_ylabel("sharpness (top Hessian eigenvalue)")
axes[0].set_title("Sharpness rises to 2 / lr (dashed) and hovers")
axes[0].legend()
axes[1].set_xlabel("step")
axes[1].set_ylabel("training loss")
axes[1].legend()
plt.show()
for lr, h in gd.items():
    tail = h.sharpness[len(h.sharpness) // 2 :]
    ups = float(np.mean(np.diff(h.train_loss) > 0))
    print(f"lr {lr}: 2/lr = {2 / lr:.3f}; sharpness {h.sharpness[0]:.3f} at the start, "
          f"lowest {h.sharpness.min():.3f}, mean over the second half {tail.mean():.3f}; "
          f"loss rose in {ups:.0%} of the steps; final loss {h.train_loss[-1]:.5f}")  # fmt: skip

# %% [markdown]
# The curves have two phases. First *progressive sharpening*: the sharpness grows while it
# is below 2 / η (the loss falls smoothly). Then the *edge of stability*: the sharpness
# reaches 2 / η and stays near it; a quadratic model would predict divergence beyond this
# point, but the network self-stabilises, and the loss keeps falling over long times
# while rising on some steps. The larger the learning rate, the lower the sharpness the
# network settles at. One of these runs on its own, with `gdopt.plot.sharpness_curve`:

# %%
lr_eos = RATES[-1]
gdopt.plot.sharpness_curve(gd[lr_eos], learning_rate=lr_eos)
plt.title(f"Gradient descent, lr {lr_eos}")
plt.show()

# %% [markdown]
# ## Momentum: a higher edge
#
# Heavy-ball momentum `v ← β v + g, θ ← θ - η v` is stable on a quadratic while the curvature
# stays below (2 + 2β) / η, a limit 1 + β times higher than plain gradient descent's at the
# same η. We pick η so that plain gradient descent's 2 / η is far below the sharpness the
# network starts with, and compare the sharpness with both limits.

# %%
BETA, LR_MOM = 0.9, 1.5
mom = gdopt.landscape.track_sharpness(loss_fn, params0, gdopt.sgd(LR_MOM, momentum=BETA), data,
                                      epochs=STEPS, every=EVERY)  # fmt: skip
mom_limit = (2 + 2 * BETA) / LR_MOM
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(mom.epochs, mom.sharpness, ".-", label=f"momentum β={BETA}, lr {LR_MOM}")
ax.axhline(mom_limit, color="k", ls="--", lw=1, label="(2 + 2β) / lr")
ax.axhline(2 / LR_MOM, color="0.6", ls=":", lw=1, label="2 / lr")
ax.set_xlabel("step")
ax.set_ylabel("sharpness")
ax.legend()
plt.show()
print(f"momentum: sharpness after the first drop up to {mom.sharpness[np.argmin(mom.sharpness):].max():.3f}, limit (2+2β)/η = {mom_limit:.3f}, "
      f"2/η = {2 / LR_MOM:.3f}; final loss {mom.train_loss[-1]:.5f}")  # fmt: skip

# %% [markdown]
# ## Adam: the edge moves to the preconditioned sharpness
#
# Adam divides each coordinate's step by `sqrt(v̂) + ε`; the quadratic stability limit then
# applies not to the Hessian H but to the *preconditioned* Hessian P⁻¹H with
# `P = (1 - β₁ᵗ) diag(sqrt(v̂) + ε)`, whose top eigenvalue must stay below
# (2 + 2β₁) / ((1 - β₁) η), 38 / η for β₁ = 0.9 (the adaptive edge of stability, Cohen et al.
# 2022). The raw sharpness tells little here: Adam's steps are not η times the gradient. We
# train with `gdopt.fit` in chunks, handing the optimizer state from one chunk to the next,
# and measure the preconditioned sharpness as the top Hessian eigenvalue of the loss in the
# rescaled coordinates `θ + P^(-1/2) u` at `u = 0` (the Hessian there is P^(-1/2) H P^(-1/2),
# with the eigenvalues of P⁻¹H).

# %%
B1, B2, EPS = 0.9, 0.999, 1e-8


def rescaled_loss(u, point):
    """The loss at ``params + scale * u``: its Hessian at ``u = 0`` is P^(-1/2) H P^(-1/2)."""
    params, scale = point
    return loss_fn(jax.tree.map(lambda p, s, d: p + s * d, params, scale, u), data)


def preconditioned_sharpness(params, opt_state):
    nu = gdopt.tree_utils.tree_get(opt_state, "nu")
    t = gdopt.tree_utils.tree_get(opt_state, "count").astype(jnp.float32)
    scale = jax.tree.map(
        lambda v: 1.0 / jnp.sqrt((1 - B1**t) * (jnp.sqrt(v / (1 - B2**t)) + EPS)), nu
    )
    zero = jax.tree.map(jnp.zeros_like, params)
    top = gdopt.landscape.hessian_eigenvalues(rescaled_loss, zero, (params, scale), num_iters=20)
    return float(top[0])


ADAM_RATES = [3e-3] if SMALL else [1e-3, 3e-3]
CHUNK = STEPS // (5 if SMALL else 15)
adam = {}
for lr in ADAM_RATES:
    opt = gdopt.adam(lr, b1=B1, b2=B2, eps=EPS)
    params, state = params0, None
    steps, pre, raw = [], [], []
    for i in range(STEPS // CHUNK):
        r = gdopt.fit(loss_fn, params, opt, data, epochs=CHUNK, opt_state=state)
        params, state = r.params, r.opt_state
        steps.append((i + 1) * CHUNK)
        pre.append(preconditioned_sharpness(params, state))
        raw.append(float(gdopt.landscape.hessian_eigenvalues(loss_fn, params, data,
                                                             num_iters=20)[0]))  # fmt: skip
    adam[lr] = dict(steps=np.array(steps), pre=np.array(pre), raw=np.array(raw),
                    loss=float(r.history.train_loss[-1]))  # fmt: skip
fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
for (lr, a), color in zip(adam.items(), ["C0", "C1"], strict=False):
    limit = (2 + 2 * B1) / ((1 - B1) * lr)
    axes[0].plot(a["steps"], a["pre"], "o-", color=color, label=f"Adam lr {lr}")
    axes[0].axhline(limit, color=color, ls="--", lw=1)
    axes[1].plot(a["steps"], a["raw"], "o-", color=color, label=f"Adam lr {lr}")
    axes[1].axhline(2 / lr, color=color, ls=":", lw=1)
axes[0].set_title("preconditioned sharpness, with 38 / lr (dashed)")
axes[1].set_title("raw sharpness, with 2 / lr (dotted)")
axes[1].set_yscale("log")
for ax in axes:
    ax.set_xlabel("step")
    ax.legend()
plt.show()
for lr, a in adam.items():
    limit = (2 + 2 * B1) / ((1 - B1) * lr)
    print(f"Adam lr {lr}: preconditioned sharpness at the end {a['pre'][-1]:.0f} "
          f"(limit 38/η = {limit:.0f}), raw sharpness {a['raw'][-1]:.3f} (2/η = {2 / lr:.0f}); "
          f"final loss {a['loss']:.5f}")  # fmt: skip

# %% [markdown]
# ## What we learned
#
# The cell below states the comparisons from the numbers of this run (the words are chosen
# by the computation, not typed). "At the edge" means within 10% of the limit.


# %%
def relation(value, limit, tol=0.1):
    if value > (1 + tol) * limit:
        return "above"
    if value >= (1 - tol) * limit:
        return "at"
    return "below"


def after_drop(sharpness):
    """(lowest, highest after the lowest): the first steps lower the sharpness."""
    i = int(np.argmin(sharpness))
    return float(sharpness[i]), float(sharpness[i:].max())


for lr, h in gd.items():
    tail = float(h.sharpness[len(h.sharpness) // 2 :].mean())
    low, high = after_drop(h.sharpness)
    rose = "rose" if high > 1.05 * low else "did not rise"
    print(f"Gradient descent, lr {lr}: after the first steps' drop to {low:.2f} the sharpness "
          f"{rose} (to {high:.2f}), and over the second half of training it sat "
          f"{relation(tail, 2 / lr)} the edge 2/lr = {2 / lr:.2f} (mean {tail:.2f}).")  # fmt: skip
order = sorted(gd, key=lambda lr: gd[lr].sharpness[-1])
if order == sorted(gd, reverse=True):
    print(
        "The final sharpness falls as the learning rate grows: a larger rate, a flatter end point."
    )
else:
    print("The final sharpness is not ordered by the learning rate in this run.")
eos_ups = float(np.mean(np.diff(gd[lr_eos].train_loss) > 0))
print(f"At lr {lr_eos} the loss rose in {eos_ups:.0%} of the steps and still fell overall "
      f"({gd[lr_eos].train_loss[0]:.3f} to {gd[lr_eos].train_loss[-1]:.5f}).")  # fmt: skip
mom_high = after_drop(mom.sharpness)[1]
print(f"Momentum (β = {BETA}, lr {LR_MOM}): after the first drop its sharpness climbed to "
      f"{mom_high:.2f}, {relation(mom_high, 2 / LR_MOM)} plain GD's limit 2/lr = "
      f"{2 / LR_MOM:.2f} and {relation(mom_high, mom_limit)} its own (2+2β)/lr = "
      f"{mom_limit:.2f}.")  # fmt: skip
for lr, a in adam.items():
    limit = (2 + 2 * B1) / ((1 - B1) * lr)
    print(f"Adam, lr {lr}: the preconditioned sharpness ends {relation(a['pre'][-1], limit)} "
          f"the adaptive edge 38/lr = {limit:.0f} ({a['pre'][-1]:.0f}), while the raw sharpness "
          f"({a['raw'][-1]:.2f}) is {relation(a['raw'][-1], 2 / lr)} 2/lr = {2 / lr:.0f}.")  # fmt: skip
