"""``gdopt/engine/_frameworks.py``: ``fit`` on an Equinox module or a Flax NNX model passed
whole.

Each model is trained by ``fit`` and, by hand, on its filtered arrays over the same
shuffles (``epoch_batches(fold_in(key, epoch))``, gdopt's optimizer step by step): the
parameters agree to 1e-6. The result is a model of the same kind with its static part
untouched; packing, eval data, checkpoints, resuming and the compile cache work as for a
pytree; a loss written for arrays, or a model with nothing to train, is refused clearly."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt.batching import epoch_batches
from tests.helpers import bad_inputs

eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")

_X = jax.random.normal(jax.random.PRNGKey(0), (48, 3))
_Y = jnp.sin(_X.sum(axis=1, keepdims=True))
DATA = (_X, _Y)
KEY = jax.random.PRNGKey(7)
EPOCHS, BATCH = 6, 16


def _close(a, b, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


def _by_hand(loss_of_arrays, arrays, optimizer, epochs=EPOCHS, batch_size=BATCH, key=KEY):
    """The same training as ``fit``'s, written out: the epoch's shuffle, then one step of
    ``optimizer`` per batch."""
    state = optimizer.init(arrays)

    @jax.jit
    def step(arrays, state, batch):
        grads = jax.grad(loss_of_arrays)(arrays, batch)
        updates, state = optimizer.update(grads, state, arrays)
        return gdopt.apply_updates(arrays, updates), state

    for epoch in range(epochs):
        batches = epoch_batches(jax.random.fold_in(key, epoch), DATA, batch_size)
        for i in range(batches[0].shape[0]):
            arrays, state = step(arrays, state, jax.tree.map(lambda b: b[i], batches))  # noqa: B023
    return arrays


# ----------------------------------------------------------------------------- Equinox


def _eqx_model():
    # a custom final activation (a plain function) and tanh: non-array fields to keep
    return eqx.nn.MLP(
        3, 1, 8, 2, activation=jax.nn.tanh, final_activation=lambda z: 0.5 * z,
        key=jax.random.PRNGKey(2),
    )  # fmt: skip


def eqx_loss(model, batch):
    x, y = batch
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


@pytest.mark.parametrize("pack", [False, True])
def test_equinox_module_trained_like_its_filtered_arrays_by_hand(pack):
    model = _eqx_model()
    opt = gdopt.adam(1e-2)
    res = gdopt.fit(eqx_loss, model, opt, DATA, epochs=EPOCHS, batch_size=BATCH, key=KEY, pack=pack)
    assert res.packed is pack
    assert type(res.params) is type(model)
    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    expected = _by_hand(lambda a, b: eqx_loss(eqx.combine(a, static), b), arrays, opt)
    trained, trained_static = eqx.partition(res.params, eqx.is_inexact_array)
    _close(trained, expected)
    # the static part is untouched: the same function objects and fields
    assert res.params.activation is model.activation
    assert res.params.final_activation is model.final_activation
    assert eqx.tree_equal(trained_static, static)
    assert res.params.width_size == 8 and res.params.depth == 2
    # the state and opt_state are those of the arrays; the model passed in is unchanged
    _close(res.state.params, trained)
    assert jax.tree.structure(res.opt_state) == jax.tree.structure(opt.init(arrays))
    np.testing.assert_array_equal(model.layers[0].weight, _eqx_model().layers[0].weight)
    assert res.history.train_loss[-1] < res.history.train_loss[0]


class _Indexed(eqx.Module):
    """An MLP with an integer array field (an index buffer): not trained, kept as it is."""

    mlp: eqx.nn.MLP
    index: jax.Array

    def __call__(self, x):
        return self.mlp(x)[self.index]


def test_equinox_integer_arrays_stay_in_the_static_part():
    model = _Indexed(_eqx_model(), jnp.array([0], jnp.int32))
    res = gdopt.fit(eqx_loss, model, gdopt.sgd(0.1), DATA, epochs=2)
    assert res.params.index is model.index
    assert all(jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(res.state.params))
    assert res.history.train_loss[-1] < res.history.train_loss[0]


def test_equinox_eval_data_accuracy_and_deterministic_objective():
    model = _eqx_model()
    accuracy = lambda m, b: -eqx_loss(m, b)  # noqa: E731  (a metric of the model too)
    res = gdopt.fit(eqx_loss, model, gdopt.sgd(0.1), DATA, epochs=3, eval_data=DATA,
                    accuracy_fn=accuracy, sharpness_every=3)  # fmt: skip
    np.testing.assert_allclose(res.history.eval_loss[-1], eqx_loss(res.params, DATA), rtol=1e-5)
    np.testing.assert_allclose(res.history.eval_accuracy, -res.history.eval_loss, rtol=1e-6)
    # the sharpness is the Hessian's of the loss of the module's arrays
    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    top = gdopt.landscape.hessian_eigenvalues(
        lambda a, b: eqx_loss(eqx.combine(a, static), b), eqx.filter(res.params, eqx.is_inexact_array),
        DATA,
    )[0]  # fmt: skip
    np.testing.assert_allclose(res.history.sharpness[-1], top, rtol=1e-3)
    # data=None: loss_fn(model), one full step per epoch
    full = lambda m: eqx_loss(m, DATA)  # noqa: E731
    det = gdopt.fit(full, model, gdopt.sgd(0.1), epochs=3)
    ref = gdopt.fit(lambda a: full(eqx.combine(a, static)), arrays, gdopt.sgd(0.1), epochs=3)
    _close(eqx.filter(det.params, eqx.is_inexact_array), ref.params)
    assert det.params.activation is model.activation


def test_equinox_checkpoint_resume_and_compile_cache(tmp_path):
    model = _eqx_model()
    opt = gdopt.adam(1e-2)
    kw = dict(batch_size=BATCH, key=KEY)
    whole = gdopt.fit(eqx_loss, model, opt, DATA, epochs=EPOCHS, **kw)
    again = gdopt.fit(eqx_loss, model, opt, DATA, epochs=EPOCHS, **kw)
    assert again.compile_time == 0.0  # the wrapped loss is cached: the programs are reused
    d = tmp_path / "run"
    gdopt.fit(eqx_loss, model, opt, DATA, epochs=2, checkpoint_dir=d, **kw)
    resumed = gdopt.fit(eqx_loss, model, opt, DATA, epochs=EPOCHS, checkpoint_dir=d, resume=True,
                        **kw)  # fmt: skip
    assert type(resumed.params) is type(model) and resumed.epochs_run == EPOCHS
    part = gdopt.fit(eqx_loss, model, opt, DATA, epochs=3, **kw)
    more = gdopt.fit(eqx_loss, model, opt, DATA, epochs=EPOCHS, resume_from=part, **kw)
    for res in (resumed, more):
        leaves = jax.tree.leaves(eqx.filter(res.params, eqx.is_inexact_array))
        for x, y in zip(leaves, jax.tree.leaves(eqx.filter(whole.params, eqx.is_inexact_array)),
                        strict=True):  # fmt: skip
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(res.history.train_loss, whole.history.train_loss)


# ----------------------------------------------------------------------------- Flax NNX


class _NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 8, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)
        self.scale = 0.5  # a plain attribute
        self.calls = nnx.Variable(jnp.array(3, jnp.int32))  # non-Param state, held fixed

    def __call__(self, x):
        return self.scale * self.out(jnp.tanh(self.hidden(x)))


def nnx_loss(model, batch):
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


@pytest.mark.parametrize("pack", [False, True])
def test_nnx_model_trained_like_its_params_by_hand(pack):
    model = _NnxMLP(nnx.Rngs(0))
    before = nnx.as_pure(nnx.state(model, nnx.Param))
    opt = gdopt.sgd(0.1, momentum=0.9)
    res = gdopt.fit(nnx_loss, model, opt, DATA, epochs=EPOCHS, batch_size=BATCH, key=KEY, pack=pack)
    assert res.packed is pack
    assert type(res.params) is _NnxMLP and res.params is not model
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    expected = _by_hand(
        lambda p, b: nnx_loss(nnx.merge(graphdef, p, rest), b), nnx.as_pure(params), opt
    )
    _close(nnx.as_pure(nnx.state(res.params, nnx.Param)), expected)
    # the rest of the model is untouched, and the model passed in is not modified
    assert res.params.scale == 0.5 and int(res.params.calls[...]) == 3
    _close(nnx.as_pure(nnx.state(model, nnx.Param)), before, atol=0)
    assert res.history.train_loss[-1] < res.history.train_loss[0]
    # the optimizer state is the one nnx.Optimizer would hold (of the pure Param state)
    assert jax.tree.structure(res.opt_state) == jax.tree.structure(opt.init(expected))


def test_nnx_flax_linear_compile_cache_and_checkpoint(tmp_path):
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(1))
    kw = dict(epochs=30, epochs_per_call=10)
    res = gdopt.fit(nnx_loss, model, gdopt.sgd(0.2), DATA, **kw)
    assert isinstance(res.params, nnx.Linear)
    x = np.c_[np.asarray(_X), np.ones(len(_X))]
    coef, *_ = np.linalg.lstsq(x, np.asarray(_Y, np.float64), rcond=None)
    got = np.r_[np.asarray(res.params.kernel[...]).ravel(), np.asarray(res.params.bias[...])]
    assert np.abs(got - coef.ravel()).max() < 0.05  # near least squares after 30 steps
    assert gdopt.fit(nnx_loss, model, gdopt.sgd(0.2), DATA, **kw).compile_time == 0.0
    # the nnx.State of the arrays is checkpointed and restored like any pytree
    d = tmp_path / "run"
    gdopt.fit(nnx_loss, model, gdopt.sgd(0.2), DATA, **{**kw, "epochs": 10}, checkpoint_dir=d)
    back = gdopt.fit(nnx_loss, model, gdopt.sgd(0.2), DATA, **kw, checkpoint_dir=d, resume=True)
    assert isinstance(back.params, nnx.Linear)
    np.testing.assert_array_equal(back.params.kernel[...], res.params.kernel[...])
    np.testing.assert_array_equal(back.history.train_loss, res.history.train_loss)


# ----------------------------------------------------------------------------- bad input

BAD = bad_inputs(__file__)


def test_a_loss_written_for_arrays_is_refused_naming_the_model():
    BAD.add("loss indexes a pytree of arrays but receives the Equinox module")
    with pytest.raises(TypeError, match=r"calls loss_fn\(model, batch\) with the whole model.*"
                                        r"'MLP' object is not subscriptable"):  # fmt: skip
        gdopt.fit(lambda p, b: jnp.mean(b[0] @ p["w"]), _eqx_model(), gdopt.sgd(0.1), DATA,
                  epochs=1)  # fmt: skip
    BAD.add("loss_fn(params) on an NNX model with data")
    with pytest.raises(TypeError, match=r"Flax NNX model \(_NnxMLP\).*loss_fn\(model, batch\)"):
        gdopt.fit(lambda m: nnx_loss(m, DATA), _NnxMLP(nnx.Rngs(0)), gdopt.sgd(0.1), DATA,
                  epochs=1)  # fmt: skip


def test_a_model_without_parameters_is_refused():
    BAD.add("Equinox module without arrays")
    with pytest.raises(ValueError, match=r"Equinox model \(Lambda\) with no parameter to train"):
        gdopt.fit(eqx_loss, eqx.nn.Lambda(jnp.tanh), gdopt.sgd(0.1), DATA, epochs=1)
    BAD.add("NNX model without nnx.Param")
    with pytest.raises(ValueError, match=r"Flax NNX model \(Dropout\) with no parameter"):
        gdopt.fit(nnx_loss, nnx.Dropout(0.5), gdopt.sgd(0.1), DATA, epochs=1)


def test_gdopt_imports_neither_framework():
    code = (
        "import sys, gdopt, jax.numpy as jnp\n"
        "gdopt.fit(lambda p: jnp.sum(p ** 2), jnp.ones(2), gdopt.sgd(0.1), epochs=2)\n"
        "assert not {'equinox', 'flax'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
