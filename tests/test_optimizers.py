"""Every named optimizer, from one table (:mod:`tests.registry`).

Parity with the oracles (optax, torch.optim, the authors' packages) on a gradient sequence
with zeros and tiny values; convergence on the parabola and on Rosenbrock (the run is ONE
jitted function per optimizer, also used for the no-recompilation and bfloat16 checks);
dtypes kept; ``jit`` equal to eager; ``vmap`` over the learning rate; no compilation in eager
steps after the first; bad hyperparameters refused by the constructor and by
``set_hyperparams`` with the same message; packability as pinned, and packed runs equal to
leaf-by-leaf ones; optax's state layout; ``get_hyperparams``; keyword extras an optimizer does
not take are ignored; argument kinds as optax's.

Every computation of an oracle runs under ``with oracle():`` (standard dtype promotion); gdopt
itself runs under the strict promotion ``tests/conftest.py`` sets.
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt.problems import ill_conditioned_quadratic, rosenbrock
from tests.helpers import hard_gradient_sequence, make_params, oracle
from tests.registry import CASES, NAMES, REGISTRY, Spec, values

PARABOLA_TOL = 1e-3
ROSENBROCK_TOL = 5e-3
BF16_STEPS = 30
HELPERS = frozenset({"ademamix_alpha_scheduler", "ademamix_beta3_scheduler"})

# make_params' 0-D leaf is weak-typed: strip it, the state would otherwise change type.
PARAMS = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), make_params())
GRADS = hard_gradient_sequence(PARAMS, steps=100)


def parabola(x: jax.Array) -> jax.Array:
    """``sum((x - 1)²)``, minimum 0 at ``(1, ..., 1)`` (gdopt.problems' quadratic, κ = 1)."""
    return 2.0 * ill_conditioned_quadratic(jnp.ravel(x) - 1.0, 1.0)


def rosen(x: jax.Array) -> jax.Array:
    return rosenbrock(jnp.ravel(x))


def objective(p: Any) -> jax.Array:
    """Separable, with a parameter-dependent diagonal Hessian ``2c + 1.2 x²``: a Hutchinson
    estimate of it is exact whatever the random signs (Sophia's parity)."""
    leaves = jax.tree.leaves(p)
    return sum(jnp.sum((0.5 + i) * x**2 + 0.1 * x**4) for i, x in enumerate(leaves))


def _extras(spec: Spec, i: int, params: Any, grad: Any, fn=objective) -> dict:
    given = {"value": values(i, params)["value"], "grad": grad, "value_fn": fn, "obj_fn": fn}
    return {k: given[k] for k in spec.extras}


# ----------------------------------------------------------------------------- coverage


def test_registry_covers_every_optimizer():
    optimizers = set(gdopt.optimizers.__all__) - HELPERS
    missing = sorted(optimizers - set(REGISTRY))
    assert not missing, f"{missing} are in gdopt.optimizers.__all__ but not in tests/registry.py"
    stale = sorted(set(REGISTRY) - optimizers)
    assert not stale, f"registry entries {stale} are not in gdopt.optimizers.__all__"
    assert HELPERS <= set(gdopt.optimizers.__all__), sorted(HELPERS - optimizers)
    for name, spec in REGISTRY.items():
        assert spec.factory is getattr(gdopt.optimizers, name)
        assert isinstance(spec.make(), gdopt.GradientTransformation), name


# ----------------------------------------------------------------------------- parity


def _trajectory(opt, grads, extras) -> list:
    update = jax.jit(lambda g, s, p, kw: opt.update(g, s, p, **kw))
    params, state, out = PARAMS, opt.init(PARAMS), []
    for i, g in enumerate(grads):
        kw = extras(i, params, g)
        callables = {k: v for k, v in kw.items() if callable(v)}
        if callables:  # functions cannot be jit arguments: close over them (same ones each step)
            upd = _bound_update(opt, tuple(sorted(callables.items())))
            u, state = upd(g, state, params, {k: v for k, v in kw.items() if k not in callables})
        else:
            u, state = update(g, state, params, kw)
        params = jax.tree.map(lambda a, b: (a + b).astype(a.dtype), params, u)
        out.append((params, u))
    return out


@functools.cache
def _bound_update(opt, callables: tuple):
    fns = dict(callables)
    return jax.jit(lambda g, s, p, kw: opt.update(g, s, p, **kw, **fns))


def _torch_trajectory(make, grads) -> list:
    import torch

    leaves, treedef = jax.tree.flatten(PARAMS)
    tensors = [torch.tensor(np.asarray(x, np.float32)) for x in leaves]
    opt = make(tensors)
    if hasattr(opt, "train"):
        opt.train()  # schedule-free: gradients are taken at y, the parameters we hold
    out = []
    for g in grads:
        for t, gl in zip(tensors, jax.tree.leaves(g), strict=True):
            t.grad = torch.tensor(np.asarray(gl, np.float32))
        opt.step()
        out.append(treedef.unflatten([t.detach().numpy().copy() for t in tensors]))
    return out


def _assert_close(actual, expected, rtol, atol, what):
    fa, _ = jax.tree_util.tree_flatten_with_path(actual)
    for (path, x), y in zip(fa, jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(
            np.asarray(x, np.float64),
            np.asarray(y, np.float64),
            rtol=rtol,
            atol=atol,
            err_msg=f"{what}, leaf {jax.tree_util.keystr(path)}",
        )


def _assert_updates_close(actual, expected, rtol, what):
    """Updates agree leaf by leaf relative to the leaf's own scale: a tiny leaf's updates
    (where ``eps_root`` matters) are compared as strictly as a large leaf's."""
    fa, _ = jax.tree_util.tree_flatten_with_path(actual)
    for (path, x), y in zip(fa, jax.tree.leaves(expected), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        atol = 10 * rtol * scale if scale > 0 else 1e-7  # an all-zero leaf: rounding only
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"{what}, {path}")


@pytest.mark.parametrize("name,case", CASES, ids=[f"{n}-{c.id}" for n, c in CASES])
def test_parity_with_the_oracle(name, case):
    if case.oracle is None:
        pytest.skip("no oracle")
    spec, ref = REGISTRY[name], case.oracle
    grads = GRADS[: ref.steps]
    ours = _trajectory(spec.factory(**case.kwargs), grads, lambda i, p, g: _extras(spec, i, p, g))
    if ref.torch:
        theirs = _torch_trajectory(ref.make, grads)
        for t, ((p, _), q) in enumerate(zip(ours, theirs, strict=True)):
            _assert_close(p, q, ref.rtol, ref.atol, f"{name}-{case.id} step {t}")
        return

    def ref_extras(i, p, g):
        kw = ref.extras(i, p) if ref.extras is not None else {}
        if "obj_fn" in spec.extras:
            kw["obj_fn"] = objective
        return kw

    with oracle():  # the oracle is not ours to hold to strict promotion
        theirs = _trajectory(ref.make(), grads, ref_extras)
    for t, ((p, u), (q, v)) in enumerate(zip(ours, theirs, strict=True)):
        _assert_close(p, q, ref.rtol, ref.atol, f"{name}-{case.id} step {t}")
        if not spec.difference_updates:
            _assert_updates_close(u, v, 1e-4, f"{name}-{case.id} update {t}")


# ----------------------------------------------------------------------------- convergence


def _solve(spec: Spec, opt, loss, x0, steps):
    def body(carry, _):
        x, state = carry
        value, grad = jax.value_and_grad(loss)(x)
        updates, state = opt.update(
            grad,
            state,
            x,
            **_extras(spec, 0, x, grad, loss)
            | ({"value": value} if "value" in spec.extras else {}),
        )
        return (gdopt.apply_updates(x, updates), state), None

    (x, state), _ = jax.lax.scan(body, (x0, opt.init(x0)), None, length=steps)
    return x, state


@functools.cache
def _compiled(name: str):
    spec = REGISTRY[name]
    opt = spec.make()

    def run(x_parabola, x_rosenbrock, x_bf16):
        return (
            _solve(spec, opt, parabola, x_parabola, spec.steps),
            _solve(spec, opt, rosen, x_rosenbrock, spec.steps),
            _solve(spec, opt, parabola, x_bf16, BF16_STEPS),
        )

    return jax.jit(run)


def _starts(shape, offset=0.0):
    z = jnp.full(shape, offset, jnp.float32)
    return z, -z, z.astype(jnp.bfloat16)


def _judged(spec: Spec, x, state) -> np.ndarray:
    if spec.eval_fn is not None:
        x = spec.eval_fn(state, x)
    return np.ravel(np.asarray(x, np.float64))


@functools.cache
def results(name: str) -> dict:
    spec = REGISTRY[name]
    fn = _compiled(name)
    (xp, sp), (xr, sr), (xb, sb) = fn(*_starts(spec.shape))
    return {
        "fn": fn,
        "parabola": _judged(spec, xp, sp),
        "rosenbrock": _judged(spec, xr, sr),
        "bf16": (xb, sb),
        "f32_state": sp,
    }


def _error(x: np.ndarray) -> float:
    return float(np.max(np.abs(x - 1.0)))


@pytest.mark.parametrize("name", NAMES)
def test_parabola(name):
    x = results(name)["parabola"]
    assert np.all(np.isfinite(x)), f"{name}: non-finite parameters {x}"
    assert _error(x) <= PARABOLA_TOL, f"{name} ended at {x.tolist()} on the parabola"


def _rosenbrock_params():
    out = []
    for name in NAMES:
        reason = REGISTRY[name].rosenbrock_xfail
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _rosenbrock_params())
def test_rosenbrock(name):
    x = results(name)["rosenbrock"]
    assert np.all(np.isfinite(x)), f"{name}: non-finite parameters {x}"
    assert _error(x) <= ROSENBROCK_TOL, f"{name} ended at {x.tolist()} on Rosenbrock"


@pytest.mark.parametrize("name", NAMES)
def test_no_recompilation_for_new_inputs(name):
    # New starting points close to the first ones: RAdam's un-adapted warm-up steps (plain
    # momentum SGD at α = 0.02) diverge from Rosenbrock starts such as (±0.25, ±0.25), as
    # optax's do; that is the method, not a compilation issue.
    fn = results(name)["fn"]
    (xp, _), (xr, _), (xb, _) = fn(*_starts(REGISTRY[name].shape, offset=0.01))
    assert fn._cache_size() == 1, f"{name}: a second call with same-shape inputs recompiled"
    for x in (xp, xr, xb):
        assert bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))), f"{name}: {x}"


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_run_stays_finite_and_moves(name):
    x, state = results(name)["bf16"]
    assert x.dtype == jnp.bfloat16, f"{name}: bfloat16 params became {x.dtype}"
    assert bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))), f"{name}: {x}"
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert bool(jnp.all(jnp.isfinite(leaf.astype(jnp.float32)))), (
                f"{name}: state leaf {jax.tree_util.keystr(path)} is not finite"
            )
    assert bool(jnp.any(x != 0)), f"{name}: the bfloat16 parameters did not move from 0"


