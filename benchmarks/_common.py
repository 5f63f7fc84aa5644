"""Shared benchmark machinery: timing, machine information, the bandwidth probe, writers.

Timing rules: every case is warmed up (compiled) first; then the cases of one table are run
in *interleaved rounds* (round 1 of every case, then round 2...), so that slow drifts of a
shared machine hit all of them alike, and each case reports the median over the rounds and
the spread (min, max, interquartile range). A round calls the case enough times to last at
least ``min_round_s`` and divides. Compare cases side by side within one run, never across
runs or machines.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = [
    "RESULTS",
    "Stats",
    "RemoteWorker",
    "parser",
    "machine_info",
    "time_cases",
    "bandwidth_probe",
    "markdown_table",
    "write_results",
    "write_png",
    "fmt",
]


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes (``--quick``, ``--rounds``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer cases and rounds (a smoke run)")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds per case (>= 5)")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the result files")
    return p


# ----------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except ImportError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory, OS, Python and library versions, JAX backend."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    for name in ("jax", "jaxlib", "optax", "torch", "numpy", "gdopt"):
        info[name] = _version(name)
    try:
        import jax

        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(d) for d in jax.devices()]
    except ImportError:
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    info["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
    return info


# ----------------------------------------------------------------------------- timing


class Stats(dict):
    """Seconds per call over the rounds: median, min, max, q1, q3, iqr, rounds, calls."""

    @classmethod
    def of(cls, samples: Sequence[float], calls: int) -> Stats:
        xs = sorted(samples)
        q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
        return cls(
            median=statistics.median(xs),
            min=xs[0],
            max=xs[-1],
            q1=q[0],
            q3=q[2],
            iqr=q[2] - q[0],
            rounds=len(xs),
            calls=calls,
            samples=list(samples),
        )


class RemoteWorker:
    """Cases that run in a process of their own (torch: in one process its OpenMP threads and
    XLA's spin against each other on a small machine and slow both down).

    ``factory`` is ``"module:function"``; in a spawned process ``function(**kwargs)`` returns
    ``{name: zero-argument step callable}``. Each step is called once at start (its time is
    ``first_call_s[name]``; a step that raises is left out and its error kept in
    ``errors[name]``). :meth:`cases` gives handles that :func:`time_cases` times batch by
    batch, all in this one process. Call :meth:`close` when done.
    """

    def __init__(self, factory: str, **kwargs: Any):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_remote_loop, args=(child, factory, kwargs))
        self._proc.start()
        status, value = self._conn.recv()
        if status != "ok":
            self.close()
            raise RuntimeError(value)
        self.first_call_s = {k: v for k, v in value.items() if isinstance(v, float)}
        self.errors = {k: v for k, v in value.items() if isinstance(v, str)}

    def run_batch(self, name: str, n: int) -> float:
        """Run ``n`` calls of case ``name`` in the worker; their total wall time in seconds."""
        self._conn.send((name, n))
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    def cases(self) -> dict[str, Any]:
        """``{name: handle}`` for :func:`time_cases` (calling a handle runs one step)."""
        return {name: _RemoteHandle(self, name) for name in self.first_call_s}

    def close(self) -> None:
        if self._proc.is_alive():
            self._conn.send(None)
            self._proc.join(timeout=30)
        self._conn.close()


class _RemoteHandle:
    def __init__(self, worker: RemoteWorker, name: str):
        self.worker, self.name = worker, name

    def run_batch(self, n: int) -> float:
        return self.worker.run_batch(self.name, n)

    def __call__(self) -> None:
        self.run_batch(1)


def _remote_loop(conn, factory: str, kwargs: dict) -> None:
    try:
        module, name = factory.split(":")
        steps = getattr(importlib.import_module(module), name)(**kwargs)
    except Exception as e:  # reported to the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    status: dict[str, Any] = {}
    for key, fn in list(steps.items()):
        try:
            t0 = time.perf_counter()
            fn()
            status[key] = time.perf_counter() - t0
        except Exception as e:  # this case is unsupported: report it, keep the others
            status[key] = f"{type(e).__name__}: {e}"
            del steps[key]
    conn.send(("ok", status))
    while (msg := conn.recv()) is not None:
        key, n = msg
        t0 = time.perf_counter()
        for _ in range(n):
            steps[key]()
        conn.send(("ok", time.perf_counter() - t0))


def time_cases(
    cases: dict[str, Callable[[], Any]],
    *,
    rounds: int = 7,
    min_round_s: float = 0.1,
    warmup: int = 2,
    max_calls: int = 1000,
) -> dict[str, Stats]:
    """Time each zero-argument callable (it must block until its work is done).

    Args:
      cases: ``{name: fn}``; each ``fn()`` runs one step and waits for it; a case with a
        ``run_batch(n) -> seconds`` method (from :meth:`RemoteWorker.cases`) is timed by it.
      rounds: interleaved rounds (at least 5 give a meaningful median and spread).
      min_round_s: each round of a case lasts at least this long (calls are repeated).
      warmup: calls before timing (the first compiles).
      max_calls: upper bound on calls per round.

    Returns:
      ``{name: Stats}`` in seconds per call.
    """

    def batch(fn, n: int) -> float:
        if hasattr(fn, "run_batch"):
            return fn.run_batch(n)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0

    calls: dict[str, int] = {}
    for name, fn in cases.items():
        batch(fn, warmup)
        one = max(batch(fn, 1), 1e-7)
        calls[name] = int(min(max_calls, max(1, round(min_round_s / one))))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(batch(fn, calls[name]) / calls[name])
    return {name: Stats.of(samples[name], calls[name]) for name in cases}


def bandwidth_probe(
    n_bytes: int = 256 * 2**20, rounds: int = 7, smaller: Sequence[int] = ()
) -> dict[str, Any]:
    """Measure memory bandwidth with an in-place axpy ``a <- a + s * b`` (float32, jitted).

    The buffer ``a`` is donated, so XLA updates it in place: the traffic is exactly three
    arrays (read ``a``, read ``b``, write ``a``), the same pattern as an optimizer that
    updates its buffers in place. This is the fair ceiling for an optimizer step. Run it in
    the same process as the benchmark it normalises.

    Args:
      n_bytes: size of each array (256 MiB: well beyond the caches).
      rounds: timing rounds.
      smaller: further array sizes to report (e.g. the benchmark's own buffer size, which may
        run partly from the last-level cache).

    Returns:
      ``{"axpy_GBps": median GB/s at n_bytes, "by_size": {bytes: {"GBps", "stats"}}}``
      (GB = 1e9 bytes).
    """
    import jax
    import jax.numpy as jnp

    step = jax.jit(lambda a, b: a + 0.5 * b, donate_argnums=0)
    out: dict[str, Any] = {"kernel": "a <- a + 0.5 * b, float32, a donated", "by_size": {}}
    for size in (n_bytes, *smaller):
        n = size // 4
        state = {"a": jnp.ones(n, jnp.float32)}
        b = jnp.full(n, 1e-3, jnp.float32)

        def run(state=state, b=b):
            state["a"] = step(state["a"], b)
            state["a"].block_until_ready()

        stats = time_cases({"axpy": run}, rounds=rounds, min_round_s=0.2)["axpy"]
        gbps = 3 * n * 4 / stats["median"] / 1e9
        out["by_size"][str(size)] = {"GBps": gbps, "stats": stats}
        del state, b
    out["axpy_GBps"] = out["by_size"][str(n_bytes)]["GBps"]
    out["axpy_bytes"] = n_bytes
    return out


# ----------------------------------------------------------------------------- output


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for a table: ``digits`` significant digits, ``-`` for None."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:.0f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates the file readable by its owner only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_results(name: str, payload: dict[str, Any], markdown: str, out: Path = RESULTS):
    """Write ``out/NAME.json`` and ``out/NAME.md`` atomically; returns their paths."""
    jpath, mpath = out / f"{name}.json", out / f"{name}.md"
    _atomic_write(jpath, (json.dumps(payload, indent=1, default=str) + "\n").encode())
    _atomic_write(mpath, (markdown.rstrip() + "\n").encode())
    return jpath, mpath


def write_png(name: str, figure: Any, out: Path = RESULTS) -> Path:
    """Save a matplotlib figure as ``out/NAME.png`` atomically."""
    import io

    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    path = out / f"{name}.png"
    _atomic_write(path, buf.getvalue())
    return path
