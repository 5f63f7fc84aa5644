"""``fit``: train for a number of epochs, compiled, with a thin host loop around the core.

The parts, in the order a call runs them: argument checks (:mod:`gdopt.engine._checks`:
data, labels, loss, schedules, key, state, checkpoint directory), the layout (packed or not,
:func:`gdopt.packing.layout_for`), the set-up of the training state (fresh, from a
:class:`FitResult` or from the latest checkpoint), the compiled programs (reused across
calls, :mod:`gdopt._compile`), the host loop (calls sized by time; progress,
checkpoints, Ctrl-C, stopping) and the :class:`FitResult`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdopt import _compile
from gdopt._validation import check_int, check_key
from gdopt.base import GradientTransformation
from gdopt.batching import check_batch_size, dataset_size, epoch_batches
from gdopt.engine import _checks, _frameworks
from gdopt.engine._checks import check_epochs, check_on_divergence, check_tol
from gdopt.engine.core import (
    DIAGNOSTICS,
    DIVERGED_WHAT,
    FitState,
    History,
    check_record,
    init_fit_state,
    make_train_fn,
)
from gdopt.packing import Layout, layout_for
from gdopt.tree import check_float_leaves, tree_leaves_with_path

__all__ = ["FitResult", "fit"]


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: the trained parameters (the last finite ones if training diverged), of the
        kind passed: an Equinox module or a Flax NNX model comes back as a model of the same
        class with the trained arrays put back in (its static part as it was).
      opt_state: the optimizer state that goes with them. To continue the run exactly (the
        epoch and step counters, the key and the history carried on), pass the whole result
        back: ``fit(..., resume_from=result, epochs=more)``.
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
      interrupted: training was stopped by Ctrl-C (``SIGINT``) between two compiled calls.
      skipped_steps: steps skipped with ``on_divergence="skip"``.
      state: the whole training state at the end (a :class:`~gdopt.FitState` holding
        ``params``, ``opt_state``, the counters and flags), what ``resume_from`` continues;
        for a framework model its ``params`` are the array part that was trained.
      key: the PRNG key of the run (seeds the shuffles with the epoch counter).
      sharpness_start: with ``sharpness_every``, the top Hessian eigenvector of the latest
        measurement (a pytree like the trained arrays), the warm start of the next one:
        ``resume_from`` continues the measurements exactly with it. ``None`` otherwise.
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
    interrupted: bool = False
    skipped_steps: int = 0
    state: Any = None
    key: Any = None
    sharpness_start: Any = None


def _fresh_copy(tree: Any) -> Any:
    """New buffers with strong dtypes: fit donates its carry, never the caller's arrays."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.result_type(x), copy=True), tree)


def _setup(layout: Layout, optimizer: GradientTransformation) -> Callable[..., FitState]:
    def setup(params: Any, opt_state: Any) -> FitState:
        carried = layout.carry(params)
        state = layout.carry_state(optimizer, carried, opt_state)
        return _fresh_copy(init_fit_state(carried, state))

    return jax.jit(setup)


def _stop_reason(
    state: FitState, diverged: bool, converged: bool, tol, patience, bad_path: str | None
) -> str:
    epochs_run, steps_run = int(state.epoch), int(state.step)
    if diverged:
        where = f"epoch {int(state.diverged_epoch)}"
        if int(state.diverged_step):
            where += f" (step {int(state.diverged_step)})"
        what = DIVERGED_WHAT[int(state.diverged_what)]
        if what == "gradient":
            first = "the gradient" + (f" of params{bad_path}" if bad_path else "")
            first += " became nan/inf (the loss was finite)"
        elif what == "loss":
            first = "the loss became nan/inf"
        else:
            first = "the parameters became nan/inf after an update (loss and gradient finite)"
        if bool(state.restored):
            rest = (
                f"params are those of the start of that epoch (after {steps_run} steps)"
                if what == "parameters"
                else "the parameters became nan/inf too; params are those of the start of "
                f"that epoch (after {steps_run} steps)"
            )
        else:
            rest = "params are the last finite ones"
        skipped = int(state.skipped)
        extra = f" ({skipped} non-finite steps skipped before)" if skipped else ""
        return f"diverged at {where}: {first}{extra}; {rest}; try a smaller learning_rate"
    if converged:
        return (
            f"converged at epoch {epochs_run}: the relative change of the train loss stayed "
            f"below tol={tol:g} for {patience} consecutive epoch(s)"
        )
    skipped = int(state.skipped)
    done = f"completed {epochs_run} epochs"
    return done + (f" ({skipped} non-finite steps skipped)" if skipped else "")


