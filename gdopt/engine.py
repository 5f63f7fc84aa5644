"""The training engine: one compiled step (:func:`make_step`) and compiled epochs (:func:`fit`).

:func:`make_step` returns ``step(params, opt_state, batch) -> (params, opt_state, loss)``,
one ``jax.jit``-compiled pure step for loops you write yourself.

:func:`fit` trains for a number of epochs with no Python call and no host synchronisation
per step: its core (:func:`make_train_fn`) is a pure function of
``(state, data, key, eval_data)`` that runs ``lax.scan`` over epochs, each epoch shuffling on
the device and running ``lax.scan`` over its batches. All training state (parameters,
optimizer state, counters, the divergence and convergence flags) is one pytree of arrays,
:class:`FitState`, so the core can be ``jax.vmap``-ed over learning rates or seeds (the
hyperparameters of gdopt's named optimizers live in their state, see
:func:`gdopt.set_hyperparams`) and sharded. The host loop around it only reports progress and
assembles the :class:`FitResult`.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gdopt.base import GradientTransformation, apply_updates
from gdopt.batching import check_batch_size, dataset_size, epoch_batches
from gdopt.packing import Packed, pack_state, packed_optimizer, unpack, unpack_state
from gdopt.packing import pack as _pack_tree
from gdopt.transforms._core import is_elementwise
from gdopt.tree import check_float_leaves, tree_all_finite, tree_where

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

_DIVERGENCE_MODES = ("stop", "raise")

#: :func:`fit` packs by default from this many parameter arrays on (see :func:`should_pack`).
AUTO_PACK_MIN_LEAVES = 64


def should_pack(params: Any, optimizer: GradientTransformation) -> bool:
    """Whether :func:`fit` runs packed by default: an elementwise optimizer and at least
    :data:`AUTO_PACK_MIN_LEAVES` parameter arrays.

    Packing replaces the optimizer's per-array loops by one loop per buffer, but costs a
    copy of each matrix out of its buffer in the forward pass and one write of each
    gradient into the packed gradient. Measured on 2 CPU cores (``benchmarks/results``):
    it pays off for models with many small arrays and not for a few large ones (an MLP
    784-512-512-10 with 6 arrays trains a little slower packed).

    >>> import gdopt, jax.numpy as jnp
    >>> should_pack([jnp.zeros(3)] * 100, gdopt.adam(1e-3)), should_pack([jnp.zeros(3)] * 4, gdopt.adam(1e-3))
    (True, False)
    >>> should_pack([jnp.zeros(3)] * 100, gdopt.lamb(1e-3))   # per-array trust ratios
    False
    """
    return is_elementwise(optimizer) and len(jax.tree.leaves(params)) >= AUTO_PACK_MIN_LEAVES


def make_step(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    has_aux: bool = False,
    donate: bool = True,
    jit: bool = True,
    pack: bool = False,
) -> Callable[..., tuple]:
    """Build one training step: gradient, optimizer update and parameter update.

    The step computes ``loss, grads = jax.value_and_grad(loss_fn)(params, batch)``, then
    ``updates, opt_state = optimizer.update(grads, opt_state, params, value=loss, grad=grads,
    value_fn=lambda p: loss_fn(p, batch), **extra)`` (``value`` serves optimizers that use the
    loss, e.g. Polyak step sizes; ``grad``/``value_fn`` serve line searches and L-BFGS, which
    re-evaluate the loss on the same batch; transforms that do not need them ignore them) and ``params = apply_updates(params, updates)``.

    With ``jit=True`` the step is compiled with ``jax.jit``; calls with the same shapes and
    dtypes reuse the compiled program. With ``donate=True`` (the default) the buffers of
    ``params`` and ``opt_state`` are donated (``donate_argnums=(0, 1)``), so XLA writes the new
    values in place: **the arrays you pass as params and opt_state are deleted by the call**;
    keep using the ones it returns (``params, opt_state, loss = step(params, opt_state, b)``)
    and copy them first if you need the old values. Both arguments are always used by the step
    (and ``keep_unused=True`` is set), so the donation is never silently dropped. Do not pass
    the same array in both (e.g. an optimizer state that holds the params object itself).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` (or ``-> (scalar, aux)`` with
        ``has_aux``).
      optimizer: a gradient transformation (``init``/``update`` pair).
      has_aux: ``loss_fn`` returns ``(loss, aux)``; the step then returns
        ``(params, opt_state, loss, aux)``.
      donate: donate the ``params`` and ``opt_state`` buffers (only with ``jit``).
      jit: compile with ``jax.jit``; ``False`` returns the plain function (to use inside
        your own ``jit``/``scan``/``vmap``).
      pack: the step takes and returns packed parameters (a :class:`~gdopt.packing.Packed`
        from :func:`gdopt.pack`) and the state of ``packed_optimizer(optimizer)``: pack once,
        step many times, :func:`gdopt.unpack` at the end. ``loss_fn`` still receives the
        unpacked pytree (slices of the buffers); the gradient is packed inside the step and
        an elementwise optimizer updates whole buffers (see :mod:`gdopt.packing`).

    Returns:
      ``step(params, opt_state, batch, **extra) -> (params, opt_state, loss)``; keyword
      ``extra`` arguments are passed on to ``optimizer.update``.

    >>> import gdopt, jax.numpy as jnp
    >>> loss = lambda p, b: jnp.mean((p["w"] * b[0] - b[1]) ** 2)
    >>> opt = gdopt.sgd(0.1)
    >>> step = make_step(loss, opt)
    >>> params = {"w": jnp.array(0.0)}
    >>> state = opt.init(params)
    >>> batch = (jnp.array([1.0, 2.0]), jnp.array([2.0, 4.0]))
    >>> for _ in range(50):
    ...     params, state, value = step(params, state, batch)
    >>> round(float(params["w"]), 4)
    2.0

    Packed, for a hand-written loop over a model with many parameter arrays:

    >>> from gdopt.packing import packed_optimizer
    >>> pstep = make_step(loss, opt, pack=True)
    >>> packed = gdopt.pack({"w": jnp.array(0.0)})
    >>> pstate = packed_optimizer(opt).init(packed)
    >>> for _ in range(50):
    ...     packed, pstate, value = pstep(packed, pstate, batch)
    >>> round(float(gdopt.unpack(packed)["w"]), 4)
    2.0
    """
    grad_fn = _value_and_grad(loss_fn, has_aux, pack)
    tree_loss = _tree_loss(loss_fn, pack)
    if pack:
        optimizer = packed_optimizer(optimizer)

    def step(params, opt_state, batch, **extra):
        if pack and not isinstance(params, Packed):
            raise TypeError(
                "make_step(pack=True): params must be packed (gdopt.pack(params)), got "
                f"{type(params).__name__}."
            )
        if has_aux:
            (loss, aux), grads = grad_fn(params, batch)
        else:
            loss, grads = grad_fn(params, batch)
        extras = {"value": loss, "grad": grads, "value_fn": lambda p: tree_loss(p, batch), **extra}
        if has_aux:
            extras["value_fn"] = lambda p: tree_loss(p, batch)[0]
        updates, opt_state = optimizer.update(grads, opt_state, params, **extras)
        params = apply_updates(params, updates)
        if has_aux:
            return params, opt_state, loss, aux
        return params, opt_state, loss

    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0, 1) if donate else (), keep_unused=True)


def _all_finite(params: Any) -> jax.Array:
    """Whether every parameter is finite, as one reduction per dtype over packed buffers.

    On a pytree the leaves are packed first (one copy): on XLA:CPU, one reduction per leaf
    after the epoch's loop multiplied the compile time of a 200-array model by 5 and cost
    20% of its training time; the copy and a single reduction cost neither.
    """
    return tree_all_finite(params if isinstance(params, Packed) else _pack_tree(params))


def _tree_loss(loss_fn: Callable[..., Any], packed: bool) -> Callable[..., Any]:
    """``loss_fn`` as a function of the parameters the engine carries (maybe packed)."""
    if not packed:
        return loss_fn
    return lambda params, batch: loss_fn(unpack(params), batch)


def _value_and_grad(loss_fn: Callable[..., Any], has_aux: bool, packed: bool):
    """``value_and_grad`` of ``loss_fn``; with ``packed``, of packed parameters.

    The gradient is taken with respect to the unpacked leaves and then packed with
    :func:`gdopt.pack` (which writes each matrix once into the buffer), not by
    differentiating through :func:`gdopt.unpack`, whose transpose is a concatenation that
    XLA:CPU runs about 10x slower than a copy when the leaves are matrices.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)
    if not packed:
        return grad_fn

    def packed_grad(params: Packed, batch: Any):
        out, grads = grad_fn(unpack(params), batch)
        return out, _pack_tree(grads, params.spec)

    return packed_grad


class FitState(NamedTuple):
    """Everything :func:`fit`'s compiled core carries from one step to the next.

    Attributes:
      params: the parameters (finite at the end of every epoch); a
        :class:`~gdopt.packing.Packed` when the core runs packed.
      opt_state: the optimizer state.
      epoch: int32, epochs run so far.
      step: int32, optimizer steps applied so far.
      diverged: bool, a step had a non-finite loss, or the parameters were non-finite at
        the end of an epoch.
      diverged_epoch: int32, the (1-based) epoch where that happened, 0 if none.
      diverged_step: int32, the (1-based) global index of the step whose loss was not
        finite, 0 if none (or if only the end-of-epoch check caught the parameters).
      restored: bool, the parameters were not finite at the end of the diverging epoch, so
        the parameters and optimizer state were restored to those at its start.
      converged: bool, the ``tol`` stopping rule fired.
      prev_loss: float32, the mean train loss of the latest epoch (NaN before the first).
      streak: int32, consecutive epochs whose relative loss change was below ``tol``.
    """

    params: Any
    opt_state: Any
    epoch: jax.Array
    step: jax.Array
    diverged: jax.Array
    diverged_epoch: jax.Array
    diverged_step: jax.Array
    restored: jax.Array
    converged: jax.Array
    prev_loss: jax.Array
    streak: jax.Array


def init_fit_state(params: Any, opt_state: Any) -> FitState:
    """A fresh :class:`FitState` (no epochs run, no flags raised) around params and state.

    >>> import gdopt, jax.numpy as jnp
    >>> s = init_fit_state({"w": jnp.zeros(2)}, gdopt.sgd(0.1).init({"w": jnp.zeros(2)}))
    >>> int(s.epoch), bool(s.diverged)
    (0, False)
    """

    def zero() -> jax.Array:  # a distinct buffer per field: the carry is donated leafwise
        return jnp.zeros((), jnp.int32)

    return FitState(
        params=params,
        opt_state=opt_state,
        epoch=zero(),
        step=zero(),
        diverged=jnp.zeros((), bool),
        diverged_epoch=zero(),
        diverged_step=zero(),
        restored=jnp.zeros((), bool),
        converged=jnp.zeros((), bool),
        prev_loss=jnp.full((), jnp.nan, jnp.float32),
        streak=zero(),
    )


class History(NamedTuple):
    """Per-epoch metrics.

    In a :class:`FitResult` these are NumPy arrays with one entry per epoch run
    (``eval_loss``/``eval_accuracy`` are empty when there was no ``eval_data`` /
    ``accuracy_fn``). From :func:`make_train_fn` they are JAX arrays of length ``n_epochs``
    where skipped epochs (after stopping) have ``epochs == 0`` and NaN metrics.

    Attributes:
      train_loss: mean of the batch losses of the epoch's steps (each measured before its
        update, as in a running average).
      eval_loss: the loss on the whole ``eval_data`` after the epoch.
      eval_accuracy: ``accuracy_fn(params, eval_data)`` after the epoch.
      epochs: the epoch numbers, 1, 2, ...
    """

    train_loss: Any
    eval_loss: Any
    eval_accuracy: Any
    epochs: Any


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}."
        ) from None
    if v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v}.")
    return v


def _check_tol(tol: float | None) -> None:
    if tol is None:
        return
    if isinstance(tol, (bool, np.bool_)) or not np.isscalar(tol) or not np.isfinite(tol):
        raise ValueError(f"tol must be a finite number > 0 or None, got {tol!r}.")
    if not tol > 0:
        raise ValueError(f"tol must be a finite number > 0 or None, got {tol!r}.")


def make_train_fn(
    loss_fn: Callable[[Any, Any], jax.Array],
    optimizer: GradientTransformation,
    *,
    n_epochs: int,
    batch_size: int | None = None,
    accuracy_fn: Callable[[Any, Any], jax.Array] | None = None,
    tol: float | None = None,
    patience: int = 1,
    shuffle: bool = True,
    pack: bool = False,
) -> Callable[..., tuple[FitState, History]]:
    """The pure, compilable core of :func:`fit`: ``n_epochs`` epochs as one ``lax.scan``.

    Returns ``train(state, data, key, eval_data=None, stop_epoch=None) -> (state, history)``.
    Each epoch draws its batches with :func:`gdopt.batching.epoch_batches` using the key
    ``jax.random.fold_in(key, state.epoch)`` (so running 10 epochs at once or 5 + 5 gives the
    same result) and runs ``lax.scan`` over them. Per step: ``jax.value_and_grad``, then
    ``optimizer.update(grads, opt_state, params, value=loss, grad=grads, value_fn=...)`` (the
    loss on the same batch as a function of the params, for line searches) and
    ``apply_updates``.

    Divergence: a step whose loss is not finite is not applied (the update runs inside a
    ``lax.cond`` on that scalar; a select would make XLA keep the new moments in temporaries),
    ``state.diverged`` is raised with the epoch and step, and nothing changes afterwards. The parameters themselves are checked
    once per epoch, at its end: if they are not all finite (an update overflowed, or the loss
    hid it), the parameters and optimizer state of the start of that epoch are restored
    (``state.restored``). So the state that comes out is always finite, and per step only a
    scalar is tested: checking every new parameter at every step cost 13% of an MLP's
    training time and multiplied a 200-array model's compile time by 7, because the update
    then waits for a reduction over the new parameters.
    The price is one copy of the parameters and optimizer state per epoch, held during it.

    With ``tol``, ``state.converged`` is raised after
    ``patience`` consecutive epochs with ``|L_e - L_{e-1}| / max(|L_{e-1}|, tiny) < tol``
    (``L`` the epoch's mean train loss). Epochs after stopping, or with index ``>= stop_epoch``,
    are skipped (``lax.cond``) and recorded with ``epochs == 0``.

    The function holds no Python state: wrap it in ``jax.jit`` (donate ``state``), or
    ``jax.vmap`` it, e.g. over learning rates of a named optimizer through its state::

        train = make_train_fn(loss, gdopt.sgd(0.1), n_epochs=20)
        state0 = gdopt.sgd(0.1).init(params)
        run = lambda lr: train(init_fit_state(params,
                               gdopt.set_hyperparams(state0, learning_rate=lr)), data, key)
        states, histories = jax.jit(jax.vmap(run))(jnp.array([0.01, 0.1, 1.0]))

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, the mean loss over the batch.
      optimizer: the gradient transformation.
      n_epochs: epochs per call (static: the length of the scan).
      batch_size: ``None`` (full batch), ``1`` (per example) or ``k`` (mini-batches, the
        remainder of each epoch's permutation dropped).
      accuracy_fn: ``accuracy_fn(params, batch) -> scalar``, recorded on ``eval_data``.
      tol: relative-change tolerance of the stopping rule, or ``None`` (never converge).
      patience: consecutive epochs below ``tol`` needed to stop.
      shuffle: reshuffle the examples every epoch.
      pack: ``state.params`` is a :class:`~gdopt.packing.Packed` and ``state.opt_state``
        the state of ``packed_optimizer(optimizer)``; ``loss_fn`` and ``accuracy_fn``
        receive the unpacked pytree. :func:`fit` decides this for you.

    Returns:
      ``train(state, data, key, eval_data=None, stop_epoch=None)`` returning the new
      :class:`FitState` and a :class:`History` of JAX arrays of length ``n_epochs``.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)
    >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); y = x @ jnp.array([1.0, -2.0])
    >>> opt = gdopt.sgd(0.3)
    >>> train = jax.jit(make_train_fn(loss, opt, n_epochs=100))
    >>> state, hist = train(init_fit_state(jnp.zeros(2), opt.init(jnp.zeros(2))), (x, y),
    ...                     jax.random.PRNGKey(0))
    >>> [round(v, 3) for v in state.params.tolist()], int(state.epoch)
    ([1.0, -2.0], 100)
    """
    n_epochs = _check_int("n_epochs", n_epochs, 1)
    patience = _check_int("patience", patience, 1)
    _check_tol(tol)
    grad_fn = _value_and_grad(loss_fn, False, pack)
    tree_loss = _tree_loss(loss_fn, pack)
    tree_accuracy = _tree_loss(accuracy_fn, pack) if accuracy_fn is not None else None
    if pack:
        optimizer = packed_optimizer(optimizer)
    tiny = float(jnp.finfo(jnp.float32).tiny)
    nan = jnp.full((), jnp.nan, jnp.float32)

    def step(carry: tuple, batch: Any) -> tuple[tuple, tuple[jax.Array, jax.Array]]:
        # the carry holds only what changes per step; counters are derived after the scan
        # (each scalar operation is a kernel launch on CPU, as long as a tiny model's step)
        params, opt_state, stopped = carry
        loss, grads = grad_fn(params, batch)
        ok = jnp.isfinite(loss) & ~stopped  # once a loss is not finite, nothing changes

        def apply(params, opt_state, grads, loss):
            updates, opt_state = optimizer.update(
                grads,
                opt_state,
                params,
                value=loss,
                grad=grads,
                value_fn=lambda p: tree_loss(p, batch),
            )
            return apply_updates(params, updates), opt_state

        params, opt_state = lax.cond(
            ok, apply, lambda p, s, g, v: (p, s), params, opt_state, grads, loss
        )
        return (params, opt_state, ~ok), (loss.astype(jnp.float32), ok)

    def run_epoch(s: FitState, data: Any, key: jax.Array, eval_data: Any):
        batches = epoch_batches(jax.random.fold_in(key, s.epoch), data, batch_size, shuffle=shuffle)
        (params, opt_state, _), (losses, oks) = lax.scan(
            step, (s.params, s.opt_state, s.diverged), batches
        )
        count = jnp.sum(oks, dtype=jnp.int32)
        first_bad = ~jnp.all(oks)  # the steps before the first bad one are all ok
        # the parameters, once per epoch: restore the epoch's start if they are not finite
        bad = ~_all_finite(params)
        params, opt_state, steps = tree_where(
            bad, (s.params, s.opt_state, s.step), (params, opt_state, s.step + count)
        )
        s = s._replace(
            params=params,
            opt_state=opt_state,
            step=steps,
            restored=s.restored | bad,
            diverged=s.diverged | first_bad | bad,
            diverged_epoch=jnp.where(first_bad | bad, s.epoch + 1, s.diverged_epoch),
            diverged_step=jnp.where(first_bad, s.step + count + 1, s.diverged_step),
        )
        losses = jnp.where(oks, losses, 0.0)
        train_loss = jnp.where(count > 0, jnp.sum(losses) / jnp.maximum(count, 1), nan)
        if eval_data is not None:
            eval_loss = jnp.asarray(tree_loss(s.params, eval_data), jnp.float32)
            eval_acc = (
                jnp.asarray(tree_accuracy(s.params, eval_data), jnp.float32)
                if tree_accuracy is not None
                else nan
            )
        else:
            eval_loss = eval_acc = nan
        converged, streak = s.converged, s.streak
        if tol is not None:
            prev = s.prev_loss
            rel = jnp.abs(train_loss - prev) / jnp.maximum(jnp.abs(prev), tiny)
            small = (rel < tol) & jnp.isfinite(prev) & ~s.diverged
            streak = jnp.where(small, s.streak + 1, 0).astype(jnp.int32)
            converged = streak >= patience
        epoch = s.epoch + 1
        s = s._replace(
            epoch=epoch,
            converged=converged,
            streak=streak,
            prev_loss=train_loss.astype(jnp.float32),
        )
        return s, History(train_loss, eval_loss, eval_acc, epoch)

    def train(
        state: FitState,
        data: Any,
        key: jax.Array,
        eval_data: Any = None,
        stop_epoch: jax.Array | int | None = None,
    ) -> tuple[FitState, History]:
        limit = jnp.iinfo(jnp.int32).max if stop_epoch is None else stop_epoch
        skipped = History(nan, nan, nan, jnp.zeros((), jnp.int32))

        def epoch_body(s: FitState, _: Any) -> tuple[FitState, History]:
            active = ~(s.diverged | s.converged) & (s.epoch < limit)
            return lax.cond(
                active,
                lambda s: run_epoch(s, data, key, eval_data),
                lambda s: (s, skipped),
                s,
            )

        return lax.scan(epoch_body, state, None, length=n_epochs)

    return train


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: the trained parameters (the last finite ones if training diverged).
      opt_state: the optimizer state that goes with them; to continue training pass it
        back with a new ``key`` (the epoch count, which seeds the shuffles, restarts at 0).
      history: a :class:`History` of NumPy arrays, one entry per epoch run.
      converged: the ``tol`` stopping rule fired.
      diverged: a step produced nan/inf and training stopped.
      epochs_run: epochs run (the diverging epoch counts).
      steps_run: optimizer steps applied.
      stop_reason: why training stopped, in words.
      wall_time: seconds spent in :func:`fit`, compilation included.
      compile_time: seconds spent compiling (the set-up of the state and the training
        chunk); ``wall_time - compile_time`` is the time spent training.
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


def _fresh_copy(tree: Any) -> Any:
    """New buffers with strong dtypes: fit donates its carry, never the caller's arrays."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.result_type(x), copy=True), tree)


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

    The epochs run inside one compiled function (:func:`make_train_fn`, compiled once per
    call, its carry donated): each epoch reshuffles ``data`` on the device and scans over its
    batches, so there is no Python call and no host synchronisation per step. The host calls
    it ``epochs_per_call`` epochs at a time; between calls it updates the progress bar
    (``tqdm``) and checks whether training stopped. The caller's ``params``/``opt_state`` are
    copied first, never donated.

    Stopping:

    - divergence: a step whose loss is nan/inf is not applied and training stops;
      ``on_divergence="stop"`` returns the parameters it was computed at with
      ``diverged=True``, ``"raise"`` raises ``FloatingPointError``. The parameters are also
      checked at the end of every epoch; if they are not finite, those of the start of that
      epoch are returned (see :func:`make_train_fn`). NaN params are never returned.

    Packed execution: with ``pack`` (by default when the optimizer is elementwise, e.g.
    sgd/momentum/Adam/AdamW/RMSprop, and ``params`` has at least
    ``AUTO_PACK_MIN_LEAVES`` arrays), the parameters and optimizer state live in one
    contiguous buffer per dtype for the whole run (:mod:`gdopt.packing`): ``loss_fn``
    still receives the same pytree (slices of the buffers), the gradient is packed inside
    the step, and the optimizer updates each buffer in one fused loop instead of one loop
    per array. ``params`` and ``opt_state`` come back unpacked, so nothing changes for the
    caller; the numbers are the same (to float32 rounding of the summation order).
    - convergence (``tol``): stops after ``patience`` consecutive epochs whose mean train
      loss changed by less than ``tol`` relatively, checked inside the compiled loop (the
      exact epoch, whatever ``epochs_per_call``).

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
    epochs = _check_int("epochs", epochs, 1)
    patience = _check_int("patience", patience, 1)
    _check_tol(tol)
    if on_divergence not in _DIVERGENCE_MODES:
        raise ValueError(f"on_divergence must be 'stop' or 'raise', got {on_divergence!r}.")
    n = dataset_size(data)
    check_batch_size(batch_size, n)
    if eval_data is not None:
        dataset_size(eval_data, "eval_data")
    check_float_leaves(params)
    if epochs_per_call is None:
        chunk = math.ceil(epochs / 20) if progress else epochs
    else:
        chunk = min(_check_int("epochs_per_call", epochs_per_call, 1), epochs)
    if key is None:
        key = jax.random.PRNGKey(0)
    if pack not in (None, True, False):
        raise TypeError(f"pack must be True, False or None (decide), got {pack!r}.")
    packed = should_pack(params, optimizer) if pack is None else pack

    data = jax.tree.map(jnp.asarray, data)
    if eval_data is not None:
        eval_data = jax.tree.map(jnp.asarray, eval_data)
    stop_epoch = jnp.asarray(epochs, jnp.int32)

    def setup(params: Any, opt_state: Any) -> FitState:
        if packed:
            params = _pack_tree(params)
            popt = packed_optimizer(optimizer)
            if opt_state is None:
                opt_state = popt.init(params)
            else:
                opt_state = pack_state(opt_state, jax.eval_shape(popt.init, params))
        elif opt_state is None:
            opt_state = optimizer.init(params)
        return _fresh_copy(init_fit_state(params, opt_state))

    # Everything that runs before the loop is compiled too, so no eager op is compiled on
    # the fly (and counted as run time) on the first fit of a process.
    t0 = time.perf_counter()
    run_setup = jax.jit(setup).lower(params, opt_state).compile()
    compile_time = time.perf_counter() - t0
    state = run_setup(params, opt_state)

    train = make_train_fn(
        loss_fn,
        optimizer,
        n_epochs=chunk,
        batch_size=batch_size,
        accuracy_fn=accuracy_fn,
        tol=tol,
        patience=patience,
        pack=packed,
    )
    t0 = time.perf_counter()
    run_chunk = (
        jax.jit(train, donate_argnums=0).lower(state, data, key, eval_data, stop_epoch).compile()
    )
    compile_time += time.perf_counter() - t0
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

    state = jax.block_until_ready(state)
    wall_time = time.perf_counter() - start
    train_loss, eval_loss, eval_acc, ep = (
        np.concatenate([getattr(h, f) for h in chunks]) for f in History._fields
    )
    ran = ep > 0
    empty = np.zeros((0,), np.float32)
    history = History(
        train_loss=train_loss[ran],
        eval_loss=eval_loss[ran] if eval_data is not None else empty,
        eval_accuracy=eval_acc[ran]
        if (eval_data is not None and accuracy_fn is not None)
        else empty,
        epochs=ep[ran].astype(np.int64),
    )
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
        stop_reason = f"diverged at {where}: {what}; try a smaller learning_rate"

        if on_divergence == "raise":
            raise FloatingPointError(stop_reason)
    elif converged:
        stop_reason = (
            f"converged at epoch {epochs_run}: the relative change of the train loss stayed "
            f"below tol={tol:g} for {patience} consecutive epoch(s)"
        )
    else:
        stop_reason = f"completed {epochs_run} epochs"
    params, opt_state = state.params, state.opt_state
    if packed:
        params, opt_state = unpack(params), unpack_state(opt_state)
    return FitResult(
        params=params,
        opt_state=opt_state,
        history=history,
        converged=converged,
        diverged=diverged,
        epochs_run=epochs_run,
        steps_run=steps_run,
        stop_reason=stop_reason,
        wall_time=wall_time,
        compile_time=compile_time,
    )
