"""One process of a multi-process ``fit`` (run by tests/test_sharding.py).

``python -m tests.sharding_workers.processes PROCESS_ID NUM_PROCESSES PORT``: with
``NUM_PROCESSES > 1`` it joins the others with ``jax.distributed.initialize`` on 127.0.0.1
(CPU collectives over gloo), then every process runs the same ``fit(..., mesh="auto")`` on
the same global data (each one transfers only its share to its devices) and prints one JSON
object: the trained parameters, the loss history and where the state lives.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gdopt  # noqa: E402


def loss(p, b):
    return jnp.mean((jnp.tanh(b[0] @ p["w"] + p["b"]) - b[1]) ** 2)


def run() -> dict:
    """The same ``fit`` in every process; what it trained (as this process sees it)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype(np.float32)
    y = np.tanh(x @ rng.normal(size=(16, 8))).astype(np.float32)
    params = {"w": np.zeros((16, 8), np.float32), "b": np.zeros((8,), np.float32)}
    # 12 compiled calls (epochs_per_call=1): the host reads each call's result before the
    # next dispatch, so at most one program with collectives is in flight
    res = gdopt.fit(
        loss,
        params,
        gdopt.adam(1e-2),
        (x, y),
        epochs=12,
        batch_size=16,
        key=0,
        epochs_per_call=1,
        mesh="auto",
        shard_opt_state=True,
    )
    w = np.asarray(res.params["w"].addressable_data(0))
    mu = res.opt_state[0].mu["w"]
    return {
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "epochs_run": res.epochs_run,
        "params": w.ravel().tolist(),
        "train_loss": np.asarray(res.history.train_loss).tolist(),
        "state_spec": str(tuple(mu.sharding.spec)),
    }


def main() -> None:
    process_id, num_processes, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if num_processes > 1:  # before any computation: the CPU client starts with gloo
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"127.0.0.1:{port}",
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=60,
        )
    print(json.dumps(run()), flush=True)


if __name__ == "__main__":
    main()