@pytest.mark.parametrize("name", NAMES)
def test_float32_state_stays_finite(name):
    for path, leaf in jax.tree_util.tree_flatten_with_path(results(name)["f32_state"])[0]:
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert bool(jnp.all(jnp.isfinite(leaf))), f"{name}: {jax.tree_util.keystr(path)}"


# ----------------------------------------------------------------------------- dtypes, jit, vmap


def _one_step(spec: Spec, opt, x):
    value, grad = jax.value_and_grad(parabola)(x)
    kw = _extras(spec, 0, x, grad, parabola)
    if "value" in kw:
        kw["value"] = value
    updates, state = opt.update(grad, opt.init(x), x, **kw)
    return updates, gdopt.apply_updates(x, updates), state


@pytest.mark.parametrize(
    "dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=["f32", "bf16", "f16"]
)
@pytest.mark.parametrize("name", NAMES)
def test_dtypes_are_kept(name, dtype):
    spec = REGISTRY[name]
    opt = spec.make()
    x0 = jnp.zeros(spec.shape, dtype)
    state0 = jax.eval_shape(opt.init, x0)
    updates, x1, state1 = jax.eval_shape(functools.partial(_one_step, spec, opt), x0)
    assert updates.dtype == dtype and x1.dtype == dtype, f"{name}: {updates.dtype}, {x1.dtype}"
    before = jax.tree_util.tree_flatten_with_path(state0)[0]
    after = jax.tree.leaves(state1)
    bad = [
        f"{jax.tree_util.keystr(p)}: {a.dtype}{a.shape} -> {b.dtype}{b.shape}"
        for (p, a), b in zip(before, after, strict=True)
        if a.dtype != b.dtype or a.shape != b.shape
    ]
    assert not bad, f"{name}: state leaves changed dtype or shape in one step: {bad}"


