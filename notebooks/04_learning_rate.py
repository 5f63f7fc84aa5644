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
# # The learning rate
#
# The learning rate is the hyperparameter that matters most, and this notebook looks at the
# ways to choose it: a learning-rate × seed sweep drawn as a heat map, the learning-rate
# finder (and how its suggestion compares with the sweep's best), successive halving,
# learning-rate-free methods against tuned Adam, and schedules (warm-up + cosine,
# warmup-stable-decay, reduce on plateau). Everything runs Adam on the digits MLP, tuned on a
# validation split and tested on the held-out test set.

# %%
import os

import jax
import matplotlib.pyplot as plt
import numpy as np

import gdopt

SMALL = os.environ.get("GDOPT_NOTEBOOK_SIZE", "full") == "small"
EPOCHS = 2 if SMALL else 10
BATCH = 32
problem = gdopt.problems.get_problem("digits-mlp")
x_all, y_all = problem.train
n_val = x_all.shape[0] // 5
tune_train = (x_all[n_val:], y_all[n_val:])
validation = (x_all[:n_val], y_all[:n_val])
params0 = problem.init_params(jax.random.PRNGKey(0))
steps_per_epoch = x_all.shape[0] // BATCH
print(f"tuning on {tune_train[0].shape[0]} examples, validating on {n_val}; "
      f"{EPOCHS} epochs of batch {BATCH}")  # fmt: skip

# %% [markdown]
# ## A learning-rate × seed heat map
#
# `gdopt.sweep` crosses every rate with several seeds (initialisation and shuffling) and
# trains all the runs side by side as one compiled program. The heat map shows each run's
# validation loss: how wide the good range is, and how much of a difference between two
# rates is only the seed.

# %%
RATES = [float(v) for v in np.geomspace(1e-4, 1e-1, 4 if SMALL else 10)]
SEEDS = 2 if SMALL else 4
heat = gdopt.sweep(problem.loss_fn, problem.init_params, gdopt.adam(1e-3), tune_train,
                   grid={"learning_rate": RATES}, seeds=SEEDS, epochs=EPOCHS, batch_size=BATCH,
                   key=jax.random.PRNGKey(1), eval_data=validation,
                   accuracy_fn=problem.accuracy_fn, metric="eval_loss")  # fmt: skip
gdopt.plot.sweep_heatmap(heat, x="learning_rate", y="seed", metric="eval_loss",
                         title="Adam: validation loss per learning rate and seed")  # fmt: skip
plt.show()
val_loss = np.where(heat.diverged, np.inf, heat.eval_loss).reshape(len(RATES), SEEDS)
mean_loss = val_loss.mean(axis=1)
best_rate = RATES[int(np.argmin(mean_loss))]
seed_spread = val_loss.max(axis=1) - val_loss.min(axis=1)
print(heat.table(limit=5))
print(f"best rate by the mean over seeds: {best_rate:.3g} "
      f"(mean validation loss {mean_loss.min():.4f}); at that rate the seeds differ by "
      f"{seed_spread[int(np.argmin(mean_loss))]:.4f}")  # fmt: skip

# %% [markdown]
# ## The learning-rate finder
#
# The range test (Smith 2017, fastai's `lr_find`) takes one short run whose rate grows
# exponentially at every step, and records the loss: it falls while the rate is useful and
# blows up once the rate is too large. `gdopt.lr_find` runs it as one compiled scan and
# suggests a rate by a few rules (fastai's "valley" by default). How close does one ramp
# get to the sweep's answer, which cost `len(RATES) × SEEDS` full trainings?

# %%
finder = gdopt.lr_find(problem.loss_fn, params0, gdopt.adam(1e-3), tune_train,
                       start_lr=1e-6, end_lr=1.0, num_steps=100, batch_size=BATCH,
                       key=jax.random.PRNGKey(2))  # fmt: skip
gdopt.plot.lr_find_curve(finder)
plt.axvline(best_rate, color="k", lw=1, label=f"sweep's best {best_rate:.2g}")
plt.legend(fontsize="small")
plt.show()
for rule, lr in finder.suggestions.items():
    print(f"  {rule:8s} suggests {lr:.3g}  ({lr / best_rate:.2g} × the sweep's best)")
finder_run = gdopt.fit(problem.loss_fn, params0, gdopt.adam(finder.suggestion), tune_train,
                       epochs=EPOCHS, batch_size=BATCH, key=jax.random.PRNGKey(1),
                       eval_data=validation)  # fmt: skip
sweep_run = gdopt.fit(problem.loss_fn, params0, gdopt.adam(best_rate), tune_train, epochs=EPOCHS,
                      batch_size=BATCH, key=jax.random.PRNGKey(1), eval_data=validation)  # fmt: skip
