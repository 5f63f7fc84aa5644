"""Compile time of one optimizer step (update + apply) as the number of leaves grows.

4,194,304 float32 parameters split into L leaves; Adam (and SGD with momentum) from
``optax`` and ``gdopt`` (plain pytree, and packed with :func:`gdopt.packing.update_and_apply`).
Each round builds a fresh ``jax.jit`` of a fresh function (no JAX cache hit) and times
tracing + lowering (``.lower``) and the XLA compile (``.compile``) separately. Only shapes
matter, so the parameters are abstract (``jax.ShapeDtypeStruct``).

Usage::

    python -m benchmarks.compile_time           # L in 1, 64, 256, 1024; 5 rounds
    python -m benchmarks.compile_time --big     # also 4096 leaves (optax: about a minute each)
    python -m benchmarks.compile_time --quick   # L in 1, 1024; 3 rounds
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp

import gdopt
from benchmarks._common import fmt, machine_info, markdown_table, parser, write_png, write_results
from gdopt.packing import Packed, PackSpec, packed_optimizer, update_and_apply

N = 4 * 1024 * 1024


def _abstract(L: int):
    return [jax.ShapeDtypeStruct((N // L,), jnp.float32) for _ in range(L)]


def _step(variant: str, name: str):
    """A fresh step function and its optimizer."""
    import optax

    kw = {"momentum": 0.9} if name == "momentum" else {}
    base = "sgd" if name == "momentum" else name
    if variant == "optax":
        opt = getattr(optax, base)(1e-3, **kw)

        def step(p, s, g):
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        return step, opt
    opt = getattr(gdopt, base)(1e-3, **kw)
    if variant == "gdopt tree":

        def step(p, s, g):
            u, s = opt.update(g, s, p)
            return gdopt.apply_updates(p, u), s

        return step, opt
    popt = packed_optimizer(opt)
    return (lambda p, s, g: update_and_apply(popt, g, s, p)), popt


def measure(variant: str, name: str, L: int) -> dict:
    step, opt = _step(variant, name)
    params = _abstract(L)
    if variant == "gdopt packed":
        # the same L leaves, packed: one abstract buffer and the spec of the L leaves
        params = Packed([jax.ShapeDtypeStruct((N,), jnp.float32)], _packed_spec(L))
    state = jax.eval_shape(opt.init, params)
    t0 = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return {"trace_lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0}


_SPECS: dict[int, object] = {}


def _packed_spec(L: int):
    """The PackSpec of L leaves of N // L float32 (built once from small stand-ins)."""
    if L not in _SPECS:
        tree = [0] * L
        treedef = jax.tree.structure(tree)
        slots = tuple((0, i * (N // L), (N // L,)) for i in range(L))
        _SPECS[L] = PackSpec(treedef, (jnp.dtype(jnp.float32),), (N,), slots)
    return _SPECS[L]


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--big", action="store_true", help="also 4096 leaves (slow for optax)")
    args = p.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    leaf_counts = [1, 1024] if args.quick else [1, 64, 256, 1024]
    if args.big:
        leaf_counts.append(4096)
    names = ["adam"] if args.quick else ["adam", "momentum"]
    variants = ["optax", "gdopt tree", "gdopt packed"]
    info = machine_info()
    print(f"# compile_time on {info['cpu']} ({info['cores']} cores), jax {info['jax']}")
    results = []
    for name in names:
        for L in leaf_counts:
            # the 4096-leaf optax and tree compiles take about a minute: fewer rounds
            r = min(rounds, 2) if L >= 4096 else rounds
            samples = {v: [] for v in variants}
            for _ in range(r):
                for v in variants:  # interleaved
                    samples[v].append(measure(v, name, L))
            row = {}
            for v in variants:
                tot = [s["total_s"] for s in samples[v]]
                row[v] = {
                    "optimizer": name,
                    "leaves": L,
                    "variant": v,
                    "total_s": statistics.median(tot),
                    "min_s": min(tot),
                    "max_s": max(tot),
                    "trace_lower_s": statistics.median(s["trace_lower_s"] for s in samples[v]),
                    "compile_s": statistics.median(s["compile_s"] for s in samples[v]),
                    "rounds": r,
                    "samples": samples[v],
                }
                results.append(row[v])
            ref = row["optax"]["total_s"]
            print(
                f"{name:9s} {L:5d} leaves: "
                + "  ".join(
                    f"{v} {row[v]['total_s']:.3f} s ({ref / row[v]['total_s']:.1f}x)"
                    for v in variants
                )
            )
    targets = []
    for L in leaf_counts:
        o = [r for r in results if r["optimizer"] == "adam" and r["leaves"] == L]
        by = {r["variant"]: r["total_s"] for r in o}
        if L == 1024:
            value = by["optax"] / by["gdopt packed"]
            targets.append(
                {
                    "target": "Adam step compile, 1024 leaves: optax / gdopt packed",
                    "value": value,
                    "goal": ">= 5",
                    "met": value >= 5,
                }
            )
    md = [
        "# Compile time of one optimizer step (update + apply), 4,194,304 float32",
        "",
        f"{info['date']} on {info['cpu']}, {info['cores']} cores, load average "
        f"{info.get('load_average')}; jax {info['jax']}, optax {info['optax']}.",
        "",
        f"Trace + lower + XLA compile of a fresh jit, median of {rounds} interleaved rounds "
        "(2 at 4096 leaves) [min-max]; `x optax` = optax's time / this one.",
        "",
    ]
    for name in names:
        rows = []
        for r in results:
            if r["optimizer"] != name:
                continue
            ref = next(
                x["total_s"]
                for x in results
                if x["optimizer"] == name and x["leaves"] == r["leaves"] and x["variant"] == "optax"
            )
            rows.append(
                [
                    r["leaves"],
                    r["variant"],
                    f"{fmt(r['total_s'])} [{fmt(r['min_s'])}-{fmt(r['max_s'])}]",
                    fmt(r["trace_lower_s"]),
                    fmt(r["compile_s"]),
                    fmt(ref / r["total_s"]),
                ]
            )
        md += [
            f"## {name}",
            "",
            markdown_table(
                ["leaves", "variant", "total s", "trace+lower s", "XLA compile s", "x optax"], rows
            ),
            "",
        ]
    md += [
        "## Targets",
        "",
        markdown_table(
            ["target", "measured", "goal", "met"],
            [
                [t["target"], fmt(t["value"]), t["goal"], "yes" if t["met"] else "NO"]
                for t in targets
            ],
        ),
    ]
    payload = {"machine": info, "N": N, "rounds": rounds, "results": results, "targets": targets}
    write_results("compile_time", payload, "\n".join(md), args.out)
    _plot(results, names, variants, args.out)
    print("\n".join(md[-3:]))
    return payload


def _plot(results, names, variants, out) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for v in variants:
            pts = sorted(
                (r["leaves"], r["total_s"])
                for r in results
                if r["optimizer"] == name and r["variant"] == v
            )
            ax.plot(*zip(*pts, strict=True), marker="o", label=v)
        ax.set(xscale="log", yscale="log", title=name, xlabel="leaves")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("compile time, s (median)")
    axes[0][-1].legend(fontsize=8)
    write_png("compile_time", fig, out)
    plt.close(fig)


if __name__ == "__main__":
    main()
