"""The pure, compiled core of training: the training state and its epochs in one compiled loop.

:func:`make_train_fn` returns ``train(state, data, key, eval_data, stop_epoch)``, a pure
function of one training-state pytree (:class:`FitState`) and the data. It holds no Python
state, so it can be ``jax.jit``-ed (donating the state), ``jax.vmap``-ed over states (sweeps
over hyperparameters, which named optimizers keep in their state) and sharded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gdopt import _numerics as num
from gdopt._validation import check_int
from gdopt.base import GradientTransformation, apply_updates
from gdopt.batching import dataset_size, epoch_batches, num_batches
from gdopt.engine._checks import check_epochs, check_tol
from gdopt.packing import PACKED, TREE, Layout
from gdopt.tree import tree_where

__all__ = ["FitState", "History", "init_fit_state", "make_train_fn"]


class FitState(NamedTuple):
    """Everything the compiled core carries from one step to the next.

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
      skipped: int32, steps skipped because their loss or gradient was not finite (only
        with ``max_skips > 0``).
      skip_streak: int32, consecutive skipped steps at the end of the latest epoch.
      diverged_what: int32, what diverged first: 0 nothing, 1 the loss, 2 the gradient
        (finite loss), 3 the parameters (checked at the end of the epoch).
      diverged_index: int32, the 0-based index, within its epoch, of the step that stopped
        training (0 if none).
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
    skipped: jax.Array
    skip_streak: jax.Array
    diverged_what: jax.Array
    diverged_index: jax.Array


DIVERGED_WHAT = ("", "loss", "gradient", "parameters")
"""The values of :attr:`FitState.diverged_what`, by index."""


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
        skipped=zero(),
        skip_streak=zero(),
        diverged_what=zero(),
        diverged_index=zero(),
    )


class History(NamedTuple):
    """Per-epoch metrics.

    In a :class:`~gdopt.FitResult` these are NumPy arrays with one entry per epoch run
    (``eval_loss``/``eval_accuracy`` are empty when there was no ``eval_data`` /
    ``accuracy_fn``). From :func:`make_train_fn` they are JAX arrays of length ``n_epochs``
    where skipped epochs (after stopping) have ``epochs == 0`` and NaN metrics.

    Attributes:
      train_loss: mean of the batch losses of the epoch's steps (each measured before its
        update, as in a running average).
      eval_loss: the loss on the whole ``eval_data`` after the epoch.
      eval_accuracy: ``accuracy_fn(params, eval_data)`` after the epoch.
      epochs: the epoch numbers, 1, 2, ...
      step_loss: with ``record="step"``, the loss of every step (measured before its
        update; NaN for a step that was not applied): from :func:`make_train_fn` of shape
        ``(n_epochs, steps_per_epoch)``, in a :class:`~gdopt.FitResult` one flat array of
        ``epochs_run * steps_per_epoch`` entries. Empty otherwise.
      grad_norm: with ``diagnostics=True``, the mean over the epoch's applied steps of the
        gradient's L2 norm (all leaves as one vector). Empty otherwise.
      update_norm: likewise, the mean L2 norm of the update added to the params.
      update_ratio: likewise, the mean of ``update_norm / param_norm`` (the params before
        the update; inf if they are all zero).
      step_size: likewise, the mean effective step size ``update_norm / grad_norm`` (the
        learning rate for plain SGD).
      sharpness: with :func:`~gdopt.fit`'s ``sharpness_every``, the top eigenvalue of the
        loss's Hessian after the epoch (NaN for an epoch not measured). Empty otherwise
        (:func:`make_train_fn` never measures it: shape ``(n_epochs, 0)``).

    The fields after ``epochs`` default to empty arrays, so ``History(train_loss,
    eval_loss, eval_accuracy, epochs)`` still builds a history.
    """

    train_loss: Any
    eval_loss: Any
    eval_accuracy: Any
    epochs: Any
    step_loss: Any = np.zeros((0,), np.float32)
    grad_norm: Any = np.zeros((0,), np.float32)
    update_norm: Any = np.zeros((0,), np.float32)
    update_ratio: Any = np.zeros((0,), np.float32)
    step_size: Any = np.zeros((0,), np.float32)
    sharpness: Any = np.zeros((0,), np.float32)


