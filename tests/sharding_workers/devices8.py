"""Checks that need several devices, run by tests/test_sharding.py in a subprocess.

``python -m tests.sharding_workers.devices8 SECTION`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` prints one JSON object: the numbers
the tests assert on (shardings as strings, differences, byte counts, error messages).
Sections: ``registry`` (every optimizer's state follows its parameters), ``fit`` (data
parallel, sharded state, 2-D mesh, make_step), ``bad`` (errors needing several devices),
``runs`` (a sweep's runs split over devices, and ``gdopt.sweep(mesh=...)``) and
``training`` (the last three and the one-process reference of the multi-process test, in
one process) and ``all`` (``registry`` and ``training``: what the tests run, started by
``tests/sharding_workers/background.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

import gdopt  # noqa: E402
from gdopt import sharding  # noqa: E402

PARAMS_SHAPES = {"w": (16, 4), "c": (3,)}  # w sharded over the 8 devices, c replicated


def spec(x) -> str:
    s = x.sharding
    if not isinstance(s, NamedSharding):
        return f"single:{len(s.device_set)}"
    return "rep" if s.is_fully_replicated else str(tuple(s.spec))


def _state_report(state, params, mesh_size: int) -> list[str]:
    """Key paths of state leaves whose sharding is not their parameter's / replicated."""
    wrong = []
    for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
        key = jax.tree_util.keystr(path)
        name = next((k for k in params if f"['{k}']" in key), None)
        if name is not None and tuple(x.shape) == tuple(params[name].shape):
            want = params[name].sharding  # a per-parameter moment: its parameter's sharding
            ok = x.sharding.is_equivalent_to(want, x.ndim)
        elif x.ndim == 0:  # counts, hyperparameters: replicated on the mesh
            ok = x.sharding.is_fully_replicated and len(x.sharding.device_set) == mesh_size
        else:  # factored statistics, histories: on the mesh (update must keep it)
            ok = len(x.sharding.device_set) == mesh_size
        if not ok:
            wrong.append(f"{key}:{spec(x)}")
    return wrong


def _objective(p):
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(p))


def _update(opt, g, state, params):
    """One update with every keyword extra an optimizer may take (they ignore the rest)."""
    value = _objective(params)
    return opt.update(g, state, params, value=value, grad=g, value_fn=_objective, obj_fn=_objective)


def registry() -> dict:
    sys.path.insert(0, os.getcwd())
    import time

    from tests.registry import NAMES, REGISTRY

    out: dict = {"names": NAMES, "modes": {}, "seconds": {}}
    grads = {k: jnp.full(s, 0.5, jnp.float32) for k, s in PARAMS_SHAPES.items()}
    for mode, set_mesh in (("auto", True), ("explicit", True), ("auto_nomesh", False)):
        axis = AxisType.Explicit if mode == "explicit" else AxisType.Auto
        mesh = jax.make_mesh((8,), ("data",), axis_types=(axis,))
        specs = {"w": P("data"), "c": P()}
        params = {
            k: jax.device_put(jnp.ones(s, jnp.float32), NamedSharding(mesh, specs[k]))
            for k, s in PARAMS_SHAPES.items()
        }
        g = {k: jax.device_put(v, params[k].sharding) for k, v in grads.items()}
        report = {}
        t0 = time.perf_counter()
        ctx = jax.set_mesh(mesh) if set_mesh else contextlib.nullcontext()
        with ctx:
            for name in NAMES:
                spec_ = REGISTRY[name]
                opt = spec_.make()
                entry: dict = {}
                state = jax.jit(opt.init)(params)
                entry["init"] = _state_report(state, params, 8)
                entry["per_param"] = any(tuple(x.shape) == (16, 4) for x in jax.tree.leaves(state))
                if mode == "auto":
                    try:
                        _, new = jax.jit(functools.partial(_update, opt))(g, state, params)
                    except Exception as e:  # noqa: BLE001  (reported, asserted on)
                        entry["update_error"] = f"{type(e).__name__}: {str(e)[:200]}"
                        report[name] = entry
                        continue
                    same = [
                        jax.tree_util.keystr(p)
                        for (p, a), b in zip(
                            jax.tree_util.tree_flatten_with_path(state)[0],
                            jax.tree.leaves(new),
                            strict=True,
                        )
                        if not a.sharding.is_equivalent_to(b.sharding, a.ndim)
                    ]
                    entry["update_changed"] = same
                report[name] = entry
        out["modes"][mode] = report
        out["seconds"][mode] = time.perf_counter() - t0
    # abstract initialisation, with sharded ShapeDtypeStructs
    mesh = jax.make_mesh((8,), ("data",))
    sds = {
        "w": jax.ShapeDtypeStruct((16, 4), jnp.float32, sharding=NamedSharding(mesh, P("data"))),
        "c": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=NamedSharding(mesh, P())),
    }
    abstract = {}
    with jax.set_mesh(mesh):
        for name in NAMES:
            shaped = jax.eval_shape(REGISTRY[name].make().init, sds)
            leaves = jax.tree.leaves(shaped)
            moments = [x for x in leaves if tuple(x.shape) == (16, 4)]
            abstract[name] = {
                "abstract": all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves),
                "moments": len(moments),
                "moments_follow": all(tuple(x.sharding.spec)[:1] == ("data",) for x in moments),
            }
    out["eval_shape"] = abstract
    return out


