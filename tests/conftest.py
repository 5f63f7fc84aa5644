"""Shared test settings: float32, CPU, deterministic keys, strict dtype promotion.

gdopt makes every dtype promotion explicit, so the suite runs under JAX's strict promotion
and an implicit cast in gdopt fails a test; code that is not gdopt's (optax, torch and
hand-written references) runs under ``with tests.helpers.oracle():``.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402  (after the platform settings)

jax.config.update("jax_numpy_dtype_promotion", "strict")