# The keyword extras a training loop may pass to every optimizer (Polyak's and Sophia's).
LOSS_EXTRAS = ("value", "obj_fn")


def _steps(spec: Spec, opt, n: int, jit: bool, unused_extras: bool = False):
    update = jax.jit(opt.update) if jit and not spec.extras else opt.update
    x, state, out = jnp.zeros(spec.shape), None, []
    state = opt.init(x)
    for i in range(n):
        value, grad = jax.value_and_grad(parabola)(x)
        kw = _extras(spec, i, x, grad, parabola)
        if "value" in kw:
            kw["value"] = value
        if unused_extras:  # the extras this optimizer does not take
            given = {"value": value, "obj_fn": parabola}
            kw |= {k: given[k] for k in LOSS_EXTRAS if k not in spec.extras}
        u, state = update(grad, state, x, **kw)
        x = gdopt.apply_updates(x, u)
        out.append(x)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager_and_unused_extras_are_ignored(name):
    """Four steps eagerly equal four steps in one ``jit``; the jitted run is also given the
    extras of :data:`LOSS_EXTRAS` the optimizer does not take, which must change nothing."""
    spec = REGISTRY[name]
    eager = _steps(spec, spec.make(), 4, jit=False)
    jitted = jax.jit(lambda: _steps(spec, spec.make(), 4, jit=False, unused_extras=True))()
    for t, (a, b) in enumerate(zip(eager, jitted, strict=True)):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7, err_msg=f"{name} step {t}")


_COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: (
        _COMPILES.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
    )
)


@pytest.mark.parametrize("name", NAMES)
def test_eager_steps_compile_nothing_after_the_first(name):
    spec = REGISTRY[name]
    opt = spec.make()
    x = jnp.zeros(spec.shape)
    state = opt.init(x)
    counts = []
    for i in range(5):
        before = len(_COMPILES)
        value, grad = jax.value_and_grad(parabola)(x)
        kw = _extras(spec, i, x, grad, parabola)
        if "value" in kw:
            kw["value"] = value
        u, state = opt.update(grad, state, x, **kw)
        x = gdopt.apply_updates(x, u)
        jax.block_until_ready(x)
        counts.append(len(_COMPILES) - before)
    assert counts[1:] == [0, 0, 0, 0], f"{name}: compilations per eager step {counts}"


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_the_learning_rate(name):
    """The learning rate (polyak_sgd: its cap) may be a traced, vmapped array."""
    spec = REGISTRY[name]
    rates = [0.03, 0.007]

    def run(rate):
        opt = spec.make(**{spec.learning_rate: rate})
        x = jnp.zeros(spec.shape)

        def body(carry, i):
            x, state = carry
            value, grad = jax.value_and_grad(parabola)(x)
            kw = _extras(spec, 0, x, grad, parabola)
            if "value" in kw:
                kw["value"] = value
            updates, state = opt.update(grad, state, x, **kw)
            return (gdopt.apply_updates(x, updates), state), None

        return jax.lax.scan(body, (x, opt.init(x)), jnp.arange(4))[0][0]

    swept = jax.jit(jax.vmap(run))(jnp.asarray(rates, jnp.float32))
    for i, rate in enumerate(rates):
        np.testing.assert_allclose(
            np.asarray(swept[i]),
            np.asarray(run(float(np.float32(rate)))),
            rtol=1e-5,
            atol=1e-7,
            err_msg=f"{name}: vmapped {spec.learning_rate}={rate} differs from the concrete run",
        )