class _Shapes(NamedTuple):
    """The columns of the optional history fields in the raw form (one row per epoch):
    ``step_loss`` has ``steps`` columns with ``record="step"`` (else 0); each diagnostic is
    one value per epoch with ``diagnostics=True`` (else 0 columns); so is the sharpness with
    ``sharpness_every``."""

    steps: int
    record: str
    diagnostics: bool
    sharpness: bool = False

    def blank(self, epochs: int) -> History:
        """A raw history of ``epochs`` rows, NaN everywhere (epoch numbers 1, 2, ...)."""

        def nan(*cols: int) -> np.ndarray:
            return np.full((epochs, *cols), np.nan, np.float32)

        diag = () if self.diagnostics else (0,)
        return History(
            nan(),
            nan(),
            nan(),
            np.arange(1, epochs + 1, dtype=np.int32),
            nan(self.steps if self.record == "step" else 0),
            *(nan(*diag) for _ in DIAGNOSTICS),
            sharpness=nan() if self.sharpness else nan(0),
        )


def _raw(chunks: list[History]) -> History:
    """The epochs that ran, every field one row per epoch (NaN where not measured)."""
    fields = [np.concatenate([np.asarray(getattr(h, f)) for h in chunks]) for f in History._fields]
    ran = fields[3] > 0
    return History(*(x[ran] for x in fields))._replace(epochs=fields[3][ran].astype(np.int32))


def _history(raw: History, evaluated: bool, accuracy: bool, shapes: _Shapes) -> History:
    empty = np.zeros((0,), np.float32)
    return History(
        train_loss=raw.train_loss,
        eval_loss=raw.eval_loss if evaluated else empty,
        eval_accuracy=raw.eval_accuracy if (evaluated and accuracy) else empty,
        epochs=raw.epochs.astype(np.int64),
        step_loss=raw.step_loss.reshape(-1) if shapes.record == "step" else empty,
        **{f: getattr(raw, f) if shapes.diagnostics else empty for f in DIAGNOSTICS},
        sharpness=raw.sharpness if shapes.sharpness else empty,
    )


def _raw_of(history: History, epochs: int, shapes: _Shapes) -> History:
    """A result's history back in the raw form (``epochs`` rows; fields the result lacks,
    or recorded under other options, are NaN)."""
    blank = shapes.blank(epochs)

    def like(x: Any, target: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return x.reshape(target.shape) if x.size == target.size > 0 else target

    fields = {f: like(getattr(history, f), getattr(blank, f)) for f in History._fields}
    fields["epochs"] = np.asarray(history.epochs, np.int32).reshape(epochs)
    return History(**fields)


_COUNTERS = tuple(f for f in FitState._fields if f not in ("params", "opt_state"))

MAX_CHUNK = 8192
"""The most epochs one compiled call of :func:`fit` may run (its scan length)."""

CHUNK_SECONDS = (0.2, 0.5)
"""The duration :func:`fit` aims each compiled call at, so the host regains control (Ctrl-C,
checkpoints, progress) that often."""


def _saved_fields(shapes: _Shapes) -> tuple[str, ...]:
    """The history fields a checkpoint holds: the four per-epoch ones and those recorded."""
    on = ("step_loss",) if shapes.record == "step" else ()
    on += DIAGNOSTICS if shapes.diagnostics else ()
    return History._fields[:4] + on + (("sharpness",) if shapes.sharpness else ())


def _checkpoint_tree(
    state: FitState, key: jax.Array, raw: History, shapes: _Shapes, start: Any = None
) -> dict[str, Any]:
    tree = {
        "state": state,
        "key": _checks.key_data(key),
        "history": {f: np.asarray(getattr(raw, f)) for f in _saved_fields(shapes)},
    }
    if shapes.sharpness:  # the warm start of the next sharpness measurement
        tree["sharpness_start"] = start
    return tree


def _checkpoint_like(
    params: Any, opt_state: Any, key: jax.Array, epochs: int, shapes: _Shapes
) -> dict[str, Any]:
    def shaped(x: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))

    state = jax.tree.map(shaped, init_fit_state(params, opt_state))
    blank = shapes.blank(epochs)
    history = {f: shaped(getattr(blank, f)) for f in _saved_fields(shapes)}
    like = {"state": state, "key": shaped(_checks.key_data(key)), "history": history}
    if shapes.sharpness:
        like["sharpness_start"] = jax.tree.map(shaped, params)
    return like


def _from_checkpoint(history: dict[str, Any], epochs: int, shapes: _Shapes) -> History:
    """The raw history of a restored checkpoint."""
    return shapes.blank(epochs)._replace(**{f: np.asarray(x) for f, x in history.items()})


