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
# # Optimizers compared, each tuned
#
# A comparison of optimizers is only fair when each gets its own learning rate: we tune
# every family (plain and momentum SGD, the adaptive methods, the Adam family, sign-based and
# layer-wise methods) by a vectorised sweep over learning rates on a validation split of the
# digits MLP. Then we train each at its best rate, measure test accuracy and training time,
# and rank them.

# %%
import os

import jax
import matplotlib.pyplot as plt
import numpy as np

import gdopt

SMALL = os.environ.get("GDOPT_NOTEBOOK_SIZE", "full") == "small"
EPOCHS = 2 if SMALL else 10
N_RATES = 3 if SMALL else 7
problem = gdopt.problems.get_problem("digits-mlp")
x_all, y_all = problem.train
n_val = x_all.shape[0] // 5
tune_train = (x_all[n_val:], y_all[n_val:])
validation = (x_all[:n_val], y_all[:n_val])
params0 = problem.init_params(jax.random.PRNGKey(0))
print(problem.description)
print(f"tuning: {tune_train[0].shape[0]} training and {n_val} validation examples; "
      f"final runs: {x_all.shape[0]} training, {problem.test[0].shape[0]} test examples; "
      f"{EPOCHS} epochs, batch 32")  # fmt: skip

# %% [markdown]
# ## The contenders and their learning-rate ranges
#
# Each entry is an optimizer with the hyperparameters its authors recommend, except the
# learning rate, which the sweep chooses on a log-spaced grid over a range wide enough for
# that family (sign-based and layer-wise updates have a size set by the rate itself and need
# smaller rates than SGD).

# %%
FAMILIES = {  # name: (family, optimizer, lowest and highest learning rate)
    "SGD": ("descent", gdopt.sgd(0.1), (1e-2, 3.0)),
    "momentum": ("descent", gdopt.sgd(0.1, momentum=0.9), (1e-3, 0.3)),
    "Nesterov": ("descent", gdopt.sgd(0.1, momentum=0.9, nesterov=True), (1e-3, 0.3)),
    "Adagrad": ("adaptive", gdopt.adagrad(0.1), (1e-3, 0.3)),
    "RMSprop": ("adaptive", gdopt.rmsprop(1e-3), (1e-4, 3e-2)),
    "Adam": ("Adam family", gdopt.adam(1e-3), (1e-4, 3e-2)),
    "AdamW": ("Adam family", gdopt.adamw(1e-3, weight_decay=1e-2), (1e-4, 3e-2)),
    "NAdam": ("Adam family", gdopt.nadam(1e-3), (1e-4, 3e-2)),
    "AdaBelief": ("Adam family", gdopt.adabelief(1e-3), (1e-4, 3e-2)),
    "Signum": ("sign", gdopt.signum(1e-3), (1e-5, 3e-3)),
    "Lion": ("sign", gdopt.lion(1e-4, weight_decay=0.0), (1e-5, 3e-3)),
    "LAMB": ("layer-wise", gdopt.lamb(1e-3), (1e-4, 3e-2)),
    "LARS": ("layer-wise", gdopt.lars(0.1), (1e-2, 10.0)),
}
if SMALL:  # one or two of each kind
    FAMILIES = {k: FAMILIES[k] for k in ["SGD", "momentum", "Adam", "Lion"]}
print(f"{len(FAMILIES)} optimizers, {N_RATES} learning rates each")

# %% [markdown]
# ## Tuning: one vectorised sweep per optimizer
#
# `gdopt.sweep` trains all the rates of one optimizer side by side, as one compiled program
# (the learning rate is data in the optimizer state, so the rates share one compilation).
# Each sweep ranks its runs by validation accuracy.

# %%
sweeps = {}
for name, (_, opt, (lo, hi)) in FAMILIES.items():
    rates = [float(v) for v in np.geomspace(lo, hi, N_RATES)]
    sweeps[name] = gdopt.sweep(problem.loss_fn, params0, opt, tune_train,
                               grid={"learning_rate": rates}, epochs=EPOCHS, batch_size=32,
                               key=jax.random.PRNGKey(1), eval_data=validation,
                               accuracy_fn=problem.accuracy_fn, metric="eval_accuracy")  # fmt: skip
    s = sweeps[name]
    print(f"{name:10s} best rate {s.best_config['learning_rate']:.3g}  validation accuracy "
          f"{s.eval_accuracy[s.best_index]:.3f}  sweep {s.wall_time:.1f} s "
          f"(compiling {s.compile_time:.1f} s)")  # fmt: skip

# %%
fig, ax = plt.subplots(figsize=(9, 4.5))
for i, (name, s) in enumerate(sweeps.items()):
    rates = [c["learning_rate"] for c in s.configs]
    acc = np.where(s.diverged, np.nan, s.eval_accuracy)
    ax.semilogx(rates, acc, "o-" if i < 10 else "s--", label=name, ms=3)  # 10 colours
ax.set_xlabel("learning rate")
ax.set_ylabel(f"validation accuracy after {EPOCHS} epochs")
ax.set_title("Each optimizer's learning-rate sweep")
ax.legend(fontsize="x-small", ncol=2)
plt.show()

