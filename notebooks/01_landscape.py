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
# # Optimizers on a landscape
#
# Six update rules (batch gradient descent, momentum, Nesterov, Adam, RMSprop and Lion) start
# from the same point on three classic 2-D test functions, Rosenbrock's curved valley,
# Himmelblau's four minima and Beale's flat plateau, and we draw their paths on the contours.
# Then we slow down and follow one of them step by step: the cost, its gradient, and the
# update each rule makes of that gradient.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import gdopt

SMALL = os.environ.get("GDOPT_NOTEBOOK_SIZE", "full") == "small"
STEPS = 500 if SMALL else 2000
EVERY = STEPS // 100
FUNCTIONS = ["rosenbrock", "himmelblau", "beale"]
tests = {name: gdopt.problems.TEST_FUNCTIONS[name] for name in FUNCTIONS}
for t in tests.values():
    x0 = np.round(t.x0.astype(np.float64), 3).tolist()
    slope = float(np.linalg.norm(jax.grad(t.fn)(jnp.asarray(t.x0))))
    minimisers = [np.round(m.astype(np.float64), 3).tolist() for m in t.minima]
    print(f"{t.name:11s} start {x0}  f(start) = {float(t.fn(t.x0)):7.3f}  "
          f"|gradient| = {slope:6.1f}  minimisers {minimisers}")  # fmt: skip

# %% [markdown]
# ## One start, six update rules
#
# Each function gets its own learning rates (their slopes differ: the gradient norm at each
# start is printed above), but within a function the rules share the same start and the
# same number of steps. Gradient descent uses one rate, momentum and Nesterov half of it
# (their velocity adds up the steps), Adam a rate of its own, and RMSprop and Lion a third:
# the adaptive rules take steps whose size is set by the rate rather than by the slope.
# `gdopt.record_trajectories` runs all six from the start in one compiled call.

# %%
RATES = {  # (gradient descent and momentum, Adam, RMSprop and Lion)
    "rosenbrock": (1e-3, 0.02, 0.004),
    "himmelblau": (0.01, 0.05, 0.01),
    "beale": (0.01, 0.05, 0.01),
}


def optimizers(name):
    gd, adam, sign = RATES[name]
    return {
        "GD": gdopt.sgd(gd),
        "momentum": gdopt.sgd(gd / 2, momentum=0.9),
        "Nesterov": gdopt.sgd(gd / 2, momentum=0.9, nesterov=True),
        "Adam": gdopt.adam(adam),
        "RMSprop": gdopt.rmsprop(sign),
        "Lion": gdopt.lion(sign, weight_decay=0.0),
    }


paths = {
    name: gdopt.record_trajectories(
        t.fn, jnp.asarray(t.x0), optimizers(name), steps=STEPS, every=EVERY
    )  # fmt: skip
    for name, t in tests.items()
}
for name, runs in paths.items():
    print(name)
    for label, tr in runs.items():
        end = np.asarray(tr.params[-1])
        print(f"  {label:9s} f = {tr.loss[-1]:10.3g} at ({end[0]:6.3f}, {end[1]:6.3f})"
              f"{'  diverged' if tr.diverged else ''}")  # fmt: skip

# %%
BOXES = {"rosenbrock": ((-2, 2), (-1, 3)), "himmelblau": ((-5, 5), (-5, 5)),
         "beale": ((-1, 4.5), (-1.5, 2))}  # fmt: skip
fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
for ax, (name, t) in zip(axes, tests.items(), strict=True):
    xlim, ylim = BOXES[name]
    gdopt.plot.contours(t.fn, xlim=xlim, ylim=ylim, trajectories=paths[name],
                        minima=np.stack(t.minima), ax=ax)  # fmt: skip
    ax.set_title(f"{name} ({STEPS} steps from {np.round(t.x0.astype(np.float64), 2).tolist()})")
plt.show()

# %% [markdown]
# ## The cost along the way
#
# The same runs, as the cost against the step (logarithmic: the tail of each curve is the
# speed of convergence once a method has found the valley floor).

# %%
fig, axes = plt.subplots(1, 3, figsize=(18, 4))
steps_axis = np.arange(0, STEPS + 1, EVERY)
for ax, (name, runs) in zip(axes, paths.items(), strict=True):
    for label, tr in runs.items():
        ax.semilogy(steps_axis, np.maximum(tr.loss, 1e-12), label=label)
    ax.set_title(name)
    ax.set_xlabel("step")
axes[0].set_ylabel("f(x)")
axes[0].legend(fontsize="small")
plt.show()

# %% [markdown]
# ## Step by step: cost, gradient, update
#
# Training is a loop of four moves: evaluate the cost at the current point, take its
# gradient (`jax.value_and_grad`), let the optimizer turn the gradient into an update
# (`opt.update`, which also carries the optimizer's state: momentum's velocity, Adam's
# moment estimates), and apply it (`gdopt.apply_updates`). Here are the first steps of
# gradient descent, momentum and Adam on Rosenbrock, written out by hand.

# %%
rosen = tests["rosenbrock"]
value_and_grad = jax.jit(jax.value_and_grad(rosen.fn))
by_hand = {"GD": gdopt.sgd(1e-3), "momentum": gdopt.sgd(5e-4, momentum=0.9),
           "Adam": gdopt.adam(0.02)}  # fmt: skip
