"""``fit``: train for a number of epochs, compiled, with a thin host loop around the core.

The parts, in the order a call runs them: argument checks, the layout (packed or not,
:func:`gdopt.packing.layout_for`), the set-up of the training state, the compiled programs
(reused across calls, :mod:`gdopt.engine._compile`), the host loop (progress, stopping) and
the :class:`FitResult`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt._validation import check_int
from gdopt.base import GradientTransformation
from gdopt.batching import check_batch_size, dataset_size
from gdopt.engine import _compile
from gdopt.engine._checks import check_epochs, check_on_divergence, check_tol
from gdopt.engine.core import FitState, History, init_fit_state, make_train_fn
from gdopt.packing import Layout, layout_for
from gdopt.tree import check_float_leaves

__all__ = ["FitResult", "fit"]


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: the trained parameters (the last finite ones if training diverged).
      opt_state: the optimizer state that goes with them; to continue training pass it
        back with a new ``key`` (the epoch count, which seeds the shuffles, restarts at 0).
      history: a :class:`~gdopt.History` of NumPy arrays, one entry per epoch run.
      converged: the ``tol`` stopping rule fired.
      diverged: a step produced nan/inf and training stopped.
      epochs_run: epochs run (the diverging epoch counts).
      steps_run: optimizer steps applied.
      stop_reason: why training stopped, in words.
      wall_time: seconds spent in :func:`fit`, compilation included.
      compile_time: seconds spent compiling (0 when every program came from the cache of an
        earlier call); ``wall_time - compile_time`` is the time spent training.
      packed: whether the parameters and optimizer state ran packed (one buffer per dtype).
    """

    params: Any
    opt_state: Any
    history: History
    converged: bool
    diverged: bool
    epochs_run: int
    steps_run: int
    stop_reason: str
    wall_time: float
    compile_time: float
    packed: bool = False