# ----------------------------------------------------------------------------- hyperparameters


BAD = [(name, arg, value) for name in NAMES for arg, value in REGISTRY[name].bad]


@pytest.mark.parametrize("name,arg,bad", BAD, ids=[f"{n}-{a}-{v!r}" for n, a, v in BAD])
def test_bad_hyperparameters_name_the_argument(name, arg, bad):
    spec = REGISTRY[name]
    assert arg in inspect.signature(spec.factory).parameters, f"{name} has no {arg}"
    kwargs = {**spec.run, arg: bad}
    with pytest.raises(ValueError, match=re.escape(arg)) as constructor:
        spec.factory(**kwargs)
    # the same value written into a state is refused with the same message (a constraint
    # between two arguments, such as max_step_size >= min_step_size, is the constructor's)
    state = spec.make().init(jnp.zeros(spec.shape))
    held = gdopt.get_hyperparams(state)
    constraint = spec.factory.__gdopt_spec__.constraints.get(arg)
    try:
        constraint.check(arg, bad) if constraint is not None else None
        own = False  # the constructor refused it for a relation with another argument
    except (ValueError, TypeError):
        own = True
    if own and arg in held and not isinstance(bad, str) and np.size(bad) == np.size(held[arg]):
        with pytest.raises(type(constructor.value), match=re.escape(str(constructor.value))):
            gdopt.set_hyperparams(state, **{arg: bad})


# Integer arguments that fix shapes, loop lengths or PRNG streams: static by design.
STRUCTURAL = {
    "min_dim_size_to_factor",
    "ns_steps",
    "memory_size",
    "warmup_steps",
    "key",
    "seed",
    "print_win_rate_every_n_steps",
}


@pytest.mark.parametrize("name", NAMES)
def test_get_hyperparams_returns_every_numeric_hyperparameter(name):
    spec = REGISTRY[name]
    state = spec.make().init(jnp.zeros(spec.shape))
    held = gdopt.get_hyperparams(state)
    bound = inspect.signature(spec.factory).bind(**spec.run)
    bound.apply_defaults()
    for k, v in bound.arguments.items():
        if k in STRUCTURAL or isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        numeric = isinstance(v, (int, float, np.number))
        seq = isinstance(v, tuple) and v and all(isinstance(x, (int, float)) for x in v)
        schedule = (
            callable(v) and not inspect.isclass(v) and not hasattr(v, "init") and k in spec.run
        )
        if not (numeric or seq or schedule):
            continue
        assert k in held, f"{name}: get_hyperparams lacks {k} (has {sorted(held)})"
        expected = v(jnp.asarray(0, jnp.int32)) if callable(v) else v
        np.testing.assert_allclose(
            np.asarray(held[k], np.float32), np.asarray(expected, np.float32), rtol=1e-6
        )


# Optimizers whose learning rate does not scale the next step: Rprop's sets only the initial
# step sizes Δ_0; L-BFGS's line search picks the step along the direction.
INIT_ONLY_RATE = {"rprop", "lbfgs"}


@pytest.mark.parametrize("name", [n for n in NAMES if n not in INIT_ONLY_RATE])
def test_set_hyperparams_takes_effect_without_recompiling(name):
    spec = REGISTRY[name]
    opt = spec.make(**{spec.learning_rate: 0.01})
    x = jnp.full(spec.shape, 0.5)
    grad = jax.grad(parabola)(x)
    kw = _extras(spec, 0, x, grad, parabola)
    callables = {k: v for k, v in kw.items() if callable(v)}
    step = jax.jit(lambda s, kw: opt.update(grad, s, x, **kw, **callables)[0])
    arrays = {k: v for k, v in kw.items() if k not in callables}
    state = opt.init(x)
    _, state = opt.update(grad, state, x, **kw)  # past the first step (ADOPT's fills v only)
    u1 = step(state, arrays)
    u2 = step(gdopt.set_hyperparams(state, **{spec.learning_rate: 0.02}), arrays)
    assert step._cache_size() == 1, f"{name}: set_hyperparams recompiled the step"
    assert not np.allclose(np.asarray(u1), np.asarray(u2), rtol=1e-3, atol=0.0), (
        f"{name}: the new value had no effect"
    )


