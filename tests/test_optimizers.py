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
from tests.helpers import (
    bad_inputs,
    counting_compiles,
    hard_gradient_sequence,
    make_params,
    oracle,
)
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


@pytest.mark.parametrize("name", NAMES)
def test_eager_steps_compile_nothing_after_the_first(name):
    spec = REGISTRY[name]
    opt = spec.make()
    x = jnp.zeros(spec.shape)
    state = opt.init(x)
    counts = []
    for i in range(5):
        with counting_compiles() as c:
            value, grad = jax.value_and_grad(parabola)(x)
            kw = _extras(spec, i, x, grad, parabola)
            if "value" in kw:
                kw["value"] = value
            u, state = opt.update(grad, state, x, **kw)
            x = gdopt.apply_updates(x, u)
            jax.block_until_ready(x)
        counts.append(c.count)
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


# ----------------------------------------------------------------------------- property battery
#
# Random pytrees (nested dicts, lists, tuples and NamedTuples; scalars, zero-size arrays;
# float32/bfloat16/float16 leaves, one dtype per tree or mixed) through every optimizer of the
# registry: the structure and every dtype are kept (state included, over two steps), an update
# is deterministic and ``jit`` equals eager. Random invalid inputs (hyperparameters,
# apply_updates arguments, states of another optimizer) raise ValueError/TypeError naming the
# problem. ``BAD_INPUTS`` collects the distinct bad inputs tried (set GDOPT_COUNT_BAD_INPUTS to
# a file to have their number written there).

from typing import NamedTuple  # noqa: E402

import hypothesis  # noqa: E402
import hypothesis.strategies as st  # noqa: E402


class _Pair(NamedTuple):
    first: Any
    second: Any


_LEAF_DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
_LEAF_SHAPES = st.sampled_from([(), (0,), (1,), (3,), (2, 3), (2, 0)])


@st.composite
def _pytrees(draw, max_leaves: int = 5):
    """A random nested container of 1 to ``max_leaves`` float arrays and its leaves' seed."""
    mixed = draw(st.booleans())
    dtype = draw(st.sampled_from(_LEAF_DTYPES))
    count = [0]

    def leaf():
        count[0] += 1
        d = draw(st.sampled_from(_LEAF_DTYPES)) if mixed else dtype
        shape = draw(_LEAF_SHAPES)
        return jax.ShapeDtypeStruct(shape, d)

    def node(depth: int):
        if depth >= 2 or count[0] >= max_leaves or draw(st.integers(0, 2)) == 0:
            return leaf()
        kind = draw(st.sampled_from(["dict", "list", "tuple", "namedtuple"]))
        width = draw(st.integers(1, 3))
        children = [node(depth + 1) for _ in range(width)]
        if kind == "dict":
            return {f"k{i}": c for i, c in enumerate(children)}
        if kind == "list":
            return children
        if kind == "tuple":
            return tuple(children)
        return _Pair(children[0], children[-1])

    shapes = node(0)
    return shapes, draw(st.integers(0, 2**16))


def _materialise(shapes: Any, seed: int) -> Any:
    leaves, treedef = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.PRNGKey(seed), max(len(leaves), 1))
    arrays = [
        (0.5 + jax.random.normal(k, s.shape, jnp.float32)).astype(s.dtype)
        for k, s in zip(keys, leaves, strict=False)
    ]
    return jax.tree.unflatten(treedef, arrays)


def _battery_objective(p: Any) -> jax.Array:
    """:func:`objective` with every leaf's term in float32 (mixed-dtype trees)."""
    leaves = jax.tree.leaves(p)
    terms = [
        jnp.sum((0.5 + i) * x.astype(jnp.float32) ** 2 + 0.1 * x.astype(jnp.float32) ** 4)
        for i, x in enumerate(leaves)
    ]
    return sum(terms, jnp.zeros((), jnp.float32))


def _battery_step(spec: Spec, opt, params, state, i: int):
    grads = jax.grad(_battery_objective)(params)
    kw = _extras(spec, i, params, grads, _battery_objective)
    updates, state = opt.update(grads, state, params, **kw)
    return gdopt.apply_updates(params, updates), updates, state


