"""Shared test settings: float32, CPU, deterministic keys, strict dtype promotion.

gdopt makes every dtype promotion explicit, so the suite runs under JAX's strict promotion
and an implicit cast in gdopt fails a test; code that is not gdopt's (optax, torch and
hand-written references) runs under ``with tests.helpers.oracle():``.
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

# One persistent compilation cache per test run, shared by the pytest-xdist workers and the
# subprocesses tests start (they inherit the environment): a program compiled once is not
# compiled again elsewhere. Tests that count compilations turn it off
# (tests.helpers.persistent_cache_off).
_run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"gdopt-tests-{_run}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (after the platform settings)

jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_sessionfinish(session):
    from tests.helpers import write_bad_input_counts

    write_bad_input_counts()
