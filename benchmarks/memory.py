"""Memory: optimizer state bytes and the compiled step's temporaries, gdopt vs optax.

For 4,194,304 float32 parameters in L leaves:

* state: bytes of the optimizer state and the elements in its parameter-sized arrays (Adam
  must hold exactly 2N: ``m`` and ``v``, each in its dtype; ``mu_dtype``/``nu_dtype``
  bfloat16 halve them);
* step: ``compiled.memory_analysis()`` of the jitted step with donated parameters and state:
  arguments, outputs, aliased bytes and the temporaries XLA allocates; for ``update + apply``
  alone and for a training step (gradient of a loss + update + apply).

Usage::

    python -m benchmarks.memory            # L in 1 and 64 (about a minute)
    python -m benchmarks.memory --quick    # L = 1
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gdopt
from benchmarks._common import fmt, machine_info, markdown_table, parser, write_results
from gdopt.packing import Packed, PackSpec, packed_optimizer, unpack, update_and_apply

N = 4 * 1024 * 1024
MiB = 2**20

CONFIGS = {
    "adam": ({}, {}),
    "adam mu bf16": ({"mu_dtype": jnp.bfloat16}, {"mu_dtype": jnp.bfloat16}),
    "adam mu+nu bf16": ({"mu_dtype": jnp.bfloat16, "nu_dtype": jnp.bfloat16}, None),
    "adamw": ({"weight_decay": 1e-4}, {"weight_decay": 1e-4}),
    "momentum": ({"momentum": 0.9}, {"momentum": 0.9}),
    "rmsprop": ({}, {}),
}


def _factory(lib, name):
    base = {"adam mu bf16": "adam", "adam mu+nu bf16": "adam", "momentum": "sgd"}.get(name, name)
    return getattr(lib, base)


def _params(L: int, packed: bool):
    if packed:
        slots = tuple((0, i * (N // L), (N // L,)) for i in range(L))
        spec = PackSpec(jax.tree.structure([0] * L), (np.dtype(np.float32),), (N,), slots)
        return Packed([jax.ShapeDtypeStruct((N,), jnp.float32)], spec)
    return [jax.ShapeDtypeStruct((N // L,), jnp.float32) for _ in range(L)]


def _loss(params):
    """A loss in which every leaf is a weight matrix: sum_i ||x W_i||², x of 8 rows.

    Like a model's layers, each leaf feeds a matrix product, so its gradient is the output
    of a matrix product (a buffer of its own per leaf).
    """
    leaves = unpack(params) if isinstance(params, Packed) else params
    total = jnp.zeros((), jnp.float32)
    for w in leaves:
        rows = 1 << (int(w.size).bit_length() - 1) // 2
        w = w.reshape(rows, w.size // rows)
        x = jnp.full((8, rows), 0.01, jnp.float32)
        total = total + jnp.sum((x @ w) ** 2)
    return total


def _state_stats(state) -> dict:
    leaves = jax.tree.leaves(state)
    big = [x for x in leaves if np.prod(x.shape, dtype=np.int64) > 1]
    by_dtype: dict[str, int] = {}
    for x in big:
        key = np.dtype(x.dtype).name
        by_dtype[key] = by_dtype.get(key, 0) + int(np.prod(x.shape, dtype=np.int64))
    return {
        "state_bytes": int(
            sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize for x in leaves)
        ),
        "array_elements": int(sum(by_dtype.values())),
        "array_elements_by_dtype": by_dtype,
        "scalar_leaves": len(leaves) - len(big),
    }


def _memory(fn, *args) -> dict:
    m = jax.jit(fn, donate_argnums=(0, 1)).lower(*args).compile().memory_analysis()
    return {
        "argument_bytes": m.argument_size_in_bytes,
        "output_bytes": m.output_size_in_bytes,
        "alias_bytes": m.alias_size_in_bytes,
        "temp_bytes": m.temp_size_in_bytes,
    }


def measure(config: str, variant: str, L: int, train: bool) -> dict | None:
    import optax

    gkw, okw = CONFIGS[config]
    if variant == "optax":
        if okw is None:
            return None
        opt = _factory(optax, config)(1e-3, **okw)
        apply = optax.apply_updates
    else:
        opt = _factory(gdopt, config)(1e-3, **gkw)
        apply = gdopt.apply_updates
    packed = variant == "gdopt packed"
    if packed:
        opt = packed_optimizer(opt)
    params = _params(L, packed)
    state = jax.eval_shape(opt.init, params)

    def update(p, s, g):
        if packed:
            return update_and_apply(opt, g, s, p)
        u, s = opt.update(g, s, p)
        return apply(p, u), s

    def train_step(p, s):
        g = jax.grad(_loss)(p)
        return update(p, s, g)

    return {
        "config": config,
        "variant": variant,
        "leaves": L,
        **_state_stats(state),
        "update": _memory(update, params, state, params),
        "train": _memory(train_step, params, state) if train else None,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.split("\n\n")[0]).parse_args(argv)
    leaf_counts = [1] if args.quick else [1, 64]
    info = machine_info()
    results = []
    for L in leaf_counts:
        for config in CONFIGS:
            for variant in ("optax", "gdopt tree", "gdopt packed"):
                # the training step (the gradient comes out of matrix products) for Adam only:
                # what packing changes there is the gradient, the same for every optimizer
                r = measure(config, variant, L, train=config == "adam")
                if r is None:
                    continue
                results.append(r)
                train = f"{r['train']['temp_bytes'] / MiB:6.2f}" if r["train"] else "-"
                print(
                    f"{config:16s} {variant:13s} L={L:5d} state {r['state_bytes'] / MiB:7.2f} "
                    f"MiB ({r['array_elements'] / N:.2f} N, {r['array_elements_by_dtype']})"
                    f"  temp: update {r['update']['temp_bytes'] / MiB:6.2f} MiB, train {train} MiB"
                )
    checks = []
    for L in leaf_counts:
        for variant in ("gdopt tree", "gdopt packed"):
            r = next(
                x
                for x in results
                if x["config"] == "adam" and x["variant"] == variant and x["leaves"] == L
            )
            checks.append(
                {
                    "target": f"Adam state = 2N float32 elements ({variant}, L={L})",
                    "value": r["array_elements_by_dtype"],
                    "met": r["array_elements_by_dtype"] == {"float32": 2 * N},
                }
            )
            r = next(
                x
                for x in results
                if x["config"] == "adam mu+nu bf16" and x["variant"] == variant and x["leaves"] == L
            )
            checks.append(
                {
                    "target": f"Adam mu+nu bf16 state = 2N bfloat16 ({variant}, L={L})",
                    "value": r["array_elements_by_dtype"],
                    "met": r["array_elements_by_dtype"] == {"bfloat16": 2 * N},
                }
            )
        for config in CONFIGS:
            o = next(
                (
                    x
                    for x in results
                    if x["config"] == config and x["variant"] == "optax" and x["leaves"] == L
                ),
                None,
            )
            g = next(
                x
                for x in results
                if x["config"] == config and x["variant"] == "gdopt packed" and x["leaves"] == L
            )
            if o is None:
                continue
            for kind in ("update", "train"):
                if g[kind] is None:
                    continue
                extra = g[kind]["temp_bytes"] - o[kind]["temp_bytes"]
                checks.append(
                    {
                        "target": f"{config}, L={L}, {kind} step: no parameter-sized temporary "
                        "beyond optax's (packed temp - optax temp < 8 MiB = half a parameter "
                        "buffer)",
                        "value": f"{extra / MiB:+.2f} MiB",
                        "met": extra < N * 4 // 2,
                    }
                )
    md = [
        "# Memory: optimizer state and compiled-step temporaries, 4,194,304 float32",
        "",
        f"{info['date']}; jax {info['jax']}, optax {info['optax']}. Steps jitted with donated "
        "parameters and state; `temp` = XLA's temporary allocation "
        "(`compiled.memory_analysis().temp_size_in_bytes`). `train` = gradient of "
        "sum_i ||x W_i||² (each leaf a weight matrix that feeds a matrix product) + update + "
        "apply.",
        "",
        markdown_table(
            [
                "leaves",
                "optimizer",
                "variant",
                "state MiB",
                "state arrays (elements)",
                "update temp MiB",
                "update alias MiB",
                "train temp MiB",
            ],
            [
                [
                    r["leaves"],
                    r["config"],
                    r["variant"],
                    fmt(r["state_bytes"] / MiB),
                    ", ".join(f"{k}: {v / N:g}N" for k, v in r["array_elements_by_dtype"].items()),
                    fmt(r["update"]["temp_bytes"] / MiB),
                    fmt(r["update"]["alias_bytes"] / MiB),
                    fmt(r["train"]["temp_bytes"] / MiB) if r["train"] else "-",
                ]
                for r in results
            ],
        ),
        "",
        "## Checks",
        "",
        markdown_table(
            ["check", "value", "met"],
            [[c["target"], c["value"], "yes" if c["met"] else "NO"] for c in checks],
        ),
    ]
    payload = {"machine": info, "N": N, "results": results, "checks": checks}
    write_results("memory", payload, "\n".join(md), args.out)
    print("\n".join(md[-4:]))
    return payload


if __name__ == "__main__":
    main()
