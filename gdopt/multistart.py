"""Many starts at once: where does training end up, from where, and along which path?

:func:`multistart` trains ``n_starts`` initialisations as one compiled, vectorised program
(``jax.vmap`` of the engine's pure core, :func:`gdopt.make_train_fn` over
:func:`gdopt.init_fit_state`), and reports the distinct end points (the *basin report*
:attr:`MultiStartResult.minima`): a researcher sees at once how many minima the starts found,
how good each is and how often it is reached. :func:`record_trajectories` records the
parameter paths of several optimizers from the same start, for contour plots of
low-dimensional problems (:func:`gdopt.plot.contours`).

A deterministic objective ``loss_fn(params)`` (``data=None``, e.g. the test functions of
:mod:`gdopt.problems`) is trained full-batch, one step per epoch, for ``steps`` steps; with
data, each start is a :func:`gdopt.fit` (the same epochs, unpacked) for ``epochs`` epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from gdopt import _compile
from gdopt._traits import check_transform
from gdopt._validation import check_callable, check_int, check_scalar
from gdopt.base import GradientTransformation
from gdopt.batching import check_batch_size, dataset_size
from gdopt.engine import FitState, init_fit_state, make_train_fn
from gdopt.tree import check_float_leaves

__all__ = [
    "Minimum",
    "MultiStartResult",
    "multistart",
    "Trajectory",
    "record_trajectories",
]


class Minimum(NamedTuple):
    """One distinct end point of :func:`multistart` (an entry of the basin report).

    Attributes:
      params: the end point (the lowest-loss member of the cluster), a pytree like the
        parameters.
      loss: its final loss.
      count: how many starts ended within ``basin_tol`` of it.
      indices: those starts' indices (NumPy int array, ascending).
    """

    params: Any
    loss: float
    count: int
    indices: np.ndarray


class MultiStartResult(NamedTuple):
    """What :func:`multistart` returns.

    Attributes:
      params: the end points, stacked (every leaf has a leading axis ``n_starts``).
      final_loss: NumPy ``(n_starts,)``: the loss at each end point (on all of ``data``).
      best_index: the start with the lowest finite final loss among those that did not
        diverge (``-1`` if every start diverged).
      best_params: its end point (unstacked; ``None`` if every start diverged).
      diverged: NumPy bool ``(n_starts,)``: the start's training diverged (its ``params``
        are its last finite ones).
      minima: the basin report: a list of :class:`Minimum`, sorted by loss. End points of
        starts that did not diverge are clustered greedily in order of loss: each joins the
        first minimum within ``basin_tol`` (Euclidean distance over all parameters) or starts
        a new one. The counts add up to the number of starts that did not diverge.
      basin: NumPy int ``(n_starts,)``: the index into ``minima`` of each start's end point
        (``-1`` for a diverged start).
      init_params: the initialisations, stacked (for basin maps).
      trajectory: with ``record_every``, the parameters every ``record_every`` steps (epochs),
        stacked as ``(n_starts, 1 + steps // record_every, ...)`` starting with the
        initialisation; else ``None``.
      wall_time: seconds spent in the call, compilation included.
    """

    params: Any
    final_loss: np.ndarray
    best_index: int
    best_params: Any
    diverged: np.ndarray
    minima: list[Minimum]
    basin: np.ndarray
    init_params: Any
    trajectory: Any = None
    wall_time: float = 0.0


def _deterministic(loss_fn: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    return lambda p, batch: loss_fn(p)


def _budget(steps: int | None, epochs: int | None, data: Any) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError(
            "give exactly one of steps (a deterministic loss_fn(params), data=None) and epochs "
            f"(with data); got steps={steps!r}, epochs={epochs!r}."
        )
    if steps is not None:
        if data is not None:
            raise ValueError(
                "steps is for a deterministic objective (data=None); with data give epochs."
            )
        return check_int("steps", steps, 1)
    return check_int("epochs", epochs, 1)


def _cluster(points: np.ndarray, losses: np.ndarray, ok: np.ndarray, tol: float):
    """Greedy clustering in order of loss: ``(representatives, members)`` as indices."""
    order = [int(i) for i in np.argsort(np.where(ok, losses, np.inf), kind="stable") if ok[i]]
    reps: list[int] = []
    members: list[list[int]] = []
    for i in order:
        if reps:
            d = np.linalg.norm(points[reps] - points[i], axis=1)
            j = int(np.argmin(d))
            if d[j] <= tol:
                members[j].append(i)
                continue
        reps.append(i)
        members.append([i])
    return reps, members


def _build(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    deterministic: bool,
    budget: int,
    record_every: int | None,
    batch_size: int | None,
    tol: float | None,
) -> Callable[..., Any]:
    """The vectorised program ``(params0, opt_state0, keys, data) -> (params, final_loss,
    diverged, path)``, jitted (``multistart`` compiles it through :mod:`gdopt._compile`, so a
    later call with the same loss, optimizer structure and options reuses it: the
    hyperparameter values live in the state, computed outside)."""
    batch_loss = _deterministic(loss_fn) if deterministic else loss_fn
    chunk = budget if record_every is None else record_every
    train = make_train_fn(batch_loss, optimizer, n_epochs=chunk, batch_size=batch_size, tol=tol)

    def one(params: Any, opt_state: Any, k: jax.Array, data: Any):
        def final_loss(p: Any) -> jax.Array:
            return jnp.asarray(loss_fn(p) if deterministic else loss_fn(p, data))

        state: FitState = init_fit_state(params, opt_state)
        if record_every is None:
            state, _ = train(state, data, k)
            path = None
        else:

            def body(s: FitState, _: Any):
                s, _ = train(s, data, k)
                return s, s.params

            state, path = lax.scan(body, state, None, length=budget // record_every)
            path = jax.tree.map(lambda p0, ps: jnp.concatenate([p0[None], ps]), params, path)
        return state.params, final_loss(state.params), state.diverged, path

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))


def multistart(
    loss_fn: Callable[..., Any],
    init_fn: Callable[[jax.Array], Any],
    optimizer: GradientTransformation,
    *,
    n_starts: int,
    key: jax.Array,
    steps: int | None = None,
    epochs: int | None = None,
    data: Any = None,
    batch_size: int | None = None,
    tol: float | None = None,
    basin_tol: float = 1e-3,
    record_every: int | None = None,
) -> MultiStartResult:
    """Train ``n_starts`` initialisations at once and report the minima they reach.

    ``init_fn`` is called on ``n_starts`` keys split from ``key`` (under ``jax.vmap``); each
    start is then trained by the engine's core (:func:`gdopt.make_train_fn`: the epochs of
    :func:`gdopt.fit`, unpacked, with its divergence handling and ``tol`` rule), the whole
    batch of starts as one compiled, vectorised program. Each start shuffles with its own key
    (also split from ``key``). The final loss is measured on all of ``data``. As in
    :func:`gdopt.fit`, the program is reused by later calls with the same ``loss_fn`` object,
    an optimizer of the same structure (hyperparameter values are data in its state), the same
    options and shapes: they compile nothing.

    Args:
      loss_fn: ``loss_fn(params) -> scalar`` with ``data=None``, or ``loss_fn(params,
        batch) -> scalar`` with data.
      init_fn: ``init_fn(key) -> params``, e.g. ``lambda k: jax.random.uniform(k, (2,),
        minval=-5, maxval=5)`` or a model's ``init``.
      optimizer: the gradient transformation (the same for every start).
      n_starts: the number of starts (>= 1).
      key: PRNG key of the initialisations and shuffles.
      steps: with ``data=None``: full-batch steps per start.
      epochs: with ``data``: epochs per start. Give exactly one of ``steps`` and ``epochs``
        (``epochs`` is accepted for ``data=None`` too, where an epoch is one step).
      data: the training data (a pytree of arrays sharing the example axis), or ``None``.
      batch_size: as in :func:`gdopt.fit` (with data only).
      tol: the relative-change stopping rule of :func:`gdopt.fit` (per start).
      basin_tol: end points within this Euclidean distance count as one minimum (> 0).
      record_every: record the parameters every ``record_every`` steps (epochs) into
        :attr:`MultiStartResult.trajectory` (for low-dimensional problems: the memory is
        ``n_starts * steps / record_every`` parameter copies); ``None``: do not record.

    Returns:
      A :class:`MultiStartResult`.

    Raises:
      ValueError: ``n_starts < 1``, neither or both of ``steps``/``epochs`` (or ``steps``
        with data), ``batch_size`` without data, ``basin_tol <= 0``, bad ``record_every``.
      TypeError: ``init_fn`` or ``loss_fn`` not callable, ``optimizer`` not a
        transformation, non-floating parameters.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> f = gdopt.problems.himmelblau
    >>> init = lambda k: jax.random.uniform(k, (2,), minval=-5.0, maxval=5.0)
    >>> r = gdopt.multistart(f, init, gdopt.sgd(0.005), n_starts=16, key=jax.random.PRNGKey(0),
    ...                      steps=1000)
    >>> len(r.minima), sum(m.count for m in r.minima), r.final_loss.shape
    (4, 16, (16,))
    """
    start_time = time.perf_counter()
    check_callable("loss_fn", loss_fn, "a function loss_fn(params[, batch]) -> scalar")
    check_callable("init_fn", init_fn, "a function init_fn(key) -> params")
    check_transform(optimizer, "multistart's optimizer")
    n_starts = check_int("n_starts", n_starts, 1)
    if data is None and steps is None and epochs is not None:
        steps, epochs = epochs, None
    budget = _budget(steps, epochs, data)
    check_scalar("basin_tol", basin_tol, low=0.0, low_open=True)
    if record_every is not None:
        record_every = check_int("record_every", record_every, 1)
        if budget % record_every:
            raise ValueError(
                f"record_every must divide the number of {'steps' if data is None else 'epochs'}"
                f" ({budget}), got {record_every}."
            )
    if data is None:
        if batch_size is not None:
            raise ValueError(
                "batch_size needs data: a deterministic loss_fn(params) is full-batch."
            )
        train_data: Any = None  # a deterministic objective: the core's data=None epochs
    else:
        train_data = jax.tree.map(jnp.asarray, data)
        check_batch_size(batch_size, dataset_size(train_data))

    init_key, train_key = jax.random.split(key)
    init_keys = jax.random.split(init_key, n_starts)
    train_keys = jax.random.split(train_key, n_starts)
    params0 = jax.vmap(init_fn)(init_keys)
    check_float_leaves(params0, "init_fn(key)")
    opt_state0 = jax.vmap(optimizer.init)(params0)
    options = (data is None, budget, record_every, batch_size, tol)
    opt_key, keep = _compile.optimizer_key(optimizer)
    args = (params0, opt_state0, train_keys, train_data)
    program, _ = _compile.compiled(
        ("multistart", loss_fn, opt_key, options),
        keep,
        lambda: _build(loss_fn, optimizer, *options),
        *args,
    )
    params, final, diverged, path = program(*args)
    final = np.asarray(final, np.float64)
    diverged = np.asarray(diverged, bool)
    ok = ~diverged & np.isfinite(final)
    points = np.asarray(jax.vmap(lambda p: ravel_pytree(p)[0])(params), np.float64)
    reps, members = _cluster(points, final, ok, float(basin_tol))

    def take(i: int) -> Any:
        return jax.tree.map(lambda x: x[i], params)

    minima = [
        Minimum(take(r), float(final[r]), len(ms), np.array(sorted(ms), np.int64))
        for r, ms in zip(reps, members, strict=True)
    ]
    basin = np.full((n_starts,), -1, np.int64)
    for j, ms in enumerate(members):
        basin[ms] = j
    best = reps[0] if reps else -1
    return MultiStartResult(
        params=params,
        final_loss=final,
        best_index=best,
        best_params=take(best) if best >= 0 else None,
        diverged=diverged,
        minima=minima,
        basin=basin,
        init_params=params0,
        trajectory=path,
        wall_time=time.perf_counter() - start_time,
    )


class Trajectory(NamedTuple):
    """The path of one run (:func:`record_trajectories`).

    Attributes:
      params: the parameters every ``every`` steps, stacked (leading axis
        ``1 + steps // every``; the first entry is the start).
      loss: NumPy, the loss at each recorded point.
      diverged: the run diverged (its later points repeat the last finite parameters).
    """

    params: Any
    loss: np.ndarray
    diverged: bool


def record_trajectories(
    loss_fn: Callable[..., Any],
    params: Any,
    optimizers: Mapping[str, GradientTransformation],
    *,
    steps: int,
    every: int = 1,
    data: Any = None,
    batch_size: int | None = None,
    key: jax.Array | None = None,
) -> dict[str, Trajectory]:
    """Record the parameter paths of several optimizers from the same start, in one call.

    Each optimizer runs the engine's core (:func:`gdopt.make_train_fn`) for ``steps`` steps
    (with data: epochs) from ``params``, recording the parameters every ``every`` steps; all
    of them are traced into one compiled program (one call, one compilation). Meant for
    low-dimensional problems and contour plots (:func:`gdopt.plot.contours`).

    Args:
      loss_fn: ``loss_fn(params) -> scalar`` with ``data=None``, or ``loss_fn(params,
        batch) -> scalar`` with data.
      params: the common start.
      optimizers: ``{label: optimizer}``.
      steps: steps (with data: epochs) per run, a multiple of ``every``.
      every: record every ``every`` steps (>= 1).
      data: the training data, or ``None``.
      batch_size: as in :func:`gdopt.fit` (with data only).
      key: PRNG key of the shuffles (default ``jax.random.PRNGKey(0)``).

    Returns:
      ``{label: Trajectory}`` in the order of ``optimizers``.

    Raises:
      ValueError: no optimizers, ``steps``/``every`` not integers >= 1 or ``every`` not
        dividing ``steps``, ``batch_size`` without data.
      TypeError: a value of ``optimizers`` that is not a transformation.

    >>> import gdopt, jax.numpy as jnp
    >>> f = gdopt.problems.rosenbrock
    >>> paths = gdopt.record_trajectories(f, jnp.array([-1.2, 1.0]),
    ...     {"sgd": gdopt.sgd(1e-3), "adam": gdopt.adam(0.02)}, steps=100, every=10)
    >>> paths["adam"].params.shape, paths["sgd"].loss.shape
    ((11, 2), (11,))
    """
    check_callable("loss_fn", loss_fn, "a function loss_fn(params[, batch]) -> scalar")
    check_float_leaves(params)
    if not isinstance(optimizers, Mapping) or not optimizers:
        raise ValueError(
            "optimizers must be a non-empty dict {label: optimizer}, got "
            f"{type(optimizers).__name__}."
        )
    for label, opt in optimizers.items():
        check_transform(opt, f"optimizers[{label!r}]")
    steps = check_int("steps", steps, 1)
    every = check_int("every", every, 1)
    if steps % every:
        raise ValueError(f"every must divide steps ({steps}), got {every}.")
    if data is None:
        if batch_size is not None:
            raise ValueError(
                "batch_size needs data: a deterministic loss_fn(params) is full-batch."
            )
        batch_loss = _deterministic(loss_fn)
        train_data: Any = None  # the core's data=None epochs: one full step each
        eval_loss = lambda p: jnp.asarray(loss_fn(p))  # noqa: E731
    else:
        train_data = jax.tree.map(jnp.asarray, data)
        check_batch_size(batch_size, dataset_size(train_data))
        batch_loss = loss_fn
        eval_loss = lambda p: jnp.asarray(loss_fn(p, train_data))  # noqa: E731
    key = jax.random.PRNGKey(0) if key is None else key
    trains = {
        label: make_train_fn(batch_loss, opt, n_epochs=every, batch_size=batch_size)
        for label, opt in optimizers.items()
    }

    def run_all(params: Any, key: jax.Array):
        out = []  # a list: a dict output of jit comes back with its keys sorted
        for label, opt in optimizers.items():
            train = trains[label]

            def body(s: FitState, _: Any, train=train):
                s, _ = train(s, train_data, key)
                return s, (s.params, eval_loss(s.params))

            state = init_fit_state(params, opt.init(params))
            state, (path, losses) = lax.scan(body, state, None, length=steps // every)
            path = jax.tree.map(lambda p0, ps: jnp.concatenate([p0[None], ps]), params, path)
            losses = jnp.concatenate([eval_loss(params)[None], losses])
            out.append((path, losses, state.diverged))
        return out

    results = jax.jit(run_all)(params, key)
    return {
        label: Trajectory(params=path, loss=np.asarray(losses), diverged=bool(div))
        for label, (path, losses, div) in zip(optimizers, results, strict=True)
    }