# %% [markdown]
# ## The tuned runs
#
# Each optimizer now trains at its best rate on the whole training set with `gdopt.fit`.
# Each run is made four times: the first compiles, the others reuse the compiled program
# (they are the same computation), and the training time we report is the fastest of
# those three (the machine is shared: the minimum is the least disturbed measurement).

# %%
final, train_ms = {}, {}
for name, (_, opt, _) in FAMILIES.items():
    tuned = gdopt.rebuild_with_hyperparams(opt, **sweeps[name].best_config)
    times = []
    for _ in range(4):
        final[name] = gdopt.fit(problem.loss_fn, params0, tuned, problem.train, epochs=EPOCHS,
                                batch_size=32, key=jax.random.PRNGKey(1), eval_data=problem.test,
                                accuracy_fn=problem.accuracy_fn)  # fmt: skip
        times.append(final[name].wall_time)
    train_ms[name] = 1000 * min(times[1:])
fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
gdopt.plot.loss_curves(final, metric="eval_loss", ax=axes[0], title="test loss")
gdopt.plot.loss_curves(final, metric="eval_accuracy", ax=axes[1], title="test accuracy")
for ax in axes:
    for i, line in enumerate(ax.get_lines()):
        if i >= 10:  # the colour cycle has 10 colours
            line.set_linestyle("--")
    ax.legend(fontsize="x-small", ncol=2)
plt.show()

# %% [markdown]
# ## The ranking
#
# Ranked by test accuracy (ties broken by test loss).

# %%
rows = []
for name, r in final.items():
    rows.append({
        "name": name,
        "family": FAMILIES[name][0],
        "rate": sweeps[name].best_config["learning_rate"],
        "accuracy": float(r.history.eval_accuracy[-1]),
        "loss": float(r.history.eval_loss[-1]),
        "ms": train_ms[name],
    })  # fmt: skip
rows.sort(key=lambda row: (-row["accuracy"], row["loss"]))
print(f"{'rank':>4s}  {'optimizer':10s} {'family':12s} {'best lr':>8s} {'test acc':>8s} "
      f"{'test loss':>9s} {'train ms':>8s}")  # fmt: skip
for i, row in enumerate(rows, 1):
    print(f"{i:4d}  {row['name']:10s} {row['family']:12s} {row['rate']:8.3g} "
          f"{row['accuracy']:8.3f} {row['loss']:9.4f} {row['ms']:8.1f}")  # fmt: skip
fig, ax = plt.subplots(figsize=(9, 4))
names = [row["name"] for row in rows]
accs = [row["accuracy"] for row in rows]
kinds = sorted({row["family"] for row in rows})
ax.bar(names, accs, color=[f"C{kinds.index(row['family'])}" for row in rows])
for j, kind in enumerate(kinds):
    ax.bar([names[0]], [0], color=f"C{j}", label=kind)  # legend entries only
ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
ax.set_ylim(min(accs) - 0.02, 1.0)
ax.set_ylabel("test accuracy")
ax.set_title("Tuned optimizers, ranked (colour: family)")
ax.tick_params(axis="x", rotation=45)
plt.show()

# %% [markdown]
# ## What we learned
#
# The cell below states the comparisons from the numbers of this run (the words are chosen
# by the computation, not typed).

# %%
best, worst = rows[0], rows[-1]
print(f"The best tuned optimizer is {best['name']} ({best['family']}, test accuracy "
      f"{best['accuracy']:.3f}); the worst is {worst['name']} ({worst['accuracy']:.3f}): a spread "
      f"of {best['accuracy'] - worst['accuracy']:.3f} after each got its own learning rate.")  # fmt: skip
by_name = {row["name"]: row for row in rows}
sgd_acc = by_name["SGD"]["accuracy"]
beat = [row["name"] for row in rows if row["accuracy"] > sgd_acc]
print(f"{len(beat)} of the other {len(rows) - 1} optimizers beat tuned plain SGD "
      f"({sgd_acc:.3f}){': ' + ', '.join(beat) if beat else ''}.")  # fmt: skip
fastest = min(rows, key=lambda row: row["ms"])
slowest = max(rows, key=lambda row: row["ms"])
print(f"Training time: fastest {fastest['name']} ({fastest['ms']:.1f} ms), slowest "
      f"{slowest['name']} ({slowest['ms']:.1f} ms) for the same {EPOCHS} epochs.")  # fmt: skip
edge = [n for n, s in sweeps.items()
        if s.best_index in (0, len(s.configs) - 1)]  # fmt: skip
print(f"Best rate at an end of its grid (the range may be too narrow): "
      f"{', '.join(edge) if edge else 'none'}.")  # fmt: skip
spread = {n: float(np.nanmax(np.where(s.diverged, np.nan, s.eval_accuracy))
                   - np.nanmin(np.where(s.diverged, np.nan, s.eval_accuracy)))
          for n, s in sweeps.items()}  # fmt: skip
most = max(spread, key=spread.get)
least = min(spread, key=spread.get)
print(f"Most sensitive to the learning rate over its grid: {most} (validation accuracy varies "
      f"by {spread[most]:.3f}); least: {least} ({spread[least]:.3f}).")  # fmt: skip
