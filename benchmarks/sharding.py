"""Data-parallel training on 1, 2, 4 and 8 devices, and optimizer-state memory per device.

Two tables:

1. **Scaling of the data-parallel step.** One compiled epoch of ``fit``'s core (16 Adam steps
   of a 64-256-256-10 MLP on batches of 256 examples, the batch split over the data axis
   with :func:`gdopt.sharding.place`) on 1, 2, 4 and 8 devices. On CPU the devices are
   *simulated* (``--xla_force_host_platform_device_count``): each count runs in a process of
   its own, and the counts are timed in interleaved rounds. All of them share the same
   cores, so the table shows what partitioning and the gradient all-reduce cost, not a
   speed-up: N simulated devices cannot compute faster than the cores they share. On a
   machine with real accelerators the same script times the real devices.
2. **Optimizer state per device** (Adam on the same MLP, 8 devices): bytes each device holds
   replicated and with ``shard_opt_state=True`` (ZeRO-1), from the arrays' shards and from
   XLA's memory analysis of the update program.

Usage::

    python -m benchmarks.sharding            # 7 rounds
    python -m benchmarks.sharding --quick    # 3 rounds, 1 and 8 devices
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from benchmarks._common import (
    RemoteWorker,
    fmt,
    machine_info,
    markdown_table,
    parser,
    time_cases,
    write_results,
)

SIZES = (64, 256, 256, 16)  # every dimension divisible by 8: each moment splits
N, BATCH = 4096, 256


def _problem():
    import jax
    import jax.numpy as jnp

    import gdopt

    kx, ky, kp = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (N, SIZES[0]))
    y = jax.random.randint(ky, (N,), 0, SIZES[-1])
    model = gdopt.models.mlp(list(SIZES), "tanh")
    params = model.init(kp)

    def loss(p, b):
        logp = jax.nn.log_softmax(model.apply(p, b[0]))
        return -jnp.mean(jnp.take_along_axis(logp, b[1][:, None], axis=1))

    return params, (x, y), loss


def epoch_steps(devices: int) -> dict[str, Any]:
    """(In a process with ``devices`` devices.) ``{"dp_<n>": one compiled epoch}``."""
    import jax

    import gdopt
    from gdopt import sharding
    from gdopt.engine.core import init_fit_state, make_train_fn

    assert jax.device_count() == devices, (jax.device_count(), devices)
    params, data, loss = _problem()
    opt = gdopt.adam(1e-3)
    placed = sharding.place(
        params, None, data, None, loss_fn=loss, optimizer=opt, mesh="auto", batch_size=BATCH
    )
    train = jax.jit(make_train_fn(placed.loss_fn, placed.optimizer, n_epochs=1, batch_size=BATCH))
    state = init_fit_state(placed.params, placed.opt_state)
    key = jax.random.PRNGKey(0)
    compiled = train.lower(state, placed.data, key).compile()

    def run() -> None:
        out, _ = compiled(state, placed.data, key)
        jax.block_until_ready(out.params)

    return {f"dp_{devices}": run}


def memory_report() -> dict[str, Any]:
    """(In a process with 8 devices.) Optimizer-state bytes per device, both placements."""
    import jax
    import numpy as np

    import gdopt
    from gdopt import sharding

    params, data, loss = _problem()
    opt = gdopt.adam(1e-3)
    out: dict[str, Any] = {"devices": jax.device_count()}
    pg = 2 * sum(int(np.prod(x.shape)) * 4 for x in jax.tree.leaves(params))
    for name, zero in (("replicated", False), ("sharded", True)):
        placed = sharding.place(
            params,
            None,
            data,
            None,
            loss_fn=loss,
            optimizer=opt,
            mesh="auto",
            shard_opt_state=zero,
            batch_size=BATCH,
        )
        per_device = sharding.bytes_per_device(placed.opt_state)
        shaped = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            (placed.params, placed.opt_state, placed.params),
        )
        compiled = jax.jit(opt.update, keep_unused=True).lower(
            *shaped
        )  # grads, state, params: 3 arguments
        xla = sharding.memory_analysis(compiled.compile())
        out[name] = {
            "state_bytes_per_device": max(per_device.values()),
            "xla_argument_bytes": xla["argument_bytes"],
            "xla_state_bytes": xla["argument_bytes"] - pg,
        }
    out["scalar_bytes"] = sum(
        x.nbytes for x in jax.tree.leaves(opt.init(params)) if np.ndim(x) == 0
    )
    return out


def _env_devices(devices: int) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    counts = (1, 8) if args.quick else (1, 2, 4, 8)
    saved = os.environ.get("XLA_FLAGS")
    workers = []
    try:
        for n in counts:
            _env_devices(n)
            workers.append(RemoteWorker("benchmarks.sharding:epoch_steps", devices=n))
        cases = {k: v for w in workers for k, v in w.cases().items()}
        errors = {k: v for w in workers for k, v in w.errors.items()}
        stats = time_cases(cases, rounds=rounds, min_round_s=0.3, warmup=1, max_calls=50)
    finally:
        for w in workers:
            w.close()
        if saved is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = saved
    steps = N // BATCH
    base = stats["dp_1"]["median"]
    rows = []
    for n in counts:
        s = stats[f"dp_{n}"]
        rows.append(
            [
                n,
                BATCH // n,
                fmt(s["median"] / steps * 1e3),
                f"{fmt(s['q1'] / steps * 1e3)} - {fmt(s['q3'] / steps * 1e3)}",
                fmt(BATCH * steps / s["median"] / 1e3),
                fmt(base / s["median"]),
            ]
        )
    table = markdown_table(
        [
            "devices",
            "examples per device",
            "ms / step (median)",
            "IQR",
            "k examples / s",
            "vs 1 device",
        ],
        rows,
    )
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env.setdefault("JAX_PLATFORMS", "cpu")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, benchmarks.sharding as b; print(json.dumps(b.memory_report()))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    rep, sh = mem["replicated"], mem["sharded"]
    mem_table = markdown_table(
        [
            "placement (8 devices)",
            "state bytes / device",
            "XLA: state bytes / device",
            "XLA: update arguments / device",
        ],
        [
            [
                "replicated",
                rep["state_bytes_per_device"],
                rep["xla_state_bytes"],
                rep["xla_argument_bytes"],
            ],
            [
                "shard_opt_state=True",
                sh["state_bytes_per_device"],
                sh["xla_state_bytes"],
                sh["xla_argument_bytes"],
            ],
        ],
    )
    bound = rep["state_bytes_per_device"] / 8 + mem["scalar_bytes"]
    info = machine_info()
    markdown = "\n\n".join(
        [
            "# Data parallel on simulated devices, and sharded optimizer state",
            f"Machine: {info['cpu']}, {info['cores']} cores; jax {info['jax']}. "
            f"Adam, MLP {'-'.join(map(str, SIZES))}, {N} examples, batch {BATCH} "
            f"({steps} steps per compiled epoch), {rounds} interleaved rounds.",
            "## Scaling of the data-parallel step",
            table,
            "These devices are simulated (`--xla_force_host_platform_device_count`) and share "
            f"the machine's {info['cores']} cores: the figures show the cost of partitioning the "
            "step and of the gradient all-reduce between the simulated devices, not a speed-up. "
            "They cannot show how the step scales on real accelerators, where each device has its "
            "own compute and memory. The timings also move with the machine's load (load "
            f"average {info.get('load_average')} at the start of this run).",
            "## Optimizer state per device",
            mem_table,
            f"With `shard_opt_state=True` each device holds {sh['state_bytes_per_device']} bytes "
            f"of state: at most 1/8 of the replicated {rep['state_bytes_per_device']} plus the "
            f"replicated scalars ({mem['scalar_bytes']} bytes), bound {fmt(bound)}. The XLA "
            "column is the update program's argument bytes (from its memory analysis) minus "
            "those of the parameters and gradients. A leaf none of whose dimensions 8 divides "
            "(a 10-class output bias, say) stays replicated and adds its bytes to the bound.",
        ]
    )
    payload = {
        "machine": info,
        "rounds": rounds,
        "stats": stats,
        "errors": errors,
        "memory": mem,
        "model": SIZES,
        "examples": N,
        "batch": BATCH,
    }
    write_results("sharding", payload, markdown, args.out)
    print(markdown)


if __name__ == "__main__":
    main()
