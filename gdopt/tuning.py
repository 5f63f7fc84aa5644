"""Tuning without expertise: vectorised sweeps, successive halving and a learning-rate finder.

Every function here builds on the engine's pure core (:func:`~gdopt.make_train_fn`,
:class:`~gdopt.FitState`) and on hyperparameters held in the optimizer state
(:func:`~gdopt.set_hyperparams`): K training runs are one ``jax.vmap`` over K training states,
compiled once, so a sweep of 32 learning rates costs one compilation and runs the 32 models
side by side.

* :func:`sweep`: a grid (or list) of configurations, optionally crossed with seeds, trained
  for the same epochs in one compiled program; returns a :class:`SweepResult`;
* :func:`successive_halving`: rungs of such programs, keeping the best ``1/eta`` each time;
* :func:`lr_find`: the learning-rate range test (an exponential ramp in one compiled scan),
  returns an :class:`LRFindResult` with suggested rates;
* :func:`lr_find_runs`: the vectorised variant, short runs at K fixed rates in one program.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gdopt import _compile
from gdopt._traits import traits_of
from gdopt._validation import check_callable, check_choice, check_int, check_key
from gdopt.base import GradientTransformation, apply_updates
from gdopt.batching import check_batch_size, dataset_size
from gdopt.engine import FitState, History, init_fit_state, make_train_fn
from gdopt.engine.core import DIAGNOSTICS, check_record
from gdopt.hyperparams import get_hyperparams, rebuild_with_hyperparams, set_hyperparams
from gdopt.packing import Layout, layout_for
from gdopt.tree import check_float_leaves

__all__ = [
    "sweep",
    "SweepResult",
    "Rung",
    "successive_halving",
    "lr_find",
    "lr_find_runs",
    "LRFindResult",
    "SUGGESTION_RULES",
    "SWEEP_METRICS",
]

SUGGESTION_RULES = ("valley", "steep", "minimum")
"""The rules :func:`lr_find` can suggest a learning rate with."""

SWEEP_METRICS = ("train_loss", "eval_loss", "eval_accuracy")
"""What a sweep ranks its runs by (``metric=``)."""


# ----------------------------------------------------------------------------- programs

# ----------------------------------------------------------------------------- configurations


def _hyperparam_names(state: Any) -> list[str]:
    try:
        found = get_hyperparams(state)
    except ValueError:
        raise TypeError(
            "optimizer must keep its hyperparameters in its state (a named gdopt optimizer "
            "such as gdopt.adam(1e-3), or inject_hyperparams/with_hyperparams) to be swept."
        ) from None
    names: set[str] = set()
    for k, v in found.items():
        names.update(v) if isinstance(v, dict) else names.add(k)
    return sorted(names)


def _is_number(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    return np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype, np.number)


def _configurations(grid: Any, configs: Any) -> tuple[list[dict[str, float]], str]:
    """The list of configurations and the name of the argument they came from."""
    if grid is not None and configs is not None:
        raise ValueError("give grid= (a Cartesian product) or configs= (a list), not both.")
    if grid is None and configs is None:
        raise ValueError(
            "give grid={'learning_rate': [...], ...} or configs=[{'learning_rate': ...}, ...]."
        )
    if grid is not None:
        if not isinstance(grid, Mapping):
            raise TypeError(
                f"grid must be a dict {{name: list of values}}, got {type(grid).__name__}."
            )
        if not grid:
            raise ValueError("grid is empty: give at least one hyperparameter with values.")
        names = list(grid)
        columns = []
        for name in names:
            values = grid[name]
            if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
                values = [values] if _is_number(values) else values
            if not isinstance(values, (Sequence, np.ndarray)):
                raise TypeError(
                    f"grid[{name!r}] must be a list of numbers, got {type(values).__name__}."
                )
            values = list(np.asarray(values).reshape(-1)) if np.ndim(values) else list(values)
            if not values:
                raise ValueError(f"grid[{name!r}] is empty: give at least one value.")
            columns.append(values)
        out = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*columns)]
        where = "grid"
    else:
        if isinstance(configs, Mapping) or not isinstance(configs, Sequence):
            raise TypeError(
                f"configs must be a list of dicts {{name: value}}, got {type(configs).__name__}."
            )
        if not configs:
            raise ValueError("configs is empty: give at least one configuration.")
        for i, c in enumerate(configs):
            if not isinstance(c, Mapping):
                raise TypeError(f"configs[{i}] must be a dict {{name: value}}, got {c!r}.")
        out = [dict(c) for c in configs]
        where = "configs"
    names0 = set(out[0])
    for i, c in enumerate(out):
        if set(c) != names0:
            raise ValueError(
                f"configs[{i}] sets {sorted(c)}, configs[0] sets {sorted(names0)}: every "
                "configuration must set the same hyperparameters."
            )
        for name, v in c.items():
            if not _is_number(v):
                raise TypeError(
                    f"{where}: {name}={v!r} is not a number; hyperparameter values in a sweep "
                    "must be real numbers (one compiled program serves every configuration)."
                )
    return [{k: float(v) for k, v in c.items()} for c in out], where


def _check_configs(configs: list[dict[str, float]], where: str, state: Any) -> None:
    known = _hyperparam_names(state)
    unknown = sorted(set(configs[0]) - set(known))
    if unknown:
        raise ValueError(
            f"{where}: unknown hyperparameter(s) {unknown}; this optimizer has {known}."
        )
    if not configs[0]:
        raise ValueError(f"{where}: a configuration sets no hyperparameter.")
    for name in configs[0]:
        for value in sorted({c[name] for c in configs}):
            try:
                set_hyperparams(state, **{name: value})
            except ValueError as e:
                raise ValueError(f"{where}[{name!r}]: {e}") from None


def _seed_list(seeds: Any) -> list[int] | None:
    if seeds is None:
        return None
    if isinstance(seeds, (Sequence, np.ndarray)) and not isinstance(seeds, (str, bytes)):
        out = [check_int(f"seeds[{i}]", s, 0) for i, s in enumerate(seeds)]
        if not out:
            raise ValueError("seeds is empty: give an int S >= 1 or a non-empty list of seeds.")
        if len(set(out)) != len(out):
            raise ValueError(f"seeds must be distinct, got {out}.")
        return out
    try:
        s = check_int("seeds", seeds, 1)
    except ValueError:
        raise ValueError(
            f"seeds must be None, an int S >= 1 (seeds 0..S-1) or a list of ints >= 0, got "
            f"{seeds!r}."
        ) from None
    return list(range(s))


def _run_key(key: jax.Array, seed: int | None) -> jax.Array:
    return key if seed is None else jax.random.fold_in(key, seed)


def _init_key(run_key: jax.Array) -> jax.Array:
    return jax.random.split(run_key)[1]


# ----------------------------------------------------------------------------- result


class Rung(NamedTuple):
    """One rung of :func:`successive_halving`.

    Attributes:
      epochs: the epoch count every run of the rung reached (or stopped before).
      indices: the runs trained in this rung (indices into the result's runs).
      scores: their metric at the end of the rung (``inf`` for a diverged run).
      kept: the runs promoted to the next rung (the best ``1/eta``); empty for the last.
    """

    epochs: int
    indices: np.ndarray
    scores: np.ndarray
    kept: np.ndarray


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What :func:`sweep` and :func:`successive_halving` return: K runs side by side.

    Run ``i`` trained configuration ``configs[i]`` with seed ``seeds[i]``; the
    configurations vary slowest (configuration ``c`` with seed ``s`` is run
    ``c * len(seeds) + s``).

    Attributes:
      configs: one dict ``{name: value}`` per run.
      seeds: one seed per run (``None`` entries when the sweep had no ``seeds``).
      final_train_loss: shape ``(K,)``, each run's last epoch's mean training loss (the last
        entry of ``fit``'s ``history.train_loss``).
      history: a :class:`~gdopt.History` of NumPy arrays of shape ``(K, epochs)``; epochs a
        run did not run (it stopped, or was eliminated) have ``epochs == 0`` and NaN metrics,
        so ``history.train_loss[i][history.epochs[i] > 0]`` is ``fit``'s history. The eval
        arrays have shape ``(K, 0)`` without ``eval_data`` (and accuracy without
        ``accuracy_fn``), as in ``fit``.
      eval_loss: shape ``(K,)``, the loss on ``eval_data`` after each run's last epoch, or
        ``None``.
      eval_accuracy: shape ``(K,)``, or ``None``.
      diverged: ``(K,)`` bools: a step had a non-finite loss (the run's parameters are its last
        finite ones, as in ``fit``).
      converged: ``(K,)`` bools: the ``tol`` rule stopped the run.
      epochs_run: ``(K,)`` ints; steps_run: ``(K,)`` ints.
      params: the trained parameters stacked along a leading K axis.
      metric: what ``best_index`` and ``table`` rank by (``"train_loss"``, ``"eval_loss"``
        or ``"eval_accuracy"``).
      best_index: the best run by ``metric`` among those that did not diverge (and, after
        successive halving, reached the last rung); ``-1`` if every run diverged.
      wall_time: seconds spent, compilation included; compile_time: seconds compiling (0
        when every program came from the cache).
      rungs: the :class:`Rung` history of successive halving (empty for a plain sweep).
    """

    configs: list[dict[str, float]]
    seeds: list[int | None]
    final_train_loss: np.ndarray
    history: History
    eval_loss: np.ndarray | None
    eval_accuracy: np.ndarray | None
    diverged: np.ndarray
    converged: np.ndarray
    epochs_run: np.ndarray
    steps_run: np.ndarray
    params: Any
    metric: str
    best_index: int
    wall_time: float
    compile_time: float
    rungs: tuple[Rung, ...] = ()

    @property
    def best_config(self) -> dict[str, float] | None:
        """The configuration of :attr:`best_index` (``None`` if every run diverged)."""
        return None if self.best_index < 0 else dict(self.configs[self.best_index])

    def scores(self) -> np.ndarray:
        """Each run's value of :attr:`metric` (higher is better only for accuracy)."""
        return _metric_values(self, self.metric)

    def order(self) -> np.ndarray:
        """Run indices from best to worst by :attr:`metric`, diverged runs last (after
        successive halving: the runs of later rungs first)."""
        return _order(self.scores(), self.metric, self.diverged, self.reach())

    def reach(self) -> np.ndarray:
        """How many rungs of successive halving each run took part in (0 for a sweep)."""
        reach = np.zeros(len(self.configs), np.int64)
        for r, rung in enumerate(self.rungs):
            reach[rung.indices] = r + 1
        return reach

    def table(self, limit: int | None = None) -> str:
        """The runs as a text table, best first (see :meth:`order`); ``limit`` rows at most.

        >>> import gdopt, jax.numpy as jnp
        >>> x = jnp.linspace(-1.0, 1.0, 8)[:, None]; loss = lambda p, b: jnp.mean((b @ p) ** 2)
        >>> res = gdopt.sweep(loss, jnp.ones(1), gdopt.sgd(0.1), x, epochs=2,
        ...                   grid={"learning_rate": [0.1, 1.0]})
        >>> print(res.table().splitlines()[0])
        rank  learning_rate  train loss  epochs  status
        """
        names = list(self.configs[0]) if self.configs else []
        has_seed = any(s is not None for s in self.seeds)
        headers = ["rank", *names] + (["seed"] if has_seed else []) + ["train loss"]
        if self.eval_loss is not None:
            headers.append("eval loss")
        if self.eval_accuracy is not None:
            headers.append("eval acc")
        headers += ["epochs", "status"]
        rows = []
        for rank, i in enumerate(self.order()[:limit], 1):
            row = [str(rank)] + [f"{self.configs[i][n]:.4g}" for n in names]
            if has_seed:
                row.append(str(self.seeds[i]))
            row.append(f"{self.final_train_loss[i]:.5g}")
            if self.eval_loss is not None:
                row.append(f"{self.eval_loss[i]:.5g}")
            if self.eval_accuracy is not None:
                row.append(f"{self.eval_accuracy[i]:.4f}")
            status = (
                "diverged"
                if self.diverged[i]
                else "converged"
                if self.converged[i]
                else ("best" if i == self.best_index else "")
            )
            row += [str(int(self.epochs_run[i])), status]
            rows.append(row)
        widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(headers)]
        lines = [headers, *rows]
        return "\n".join(
            "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
            if cells is not headers
            else "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
            for cells in lines
        )