def _problem():
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 16))
    w = jax.random.normal(jax.random.PRNGKey(1), (16, 8))
    y = jnp.tanh(x @ w)
    params = {"w": jnp.zeros((16, 8)), "b": jnp.zeros((8,))}
    return params, (x, y)


def loss(p, b):
    return jnp.mean((jnp.tanh(b[0] @ p["w"] + p["b"]) - b[1]) ** 2)


def _maxdiff(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def fit() -> dict:
    params, data = _problem()
    out: dict = {"devices": jax.device_count()}
    opt = gdopt.adam(1e-2)
    kw = dict(epochs=6, batch_size=16, key=3, eval_data=data, epochs_per_call=2)
    ref = gdopt.fit(loss, params, opt, data, **kw)
    dp = gdopt.fit(loss, params, opt, data, mesh="auto", **kw)
    out["dp_diff"] = _maxdiff(dp.params, ref.params)
    out["dp_hist_diff"] = float(np.max(np.abs(dp.history.train_loss - ref.history.train_loss)))
    out["dp_eval_diff"] = float(np.max(np.abs(dp.history.eval_loss - ref.history.eval_loss)))
    out["dp_epochs"] = dp.epochs_run
    out["dp_param_spec"] = spec(dp.params["w"])
    out["dp_state_spec"] = spec(dp.opt_state[0].mu["w"])
    again = gdopt.fit(loss, params, gdopt.adam(3e-2), data, mesh="auto", **kw)
    out["repeat_compile_time"] = again.compile_time  # same program: from fit's cache
    # a deterministic objective (data=None), its state sharded
    target = lambda p: jnp.sum((p["w"] - 1.0) ** 2)  # noqa: E731
    nd_ref = gdopt.fit(target, params, opt, epochs=4)
    nd = gdopt.fit(target, params, opt, epochs=4, mesh="auto", shard_opt_state=True)
    out["nodata_diff"] = _maxdiff(nd.params, nd_ref.params)
    out["nodata_specs"] = [spec(nd.params["w"]), spec(nd.opt_state[0].mu["w"])]
    # full batch too
    fb_ref = gdopt.fit(loss, params, opt, data, epochs=3)
    fb = gdopt.fit(loss, params, opt, data, epochs=3, mesh="auto")
    out["fullbatch_diff"] = _maxdiff(fb.params, fb_ref.params)

    # checkpoints on a mesh: 4 epochs, then resumed to 6, equal the uninterrupted run
    import tempfile

    for zero_state in (False, True):
        with tempfile.TemporaryDirectory() as d:
            ck = dict(kw, checkpoint_dir=d, checkpoint_every=2, shard_opt_state=zero_state)
            gdopt.fit(loss, params, opt, data, mesh="auto", **{**ck, "epochs": 4})
            back = gdopt.fit(loss, params, opt, data, mesh="auto", resume=True, **ck)
        name = "resume_zero" if zero_state else "resume"
        out[f"{name}_diff"] = _maxdiff(back.params, ref.params)
        out[f"{name}_state_spec"] = spec(back.opt_state[0].mu["w"])
        out[f"{name}_epochs"] = back.epochs_run

    # ZeRO-1: sharded state, same numbers, 1/8 of the memory
    zero = gdopt.fit(loss, params, opt, data, mesh="auto", shard_opt_state=True, **kw)
    out["zero_diff"] = _maxdiff(zero.params, ref.params)
    out["zero_state_specs"] = jax.tree.map(spec, zero.opt_state)
    out["zero_state_specs"] = [spec(x) for x in jax.tree.leaves(zero.opt_state)]
    rep_bytes = sharding.bytes_per_device(dp.opt_state)
    zero_bytes = sharding.bytes_per_device(zero.opt_state)
    scalars = sum(x.nbytes for x in jax.tree.leaves(dp.opt_state) if x.ndim == 0)
    out["rep_state_bytes"] = max(rep_bytes.values())
    out["zero_state_bytes"] = max(zero_bytes.values())
    out["scalar_bytes"] = int(scalars)
    # XLA's memory analysis of one update: arguments = grads + state + params per device
    mesh = sharding.make_mesh("auto")

    def update_args(state_sharded: bool):
        placed = sharding.place(
            params,
            None,
            data,
            None,
            loss_fn=loss,
            optimizer=opt,
            mesh=mesh,
            shard_opt_state=state_sharded,
            batch_size=16,
        )
        shaped = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            (placed.params, placed.opt_state, placed.params),
        )
        compiled = jax.jit(opt.update, keep_unused=True).lower(*shaped)  # grads, state, params
        return sharding.memory_analysis(compiled.compile())["argument_bytes"]

    pg = 2 * sum(int(np.prod(x.shape)) * 4 for x in jax.tree.leaves(params))
    out["xla_rep_state_bytes"] = update_args(False) - pg
    out["xla_zero_state_bytes"] = update_args(True) - pg

    # 2-D mesh: data x model, the user shards w over "model"
    mesh2 = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    p2 = {
        "w": jax.device_put(params["w"], NamedSharding(mesh2, P(None, "model"))),
        "b": jax.device_put(params["b"], NamedSharding(mesh2, P("model"))),
    }
    two = gdopt.fit(loss, p2, opt, data, mesh=mesh2, **kw)
    out["mesh2_diff"] = _maxdiff(two.params, ref.params)
    out["mesh2_param_specs"] = [spec(two.params["w"]), spec(two.params["b"])]
    out["mesh2_state_specs"] = [spec(two.opt_state[0].mu["w"]), spec(two.opt_state[0].nu["b"])]
    two_z = gdopt.fit(loss, p2, opt, data, mesh=mesh2, shard_opt_state=True, **kw)
    out["mesh2_zero_diff"] = _maxdiff(two_z.params, ref.params)
    out["mesh2_zero_state_specs"] = [
        spec(two_z.opt_state[0].mu["w"]),
        spec(two_z.opt_state[0].nu["b"]),
    ]
    # continuing from the sharded state (placed as it comes) gives the same as one run
    more = gdopt.fit(
        loss, two.params, opt, data, mesh=mesh2, opt_state=two.opt_state, **{**kw, "key": 4}
    )
    out["continue_state_spec"] = spec(more.opt_state[0].mu["w"])

    # make_step with a mesh: the same steps as on one device
    step1 = gdopt.make_step(loss, opt, donate=False)
    stepm = gdopt.make_step(loss, opt, mesh="auto", shard_opt_state=True)
    pa, sa = params, opt.init(params)
    pb, sb = params, opt.init(params)
    for i in range(4):  # the 4 batches of 16 of the 64 examples
        batch = jax.tree.map(lambda a, i=i: a[i * 16 : (i + 1) * 16], data)
        pa, sa, la = step1(pa, sa, batch)
        pb, sb, lb = stepm(pb, sb, batch)
    out["step_diff"] = _maxdiff(pb, pa)
    out["step_loss_diff"] = abs(float(la) - float(lb))
    out["step_state_spec"] = spec(sb[0].mu["w"])
    out["step_param_spec"] = spec(pb["w"])
    return out