def _assert_same_avals(name: str, what: str, a: Any, b: Any) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b), f"{name}: {what} structure changed"
    fa = jax.tree_util.tree_flatten_with_path(a)[0]
    for (path, x), y in zip(fa, jax.tree.leaves(b), strict=True):
        where = jax.tree_util.keystr(path)
        assert (jnp.result_type(x), np.shape(x)) == (jnp.result_type(y), np.shape(y)), (
            f"{name}: {what}{where} {jnp.result_type(x)}{np.shape(x)} became "
            f"{jnp.result_type(y)}{np.shape(y)}"
        )


@pytest.mark.parametrize("name", NAMES)
@hypothesis.settings(max_examples=3, deadline=None, derandomize=True, database=None)
@hypothesis.given(tree=_pytrees())
def test_random_pytrees_keep_structure_and_dtypes(name, tree):
    """Two steps traced abstractly (no compile): params, updates and state keep their
    structure, shapes and dtypes."""
    spec = REGISTRY[name]
    shapes, _ = tree
    opt = spec.make()

    def two_steps(params):
        state0 = opt.init(params)
        p1, u1, s1 = _battery_step(spec, opt, params, state0, 0)
        p2, u2, s2 = _battery_step(spec, opt, p1, s1, 1)
        return state0, (p1, u1, s1), (p2, u2, s2)

    state0, (p1, u1, s1), (p2, u2, s2) = jax.eval_shape(two_steps, shapes)
    _assert_same_avals(name, "params", shapes, p1)
    _assert_same_avals(name, "params", shapes, p2)
    _assert_same_avals(name, "updates", shapes, u2)
    _assert_same_avals(name, "state", state0, s1)
    _assert_same_avals(name, "state", state0, s2)


@hypothesis.settings(max_examples=12, deadline=None, derandomize=True, database=None)
@hypothesis.given(name=st.sampled_from(NAMES), tree=_pytrees(max_leaves=3))
def test_random_pytrees_deterministic_and_jit_equals_eager(name, tree):
    """One step: computed twice eagerly, bit-identical; under ``jit``, equal to eager."""
    spec = REGISTRY[name]
    params = _materialise(*tree)
    opt = spec.make()
    state = opt.init(params)
    eager = _battery_step(spec, opt, params, state, 0)
    again = _battery_step(spec, opt, params, opt.init(params), 0)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    if spec.extras:  # value_fn/obj_fn are Python callables: compare under one jit instead
        jitted = jax.jit(lambda p: _battery_step(spec, opt, p, opt.init(p), 0))(params)
    else:
        jitted = jax.jit(lambda p, s: _battery_step(spec, opt, p, s, 0))(params, opt.init(params))
    low = any(x.dtype != jnp.float32 for x in jax.tree.leaves(params))  # bf16/f16 inputs
    tol = 2e-2 if low else 1e-5
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_allclose(
            np.asarray(a, np.float32),
            np.asarray(b, np.float32),
            rtol=tol,
            atol=tol,
            err_msg=name,
        )


BAD_INPUTS = bad_inputs("tests/test_optimizers.py")


_BAD_NUMBERS = st.sampled_from(
    [float("nan"), float("inf"), -float("inf"), -1.0, -1e-3, 2.5, "0.1", None, {"a": 1}, b"1"]
)


def _numeric_hyperparams(spec: Spec) -> list[str]:
    params = inspect.signature(spec.factory).parameters
    return [
        k
        for k, p in params.items()
        if isinstance(p.default, (int, float))
        and not isinstance(p.default, bool)
        or k == spec.learning_rate
    ]


