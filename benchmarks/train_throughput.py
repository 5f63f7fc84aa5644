"""Training throughput (optimizer steps per second) of whole training loops.

Workloads (Adam, learning rate 1e-3):

* ``mlp``: MLP 784-512-512-10 (ReLU), batch 128, softmax cross-entropy on random data
  (2,560 examples: 20 steps per epoch);
* ``digits``: softmax regression on the bundled digits (1,438 training images), batch 32
  (44 steps per epoch);
* ``resmlp``: a deep residual MLP of width 64, 500 blocks ``h + tanh(h W + b)`` (1,000
  parameter arrays), batch 64, squared error on random data (16 steps per epoch).

Loops compared (each call runs one epoch; steps per second = steps / median time):

* ``gdopt.fit core, pytree`` / ``packed``: the compiled epoch that :func:`gdopt.fit` runs
  (:func:`gdopt.engine.make_train_fn`, jitted once, state donated; it reshuffles every epoch,
  checks every step's loss and the parameters at the end of the epoch), on the pytree and on
  packed buffers; ``(fit's choice)`` marks the one ``gdopt.fit`` picks by default
  (:func:`gdopt.engine.should_pack`). ``gdopt.fit`` itself compiles on every call: its
  first-call time is reported separately;
* ``optax loop``: a jitted optax step called from Python once per batch;
* ``optax scan``: the same step in ``lax.scan`` over the epoch's batches;
* ``gdopt tree scan`` / ``gdopt packed scan``: gdopt's Adam in the same ``lax.scan``, on the
  pytree and on packed parameters (:mod:`gdopt.packing`);
* ``torch eager``: the same model and ``torch.optim.Adam`` in a Python loop (its own process).

Usage::

    python -m benchmarks.train_throughput           # all three workloads, 7 rounds (about
                                                    # 8 minutes: resmlp compiles slowly)
    python -m benchmarks.train_throughput --quick   # mlp and digits, 5 rounds
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdopt
from benchmarks._common import (
    RemoteWorker,
    fmt,
    machine_info,
    markdown_table,
    parser,
    time_cases,
    write_results,
)
from gdopt.engine import init_fit_state, make_train_fn, should_pack
from gdopt.packing import pack, packed_optimizer, unpack, update_and_apply

LR = 1e-3
DEPTH = 500


# ----------------------------------------------------------------------------- workloads


def _data(name: str) -> tuple[Any, int]:
    """(x, y) as NumPy arrays and the batch size."""
    rng = np.random.default_rng(0)
    if name == "mlp":
        return (
            rng.standard_normal((2560, 784), np.float32),
            rng.integers(0, 10, 2560).astype(np.int32),
        ), 128
    if name == "digits":
        x, y = gdopt.data.load_digits().train
        return (np.asarray(x), np.asarray(y)), 32
    return (
        rng.standard_normal((1024, 64), np.float32),
        rng.standard_normal((1024, 64), np.float32),
    ), 64


def _init(name: str) -> Any:
    key = jax.random.PRNGKey(0)
    if name == "mlp":
        return gdopt.models.mlp([784, 512, 512, 10]).init(key)
    if name == "digits":
        return {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
    keys = jax.random.split(key, DEPTH)
    return [{"w": 0.05 * jax.random.normal(k, (64, 64)), "b": jnp.zeros(64)} for k in keys]


def _loss(name: str):
    if name == "mlp":
        apply = gdopt.models.mlp([784, 512, 512, 10]).apply
        return lambda p, b: gdopt.losses.softmax_cross_entropy_with_integer_labels(
            apply(p, b[0]), b[1]
        ).mean()
    if name == "digits":
        return lambda p, b: gdopt.losses.softmax_cross_entropy_with_integer_labels(
            b[0] @ p["w"] + p["b"], b[1]
        ).mean()

    def loss(p, b):
        h = b[0]
        for layer in p:
            h = h + jnp.tanh(h @ layer["w"] + layer["b"])
        return jnp.mean((h - b[1]) ** 2)

    return loss


# ----------------------------------------------------------------------------- loops


def _batches(data, batch):
    x, y = data
    steps = len(x) // batch
    return (
        jnp.asarray(x[: steps * batch]).reshape(steps, batch, *x.shape[1:]),
        jnp.asarray(y[: steps * batch]).reshape(steps, batch, *y.shape[1:]),
    ), steps


def _runner(fn, state, *args):
    box = [state]

    def run():
        box[0] = fn(box[0], *args)
        jax.tree.leaves(box[0])[0].block_until_ready()

    return run


def jax_cases(name: str, with_fit: bool = True) -> tuple[dict, dict, int]:
    data, batch = _data(name)
    loss = _loss(name)
    params = _init(name)
    batches, steps = _batches(data, batch)
    cases, first = {}, {}

    def timed(label, fn, state, *args):
        t0 = time.perf_counter()
        run = _runner(fn, state, *args)
        run()
        first[label] = time.perf_counter() - t0
        cases[label] = run

    opt = gdopt.adam(LR)
    if with_fit:
        _fit_cases(loss, opt, params, data, batch, timed, first)
    _scan_cases(loss, opt, params, batches, steps, timed)
    return cases, first, steps


def _fit_cases(loss, opt, params, data, batch, timed, first):
    """gdopt.fit's compiled core (one epoch per call), on the pytree and packed, and one
    whole gdopt.fit call (which picks one of the two: gdopt.engine.should_pack)."""
    dev_data = (jnp.asarray(data[0]), jnp.asarray(data[1]))
    for mode in (False, True):
        core = make_train_fn(loss, opt, n_epochs=1, batch_size=batch, pack=mode)
        epoch = jax.jit(lambda s, d, k, core=core: core(s, d, k)[0], donate_argnums=0)
        p = pack(params) if mode else jax.tree.map(jnp.copy, params)
        o = packed_optimizer(opt).init(p) if mode else opt.init(p)
        label = "gdopt.fit core, " + ("packed" if mode else "pytree")
        if mode == should_pack(params, opt):
            label += " (fit's choice)"
        timed(label, epoch, init_fit_state(p, o), dev_data, jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    gdopt.fit(loss, params, gdopt.adam(LR), dev_data, epochs=1, batch_size=batch)
    first["gdopt.fit (one call, 1 epoch)"] = time.perf_counter() - t0


def _scan_cases(loss, opt, params, batches, steps, timed):
    """The optax step in a Python loop and in lax.scan; gdopt's Adam in lax.scan."""
    oopt = optax.adam(LR)

    def ostep(carry, b):
        p, s = carry
        g = jax.grad(loss)(p, b)
        u, s = oopt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    jstep = jax.jit(lambda c, b: ostep(c, b)[0], donate_argnums=0)

    def python_epoch(c, bs):
        for i in range(steps):
            c = jstep(c, (bs[0][i], bs[1][i]))
        return c

    timed("optax loop", python_epoch, (jax.tree.map(jnp.copy, params), oopt.init(params)), batches)
    scan_epoch = jax.jit(lambda c, bs: jax.lax.scan(ostep, c, bs)[0], donate_argnums=0)
    timed("optax scan", scan_epoch, (jax.tree.map(jnp.copy, params), oopt.init(params)), batches)

    # gdopt's Adam in the same scan, on the pytree and packed
    def gstep(carry, b):
        p, s = carry
        g = jax.grad(loss)(p, b)
        return update_and_apply(opt, g, s, p), None

    gscan = jax.jit(lambda c, bs: jax.lax.scan(gstep, c, bs)[0], donate_argnums=0)
    timed("gdopt tree scan", gscan, (jax.tree.map(jnp.copy, params), opt.init(params)), batches)
    popt = packed_optimizer(opt)
    packed = pack(params)

    def pstep(carry, b):
        p, s = carry
        g = jax.grad(lambda q: loss(unpack(q), b))(p)
        return update_and_apply(popt, g, s, p), None

    pscan = jax.jit(lambda c, bs: jax.lax.scan(pstep, c, bs)[0], donate_argnums=0)
    timed("gdopt packed scan", pscan, (packed, popt.init(packed)), batches)


