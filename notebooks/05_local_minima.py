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
# # Local minima, basins and flatness
#
# Gradient descent goes downhill from where it starts, so where it ends depends on the start:
# we train many starts at once on Himmelblau (four minima: which start reaches which?) and on
# Rastrigin (hundreds of minima: how much does the best of K starts buy?). On the digits MLP
# we then look at the loss between two seeds' solutions, on a 2-D slice around one of them,
# at its Hessian spectrum, and at sharpness-aware minimisation (SAM) against plain training.

# %%
import os

import jax
import matplotlib.pyplot as plt
import numpy as np

import gdopt

SMALL = os.environ.get("GDOPT_NOTEBOOK_SIZE", "full") == "small"
N_STARTS = 256 if SMALL else 1024
EPOCHS = 4 if SMALL else 30
himmelblau = gdopt.problems.TEST_FUNCTIONS["himmelblau"]
rastrigin = gdopt.problems.TEST_FUNCTIONS["rastrigin"]


def uniform_box(half_width):
    return lambda k: jax.random.uniform(k, (2,), minval=-half_width, maxval=half_width)


# %% [markdown]
# ## Himmelblau: a basin map
#
# `gdopt.multistart` trains all starts as one vectorised program and clusters their end
# points into distinct minima (the basin report). Colouring each start by the minimum it
# reached draws the basins of attraction of gradient descent.

# %%
ms = gdopt.multistart(himmelblau.fn, uniform_box(5.0), gdopt.sgd(0.005), n_starts=N_STARTS,
                      key=jax.random.PRNGKey(0), steps=1000, basin_tol=1e-2)  # fmt: skip
print(f"{N_STARTS} starts in {ms.wall_time:.1f} s (compilation included); "
      f"{int(ms.diverged.sum())} diverged")  # fmt: skip
for m in ms.minima:
    p = np.asarray(m.params)
    print(
        f"  minimum at ({p[0]:6.3f}, {p[1]:6.3f}): loss {m.loss:.2g}, reached by {m.count} starts"
    )
gdopt.plot.basin_map(ms, fn=himmelblau.fn, xlim=(-5, 5), ylim=(-5, 5))
plt.title("Himmelblau: which minimum each start reaches (gradient descent, lr 0.005)")
plt.show()

# %% [markdown]
# ## Rastrigin: the best of K starts
#
# Rastrigin's function, `10 n + Σ (x² - 10 cos 2πx)`, is a bowl covered in ripples: a local
# minimum near every integer point, one global minimum (0 at the origin). Gradient descent
# from a random start falls into the nearest ripple. The best of K starts improves with K;
# to estimate the expected best of K we split the starts into groups of K and average the
# groups' best losses.

# %%
rs = gdopt.multistart(rastrigin.fn, uniform_box(5.12), gdopt.sgd(0.002), n_starts=N_STARTS,
                      key=jax.random.PRNGKey(1), steps=500, basin_tol=0.1)  # fmt: skip