@pytest.mark.parametrize("name", NAMES)
@hypothesis.settings(max_examples=6, deadline=None, derandomize=True, database=None)
@hypothesis.given(data=st.data())
def test_random_bad_hyperparameters_raise_naming_the_argument(name, data):
    """A hyperparameter given a non-number, nan or inf, or (where the constraint says so) a
    value outside its range, raises ValueError/TypeError naming the argument. A value the
    constructor accepts must give finite updates on a parabola (never a silent nan)."""
    spec = REGISTRY[name]
    candidates = _numeric_hyperparams(spec)
    hypothesis.assume(candidates)
    arg = data.draw(st.sampled_from(candidates))
    value = data.draw(_BAD_NUMBERS)
    if value is None:  # None is a valid choice of an argument whose default is None
        hypothesis.assume(inspect.signature(spec.factory).parameters[arg].default is not None)
    BAD_INPUTS.add(f"{name}({arg}={value!r})")
    try:
        opt = spec.make(**{arg: value})
    except (ValueError, TypeError) as e:
        assert arg in str(e), f"{name}: the message does not name {arg}: {e}"
        return
    # accepted: it must be a number in range for this argument
    assert isinstance(value, float) and np.isfinite(value), f"{name} accepted {arg}={value!r}"
    x = jnp.full(spec.shape, 0.5)
    updates, _, _ = _one_step(spec, opt, x)
    assert bool(jnp.all(jnp.isfinite(updates))), f"{name}({arg}={value}) gave non-finite updates"


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True, database=None)
@hypothesis.given(
    tree=_pytrees(max_leaves=4),
    how=st.sampled_from(["shape", "drop", "extra", "int_param", "int_update", "container"]),
    data=st.data(),
)
def test_random_bad_apply_updates_raise_naming_the_key_path(tree, how, data):
    shapes, seed = tree
    params = _materialise(shapes, seed)
    leaves, treedef = jax.tree.flatten(params)
    i = data.draw(st.integers(0, len(leaves) - 1))
    updates = list(jax.tree.map(jnp.zeros_like, leaves))
    if how == "shape":
        updates[i] = jnp.zeros((*leaves[i].shape, 2), leaves[i].dtype)
        exc, match = ValueError, r"updates.* has shape .* but params.* has shape"
    elif how == "int_param":
        leaves = list(leaves)
        leaves[i] = jnp.zeros(leaves[i].shape, jnp.int32)
        exc, match = TypeError, r"params.* has dtype int32"
    elif how == "int_update":
        updates[i] = jnp.zeros(leaves[i].shape, jnp.int32)
        exc, match = TypeError, r"updates.* has dtype int32"
    elif how == "drop":
        updates = updates[:-1] + [] if len(updates) > 1 else []
        exc, match = ValueError, r"differ|structure"
    elif how == "extra":
        updates = updates + [jnp.zeros(())]
        exc, match = ValueError, r"differ|structure"
    else:
        exc, match = ValueError, r"differ|structure"
    p = jax.tree.unflatten(treedef, leaves)
    if how in ("drop", "extra"):
        u: Any = updates  # a flat list: another structure
        hypothesis.assume(jax.tree.structure(u) != treedef)
    elif how == "container":
        u = {"other": updates}
    else:
        u = jax.tree.unflatten(treedef, updates)
    BAD_INPUTS.add(f"apply_updates:{how}:{jax.tree.structure(p)}:{jax.tree.map(np.shape, u)}")
    with pytest.raises(exc, match=match):
        gdopt.apply_updates(p, u)


@hypothesis.settings(max_examples=20, deadline=None, derandomize=True, database=None)
@hypothesis.given(name=st.sampled_from(NAMES), other=st.sampled_from(NAMES), tree=_pytrees(3))
def test_a_state_of_another_optimizer_is_refused_by_make_step(name, other, tree):
    """``make_step`` refuses a state whose structure differs from its optimizer's, naming
    the optimizer and the first differing key path (never a raw KeyError/IndexError)."""
    spec, spec_other = REGISTRY[name], REGISTRY[other]
    params = _materialise(*tree)
    opt, foreign = spec.make(), spec_other.make()
    expected = jax.eval_shape(opt.init, params)
    state = foreign.init(params)
    hypothesis.assume(jax.tree.structure(state) != jax.tree.structure(expected))
    BAD_INPUTS.add(f"make_step:{name}<-{other}:{jax.tree.structure(params)}")
    step = gdopt.make_step(lambda p, b: _battery_objective(p), opt, jit=False)
    with pytest.raises((ValueError, TypeError)) as info:
        step(
            params,
            state,
            None,
            **{
                k: v
                for k, v in _extras(spec, 0, params, params).items()
                if k in ("value", "obj_fn")
            },
        )
    message = str(info.value)
    assert "opt_state" in message and "differ" in message, message
