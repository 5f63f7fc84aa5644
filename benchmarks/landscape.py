"""Multi-start and curvature: best-of-K on Rastrigin, and the top Hessian eigenvalue's cost.

1. ``gdopt.multistart`` on Rastrigin in 2-D and 10-D: 1,024 uniform starts in
   ``[-5.12, 5.12]^n``, plain gradient descent (lr 0.002, 500 steps), all in one compiled
   call. From that one call: the best-of-K loss for K = 1, 2, 4, ..., 1,024, both as the
   prefix minimum (the first K starts) and as its expectation over random subsets of K of the
   1,024 (exact, from the order statistics), and the time per start (the warm call's time /
   1,024, next to a 1-start call's time).
2. ``gdopt.landscape.hessian_eigenvalues`` (k = 1) on the digits MLP 64-64-10 (4,810
   parameters) and on a 64-300-256-10 MLP (99,126 parameters), full training batch (1,438
   images): compile time and warm time for 20 and 60 Lanczos steps, and Hutchinson's trace
   with 100 probes.

Usage::

    python -m benchmarks.landscape            # 5 rounds
    python -m benchmarks.landscape --quick    # 3 rounds, 256 starts
"""

from __future__ import annotations

import math
import time
from functools import partial

import jax
import numpy as np

import gdopt
from benchmarks._common import fmt, machine_info, markdown_table, parser, time_cases, write_results


def expected_best_of_k(losses: np.ndarray, k: int) -> float:
    """E[min of k drawn without replacement from losses]: sum_i x_(i) C(N-i, k-1) / C(N, k)."""
    x = np.sort(losses)
    n = len(x)
    # weights via log-gamma (C(N - i, k - 1) / C(N, k), i = 1..N)
    i = np.arange(1, n + 1)
    valid = n - i >= k - 1
    logw = np.full(n, -np.inf)
    lg = math.lgamma
    for j in np.nonzero(valid)[0]:
        a = n - i[j]
        logw[j] = lg(a + 1) - lg(k) - lg(a - k + 2) - (lg(n + 1) - lg(k + 1) - lg(n - k + 1))
    w = np.exp(logw)
    return float(np.sum(w * x) / np.sum(w))


def rastrigin_table(n_starts: int, rounds: int) -> tuple[list, dict]:
    rows, out = [], {}
    opt = gdopt.sgd(0.002)
    for dim in (2, 10):

        def init(k, dim=dim):
            return jax.random.uniform(k, (dim,), minval=-5.12, maxval=5.12)

        def run(n=n_starts, init=init):
            return gdopt.multistart(
                gdopt.problems.rastrigin, init, opt, n_starts=n, key=jax.random.PRNGKey(0),
                steps=500,
            )  # fmt: skip

        t0 = time.perf_counter()
        r = run()
        first = time.perf_counter() - t0
        stats = time_cases(
            {"all": run, "one": lambda init=init: run(1, init)},
            rounds=rounds,
            min_round_s=0.0,
            warmup=1,
            max_calls=1,
        )
        ks = [2**j for j in range(int(math.log2(n_starts)) + 1)]
        prefix = np.minimum.accumulate(r.final_loss)
        best = {k: (float(prefix[k - 1]), expected_best_of_k(r.final_loss, k)) for k in ks}
        per_start = stats["all"]["median"] / n_starts
        out[f"{dim}d"] = {
            "first_call_s": first,
            "call_s": stats["all"],
            "one_start_call_s": stats["one"],
            "per_start_s": per_start,
            "best_of_k": {str(k): v for k, v in best.items()},
            "distinct_minima": len(r.minima),
        }
        for k in ks:
            rows.append(
                [
                    f"{dim}-D",
                    k,
                    fmt(best[k][0], 4),
                    fmt(best[k][1], 4),
                    fmt(stats["all"]["median"]) if k == ks[-1] else "",
                    fmt(per_start * 1e6) if k == ks[-1] else "",
                    fmt(stats["one"]["median"]) if k == ks[-1] else "",
                ]
            )
        print(
            f"rastrigin {dim}-D: {n_starts} starts in {stats['all']['median']:.3f} s warm "
            f"({first:.2f} s first call), 1 start {stats['one']['median']:.3f} s; "
            f"best-of-{n_starts} {best[ks[-1]][0]:.4g}; {len(r.minima)} distinct minima"
        )
    return rows, out


def eigen_table(rounds: int) -> tuple[list, dict]:
    split = gdopt.data.load_digits(seed=0)
    rows, out = [], {}
    for sizes in ([64, 64, 10], [64, 300, 256, 10]):
        model = gdopt.models.mlp(sizes, "relu")
        loss = gdopt.losses.supervised_loss(model.apply, "softmax_cross_entropy")
        params = model.init(jax.random.PRNGKey(0))
        n = sum(x.size for x in jax.tree.leaves(params))
        name = "-".join(map(str, sizes))
        cases, firsts = {}, {}
        eig = gdopt.landscape.hessian_eigenvalues
        trace = gdopt.landscape.hessian_trace
        for label, fn in (
            ("top eigenvalue, 20 Lanczos steps", partial(eig, loss, params, split.train, num_iters=20)),
            ("top eigenvalue, 60 Lanczos steps", partial(eig, loss, params, split.train, num_iters=60)),
            ("trace, 100 Hutchinson probes", partial(trace, loss, params, split.train, n_probes=100)),
        ):  # fmt: skip

            def case(fn=fn):
                jax.block_until_ready(fn())

            t0 = time.perf_counter()
            case()
            firsts[label] = time.perf_counter() - t0
            cases[label] = case
        stats = time_cases(cases, rounds=rounds, min_round_s=0.0, warmup=1, max_calls=1)
        top = float(gdopt.landscape.hessian_eigenvalues(loss, params, split.train)[0])
        out[name] = {
            "parameters": n,
            "top_eigenvalue": top,
            "cases": {k: {"first_call_s": firsts[k], "warm_s": stats[k]} for k in cases},
        }
        for label in cases:
            rows.append([name, n, label, fmt(firsts[label]), fmt(stats[label]["median"])])
        print(f"MLP {name} ({n} params): top eigenvalue {top:.4g}; " + ", ".join(
            f"{k}: {stats[k]['median']:.3f} s" for k in cases))  # fmt: skip
    return rows, out


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    n_starts = 256 if args.quick else 1024
    rrows, rout = rastrigin_table(n_starts, rounds)
    erows, eout = eigen_table(rounds)
    info = machine_info()
    md = (
        "# Multi-start and curvature\n\n"
        f"Machine: {info['cpu']} ({info['cores']} cores), JAX {info['jax']} on "
        f"{info['jax_backend']}; medians of {rounds} rounds after a warm-up call.\n\n"
        f"## Rastrigin: best-of-K from one call of {n_starts} starts (GD lr 0.002, 500 steps)\n\n"
        "`prefix` is the best of the first K starts; `expected` the mean best over random "
        "subsets of K (exact, from the order statistics of the same run).\n\n"
        + markdown_table(
            [
                "dimension",
                "K",
                "best-of-K (prefix)",
                "best-of-K (expected)",
                "call s",
                "µs per start",
                "1-start call s",
            ],
            rrows,
        )
        + "\n\n## Top Hessian eigenvalue and trace (full training batch of 1,438 digits)\n\n"
        + markdown_table(["MLP", "parameters", "what", "first call s", "warm s"], erows)
        + "\n"
    )
    print(md)
    write_results(
        "landscape",
        {"machine": info, "rounds": rounds, "rastrigin": rout, "hessian": eout},
        md,
        args.out,
    )


if __name__ == "__main__":
    main()
