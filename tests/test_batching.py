"""Tests of gdopt.batching: shapes, permutations, dropped remainders and errors; microbatch
against optax's (every accumulator, early stops, keywords and axes), closed forms and an
explicitly sharded batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax  # the oracle of microbatch
import optax.microbatching as om
import pytest

import gdopt
from gdopt.batching import (
    AccumulationType,
    Accumulator,
    check_batch_size,
    dataset_size,
    epoch_batches,
    microbatch,
    num_batches,
)
from tests.helpers import oracle

KEY = jax.random.PRNGKey(0)


def _data(n=10, d=3):
    x = jnp.arange(n * d, dtype=jnp.float32).reshape(n, d)
    return {"x": x, "y": jnp.arange(n, dtype=jnp.int32)}


@pytest.mark.parametrize(
    "batch_size, shape",
    [(None, (1, 10)), (1, (10, 1)), (3, (3, 3)), (5, (2, 5)), (10, (1, 10))],
)
def test_shapes(batch_size, shape):
    b = epoch_batches(KEY, _data(), batch_size)
    assert b["y"].shape == shape
    assert b["x"].shape == (*shape, 3)
    assert num_batches(10, batch_size) == shape[0]


def test_full_batch_is_the_data_in_order():
    data = _data()
    b = epoch_batches(KEY, data, None)
    np.testing.assert_array_equal(b["x"][0], data["x"])


def test_rows_stay_together():
    b = epoch_batches(KEY, _data(), 2)
    # x row i is [3i, 3i+1, 3i+2]: the shuffled x must follow the shuffled y.
    np.testing.assert_array_equal(b["x"][..., 0], 3 * b["y"])


def test_permutation_covers_distinct_indices():
    b = epoch_batches(KEY, _data(12), 4)
    np.testing.assert_array_equal(np.sort(np.asarray(b["y"]).ravel()), np.arange(12))
    assert not np.array_equal(np.asarray(b["y"]).ravel(), np.arange(12))


def test_remainder_is_dropped_but_differs_between_epochs():
    seen = set()
    for e in range(20):
        y = np.asarray(epoch_batches(jax.random.fold_in(KEY, e), _data(10), 3)["y"]).ravel()
        assert y.shape == (9,) and len(set(y.tolist())) == 9
        seen.update(y.tolist())
    assert seen == set(range(10))


def test_different_epochs_differ():
    a = epoch_batches(jax.random.fold_in(KEY, 0), _data(), 2)["y"]
    b = epoch_batches(jax.random.fold_in(KEY, 1), _data(), 2)["y"]
    assert not np.array_equal(a, b)


def test_no_shuffle_keeps_order():
    y = epoch_batches(KEY, _data(10), 4, shuffle=False)["y"]
    np.testing.assert_array_equal(y, np.arange(8).reshape(2, 4))


def test_jit_compatible():
    f = jax.jit(epoch_batches, static_argnums=2)
    a = f(KEY, _data(), 5)
    np.testing.assert_array_equal(a["y"], epoch_batches(KEY, _data(), 5)["y"])


def test_dataset_size_and_errors():
    assert dataset_size((jnp.zeros((4, 2)), jnp.zeros(4))) == 4
    with pytest.raises(ValueError, match=r"data\['x'\] has 5 examples but data\['y'\] has 4"):
        dataset_size({"x": jnp.zeros((5, 2)), "y": jnp.zeros(4)})
    with pytest.raises(ValueError, match="empty"):
        dataset_size((jnp.zeros((0, 2)), jnp.zeros(0)))
    with pytest.raises(ValueError, match="holds no arrays"):
        dataset_size(())
    with pytest.raises(ValueError, match=r"data\[1\] is a scalar"):
        dataset_size((jnp.zeros(3), jnp.zeros(())))
    with pytest.raises(ValueError, match=r"eval_data\[0\] has 3 examples"):
        dataset_size((jnp.zeros(3), jnp.zeros(2)), "eval_data")


def test_check_batch_size_errors():
    check_batch_size(None, 5)
    check_batch_size(5, 5)
    with pytest.raises(ValueError, match=r"\[1, 5\].*got 0"):
        check_batch_size(0, 5)
    with pytest.raises(ValueError, match=r"\[1, 5\].*got 6"):
        check_batch_size(6, 5)
    with pytest.raises(TypeError, match="integer"):
        check_batch_size(2.5, 5)
    with pytest.raises(TypeError, match="integer"):
        check_batch_size(True, 5)
    with pytest.raises(ValueError, match="got 11"):
        epoch_batches(KEY, _data(), 11)


# ----------------------------------------------------------------------------- microbatch

_X = jax.random.normal(jax.random.PRNGKey(3), (12, 3))
_Y = jnp.arange(12.0)
_W = jnp.array([0.5, -1.0, 2.0])


def _outputs(w, x, y):
    r = x @ w - y
    return {"loss": jnp.sum(r**2), "rows": r, "positive": jnp.sum(r > 0)}


def _rules(kind, types):
    return {"loss": getattr(types, kind), "rows": types.CONCAT, "positive": types.SUM}


def _same(ours, ref):
    assert jax.tree.structure(ours) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["SUM", "MEAN", "RUNNING_MEAN", "CONCAT"])
@pytest.mark.parametrize("real", [None, 2, "traced"])
def test_microbatch_matches_optax(kind, real):
    def run(mb, types, n_real):
        return mb(_outputs, (1, 2), 3, _rules(kind, types), num_real_microbatches=n_real)

    if real == "traced":  # under jit, a traced number of micro-batches: no recompile
        ours = jax.jit(lambda n: run(microbatch, AccumulationType, n)(_W, _X, _Y))(2)
        with oracle():
            ref = jax.jit(lambda n: run(optax.microbatch, om.AccumulationType, n)(_W, _X, _Y))(2)
    else:
        ours = run(microbatch, AccumulationType, real)(_W, _X, _Y)
        with oracle():
            ref = run(optax.microbatch, om.AccumulationType, real)(_W, _X, _Y)
    _same(ours, ref)


def test_microbatch_by_hand_and_full_batch_equivalence():
    full = _outputs(_W, _X, _Y)
    out = microbatch(_outputs, (1, 2), 4, _rules("SUM", AccumulationType))(_W, _X, _Y)
    np.testing.assert_allclose(out["loss"], full["loss"], rtol=1e-5)
    np.testing.assert_allclose(out["rows"], full["rows"], rtol=1e-6)  # CONCAT: row order kept
    assert int(out["positive"]) == int(full["positive"])
    mean = microbatch(_outputs, (1, 2), 4, _rules("MEAN", AccumulationType))(_W, _X, _Y)
    np.testing.assert_allclose(mean["loss"], full["loss"] / 3, rtol=1e-5)
    # the gradient of a summed loss, accumulated over micro-batches, is the full batch's
    grad = jax.grad(lambda w, x, y: jnp.sum((x @ w - y) ** 2))
    np.testing.assert_allclose(
        microbatch(grad, (1, 2), 2)(_W, _X, _Y), grad(_W, _X, _Y), rtol=1e-5, atol=1e-5
    )
    # column-major split: micro-batch i holds rows i, i + n, i + 2n (n = 3 micro-batches)
    keep_all = Accumulator(
        lambda s: jnp.zeros((3, *s.shape), s.dtype),
        lambda c, x, i: c.at[i].set(x),
        lambda c: c,
        lambda xs: xs,
    )
    parts = microbatch(lambda v: v, 0, 4, keep_all)(jnp.arange(12))
    assert parts.tolist() == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]


def test_microbatch_keywords_axes_and_none():
    assert microbatch(_outputs, 1, None) is _outputs

    def fun(w, *, xt, y):  # xt: the features transposed, its batch on axis 1
        return {"loss": jnp.sum((xt.T @ w - y) ** 2), "rows": xt.T @ w}

    rules = {"loss": AccumulationType.SUM, "rows": AccumulationType.CONCAT}
    ours = microbatch(fun, (), 6, rules, argnames=("xt", "y"), in_axes=(1, 0))(_W, xt=_X.T, y=_Y)
    np.testing.assert_allclose(ours["loss"], jnp.sum((_X @ _W - _Y) ** 2), rtol=1e-5)
    np.testing.assert_allclose(ours["rows"], _X @ _W, rtol=1e-6)
    with oracle():
        ref_rules = {"loss": om.AccumulationType.SUM, "rows": om.AccumulationType.CONCAT}
        ref = optax.microbatch(fun, (), 6, ref_rules, argnames=("xt", "y"), in_axes=(1, 0))(
            _W, xt=_X.T, y=_Y
        )
    _same(ours, ref)
    # optax's enum members are understood by name (a program ported from optax)
    a = microbatch(_outputs, (1, 2), 3, _rules("MEAN", om.AccumulationType))(_W, _X, _Y)
    b = microbatch(_outputs, (1, 2), 3, _rules("MEAN", AccumulationType))(_W, _X, _Y)
    _same(a, b)
    assert gdopt.microbatch is microbatch


def test_microbatch_running_mean_in_bfloat16():
    x = _X.astype(jnp.bfloat16)
    out = microbatch(lambda x: jnp.mean(x), 0, 4, AccumulationType.RUNNING_MEAN)(x)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(out), float(jnp.mean(_X)), atol=2e-2)


def test_microbatch_bad_input_names_the_argument():
    f = microbatch(_outputs, (1, 2), 5)
    with pytest.raises(ValueError, match="microbatch_size 5 must divide the batch size 12"):
        f(_W, _X, _Y)
    with pytest.raises(ValueError, match=r"argument 1 has 12 rows but argument 2 has 10"):
        microbatch(_outputs, (1, 2), 2)(_W, _X, _Y[:10])
    with pytest.raises(ValueError, match="MEAN and RUNNING_MEAN accumulators need floating"):
        microbatch(lambda x: jnp.sum(x), 0, 2, AccumulationType.MEAN)(jnp.arange(4))
    with pytest.raises(TypeError, match="accumulator must be an Accumulator"):
        microbatch(_outputs, 1, 2, "sum")
    with pytest.raises(ValueError, match="in_axes has 1 entries but there are 2 batch"):
        microbatch(_outputs, (1, 2), 2, in_axes=(0,))
    with pytest.raises(ValueError, match="in_axes must be non-negative axis numbers, got -1"):
        microbatch(_outputs, 1, 2, in_axes=-1)
    with pytest.raises(ValueError, match="microbatch_size must be a positive integer, got 0"):
        microbatch(_outputs, 1, 0)
    with pytest.raises(TypeError, match="microbatch_size must be an integer"):
        microbatch(_outputs, 1, 2.5)
    with pytest.raises(ValueError, match="names argument 5, but the function was called"):
        microbatch(_outputs, 5, 2)(_W, _X, _Y)
    with pytest.raises(ValueError, match="argnames names 'z'"):
        microbatch(_outputs, (), 2, argnames="z")(_W, _X, _Y)
    with pytest.raises(TypeError, match="fun must be a function"):
        microbatch(3, 0, 2)


def test_microbatch_keeps_an_explicit_batch_sharding():
    # a mesh whose axes are explicit (sharding in types): the micro-batches keep the batch
    # axis' sharding and CONCAT gives the rows back sharded as they came (one CPU device)
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Explicit,))
    x = jnp.arange(24.0).reshape(12, 2)
    with jax.set_mesh(mesh):
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        rows = jax.jit(microbatch(lambda v: 2 * v, 0, 4, AccumulationType.CONCAT))(xs)
        total = microbatch(lambda v: jnp.sum(v, axis=0), 0, 4)(xs)
    assert tuple(rows.sharding.spec)[0] == "data"
    np.testing.assert_allclose(rows, 2 * x)
    np.testing.assert_allclose(total, jnp.sum(x, axis=0))