def bad() -> dict:
    params, data = _problem()
    opt = gdopt.sgd(0.1)
    out = {}

    def msg(fn) -> str:
        try:
            fn()
        except (ValueError, TypeError) as e:
            return f"{type(e).__name__}: {e}"
        return "no error"

    out["batch"] = msg(
        lambda: gdopt.fit(loss, params, opt, data, epochs=1, batch_size=12, mesh="auto")
    )
    out["full_batch"] = msg(
        lambda: gdopt.fit(
            loss, params, opt, jax.tree.map(lambda a: a[:60], data), epochs=1, mesh="auto"
        )
    )
    out["step_batch"] = msg(
        lambda: gdopt.make_step(loss, opt, mesh="auto")(
            params, opt.init(params), jax.tree.map(lambda a: a[:12], data)
        )
    )
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    w = jax.device_put(params["w"], NamedSharding(mesh, P(None, "model")))
    out["axis"] = msg(
        lambda: gdopt.fit(loss, {**params, "w": w}, opt, data, epochs=1, batch_size=16, mesh="auto")
    )
    return out


def runs() -> dict:
    """K = 16 runs of a learning-rate sweep (vmap over training states), split over 8
    devices with gdopt.sharding.shard_runs, against the same vmap on one device."""
    from gdopt.engine.core import init_fit_state, make_train_fn

    params, data = _problem()
    opt = gdopt.adam(1e-2)
    lrs = jnp.geomspace(1e-3, 1e-1, 16).astype(jnp.float32)
    state0 = init_fit_state(params, opt.init(params))

    def one(lr):
        return state0._replace(opt_state=gdopt.set_hyperparams(state0.opt_state, learning_rate=lr))

    stacked = jax.vmap(one)(lrs)
    train = jax.jit(
        jax.vmap(make_train_fn(loss, opt, n_epochs=4, batch_size=16), in_axes=(0, None, None))
    )
    key = jax.random.PRNGKey(0)
    single = jax.device_put(stacked, jax.devices()[0])
    ref, ref_hist = train(single, jax.device_put(data, jax.devices()[0]), key)
    sharded = sharding.shard_runs(stacked, "auto")
    out, hist = train(sharded, sharding.shard_data(data, sharding.make_mesh("auto")), key)
    return {
        "runs_diff": _maxdiff(out.params, ref.params),
        "runs_loss_diff": _maxdiff(hist.train_loss, ref_hist.train_loss),
        "runs_spec": spec(out.params["w"]),
        "runs_devices": len(out.params["w"].sharding.device_set),
        "ref_devices": len(ref.params["w"].sharding.device_set),
        **sweeps(),
    }


