"""Tests of gdopt.batching: shapes, permutations, dropped remainders and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdopt.batching import check_batch_size, dataset_size, epoch_batches, num_batches

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