def _metric_values(res: Any, metric: str) -> np.ndarray:
    if metric == "train_loss":
        return np.asarray(res.final_train_loss, np.float64)
    values = res.eval_loss if metric == "eval_loss" else res.eval_accuracy
    return np.asarray(values, np.float64)


def _order(scores: np.ndarray, metric: str, diverged: np.ndarray, reach: np.ndarray) -> np.ndarray:
    s = -scores if metric == "eval_accuracy" else scores
    s = np.where(np.isfinite(s) & ~diverged, s, np.inf)
    # lexsort: the last key is the primary one
    return np.lexsort((s, diverged, -np.asarray(reach)))


def _best(scores: np.ndarray, metric: str, diverged: np.ndarray, reach: np.ndarray) -> int:
    order = _order(scores, metric, diverged, reach)
    i = int(order[0])
    return -1 if diverged[i] else i


# ----------------------------------------------------------------------------- the runner


class _Plan:
    """Everything the compiled programs of a sweep depend on, checked once."""

    def __init__(
        self,
        loss_fn: Callable,
        params: Any,
        optimizer: GradientTransformation,
        data: Any,
        *,
        grid: Any,
        configs: Any,
        seeds: Any,
        batch_size: int | None,
        key: jax.Array | int | None,
        eval_data: Any,
        accuracy_fn: Callable | None,
        tol: float | None,
        patience: int,
        pack: bool | None,
        metric: str | None,
        mesh: Any = None,
        data_axis: str = "data",
        record: str = "epoch",
        diagnostics: bool = False,
    ) -> None:
        check_callable("loss_fn", loss_fn)
        self.record = check_record(record)
        self.diagnostics = bool(diagnostics)
        self.mesh = None
        if mesh is not None:  # the runs split over data_axis (gdopt.sharding.shard_runs)
            from gdopt import sharding

            if not isinstance(data_axis, str):
                raise TypeError(
                    f"data_axis must be a string (a mesh axis name), got {data_axis!r}."
                )
            self.mesh = sharding.make_mesh(mesh, data_axis)
        self.data_axis = data_axis
        if accuracy_fn is not None:
            check_callable("accuracy_fn", accuracy_fn)
        n = dataset_size(data)
        check_batch_size(batch_size, n)
        if eval_data is not None:
            dataset_size(eval_data, "eval_data")
        self.init_fn = params if callable(params) else None
        self.key = check_key(key)
        template = jax.eval_shape(params, self.key) if self.init_fn is not None else params
        if self.init_fn is None:
            check_float_leaves(params)
        base, where = _configurations(grid, configs)
        example = (
            self.init_fn(_init_key(self.key)) if self.init_fn is not None else params
        )  # one concrete state: hyperparameter names and value checks
        _check_configs(base, where, optimizer.init(example))
        seed_list = _seed_list(seeds)
        if metric is None:
            metric = "eval_loss" if eval_data is not None else "train_loss"
        check_choice("metric", metric, SWEEP_METRICS)
        if metric != "train_loss" and eval_data is None:
            raise ValueError(f"metric={metric!r} needs eval_data.")
        if metric == "eval_accuracy" and accuracy_fn is None:
            raise ValueError("metric='eval_accuracy' needs accuracy_fn.")
        self.metric = metric
        self.names = list(base[0])
        self.configs = [dict(c) for c in base for _ in (seed_list or [None])]
        self.seeds: list[int | None] = [s for _ in base for s in (seed_list or [None])]
        self.loss_fn, self.accuracy_fn, self.optimizer = loss_fn, accuracy_fn, optimizer
        self.batch_size, self.tol, self.patience = batch_size, tol, patience
        self.layout: Layout = layout_for(template, optimizer, pack)
        self.data = self.replicate(jax.tree.map(jnp.asarray, data))
        self.eval_data = (
            None if eval_data is None else self.replicate(jax.tree.map(jnp.asarray, eval_data))
        )
        self.opt_key, self.keep = _compile.optimizer_key(optimizer)
        self.key_axis = None if seed_list is None else 0
        self.params = None if self.init_fn is not None else params
        self.compile_time = 0.0

    @property
    def size(self) -> int:
        return len(self.configs)

    @property
    def devices(self) -> int:
        """How many devices the runs are split over (1 without a mesh)."""
        return 1 if self.mesh is None else int(self.mesh.shape[self.data_axis])

    def replicate(self, tree: Any) -> Any:
        """``tree`` on every device of the mesh (every run reads all of the data)."""
        if self.mesh is None:
            return tree
        from jax.sharding import NamedSharding, PartitionSpec

        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def values(self, idx: np.ndarray) -> dict[str, jax.Array]:
        return {n: jnp.asarray([self.configs[i][n] for i in idx], jnp.float32) for n in self.names}

    def keys(self, idx: np.ndarray) -> jax.Array:
        return jnp.stack([_run_key(self.key, self.seeds[i]) for i in idx])

    def setup(self, idx: np.ndarray) -> FitState:
        """The K initial training states, each one as ``fit`` builds it.

        Run eagerly under ``jax.vmap`` (no program to compile or cache): the optimizer's
        other hyperparameter values are constants of this computation, not part of any
        cache key.
        """
        layout, optimizer, init_fn = self.layout, self.optimizer, self.init_fn
        factory = traits_of(optimizer).factory

        def one(params: Any, values: dict[str, jax.Array], run_key: jax.Array) -> FitState:
            if init_fn is not None:
                params = init_fn(_init_key(run_key))
            if factory is not None:  # init sees the values too (e.g. initial accumulators)
                opt_state = layout.init_state(rebuild_with_hyperparams(optimizer, **values), params)
            else:
                opt_state = set_hyperparams(layout.init_state(optimizer, params), **values)
            return init_fit_state(layout.carry(params), opt_state)

        return jax.vmap(one, in_axes=(None, 0, 0))(self.params, self.values(idx), self.keys(idx))

    def train(self, state: FitState, idx: np.ndarray, n_epochs: int, stop: int):
        """Run the stacked ``state`` (runs ``idx``) for ``n_epochs`` epochs, up to epoch
        ``stop``; returns the new state and the history as NumPy arrays.

        On a mesh the K runs are padded to a multiple of the data axis size (copies of the
        last run, dropped from what is returned) and split over that axis
        (:func:`gdopt.sharding.shard_runs`): each device trains whole runs, so the numbers
        are those of one device."""
        k = len(idx)
        pad = -k % self.devices
        if pad:
            idx = np.concatenate([idx, np.full(pad, idx[-1])])
            state = jax.tree.map(
                lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), state
            )
        keys = self.keys(idx) if self.key_axis == 0 else self.key
        stop_epoch = jnp.asarray(stop, jnp.int32)
        if self.mesh is not None:
            from gdopt import sharding

            state = sharding.shard_runs(state, self.mesh, self.data_axis)
            keys = (
                sharding.shard_runs(keys, self.mesh, self.data_axis)
                if self.key_axis == 0
                else self.replicate(keys)
            )
            stop_epoch = self.replicate(stop_epoch)
        args = (state, self.data, keys, self.eval_data, stop_epoch)
        options = (
            n_epochs,
            self.batch_size,
            self.tol,
            self.patience,
            self.layout.packed,
            self.record,
            self.diagnostics,
        )

        def build() -> Any:
            train = make_train_fn(
                self.loss_fn,
                self.optimizer,
                n_epochs=n_epochs,
                batch_size=self.batch_size,
                accuracy_fn=self.accuracy_fn,
                tol=self.tol,
                patience=self.patience,
                pack=self.layout,
                record=self.record,
                diagnostics=self.diagnostics,
            )
            vtrain = jax.vmap(train, in_axes=(0, None, self.key_axis, None, None))
            return jax.jit(vtrain, donate_argnums=0)

        key = (
            "sweep-train",
            self.loss_fn,
            self.accuracy_fn,
            self.opt_key,
            options,
            self.key_axis,
        )
        run, seconds = _compile.compiled(key, self.keep, build, *args)
        self.compile_time += seconds
        state, hist = run(*args)
        hist = jax.device_get(hist)
        if pad:  # drop the padding runs
            state = jax.tree.map(lambda x: x[:k], state)
            hist = jax.tree.map(lambda x: x[:k], hist)
        return state, hist

    def restore(self, params: Any) -> Any:
        """Stacked carried parameters back as the user's pytree (stacked)."""
        if not self.layout.packed:
            return params
        build = lambda: jax.jit(jax.vmap(self.layout.restore))  # noqa: E731
        run, seconds = _compile.compiled(("sweep-restore",), None, build, params)
        self.compile_time += seconds
        return run(params)


