"""Shared test utilities: a fixed pytree, fixed gradient sequences, trajectory runners.

Parity tests feed the *same precomputed gradient sequence* (independent of the params) to
gdopt and to the reference, so tiny float32 differences are not amplified by a chaotic
feedback loop, and compare every step of the parameter trajectory.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def make_params(seed: int = 0) -> dict:
    """A small pytree with several leaves, shapes and nesting (a dict, a list, a scalar)."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {
        "dense": {"w": jax.random.normal(k1, (4, 3)), "b": jax.random.normal(k2, (3,))},
        "layers": [jax.random.normal(k3, (5,)), jax.random.normal(k4, (2, 2, 2))],
        "scale": jnp.asarray(0.7, jnp.float32),
    }


def gradient_sequence(params: Any, steps: int = 100, seed: int = 1, scale: float = 1.0) -> list:
    """``steps`` pseudo-random gradients with the structure of ``params`` (fixed keys).

    Memoized on the params' structure and shapes: many test modules use the same sequence.
    """
    leaves, treedef = jax.tree.flatten(params)
    shapes = tuple(tuple(jnp.shape(x)) for x in leaves)
    return list(_gradient_sequence(treedef, shapes, steps, seed, scale))


@functools.lru_cache(maxsize=32)
def _gradient_sequence(treedef, shapes, steps, seed, scale) -> tuple:
    keys = jax.random.split(jax.random.PRNGKey(seed), steps)
    leaves = [jnp.zeros(s) for s in shapes]
    out = []
    for k in keys:
        ks = jax.random.split(k, len(leaves))
        out.append(
            treedef.unflatten(
                [
                    scale * jax.random.normal(kk, jnp.shape(x))
                    for kk, x in zip(ks, leaves, strict=True)
                ]
            )
        )
    return tuple(out)


def run_trajectory(
    opt: Any,
    params: Any,
    grads: list,
    apply: Callable[[Any, Any], Any] | None = None,
    jit: bool = True,
    extra: Callable[[int, Any], dict] | None = None,
) -> list:
    """Apply ``opt`` (anything with ``init``/``update``) along ``grads``; params after each step.

    ``extra(i, params)`` may return keyword arguments for ``update`` (e.g. ``value``).
    """
    if apply is None:
        apply = lambda p, u: jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u)
    update = jax.jit(opt.update) if jit else opt.update
    state = opt.init(params)
    traj = []
    for i, g in enumerate(grads):
        kw = extra(i, params) if extra is not None else {}
        updates, state = update(g, state, params, **kw)
        params = apply(params, updates)
        traj.append(params)
    return traj


def assert_trajectories_close(
    actual: list, expected: list, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """Every step of two trajectories agrees leafwise (the message names step and key path)."""
    assert len(actual) == len(expected)
    for step, (a, e) in enumerate(zip(actual, expected, strict=True)):
        fa, _ = jax.tree_util.tree_flatten_with_path(a)
        fe = jax.tree.leaves(e)
        assert len(fa) == len(fe)
        for (path, x), y in zip(fa, fe, strict=True):
            np.testing.assert_allclose(
                np.asarray(x, np.float64),
                np.asarray(y, np.float64),
                rtol=rtol,
                atol=atol,
                err_msg=f"step {step}, leaf {jax.tree_util.keystr(path)}",
            )


def hard_gradient_sequence(params: Any, steps: int = 100, seed: int = 2) -> list:
    """A gradient sequence that exercises the stability constants (fixed keys, memoized).

    Built on :func:`gradient_sequence` (the first step is left as it is: the
    learning-rate-free estimators start from its correlation), then:

    * about a fifth of the coordinates of every later step are exactly zero, so a dropped
      ``eps`` gives ``0 / 0``;
    * one leaf (the last in flattening order) stays tiny (1e-10) at every step, so its second
      moments are ~1e-20 and ``eps_root`` dominates their square root: dropping it changes
      that leaf's updates several-fold;
    * one whole leaf (the first) is zero at steps 1 to 5.
    """
    leaves, treedef = jax.tree.flatten(params)
    shapes = tuple(tuple(jnp.shape(x)) for x in leaves)
    return list(_hard_gradient_sequence(treedef, shapes, steps, seed))


@functools.lru_cache(maxsize=8)
def _hard_gradient_sequence(treedef, shapes, steps, seed) -> tuple:
    base = _gradient_sequence(treedef, shapes, steps, 1, 1.0)
    rng = np.random.default_rng(seed)
    out = []
    for t, g in enumerate(base):
        leaves = [np.array(x, np.float32) for x in jax.tree.leaves(g)]
        for i, x in enumerate(leaves):
            if t > 0:
                x[rng.random(x.shape) < 0.2] = 0.0
            if i == len(leaves) - 1:
                x *= 1e-10
            if i == 0 and 1 <= t <= 5:
                x[...] = 0.0
        out.append(treedef.unflatten([jnp.asarray(x) for x in leaves]))
    return tuple(out)


def oracle():
    """A context for code that is not gdopt's (optax, hand-written references): the suite runs
    under strict dtype promotion (``tests/conftest.py``), which holds gdopt to explicit
    casts; an oracle keeps JAX's standard promotion.

    >>> with oracle():
    ...     pass
    """
    return jax.numpy_dtype_promotion("standard")


@contextlib.contextmanager
def persistent_cache_off():
    """JAX's persistent compilation cache off for the block (the suite turns it on in
    ``tests/conftest.py``), for tests that count compilations.

    >>> with persistent_cache_off():
    ...     pass
    """
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", before)


_BACKEND_COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: (
        _BACKEND_COMPILES.append(event)
        if event == "/jax/core/compile/backend_compile_duration"
        else None
    )
)