def torch_epoch(name: str) -> dict:
    """In a worker process: ``{"torch eager": one epoch of the workload}``."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    (x, y), batch = _data(name)
    x, y = np.array(x), np.array(y)  # writable copies for torch
    steps = len(x) // batch
    xs = torch.from_numpy(x[: steps * batch]).reshape(steps, batch, *x.shape[1:])
    ys = torch.from_numpy(y[: steps * batch]).reshape(steps, batch, *y.shape[1:])
    nn = torch.nn
    if name == "mlp":
        model = nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )
        lossf = nn.CrossEntropyLoss()
    elif name == "digits":
        model = nn.Linear(64, 10)
        lossf = nn.CrossEntropyLoss()
    else:

        class Res(nn.Module):
            def __init__(self):
                super().__init__()
                self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(DEPTH))

            def forward(self, h):
                for layer in self.layers:
                    h = h + torch.tanh(layer(h))
                return h

        model = Res()
        lossf = nn.MSELoss()
        ys = ys.float()
    if name != "resmlp":
        ys = ys.long()
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def epoch():
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            lossf(model(xs[i]), ys[i]).backward()
            opt.step()

    return {"torch eager": epoch}


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 7)
    names = ["mlp", "digits"] if args.quick else ["mlp", "digits", "resmlp"]
    info = machine_info()
    print(
        f"# train_throughput on {info['cpu']} ({info['cores']} cores), jax {info['jax']}, "
        f"torch {info['torch']}"
    )
    results = []
    for name in names:
        cases, first, steps = jax_cases(name)
        worker = RemoteWorker("benchmarks.train_throughput:torch_epoch", name=name)
        cases.update(worker.cases())
        first.update(worker.first_call_s)
        stats = time_cases(cases, rounds=rounds, min_round_s=0.3, warmup=1)
        worker.close()
        ref = stats["optax loop"]["median"]
        ref_scan = stats["optax scan"]["median"]
        print(f"\n{name} ({steps} steps per epoch)")
        for label, st in stats.items():
            r = {
                "workload": name,
                "loop": label,
                "steps_per_epoch": steps,
                "steps_per_s": steps / st["median"],
                "steps_per_s_min": steps / st["max"],
                "steps_per_s_max": steps / st["min"],
                "vs_optax_loop": ref / st["median"],
                "vs_optax_scan": ref_scan / st["median"],
                "first_call_s": first.get(label),
                "stats_s_per_epoch": st,
            }
            results.append(r)
            print(
                f"  {label:18s} {r['steps_per_s']:9.1f} steps/s "
                f"[{r['steps_per_s_min']:.1f}-{r['steps_per_s_max']:.1f}]  "
                f"{r['vs_optax_loop']:5.2f}x optax loop  first call {r['first_call_s']:.2f} s"
            )
        fit_first = first.get("gdopt.fit (one call, 1 epoch)")
        results.append(
            {"workload": name, "loop": "gdopt.fit (one call, 1 epoch)", "first_call_s": fit_first}
        )
        if fit_first is not None:
            print(f"  gdopt.fit(epochs=1) wall time including its compile: {fit_first:.2f} s")
    md = [
        "# Training throughput (Adam), steps per second",
        "",
        f"{info['date']} on {info['cpu']}, {info['cores']} cores, load average "
        f"{info.get('load_average')}; jax {info['jax']}, optax {info['optax']}, torch "
        f"{info['torch']} ({info.get('torch_threads')} threads, own process).",
        "",
        f"Median of {rounds} interleaved rounds of one epoch each [min-max]; first call = "
        "compile + first epoch.",
        "",
    ]
    for name in names:
        rows = [
            [
                r["loop"],
                f"{fmt(r['steps_per_s'])} [{fmt(r['steps_per_s_min'])}-"
                f"{fmt(r['steps_per_s_max'])}]",
                fmt(r["vs_optax_loop"]),
                fmt(r["vs_optax_scan"]),
                fmt(r["first_call_s"]),
            ]
            for r in results
            if r["workload"] == name and "steps_per_s" in r
        ]
        fit_first = next(
            r["first_call_s"]
            for r in results
            if r["workload"] == name and r["loop"].startswith("gdopt.fit (one")
        )
        note = f"`gdopt.fit(..., epochs=1)`: {fmt(fit_first)} s including its compile."
        md += [
            f"## {name}",
            "",
            markdown_table(
                ["loop", "steps/s", "x optax loop", "x optax scan", "first call s"], rows
            ),
            "",
            note,
            "",
        ]
    payload = {"machine": info, "rounds": rounds, "results": results}
    write_results("train_throughput", payload, "\n".join(md), args.out)
    return payload


if __name__ == "__main__":
    main()