finder_loss = float(finder_run.history.eval_loss[-1])
sweep_loss = float(sweep_run.history.eval_loss[-1])
print(f"validation loss after {EPOCHS} epochs: finder's rate {finder_loss:.4f}, "
      f"sweep's rate {sweep_loss:.4f}")  # fmt: skip

# %% [markdown]
# ## Successive halving
#
# A sweep gives every rate the whole budget. Successive halving (Jamieson & Talwalkar 2016)
# trains all of them briefly, keeps the best third, trains those three times as long, and
# so on: most of the budget goes to the promising rates. Each rung is one vectorised
# program; a promoted run continues from its state.

# %%
SH_RATES = [float(v) for v in np.geomspace(1e-5, 1.0, 9 if SMALL else 27)]
SH_MAX = 3 if SMALL else 9
halving = gdopt.successive_halving(problem.loss_fn, params0, gdopt.adam(1e-3), tune_train,
                                   grid={"learning_rate": SH_RATES}, eta=3, min_epochs=1,
                                   max_epochs=SH_MAX, batch_size=BATCH,
                                   key=jax.random.PRNGKey(1), eval_data=validation,
                                   metric="eval_loss")  # fmt: skip
fig, ax = plt.subplots(figsize=(8, 4))
for r, rung in enumerate(halving.rungs):
    rates = [halving.configs[i]["learning_rate"] for i in rung.indices]
    scores = np.where(np.isfinite(rung.scores), rung.scores, np.nan)
    ax.semilogx(rates, scores, "o", ms=4 + 3 * r, label=f"rung {r}: {rung.epochs} epochs")
ax.set_yscale("log")
ax.set_xlabel("learning rate")
ax.set_ylabel("validation loss at the end of the rung")
ax.legend()
plt.show()
epoch_runs = int(np.sum(halving.epochs_run))
full_cost = len(SH_RATES) * SH_MAX
sh_rate = halving.best_config["learning_rate"]
print(f"successive halving: best rate {sh_rate:.3g} after {epoch_runs} epoch-runs "
      f"(a full sweep of the same rates to {SH_MAX} epochs would cost {full_cost}), "
      f"{halving.wall_time:.1f} s")  # fmt: skip

# %% [markdown]
# ## Learning-rate-free methods against tuned Adam
#
# Prodigy (Mishchenko & Defazio 2024) and D-Adaptation (Defazio & Mishchenko 2023) estimate
# the distance to the solution as they go and set the step size from it: their "learning
# rate" is a multiplier left at 1. Schedule-free AdamW (Defazio et al. 2024) needs a rate but
# no schedule; it runs here at its default rate, untuned, and is evaluated at its averaged
# point (`gdopt.schedule_free_eval_params`). All of them train on the whole training set
# against Adam at the sweep's best rate.

# %%
contenders = {
    "Adam (tuned)": gdopt.adam(best_rate),
    "Prodigy": gdopt.prodigy(),
    "D-Adapt AdamW": gdopt.dadapt_adamw(),
    "schedule-free AdamW": gdopt.schedule_free_adamw(),
}
if SMALL:  # fewer compilations
    contenders = {k: contenders[k] for k in ["Adam (tuned)", "Prodigy"]}
lr_free = {}
for name, opt in contenders.items():
    lr_free[name] = gdopt.fit(problem.loss_fn, params0, opt, problem.train, epochs=EPOCHS,
                              batch_size=BATCH, key=jax.random.PRNGKey(1),
                              eval_data=problem.test, accuracy_fn=problem.accuracy_fn)  # fmt: skip
test_acc = {}
for name, r in lr_free.items():
    params = r.params
    if name.startswith("schedule-free"):
        params = gdopt.schedule_free_eval_params(r.opt_state, r.params)
    test_acc[name] = float(problem.accuracy_fn(params, problem.test))
gdopt.plot.loss_curves({k: v for k, v in lr_free.items() if not k.startswith("schedule-free")},
                       metric="train_loss",
                       title="training loss (schedule-free omitted: its loss is at another point)")  # fmt: skip
plt.show()
for name, acc in test_acc.items():
    print(f"{name:20s} test accuracy {acc:.3f}")

# %% [markdown]
# ## Schedules
#
# A schedule changes the rate during training. Warm-up + cosine starts small, rises to a
# peak and decays along a cosine; warmup-stable-decay (WSD) holds the peak for most of the
# run and decays only at the end; reduce on plateau cuts the rate whenever the loss stops
# improving (here: by half once the training loss, averaged over quarter epochs, has not
# improved by 10% for a whole epoch). The peak is the sweep's best rate.

