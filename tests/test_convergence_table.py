"""Every named optimizer, one table: does it actually minimise things?

Each entry of ``TABLE`` gives one optimizer of ``gdopt.optimizers.__all__`` (plus
``gdopt.lbfgs``) the hyperparameters, keyword extras and step budget with which it
must take

* the parabola ``sum((x - 1)²)`` in 2-D from ``(0, 0)`` to within ``PARABOLA_TOL`` of ``(1, 1)``;
* Rosenbrock's function ``(1 - x)² + 100 (y - x²)²`` from ``(0, 0)`` to within
  ``ROSENBROCK_TOL`` of ``(1, 1)``.

Both runs (and a short bfloat16 run) are ONE jit-compiled function per optimizer, each run a
``lax.scan`` of a fixed number of steps. The same compiled function is then called with new
starting points: it must not recompile. Where an optimizer cannot meet the tolerance in the
budget, the entry says why and the test is a strict ``xfail`` (it fails loudly if the
optimizer starts to succeed, so the table stays honest).

The table must cover every optimizer: a new name in ``gdopt.optimizers.__all__`` without an
entry here fails ``test_table_covers_every_optimizer``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt

PARABOLA_TOL = 1e-3
ROSENBROCK_TOL = 5e-3
BF16_STEPS = 30
N = 10_000  # the default step budget

# Names in gdopt.optimizers.__all__ that are not optimizers.
HELPERS = frozenset({"ademamix_alpha_scheduler", "ademamix_beta3_scheduler"})


def parabola(x: jax.Array) -> jax.Array:
    """``sum((x - 1)²)``, minimum 0 at ``(1, 1)``."""
    return jnp.sum((jnp.ravel(x) - 1.0) ** 2)


def rosenbrock(x: jax.Array) -> jax.Array:
    """``(1 - x)² + 100 (y - x²)²``, minimum 0 at ``(1, 1)``."""
    x = jnp.ravel(x)
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


class Entry(NamedTuple):
    """How one optimizer is run.

    Attributes:
      factory: the optimizer function.
      kwargs: its arguments.
      extras: keyword extras ``update`` needs (``value``, ``grad``, ``value_fn``, ``obj_fn``).
      steps: the step budget of each run.
      shape: the parameters' shape (2 numbers).
      eval_fn: ``eval_fn(state, params)``, the point to judge (schedule-free evaluates at x).
      rosenbrock_xfail: why the Rosenbrock run is expected to miss the tolerance.
    """

    factory: Callable[..., Any]
    kwargs: dict
    extras: tuple = ()
    steps: int = N
    shape: tuple = (2,)
    eval_fn: Callable[[Any, Any], Any] | None = None
    rosenbrock_xfail: str | None = None

    def make(self) -> gdopt.GradientTransformation:
        return self.factory(**self.kwargs)


def _e(factory, *, extras=(), steps=N, shape=(2,), eval_fn=None, rosenbrock_xfail=None, **kw):
    return Entry(factory, kw, extras, steps, shape, eval_fn, rosenbrock_xfail)


def cos(peak: float, steps: int = N) -> gdopt.Schedule:
    return gdopt.cosine_decay_schedule(peak, steps)


_SIGN_SGD_XFAIL = (
    "signSGD moves every coordinate by exactly ±α per step, so in Rosenbrock's curved valley "
    "it zig-zags across the floor: in 10k steps with a cosine decay from 3e-4 it ends ~1.4e-2 "
    "from (1, 1); cosine or quadratic decays from peaks of 3e-4 to 6e-4, and a constant "
    "3e-4, all end between 8e-3 and 0.25 away, above the 5e-3 tolerance. Signum, its "
    "momentum version, meets it."
)

TABLE: dict[str, Entry] = {
    # classic. Plain gradient descent is stable on Rosenbrock only for α < 2/λ_max ≈ 2e-3.
    "sgd": _e(gdopt.sgd, learning_rate=1.5e-3),
    "momentum": _e(gdopt.momentum, learning_rate=1e-3, momentum=0.9),
    "noisy_sgd": _e(gdopt.noisy_sgd, learning_rate=1.5e-3, eta=1e-4, key=0),
    "sign_sgd": _e(gdopt.sign_sgd, learning_rate=cos(3e-4), rosenbrock_xfail=_SIGN_SGD_XFAIL),
    "signum": _e(gdopt.signum, learning_rate=cos(1e-2)),
    "rprop": _e(gdopt.rprop, learning_rate=1e-3),
    # adaptive
    "adam": _e(gdopt.adam, learning_rate=cos(0.02)),
    "adamw": _e(gdopt.adamw, learning_rate=cos(0.02), weight_decay=0.0),
    "nadam": _e(gdopt.nadam, learning_rate=cos(0.02)),
    "nadamw": _e(gdopt.nadamw, learning_rate=cos(0.02), weight_decay=0.0),
    "radam": _e(gdopt.radam, learning_rate=cos(0.02)),
    "amsgrad": _e(gdopt.amsgrad, learning_rate=cos(0.02)),
    "adamax": _e(gdopt.adamax, learning_rate=cos(0.02)),
    "adamaxw": _e(gdopt.adamaxw, learning_rate=cos(0.02), weight_decay=0.0),
    "adabelief": _e(gdopt.adabelief, learning_rate=cos(0.02)),
    "yogi": _e(gdopt.yogi, learning_rate=cos(0.02)),
    "rmsprop": _e(gdopt.rmsprop, learning_rate=cos(1e-2)),
    "adagrad": _e(gdopt.adagrad, learning_rate=0.5),
    # AdaDelta's own step (α = 1) is unstable on Rosenbrock (optax's too); a decaying α is not
    "adadelta": _e(gdopt.adadelta, learning_rate=cos(0.3)),
    # large-batch / layer-wise / memory-lean
    "lamb": _e(gdopt.lamb, learning_rate=cos(0.01)),
    "lars": _e(gdopt.lars, learning_rate=cos(1.0), trust_coefficient=0.01),
    "novograd": _e(gdopt.novograd, learning_rate=cos(0.01)),
    "fromage": _e(gdopt.fromage, learning_rate=cos(0.01)),
    "sm3": _e(gdopt.sm3, learning_rate=cos(0.2)),
    "adafactor": _e(gdopt.adafactor, learning_rate=cos(0.02), multiply_by_parameter_scale=False),
    "lion": _e(gdopt.lion, learning_rate=cos(3e-3), weight_decay=0.0),
    # modern. Muon's parameters are a 2 × 1 matrix, so the Newton-Schulz branch is exercised
    # (a 1-D vector would go to its Adam fallback).
    "muon": _e(gdopt.muon, learning_rate=cos(0.01), shape=(2, 1)),
    "adopt": _e(gdopt.adopt, learning_rate=cos(0.02)),
    "ademamix": _e(
        gdopt.ademamix,
        learning_rate=cos(0.02),
        b3=gdopt.ademamix_beta3_scheduler(0.9, 0.999, N // 2),
        alpha=gdopt.ademamix_alpha_scheduler(2.0, N // 2),
    ),
    # schedule-free averaging converges like 1/t; β = 0.5 keeps the averaged point close
    "schedule_free_sgd": _e(
        gdopt.schedule_free_sgd,
        learning_rate=2e-3,
        b1=0.5,
        eval_fn=gdopt.schedule_free_eval_params,
    ),
    "schedule_free_adamw": _e(
        gdopt.schedule_free_adamw,
        learning_rate=0.01,
        warmup_steps=100,
        eval_fn=gdopt.schedule_free_eval_params,
    ),
    # learning-rate-free: the learning rate is the multiplier's shape (decay from 1)
    "prodigy": _e(gdopt.prodigy, learning_rate=cos(1.0)),
    "dadapt_adamw": _e(gdopt.dadapt_adamw, learning_rate=cos(1.0)),
    # second order / Polyak / line search
    "sophia": _e(gdopt.sophia, learning_rate=cos(0.01), weight_decay=0.0, extras=("obj_fn",)),
    "polyak_sgd": _e(gdopt.polyak_sgd, extras=("value",)),
    "lbfgs": _e(gdopt.lbfgs, extras=("value", "grad", "value_fn"), steps=100),
}

NAMES = sorted(TABLE)


# ----------------------------------------------------------------------------- the runs


def _solve(entry: Entry, opt, loss, x0, steps):
    """``steps`` steps of ``opt`` on ``loss`` from ``x0``: (final params, final state)."""

    def body(carry, _):
        x, state = carry
        value, grad = jax.value_and_grad(loss)(x)
        given = {"value": value, "grad": grad, "value_fn": loss, "obj_fn": loss}
        updates, state = opt.update(grad, state, x, **{k: given[k] for k in entry.extras})
        return (gdopt.apply_updates(x, updates), state), None

    (x, state), _ = jax.lax.scan(body, (x0, opt.init(x0)), None, length=steps)
    return x, state


def _compiled(entry: Entry):
    """One jitted function: the parabola, Rosenbrock and short bfloat16 runs of ``entry``."""
    opt = entry.make()

    def run(x_parabola, x_rosenbrock, x_bf16):
        return (
            _solve(entry, opt, parabola, x_parabola, entry.steps),
            _solve(entry, opt, rosenbrock, x_rosenbrock, entry.steps),
            _solve(entry, opt, parabola, x_bf16, BF16_STEPS),
        )

    return jax.jit(run)


def _starts(shape, offset=0.0):
    z = jnp.full(shape, offset, jnp.float32)
    return z, -z, z.astype(jnp.bfloat16)


def _judged(entry: Entry, x, state) -> np.ndarray:
    if entry.eval_fn is not None:
        x = entry.eval_fn(state, x)
    return np.ravel(np.asarray(x, np.float64))


@functools.cache
def results(name: str) -> dict:
    """Run ``name``'s compiled function once; the module's tests share the outcome."""
    entry = TABLE[name]
    fn = _compiled(entry)
    (xp, sp), (xr, sr), (xb, sb) = fn(*_starts(entry.shape))
    return {
        "fn": fn,
        "parabola": _judged(entry, xp, sp),
        "rosenbrock": _judged(entry, xr, sr),
        "bf16": (xb, sb),
        "f32_state": sp,
    }


def _error(x: np.ndarray) -> float:
    return float(np.max(np.abs(x - 1.0)))


# ----------------------------------------------------------------------------- tests


def test_table_covers_every_optimizer():
    optimizers = set(gdopt.optimizers.__all__) - HELPERS
    missing = sorted(optimizers - set(TABLE))
    assert not missing, (
        f"optimizer(s) {missing} are in gdopt.optimizers.__all__ but not in the convergence "
        "table: add an entry (or, if it is not an optimizer, add it to HELPERS)."
    )
    stale = sorted(set(TABLE) - optimizers - {"lbfgs"})
    assert not stale, f"table entries {stale} are no longer in gdopt.optimizers.__all__."
    assert HELPERS <= set(gdopt.optimizers.__all__), sorted(HELPERS - set(gdopt.optimizers.__all__))


def test_table_factories_are_the_public_functions():
    for name, entry in TABLE.items():
        assert entry.factory is getattr(gdopt, name), name
        assert isinstance(entry.make(), gdopt.GradientTransformation), name


@pytest.mark.parametrize("name", NAMES)
def test_parabola(name):
    x = results(name)["parabola"]
    assert np.all(np.isfinite(x)), f"{name}: non-finite parameters {x}"
    assert _error(x) <= PARABOLA_TOL, (
        f"{name} ended at {x.tolist()} after {TABLE[name].steps} steps on the parabola, "
        f"{_error(x):.3g} from (1, 1) (tolerance {PARABOLA_TOL})."
    )


def _rosenbrock_params():
    out = []
    for name in NAMES:
        reason = TABLE[name].rosenbrock_xfail
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _rosenbrock_params())
def test_rosenbrock(name):
    x = results(name)["rosenbrock"]
    assert np.all(np.isfinite(x)), f"{name}: non-finite parameters {x}"
    assert _error(x) <= ROSENBROCK_TOL, (
        f"{name} ended at {x.tolist()} after {TABLE[name].steps} steps on Rosenbrock, "
        f"{_error(x):.3g} from (1, 1) (tolerance {ROSENBROCK_TOL})."
    )


@pytest.mark.parametrize("name", NAMES)
def test_no_recompilation_for_new_inputs(name):
    # New starting points close to the first ones: RAdam's un-adapted warm-up steps (plain
    # momentum SGD at α = 0.02) diverge from Rosenbrock starts such as (±0.25, ±0.25), as
    # optax's do; that is the method, not a compilation issue.
    r = results(name)
    fn = r["fn"]
    (xp, _), (xr, _), (xb, _) = fn(*_starts(TABLE[name].shape, offset=0.01))
    assert fn._cache_size() == 1, f"{name}: a second call with same-shape inputs recompiled"
    for x in (xp, xr, xb):
        assert bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))), name


def _dtype_shape(x: Any) -> tuple:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x.dtype, x.shape
    x = jnp.asarray(x)
    return x.dtype, x.shape


def _dtype_mismatches(before: Any, after: Any) -> list[str]:
    flat, _ = jax.tree_util.tree_flatten_with_path(before)
    out = []
    for (path, a), b in zip(flat, jax.tree.leaves(after), strict=True):
        (da, sa), (db, sb) = _dtype_shape(a), _dtype_shape(b)
        if da != db or sa != sb:
            out.append(f"{jax.tree_util.keystr(path)}: {da}{sa} -> {db}{sb}")
    return out


def _one_step_shapes(entry: Entry, dtype) -> tuple:
    """Abstract shapes of (params, state) before and after one update (tracing only)."""
    opt = entry.make()
    x0 = jnp.zeros(entry.shape, dtype)
    state0 = opt.init(x0)

    def step(x, state):
        value, grad = jax.value_and_grad(parabola)(x)
        given = {"value": value, "grad": grad, "value_fn": parabola, "obj_fn": parabola}
        updates, state = opt.update(grad, state, x, **{k: given[k] for k in entry.extras})
        return updates, gdopt.apply_updates(x, updates), state

    updates, x1, state1 = jax.eval_shape(step, x0, state0)
    return x0, state0, updates, x1, state1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_dtypes_are_kept(name, dtype):
    entry = TABLE[name]
    x0, state0, updates, x1, state1 = _one_step_shapes(entry, dtype)
    assert updates.dtype == dtype, f"{name}: {dtype.__name__} grads gave {updates.dtype} updates"
    assert x1.dtype == dtype, f"{name}: {dtype.__name__} params became {x1.dtype}"
    bad = _dtype_mismatches(state0, state1)
    assert not bad, f"{name}: state leaves changed dtype or shape in one step: {bad}"


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_run_stays_finite(name):
    x, state = results(name)["bf16"]
    assert x.dtype == jnp.bfloat16, f"{name}: bfloat16 params became {x.dtype}"
    assert bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))), f"{name}: {x}"
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert bool(jnp.all(jnp.isfinite(leaf.astype(jnp.float32)))), (
                f"{name}: state leaf {jax.tree_util.keystr(path)} is not finite after "
                f"{BF16_STEPS} bfloat16 steps"
            )
    assert bool(jnp.any(x != 0)), f"{name}: the bfloat16 parameters did not move from 0"


@pytest.mark.parametrize("name", NAMES)
def test_float32_state_stays_finite(name):
    state = results(name)["f32_state"]
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert bool(jnp.all(jnp.isfinite(leaf))), (
                f"{name}: state leaf {jax.tree_util.keystr(path)} is not finite after "
                f"{TABLE[name].steps} float32 steps on the parabola"
            )


# ----------------------------------------------------------------------------- invariances


def test_polyak_step_is_invariant_to_the_scale_of_the_loss():
    """Polyak's step ``(f - f*) / ||g||² · g`` is unchanged when ``f`` is multiplied by ``c``.

    So ``polyak_sgd`` (with a cap ``α_max`` that does not bind) must follow the same
    trajectory on ``c · sum((x - 1)²)`` for every ``c > 0``: from (0, 0) each step halves the
    distance to (1, 1), whatever ``c``.
    """
    opt = gdopt.polyak_sgd(max_learning_rate=1e8)

    def trajectory(c):
        loss = lambda x: c * parabola(x)
        state = opt.init(jnp.zeros(2))

        def body(carry, _):
            x, state = carry
            value, grad = jax.value_and_grad(loss)(x)
            updates, state = opt.update(grad, state, x, value=value)
            x = gdopt.apply_updates(x, updates)
            return (x, state), x

        return jax.lax.scan(body, (jnp.zeros(2), state), None, length=12)[1]

    expected = 1.0 - 0.5 ** np.arange(1, 13)
    for c in (1.0, 1e-4):
        traj = np.asarray(jax.jit(trajectory, static_argnums=0)(c))
        np.testing.assert_allclose(
            traj[:, 0], expected, rtol=1e-5, err_msg=f"polyak_sgd on {c} · parabola"
        )
