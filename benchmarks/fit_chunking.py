"""The cost of fit's default chunking: time-sized compiled calls against one call.

``gdopt.fit`` runs its epochs as compiled calls that it grows until each takes 0.2 to 0.5 s
(so Ctrl-C, checkpoints and the progress bar get control that often), on one program of at
most ``min(epochs, 8192)`` epochs per call (a while loop); the calls differ only in their
dynamic ``stop_epoch``.
This times the same runs with the default and with ``epochs_per_call=epochs`` (the whole run
in one compiled call, which cannot be interrupted), after a warm-up that compiles both, in
interleaved rounds; the wall time excludes compilation (none happens after the warm-up).

Cases: the worst case for chunking, many epochs of microseconds each (full-batch least
squares, 20,000 epochs), and a typical one (an MLP on the digits data in mini-batches).

Usage::

    python -m benchmarks.fit_chunking            # 15 rounds
    python -m benchmarks.fit_chunking --quick    # 5 rounds, shorter runs
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import gdopt
from benchmarks._common import fmt, machine_info, markdown_table, parser, time_cases, write_results
from gdopt import data as gdata
from gdopt import losses, models


def _lsq():
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 4))
    y = x @ jnp.arange(1.0, 5.0)
    loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)  # noqa: E731
    return loss, jnp.zeros(4), gdopt.sgd(0.01), (x, y), None


def _mlp():
    train, _ = gdata.load_digits()
    model = models.mlp([64, 64, 10])
    loss = losses.supervised_loss(model.apply, "softmax_cross_entropy")
    return loss, model.init(jax.random.PRNGKey(0)), gdopt.adam(1e-3), train, 64


def _case(problem, epochs: int, per_call: int | None):
    loss, params, opt, data, batch = problem

    def run():
        res = gdopt.fit(
            loss, params, opt, data, epochs=epochs, batch_size=batch, epochs_per_call=per_call
        )
        jax.block_until_ready(res.params)
        run.calls = res  # the last result, for its wall and compile times

    return run


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    sizes = {"lsq": 4000 if args.quick else 20000, "mlp": 10 if args.quick else 40}
    problems = {"lsq": _lsq(), "mlp": _mlp()}
    labels = {
        "lsq": "least squares, full batch (64 x 4)",
        "mlp": "MLP 64-64-10 on digits, batch 64",
    }
    cases = {}
    for name, problem in problems.items():
        epochs = sizes[name]
        cases[f"{name}/default"] = _case(problem, epochs, None)
        cases[f"{name}/one call"] = _case(problem, epochs, epochs)
    stats = time_cases(cases, rounds=rounds, min_round_s=0.0, warmup=1, max_calls=1)
    rows, results = [], {}
    for name in problems:
        d, o = stats[f"{name}/default"]["median"], stats[f"{name}/one call"]["median"]
        dmin, omin = stats[f"{name}/default"]["min"], stats[f"{name}/one call"]["min"]
        results[name] = {
            "problem": labels[name],
            "epochs": sizes[name],
            "default_s": d,
            "one_call_s": o,
            "overhead_pct": 100 * (d / o - 1),
            "default_min_s": dmin,
            "one_call_min_s": omin,
            "overhead_min_pct": 100 * (dmin / omin - 1),
            "default_stats": stats[f"{name}/default"],
            "one_call_stats": stats[f"{name}/one call"],
        }
        rows.append(
            [
                labels[name],
                sizes[name],
                fmt(d),
                fmt(o),
                f"{100 * (d / o - 1):+.1f}%",
                f"{100 * (dmin / omin - 1):+.1f}%",
            ]
        )
    headers = [
        "run",
        "epochs",
        "default s",
        "one call s",
        "default vs one call (median)",
        "(min)",
    ]
    table = markdown_table(headers, rows)
    info = machine_info()
    md = (
        "# fit's chunked calls against one compiled call\n\n"
        "Wall time of one `gdopt.fit` run (compilation excluded: both programs compiled in a "
        f"warm-up), median (and min) of {rounds} interleaved rounds. Default: calls grown until each "
        "takes 0.2-0.5 s (interruptible within that); one call: `epochs_per_call=epochs`.\n\n"
        f"{table}\n\nMachine: {info['cpu']}, {info['cores']} cores; jax {info['jax']}.\n"
    )
    print(table)
    write_results(
        "fit_chunking",
        {"machine": info, "rounds": rounds, "quick": args.quick, "results": results},
        md,
        args.out,
    )


if __name__ == "__main__":
    main()
