"""Eager optimizer steps (no ``jax.jit``), gdopt against optax, for every shared name.

Notebooks and tutorials call ``opt.update`` eagerly. This times one eager update (and the
apply) of each named optimizer that optax (or optax.contrib) also has, on a small model of
two arrays (a 16 x 16 matrix and a 16-vector), in interleaved rounds after a warm-up of
three steps, and counts the XLA compilations of steps 2 to 6 (an optimizer that compiles
per eager step pays a compile at every call).

Usage::

    python -m benchmarks.eager_step            # 7 rounds
    python -m benchmarks.eager_step --quick    # 3 rounds, a few optimizers
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import gdopt
from benchmarks._common import fmt, machine_info, markdown_table, parser, time_cases, write_results

QUICK = ["sgd", "adam", "adamw", "radam", "lion", "muon", "prodigy"]


def _shared_names() -> list[str]:
    import optax
    import optax.contrib

    out = []
    for name in gdopt.optimizers.__all__:
        if name.startswith("ademamix_"):
            continue
        if callable(getattr(optax, name, None)) or callable(getattr(optax.contrib, name, None)):
            out.append(name)
    return sorted(out)


def _loss(p):
    return jnp.sum((p["w"] @ jnp.ones(16) - 1.0) ** 2) + jnp.sum((p["b"] - 0.5) ** 2)


def _make(lib: str, name: str):
    import optax
    import optax.contrib

    module = gdopt if lib == "gdopt" else (optax if hasattr(optax, name) else optax.contrib)
    fn = getattr(module, name)
    kwargs = {}
    if name not in {"polyak_sgd", "lbfgs", "prodigy", "dadapt_adamw", "adadelta", "adafactor"}:
        kwargs["learning_rate"] = 1e-3
    if name in {"schedule_free_sgd", "schedule_free_adamw"}:
        kwargs = {"learning_rate": 1e-3}
    return fn(**kwargs)


def _extras(name: str, value, grad):
    if name == "polyak_sgd":
        return {"value": value}
    if name == "lbfgs":
        return {"value": value, "grad": grad, "value_fn": _loss}
    if name == "sophia":
        return {"obj_fn": _loss}
    return {}


def _case(lib: str, name: str):
    import optax

    opt = _make(lib, name)
    apply = gdopt.apply_updates if lib == "gdopt" else optax.apply_updates
    key = jax.random.PRNGKey(0)
    params = {"w": jax.random.normal(key, (16, 16)) * 0.1, "b": jnp.zeros(16)}
    value, grad = jax.value_and_grad(_loss)(params)
    holder = {"p": params, "s": opt.init(params)}
    extras = _extras(name, value, grad)

    def step():
        u, holder["s"] = opt.update(grad, holder["s"], holder["p"], **extras)
        holder["p"] = apply(holder["p"], u)
        jax.block_until_ready(holder["p"])

    return step


_COMPILES: list[str] = []


def _count_compiles(step, n: int = 5) -> int:
    before = len(_COMPILES)
    for _ in range(n):
        step()
    return len(_COMPILES) - before


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    names = QUICK if args.quick else _shared_names()
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: (
            _COMPILES.append(event)
            if event == "/jax/core/compile/backend_compile_duration"
            else None
        )
    )
    cases, compiles = {}, {}
    for name in names:
        for lib in ("gdopt", "optax"):
            step = _case(lib, name)
            step()  # the first step compiles
            compiles[(name, lib)] = _count_compiles(step)
            cases[f"{name}/{lib}"] = step
    stats = time_cases(cases, rounds=rounds, min_round_s=0.05, warmup=1, max_calls=200)
    rows, results = [], {}
    for name in names:
        g, o = stats[f"{name}/gdopt"]["median"], stats[f"{name}/optax"]["median"]
        results[name] = {
            "gdopt_ms": g * 1e3,
            "optax_ms": o * 1e3,
            "ratio": g / o,
            "gdopt_compiles_steps_2_6": compiles[(name, "gdopt")],
            "optax_compiles_steps_2_6": compiles[(name, "optax")],
            "gdopt_stats": stats[f"{name}/gdopt"],
            "optax_stats": stats[f"{name}/optax"],
        }
        rows.append(
            [
                name,
                fmt(g * 1e3),
                fmt(o * 1e3),
                fmt(g / o, 2),
                compiles[(name, "gdopt")],
                compiles[(name, "optax")],
            ]
        )
    headers = [
        "optimizer",
        "gdopt ms",
        "optax ms",
        "gdopt / optax",
        "gdopt compiles",
        "optax compiles",
    ]
    table = markdown_table(headers, rows)
    info = machine_info()
    within = sum(1 for r in results.values() if r["ratio"] <= 1.5)
    md = (
        "# Eager optimizer steps: gdopt vs optax\n\n"
        "One eager `update` + apply (no `jax.jit`) on a 2-array model (16 x 16 and 16), "
        f"median of {rounds} interleaved rounds after a warm-up; compiles counted over eager "
        "steps 2 to 6 (5 steps).\n\n"
        f"{table}\n\n{within} of {len(results)} within 1.5x of optax.\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores; jax {info['jax']}, optax "
        f"{info['optax']}.\n"
    )
    print(table)
    print(f"{within} of {len(results)} within 1.5x of optax")
    write_results(
        "eager_step", {"machine": info, "rounds": rounds, "results": results}, md, args.out
    )


if __name__ == "__main__":
    main()
