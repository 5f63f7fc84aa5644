"""The multi-device checks of tests/test_sharding.py, started in the background.

``tests/conftest.py`` calls :func:`start` when the collected tests include
``tests/test_sharding.py``: one pytest process (the first xdist worker to get there) starts
``python -m tests.sharding_workers.background DIR``, a driver without JAX that runs, one after
the other, each job of :data:`JOBS` in its own subprocesses (8 CPU devices; then 2 processes
of 4 devices joined by ``jax.distributed``) and writes ``DIR/<job>.json``: the JSON each
subprocess printed last, or the error. The tests wait for a job with :func:`result` while the
rest of the suite runs, so no pytest process sits idle for them. Every subprocess runs under
the suite's warning filters (``tests.helpers.subprocess_env``) and a bounded timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds for one job (2 shared cores; each takes 20-60 s)
FIXTURES = {"devices8_report", "processes_report"}  # a test using one needs the driver
_STARTED: list[subprocess.Popen] = []  # the driver, in the pytest process that started it
_DIR: list[Path] = []


def run_dir() -> Path:
    """This test run's directory for the jobs' results (shared by the xdist workers)."""
    if not _DIR:
        run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
        if run:  # one per run, the same in every worker
            path = Path(tempfile.gettempdir()) / f"gdopt-tests-{run}-sharding"
            path.mkdir(exist_ok=True)
        else:  # one pytest process: a fresh directory
            path = Path(tempfile.mkdtemp(prefix="gdopt-tests-sharding-"))
        _DIR.append(path)
    return _DIR[0]


def _env(devices: int) -> dict[str, str]:
    """The driver's environment (from the pytest process) and its subprocesses' (from it)."""
    if "GDOPT_SHARDING_DRIVER" in os.environ:  # in the driver: its environment, set below
        return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    from tests.helpers import subprocess_env

    return subprocess_env(
        GDOPT_SHARDING_DRIVER="1",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )


def start() -> None:
    """Start the driver unless a process of this run already did."""
    d = run_dir()
    try:
        fd = os.open(d / "started", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    with open(d / "driver.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.sharding_workers.background", str(d)],
            cwd=ROOT,
            env=_env(1),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    os.write(fd, str(proc.pid).encode())
    os.close(fd)
    _STARTED.append(proc)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def result(job: str) -> list[dict]:
    """The JSON objects the job's subprocesses printed, once the driver wrote them (starting
    the driver if nothing did); an AssertionError with the job's error otherwise."""
    d = run_dir()
    if not (d / "started").exists():
        start()
    out = d / f"{job}.json"
    deadline = time.monotonic() + len(JOBS) * TIMEOUT + 60
    while not out.exists():
        pid = (d / "started").read_text()
        if pid and not _alive(int(pid)) and not out.exists():
            log = (d / "driver.log").read_text()[-4000:]
            raise AssertionError(f"the sharding driver ended without {job}'s result:\n{log}")
        assert time.monotonic() < deadline, f"no result for {job} in {d}"
        time.sleep(0.1)
    report = json.loads(out.read_text())
    assert report["error"] is None, f"{job} failed:\n{report['error']}"
    return report["outputs"]


def finish(interrupted: bool) -> None:
    """At the end of the session of the process that started the driver: wait for it (the
    other xdist worker may still be reading its results), or stop it if the run was cut."""
    for proc in _STARTED:
        if not interrupted:
            try:
                proc.wait(timeout=len(JOBS) * TIMEOUT + 60)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        if "PYTEST_XDIST_TESTRUNUID" not in os.environ:  # no other process reads it
            shutil.rmtree(run_dir(), ignore_errors=True)
    _STARTED.clear()


# ----------------------------------------------------------------------------- the driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _commands(job: str) -> tuple[list[list[str]], int]:
    """The job's subprocesses (run at the same time) and their devices each."""
    if job == "devices8":
        return [[sys.executable, "-m", "tests.sharding_workers.devices8", "all"]], 8
    port = str(_free_port())
    module = "tests.sharding_workers.processes"
    return [[sys.executable, "-m", module, str(i), "2", port] for i in range(2)], 4


JOBS = ("devices8", "processes")
_RUNNING: list[subprocess.Popen] = []


def _run(job: str) -> dict:
    commands, devices = _commands(job)
    procs = [
        subprocess.Popen(
            c,
            cwd=ROOT,
            env=_env(devices),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in commands
    ]
    _RUNNING[:] = procs
    outputs, errors = [], []
    deadline = time.monotonic() + TIMEOUT
    for c, p in zip(commands, procs, strict=True):
        try:
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
            errors.append(f"{' '.join(c[2:])}: timed out after {TIMEOUT} s\n{stderr[-4000:]}")
            continue
        if p.returncode != 0:
            errors.append(f"{' '.join(c[2:])}: exit {p.returncode}\n{stderr[-4000:]}")
        else:
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    for p in procs:  # one failed: the others may wait for it forever
        if p.poll() is None:
            p.kill()
            p.wait()
    return {"outputs": outputs, "error": "\n".join(errors) or None}


def _stop(signum, frame):  # noqa: ARG001
    for p in _RUNNING:
        if p.poll() is None:
            p.kill()
    raise SystemExit(128 + signum)


def main(directory: str) -> None:
    signal.signal(signal.SIGTERM, _stop)
    for job in JOBS:
        t0 = time.perf_counter()
        try:
            report = _run(job)
        except Exception as e:  # noqa: BLE001  (reported to the tests, asserted on)
            report = {"outputs": [], "error": f"{type(e).__name__}: {e}"}
        report["seconds"] = time.perf_counter() - t0
        tmp = Path(directory) / f"{job}.json.tmp"
        tmp.write_text(json.dumps(report))
        tmp.replace(Path(directory) / f"{job}.json")
        print(f"{job}: {report['seconds']:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
