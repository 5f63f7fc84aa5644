"""The training engine: one compiled step (:func:`make_step`) and compiled epochs (:func:`fit`).

* :mod:`~gdopt.engine.step`: :func:`make_step`, one ``jax.jit``-compiled pure step
  ``step(params, opt_state, batch) -> (params, opt_state, loss)`` for loops you write yourself;
* :mod:`~gdopt.engine.core`: the pure, compiled core (:func:`make_train_fn`, :class:`FitState`,
  :class:`History`): epochs in one compiled loop over a training-state pytree, so it can be
  jitted, vmapped (sweeps) and sharded;
* :mod:`~gdopt.engine.fit`: :func:`fit`, the host loop around the core, and :class:`FitResult`.

The engine sees parameters through a :class:`~gdopt.packing.Layout` (the user's pytree, or
packed buffers), never packing's internals.
"""

from gdopt.engine.core import FitState, History, init_fit_state, make_train_fn
from gdopt.engine.fit import FitResult, fit
from gdopt.engine.step import make_step
from gdopt.packing import AUTO_PACK_MIN_LEAVES, should_pack

__all__ = [
    "make_step",
    "FitState",
    "init_fit_state",
    "make_train_fn",
    "History",
    "FitResult",
    "fit",
    "should_pack",
    "AUTO_PACK_MIN_LEAVES",
]