final = rs.final_loss[~rs.diverged]
ks = [2**i for i in range(int(np.log2(len(final))) + 1)]
best_of = {k: float(np.mean(final[: len(final) // k * k].reshape(-1, k).min(axis=1))) for k in ks}
print(f"{len(rs.minima)} distinct minima among {N_STARTS} starts; global minimum reached by "
      f"{sum(m.count for m in rs.minima if m.loss < 1e-3)} starts")  # fmt: skip
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
gdopt.plot.basin_map(rs, fn=rastrigin.fn, xlim=(-5.12, 5.12), ylim=(-5.12, 5.12), ax=axes[0])
axes[0].get_legend().remove()
axes[0].set_title(f"Rastrigin: {len(rs.minima)} minima reached")
axes[1].plot(ks, [max(best_of[k], 1e-6) for k in ks], "o-")
axes[1].set_xscale("log", base=2)
axes[1].set_yscale("log")
axes[1].set_xlabel("K (number of starts)")
axes[1].set_ylabel("expected best final loss among K (floor 1e-6)")
axes[1].set_title("Best of K starts")
plt.show()
for k in ks:
    print(f"  K = {k:4d}: expected best loss {best_of[k]:.3f}")

# %% [markdown]
# ## Two seeds on the digits MLP: the line between their solutions
#
# A neural network has far more than two parameters, but the same question applies: do two
# runs that differ only in their initialisation end in the same valley? Along the straight
# line between the two solutions (`gdopt.landscape.interpolate`) a bump is a barrier between
# two minima. The line from an initialisation to its solution is usually a monotone slide
# down (Goodfellow et al. 2015).

# %%
problem = gdopt.problems.get_problem("digits-mlp")


def train(seed, optimizer):
    return gdopt.fit(problem.loss_fn, problem.init_params(jax.random.PRNGKey(seed)), optimizer,
                     problem.train, epochs=EPOCHS, batch_size=32, key=jax.random.PRNGKey(seed),
                     eval_data=problem.test, accuracy_fn=problem.accuracy_fn)  # fmt: skip


base = gdopt.sgd(0.05, momentum=0.9)
run_a, run_b = train(0, base), train(1, base)
for name, r in (("seed 0", run_a), ("seed 1", run_b)):
    print(f"{name}: train loss {r.history.train_loss[-1]:.4f}, "
          f"test accuracy {r.history.eval_accuracy[-1]:.3f}")  # fmt: skip
N_LINE = 25 if SMALL else 61
between = gdopt.landscape.interpolate(problem.loss_fn, run_a.params, run_b.params, problem.train,
                                      n=N_LINE, extend=0.25)  # fmt: skip
from_init = gdopt.landscape.interpolate(problem.loss_fn, problem.init_params(jax.random.PRNGKey(0)),
                                        run_a.params, problem.train, n=N_LINE)  # fmt: skip
fig, ax = plt.subplots(figsize=(8, 4))
gdopt.plot.interpolation_curve(between, label="seed 0 → seed 1 solution", log=True, ax=ax)
gdopt.plot.interpolation_curve(from_init, label="seed 0: initialisation → solution", log=True,
                               ax=ax)  # fmt: skip
ax.set_ylabel("training loss")
plt.show()
inside = (between.alpha >= 0) & (between.alpha <= 1)
barrier = float(between.loss[inside].max() - max(between.loss[inside][0], between.loss[inside][-1]))
monotone = bool(np.all(np.diff(from_init.loss) <= 1e-6))
print(f"barrier between the two solutions: {barrier:.3f} above the higher end point")
print(f"loss from initialisation to solution monotone: {monotone}")

# %% [markdown]
# ## A 2-D slice around a solution
#
# Two random directions, filter-normalised (Li et al. 2018: each unit of a direction gets
# the norm of the same unit of the weights, so the picture does not depend on each layer's
# scale), span a plane through the solution; `gdopt.landscape.slice_2d` evaluates the
# training loss on a grid over it.

# %%
plane = gdopt.landscape.slice_2d(problem.loss_fn, run_a.params, problem.train,
                                 key=jax.random.PRNGKey(3), span=1.0,
                                 n=15 if SMALL else 41)  # fmt: skip
gdopt.plot.slice_2d_contours(plane, log=True)
plt.title("log10 training loss around the seed-0 solution")
plt.show()
centre = plane.loss[len(plane.y) // 2, len(plane.x) // 2]
print(f"loss at the centre {centre:.4f}, lowest on the grid {plane.loss.min():.4f}, "
      f"highest {plane.loss.max():.2f}")  # fmt: skip

# %% [markdown]
# ## The Hessian spectrum at the solution
#
# The curvature of the loss at a minimum is its Hessian. With thousands of parameters we never
# form it: stochastic Lanczos quadrature (`gdopt.landscape.hessian_spectrum`) estimates its
# eigenvalue density from Hessian-vector products. Trained networks typically show a bulk of
# eigenvalues near zero and a few large outliers (Ghorbani et al. 2019).

# %%
spectrum = gdopt.landscape.hessian_spectrum(problem.loss_fn, run_a.params, problem.train,
                                            num_iters=40 if SMALL else 90,
                                            n_probes=3 if SMALL else 10)  # fmt: skip
top = np.asarray(gdopt.landscape.hessian_eigenvalues(problem.loss_fn, run_a.params,
                                                     problem.train, k=5))  # fmt: skip
gdopt.plot.spectral_density(spectrum)
plt.title("Hessian eigenvalue density at the seed-0 solution")
plt.show()
near_zero = float(
    np.sum(spectrum.weights * (np.abs(spectrum.nodes) < 0.01 * top[0])) / len(spectrum.weights)
)
print(f"top 5 eigenvalues {', '.join(f'{v:.4f}' for v in top)}")
print(f"share of the spectrum within 1% of the top eigenvalue from zero: {near_zero:.0%}")

# %% [markdown]
# ## SAM against plain training
#
# Sharpness-aware minimisation (`gdopt.sam`, Foret et al. 2021) takes each step with the
# gradient at the worst point of a small ball around the weights, which steers training
# towards flatter minima. We train the same start with and without it and compare the top
# Hessian eigenvalue (the sharpness) and the test accuracy of the two solutions.

# %%
run_sam = train(0, gdopt.sam(gdopt.sgd(0.05, momentum=0.9), rho=0.05))
sharp = {
    name: float(gdopt.landscape.hessian_eigenvalues(problem.loss_fn, r.params, problem.train)[0])
    for name, r in (("plain", run_a), ("SAM", run_sam))
}
acc = {"plain": float(run_a.history.eval_accuracy[-1]),
       "SAM": float(run_sam.history.eval_accuracy[-1])}  # fmt: skip
loss = {"plain": float(run_a.history.train_loss[-1]), "SAM": float(run_sam.history.train_loss[-1])}
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for name, r in (("plain", run_a), ("SAM", run_sam)):
    axes[0].semilogy(r.history.epochs, r.history.train_loss, label=f"{name} (train)")
    axes[1].plot(r.history.epochs, r.history.eval_accuracy, label=name)
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("training loss")
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("test accuracy")
axes[0].legend()
axes[1].legend()
plt.show()
for name in sharp:
    print(f"{name:5s}: sharpness {sharp[name]:8.3f}, train loss {loss[name]:.4f}, "
          f"test accuracy {acc[name]:.3f}")  # fmt: skip

# %% [markdown]
# ## What we learned
#
# The cell below states the comparisons from the numbers of this run (the words are chosen
# by the computation, not typed).

# %%
print(f"Himmelblau: {N_STARTS} starts of gradient descent found {len(ms.minima)} distinct "
      f"minima; the most visited basin took {max(m.count for m in ms.minima)} starts, the least "
      f"{min(m.count for m in ms.minima)}.")  # fmt: skip
k_max = ks[-1]
print(f"Rastrigin: one start's expected final loss is {best_of[1]:.2f}; the best of {k_max} "
      f"starts {'improves' if best_of[k_max] < best_of[1] else 'does not improve'} on it "
      f"({best_of[k_max]:.3f}).")  # fmt: skip
print(f"Digits MLP: the line between two seeds' solutions "
      f"{'rises' if barrier > 0 else 'does not rise'} above its end points "
      f"({'a barrier of ' + format(barrier, '.3f') if barrier > 0 else 'no barrier'}), while "
      f"the line from an initialisation to its solution is "
      f"{'monotone' if monotone else 'not monotone'}.")  # fmt: skip
print(f"The Hessian at the solution: its top eigenvalue is {top[0]:.2f}, and "
      f"{near_zero:.0%} of the spectral mass lies within 1% of that from zero.")  # fmt: skip
flatter = "flatter" if sharp["SAM"] < sharp["plain"] else "sharper"
better = (
    "higher"
    if acc["SAM"] > acc["plain"]
    else ("the same" if acc["SAM"] == acc["plain"] else "lower")
)
print(f"SAM's solution is {flatter} than plain training's (sharpness {sharp['SAM']:.2f} "
      f"against {sharp['plain']:.2f}), with {better} test accuracy ({acc['SAM']:.3f} against "
      f"{acc['plain']:.3f}).")  # fmt: skip