def _chunks(total: int, chunk_size: int | None) -> list[np.ndarray]:
    """Index blocks of equal length (the last padded by repeating its final index)."""
    size = total if chunk_size is None else min(chunk_size, total)
    out = []
    for start in range(0, total, size):
        idx = np.arange(start, min(start + size, total))
        if len(idx) < size:
            idx = np.concatenate([idx, np.full(size - len(idx), idx[-1])])
        out.append(idx)
    return out


class _Runs:
    """Host-side record of K runs, filled as chunks and rungs come back."""

    def __init__(self, plan: _Plan, max_epochs: int) -> None:
        k = plan.size
        self.plan = plan
        nan = np.full((k, max_epochs), np.nan, np.float32)
        self.train_loss, self.eval_loss, self.eval_acc = nan.copy(), nan.copy(), nan.copy()
        self.epochs = np.zeros((k, max_epochs), np.int64)
        self.diverged = np.zeros(k, bool)
        self.converged = np.zeros(k, bool)
        self.epochs_run = np.zeros(k, np.int64)
        self.steps_run = np.zeros(k, np.int64)
        self.params: list[Any] = [None] * k
        self.diags = {name: nan.copy() for name in DIAGNOSTICS} if plan.diagnostics else {}
        self.step_loss: np.ndarray | None = None  # (k, max_epochs, steps) once known

    def record(self, idx: np.ndarray, n_real: int, state: FitState, hist: History) -> None:
        idx = idx[:n_real]
        flags = jax.device_get((state.diverged, state.converged, state.epoch, state.step))
        ep = np.asarray(hist.epochs)[:n_real]
        for row, i in enumerate(idx):
            ran = ep[row] > 0
            cols = ep[row][ran] - 1
            self.train_loss[i, cols] = np.asarray(hist.train_loss)[row][ran]
            self.eval_loss[i, cols] = np.asarray(hist.eval_loss)[row][ran]
            self.eval_acc[i, cols] = np.asarray(hist.eval_accuracy)[row][ran]
            self.epochs[i, cols] = ep[row][ran]
            for name, values in self.diags.items():
                values[i, cols] = np.asarray(getattr(hist, name))[row][ran]
            if self.plan.record == "step":
                steps = np.asarray(hist.step_loss)[row]
                if self.step_loss is None:
                    shape = (len(self.epochs), self.epochs.shape[1], steps.shape[-1])
                    self.step_loss = np.full(shape, np.nan, np.float32)
                self.step_loss[i, cols] = steps[ran]
        self.diverged[idx] = np.asarray(flags[0])[:n_real]
        self.converged[idx] = np.asarray(flags[1])[:n_real]
        self.epochs_run[idx] = np.asarray(flags[2])[:n_real]
        self.steps_run[idx] = np.asarray(flags[3])[:n_real]

    def last(self, values: np.ndarray) -> np.ndarray:
        k = len(values)
        cols = np.maximum(self.epochs_run - 1, 0)
        out = values[np.arange(k), cols]
        return np.where(self.epochs_run > 0, out, np.nan)

    def scores(self, metric: str) -> np.ndarray:
        if metric == "train_loss":
            return self.last(self.train_loss).astype(np.float64)
        return self.last(self.eval_loss if metric == "eval_loss" else self.eval_acc).astype(
            np.float64
        )

    def result(
        self, params: Any, start: float, rungs: tuple[Rung, ...], reach: np.ndarray
    ) -> SweepResult:
        plan = self.plan
        evaluated = plan.eval_data is not None
        accuracy = evaluated and plan.accuracy_fn is not None
        k = plan.size
        empty = np.zeros((k, 0), np.float32)
        history = History(
            train_loss=self.train_loss,
            eval_loss=self.eval_loss if evaluated else empty,
            eval_accuracy=self.eval_acc if accuracy else empty,
            epochs=self.epochs,
            **{name: values for name, values in self.diags.items()},
            **({"step_loss": self.step_loss.reshape(k, -1)} if self.step_loss is not None else {}),
        )
        scores = self.scores(plan.metric)
        return SweepResult(
            configs=plan.configs,
            seeds=plan.seeds,
            final_train_loss=self.last(self.train_loss),
            history=history,
            eval_loss=self.last(self.eval_loss) if evaluated else None,
            eval_accuracy=self.last(self.eval_acc) if accuracy else None,
            diverged=self.diverged,
            converged=self.converged,
            epochs_run=self.epochs_run,
            steps_run=self.steps_run,
            params=params,
            metric=plan.metric,
            best_index=_best(scores, plan.metric, self.diverged, reach),
            wall_time=time.perf_counter() - start,
            compile_time=plan.compile_time,
            rungs=rungs,
        )


