"""Optimizer step time: update + apply on 4,194,304 float32 parameters split into L leaves.

Compared side by side, same hyperparameters, gradients given (no model):

* ``optax``: ``optax.X``'s update and ``optax.apply_updates`` in one jitted step;
* ``gdopt tree``: ``gdopt.X``'s update and ``gdopt.apply_updates`` (the plain protocol);
* ``gdopt packed``: :func:`gdopt.packing.update_and_apply` on the packed parameters (one
  buffer; the gradient comes in packed, as ``jax.grad`` through ``gdopt.unpack`` gives it);
* ``torch foreach`` / ``torch fused``: ``torch.optim`` CPU implementations (fused where torch
  has it).

Every JAX step donates the parameters and the state (updates in place). Bytes/s count the
minimal traffic of the rule (Adam: read p, g, m, v; write p, m, v = 7 arrays) and are compared
with the in-place axpy bandwidth measured in the same run (:func:`bandwidth_probe`). At this
size (16 MiB per array) part of the traffic is served by the 32 MiB L3, so more than 100% is
possible.

Usage::

    python -m benchmarks.update_step          # Adam at 1, 64, 1024, 4096 leaves (gdopt tree
                                              # not at 4096); the others at 1 and 1024
                                              # (8 to 12 minutes on 2 cores, mostly compiles)
    python -m benchmarks.update_step --quick  # Adam and SGD at 1 and 1024 leaves, 5 rounds
    python -m benchmarks.update_step --full   # every optimizer at 1, 64, 1024, 4096 leaves
                                              # (about 25 minutes: optax compiles a
                                              # 4096-leaf step in about a minute)

Every Adam group beyond one leaf also times the 1-leaf packed step in the same rounds, for
a side-by-side leaf-count ratio. torch runs in a worker process of its own: in one process its OpenMP threads and XLA's
spin against each other on a small machine and slow both down.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gdopt
from benchmarks._common import (
    RemoteWorker,
    bandwidth_probe,
    fmt,
    machine_info,
    markdown_table,
    parser,
    time_cases,
    write_png,
    write_results,
)
from gdopt.packing import check_elementwise, pack, packed_optimizer, update_and_apply

N = 4 * 1024 * 1024
LR = 1e-3

# name: (gdopt factory, optax factory name + kwargs, torch class + kwargs, arrays of traffic)
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"kw": {}, "optax": "sgd", "torch": ("SGD", {}), "arrays": 3},
    "momentum": {
        "kw": {"momentum": 0.9},
        "gdopt": "sgd",
        "optax": "sgd",
        "torch": ("SGD", {"momentum": 0.9}),
        "arrays": 5,
    },
    "adam": {"kw": {}, "optax": "adam", "torch": ("Adam", {}), "arrays": 7},
    "rmsprop": {
        "kw": {"decay": 0.9},
        "optax": "rmsprop",
        "torch": ("RMSprop", {"alpha": 0.9, "eps": 1e-8}),
        "arrays": 5,
    },
    "adamw": {
        "kw": {"weight_decay": 1e-4},
        "optax": "adamw",
        "torch": ("AdamW", {"weight_decay": 1e-4}),
        "arrays": 7,
    },
    "lion": {"kw": {"weight_decay": 1e-3}, "optax": "lion", "torch": None, "arrays": 5},
}
VARIANTS = ["optax", "gdopt tree", "gdopt packed", "torch foreach", "torch fused"]
SAME_ROUND = "gdopt packed, 1 leaf"


def _leaves(L: int, seed: int, scale: float) -> list[jax.Array]:
    x = scale * jax.random.normal(jax.random.PRNGKey(seed), (N,), jnp.float32)
    return [x[i * (N // L) : (i + 1) * (N // L)] + 0 for i in range(L)]


def _jax_case(step_fn, params, state, grads) -> tuple[Any, float]:
    step = jax.jit(step_fn, donate_argnums=(0, 1))
    # each case owns its buffers: the step donates (deletes) them
    box = [jax.tree.map(jnp.copy, params), state]

    def run():
        box[0], box[1] = step(box[0], box[1], grads)
        # one program: all of its outputs are ready together
        jax.tree.leaves(box[0])[0].block_until_ready()

    t0 = time.perf_counter()
    run()
    return run, time.perf_counter() - t0


def _gdopt_opt(name: str):
    spec = OPTIMIZERS[name]
    factory = getattr(gdopt, spec.get("gdopt", name), None)
    if factory is None:
        return None, "not in gdopt"
    opt = factory(LR, **spec["kw"])
    note = ""
    if not gdopt.is_elementwise(opt):
        # elementwise in fact but not marked (yet) by its module: verify, then mark
        check_elementwise(opt, pack({"w": jnp.ones(8)}))
        opt = gdopt.mark_elementwise(opt)
        note = "marked elementwise by the benchmark (verified by check_elementwise)"
    return opt, note


def torch_steps(name: str, L: int, kinds: tuple[str, ...] = ("foreach", "fused")) -> dict:
    """In a worker process: ``{"torch KIND": step}``, torch.optim steps over L tensors."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    cls_name, tkw = OPTIMIZERS[name]["torch"]
    steps = {}
    for kind in kinds:
        rng = np.random.default_rng(0)
        params = []
        for _ in range(L):
            p = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(N // L, np.float32)))
            p.grad = torch.from_numpy(1e-2 * rng.standard_normal(N // L, np.float32))
            params.append(p)
        try:
            steps[f"torch {kind}"] = getattr(torch.optim, cls_name)(
                params, lr=LR, **tkw, **{kind: True}
            ).step
        except (TypeError, RuntimeError, ValueError) as e:
            steps[f"torch {kind}"] = _raiser(e)
    return steps


def _raiser(error: Exception):
    def step():
        raise error

    return step


def build_cases(name: str, L: int, variants: list[str]) -> tuple[dict, dict, dict]:
    """The step callables of one (optimizer, leaf count) group, their first-call times, notes."""
    import optax

    spec = OPTIMIZERS[name]
    params = _leaves(L, 0, 1.0)
    grads = _leaves(L, 1, 1e-2)
    cases, first, notes = {}, {}, {}
    gopt, note = _gdopt_opt(name)
    if note:
        notes["gdopt"] = note

    if "optax" in variants:
        oopt = getattr(optax, spec["optax"])(LR, **spec["kw"])

        def ostep(p, s, g):
            u, s = oopt.update(g, s, p)
            return optax.apply_updates(p, u), s

        cases["optax"], first["optax"] = _jax_case(ostep, params, oopt.init(params), grads)
    if gopt is not None and "gdopt tree" in variants:

        def gstep(p, s, g):
            u, s = gopt.update(g, s, p)
            return gdopt.apply_updates(p, u), s

        cases["gdopt tree"], first["gdopt tree"] = _jax_case(
            gstep, params, gopt.init(params), grads
        )
    if gopt is not None and "gdopt packed" in variants:
        popt = packed_optimizer(gopt)
        pp, pg = pack(params), pack(grads)
        cases["gdopt packed"], first["gdopt packed"] = _jax_case(
            lambda p, s, g: update_and_apply(popt, g, s, p), pp, popt.init(pp), pg
        )
    kinds = tuple(v.split()[1] for v in variants if v.startswith("torch "))
    workers = []
    if spec["torch"] is not None and kinds:
        # both torch variants in one worker process: two would spin against each other
        worker = RemoteWorker("benchmarks.update_step:torch_steps", name=name, L=L, kinds=kinds)
        workers.append(worker)
        cases.update(worker.cases())
        first.update(worker.first_call_s)
        notes.update({k: f"unsupported: {v[:90]}" for k, v in worker.errors.items()})
    elif "torch foreach" in variants:
        notes["torch"] = "no torch.optim implementation"
    return cases, first, notes, workers


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="every optimizer at every leaf count")
    p.add_argument("--optimizers", default=None, help="comma-separated subset")
    p.add_argument("--leaves", default=None, help="comma-separated leaf counts")
    args = p.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 7)
    names = [n for n in OPTIMIZERS if n != "lion" or hasattr(gdopt, "lion")]
    if args.quick:
        names = ["adam", "sgd"]
    if args.optimizers:
        names = args.optimizers.split(",")
    leaf_counts = [1, 1024] if args.quick else [1, 64, 1024, 4096]
    if args.leaves:
        leaf_counts = [int(x) for x in args.leaves.split(",")]

    info = machine_info()
    print(
        f"# update_step on {info['cpu']} ({info['cores']} cores), jax {info['jax']}, "
        f"optax {info['optax']}, torch {info['torch']}"
    )
    bw = bandwidth_probe(rounds=5, smaller=[N * 4])
    print(
        f"in-place axpy bandwidth: {bw['axpy_GBps']:.1f} GB/s at 256 MiB, "
        f"{bw['by_size'][str(N * 4)]['GBps']:.1f} GB/s at 16 MiB"
    )

    results = []
    for name in names:
        for L in leaf_counts:
            if L in (64, 4096) and not (args.full or name == "adam" or args.leaves):
                continue
            variants = list(VARIANTS)
            if L == 4096 and not args.full:
                variants.remove("gdopt tree")  # its compile alone takes over a minute
            cases, first, notes, workers = build_cases(name, L, variants)
            if L > 1 and name == "adam":
                # the 1-leaf packed step again, timed side by side with this leaf count
                one, first_one, _, _ = build_cases(name, 1, ["gdopt packed"])
                cases[SAME_ROUND] = one["gdopt packed"]
                first[SAME_ROUND] = first_one["gdopt packed"]
            stats = time_cases(cases, rounds=rounds, min_round_s=0.15, warmup=1)
            traffic = OPTIMIZERS[name]["arrays"] * N * 4
            for variant in [*VARIANTS, SAME_ROUND]:
                if variant not in stats:
                    continue
                st = stats[variant]
                gbps = traffic / st["median"] / 1e9
                results.append(
                    {
                        "optimizer": name,
                        "leaves": L,
                        "variant": variant,
                        "ms": st["median"] * 1e3,
                        "ms_min": st["min"] * 1e3,
                        "ms_max": st["max"] * 1e3,
                        "ms_iqr": st["iqr"] * 1e3,
                        "first_call_s": first.get(variant),
                        "GBps": gbps,
                        "frac_axpy_bw": gbps / bw["axpy_GBps"],
                        "stats_s": st,
                        "notes": notes,
                    }
                )
            row = {r["variant"]: r for r in results if r["optimizer"] == name and r["leaves"] == L}
            ref = row.get("optax", {}).get("ms")
            print(f"\n{name}, {L} leaves" + (f"  ({notes})" if notes else ""))
            for v, r in row.items():
                ratio = f"{r['ms'] / ref:5.2f}x optax" if ref else ""
                print(
                    f"  {v:17s} {r['ms']:8.3f} ms [{r['ms_min']:.3f}-{r['ms_max']:.3f}] "
                    f"{r['GBps']:6.1f} GB/s {100 * r['frac_axpy_bw']:5.0f}% bw  {ratio}  "
                    f"first call {r['first_call_s']:.2f} s"
                )
            for worker in workers:
                worker.close()
            del cases
            gc.collect()

    targets = _targets(results)
    payload = {
        "machine": info,
        "bandwidth": bw,
        "N": N,
        "rounds": rounds,
        "results": results,
        "targets": targets,
    }
    md = _markdown(info, bw, results, targets, rounds)
    print("\n## Targets" + md.split("## Targets")[1])
    write_results("update_step", payload, md, args.out)
    _plot(results, args.out)
    return payload


def _ms(results, name, L, variant):
    for r in results:
        if r["optimizer"] == name and r["leaves"] == L and r["variant"] == variant:
            return r["ms"]
    return None


def _targets(results) -> list[dict]:
    def ratio(a, b):
        return None if a is None or b is None else a / b

    out = []

    def add(what, value, op, goal):
        ok = None if value is None else (value <= goal if op == "<=" else value >= goal)
        out.append({"target": what, "value": value, "goal": f"{op} {goal}", "met": ok})

    a = lambda L, v: _ms(results, "adam", L, v)  # noqa: E731
    add("Adam 1 leaf: gdopt packed / optax", ratio(a(1, "gdopt packed"), a(1, "optax")), "<=", 0.8)
    add("Adam 1 leaf: gdopt tree / optax", ratio(a(1, "gdopt tree"), a(1, "optax")), "<=", 0.8)
    add(
        "Adam 1 leaf: gdopt packed / torch fused",
        ratio(a(1, "gdopt packed"), a(1, "torch fused")),
        "<=",
        1.15,
    )
    add(
        "Adam 1024 leaves: optax / gdopt packed",
        ratio(a(1024, "optax"), a(1024, "gdopt packed")),
        ">=",
        4,
    )
    add(
        "Adam 4096 leaves: optax / gdopt packed",
        ratio(a(4096, "optax"), a(4096, "gdopt packed")),
        ">=",
        10,
    )
    add(
        "Adam: gdopt packed 4096 leaves / its 1 leaf (same rounds)",
        ratio(a(4096, "gdopt packed"), a(4096, SAME_ROUND)),
        "<=",
        1.3,
    )
    return out


def _markdown(info, bw, results, targets, rounds) -> str:
    lines = [
        "# Optimizer step: update + apply, N = 4,194,304 float32",
        "",
        f"{info['date']} on {info['cpu']}, {info['cores']} cores, load average "
        f"{info.get('load_average')}; jax {info['jax']}, jaxlib {info['jaxlib']}, optax "
        f"{info['optax']}, torch {info['torch']} ({info.get('torch_threads')} threads).",
        "",
        f"Medians of {rounds} interleaved rounds (ms per step, [min-max]); bytes/s count the "
        "minimal traffic of each rule; bandwidth = in-place axpy measured in the same run: "
        f"{bw['axpy_GBps']:.1f} GB/s at 256 MiB "
        f"({bw['by_size'][str(N * 4)]['GBps']:.1f} GB/s at 16 MiB).",
        "",
    ]
    for name in dict.fromkeys(r["optimizer"] for r in results):
        lines += [f"## {name}", ""]
        rows = []
        for L in sorted({r["leaves"] for r in results if r["optimizer"] == name}):
            ref = _ms(results, name, L, "optax")
            for r in results:
                if r["optimizer"] != name or r["leaves"] != L:
                    continue
                rows.append(
                    [
                        L,
                        r["variant"],
                        f"{fmt(r['ms'])} [{fmt(r['ms_min'])}-{fmt(r['ms_max'])}]",
                        fmt(r["GBps"]),
                        f"{100 * r['frac_axpy_bw']:.0f}%",
                        fmt(r["ms"] / ref) if ref else "-",
                        fmt(r["first_call_s"]),
                    ]
                )
        lines += [
            markdown_table(
                ["leaves", "variant", "ms/step", "GB/s", "of axpy bw", "vs optax", "first call s"],
                rows,
            ),
            "",
        ]
        notes = {k: v for r in results if r["optimizer"] == name for k, v in r["notes"].items()}
        if notes:
            lines += [f"Notes: {notes}", ""]
    lines += ["## Targets", ""]
    lines += [
        markdown_table(
            ["target", "measured", "goal", "met"],
            [
                [
                    t["target"],
                    fmt(t["value"]),
                    t["goal"],
                    {True: "yes", False: "NO", None: "-"}[t["met"]],
                ]
                for t in targets
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def _plot(results, out) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(dict.fromkeys(r["optimizer"] for r in results))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for variant in VARIANTS:
            pts = sorted(
                (r["leaves"], r["ms"])
                for r in results
                if r["optimizer"] == name and r["variant"] == variant
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=variant)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("leaves")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ms per step (median)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("update + apply, 4,194,304 float32 parameters")
    write_png("update_step", fig, out)
    plt.close(fig)


if __name__ == "__main__":
    main()
