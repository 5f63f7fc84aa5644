"""``gdopt/_control.py``: ``cond``, ``while_loop`` and ``scan`` compute what ``lax``'s compute,
concrete (eager) and traced, and compile nothing per eager call after the first."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _control
from tests.helpers import counting_compiles


def _branches():
    return (lambda x, y: x * 2 + y), (lambda x, y: x - y)


def _loop():
    return (lambda c: c[0] < 10.0), (lambda c: (c[0] * 1.5 + 1.0, c[1] + 1))


def _step(c, x):
    return c + x, c * x


def test_cond_eager_and_traced_equal_lax():
    x, y = jnp.arange(3.0), jnp.ones(3)
    for pred in (True, False):
        t, f = _branches()
        expected = jax.lax.cond(pred, t, f, x, y)
        np.testing.assert_array_equal(_control.cond(jnp.asarray(pred), t, f, x, y), expected)
        traced = jax.jit(lambda p, x, y: _control.cond(p, *_branches(), x, y))(pred, x, y)
        np.testing.assert_array_equal(traced, expected)


def test_while_loop_eager_and_traced_equal_lax():
    init = (jnp.asarray(0.5), jnp.asarray(0, jnp.int32))
    expected = jax.lax.while_loop(*_loop(), init)
    for got in (
        _control.while_loop(*_loop(), init),
        jax.jit(lambda c: _control.while_loop(*_loop(), c))(init),
    ):
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
    # a condition that is traced only inside (a traced bound) hands over to lax
    bounded = jax.jit(
        lambda n: _control.while_loop(lambda c: c < n, lambda c: c + 2, jnp.asarray(0))
    )
    assert int(bounded(5)) == 6


def test_scan_eager_and_traced_equal_lax():
    xs = jnp.arange(1.0, 5.0)
    for reverse in (False, True):
        expected = jax.lax.scan(_step, jnp.asarray(1.0), xs, reverse=reverse)
        eager = _control.scan(_step, jnp.asarray(1.0), xs, reverse=reverse)
        traced = jax.jit(lambda c, xs, r=reverse: _control.scan(_step, c, xs, reverse=r))(
            jnp.asarray(1.0), xs
        )
        for got in (eager, traced):
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])
    carry, ys = _control.scan(lambda c, x: (c + x, None), jnp.asarray(0.0), xs)
    assert float(carry) == 10.0 and ys is None


def test_eager_calls_compile_nothing_after_the_first():
    x, y = jnp.arange(3.0), jnp.ones(3)
    counts = []
    for i in range(4):
        with counting_compiles() as c:
            t, f = _branches()  # fresh closures, as an update builds them at every step
            out = (
                _control.cond(jnp.asarray(i % 2 == 0), t, f, x, y),
                _control.while_loop(*_loop(), (x[1] + 0.5, jnp.asarray(0, jnp.int32))),
                _control.scan(_step, x[0], x),
            )
            jax.block_until_ready(out)
        counts.append(c.count)
    assert counts[2:] == [0, 0], f"compilations per eager call: {counts}"
