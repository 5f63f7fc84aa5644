"""The cost of fit's recording options: defaults against ``record="step"`` and
``diagnostics=True``.

``record="step"`` keeps every step's loss (already computed by the compiled scan: only its
output buffer is new); ``diagnostics=True`` adds, per step, the L2 norms of the gradient,
the update and the params (three reductions over the parameters) and per epoch their
means. This times the same run of an MLP on the digits data in mini-batches under the three
settings, after a warm-up that compiles all three, in interleaved rounds; the wall time
excludes compilation.

Usage::

    python -m benchmarks.fit_options            # 15 rounds, 40 epochs
    python -m benchmarks.fit_options --quick    # 5 rounds, 10 epochs
"""

from __future__ import annotations

import jax

import gdopt
from benchmarks._common import fmt, machine_info, markdown_table, parser, time_cases, write_results
from gdopt import data as gdata
from gdopt import losses, models

SETTINGS = {
    "default": {},
    'record="step"': {"record": "step"},
    "diagnostics=True": {"diagnostics": True},
}


def _case(epochs: int, options: dict):
    train, _ = gdata.load_digits()
    model = models.mlp([64, 64, 10])
    loss = losses.supervised_loss(model.apply, "softmax_cross_entropy")
    params, opt = model.init(jax.random.PRNGKey(0)), gdopt.adam(1e-3)

    def run():
        res = gdopt.fit(loss, params, opt, train, epochs=epochs, batch_size=64, **options)
        jax.block_until_ready(res.params)

    return run


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    epochs = 10 if args.quick else 40
    cases = {name: _case(epochs, options) for name, options in SETTINGS.items()}
    stats = time_cases(cases, rounds=rounds, min_round_s=0.0, warmup=1, max_calls=1)
    base = stats["default"]["median"]
    rows, results = [], {}
    for name in SETTINGS:
        med, low = stats[name]["median"], stats[name]["min"]
        results[name] = {"median_s": med, "min_s": low, "vs_default_pct": 100 * (med / base - 1)}
        rows.append([name, epochs, fmt(med), fmt(low), f"{100 * (med / base - 1):+.1f}%"])
    table = markdown_table(["setting", "epochs", "median s", "min s", "vs default"], rows)
    info = machine_info()
    md = (
        "# fit's recording options\n\n"
        "Wall time of one `gdopt.fit` run of an MLP 64-64-10 on digits (batch 64, Adam), "
        f"compilation excluded, median (and min) of {rounds} interleaved rounds.\n\n"
        f"{table}\n\nMachine: {info['cpu']}, {info['cores']} cores; jax {info['jax']}.\n"
    )
    print(table)
    write_results(
        "fit_options",
        {
            "machine": info,
            "rounds": rounds,
            "quick": args.quick,
            "epochs": epochs,
            "results": results,
        },
        md,
        args.out,
    )


if __name__ == "__main__":
    main()
