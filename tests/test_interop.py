"""gdopt inside the frameworks that use optax: Flax Linen's ``TrainState``, Flax NNX's
``nnx.Optimizer`` and Equinox's filter pattern, each a short training compared with the same
program on optax; and the bit-identical trajectories under ``jit`` where gdopt's rule is
optax's (the same operations in the same order)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdopt
from tests.helpers import gradient_sequence, make_params, oracle, run_trajectory

# ----------------------------------------------------------------------------- bit-identical

_LR = {"learning_rate": 1e-2}

# (case, gdopt factory, optax factory): 100 jitted steps must give the same bits.
EXACT = [
    ("sgd", lambda: gdopt.sgd(0.1), lambda: optax.sgd(0.1)),
    ("momentum", lambda: gdopt.sgd(0.1, momentum=0.9), lambda: optax.sgd(0.1, momentum=0.9)),
    (
        "nesterov",
        lambda: gdopt.sgd(0.1, momentum=0.9, nesterov=True),
        lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    ),
    ("scale_by_adam", gdopt.scale_by_adam, optax.scale_by_adam),
    (
        "scale_by_adam_nesterov",
        lambda: gdopt.scale_by_adam(nesterov=True),
        lambda: optax.scale_by_adam(nesterov=True),
    ),
    ("scale_by_rms", gdopt.scale_by_rms, optax.scale_by_rms),
    ("lion", lambda: gdopt.lion(1e-3), lambda: optax.lion(1e-3)),
    ("adagrad", lambda: gdopt.adagrad(1e-2), lambda: optax.adagrad(1e-2)),
    # gdopt's named optimizers keep their hyperparameters in the state (float32 arrays), as
    # optax.inject_hyperparams does: bit-identical to it
    ("adam", lambda: gdopt.adam(**_LR), lambda: optax.inject_hyperparams(optax.adam)(**_LR)),
    (
        "adamw",
        lambda: gdopt.adamw(weight_decay=1e-2, **_LR),
        lambda: optax.inject_hyperparams(optax.adamw)(weight_decay=1e-2, **_LR),
    ),
    ("nadam", lambda: gdopt.nadam(**_LR), lambda: optax.inject_hyperparams(optax.nadam)(**_LR)),
    ("nadamw", lambda: gdopt.nadamw(**_LR), lambda: optax.inject_hyperparams(optax.nadamw)(**_LR)),
    (
        "rmsprop",
        lambda: gdopt.rmsprop(**_LR),
        lambda: optax.inject_hyperparams(optax.rmsprop)(**_LR),
    ),
]


@pytest.mark.parametrize(("case", "ours", "theirs"), EXACT, ids=[c[0] for c in EXACT])
def test_trajectories_are_bit_identical_to_optax(case, ours, theirs):
    params = make_params()
    grads = gradient_sequence(params, 100)
    got = run_trajectory(ours(), params, grads)
    with oracle():
        ref = run_trajectory(theirs(), params, grads, apply=optax.apply_updates)
    for step, (a, b) in enumerate(zip(got, ref, strict=True)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y, err_msg=f"{case}, step {step}")


def test_plain_optax_adam_differs_only_by_its_python_float_complement():
    """optax.adam computes ``1 - b2`` in Python (0.001 exactly, then float32) but the bias
    correction from float32 ``b2``; gdopt (like optax.inject_hyperparams) has float32 ``b2``
    in its state, so the first update differs by ``sqrt(0.001 / (1 - float32(0.999)))``."""
    g = {"w": jnp.array([0.5, -2.0])}
    opt = gdopt.adam(1.0)
    u, _ = opt.update(g, opt.init(g))
    with oracle():
        ref_opt = optax.adam(1.0)
        ref, _ = ref_opt.update(g, ref_opt.init(g))
    b2 = np.float32(0.999)
    factor = np.sqrt(np.float32(0.001) / (np.float32(1.0) - b2))
    np.testing.assert_allclose(np.asarray(u["w"]) / np.asarray(ref["w"]), factor, rtol=1e-6)


# ----------------------------------------------------------------------------- Flax Linen

flax = pytest.importorskip("flax")
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402
from flax.training import train_state  # noqa: E402

_X = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
_Y = jnp.sin(_X.sum(axis=1, keepdims=True))


class _LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.tanh(nn.Dense(8)(x)))


def _linen_train(tx, steps: int = 10):
    model = _LinenMLP()
    params = model.init(jax.random.PRNGKey(1), _X)["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    @jax.jit
    def step(state):
        def loss(p):
            return gdopt.losses.l2_loss(state.apply_fn({"params": p}, _X), _Y).mean()

        value, grads = jax.value_and_grad(loss)(state.params)
        return state.apply_gradients(grads=grads), value

    values = []
    for _ in range(steps):
        state, value = step(state)
        values.append(float(value))
    return state, values


def test_flax_linen_train_state():
    ours, ours_values = _linen_train(gdopt.sgd(0.1, momentum=0.9))
    with oracle():
        ref, ref_values = _linen_train(optax.sgd(0.1, momentum=0.9))
    assert ours_values == ref_values  # bit-identical
    assert ours_values[-1] < ours_values[0]
    jax.tree.map(np.testing.assert_array_equal, ours.params, ref.params)


# ----------------------------------------------------------------------------- Flax NNX


class _NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(3, 8, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def _nnx_train(tx, steps: int = 10):
    model = _NnxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss(m):
            return gdopt.losses.l2_loss(m(_X), _Y).mean()

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    values = [float(step(model, optimizer)) for _ in range(steps)]
    return model, values


def test_flax_nnx_optimizer():
    tx = gdopt.chain(gdopt.scale_by_adam(), gdopt.add_decayed_weights(1e-3), gdopt.scale(-1e-2))
    _, values = _nnx_train(tx)
    with oracle():
        ref_tx = optax.chain(
            optax.scale_by_adam(), optax.add_decayed_weights(1e-3), optax.scale(-1e-2)
        )
        _, ref_values = _nnx_train(ref_tx)
    assert values == ref_values  # bit-identical
    assert values[-1] < values[0]


def test_flax_nnx_optimizer_with_a_named_optimizer():
    _, values = _nnx_train(gdopt.adamw(1e-2, weight_decay=1e-3))
    with oracle():
        _, ref_values = _nnx_train(optax.inject_hyperparams(optax.adamw)(1e-2, weight_decay=1e-3))
    assert values == ref_values


def _nnx_lbfgs_train(tx, steps: int = 10):
    """L-BFGS through ``nnx.Optimizer``: its ``update(model, grads, **kwargs)`` passes
    ``value``, ``grad`` and ``value_fn`` on to the transformation (``nnx.as_pure`` of them),
    ``value_fn`` a function of the pure ``nnx.Param`` state, as for optax.lbfgs."""
    model = _NnxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    def loss(m):
        return gdopt.losses.l2_loss(m(_X), _Y).mean()

    @nnx.jit
    def step(model, optimizer):
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)
        value, grads = nnx.value_and_grad(loss)(model)
        value_fn = lambda params: loss(nnx.merge(graphdef, params, rest))  # noqa: E731
        optimizer.update(model, grads, value=value, grad=grads, value_fn=value_fn)
        return value

    values = [float(step(model, optimizer)) for _ in range(steps)]
    return model, values


def test_flax_nnx_optimizer_lbfgs_with_value_fn():
    model, values = _nnx_lbfgs_train(gdopt.lbfgs())
    with oracle():
        ref_model, ref_values = _nnx_lbfgs_train(optax.lbfgs())
    np.testing.assert_allclose(values, ref_values, rtol=1e-6)
    assert values[-1] < 0.2 * values[0]  # the line search's steps, not plain gradient steps
    ours, ref = nnx.state(model, nnx.Param), nnx.state(ref_model, nnx.Param)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Equinox

eqx = pytest.importorskip("equinox")


def _eqx_train(opt, steps: int = 10):
    model = eqx.nn.MLP(3, 1, 8, 1, key=jax.random.PRNGKey(2))
    state = opt.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state):
        def loss(m):
            return gdopt.losses.l2_loss(jax.vmap(m)(_X), _Y).mean()

        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, state = opt.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, value

    values = []
    for _ in range(steps):
        model, state, value = step(model, state)
        values.append(float(value))
    return model, values


def test_equinox_filter_pattern():
    _, values = _eqx_train(gdopt.adam(1e-2))
    with oracle():
        _, ref_values = _eqx_train(optax.inject_hyperparams(optax.adam)(1e-2))
    assert values == ref_values
    assert values[-1] < values[0]


def test_equinox_module_with_non_array_leaves():
    """A model's activation functions get no state and no update (stateless rules), or a
    message that says to filter the model (rules with state)."""
    model = eqx.nn.MLP(3, 1, 8, 1, key=jax.random.PRNGKey(2))
    grads = eqx.filter_grad(lambda m: jnp.mean(jax.vmap(m)(_X) ** 2))(model)
    opt = gdopt.sgd(0.1)
    state = opt.init(model)
    updates, _ = opt.update(grads, state, model)
    new = eqx.apply_updates(model, updates)
    with oracle():
        ref_opt = optax.sgd(0.1)
        ref_updates, _ = ref_opt.update(grads, ref_opt.init(model), model)
    ref = eqx.apply_updates(model, ref_updates)
    np.testing.assert_array_equal(new.layers[0].weight, ref.layers[0].weight)
    assert new.activation is model.activation
    with pytest.raises(
        TypeError, match=r"params\.activation is a .*eqx\.filter\(model, eqx\.is_array\)"
    ):
        gdopt.adam(0.1).init(model)


# ----------------------------------------------------------------------------- the migration guide


def _guide_script() -> str:
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "migration.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]


def _run_script(source: str) -> dict:
    namespace: dict = {"print": lambda *a, **k: None}
    exec(compile(source, "docs/migration.md", "exec"), namespace)  # noqa: S102
    return namespace


def test_migration_guide_script_runs_with_only_the_import_changed():
    source = _guide_script()
    assert "import optax\n" in source
    ported = source.replace("import optax\n", "import gdopt as optax\n", 1)
    ours = _run_script(ported)
    with oracle():
        ref = _run_script(source)
    assert ours["optax"] is gdopt and ref["optax"] is optax
    np.testing.assert_allclose(float(ours["loss"]), float(ref["loss"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ours["params"]), jax.tree.leaves(ref["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