def _fresh_copy(tree: Any) -> Any:
    """New buffers with strong dtypes: fit donates its carry, never the caller's arrays."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.result_type(x), copy=True), tree)


def _setup(layout: Layout, optimizer: GradientTransformation) -> Callable[..., FitState]:
    def setup(params: Any, opt_state: Any) -> FitState:
        carried = layout.carry(params)
        state = layout.carry_state(optimizer, carried, opt_state)
        return _fresh_copy(init_fit_state(carried, state))

    return jax.jit(setup)


def _stop_reason(state: FitState, diverged: bool, converged: bool, tol, patience) -> str:
    epochs_run, steps_run = int(state.epoch), int(state.step)
    if diverged:
        where = f"epoch {int(state.diverged_epoch)}"
        if int(state.diverged_step):
            where += f" (step {int(state.diverged_step)})"
        if bool(state.restored):
            what = (
                "the parameters became nan/inf; params are those of the start of that epoch "
                f"(after {steps_run} steps)"
            )
            if int(state.diverged_step):
                what = "loss became nan/inf and " + what
        else:
            what = "loss became nan/inf; params are the last finite ones"
        return f"diverged at {where}: {what}; try a smaller learning_rate"
    if converged:
        return (
            f"converged at epoch {epochs_run}: the relative change of the train loss stayed "
            f"below tol={tol:g} for {patience} consecutive epoch(s)"
        )
    return f"completed {epochs_run} epochs"


def _history(chunks: list[History], evaluated: bool, accuracy: bool) -> History:
    train_loss, eval_loss, eval_acc, ep = (
        np.concatenate([getattr(h, f) for h in chunks]) for f in History._fields
    )
    ran = ep > 0
    empty = np.zeros((0,), np.float32)
    return History(
        train_loss=train_loss[ran],
        eval_loss=eval_loss[ran] if evaluated else empty,
        eval_accuracy=eval_acc[ran] if (evaluated and accuracy) else empty,
        epochs=ep[ran].astype(np.int64),
    )


def fit(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    optimizer: GradientTransformation,
    data: Any,
    *,
    epochs: int,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    eval_data: Any = None,
    accuracy_fn: Callable[[Any, Any], jax.Array] | None = None,
    tol: float | None = None,
    patience: int = 1,
    opt_state: Any = None,
    epochs_per_call: int | None = None,
    progress: bool = False,
    on_divergence: str = "stop",
    pack: bool | None = None,
) -> FitResult:
    """Train ``params`` to minimise ``loss_fn`` over ``data`` with compiled epochs.

    The epochs run inside one compiled function (:func:`~gdopt.make_train_fn`, its carry
    donated): each epoch reshuffles ``data`` on the device and scans over its batches, so
    there is no Python call and no host synchronisation per step. The host calls it
    ``epochs_per_call`` epochs at a time; between calls it updates the progress bar
    (``tqdm``) and checks whether training stopped. The caller's ``params``/``opt_state`` are
    copied first, never donated.

    Compiled programs are reused: a later call with the same ``loss_fn`` (and
    ``accuracy_fn``) object, an optimizer of the same structure (the same factory and static
    arguments: hyperparameter *values* are data in its state), the same options and the
    same shapes and dtypes compiles nothing (``compile_time`` is then 0). Like ``jax.jit``,
    this trusts the identity of ``loss_fn``: define it once, not in a loop.

    Stopping:

    - divergence: a step whose loss is nan/inf is not applied and training stops;
      ``on_divergence="stop"`` returns the parameters it was computed at with
      ``diverged=True``, ``"raise"`` raises ``FloatingPointError``. The parameters are also
      checked at the end of every epoch; if they are not finite, those of the start of that
      epoch are returned (see :func:`~gdopt.make_train_fn`). NaN params are never returned.
    - convergence (``tol``): stops after ``patience`` consecutive epochs whose mean train
      loss changed by less than ``tol`` relatively, checked inside the compiled loop (the
      exact epoch, whatever ``epochs_per_call``).

    Packed execution: with ``pack`` (by default when the optimizer is packable and ``params``
    has at least :data:`~gdopt.packing.AUTO_PACK_MIN_LEAVES` arrays), the parameters and
    optimizer state live in one contiguous buffer per dtype for the whole run
    (:mod:`gdopt.packing`): ``loss_fn`` still receives the same pytree (slices of the
    buffers), the gradient is packed inside the step, and the optimizer updates each buffer
    in one fused loop instead of one loop per array. ``params`` and ``opt_state`` come back
    unpacked, so nothing changes for the caller; the numbers are the same (to float32
    rounding of the summation order). ``FitResult.packed`` says which way it ran.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` (the mean loss over the batch).
      params: the initial parameters (a pytree of floating-point arrays).
      optimizer: a gradient transformation, e.g. ``gdopt.adam(1e-3)``.
      data: a pytree of arrays sharing the example axis, e.g. ``(x, y)``.
      epochs: the number of passes over ``data`` (>= 1).
      batch_size: ``None`` for batch gradient descent (one step per epoch), ``1`` for
        per-example SGD, ``k`` for mini-batches of ``k`` (``n % k`` examples, different each
        epoch, are left out of each epoch).
      key: PRNG key for the shuffling (default ``jax.random.PRNGKey(0)``).
      eval_data: held-out data, evaluated in full after every epoch (loss and accuracy).
      accuracy_fn: ``accuracy_fn(params, batch) -> scalar``, recorded on ``eval_data``.
      tol: relative train-loss change below which training has converged; ``None``: never.
      patience: consecutive epochs below ``tol`` needed.
      opt_state: a state to continue from (default ``optimizer.init(params)``).
      epochs_per_call: epochs per compiled call; default all of them, or about 1/20 of them
        with ``progress``.
      progress: show a ``tqdm`` progress bar (on stderr).
      on_divergence: ``"stop"`` or ``"raise"``.
      pack: ``True`` run packed, ``False`` run on the pytree, ``None`` (default) decide as
        described above.

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: bad ``epochs``, ``batch_size``, ``tol``, ``patience``, ``epochs_per_call``
        or ``on_divergence``, empty data, or arrays in ``data`` of different lengths.
      TypeError: a parameter leaf that is not floating point (the key path is named).
      FloatingPointError: training diverged and ``on_divergence="raise"``.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    >>> y = x @ jnp.array([1.0, -2.0, 0.5])
    >>> loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)
    >>> res = gdopt.fit(loss, jnp.zeros(3), gdopt.adam(0.1), (x, y), epochs=50, batch_size=16)
    >>> [round(v, 2) for v in res.params.tolist()], res.epochs_run, res.steps_run
    ([1.0, -2.0, 0.5], 50, 200)
    """
    start = time.perf_counter()
    # 1. arguments
    epochs = check_epochs("epochs", epochs)
    patience = check_epochs("patience", patience)
    check_tol(tol)
    check_on_divergence(on_divergence)
    n = dataset_size(data)
    check_batch_size(batch_size, n)
    if eval_data is not None:
        dataset_size(eval_data, "eval_data")
    check_float_leaves(params)
    if epochs_per_call is None:
        chunk = math.ceil(epochs / 20) if progress else epochs
    else:
        chunk = min(check_int("epochs_per_call", epochs_per_call, 1), epochs)
    if key is None:
        key = jax.random.PRNGKey(0)
    layout = layout_for(params, optimizer, pack)
    data = jax.tree.map(jnp.asarray, data)
    if eval_data is not None:
        eval_data = jax.tree.map(jnp.asarray, eval_data)
    stop_epoch = jnp.asarray(epochs, jnp.int32)

    # 2. the training state
    t0 = time.perf_counter()
    if opt_state is None:
        opt_state = layout.init_state(optimizer, params)
    opt_key, keep = _compile.optimizer_key(optimizer)
    setup, setup_time = _compile.compiled(
        ("setup", opt_key, layout.packed),
        keep,
        lambda: _setup(layout, optimizer),
        params,
        opt_state,
    )
    state = setup(params, opt_state)
    # the first set-up of a kind (eager init, compile) counts as compilation
    compile_time = time.perf_counter() - t0 if setup_time else 0.0

    # 3. the training program
    options = (chunk, batch_size, tol, patience, layout.packed)
    program_key = ("train", loss_fn, accuracy_fn, opt_key, options)

    def build() -> Any:
        train = make_train_fn(
            loss_fn,
            optimizer,
            n_epochs=chunk,
            batch_size=batch_size,
            accuracy_fn=accuracy_fn,
            tol=tol,
            patience=patience,
            pack=layout,
        )
        return jax.jit(train, donate_argnums=0)

    run_chunk, seconds = _compile.compiled(
        program_key, keep, build, state, data, key, eval_data, stop_epoch
    )
    compile_time += seconds

    # 4. the host loop
    chunks: list[History] = []
    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=epochs, unit="epoch", desc="fit", leave=True)
    try:
        while True:
            state, hist = run_chunk(state, data, key, eval_data, stop_epoch)
            hist = jax.device_get(hist)
            epoch, diverged, converged = (
                int(state.epoch),
                bool(state.diverged),
                bool(state.converged),
            )
            chunks.append(hist)
            if pbar is not None:
                ran = hist.epochs > 0
                pbar.update(int(np.sum(ran)))
                if np.any(ran):
                    post = {"loss": f"{hist.train_loss[ran][-1]:.4g}"}
                    if accuracy_fn is not None and eval_data is not None:
                        post["acc"] = f"{hist.eval_accuracy[ran][-1]:.4f}"
                    pbar.set_postfix(post)
            if diverged or converged or epoch >= epochs:
                break
    finally:
        if pbar is not None:
            pbar.close()

    # 5. the result
    state = jax.block_until_ready(state)
    wall_time = time.perf_counter() - start
    history = _history(chunks, eval_data is not None, accuracy_fn is not None)
    stop_reason = _stop_reason(state, diverged, converged, tol, patience)
    if diverged and on_divergence == "raise":
        raise FloatingPointError(stop_reason)
    return FitResult(
        params=layout.restore(state.params),
        opt_state=layout.restore_state(state.opt_state),
        history=history,
        converged=converged,
        diverged=diverged,
        epochs_run=int(state.epoch),
        steps_run=int(state.step),
        stop_reason=stop_reason,
        wall_time=wall_time,
        compile_time=compile_time,
        packed=layout.packed,
    )