class counting_compiles:  # noqa: N801  (used as a context manager, like a function)
    """Counts the XLA backend compilations run inside the block, with the persistent cache
    off (a program found there would not count, hiding a recompilation).

    >>> with counting_compiles() as c:
    ...     pass
    >>> c.count
    0
    """

    def __enter__(self) -> counting_compiles:
        self._cache = persistent_cache_off()
        self._cache.__enter__()
        self._before = len(_BACKEND_COMPILES)
        self.count = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.count = len(_BACKEND_COMPILES) - self._before
        self._cache.__exit__(*exc)


_BAD_INPUTS: dict[str, set[str]] = {}


def bad_inputs(test_file: str) -> set[str]:
    """The set a test file adds a description of each distinct bad input it tries to; the
    counts are written at the end of the run to the file named by ``GDOPT_COUNT_BAD_INPUTS``
    (``tests/conftest.py``), one line per test file and worker.

    >>> bad_inputs("tests/example.py").add("lr=-1")
    """
    return _BAD_INPUTS.setdefault(test_file, set())


def write_bad_input_counts() -> None:
    """Append ``<test file> <count>`` lines to ``$GDOPT_COUNT_BAD_INPUTS`` if it is set."""
    target = os.environ.get("GDOPT_COUNT_BAD_INPUTS")
    if target:
        with open(target, "a") as f:
            for name, seen in sorted(_BAD_INPUTS.items()):
                if not name.startswith("tests/example"):
                    f.write(f"{name} {len(seen)}\n")


def warning_filters() -> list[str]:
    """The suite's warning filters: ``filterwarnings`` of ``[tool.pytest.ini_options]`` in
    ``pyproject.toml``, in order (``"error"`` first, then the documented third-party ignores;
    a later entry takes precedence, as in pytest).

    >>> warning_filters()[0]
    'error'
    """
    import tomllib
    from pathlib import Path

    with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["tool"]["pytest"]["ini_options"]["filterwarnings"])


def pythonwarnings() -> str:
    """:func:`warning_filters` as a ``PYTHONWARNINGS`` value, for the subprocesses tests start
    (every warning there an error too, but the same third-party ones ignored).

    ``PYTHONWARNINGS`` matches a message by its start and a module by its whole name, both
    literally, where pytest reads them as regular expressions (a module name by its start):
    an ignore entry must therefore be literal text (dots and spaces allowed), which this
    checks, and name a whole module.

    >>> pythonwarnings().split(",")[0]
    'error'
    """
    entries = warning_filters()
    for entry in entries:
        fields = [*entry.split(":"), "", "", ""]
        special = set("\\^$*+?{}[]|(),") & set(fields[1] + fields[3])  # message, module
        if special:
            raise ValueError(f"filterwarnings entry {entry!r} is not literal text: {special}")
    return ",".join(entries)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess a test starts: this one's, on the CPU, with the suite's
    warning filters (:func:`pythonwarnings`), so a warning there fails the test as one here
    would, plus ``extra``.

    >>> subprocess_env(XLA_FLAGS="")["JAX_PLATFORMS"]
    'cpu'
    """
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONWARNINGS": pythonwarnings(), **extra}


def lsq_problem(n: int = 128, d: int = 4, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """A noisy least-squares problem ``(x, y)``: ``y = x @ (1, ..., d) - 0.5 + noise``."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(k1, (n, d))
    y = x @ jnp.arange(1.0, d + 1.0) - 0.5 + 0.3 * jax.random.normal(k2, (n,))
    return x, y


def lsq_loss(p, batch):
    """The mean squared error of the linear model ``{"w", "b"}`` on ``batch = (x, y)``."""
    x, y = batch
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


def lsq_params(d: int = 4) -> dict:
    """Zero parameters of the linear model for ``d`` features."""
    return {"w": jnp.zeros(d), "b": jnp.zeros(())}
