"""Shared test settings: float32, CPU, deterministic keys, strict dtype promotion.

gdopt makes every dtype promotion explicit, so the suite runs under JAX's strict promotion
and an implicit cast in gdopt fails a test; code that is not gdopt's (optax, torch and
hand-written references) runs under ``with tests.helpers.oracle():``.
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402  (after the platform settings)

jax.config.update("jax_numpy_dtype_promotion", "strict")

# One persistent compilation cache per test run, shared by the pytest-xdist workers: a
# program one worker compiled is not compiled again by the other. Set in the configuration,
# not the environment, so the subprocesses tests start (some are killed on purpose, possibly
# while writing an entry) do not share it. Tests that count compilations turn it off
# (tests.helpers.counting_compiles).
_run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
jax.config.update(
    "jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), f"gdopt-tests-{_run}")
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_collection_finish(session):
    # the multi-device checks of tests/test_sharding.py start now, in the background, when a
    # selected test needs them (tests/sharding_workers/background.py)
    from tests.sharding_workers import background

    if not session.config.option.collectonly and any(
        background.FIXTURES & set(getattr(item, "fixturenames", ())) for item in session.items
    ):
        background.start()


def pytest_sessionfinish(session, exitstatus):
    from tests.helpers import write_bad_input_counts
    from tests.sharding_workers import background

    write_bad_input_counts()
    cut = exitstatus == 2 or bool(session.shouldstop or session.shouldfail)  # 2: interrupted
    background.finish(interrupted=cut)
