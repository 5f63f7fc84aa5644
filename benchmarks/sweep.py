"""Sweeps, successive halving, the LR finder and learning-rate-free methods on the digits MLP.

1. Speed: a sweep of 32 Adam learning rates (batch 32) as one vectorised program
   (gdopt.sweep), against the optax way (32 jitted ``lax.scan`` training loops, one per rate:
   optax bakes the rate into the program, so each compiles), compilation included; and,
   called a second time, against 32 warm sequential ``gdopt.fit`` calls. The cases run one
   after another in this process (side by side, same machine state); wall-clock seconds.
2. Successive halving over 27 configurations (lr x b1 x b2) against the full sweep: the best
   final train loss and the epoch-runs used.
3. The LR finder's ``valley`` suggestion, trained 20 epochs, against a 16-point log grid of
   rates (1e-5 to 1) on the digits MLP and digits softmax regression (test accuracy).
4. prodigy, dadapt_adamw and schedule_free_adamw with their defaults against grid-tuned Adam
   (digits MLP, 20 epochs, test accuracy).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gdopt
from benchmarks._common import fmt, machine_info, markdown_table, parser, write_png, write_results
from gdopt import tuning
from gdopt.batching import epoch_batches
from gdopt.problems import get_problem


def optax_loop(problem, params, lr: float, epochs: int, batch: int, key) -> tuple[float, float]:
    """One optax training run compiled with its rate baked in: (seconds, final train loss)."""
    import optax

    t0 = time.perf_counter()
    opt = optax.adam(lr)

    def run(params, data, key):
        state = opt.init(params)

        def epoch(carry, e):
            params, state = carry
            batches = epoch_batches(jax.random.fold_in(key, e), data, batch)

            def step(carry, b):
                params, state = carry
                loss, g = jax.value_and_grad(problem.loss_fn)(params, b)
                u, state = opt.update(g, state, params)
                return (optax.apply_updates(params, u), state), loss

            carry, losses = jax.lax.scan(step, (params, state), batches)
            return carry, jnp.mean(losses)

        (params, _), losses = jax.lax.scan(epoch, (params, state), jnp.arange(epochs))
        return params, losses[-1]

    with jax.numpy_dtype_promotion("standard"):
        _, loss = jax.jit(run)(params, problem.train, key)
        loss = float(loss)
    return time.perf_counter() - t0, loss


def plain(problem, params, lrs, epochs, batch, key) -> tuple[Any, Any]:
    """The hardware's vectorisation ceiling, warm: one hand-written ``jit(vmap(scan))`` over
    the 32 rates against 32 calls of the same jitted loop (no engine, no stopping rules)."""
    opt = gdopt.adam(1e-3)

    def run(lr, key):
        state = gdopt.set_hyperparams(opt.init(params), learning_rate=lr)

        def epoch(carry, e):
            def step(carry, b):
                p, s = carry
                loss, g = jax.value_and_grad(problem.loss_fn)(p, b)
                u, s = opt.update(g, s, p)
                return (gdopt.apply_updates(p, u), s), loss

            carry, losses = jax.lax.scan(
                step, carry, epoch_batches(jax.random.fold_in(key, e), problem.train, batch)
            )
            return carry, jnp.mean(losses)

        return jax.lax.scan(epoch, (params, state), jnp.arange(epochs))

    rates = jnp.asarray(lrs, jnp.float32)
    vec, one = jax.jit(jax.vmap(run, in_axes=(0, None))), jax.jit(run)
    jax.block_until_ready(vec(rates, key))
    jax.block_until_ready(one(rates[0], key))

    def vectorised() -> None:
        jax.block_until_ready(vec(rates, key))

    def loops() -> None:
        for r in rates:
            jax.block_until_ready(one(r, key))

    return vectorised, loops


def speed(problem, params, lrs, epochs, batch, key, rounds: int = 5) -> dict:
    tuning._PROGRAMS.clear()
    kw = dict(epochs=epochs, batch_size=batch, key=key)
    t0 = time.perf_counter()
    cold = gdopt.sweep(
        problem.loss_fn, params, gdopt.adam(1e-3), problem.train, grid={"learning_rate": lrs}, **kw
    )
    cold_s = time.perf_counter() - t0
    optax_s, optax_loss = 0.0, []
    for lr in lrs:
        s, loss = optax_loop(problem, params, lr, epochs, batch, key)
        optax_s += s
        optax_loss.append(loss)
    gdopt.fit(problem.loss_fn, params, gdopt.adam(lrs[0]), problem.train, **kw)  # warm fit
    out: dict[str, Any] = {}

    def warm_sweep() -> None:
        out["warm"] = gdopt.sweep(
            problem.loss_fn,
            params,
            gdopt.adam(1e-3),
            problem.train,
            grid={"learning_rate": lrs},
            **kw,
        )

    def fits() -> None:
        out["fits"] = [
            gdopt.fit(problem.loss_fn, params, gdopt.adam(lr), problem.train, **kw) for lr in lrs
        ]

    vectorised, loops = plain(problem, params, lrs, epochs, batch, key)
    cases = {"warm": warm_sweep, "fits": fits, "vec": vectorised, "loops": loops}
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):  # interleaved rounds, the median of each case
        for name, case in cases.items():
            t0 = time.perf_counter()
            case()
            samples[name].append(time.perf_counter() - t0)
    warm_s, fits_s, plain_vmap_s, plain_loop_s = (
        statistics.median(samples[k]) for k in ("warm", "fits", "vec", "loops")
    )
    warm = out["warm"]
    fit_loss = np.array([f.history.train_loss[-1] for f in out["fits"]])
    small = np.asarray(lrs) <= 3e-3  # not chaotic: equal to float32 rounding
    return {
        "runs": len(lrs),
        "epochs": epochs,
        "sweep_cold_s": cold_s,
        "sweep_compile_s": cold.compile_time,
        "optax_32_loops_s": optax_s,
        "sweep_warm_s": warm_s,
        "warm_rounds": rounds,
        "fit_32_warm_s": fits_s,
        "plain_vmap_scan_s": plain_vmap_s,
        "plain_32_jitted_loops_s": plain_loop_s,
        "speedup_vs_optax": optax_s / cold_s,
        "speedup_vs_fit": fits_s / warm_s,
        "max_rel_loss_diff_vs_fit_lr_le_3e-3": float(
            np.max(np.abs(warm.final_train_loss[small] - fit_loss[small]) / fit_loss[small])
        ),
        "max_rel_loss_diff_vs_optax_lr_le_3e-3": float(
            np.max(
                np.abs(cold.final_train_loss[small] - np.array(optax_loss)[small])
                / np.array(optax_loss)[small]
            )
        ),
        "max_rel_loss_diff_vs_optax_all": float(
            np.max(np.abs(cold.final_train_loss - np.array(optax_loss)) / np.array(optax_loss))
        ),
    }


def halving(problem, params, epochs, batch, key) -> dict:
    grid = {
        "learning_rate": [3e-4, 1e-3, 3e-3],
        "b1": [0.5, 0.8, 0.9],
        "b2": [0.9, 0.99, 0.999],
    }
    kw = dict(batch_size=batch, key=key)
    full = gdopt.sweep(
        problem.loss_fn, params, gdopt.adam(1e-3), problem.train, grid=grid, epochs=epochs, **kw
    )
    sh = gdopt.successive_halving(
        problem.loss_fn,
        params,
        gdopt.adam(1e-3),
        problem.train,
        grid=grid,
        eta=3,
        min_epochs=max(1, epochs // 27),
        max_epochs=epochs,
        **kw,
    )
    best_full = float(np.min(full.final_train_loss))
    best_sh = float(sh.final_train_loss[sh.best_index])
    return {
        "configs": 27,
        "max_epochs": epochs,
        "rungs": [(r.epochs, len(r.indices)) for r in sh.rungs],
        "full_best_loss": best_full,
        "halving_best_loss": best_sh,
        "halving_best_config": sh.best_config,
        "full_best_config": full.configs[int(np.argmin(full.final_train_loss))],
        "loss_ratio": best_sh / best_full,
        "epoch_runs_fraction": float(sh.epochs_run.sum()) / (27 * epochs),
        "full_s": full.wall_time,
        "halving_s": sh.wall_time,
        "full_compile_s": full.compile_time,
        "halving_compile_s": sh.compile_time,
    }


def lr_finder(name: str, key, epochs: int) -> dict:
    problem = get_problem(name)
    params = problem.init_params(jax.random.PRNGKey(0))
    found = gdopt.lr_find(problem.loss_fn, params, gdopt.adam(1e-3), problem.train, key=key)
    grid = [float(v) for v in np.geomspace(1e-5, 1.0, 16)]
    res = gdopt.sweep(
        problem.loss_fn,
        params,
        gdopt.adam(1e-3),
        problem.train,
        configs=[{"learning_rate": lr} for lr in [*grid, found.suggestion]],
        epochs=epochs,
        batch_size=32,
        key=key,
        eval_data=problem.test,
        accuracy_fn=problem.accuracy_fn,
    )
    acc = res.eval_accuracy
    best = int(np.nanargmax(acc[:16]))
    lowest = int(np.nanargmin(np.where(res.diverged[:16], np.inf, res.final_train_loss[:16])))
    return {
        "problem": name,
        "suggestions": found.suggestions,
        "valley_lr": found.suggestion,
        "valley_test_accuracy": float(acc[16]),
        "grid_best_lr": grid[best],
        "grid_best_test_accuracy": float(acc[best]),
        "accuracy_gap_points": 100 * float(acc[best] - acc[16]),
        "grid_lowest_train_loss_lr": grid[lowest],
        "valley_over_lowest_loss_lr": found.suggestion / grid[lowest],
        "grid_accuracy": acc[:16].tolist(),
        "finder": found,
    }


def lr_free(key, epochs: int, adam_best: float) -> dict:
    problem = get_problem("digits-mlp")
    params = problem.init_params(jax.random.PRNGKey(0))
    out = {"adam_grid_best": adam_best}
    for name in ("prodigy", "dadapt_adamw", "schedule_free_adamw"):
        opt = getattr(gdopt, name)()
        res = gdopt.fit(
            problem.loss_fn, params, opt, problem.train, epochs=epochs, batch_size=32, key=key
        )
        p = res.params
        if name == "schedule_free_adamw":  # evaluate at the averaged point x
            p = gdopt.schedule_free_eval_params(res.opt_state, res.params)
        out[name] = float(problem.accuracy_fn(p, problem.test))
    return out


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    problem = get_problem("digits-mlp")
    params = problem.init_params(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    lrs = [float(v) for v in np.geomspace(1e-4, 1e-1, 32)]
    speeds = [
        speed(problem, params, lrs, e, 32, key) for e in ((1, 3) if args.quick else (1, 3, 10))
    ]
    sp = speeds[-1]
    sh = halving(problem, params, 9 if args.quick else 27, 32, key)
    finder_epochs = 5 if args.quick else 20
    finders = [lr_finder(n, key, finder_epochs) for n in ("digits-mlp", "digits-softmax")]
    free = lr_free(key, finder_epochs, finders[0]["grid_best_test_accuracy"])

    md = [f"# Sweeps (gdopt.sweep) on the digits MLP{' (--quick)' if args.quick else ''}", ""]
    md += [
        "## 1. 32 Adam learning rates, batch 32 (seconds, one process, cases side by side; "
        "warm cases: median of interleaved rounds)",
        "",
        markdown_table(
            [
                "epochs",
                "sweep, 1st call (compile)",
                "32 optax loops",
                "optax / sweep",
                "sweep, 2nd call",
                "32 warm fit",
                "fit / sweep",
                "plain jit(vmap(scan))",
                "32 plain jitted loops",
            ],
            [
                [
                    str(q["epochs"]),
                    f"{fmt(q['sweep_cold_s'])} ({fmt(q['sweep_compile_s'])})",
                    fmt(q["optax_32_loops_s"]),
                    f"{q['speedup_vs_optax']:.1f}x",
                    fmt(q["sweep_warm_s"]),
                    fmt(q["fit_32_warm_s"]),
                    f"{q['speedup_vs_fit']:.2f}x",
                    fmt(q["plain_vmap_scan_s"]),
                    fmt(q["plain_32_jitted_loops_s"]),
                ]
                for q in speeds
            ],
        ),
        "",
        "The last two columns are the machine's own vectorisation ceiling (no engine): when one "
        "vmapped program is not faster than 32 jitted loops, the sweep's gain over warm `fit` "
        "calls is their per-call overhead only.",
        "",
        f"At {sp['epochs']} epochs, final train losses: max relative "
        f"difference {sp['max_rel_loss_diff_vs_fit_lr_le_3e-3']:.1e} from sequential fit "
        f"(rates <= 3e-3); from optax {sp['max_rel_loss_diff_vs_optax_lr_le_3e-3']:.1e} (rates "
        f"<= 3e-3), {sp['max_rel_loss_diff_vs_optax_all']:.1e} (all rates: larger rates are "
        "chaotic, float32 rounding differences grow).",
        "",
        f"## 2. Successive halving, 27 configurations (lr x b1 x b2), {sh['max_epochs']} epochs",
        "",
        markdown_table(
            ["", "best final train loss", "epoch-runs", "seconds", "of which compiling"],
            [
                [
                    "full sweep",
                    fmt(sh["full_best_loss"], 4),
                    str(27 * sh["max_epochs"]),
                    fmt(sh["full_s"]),
                    fmt(sh["full_compile_s"]),
                ],
                [
                    "successive halving (eta=3)",
                    fmt(sh["halving_best_loss"], 4),
                    f"{sh['epoch_runs_fraction']:.0%}",
                    fmt(sh["halving_s"]),
                    fmt(sh["halving_compile_s"]),
                ],
            ],
        ),
        "",
        f"Rungs (epochs, runs): {sh['rungs']}; halving's best is {sh['loss_ratio']:.3f}x the "
        "full sweep's best.",
        "",
        f"## 3. LR finder (Adam, batch 32): valley suggestion vs a 16-point grid, "
        f"{finder_epochs} epochs",
        "",
        markdown_table(
            [
                "problem",
                "valley lr",
                "valley test acc",
                "grid best lr",
                "grid best acc",
                "gap (points)",
                "valley / lowest-loss lr",
            ],
            [
                [
                    f["problem"],
                    fmt(f["valley_lr"]),
                    f"{f['valley_test_accuracy']:.4f}",
                    fmt(f["grid_best_lr"]),
                    f"{f['grid_best_test_accuracy']:.4f}",
                    f"{f['accuracy_gap_points']:.2f}",
                    fmt(f["valley_over_lowest_loss_lr"]),
                ]
                for f in finders
            ],
        ),
        "",
        f"## 4. Learning-rate-free methods (defaults) vs grid-tuned Adam, digits MLP, "
        f"{finder_epochs} epochs",
        "",
        markdown_table(
            ["method", "test accuracy", "gap to Adam (points)"],
            [["Adam, best of the 16-point grid", f"{free['adam_grid_best']:.4f}", "0"]]
            + [
                [n, f"{free[n]:.4f}", f"{100 * (free['adam_grid_best'] - free[n]):.2f}"]
                for n in ("prodigy", "dadapt_adamw", "schedule_free_adamw")
            ],
        ),
    ]
    payload = {
        "machine": machine_info(),
        "quick": args.quick,
        "speed": speeds,
        "halving": sh,
        "lr_finder": [{k: v for k, v in f.items() if k != "finder"} for f in finders],
        "lr_free": free,
    }
    print("\n".join(md))
    write_results("sweep", payload, "\n".join(md), args.out)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    labels = ["sweep\n(cold)", "32 optax\nloops", "sweep\n(warm)", "32 warm\nfit"]
    values = [sp["sweep_cold_s"], sp["optax_32_loops_s"], sp["sweep_warm_s"], sp["fit_32_warm_s"]]
    ax.bar(labels, values, color=["C0", "C1", "C0", "C2"])
    ax.set_yscale("log")
    ax.set_ylabel("seconds")
    ax.set_title(f"32 learning rates, digits MLP, {sp['epochs']} epochs")
    gdopt.plot.lr_find_curve(finders[0]["finder"], ax=axes[1], title="LR finder, digits MLP")
    ax = axes[2]
    ax.semilogx(
        np.geomspace(1e-5, 1.0, 16), finders[0]["grid_accuracy"], marker=".", label="16-point grid"
    )
    ax.axvline(finders[0]["valley_lr"], color="grey", linestyle="--", label="valley")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("test accuracy")
    ax.set_title("Adam on the digits MLP")
    ax.legend()
    write_png("sweep", fig, args.out)


if __name__ == "__main__":
    main()
