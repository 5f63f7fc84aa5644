"""gdopt.sharding: meshes, placements, state that follows the parameters, fit on a mesh.

The suite runs on one CPU device. Everything that needs several devices runs in
subprocesses (the workers in ``tests/sharding_workers/``), under a bounded timeout: one
process with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` computes every check's
numbers, and the test of several processes starts 2 processes of 4 CPU devices each, joined by
``jax.distributed.initialize`` over 127.0.0.1, to compare them with 1 process of 8 devices.
Both start in the background when the tests are collected (``background.py``) and run once
per session, whichever xdist worker asks; the tests assert on the JSON they print.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gdopt
from gdopt import sharding
from tests.sharding_workers import background


@pytest.fixture(scope="session")
def devices8_report() -> dict:
    """Both sections of the 8-device worker (``devices8 all``), run in the background."""
    (report,) = background.result("devices8")
    return report


@pytest.fixture(scope="session")
def registry_report(devices8_report) -> dict:
    return devices8_report["registry"]


@pytest.fixture(scope="session")
def training_report(devices8_report) -> dict:
    return devices8_report["training"]


@pytest.fixture(scope="session")
def processes_report() -> list[dict]:
    """What each of the 2 processes of 4 devices printed (run in the background)."""
    return background.result("processes")


@pytest.fixture(scope="session")
def fit_report(training_report) -> dict:
    return training_report["fit"]


@pytest.fixture(scope="session")
def bad_report(training_report) -> dict:
    return training_report["bad"]


@pytest.fixture(scope="session")
def runs_report(training_report) -> dict:
    return training_report["runs"]


SCALAR_ONLY = {"fromage", "noisy_sgd", "polyak_sgd", "sgd", "sign_sgd"}


# ----------------------------------------------------------------------------- state follows


def test_every_optimizers_state_follows_its_parameters_under_jit(registry_report):
    from tests.registry import NAMES

    assert registry_report["names"] == NAMES  # every registry optimizer was checked
    for mode in ("auto", "explicit"):  # under jax.set_mesh, Auto and Explicit axes
        wrong = {k: v["init"] for k, v in registry_report["modes"][mode].items() if v["init"]}
        assert not wrong, f"{mode}: state leaves not on their parameter's sharding: {wrong}"


def test_update_keeps_every_optimizers_state_sharding(registry_report):
    report = registry_report["modes"]["auto"]
    errors = {k: v["update_error"] for k, v in report.items() if "update_error" in v}
    assert not errors, errors
    changed = {k: v["update_changed"] for k, v in report.items() if v["update_changed"]}
    assert not changed, f"update moved these state leaves to another sharding: {changed}"
    assert len(report) == 36


def test_without_a_mesh_context_every_state_follows_too(registry_report):
    # plain jax.jit(opt.init), no jax.set_mesh (the case of the issue): states holding only
    # scalars (their init uses no parameter value) are computed on the parameters' mesh too
    report = registry_report["modes"]["auto_nomesh"]
    per_param = {k for k, v in report.items() if v["per_param"]}
    assert set(report) - per_param == SCALAR_ONLY
    wrong = {k: v["init"] for k, v in report.items() if v["init"]}
    assert not wrong, wrong


def test_abstract_init_works_for_every_optimizer_and_keeps_the_sharding(registry_report):
    shaped = registry_report["eval_shape"]
    assert len(shaped) == 36
    assert all(v["abstract"] for v in shaped.values())
    assert {k for k, v in shaped.items() if not v["moments"]} == SCALAR_ONLY
    assert all(v["moments_follow"] for v in shaped.values())


def test_abstract_init_of_every_optimizer_on_one_device():
    from tests.registry import NAMES, REGISTRY

    sds = {
        "w": jax.ShapeDtypeStruct((4, 3), jnp.float32),
        "b": jax.ShapeDtypeStruct((3,), jnp.float32),
    }
    for name in NAMES:
        state = jax.eval_shape(REGISTRY[name].make().init, sds)
        assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state)), name


# ----------------------------------------------------------------------------- fit on 8 devices


def test_data_parallel_fit_equals_single_device_training(fit_report):
    assert fit_report["devices"] == 8
    assert fit_report["dp_diff"] < 1e-5
    assert fit_report["dp_hist_diff"] < 1e-5
    assert fit_report["dp_eval_diff"] < 1e-5
    assert fit_report["fullbatch_diff"] < 1e-5
    assert fit_report["dp_epochs"] == 6
    assert fit_report["dp_param_spec"] == "rep"  # parameters replicated by default
    assert fit_report["dp_state_spec"] == "rep"  # and their state with them
    assert fit_report["repeat_compile_time"] == 0.0  # the wrapped loss/optimizer are cached


def test_a_checkpointed_run_resumes_on_the_mesh_exactly(fit_report):
    """Saved at epoch 4 on 8 devices and resumed to 6: the uninterrupted run's parameters,
    the state placed as before (replicated, or split with shard_opt_state)."""
    assert fit_report["resume_diff"] < 1e-5 and fit_report["resume_epochs"] == 6
    assert fit_report["resume_state_spec"] == "rep"
    assert fit_report["resume_zero_diff"] < 1e-5 and fit_report["resume_zero_epochs"] == 6
    assert fit_report["resume_zero_state_spec"] == "('data',)"


def test_a_deterministic_objective_on_a_mesh_with_sharded_state(fit_report):
    assert fit_report["nodata_diff"] < 1e-6
    # several compiled calls (fit's adaptive chunks) of one executable: the carry keeps
    # its shardings
    assert fit_report["nodata_specs"] == ["rep", "('data',)"]


def test_sharded_optimizer_state_gives_the_same_result_in_an_eighth_of_the_memory(fit_report):
    assert fit_report["zero_diff"] < 1e-5
    # mu and nu of w (16, 8) and b (8,) split over the 8 devices; counts/hyperparams replicated
    assert sorted(set(fit_report["zero_state_specs"])) == ["('data',)", "rep"]
    rep, zero, scalars = (
        fit_report["rep_state_bytes"],
        fit_report["zero_state_bytes"],
        fit_report["scalar_bytes"],
    )
    moments = 2 * (16 * 8 + 8) * 4
    assert rep == moments + scalars
    assert zero == moments // 8 + scalars
    assert zero <= rep / 8 + scalars
    # XLA's memory analysis of the update program agrees
    assert fit_report["xla_rep_state_bytes"] == rep
    assert fit_report["xla_zero_state_bytes"] == zero


def test_model_parallel_parameters_keep_their_sharding_through_fit(fit_report):
    assert fit_report["mesh2_diff"] < 1e-5
    assert fit_report["mesh2_param_specs"] == ["(None, 'model')", "('model',)"]
    assert fit_report["mesh2_state_specs"] == ["(None, 'model')", "('model',)"]
    assert fit_report["mesh2_zero_diff"] < 1e-5
    # ZeRO-1 on a 2-D mesh: the data axis on the free dimension of w's moments; b (8,)
    # has no free dimension (it is split over "model"), so its moments stay as b is
    assert fit_report["mesh2_zero_state_specs"] == ["('data', 'model')", "('model',)"]
    assert fit_report["continue_state_spec"] == "(None, 'model')"


def test_make_step_on_a_mesh_equals_single_device_steps(fit_report):
    assert fit_report["step_diff"] < 1e-5
    assert fit_report["step_loss_diff"] < 1e-5
    assert fit_report["step_state_spec"] == "('data',)"
    assert fit_report["step_param_spec"] == "rep"


def test_a_sweep_of_runs_split_over_devices_equals_the_same_vmap_on_one_device(runs_report):
    # 16 learning rates of Adam, 4 epochs each: jax.vmap over training states (what
    # gdopt.sweep compiles), the runs split 2 per device over 8 devices
    assert runs_report["runs_devices"] == 8 and runs_report["ref_devices"] == 1
    assert runs_report["runs_spec"] == "('data',)"
    assert runs_report["runs_diff"] == 0.0  # each device computes whole runs: same numbers
    assert runs_report["runs_loss_diff"] == 0.0


def test_sweep_on_a_mesh_equals_the_sweep_on_one_device(runs_report):
    # gdopt.sweep(mesh="auto"): 16 learning rates, 2 runs per device, the run axis of the
    # result's params split over the 8 devices
    r = runs_report["sweep16"]
    assert r["diff"] == 0.0 and r["loss_diff"] == 0.0  # whole runs per device: same numbers
    assert r["runs"] == 16 and r["best"][0] == r["best"][1]
    assert r["spec"] == "('data',)" and r["devices"] == 8 and r["ref_devices"] == 1


def test_a_sweep_not_divisible_by_the_devices_is_padded_and_the_padding_dropped(runs_report):
    # 12 runs on 8 devices: trained as 16 (4 copies of the last run), 12 returned; 12 rows
    # cannot be split evenly over 8 devices, so the result is replicated on the mesh
    r = runs_report["sweep12"]
    assert r["diff"] == 0.0 and r["loss_diff"] == 0.0
    assert r["runs"] == 12 and r["best"][0] == r["best"][1]
    assert r["spec"] == "rep" and r["devices"] == 8


def test_successive_halving_on_a_mesh_equals_it_on_one_device(runs_report):
    r = runs_report["halving"]
    assert r["rungs"] == [12, 4, 1]  # 12, 4 and 1 runs, each padded to 16 / 8 / 8
    assert r["diff"] == 0.0 and r["loss_diff"] == 0.0
    assert r["best"][0] == r["best"][1]


def _sweep_on(mesh, **kw):
    x = jnp.linspace(-1.0, 1.0, 16).reshape(8, 2)
    loss = lambda p, b: jnp.mean((b @ p) ** 2)  # noqa: E731
    grid = {"learning_rate": [0.1, 0.2, 0.3]}
    return gdopt.sweep(loss, jnp.ones(2), gdopt.sgd(0.1), x, epochs=2, grid=grid, mesh=mesh, **kw)


def test_sweep_on_a_one_device_mesh_equals_the_sweep_without_one():
    ref, on = _sweep_on(None), _sweep_on("auto")
    np.testing.assert_array_equal(np.asarray(on.params), np.asarray(ref.params))
    np.testing.assert_array_equal(on.final_train_loss, ref.final_train_loss)
    assert on.params.sharding.spec == P("data")


def test_sweep_on_a_mesh_without_the_data_axis_is_refused():
    with pytest.raises(
        ValueError,
        match=r"data_axis='data' is not an axis of the mesh; its axes are \{'model': 1\}",
    ):
        _sweep_on(_one_device_mesh("model"))
    with pytest.raises(ValueError, match=r"data_axis='runs' is not an axis of the mesh"):
        _sweep_on(_one_device_mesh("data"), data_axis="runs")
    with pytest.raises(ValueError, match=r"mesh has no devices"):
        _sweep_on(Mesh(np.empty((0,), object), ("data",)))
    with pytest.raises(TypeError, match="mesh must be 'auto', a jax.sharding.Mesh or None"):
        _sweep_on("all")
    with pytest.raises(TypeError, match="data_axis must be a string"):
        _sweep_on("auto", data_axis=0)


# ----------------------------------------------------------------------------- bad input


def test_batch_sizes_not_divisible_by_the_data_axis_are_refused(bad_report):
    assert bad_report["batch"].startswith("ValueError: batch_size=12 is not divisible by")
    assert "'data' (8 devices)" in bad_report["batch"]
    assert "all 60 examples" in bad_report["full_batch"]
    assert "batch[0] has 12 examples" in bad_report["step_batch"]


def test_parameters_sharded_over_an_axis_the_mesh_lacks_are_refused(bad_report):
    assert bad_report["axis"].startswith("ValueError: params['w'] is sharded over axis 'model'")
    assert "{'data': 8}" in bad_report["axis"]


def _one_device_mesh(name: str = "data") -> Mesh:
    return Mesh(np.asarray(jax.devices()[:1]), (name,))


def test_a_data_axis_the_mesh_lacks_is_refused():
    with pytest.raises(
        ValueError,
        match=r"data_axis='batch' is not an axis of the mesh; its axes are \{'data': 1\}",
    ):
        sharding.place(
            {"w": jnp.zeros(2)},
            None,
            None,
            None,
            loss_fn=lambda p, b: 0.0,
            optimizer=gdopt.sgd(0.1),
            mesh=_one_device_mesh(),
            data_axis="batch",
        )


def test_a_mesh_without_devices_is_refused():
    empty = Mesh(np.empty((0,), object), ("data",))
    with pytest.raises(ValueError, match=r"mesh has no devices \(shape \{'data': 0\}\)"):
        sharding.make_mesh(empty)


def test_a_multi_process_mesh_without_jax_distributed_is_refused():
    class Remote:  # a device of another process, as a mesh built by 2 processes holds
        def __init__(self, i: int, process: int) -> None:
            self.id, self.process_index, self.platform, self.device_kind = i, process, "cpu", "cpu"

    mesh = Mesh(np.array([Remote(0, 0), Remote(1, 1)], object), ("data",))
    with pytest.raises(
        ValueError, match="mesh spans 2 processes .* jax.distributed is not initialised"
    ):
        sharding.check_mesh(mesh)


def test_parameters_sharded_over_an_axis_the_mesh_lacks_are_refused_on_one_device():
    model = _one_device_mesh("model")
    w = jax.device_put(jnp.zeros((2, 2)), NamedSharding(model, P("model")))
    with pytest.raises(ValueError, match=r"params\['w'\] is sharded over axis 'model' \(spec"):
        sharding.param_shardings({"w": w}, _one_device_mesh("data"))


def test_bad_mesh_and_flag_types_are_refused():
    with pytest.raises(TypeError, match="mesh must be 'auto', a jax.sharding.Mesh or None"):
        sharding.make_mesh("everything")
    with pytest.raises(TypeError, match="shard_opt_state must be True or False"):
        sharding.place(
            {"w": jnp.zeros(2)},
            None,
            None,
            None,
            loss_fn=lambda p, b: 0.0,
            optimizer=gdopt.sgd(0.1),
            mesh="auto",
            shard_opt_state="yes",
        )


# ----------------------------------------------------------------------------- one device


def test_zero_spec_picks_the_first_free_divisible_dimension():
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    assert sharding.zero_spec((6, 4), P(), mesh, "data") == P("data", None)
    assert sharding.zero_spec((6, 4), P("model"), mesh, "data") == P("model", "data")
    assert sharding.zero_spec((6, 4), P("data"), mesh, "data") == P("data")  # already split
    assert sharding.zero_spec((), P(), mesh, "data") == P()


def test_state_shardings_follow_parameters_and_stacks_of_them():
    mesh = _one_device_mesh("data")
    w = jax.device_put(jnp.zeros((4, 3)), NamedSharding(mesh, P("data")))
    params = {"w": w, "b": jnp.zeros((3,))}
    sh = sharding.state_shardings(gdopt.lbfgs(memory_size=5), params, mesh)
    assert all(s.mesh == mesh for s in jax.tree.leaves(sh))
    lbfgs = sh[0]
    assert lbfgs.params["w"].spec == P("data")  # a copy of the parameter: its sharding
    assert lbfgs.params["b"].spec == P()  # an unsharded parameter: replicated
    assert lbfgs.diff_params_memory["w"].spec == P(None, "data", None)  # (5, 4, 3) slots
    assert lbfgs.weights_memory.spec == P()  # (5,): no parameter's shape
    zero = sharding.state_shardings(gdopt.adam(0.1), params, mesh, shard_over="data")
    assert zero[0].mu["b"].spec == P("data")  # ZeRO-1: b's moments split too
    assert zero[0].count.spec == P()


def test_fit_on_a_one_device_mesh_equals_fit_without_one():
    x = jnp.linspace(-1.0, 1.0, 32).reshape(16, 2)
    y = x @ jnp.array([1.0, -2.0])
    loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)  # noqa: E731
    ref = gdopt.fit(loss, jnp.zeros(2), gdopt.adam(0.1), (x, y), epochs=5, batch_size=4, key=1)
    on = gdopt.fit(
        loss,
        jnp.zeros(2),
        gdopt.adam(0.1),
        (x, y),
        epochs=5,
        batch_size=4,
        key=1,
        mesh="auto",
        shard_opt_state=True,
    )
    np.testing.assert_allclose(np.asarray(on.params), np.asarray(ref.params), rtol=1e-6)
    assert isinstance(on.params.sharding, NamedSharding)


# ----------------------------------------------------------------------------- 2 processes


def test_two_processes_of_four_devices_equal_one_process_of_eight(
    training_report, processes_report
):
    one = training_report["one_process"]  # the same fit, 1 process of 8 devices
    assert one["processes"] == 1 and one["devices"] == 8
    outs = processes_report  # both exited 0 (background.result asserts it)
    assert len(outs) == 2
    for out in outs:
        assert out["processes"] == 2 and out["devices"] == 8 and out["local_devices"] == 4
        assert out["epochs_run"] == one["epochs_run"] == 12
        np.testing.assert_allclose(out["params"], one["params"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["train_loss"], one["train_loss"], rtol=1e-5)
        assert out["state_spec"] == one["state_spec"] == "('data',)"
    assert outs[0]["params"] == outs[1]["params"]  # both processes hold the same result