@pytest.mark.parametrize("name", NAMES)
def test_argument_kinds_are_optax(name):
    """A call written for optax's function works with gdopt's: each of optax's arguments has
    the same kind (positional-or-keyword, keyword-only), and gdopt's own additions are
    keyword-only. (Names, positions and defaults: ``test_api_consistency.py``.)"""
    import optax
    import optax.contrib

    ref = getattr(optax, name, None) or getattr(optax.contrib, name, None)
    if ref is None:
        pytest.skip(f"optax has no {name}")
    ours = inspect.signature(REGISTRY[name].factory).parameters
    theirs = inspect.signature(ref).parameters
    for arg, p in theirs.items():
        assert arg in ours, f"{name} lacks optax's argument {arg}"
        assert ours[arg].kind == p.kind, f"{name}({arg}): {ours[arg].kind} vs optax's {p.kind}"
    extra = [a for a, q in ours.items() if a not in theirs]
    assert all(ours[a].kind is inspect.Parameter.KEYWORD_ONLY for a in extra), (name, extra)


# ----------------------------------------------------------------------------- packing, layout


@pytest.mark.parametrize("name", NAMES)
def test_packability_is_as_pinned_and_packed_runs_agree(name):
    spec = REGISTRY[name]
    opt = spec.make(**{spec.learning_rate: 0.01}) if spec.learning_rate in spec.run else spec.make()
    assert gdopt.is_packable(opt) == spec.packable, f"{name}: is_packable {not spec.packable}"
    if spec.shape != (2,):
        pytest.skip("shape-specific problem (Muon's matrix)")
    params = {"a": jnp.linspace(-1.0, 1.0, 5), "b": jnp.array([[0.3, -0.7], [1.1, 0.2]])}
    loss = lambda p: objective(p) + parabola(p["a"])  # noqa: E731
    packed_opt = gdopt.packed_optimizer(opt)

    def steps(opt, loss, x):  # 6 steps in a loop: one compiled body (L-BFGS's is large)
        def body(_, carry):
            x, s = carry
            value, g = jax.value_and_grad(loss)(x)
            kw = {"value": value, "grad": g, "value_fn": loss, "obj_fn": loss}
            u, s = opt.update(g, s, x, **{k: kw[k] for k in spec.extras})
            return gdopt.apply_updates(x, u), s

        return jax.lax.fori_loop(0, 6, body, (x, opt.init(x)))[0]

    def tree_run(p):
        return steps(opt, loss, p)

    def packed_run(p):
        return gdopt.unpack(steps(packed_opt, lambda q: loss(gdopt.unpack(q)), gdopt.pack(p)))

    a, b = jax.jit(tree_run)(params), jax.jit(packed_run)(params)
    _assert_close(a, b, 2e-5, 1e-6, f"{name}: packed vs leaf by leaf")


def _layout(tree: Any) -> list:
    """Key paths, node class names and leaf shapes: what code reading a state relies on."""
    import optax

    def is_masked_node(x):
        return type(x).__name__ == "MaskedNode"

    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: x is None or is_masked_node(x)
    )
    out = []
    for path, leaf in flat:
        shape = None if leaf is None or is_masked_node(leaf) else tuple(np.shape(leaf))
        out.append((jax.tree_util.keystr(path), shape))
    del optax
    return out


def _node_types(tree: Any) -> list[str]:
    out = []

    def visit(x):
        if type(x).__name__ == "MaskedNode":  # optax's stand-in for gdopt's None
            return
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            out.append(type(x).__name__)
            for v in x:
                visit(v)
        elif isinstance(x, (tuple, list)):
            for v in x:
                visit(v)
        elif isinstance(x, dict):
            for k in sorted(x):
                visit(x[k])

    visit(tree)
    return out