def _stack(states: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *states)


def _take(tree: Any, idx: np.ndarray) -> Any:
    j = jnp.asarray(idx)
    return jax.tree.map(lambda x: x[j], tree)


def _common_args(epochs_name: str, epochs: Any, patience: Any, chunk_size: Any):
    epochs = check_int(epochs_name, epochs, 1)
    patience = check_int("patience", patience, 1)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, 1)
    return epochs, patience, chunk_size


def sweep(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    optimizer: GradientTransformation,
    data: Any,
    *,
    grid: Mapping[str, Sequence[float]] | None = None,
    configs: Sequence[Mapping[str, float]] | None = None,
    seeds: int | Sequence[int] | None = None,
    epochs: int,
    batch_size: int | None = None,
    key: jax.Array | int | None = None,
    eval_data: Any = None,
    accuracy_fn: Callable[[Any, Any], jax.Array] | None = None,
    tol: float | None = None,
    patience: int = 1,
    chunk_size: int | None = None,
    pack: bool | None = None,
    metric: str | None = None,
    mesh: Any = None,
    data_axis: str = "data",
    record: str = "epoch",
    diagnostics: bool = False,
) -> SweepResult:
    """Train K configurations of ``optimizer`` at once: one compiled, vectorised program.

    Each configuration sets some of the optimizer's hyperparameters (the names
    :func:`~gdopt.get_hyperparams` reports: ``learning_rate``, ``b1``, ``weight_decay``...,
    any numeric one). Named optimizers keep them in their state, so K configurations are K
    training states of one program: ``jax.jit(jax.vmap(make_train_fn(...)))`` over stacked
    :class:`~gdopt.FitState`\\ s, compiled once and reused by later calls as
    :func:`~gdopt.fit` reuses its programs (same ``loss_fn`` object, optimizer structure,
    options, shapes and number of runs).

    Run ``i`` equals ``gdopt.fit(loss_fn, params, opt_i, data, epochs=..., key=...)`` with
    ``opt_i`` the optimizer made with configuration ``i`` (the state is built by
    ``rebuild_with_hyperparams(optimizer, **config).init(params)``): same batches, same
    stopping rules (``tol``/``patience``; a diverged run stops at its first non-finite loss and
    keeps its last finite parameters, flagged in ``diverged``, without disturbing the others),
    same packing decision. A run never depends on which other runs share the sweep. The
    parameters agree to float32 rounding: the vectorised program computes the same
    operations but XLA may order the sums of a batched matmul differently, and where
    training is chaotic (large learning rates, per-example SGD) those last-bit differences
    grow over the steps, so such runs can drift apart from ``fit`` while staying
    statistically alike.

    Seeds: ``seeds=None`` runs every configuration once with ``key`` exactly as
    ``fit(key=key)`` does (and, when ``params`` is a function ``init(key) -> params``, from
    ``init(jax.random.split(key)[1])``). ``seeds=S`` (seeds ``0..S-1``) or a list of ints
    crosses every configuration with each seed: seed ``s`` trains with the key
    ``k = jax.random.fold_in(key, s)`` (shuffling) and, when ``params`` is a function, from
    ``init(jax.random.split(k)[1])``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, as for ``fit``.
      params: initial parameters, or a function ``init(key) -> params``.
      optimizer: a gradient transformation whose hyperparameters live in its state (a named
        gdopt optimizer, ``inject_hyperparams`` or ``with_hyperparams``).
      data: a pytree of arrays sharing the example axis.
      grid: ``{name: [values...]}``: every combination (the Cartesian product, the last name
        varying fastest).
      configs: ``[{name: value, ...}, ...]``: these configurations (each sets the same names).
      seeds: ``None``, an int ``S >= 1`` or a list of distinct ints ``>= 0`` (see above).
      epochs: epochs per run (>= 1).
      batch_size, key, eval_data, accuracy_fn, tol, patience, pack: as for ``fit``.
      chunk_size: run at most this many configurations at once (when all K do not fit in
        memory); the chunks run one after another through the same compiled program.
      metric: what ``best_index``/``table`` rank by: ``"train_loss"``, ``"eval_loss"`` or
        ``"eval_accuracy"``; default ``"eval_loss"`` with ``eval_data``, else ``"train_loss"``.
      mesh: ``None`` (one device), ``"auto"`` (every device on one ``data_axis``) or a
        :class:`jax.sharding.Mesh`: the K runs are split over ``data_axis``
        (:func:`gdopt.sharding.shard_runs`; K runs on N devices, K padded to a multiple of N
        with copies of the last run that are dropped), the data replicated; each device
        trains whole runs, so the result equals the sweep on one device and its ``params``
        keep the runs split over the devices (docs/distributed.md).
      data_axis: the mesh axis the runs are split over (named as in ``fit``).
      record, diagnostics: as for ``fit``: ``record="step"`` adds every step's loss
        (``history.step_loss``, shape ``(K, epochs * steps_per_epoch)``, NaN where a run did
        not run), ``diagnostics=True`` the per-epoch gradient and update norms, their ratio
        to the parameter norm and the effective step size (shape ``(K, epochs)`` each).

    Returns:
      A :class:`SweepResult` (``result.table()`` prints it sorted).

    Raises:
      ValueError: ``grid`` and ``configs`` both or neither given, an empty grid, an unknown
        hyperparameter name (the valid ones are listed), a value its constraint rejects,
        ``seeds`` of 0, bad ``epochs``/``batch_size``/``tol``/``patience``/``chunk_size``,
        a mesh without devices or without ``data_axis`` (see :func:`gdopt.sharding.check_mesh`).
      TypeError: a value that is not a number, an optimizer without hyperparameters in its
        state, non-float parameters, a ``mesh`` that is neither ``"auto"`` nor a mesh.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (64, 3)); y = x @ jnp.array([1.0, -2.0, 0.5])
    >>> loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)
    >>> res = gdopt.sweep(loss, jnp.zeros(3), gdopt.sgd(0.1), (x, y), epochs=20,
    ...                   grid={"learning_rate": [0.001, 0.01, 0.1]})
    >>> res.best_config, res.final_train_loss.shape
    ({'learning_rate': 0.1}, (3,))
    """
    start = time.perf_counter()
    epochs, patience, chunk_size = _common_args("epochs", epochs, patience, chunk_size)
    plan = _Plan(
        loss_fn,
        params,
        optimizer,
        data,
        grid=grid,
        configs=configs,
        seeds=seeds,
        batch_size=batch_size,
        key=key,
        eval_data=eval_data,
        accuracy_fn=accuracy_fn,
        tol=tol,
        patience=patience,
        pack=pack,
        metric=metric,
        mesh=mesh,
        data_axis=data_axis,
        record=record,
        diagnostics=diagnostics,
    )
    runs = _Runs(plan, epochs)
    out_params = []
    for idx in _chunks(plan.size, chunk_size):
        n_real = len(np.unique(idx))
        state = plan.setup(idx)
        state, hist = plan.train(state, idx, epochs, epochs)
        runs.record(idx, n_real, state, hist)
        kept = state.params if n_real == len(idx) else _take(state.params, np.arange(n_real))
        out_params.append(kept)
    stacked = _stack(out_params) if len(out_params) > 1 else out_params[0]
    return runs.result(plan.restore(stacked), start, (), np.zeros(plan.size, np.int64))