N_HAND = 6
records = {}
for label, opt in by_hand.items():
    x = jnp.asarray(rosen.x0)
    state = opt.init(x)
    rows = []
    for _ in range(N_HAND):
        cost, grad = value_and_grad(x)
        updates, state = opt.update(grad, state, x)
        rows.append((np.asarray(x), float(cost), np.asarray(grad), np.asarray(updates)))
        x = gdopt.apply_updates(x, updates)
    records[label] = rows
for label, rows in records.items():
    print(label)
    print("  step   x                    cost      gradient                update")
    for i, (x, cost, g, u) in enumerate(rows):
        print(f"  {i:3d}  ({x[0]:7.4f}, {x[1]:7.4f})  {cost:8.4f}  ({g[0]:8.2f}, {g[1]:7.2f})"
              f"   ({u[0]:8.5f}, {u[1]:8.5f})")  # fmt: skip

# %% [markdown]
# Gradient descent's update is the gradient times `-lr`: it points straight downhill and its
# length follows the slope, so the steep wall of the valley throws the first step across the
# valley floor (the gradient's first coordinate changes sign), and on the nearly flat floor
# the steps become tiny. Momentum's update adds the previous updates: it keeps moving where
# the gradients have pointed, even uphill for a while. Adam divides each coordinate by the
# running root-mean-square of its gradients, so its first step has length `lr` in every
# coordinate whatever the slope: the direction changes, not only the length. The arrows
# below are the actual updates (not rescaled).

# %%
fig, ax = plt.subplots(figsize=(7, 5))
pts = np.concatenate([[r[0] for r in rows] for rows in records.values()])
pad = 0.1
xlim = (pts[:, 0].min() - pad, pts[:, 0].max() + pad)
ylim = (pts[:, 1].min() - pad, pts[:, 1].max() + pad)
gdopt.plot.contours(rosen.fn, xlim=xlim, ylim=ylim, ax=ax)
for (label, rows), color in zip(records.items(), ["C0", "C1", "C3"], strict=True):
    for x, _, _, u in rows:
        ax.annotate("", xy=(x[0] + u[0], x[1] + u[1]), xytext=(x[0], x[1]),
                    arrowprops=dict(arrowstyle="->", color=color, lw=3 if label == "GD" else 1.5),
                    zorder=4 if label == "GD" else 3)  # fmt: skip
    ax.plot([], [], color=color, label=f"{label}")
ax.plot(*rosen.x0, "ko", label="start")
ax.legend(fontsize="small", loc="best")
ax.set_title(f"The first {N_HAND} updates on Rosenbrock")
plt.show()

# %% [markdown]
# ## What we learned
#
# The cell below states the comparisons from the numbers of this run (which method is best,
# and whether a rule's update grew, are computed, not typed).

# %%
for name, runs in paths.items():
    final = {label: float(tr.loss[-1]) for label, tr in runs.items()}
    best = min(final, key=final.get)
    worst = max(final, key=final.get)
    print(f"{name}: after {STEPS} steps the lowest cost is {best}'s ({final[best]:.2g}), "
          f"the highest {worst}'s ({final[worst]:.2g}).")  # fmt: skip
ros = {label: float(tr.loss[-1]) for label, tr in paths["rosenbrock"].items()}
print(f"On Rosenbrock's valley momentum ends "
      f"{'below' if ros['momentum'] < ros['GD'] else 'above'} plain gradient descent "
      f"({ros['momentum']:.2g} against {ros['GD']:.2g}) with half its learning rate.")  # fmt: skip
minima = {name: np.stack(t.minima) for name, t in tests.items()}
reached = {
    label: int(np.argmin(np.linalg.norm(minima["himmelblau"] - np.asarray(tr.params[-1]), axis=1)))
    for label, tr in paths["himmelblau"].items()
}
print(f"On Himmelblau the rules ended next to {len(set(reached.values()))} distinct "
      f"minimiser(s) of the four, starting from the same point.")  # fmt: skip
gd = records["GD"]
gd_matches = all(np.allclose(u, -1e-3 * g, rtol=1e-5) for _, _, g, u in gd)
crossed = bool(np.sign(gd[0][2][0]) != np.sign(gd[1][2][0]))
shrink = float(np.linalg.norm(gd[-1][3]) / np.linalg.norm(gd[0][3]))
print(f"By hand: every gradient-descent update {'was' if gd_matches else 'was not'} -lr times "
      f"the gradient; its first step {'crossed' if crossed else 'did not cross'} the valley "
      f"floor, and its last update was {shrink:.1%} of the length of the first.")  # fmt: skip
mom_costs = [r[1] for r in records["momentum"]]
ups = int(np.sum(np.diff(mom_costs) > 0))
print(
    f"Momentum's cost rose in {ups} of its first {N_HAND - 1} steps"
    + (": the velocity carried it on uphill, past the valley floor." if ups else ".")
)
adam_first = np.abs(records["Adam"][0][3])
print(f"Adam's first update moved the coordinates by {adam_first[0]:.4f} and "
      f"{adam_first[1]:.4f} (its learning rate is 0.02), though the gradient's coordinates "
      f"differ {abs(gd[0][2][0] / gd[0][2][1]):.1f}-fold.")  # fmt: skip
