"""How many passes over memory an optimizer step makes on XLA:CPU, and whether one pass helps.

Part 1 reads the optimized HLO of each jitted step (update + apply, parameters and state
donated, one leaf of N float32) and counts the loop fusions that write a parameter-sized
array: each is one pass over memory. gdopt (pytree and packed) and optax side by side.

Part 2 times Adam at N = 4,194,304: the library steps (three passes), a hand-written
one-pass Adam (the buffers updated block by block, in place, inside one compiled loop: read
g, m, v, p once and write m, v, p once: 7 arrays of traffic instead of 10) and torch's fused
CPU Adam, with the in-place axpy bandwidth for scale. It also reports how many threads XLA
gives each kind of loop (``outer_dimension_partitions`` in the HLO backend config).

Usage::

    python -m benchmarks.fusion            # 7 rounds
    python -m benchmarks.fusion --quick    # 5 rounds, fewer block sizes
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from jax import lax

import gdopt
from benchmarks._common import (
    RemoteWorker,
    bandwidth_probe,
    fmt,
    machine_info,
    markdown_table,
    parser,
    time_cases,
    write_results,
)
from gdopt.packing import pack, packed_optimizer, update_and_apply

N = 4 * 1024 * 1024


def _configs():
    import optax

    return {
        "sgd": (gdopt.sgd(1e-3), optax.sgd(1e-3)),
        "momentum": (gdopt.sgd(1e-3, momentum=0.9), optax.sgd(1e-3, momentum=0.9)),
        "nesterov": (
            gdopt.sgd(1e-3, momentum=0.9, nesterov=True),
            optax.sgd(1e-3, momentum=0.9, nesterov=True),
        ),
        "rmsprop": (gdopt.rmsprop(1e-3), optax.rmsprop(1e-3)),
        "rmsprop centered+momentum": (
            gdopt.rmsprop(1e-3, centered=True, momentum=0.9),
            optax.rmsprop(1e-3, centered=True, momentum=0.9),
        ),
        "adagrad": (gdopt.adagrad(1e-3), optax.adagrad(1e-3)),
        "adam": (gdopt.adam(1e-3), optax.adam(1e-3)),
        "adamw": (gdopt.adamw(1e-3), optax.adamw(1e-3)),
        "adam mu bf16": (
            gdopt.adam(1e-3, mu_dtype=jnp.bfloat16),
            optax.adam(1e-3, mu_dtype=jnp.bfloat16),
        ),
    }


def count_passes(compiled_text: str, n: int) -> int:
    """Loop fusions of the entry computation that write an n-element array (any dtype)."""
    entry = compiled_text[compiled_text.index("ENTRY") :]
    return len(re.findall(rf"= [a-z0-9]+\[{n}\]\{{0\}} fusion\(", entry))


def _passes(opt, apply, packed: bool, n: int) -> tuple[int, int]:
    params = {"w": jax.ShapeDtypeStruct((n,), jnp.float32)}
    if packed:
        opt = packed_optimizer(opt)
        params = jax.eval_shape(pack, params)

        def step(p, s, g):
            return update_and_apply(opt, g, s, p)

    else:

        def step(p, s, g):
            u, s = opt.update(g, s, p)
            return apply(p, u), s

    state = jax.eval_shape(opt.init, params)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    return count_passes(compiled.as_text(), n), compiled.memory_analysis().temp_size_in_bytes


# ----------------------------------------------------------------------------- part 2

B1, B2, EPS, LR = 0.9, 0.999, 1e-8, 1e-3


def one_pass_adam(block: int):
    """Adam over blocks of `block` elements, each written back in place (one memory pass)."""

    def step(p, m, v, count, g):
        count = count + 1
        t = count.astype(jnp.float32)
        c1, c2 = 1 - B1**t, 1 - B2**t

        def body(i, carry):
            p, m, v = carry
            at = (i * block,)

            def sl(x):
                return lax.dynamic_slice(x, at, (block,))

            gb = sl(g)
            m = lax.dynamic_update_slice(m, B1 * sl(m) + (1 - B1) * gb, at)
            v = lax.dynamic_update_slice(v, B2 * sl(v) + (1 - B2) * gb * gb, at)
            # read the new m, v back (without this XLA recomputes them from the old values
            # in the parameter loop and must copy whole buffers to keep those alive)
            m, v = lax.optimization_barrier((m, v))
            new_p = sl(p) - LR * (sl(m) / c1) / (jnp.sqrt(sl(v) / c2) + EPS)
            return lax.dynamic_update_slice(p, new_p, at), m, v

        p, m, v = lax.fori_loop(0, N // block, body, (p, m, v))
        return p, m, v, count

    return step


def _threads(compiled_text: str) -> list[str]:
    return re.findall(r'"outer_dimension_partitions":\["(\d+)"\]', compiled_text)


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.split("\n\n")[0]).parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 7)
    import optax

    info = machine_info()
    n_small = 1 << 16
    passes = []
    for name, (g, o) in _configs().items():
        gt, gtemp = _passes(g, gdopt.apply_updates, False, n_small)
        gp, ptemp = _passes(g, None, True, n_small)
        ot, otemp = _passes(o, optax.apply_updates, False, n_small)
        passes.append(
            {
                "optimizer": name,
                "gdopt_tree": gt,
                "gdopt_packed": gp,
                "optax": ot,
                "temp_bytes": {"gdopt_tree": gtemp, "gdopt_packed": ptemp, "optax": otemp},
            }
        )
        print(f"{name:27s} passes: gdopt tree {gt}, gdopt packed {gp}, optax {ot}")

    # part 2: timing at N
    bw = bandwidth_probe(rounds=5, smaller=[N * 4])
    key = jax.random.PRNGKey(0)
    g = 1e-2 * jax.random.normal(key, (N,), jnp.float32)
    cases, threads = {}, {}

    def jax_case(name, fn, state):
        f = jax.jit(fn, donate_argnums=(0, 1, 2))
        threads[name] = _threads(f.lower(*state, g).compile().as_text())
        box = list(state)

        def run():
            box[:] = f(*box, g)
            box[0].block_until_ready()

        cases[name] = run

    def fresh():
        return (jnp.ones(N), jnp.zeros(N), jnp.zeros(N), jnp.zeros((), jnp.int32))

    gopt = gdopt.adam(LR)
    oopt = optax.adam(LR)

    def lib_case(opt, apply):
        def fn(p, s, _unused, g):
            u, s = opt.update({"w": g}, s, {"w": p})
            return apply({"w": p}, u)["w"], s, _unused

        return fn

    for label, opt, apply in (
        ("optax adam (3 passes)", oopt, optax.apply_updates),
        ("gdopt adam (3 passes)", gopt, gdopt.apply_updates),
    ):
        s0 = opt.init({"w": jnp.ones(N)})
        f = jax.jit(lib_case(opt, apply), donate_argnums=(0, 1))
        threads[label] = _threads(f.lower(jnp.ones(N), s0, jnp.zeros(()), g).compile().as_text())
        box = [jnp.ones(N), s0, jnp.zeros(())]

        def run(box=box, f=f):
            box[:] = f(*box, g)
            box[0].block_until_ready()

        cases[label] = run
    blocks = [1 << 16, 1 << 18] if args.quick else [1 << 14, 1 << 16, 1 << 18, 1 << 20]
    for b in blocks:
        jax_case(f"one-pass adam, blocks of {b}", one_pass_adam(b), fresh())
    worker = RemoteWorker("benchmarks.update_step:torch_steps", name="adam", L=1, kinds=("fused",))
    cases["torch fused adam (1 pass)"] = worker.cases()["torch fused"]
    stats = time_cases(cases, rounds=rounds, min_round_s=0.15)
    worker.close()
    ref = stats["optax adam (3 passes)"]["median"]
    timing = []
    for name, st in stats.items():
        arrays = 10 if "3 passes" in name else 7
        timing.append(
            {
                "case": name,
                "ms": st["median"] * 1e3,
                "ms_min": st["min"] * 1e3,
                "ms_max": st["max"] * 1e3,
                "vs_optax": st["median"] / ref,
                "GBps_actual_traffic": arrays * N * 4 / st["median"] / 1e9,
                "threads_per_loop": threads.get(name),
                "stats_s": st,
            }
        )
        print(
            f"{name:32s} {st['median'] * 1e3:7.3f} ms [{st['min'] * 1e3:.3f}-"
            f"{st['max'] * 1e3:.3f}]  {st['median'] / ref:5.2f}x optax  "
            f"threads per loop {threads.get(name, '-')}"
        )
    md = [
        "# Passes over memory of one optimizer step on XLA:CPU",
        "",
        f"{info['date']} on {info['cpu']}, {info['cores']} cores, load average "
        f"{info.get('load_average')}; jax {info['jax']}, optax {info['optax']}, torch "
        f"{info['torch']}.",
        "",
        "## Parameter-sized loop fusions (passes) per compiled step (update + apply, donated)",
        "",
        markdown_table(
            ["optimizer", "gdopt tree", "gdopt packed", "optax"],
            [[r["optimizer"], r["gdopt_tree"], r["gdopt_packed"], r["optax"]] for r in passes],
        ),
        "",
        "## Adam, N = 4,194,304 float32: three passes vs one pass",
        "",
        f"Medians of {rounds} interleaved rounds [min-max]. In-place axpy bandwidth in the same "
        f"run: {bw['axpy_GBps']:.1f} GB/s at 256 MiB, "
        f"{bw['by_size'][str(N * 4)]['GBps']:.1f} GB/s at 16 MiB. GB/s counts the traffic each "
        "case really makes (10 arrays for three passes, 7 for one). Threads per loop: "
        "`outer_dimension_partitions` of each parameter-sized loop in the HLO (none: one "
        "thread).",
        "",
        markdown_table(
            ["case", "ms/step", "x optax", "GB/s", "threads per loop"],
            [
                [
                    t["case"],
                    f"{fmt(t['ms'])} [{fmt(t['ms_min'])}-{fmt(t['ms_max'])}]",
                    fmt(t["vs_optax"]),
                    fmt(t["GBps_actual_traffic"]),
                    ",".join(t["threads_per_loop"]) if t["threads_per_loop"] else "-",
                ]
                for t in timing
            ],
        ),
    ]
    payload = {"machine": info, "N": N, "passes": passes, "bandwidth": bw, "timing": timing}
    write_results("fusion", payload, "\n".join(md), args.out)
    return payload


if __name__ == "__main__":
    main()