# %%
total = EPOCHS * steps_per_epoch
warmup = max(1, total // 10)
cosine = gdopt.warmup_cosine_decay_schedule(0.0, best_rate, warmup, total, end_value=0.0)
wsd = gdopt.warmup_stable_decay_schedule(0.0, best_rate, warmup, total - warmup - total // 5,
                                         total // 5)  # fmt: skip
schedules = {
    "constant": gdopt.adam(best_rate),
    "warm-up + cosine": gdopt.adam(cosine),
    "warmup-stable-decay": gdopt.adam(wsd),
    "reduce on plateau": gdopt.chain(
        gdopt.adam(best_rate),
        gdopt.reduce_on_plateau(
            factor=0.5, patience=4, rtol=0.1, accumulation_size=steps_per_epoch // 4
        ),
    ),
}
if SMALL:  # fewer compilations
    schedules = {k: schedules[k] for k in ["constant", "warm-up + cosine", "reduce on plateau"]}
scheduled = {
    name: gdopt.fit(
        problem.loss_fn,
        params0,
        opt,
        problem.train,
        epochs=EPOCHS,
        batch_size=BATCH,
        key=jax.random.PRNGKey(1),
        eval_data=problem.test,
        accuracy_fn=problem.accuracy_fn,
    )  # fmt: skip
    for name, opt in schedules.items()
}
plateau_scale = float(gdopt.tree_utils.tree_get(scheduled["reduce on plateau"].opt_state, "scale"))
steps = np.arange(total)
fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
axes[0].plot(steps, np.full(total, best_rate), label="constant")
axes[0].plot(steps, [float(cosine(t)) for t in steps], label="warm-up + cosine")
if "warmup-stable-decay" in schedules:
    axes[0].plot(steps, [float(wsd(t)) for t in steps], label="warmup-stable-decay")
axes[0].axhline(best_rate * plateau_scale, color="C3", ls=":",
                label=f"reduce on plateau: final rate ({plateau_scale:g} × peak)")  # fmt: skip
axes[0].set_xlabel("step")
axes[0].set_ylabel("learning rate")
axes[0].legend(fontsize="small")
gdopt.plot.loss_curves(scheduled, metric="eval_loss", ax=axes[1], title="test loss")
plt.show()
sched_acc = {name: float(r.history.eval_accuracy[-1]) for name, r in scheduled.items()}
sched_loss = {name: float(r.history.eval_loss[-1]) for name, r in scheduled.items()}
for name in schedules:
    print(f"{name:20s} test loss {sched_loss[name]:.4f}  test accuracy {sched_acc[name]:.3f}")

# %% [markdown]
# ## What we learned
#
# The cell below states the comparisons from the numbers of this run (the words are chosen
# by the computation, not typed).


# %%
def factor(a, b):
    """How far apart two rates are, as a factor >= 1."""
    return max(a / b, b / a)


best_idx = int(np.argmin(mean_loss))
print(f"Sweep: the best rate for Adam here is {best_rate:.3g}; the seeds move the validation "
      f"loss at that rate by {seed_spread[best_idx]:.4f}, "
      f"{'less' if seed_spread[best_idx] < abs(np.diff(np.sort(mean_loss)[:2]))[0] else 'more'} "
      f"than the gap to the second-best rate.")  # fmt: skip
print(f"LR finder: its suggestion {finder.suggestion:.3g} is within a factor "
      f"{factor(finder.suggestion, best_rate):.1f} of the sweep's best, from one ramp of "
      f"{len(finder.learning_rates)} steps; trained with it, the validation loss is "
      f"{'lower' if finder_loss < sweep_loss else 'higher'} than with the sweep's rate "
      f"({finder_loss:.4f} against {sweep_loss:.4f}).")  # fmt: skip
print(f"Successive halving chose {sh_rate:.3g} (a factor {factor(sh_rate, best_rate):.1f} from "
      f"the sweep's best) for {epoch_runs / full_cost:.0%} of a full sweep's epoch-runs.")  # fmt: skip
ranked = sorted(test_acc, key=test_acc.get, reverse=True)
chain_text = ranked[0]
for a, b in zip(ranked, ranked[1:], strict=False):
    chain_text += (" = " if test_acc[a] == test_acc[b] else " > ") + b
adam_acc = test_acc["Adam (tuned)"]
beats = all(adam_acc > v for k, v in test_acc.items() if k != "Adam (tuned)")
print(f"Ranked by test accuracy: {chain_text}; tuned Adam ({adam_acc:.3f}) "
      f"{'beats' if beats else 'does not beat'} every method run without a tuned rate.")  # fmt: skip
best_sched = min(sched_loss, key=sched_loss.get)
print(f"Schedules: the lowest test loss comes with {best_sched} ({sched_loss[best_sched]:.4f}; "
      f"constant: {sched_loss['constant']:.4f}); reduce on plateau "
      f"{'cut' if plateau_scale < 1 else 'never cut'} its rate"
      f"{f' to {plateau_scale:g} of the peak' if plateau_scale < 1 else ''}.")  # fmt: skip