class _Interrupt:
    """Ctrl-C while installed sets :attr:`hit` (the running compiled call then finishes and
    the host loop stops); a second Ctrl-C raises ``KeyboardInterrupt`` at once."""

    def __init__(self) -> None:
        self.hit = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


def _first_bad_gradient(
    loss_fn: Callable[..., Any],
    params: Any,
    data: Any,
    key: jax.Array,
    state: FitState,
    batch_size: int | None,
) -> str | None:
    """The key path of the first non-finite gradient leaf at the step that stopped training
    (recomputed on the host, only after a divergence)."""
    try:
        if data is None:
            grads = jax.grad(loss_fn)(params)
        else:
            epoch = int(state.diverged_epoch) - 1
            batches = epoch_batches(jax.random.fold_in(key, epoch), data, batch_size)
            index = int(state.diverged_index)
            batch = jax.tree.map(lambda b: b[index], batches)
            grads = jax.grad(loss_fn)(params, batch)
    except Exception:  # a diagnosis only: never hide the divergence behind another error
        return None
    for path, g in tree_leaves_with_path(grads):
        if not bool(jnp.all(jnp.isfinite(g))):
            return "" if path == "<root>" else path
    return None


def fit(
    loss_fn: Callable[..., jax.Array],
    params: Any,
    optimizer: GradientTransformation,
    data: Any = None,
    *,
    epochs: int,
    batch_size: int | None = None,
    key: jax.Array | int | None = None,
    eval_data: Any = None,
    accuracy_fn: Callable[[Any, Any], jax.Array] | None = None,
    tol: float | None = None,
    patience: int = 1,
    opt_state: Any = None,
    epochs_per_call: int | None = None,
    progress: bool = False,
    on_divergence: str = "stop",
    max_skips: int = 10,
    pack: bool | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    resume_from: FitResult | None = None,
    mesh: Any = None,
    data_axis: str = "data",
    shard_opt_state: bool = False,
    record: str = "epoch",
    diagnostics: bool = False,
    sharpness_every: int | None = None,
    sharpness_data: Any = None,
    sharpness_iters: int = 20,
) -> FitResult:
    """Train ``params`` to minimise ``loss_fn`` over ``data`` with compiled epochs.

    The epochs run inside one compiled function (:func:`~gdopt.make_train_fn`, its carry
    donated): each epoch reshuffles ``data`` on the device and scans over its batches, so
    there is no Python call and no host synchronisation per step. The host calls it a chunk
    of epochs at a time, sized (by default) so that each call takes 0.2 to 0.5 s (the same
    program serves every size: the chunk is a dynamic argument); between calls it updates
    the progress bar (``tqdm``), saves checkpoints, notices Ctrl-C and checks whether training
    stopped. The caller's ``params``/``opt_state`` are copied first, never donated.

    Compiled programs are reused: a later call with the same ``loss_fn`` (and
    ``accuracy_fn``) object, an optimizer of the same structure (the same factory and static
    arguments: hyperparameter *values* are data in its state), the same options and the
    same shapes and dtypes compiles nothing (``compile_time`` is then 0). Like ``jax.jit``,
    this trusts the identity of ``loss_fn``: define it once, not in a loop.

    Checked before anything is compiled: ``data`` and ``eval_data`` hold no NaN/inf (the
    array and the first bad index are named); the loss returns a scalar (a vector or a
    ``(loss, aux)`` pair is refused, naming ``has_aux``); integer labels are within the
    model's classes when the loss checks them (``loss_fn`` is traced once, without
    computing, with the labels' extreme values); the optimizer's schedules are finite and
    non-negative on every step the run will take; ``opt_state`` is a state of this
    optimizer for these params; the checkpoint directory is writable.

    Stopping:

    - divergence: a step whose loss or gradient is nan/inf is not applied and training
      stops; ``on_divergence="stop"`` returns the parameters it was computed at with
      ``diverged=True`` (and warns, ``RuntimeWarning``), ``"raise"`` raises
      ``FloatingPointError``, ``"skip"`` skips such steps (counted in
      ``FitResult.skipped_steps``) and stops only after ``max_skips`` in a row. The
      ``stop_reason`` says what diverged first: the loss, the gradient (with the key path
      of its first non-finite leaf) or the parameters, which are checked at the end of every
      epoch; if they are not finite, those of the start of that epoch are returned (see
      :func:`~gdopt.make_train_fn`). NaN params are never returned.
    - convergence (``tol``): stops after ``patience`` consecutive epochs whose mean train
      loss changed by less than ``tol`` relatively, checked inside the compiled loop (the
      exact epoch, whatever the chunks).
    - interruption: Ctrl-C (``SIGINT``) lets the running call finish (at most about 0.5 s)
      and returns the last complete state with ``interrupted=True`` and a ``stop_reason``
      that says so (saved to ``checkpoint_dir`` if given). A second Ctrl-C raises
      ``KeyboardInterrupt`` at once.

    Resuming, exactly: ``epochs`` is the length of the whole run. ``resume_from=result``
    continues a :class:`FitResult` (its parameters, optimizer state, epoch and step counters,
    key and history) up to ``epochs``; with ``checkpoint_dir`` (saved every
    ``checkpoint_every`` epochs and at the end, see :mod:`gdopt.checkpoint`) and
    ``resume=True`` it continues from the latest checkpoint (or starts, when there is none).
    Either way the result is bit-identical to one uninterrupted run with the same arguments:
    the shuffles are seeded by ``fold_in(key, epoch)``, and the counters are carried on.

    Packed execution: with ``pack`` (by default when the optimizer is packable and ``params``
    has at least :data:`~gdopt.packing.AUTO_PACK_MIN_LEAVES` arrays), the parameters and
    optimizer state live in one contiguous buffer per dtype for the whole run
    (:mod:`gdopt.packing`): ``loss_fn`` still receives the same pytree (slices of the
    buffers), the gradient is packed inside the step, and the optimizer updates each buffer
    in one fused loop instead of one loop per array. ``params`` and ``opt_state`` come back
    unpacked, so nothing changes for the caller; the numbers are the same (to float32
    rounding of the summation order). ``FitResult.packed`` says which way it ran.

    Framework models: ``params`` may be an Equinox module or a Flax NNX model, passed whole
    (gdopt imports neither framework). ``loss_fn`` (and ``accuracy_fn``) then take the model,
    ``loss_fn(model, batch)``, and ``FitResult.params`` is a model of the same kind. For
    Equinox, the floating-point arrays of ``eqx.partition(model, eqx.is_inexact_array)`` are
    trained and the rest (activation functions, integer arrays, other fields) is left as it
    is; for NNX, the ``nnx.Param`` variables of ``nnx.split(model, nnx.Param, ...)`` are
    trained (as ``nnx.as_pure`` arrays, as ``nnx.Optimizer`` does) and the other state
    (batch statistics, RNG counters) is held fixed; the model passed in is not modified.
    ``opt_state``, ``FitResult.opt_state`` and ``FitResult.state`` are those of the array
    part (e.g. ``optimizer.init(eqx.filter(model, eqx.is_inexact_array))``); everything
    else works as for a pytree.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` (the mean loss over the batch), or
        ``loss_fn(params) -> scalar`` with ``data=None``.
      params: the initial parameters: a pytree of floating-point arrays, an Equinox module
        or a Flax NNX model (see "Framework models" above).
      optimizer: a gradient transformation, e.g. ``gdopt.adam(1e-3)``.
      data: a pytree of arrays sharing the example axis, e.g. ``(x, y)``; ``None`` for a
        deterministic objective ``loss_fn(params)`` (one full step per epoch).
      epochs: the number of passes over ``data`` (>= 1) of the whole run (epochs already
        run by a resumed run count).
      batch_size: ``None`` for batch gradient descent (one step per epoch), ``1`` for
        per-example SGD, ``k`` for mini-batches of ``k`` (``n % k`` examples, different each
        epoch, are left out of each epoch).
      key: the seed of the shuffling: an int, a ``jax.random.PRNGKey`` or a typed
        ``jax.random.key`` (default ``PRNGKey(0)``).
      eval_data: held-out data, evaluated in full after every epoch (loss and accuracy).
      accuracy_fn: ``accuracy_fn(params, batch) -> scalar``, recorded on ``eval_data``.
      tol: relative train-loss change below which training has converged; ``None``: never.
      patience: consecutive epochs below ``tol`` needed.
      opt_state: a state to start from (default ``optimizer.init(params)``); the counters
        start at 0 (use ``resume_from`` to continue a run exactly).
      epochs_per_call: a fixed number of epochs per compiled call; default: sized by time
        as described above.
      progress: show a ``tqdm`` progress bar (on stderr).
      on_divergence: ``"stop"``, ``"raise"`` or ``"skip"``.
      max_skips: with ``"skip"``, the non-finite steps in a row tolerated (>= 1).
      pack: ``True`` run packed, ``False`` run on the pytree, ``None`` (default) decide as
        described above.
      checkpoint_dir: a directory for checkpoints of the whole training state (needs the
        ``checkpoint`` extra, orbax-checkpoint); saved at the end (and on Ctrl-C). Without
        ``resume`` it must hold no checkpoint yet.
      checkpoint_every: also save every this many epochs.
      resume: continue from the latest checkpoint in ``checkpoint_dir``.
      resume_from: a :class:`FitResult` to continue.
      mesh: ``None`` (one device), ``"auto"`` (every device on one ``data_axis``) or a
        :class:`jax.sharding.Mesh`: each batch is split over ``data_axis``, the parameters
        keep the sharding they come with (replicated by default) and their state follows
        them; XLA reduces the gradients inside the compiled step (:func:`gdopt.sharding.place`,
        docs/distributed.md). Runs unpacked.
      data_axis: the mesh axis the batch is split over (``batch_size`` must be a multiple
        of its size).
      shard_opt_state: with a mesh, split every moment of the optimizer state over
        ``data_axis`` (ZeRO-1); the results do not change.
      record: ``"epoch"`` (default) or ``"step"``: ``history.step_loss`` also holds the
        loss of every step of the epochs run, flat (``epochs_run * steps_per_epoch``
        entries, NaN for a step not applied), computed in the same compiled steps.
      diagnostics: also record per epoch (means over its applied steps) the gradient L2
        norm, the update L2 norm, the ratio update norm / param norm and the effective
        step size update norm / gradient norm (``history.grad_norm``, ``update_norm``,
        ``update_ratio``, ``step_size``). Off (default), none of it is computed.
      sharpness_every: also measure the sharpness, the top eigenvalue of the loss's
        Hessian, after every this many epochs (epochs ``k``, ``2k``, ...):
        ``history.sharpness`` holds it (NaN for the epochs not measured). Full-batch
        gradient descent at learning rate ``η`` drives it up to about ``2 / η``, the edge of
        stability (Cohen et al. 2021, https://arxiv.org/abs/2103.00065). Each measurement is
        :func:`gdopt.landscape.hessian_top_eigenpair` (``sharpness_iters`` Lanczos steps of
        Hessian-vector products), warm-started from the previous measurement's eigenvector
        (the first from a normal vector drawn with ``key``, measured before the first epoch
        and not recorded), as :func:`gdopt.landscape.track_sharpness` does: the same run and
        key give its values. It is a second compiled program, run between the compiled
        calls (which then end at the measured epochs); the training program is unchanged.
        Not with ``mesh``.
      sharpness_data: the batch the Hessian is measured on (all of it; default ``data``:
        pass a subset for a large data set). Needs ``data`` and ``sharpness_every``.
      sharpness_iters: Lanczos steps per measurement (>= 1).

    Resuming from a checkpoint needs the same ``record``, ``diagnostics`` and (on or off)
    ``sharpness_every``.

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: bad ``epochs``, ``batch_size``, ``tol``, ``patience``, ``epochs_per_call``,
        ``on_divergence``, ``max_skips``, ``sharpness_every`` or ``sharpness_iters``,
        ``sharpness_data`` without ``data`` or ``sharpness_every``, a framework model with
        nothing to train, empty data, arrays in ``data`` of different
        lengths, NaN/inf in the data, labels outside the classes, a negative or non-finite
        schedule value, a foreign ``opt_state``, a checkpoint directory already in use (or a
        checkpoint of another run).
      TypeError: a parameter leaf that is not a floating-point array (the key path is
        named), a loss that does not return a scalar, a bad ``key``.
      OSError: a checkpoint directory that cannot be written.
      FloatingPointError: training diverged and ``on_divergence="raise"``.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    >>> y = x @ jnp.array([1.0, -2.0, 0.5])
    >>> loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)
    >>> res = gdopt.fit(loss, jnp.zeros(3), gdopt.adam(0.1), (x, y), epochs=50, batch_size=16)
    >>> [round(v, 2) for v in res.params.tolist()], res.epochs_run, res.steps_run
    ([1.0, -2.0, 0.5], 50, 200)

    Continued exactly, and a deterministic objective:

    >>> part = gdopt.fit(loss, jnp.zeros(3), gdopt.adam(0.1), (x, y), epochs=20, batch_size=16)
    >>> more = gdopt.fit(loss, jnp.zeros(3), gdopt.adam(0.1), (x, y), epochs=50, batch_size=16,
    ...                  resume_from=part)
    >>> bool(jnp.all(more.params == res.params)), more.epochs_run
    (True, 50)
    >>> quad = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> [round(v, 3) for v in gdopt.fit(quad, jnp.zeros(2), gdopt.sgd(0.1), epochs=100).params.tolist()]
    [3.0, 3.0]
    """
    start = time.perf_counter()
    from gdopt import checkpoint as ckpt  # an application module: imported only when needed

    # 0. an Equinox module or a Flax NNX model: train its arrays, give back the same kind
    model = _frameworks.adapt(params)
    if model is not None:
        params = model.arrays
        loss_fn = model.wrap(loss_fn, with_data=data is not None)
        accuracy_fn = model.wrap(accuracy_fn)

    # 1. arguments, all checked before anything is compiled or trained
    epochs = check_epochs("epochs", epochs)
    patience = check_epochs("patience", patience)
    check_tol(tol)
    check_on_divergence(on_divergence)
    record = check_record(record)
    diagnostics = bool(diagnostics)
    skips = check_int("max_skips", max_skips, 1) if on_divergence == "skip" else 0
    _checks.check_params_are_arrays(params)
    check_float_leaves(params)
    key = check_key(key)
    if data is None:
        if batch_size is not None:
            raise ValueError(
                f"batch_size={batch_size!r} needs data; with data=None, fit minimises "
                "loss_fn(params), one full step per epoch."
            )
        if eval_data is not None or accuracy_fn is not None:
            raise ValueError("eval_data and accuracy_fn need data; fit got data=None.")
        n = 1
    else:
        n = dataset_size(data)
        check_batch_size(batch_size, n)
        data = jax.tree.map(jnp.asarray, data)
        _checks.check_finite_data("data", data)
    n_eval = 0
    if eval_data is not None:
        n_eval = dataset_size(eval_data, "eval_data")
        eval_data = jax.tree.map(jnp.asarray, eval_data)
        _checks.check_finite_data("eval_data", eval_data)
    _checks.check_loss(loss_fn, params, data, batch_size or n)
    if eval_data is not None:
        _checks.check_loss(loss_fn, params, eval_data, n_eval, "eval_data")
    if epochs_per_call is None:
        length = min(epochs, MAX_CHUNK)
    else:
        length = min(check_int("epochs_per_call", epochs_per_call, 1), epochs)
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
        if checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir.")
    measuring = sharpness_every is not None
    if measuring:
        sharpness_every = check_int("sharpness_every", sharpness_every, 1)
        sharpness_iters = check_int("sharpness_iters", sharpness_iters, 1)
        if mesh is not None:
            raise ValueError(
                "sharpness_every is not supported with mesh: measure the sharpness of the "
                "result with gdopt.landscape.hessian_eigenvalues instead."
            )
    if sharpness_data is not None:
        if not measuring:
            raise ValueError("sharpness_data needs sharpness_every (how often to measure).")
        if data is None:
            raise ValueError(
                "sharpness_data needs data: a deterministic loss_fn(params) is measured as it is."
            )
        sharpness_data = jax.tree.map(jnp.asarray, sharpness_data)
        n_sharp = dataset_size(sharpness_data, "sharpness_data")
        _checks.check_finite_data("sharpness_data", sharpness_data)
        _checks.check_loss(loss_fn, params, sharpness_data, n_sharp, "sharpness_data")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir (resume_from continues a FitResult).")
    if resume_from is not None and resume:
        raise ValueError("pass resume=True (from checkpoint_dir) or resume_from, not both.")
    if resume_from is not None and not isinstance(getattr(resume_from, "state", None), FitState):
        raise TypeError(
            "resume_from must be a FitResult returned by gdopt.fit (with its state), got "
            f"{type(resume_from).__name__}."
        )
    directory: Path | None = None
    if checkpoint_dir is not None:
        directory = _checks.check_checkpoint_dir(checkpoint_dir, resume, ckpt.all_steps)
        ckpt.require_orbax()
    steps_per_epoch = 1 if batch_size is None else n // batch_size
    _checks.check_schedules(optimizer, steps_per_epoch * epochs)
    if mesh is not None:  # several devices: placed by gdopt.sharding (docs/distributed.md)
        from gdopt import sharding

        placed = sharding.place(
            params,
            opt_state,
            data,
            eval_data,
            loss_fn=loss_fn,
            optimizer=optimizer,
            mesh=mesh,
            data_axis=data_axis,
            shard_opt_state=shard_opt_state,
            batch_size=batch_size,
            pack=pack,
        )
        params, opt_state = placed.params, placed.opt_state
        data, eval_data = placed.data, placed.eval_data
        loss_fn, optimizer, pack = placed.loss_fn, placed.optimizer, False
    layout = layout_for(params, optimizer, pack)
    if opt_state is not None and not layout.packed:
        _checks.check_opt_state(optimizer, params, opt_state)
    no_data = data is None
    user_key = key
    shapes = _Shapes(steps_per_epoch, record, diagnostics, measuring)

    # 2. the training state: fresh, from a FitResult or from the latest checkpoint
    t0 = time.perf_counter()
    saved: FitState | None = None
    prior = shapes.blank(0)
    start_vector: Any = None  # the warm start of the next sharpness measurement
    if resume_from is not None:
        carried: FitState = resume_from.state
        saved = carried
        params, opt_state = carried.params, carried.opt_state
        key = check_key(resume_from.key)
        prior = _raw_of(resume_from.history, int(carried.epoch), shapes)
        start_vector = getattr(resume_from, "sharpness_start", None) if measuring else None
    elif directory is not None and resume and ckpt.latest_step(directory) is not None:
        step = ckpt.latest_step(directory)
        assert step is not None
        like_state = opt_state if opt_state is not None else jax.eval_shape(optimizer.init, params)
        tree = ckpt.restore(
            directory, like=_checkpoint_like(params, like_state, key, step, shapes), step=step
        )
        saved = tree["state"]
        assert saved is not None
        params, opt_state = saved.params, saved.opt_state
        # through the host, so the key is uncommitted as a user's key is (placed by jit)
        stored = _checks.like_key(np.asarray(tree["key"]), key)
        given = _checks.key_data(user_key)
        if not np.array_equal(np.asarray(_checks.key_data(stored)), np.asarray(given)):
            raise ValueError(
                f"the checkpoint in {str(directory)!r} was trained with another key; pass the "
                "run's key (or seed) again to resume it exactly."
            )
        key = stored
        prior = _from_checkpoint(tree["history"], step, shapes)
        start_vector = tree.get("sharpness_start")
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
    if saved is not None:  # carry the counters on: the shuffles continue where they were
        state = state._replace(**{f: jnp.array(getattr(saved, f), copy=True) for f in _COUNTERS})
    # the first set-up of a kind (eager init, compile) counts as compilation
    compile_time = time.perf_counter() - t0 if setup_time else 0.0

    # 3. the training program
    options = (
        length,
        batch_size,
        tol,
        patience,
        layout.packed,
        skips,
        no_data,
        record,
        diagnostics,
    )
    program_key = ("train", loss_fn, accuracy_fn, opt_key, options)

    def build() -> Any:
        train = make_train_fn(
            (lambda p, _: loss_fn(p)) if no_data else loss_fn,
            optimizer,
            n_epochs=length,
            batch_size=batch_size,
            accuracy_fn=accuracy_fn,
            tol=tol,
            patience=patience,
            pack=layout,
            max_skips=skips,
            record=record,
            diagnostics=diagnostics,
        )
        return jax.jit(train, donate_argnums=0)

    stop_at = jnp.asarray(epochs, jnp.int32)
    run_chunk, seconds = _compile.compiled(
        program_key, keep, build, state, data, key, eval_data, stop_at
    )
    compile_time += seconds

    # 3b. the sharpness measurement: a second compiled program, run between the calls
    measure: Any = None
    measure_data = None if no_data else (data if sharpness_data is None else sharpness_data)
    if measuring:
        from gdopt import landscape  # an application module: imported only when measuring

        iters = sharpness_iters

        def build_measure() -> Any:
            def run_measure(carried: Any, start: Any, batch: Any) -> tuple[jax.Array, Any]:
                return landscape.hessian_top_eigenpair(
                    loss_fn, layout.restore(carried), batch, num_iters=iters, start=start
                )

            return jax.jit(run_measure)

        user_now = layout.restore(state.params)
        fresh = start_vector is None or (
            _compile.signature(start_vector) != _compile.signature(user_now)
        )
        if fresh:  # as track_sharpness: a normal vector of the key, then one measurement
            flat, unravel = ravel_pytree(user_now)
            start_vector = unravel(jax.random.normal(key, flat.shape, flat.dtype))
        measure, seconds = _compile.compiled(
            ("sharpness", loss_fn, layout.packed, iters, no_data),
            None,
            build_measure,
            state.params,
            start_vector,
            measure_data,
        )
        compile_time += seconds
        if fresh:
            _, start_vector = measure(state.params, start_vector, measure_data)

    # 4. the host loop: compiled calls of about CHUNK_SECONDS each (or epochs_per_call)
    chunks: list[History] = [prior]
    adaptive = epochs_per_call is None
    per_call = 1 if adaptive else length
    epoch = int(state.epoch)
    diverged, converged = bool(state.diverged), bool(state.converged)
    last_saved = ckpt.latest_step(directory) if directory is not None else None

    def save(state: FitState) -> None:
        nonlocal last_saved
        if directory is None or last_saved == int(state.epoch):
            return
        user = state._replace(
            params=layout.restore(state.params), opt_state=layout.restore_state(state.opt_state)
        )
        tree = _checkpoint_tree(user, key, _raw(chunks), shapes, start_vector)
        ckpt.save(directory, tree, step=int(state.epoch))
        last_saved = int(state.epoch)

    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=epochs, initial=min(epoch, epochs), unit="epoch", desc="fit", leave=True)
    interrupt = _Interrupt()
    try:
        with interrupt:
            while not (diverged or converged or epoch >= epochs or interrupt.hit):
                stop = min(epoch + per_call, epochs)
                if checkpoint_every is not None:
                    stop = min(stop, (epoch // checkpoint_every + 1) * checkpoint_every)
                if sharpness_every is not None:  # a call ends where a measurement is due
                    stop = min(stop, (epoch // sharpness_every + 1) * sharpness_every)
                t_call = time.perf_counter()
                state, hist = run_chunk(state, data, key, eval_data, np.int32(stop))
                hist, flags = jax.device_get((hist, (state.epoch, state.diverged, state.converged)))
                before, epoch = epoch, int(flags[0])
                diverged, converged = bool(flags[1]), bool(flags[2])
                elapsed = time.perf_counter() - t_call
                if measure is not None:
                    sharp = np.full(hist.epochs.shape, np.nan, np.float32)
                    assert sharpness_every is not None
                    if epoch > before and epoch % sharpness_every == 0 and not diverged:
                        value, start_vector = measure(state.params, start_vector, measure_data)
                        sharp[hist.epochs == epoch] = float(value)
                    hist = hist._replace(sharpness=sharp)
                chunks.append(hist)
                if adaptive:  # size the next call to take CHUNK_SECONDS; no recompile
                    low, high = CHUNK_SECONDS
                    ran = max(int(np.sum(hist.epochs > 0)), 1)
                    if elapsed < low or elapsed > high:
                        target = ran * (low + high) / 2 / max(elapsed, 1e-6)
                        per_call = int(min(length, max(1, target)))
                if pbar is not None:
                    ran = hist.epochs > 0
                    pbar.update(int(np.sum(ran)))
                    if np.any(ran):
                        post = {"loss": f"{hist.train_loss[ran][-1]:.4g}"}
                        if accuracy_fn is not None and eval_data is not None:
                            post["acc"] = f"{hist.eval_accuracy[ran][-1]:.4f}"
                        pbar.set_postfix(post)
                if checkpoint_every is not None and epoch % checkpoint_every == 0:
                    save(state)
            save(state)  # the end (or the interruption): the last complete state
    finally:
        if pbar is not None:
            pbar.close()

    # 5. the result
    state = jax.block_until_ready(state)
    wall_time = time.perf_counter() - start
    raw = _raw(chunks)
    history = _history(raw, eval_data is not None, accuracy_fn is not None, shapes)
    user_params = layout.restore(state.params)
    bad_path = None
    if diverged and DIVERGED_WHAT[int(state.diverged_what)] == "gradient":
        bad_path = _first_bad_gradient(loss_fn, user_params, data, key, state, batch_size)
    stop_reason = _stop_reason(state, diverged, converged, tol, patience, bad_path)
    interrupted = interrupt.hit and not (diverged or converged)
    if interrupted:
        stop_reason = (
            f"interrupted (Ctrl-C) after epoch {epoch} of {epochs}; params are those at the end "
            f"of epoch {epoch}"
            + (f", saved in {str(directory)!r}" if directory is not None else "")
        )
    if diverged and on_divergence == "raise":
        raise FloatingPointError(stop_reason)
    if diverged:
        warnings.warn(f"gdopt.fit {stop_reason}", RuntimeWarning, stacklevel=2)
    final = state._replace(params=user_params, opt_state=layout.restore_state(state.opt_state))
    return FitResult(
        params=final.params if model is None else model.rebuild(final.params),
        opt_state=final.opt_state,
        history=history,
        converged=converged,
        diverged=diverged,
        epochs_run=int(state.epoch),
        steps_run=int(state.step),
        stop_reason=stop_reason,
        wall_time=wall_time,
        compile_time=compile_time,
        packed=layout.packed,
        interrupted=interrupted,
        skipped_steps=int(state.skipped),
        state=final,
        key=key,
        sharpness_start=start_vector,
    )