def _rung_schedule(n: int, eta: int, min_epochs: int, max_epochs: int) -> list[tuple[int, int]]:
    """``[(runs, epochs), ...]``: rung r trains ``n // eta**r`` runs up to
    ``min_epochs * eta**r`` epochs (the last rung up to ``max_epochs``)."""
    out = []
    runs, epochs = n, min_epochs
    while True:
        if runs <= 1 or epochs >= max_epochs:
            out.append((max(runs, 1), max_epochs))
            return out
        out.append((runs, epochs))
        runs, epochs = max(runs // eta, 1), epochs * eta


def successive_halving(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    optimizer: GradientTransformation,
    data: Any,
    *,
    grid: Mapping[str, Sequence[float]] | None = None,
    configs: Sequence[Mapping[str, float]] | None = None,
    seeds: int | Sequence[int] | None = None,
    eta: int = 3,
    min_epochs: int = 1,
    max_epochs: int,
    batch_size: int | None = None,
    key: jax.Array | int | None = None,
    eval_data: Any = None,
    accuracy_fn: Callable[[Any, Any], jax.Array] | None = None,
    tol: float | None = None,
    patience: int = 1,
    pack: bool | None = None,
    metric: str | None = None,
    mesh: Any = None,
    data_axis: str = "data",
    record: str = "epoch",
    diagnostics: bool = False,
) -> SweepResult:
    """Successive halving: train every configuration briefly, keep the best ``1/eta``, repeat.

    Rung ``r`` trains ``K // eta**r`` runs up to ``min_epochs * eta**r`` epochs, as one
    compiled vectorised program (:func:`sweep`'s), continuing each survivor from its state
    (the epoch count seeds the shuffles, so a run promoted to ``max_epochs`` is the same
    run ``sweep`` would train for ``max_epochs``); then it keeps the best ``1/eta`` by
    ``metric``. The last rung trains the survivors to ``max_epochs``. With K runs the
    budget is about ``K * min_epochs * (number of rungs)`` epoch-runs instead of
    ``K * max_epochs`` (Jamieson & Talwalkar 2016, "Non-stochastic best arm identification
    and hyperparameter optimization", https://arxiv.org/abs/1502.07943).

    Args:
      eta: the reduction factor (>= 2).
      min_epochs: epochs of the first rung (>= 1).
      max_epochs: epochs of the last rung (>= min_epochs).

    The other arguments are as for :func:`sweep` (``seeds`` crosses each configuration with
    seeds; the runs, not the configurations, are ranked; with ``mesh`` every rung's runs are
    split over ``data_axis``, padded to a multiple of its size).

    Returns:
      A :class:`SweepResult` over all K runs: each run's history and final values are those
      of the rung where it stopped (``epochs_run`` says how far it went), ``best_index`` is
      the best of the last rung, ``params`` are each run's latest, and ``rungs`` the
      :class:`Rung` history.

    Raises:
      ValueError: ``eta < 2``, ``min_epochs > max_epochs``, and whatever :func:`sweep` raises.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (64, 3)); y = x @ jnp.array([1.0, -2.0, 0.5])
    >>> loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)
    >>> res = gdopt.successive_halving(loss, jnp.zeros(3), gdopt.sgd(0.1), (x, y),
    ...     grid={"learning_rate": [0.01, 0.1, 0.5]}, min_epochs=2, max_epochs=6)
    >>> [(r.epochs, len(r.indices)) for r in res.rungs], res.epochs_run.tolist(), res.best_config
    ([(2, 3), (6, 1)], [2, 2, 6], {'learning_rate': 0.5})
    """
    start = time.perf_counter()
    max_epochs, patience, _ = _common_args("max_epochs", max_epochs, patience, None)
    min_epochs = check_int("min_epochs", min_epochs, 1)
    if min_epochs > max_epochs:
        raise ValueError(
            f"min_epochs must be <= max_epochs, got min_epochs={min_epochs}, "
            f"max_epochs={max_epochs}."
        )
    try:
        eta = check_int("eta", eta, 2)
    except ValueError:
        raise ValueError(
            f"eta must be an integer >= 2 (the reduction factor), got {eta!r}."
        ) from None
    plan = _Plan(
        loss_fn,
        params,
        optimizer,
        data,
        grid=grid,
        configs=configs,
        seeds=seeds,
        batch_size=batch_size,
        key=key,
        eval_data=eval_data,
        accuracy_fn=accuracy_fn,
        tol=tol,
        patience=patience,
        pack=pack,
        metric=metric,
        mesh=mesh,
        data_axis=data_axis,
        record=record,
        diagnostics=diagnostics,
    )
    runs = _Runs(plan, max_epochs)
    alive = np.arange(plan.size)
    state = plan.setup(alive)
    latest = jax.tree.map(jnp.copy, state.params)  # the state itself is donated
    reach = np.zeros(plan.size, np.int64)
    rungs = []
    done = 0
    schedule = _rung_schedule(plan.size, eta, min_epochs, max_epochs)
    for r, (_, target) in enumerate(schedule):
        state, hist = plan.train(state, alive, target - done, target)
        runs.record(alive, len(alive), state, hist)
        where = jnp.asarray(alive)
        latest = jax.tree.map(lambda a, b, w=where: a.at[w].set(b), latest, state.params)
        reach[alive] = r + 1
        done = target
        scores = runs.scores(plan.metric)[alive]
        s = -scores if plan.metric == "eval_accuracy" else scores
        s = np.where(np.isfinite(s) & ~runs.diverged[alive], s, np.inf)
        last = r == len(schedule) - 1
        n_keep = 0 if last else schedule[r + 1][0]
        kept = alive[np.argsort(s, kind="stable")[:n_keep]]
        rungs.append(Rung(target, alive.copy(), scores, np.sort(kept)))
        if last:
            break
        pos = np.searchsorted(alive, np.sort(kept))
        state = _take(state, pos)
        alive = np.sort(kept)
    return runs.result(plan.restore(latest), start, tuple(rungs), reach)


# ----------------------------------------------------------------------------- LR finder


class LRFindResult(NamedTuple):
    """What :func:`lr_find` and :func:`lr_find_runs` return.

    Attributes:
      learning_rates: the rates tried (the steps run, in order), a NumPy array.
      losses: the loss at each rate: the batch loss of the step taken with it
        (:func:`lr_find`) or the run's final mean train loss (:func:`lr_find_runs`).
      smoothed_losses: the debiased exponential moving average of ``losses``
        (:func:`lr_find`; equal to ``losses`` for :func:`lr_find_runs`).
      suggestion: the rate the chosen rule suggests (NaN if the curve is too short).
      suggestions: ``{rule: rate}`` for every rule of :data:`SUGGESTION_RULES`.
      rule: the chosen rule.
      stopped_early: the loss exceeded ``diverge_threshold`` times its best (or was not
        finite) before the last step.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    suggestion: float
    suggestions: dict[str, float]
    rule: str = "valley"
    stopped_early: bool = False


def _valley(losses: np.ndarray) -> int:
    """fastai's ``valley`` rule: the longest strictly decreasing (not necessarily contiguous)
    run of the curve; the index 1/2 of the way past its first third."""
    n = len(losses)
    lds = np.ones(n, np.int64)
    max_start, max_end = 0, 0
    for i in range(1, n):
        longer = losses[:i] > losses[i]
        if np.any(longer):
            lds[i] = int(np.max(lds[:i][longer])) + 1
        if lds[max_end] < lds[i]:
            max_end = i
            max_start = max_end - int(lds[max_end])
    sections = (max_end - max_start) / 3
    return int(min(max(max_start + int(sections) + int(sections / 2), 0), n - 1))


def _suggest(lrs: np.ndarray, smoothed: np.ndarray, skip: bool) -> dict[str, float]:
    """Every rule of :data:`SUGGESTION_RULES` on the curve (fastai drops the first tenth and
    the last five points of a range test, where the loss has not started to move or blows
    up)."""
    ok = np.isfinite(smoothed)
    lrs, smoothed = lrs[ok], smoothed[ok]
    n = len(lrs)
    if skip and n >= 10:
        lo, hi = n // 10, n - 5
        lrs, smoothed = lrs[lo:hi], smoothed[lo:hi]
    n = len(lrs)
    if n < 2:
        value = float(lrs[0] / 10) if n else math.nan
        return dict.fromkeys(SUGGESTION_RULES, value)
    log_lr = np.log(lrs)
    slope = np.gradient(smoothed, log_lr)
    return {
        "valley": float(lrs[_valley(smoothed)]),
        "steep": float(lrs[int(np.argmin(slope))]),
        "minimum": float(lrs[int(np.argmin(smoothed))] / 10),
    }


def _check_lr_range(start_lr: Any, end_lr: Any) -> tuple[float, float]:
    for name, v in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not _is_number(v) or not (math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}.")
    if not float(start_lr) < float(end_lr):
        raise ValueError(
            f"start_lr must be < end_lr (the range test ramps up), got start_lr={start_lr!r}, "
            f"end_lr={end_lr!r}."
        )
    return float(start_lr), float(end_lr)


def _check_rule(suggestion: Any) -> str:
    check_choice("suggestion", suggestion, SUGGESTION_RULES)
    return suggestion


def _lr_state(optimizer: GradientTransformation, params: Any) -> Any:
    state = optimizer.init(params)
    names = _hyperparam_names(state)
    if "learning_rate" not in names:
        raise ValueError(
            f"optimizer has no 'learning_rate' hyperparameter to ramp; it has {names}."
        )
    return state


def lr_find(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    optimizer: GradientTransformation,
    data: Any,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    batch_size: int | None = 32,
    key: jax.Array | int | None = None,
    smoothing: float = 0.98,
    diverge_threshold: float = 4.0,
    suggestion: str = "valley",
) -> LRFindResult:
    """The learning-rate range test (Smith 2017; fastai's ``lr_find``), as one compiled scan.

    Step ``t = 0..num_steps-1`` sets the learning rate to
    ``start_lr * (end_lr / start_lr) ** (t / (num_steps - 1))`` (through
    :func:`~gdopt.set_hyperparams`, so any optimizer with a ``learning_rate`` hyperparameter
    works), computes the loss of a mini-batch (drawn as ``fit`` draws them: epoch ``e``
    shuffles with ``jax.random.fold_in(key, e)``) and takes the step. The loss is smoothed
    with a debiased exponential moving average ``a_t = s a_{t-1} + (1 - s) L_t``,
    ``S_t = a_t / (1 - s^(t+1))``; the test stops once ``S_t`` exceeds ``diverge_threshold``
    times its smallest value so far, or a loss is not finite (later steps are not run).

    Suggestions (all in ``suggestions``; ``suggestion`` picks the returned one), on the
    smoothed curve without its first tenth and last five points:

    - ``"valley"``: fastai's rule: the longest decreasing stretch of the curve, and the rate
      about 1/2 of the way into it;
    - ``"steep"``: the rate where the smoothed loss falls fastest in ``log(lr)``;
    - ``"minimum"``: the rate of the smallest smoothed loss, divided by 10.

    Pure: the caller's ``params`` are not changed (nothing is donated); train from them with
    the suggested rate afterwards.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the parameters to start from.
      optimizer: the optimizer to test (its ``learning_rate`` is replaced at every step).
      data: a pytree of arrays sharing the example axis.
      start_lr, end_lr: the range (``0 < start_lr < end_lr``).
      num_steps: steps of the ramp (>= 2).
      batch_size: ``None`` (full batch) or examples per step (clipped to the data size).
      key: PRNG key of the shuffling (default ``jax.random.PRNGKey(0)``).
      smoothing: the moving-average factor ``s`` in ``[0, 1)``.
      diverge_threshold: stop when the smoothed loss exceeds this multiple of its best (> 1).
      suggestion: one of :data:`SUGGESTION_RULES`.

    Returns:
      An :class:`LRFindResult`.

    Raises:
      ValueError: ``start_lr >= end_lr``, a rate that is not > 0, ``num_steps < 2``, an
        unknown ``suggestion``, ``smoothing`` outside ``[0, 1)``, ``diverge_threshold <= 1``,
        an optimizer without a ``learning_rate`` hyperparameter.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (256, 3)); y = x @ jnp.array([1.0, -2.0, 0.5])
    >>> loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)
    >>> res = gdopt.lr_find(loss, jnp.zeros(3), gdopt.sgd(0.1), (x, y), num_steps=60)
    >>> 1e-3 < res.suggestion < 1.0, sorted(res.suggestions)
    (True, ['minimum', 'steep', 'valley'])
    """
    start_lr, end_lr = _check_lr_range(start_lr, end_lr)
    num_steps = check_int("num_steps", num_steps, 2)
    rule = _check_rule(suggestion)
    if not _is_number(smoothing) or not 0.0 <= float(smoothing) < 1.0:
        raise ValueError(f"smoothing must be a number in [0, 1), got {smoothing!r}.")
    if not _is_number(diverge_threshold) or not float(diverge_threshold) > 1.0:
        raise ValueError(f"diverge_threshold must be a number > 1, got {diverge_threshold!r}.")
    check_callable("loss_fn", loss_fn)
    check_float_leaves(params)
    n = dataset_size(data)
    if batch_size is not None:
        batch_size = min(check_int("batch_size", batch_size, 1), n)
    key = check_key(key)
    opt_state = _lr_state(optimizer, params)
    data = jax.tree.map(jnp.asarray, data)
    lrs = start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / (num_steps - 1))
    if batch_size is None:
        order = jnp.zeros((num_steps, 0), jnp.int32)
    else:  # the examples of each step, in fit's order
        per_epoch = n // batch_size
        n_epochs = -(-num_steps // per_epoch)
        perms = [
            jax.random.permutation(jax.random.fold_in(key, e), n)[: per_epoch * batch_size]
            for e in range(n_epochs)
        ]
        order = jnp.concatenate(perms)[: num_steps * batch_size].reshape(num_steps, batch_size)
    beta = float(smoothing)
    threshold = float(diverge_threshold)

    def run(params, opt_state, data, lrs, order):
        grad_fn = jax.value_and_grad(loss_fn)

        def step(carry, inputs):
            params, opt_state, avg, best, stopped, t = carry
            lr, idx = inputs
            batch = data if batch_size is None else jax.tree.map(lambda a: a[idx], data)
            loss, grads = grad_fn(params, batch)
            loss = jnp.asarray(loss, jnp.float32)
            avg_new = beta * avg + (1.0 - beta) * loss
            smooth = avg_new / (1.0 - jnp.power(jnp.float32(beta), t + 1))
            blown = ~jnp.isfinite(smooth) | (smooth > threshold * best)
            active = ~stopped

            def apply(params, opt_state):
                state = set_hyperparams(opt_state, learning_rate=lr)
                updates, state = optimizer.update(
                    grads,
                    state,
                    params,
                    value=loss,
                    grad=grads,
                    value_fn=lambda p: loss_fn(p, batch),
                )
                return apply_updates(params, updates), state

            params, opt_state = lax.cond(
                active & ~blown, apply, lambda p, s: (p, s), params, opt_state
            )
            new_best = jnp.where(active & (smooth < best), smooth, best)
            carry = (
                params,
                opt_state,
                jnp.where(active, avg_new, avg),
                new_best,
                stopped | blown,
                t + 1,
            )
            return carry, (loss, smooth, active)

        init = (
            params,
            opt_state,
            jnp.float32(0.0),
            jnp.float32(jnp.inf),
            jnp.zeros((), bool),
            jnp.zeros((), jnp.float32),
        )
        (_, _, _, _, stopped, _), (losses, smoothed, ran) = lax.scan(step, init, (lrs, order))
        return losses, smoothed, ran, stopped

    options = (batch_size, beta, threshold)
    opt_key, keep = _compile.optimizer_key(optimizer)
    args = (params, opt_state, data, jnp.asarray(lrs, jnp.float32), order)
    program, _ = _compile.compiled(
        ("lr-find", loss_fn, opt_key, options), keep, lambda: jax.jit(run), *args
    )
    losses, smoothed, ran, stopped = jax.device_get(program(*args))
    count = int(np.sum(ran))  # the steps run: all of them, or up to the one that blew up
    lrs, losses, smoothed = lrs[:count], np.asarray(losses[:count]), np.asarray(smoothed[:count])
    stopped_early = bool(stopped)
    # the step that blew up is kept in the curve (it shows the blow-up), not given to the rules
    usable = count - 1 if stopped and count > 1 else count
    suggestions = _suggest(lrs[:usable], smoothed[:usable], skip=True)
    return LRFindResult(
        learning_rates=lrs,
        losses=losses,
        smoothed_losses=smoothed,
        suggestion=suggestions[rule],
        suggestions=suggestions,
        rule=rule,
        stopped_early=stopped_early,
    )


def lr_find_runs(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    optimizer: GradientTransformation,
    data: Any,
    *,
    start_lr: float = 1e-5,
    end_lr: float = 1.0,
    num_rates: int = 16,
    epochs: int = 1,
    batch_size: int | None = 32,
    key: jax.Array | int | None = None,
    suggestion: str = "minimum",
) -> LRFindResult:
    """The vectorised learning-rate finder: short runs at ``num_rates`` fixed rates at once.

    Instead of one run whose rate ramps up (:func:`lr_find`), trains ``num_rates`` copies of
    the model for ``epochs`` epochs, each at a constant rate of a log-spaced grid from
    ``start_lr`` to ``end_lr``, in one compiled program (:func:`sweep`), and applies the same
    rules to the curve of final train losses against rates (unsmoothed, nothing dropped; a
    run that diverged counts as an infinite loss). It costs ``num_rates`` short trainings
    instead of one, but measures each rate for itself rather than through a ramp whose
    history biases later steps. The default rule is ``"minimum"`` (the best rate / 10):
    ``"valley"`` is designed for the ramp's long smoothed curve and, on a handful of points
    that fall steadily up to the best rate, picks one near the start of the fall.

    Args:
      start_lr, end_lr: the range (``0 < start_lr < end_lr``).
      num_rates: rates of the grid (>= 2).
      epochs: epochs of each run (>= 1).

    The other arguments are as for :func:`lr_find` (``batch_size`` clipped to the data size).

    Returns:
      An :class:`LRFindResult` whose ``losses`` are the final mean train losses.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (256, 3)); y = x @ jnp.array([1.0, -2.0, 0.5])
    >>> loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)
    >>> res = gdopt.lr_find_runs(loss, jnp.zeros(3), gdopt.sgd(0.1), (x, y), num_rates=5,
    ...                          end_lr=0.1, batch_size=None, epochs=20)
    >>> res.learning_rates.round(5).tolist(), round(res.suggestion, 5)
    ([1e-05, 0.0001, 0.001, 0.01, 0.1], 0.01)
    """
    start_lr, end_lr = _check_lr_range(start_lr, end_lr)
    num_rates = check_int("num_rates", num_rates, 2)
    rule = _check_rule(suggestion)
    n = dataset_size(data)
    if batch_size is not None:
        batch_size = min(check_int("batch_size", batch_size, 1), n)
    lrs = np.geomspace(start_lr, end_lr, num_rates)
    res = sweep(
        loss_fn,
        params,
        optimizer,
        data,
        grid={"learning_rate": [float(v) for v in lrs]},
        epochs=epochs,
        batch_size=batch_size,
        key=key,
    )
    losses = np.where(res.diverged, np.inf, res.final_train_loss).astype(np.float64)
    finite = np.isfinite(losses)
    # a diverged run ranks worse than every finite one (10x the worst) for the rules
    worst = float(np.max(losses[finite])) if np.any(finite) else math.nan
    curve = np.where(finite, losses, 10.0 * worst)
    suggestions = _suggest(np.asarray(lrs), curve, skip=False)
    return LRFindResult(
        learning_rates=np.asarray(lrs),
        losses=losses,
        smoothed_losses=losses,
        suggestion=suggestions[rule],
        suggestions=suggestions,
        rule=rule,
        stopped_early=False,
    )