DIAGNOSTICS = ("grad_norm", "update_norm", "update_ratio", "step_size")
"""The :class:`History` fields recorded with ``diagnostics=True``."""

RECORDS = ("epoch", "step")
"""The values of ``record``."""


def check_record(record: Any) -> str:
    """``record`` checked: ``"epoch"`` or ``"step"``."""
    if not isinstance(record, str) or record not in RECORDS:
        raise ValueError(
            f"record must be 'epoch' (per-epoch metrics) or 'step' (also every step's "
            f"loss), got {record!r}."
        )
    return record


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
    pack: bool | Layout = False,
    max_skips: int = 0,
    record: str = "epoch",
    diagnostics: bool = False,
) -> Callable[..., tuple[FitState, History]]:
    """The pure, compilable core of :func:`~gdopt.fit`: up to ``n_epochs`` epochs in one call.

    Returns ``train(state, data, key, eval_data=None, stop_epoch=None) -> (state, history)``.
    Each epoch draws its batches with :func:`gdopt.batching.epoch_batches` using the key
    ``jax.random.fold_in(key, state.epoch)`` (so running 10 epochs at once or 5 + 5 gives the
    same result) and runs ``lax.scan`` over them. Per step: ``jax.value_and_grad``, then
    ``optimizer.update(grads, opt_state, params, value=loss, grad=grads, value_fn=...)`` (the
    loss on the same batch as a function of the params, for line searches) and
    ``apply_updates``.

    Divergence: a step whose loss or gradient is not finite is not applied (the update runs
    inside a ``lax.cond`` on one scalar), ``state.diverged`` is raised with the epoch, the
    step and what was not finite (``state.diverged_what``), and nothing changes afterwards.
    With ``max_skips = k > 0`` such a step is skipped instead (counted in ``state.skipped``)
    and training stops only at the ``(k + 1)``-th bad step in a row. The parameters
    themselves are checked once per epoch, at its end: if they are not all finite (an update
    overflowed), the parameters and optimizer state of the start of that epoch are restored
    (``state.restored``). So the state that comes out is always finite, and per step only a
    loss and a gradient reduction are tested; the price is one copy of the parameters and
    optimizer state per epoch.

    With ``tol``, ``state.converged`` is raised after ``patience`` consecutive epochs with
    ``|L_e - L_{e-1}| / max(|L_{e-1}|, tiny) < tol`` (``L`` the epoch's mean train loss).
    The epochs run in a ``lax.while_loop`` of at most ``n_epochs`` iterations that ends at
    stopping or when ``state.epoch`` reaches ``stop_epoch`` (a dynamic argument: one program
    serves calls of any length up to ``n_epochs``); the history entries of epochs not run
    are recorded with ``epochs == 0``.

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
      pack: ``True``: ``state.params`` is a :class:`~gdopt.packing.Packed` and
        ``state.opt_state`` the state of ``packed_optimizer(optimizer)``; ``loss_fn`` and
        ``accuracy_fn`` receive the unpacked pytree. A :class:`~gdopt.packing.Layout` may be
        given instead. :func:`~gdopt.fit` decides this for you.
      max_skips: consecutive non-finite steps to skip before stopping (0: stop at the first).
      record: ``"epoch"`` (per-epoch metrics only) or ``"step"``: the history also keeps
        every step's loss, ``step_loss`` of shape ``(n_epochs, steps_per_epoch)``.
      diagnostics: also record, per epoch, the mean gradient norm, update norm,
        update/param norm ratio and effective step size (:data:`DIAGNOSTICS`). Decided at
        trace time: off, the program computes none of it.

    History fields that are off have shape ``(n_epochs, 0)``.

    ``data=None`` runs a deterministic objective: one step per epoch with ``batch=None``
    (``loss_fn(params, None)``).

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
    n_epochs = check_epochs("n_epochs", n_epochs)
    patience = check_epochs("patience", patience)
    max_skips = check_int("max_skips", max_skips, 0)
    check_tol(tol)
    record = check_record(record)
    diagnostics = bool(diagnostics)
    layout = pack if isinstance(pack, Layout) else (PACKED if pack else TREE)
    grad_fn = layout.value_and_grad(loss_fn)
    carried_loss = layout.loss(loss_fn)
    carried_accuracy = layout.loss(accuracy_fn) if accuracy_fn is not None else None
    optimizer = layout.optimizer(optimizer)
    tiny = float(jnp.finfo(jnp.float32).tiny)
    nan = jnp.full((), jnp.nan, jnp.float32)

    def step(carry: tuple, batch: Any) -> tuple[tuple, tuple[Any, ...]]:
        # the carry holds only what changes per step; counters are derived after the scan
        # (each scalar operation is a kernel launch on CPU, as long as a tiny model's step)
        params, opt_state, stopped, streak = carry
        loss, grads = grad_fn(params, batch)
        loss_ok = jnp.isfinite(loss)
        finite = loss_ok & layout.all_finite(grads)
        ok = finite & ~stopped  # once training stopped, nothing changes

        def apply(params, opt_state, grads, loss):
            updates, opt_state = optimizer.update(
                grads,
                opt_state,
                params,
                value=loss,
                grad=grads,
                value_fn=lambda p: carried_loss(p, batch),
            )
            new = apply_updates(params, updates)
            if not diagnostics:
                return new, opt_state, ()
            return (
                new,
                opt_state,
                (
                    num.as_float32(num.global_norm(updates)),
                    num.as_float32(num.global_norm(params)),
                ),
            )

        def skip(params, opt_state, grads, loss):
            return params, opt_state, ((nan, nan) if diagnostics else ())

        params, opt_state, norms = lax.cond(ok, apply, skip, params, opt_state, grads, loss)
        extra: tuple[jax.Array, ...] = ()
        if diagnostics:
            g_norm = num.as_float32(num.global_norm(grads))
            u_norm, p_norm = norms
            extra = (g_norm, u_norm, num.div(u_norm, p_norm), num.div(u_norm, g_norm))
        bad = ~finite & ~stopped
        if max_skips == 0:  # the default: the first bad step stops training
            stop = bad
        else:
            streak = jnp.where(bad, streak + 1, jnp.where(ok, 0, streak)).astype(jnp.int32)
            stop = bad & (streak > max_skips)
        # what stopped it: 1 the loss, 2 the gradient (0 when the step did not stop it)
        what = jnp.where(stop, jnp.where(loss_ok, 2, 1), 0).astype(jnp.int32)
        return (params, opt_state, stopped | stop, streak), (
            loss.astype(jnp.float32),
            ok,
            bad & ~stop,
            what,
            extra,
        )

    def evaluate(params: Any, eval_data: Any) -> tuple[jax.Array, jax.Array]:
        if eval_data is None:
            return nan, nan
        eval_loss = jnp.asarray(carried_loss(params, eval_data), jnp.float32)
        if carried_accuracy is None:
            return eval_loss, nan
        return eval_loss, jnp.asarray(carried_accuracy(params, eval_data), jnp.float32)

    def run_epoch(s: FitState, data: Any, key: jax.Array, eval_data: Any):
        carry = (s.params, s.opt_state, s.diverged, s.skip_streak)
        if data is None:  # a deterministic objective: one full step per epoch
            carry, (losses, oks, skips, whats, extra) = lax.scan(step, carry, None, length=1)
        else:
            batches = epoch_batches(
                jax.random.fold_in(key, s.epoch), data, batch_size, shuffle=shuffle
            )
            carry, (losses, oks, skips, whats, extra) = lax.scan(step, carry, batches)
        params, opt_state, _, skip_streak = carry
        count = jnp.sum(oks, dtype=jnp.int32)
        stopped = jnp.any(whats > 0)
        stop_index = jnp.argmax(whats > 0).astype(jnp.int32)
        # the parameters, once per epoch: restore the epoch's start if they are not finite
        bad = ~layout.all_finite(params)
        params, opt_state, steps = tree_where(
            bad, (s.params, s.opt_state, s.step), (params, opt_state, s.step + count)
        )
        newly = stopped | bad
        what = jnp.where(stopped, jnp.max(whats), 3).astype(jnp.int32)
        s = s._replace(
            params=params,
            opt_state=opt_state,
            step=steps,
            restored=s.restored | bad,
            diverged=s.diverged | newly,
            diverged_epoch=jnp.where(newly, s.epoch + 1, s.diverged_epoch),
            diverged_step=jnp.where(stopped, s.step + count + 1, s.diverged_step),
            diverged_what=jnp.where(newly, what, s.diverged_what),
            diverged_index=jnp.where(stopped, stop_index, s.diverged_index),
            skipped=s.skipped + jnp.sum(skips, dtype=jnp.int32),
            skip_streak=skip_streak,
        )

        def mean(values: jax.Array) -> jax.Array:  # over the applied steps
            total = jnp.sum(jnp.where(oks, values, 0.0))
            return jnp.where(count > 0, num.div(total, jnp.maximum(count, 1)), nan)

        step_loss = (
            jnp.where(oks, losses, nan) if record == "step" else jnp.zeros((0,), jnp.float32)
        )
        train_loss = mean(losses)
        off = jnp.zeros((0,), jnp.float32)
        diags = tuple(mean(v) for v in extra) if diagnostics else (off,) * len(DIAGNOSTICS)
        eval_loss, eval_acc = evaluate(s.params, eval_data)
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
        return s, History(train_loss, eval_loss, eval_acc, epoch, step_loss, *diags, sharpness=off)

    def train(
        state: FitState,
        data: Any,
        key: jax.Array,
        eval_data: Any = None,
        stop_epoch: jax.Array | int | None = None,
    ) -> tuple[FitState, History]:
        limit = jnp.iinfo(jnp.int32).max if stop_epoch is None else stop_epoch

        # a while loop, not a scan over n_epochs: epochs after stopping or past stop_epoch
        # cost nothing (fit sizes its calls with stop_epoch); their history entries stay
        # epochs == 0 with NaN metrics
        def metric(on: bool, *shape: int) -> jax.Array:
            return jnp.full((n_epochs, *shape) if on else (n_epochs, 0), jnp.nan, jnp.float32)

        steps = 1 if data is None else num_batches(dataset_size(data), batch_size)
        history = History(
            metric(True),
            metric(True),
            metric(True),
            jnp.zeros((n_epochs,), jnp.int32),
            metric(record == "step", steps),
            *(metric(diagnostics) for _ in DIAGNOSTICS),
            sharpness=metric(False),  # measured by fit between calls, never here
        )

        def active(carry: tuple[jax.Array, FitState, History]) -> jax.Array:
            i, s, _ = carry
            running = ~(s.diverged | s.converged) & jnp.less(*num.promote(s.epoch, limit))
            return (i < n_epochs) & running

        def epoch_body(carry: tuple[jax.Array, FitState, History]):
            i, s, hist = carry
            s, h = run_epoch(s, data, key, eval_data)
            hist = History(*(buf.at[i].set(v) for buf, v in zip(hist, h, strict=True)))
            return i + 1, s, hist

        _, state, history = lax.while_loop(
            active, epoch_body, (jnp.zeros((), jnp.int32), state, history)
        )
        return state, history

    return train