# Deliberate differences from optax's state, with the reason.
LAYOUT_EXTRA = {  # fields gdopt has and optax does not
    "lbfgs": {
        "[0].identity_scale": "the scale of the initial inverse Hessian γ, kept because gdopt "
        "drops curvature pairs with s·y <= 0 and γ cannot be recovered from the memory then"
    },
}
LAYOUT_MISSING = {  # fields optax has and gdopt does not
    "muon": {
        ".inner_states['muon'].inner_state[0].ns_coeffs": "the Newton-Schulz coefficients are a "
        "hyperparameter: muon keeps them in state.hyperparams"
    },
}
LAYOUT_DIFFERENT = {  # same path, another leaf
    "noisy_sgd": {
        "[0].rng_key": "gdopt keeps a raw uint32[2] PRNG key (an int seed becomes "
        "jax.random.PRNGKey(seed)); optax keeps a typed key"
    },
}


@pytest.mark.parametrize("name", [n for n in NAMES if REGISTRY[n].layout])
def test_state_layout_is_optax(name):
    """Code written against optax's state reads gdopt's unchanged: same chain positions,
    NamedTuple classes, field names and leaf shapes (optax's MaskedNode is gdopt's None)."""
    import optax
    import optax.contrib

    spec = REGISTRY[name]
    kwargs = spec.layout_kwargs if spec.layout_kwargs is not None else {spec.learning_rate: 0.01}
    x = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    ours = spec.factory(**kwargs).init(x)
    ref_fn = getattr(optax, spec.layout, None) or getattr(optax.contrib, spec.layout)
    with oracle():
        theirs = ref_fn(**kwargs).init(x)
    assert isinstance(ours, gdopt.HyperparamsState)
    inner = ours.inner_state
    assert _node_types(inner) == _node_types(theirs), name
    ours_layout = [e for e in _layout(inner) if e[0] not in LAYOUT_EXTRA.get(name, {})]
    theirs_layout = [e for e in _layout(theirs) if e[0] not in LAYOUT_MISSING.get(name, {})]
    for path, reason in LAYOUT_DIFFERENT.get(name, {}).items():
        ours_layout = [e for e in ours_layout if e[0] != path]
        theirs_layout = [e for e in theirs_layout if e[0] != path]
        assert reason
    assert ours_layout == theirs_layout, name
    # optax-style access works on the named optimizer's state itself
    assert len(ours) == len(inner) if isinstance(inner, tuple) else True


# ----------------------------------------------------------------------------- inject_hyperparams


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "lion", "rmsprop", "radam"])
def test_inject_hyperparams_over_a_named_optimizer_follows_its_schedule_and_writes(name):
    """``inject_hyperparams(gdopt.X)(learning_rate=schedule)`` advances the schedule (optax's
    semantics), its inner state has the chain's layout, and a write to
    ``state.hyperparams`` takes effect at the next step."""
    schedule = gdopt.linear_schedule(0.1, 0.0, 10)
    injected = gdopt.inject_hyperparams(getattr(gdopt, name))(learning_rate=schedule)
    direct = getattr(gdopt, name)(learning_rate=schedule)
    x = jnp.full((3,), 0.5)
    si, sd = injected.init(x), direct.init(x)
    assert jax.tree.structure(si.inner_state) == jax.tree.structure(sd.inner_state)
    for _ in range(4):
        g = jax.grad(parabola)(x)
        ui, si = injected.update(g, si, x)
        ud, sd = direct.update(g, sd, x)
        np.testing.assert_allclose(ui, ud, rtol=1e-6)
    np.testing.assert_allclose(
        float(si.hyperparams["learning_rate"]), float(schedule(3)), rtol=1e-6
    )
    constant = gdopt.inject_hyperparams(getattr(gdopt, name))(learning_rate=0.1)
    s = constant.init(x)
    g = jax.grad(parabola)(x)
    u1, _ = constant.update(g, s, x)
    s.hyperparams["learning_rate"] = 0.05
    u2, _ = constant.update(g, s, x)
    np.testing.assert_allclose(np.asarray(u2), 0.5 * np.asarray(u1), rtol=1e-5)