def sweeps() -> dict:
    """gdopt.sweep(mesh="auto") of 16 and of 12 learning rates (12 padded to 16 runs, the
    padding dropped) and successive_halving on the mesh, against the same on one device."""
    params, data = _problem()
    out: dict = {}
    for k in (16, 12):
        grid = {"learning_rate": [float(v) for v in np.geomspace(1e-3, 1e-1, k)]}
        kw = dict(epochs=4, batch_size=16, key=0, grid=grid)
        ref = gdopt.sweep(loss, params, gdopt.adam(1e-2), data, **kw)
        on = gdopt.sweep(loss, params, gdopt.adam(1e-2), data, mesh="auto", **kw)
        out[f"sweep{k}"] = {
            "diff": _maxdiff(on.params, ref.params),
            "loss_diff": float(np.max(np.abs(on.history.train_loss - ref.history.train_loss))),
            "runs": int(on.params["w"].shape[0]),
            "best": [on.best_index, ref.best_index],
            "spec": spec(on.params["w"]),
            "devices": len(on.params["w"].sharding.device_set),
            "ref_devices": len(ref.params["w"].sharding.device_set),
        }
    grid = {"learning_rate": [float(v) for v in np.geomspace(1e-3, 1e-1, 12)]}
    kw = dict(min_epochs=1, max_epochs=9, eta=3, batch_size=16, key=0, grid=grid)
    ref = gdopt.successive_halving(loss, params, gdopt.adam(1e-2), data, **kw)
    on = gdopt.successive_halving(loss, params, gdopt.adam(1e-2), data, mesh="auto", **kw)
    out["halving"] = {
        "diff": _maxdiff(on.params, ref.params),
        "loss_diff": float(np.nanmax(np.abs(on.history.train_loss - ref.history.train_loss))),
        "rungs": [len(r.indices) for r in on.rungs],
        "best": [on.best_index, ref.best_index],
    }
    return out


def training() -> dict:
    """Every section but the registry's, in one process (one start of JAX)."""
    from tests.sharding_workers import processes

    return {"fit": fit(), "bad": bad(), "runs": runs(), "one_process": processes.run()}


def all_sections() -> dict:
    """``registry`` and ``training`` in one process (one start of JAX and of the 8 devices).

    (A persistent compilation cache of its own was tried: the registry's inits without a mesh
    context hit the programs compiled under ``jax.set_mesh``, but writing every program cost
    as much; 53-55 s of CPU either way.)
    """
    return {"registry": registry(), "training": training()}


if __name__ == "__main__":
    section = sys.argv[1]
    sections = {
        "registry": registry,
        "fit": fit,
        "bad": bad,
        "runs": runs,
        "training": training,
        "all": all_sections,
    }
    print(json.dumps(sections[section]()))
