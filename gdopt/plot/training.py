"""Plots of training: loss curves, sweep heat maps and the learning-rate finder's curve.

Each function takes ``ax=`` (draw into an existing matplotlib axes; default a new figure)
and returns the figure. matplotlib is imported only when one is called
(:mod:`gdopt.plot._backend`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gdopt._validation import check_choice
from gdopt.plot._backend import axes

__all__ = ["loss_curves", "sweep_heatmap", "lr_find_curve"]

_X_AXES = ("epoch", "step", "time")
_METRICS = ("train_loss", "eval_loss", "eval_accuracy")
_LABELS = {
    "train_loss": "mean train loss",
    "eval_loss": "eval loss",
    "eval_accuracy": "eval accuracy",
    "epoch": "epoch",
    "step": "optimizer step",
    "time": "training time (s, compilation excluded)",
}


def _runs(results: Any, labels: Sequence[str] | None) -> list[tuple[str, Any, Any]]:
    """``[(label, history row, result or None)]`` for every curve to draw."""
    if isinstance(results, Mapping):
        items = [(str(k), v) for k, v in results.items()]
    elif isinstance(results, (list, tuple)) and not hasattr(results, "_fields"):
        items = [(f"run {i}", r) for i, r in enumerate(results)]
    else:
        items = [("", results)]
    out: list[tuple[str, Any, Any]] = []
    r: Any
    for name, r in items:
        if hasattr(r, "configs") and hasattr(r, "history"):  # a SweepResult: one line per run
            for i, config in enumerate(r.configs):
                text = ", ".join(f"{k}={v:.3g}" for k, v in config.items())
                if r.seeds[i] is not None:
                    text += f", seed {r.seeds[i]}"
                out.append(((name + " " if name else "") + text, (r, i), r))
        elif hasattr(r, "history"):  # a FitResult
            out.append((name or "run", (r.history, None), r))
        elif hasattr(r, "train_loss") and hasattr(r, "epochs"):  # a History
            out.append((name or "run", (r, None), None))
        else:
            raise TypeError(
                "results must be a FitResult, a History, a SweepResult, or a list or dict of "
                f"them; got {type(r).__name__}."
            )
    if labels is not None:
        if len(labels) != len(out):
            raise ValueError(f"labels has {len(labels)} entries for {len(out)} curves.")
        out = [(str(lab), row, res) for lab, (_, row, res) in zip(labels, out, strict=True)]
    return out


def _series(row: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs, values)`` of the epochs that ran."""
    source, i = row
    if i is not None:  # a SweepResult row
        history = source.history
        epochs, values = np.asarray(history.epochs[i]), np.asarray(getattr(history, metric))
        values = values[i] if values.shape[-1] else np.zeros(0)
    else:
        epochs, values = np.asarray(source.epochs), np.asarray(getattr(source, metric))
    if len(values) == 0:
        raise ValueError(f"metric={metric!r} was not recorded (train with eval_data/accuracy_fn).")
    ran = epochs > 0
    return epochs[ran].astype(float), values[ran].astype(float)


def _x_values(epochs: np.ndarray, x: str, result: Any, row: Any) -> np.ndarray:
    if x == "epoch":
        return epochs
    if result is None:
        raise ValueError(f"x={x!r} needs a FitResult or SweepResult (a History has no steps/time).")
    source, i = row
    epochs_run = float(result.epochs_run if i is None else result.epochs_run[i])
    if x == "step":
        steps = float(result.steps_run if i is None else result.steps_run[i])
        return epochs * (steps / max(epochs_run, 1.0))
    # time: the training time (compilation excluded) spread evenly over the epochs; the runs
    # of a sweep ran side by side, so they share its clock
    total = max(float(result.wall_time) - float(result.compile_time), 0.0)
    if i is not None:
        epochs_run = float(np.max(result.epochs_run))
    return epochs * (total / max(epochs_run, 1.0))


def loss_curves(
    results: Any,
    *,
    x: str = "epoch",
    metric: str = "train_loss",
    labels: Sequence[str] | None = None,
    log: bool | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Training curves: one line per run, against epochs, optimizer steps or wall time.

    Args:
      results: a :class:`~gdopt.FitResult`, a :class:`~gdopt.History`, a
        :class:`~gdopt.SweepResult` (one line per run) or a list or ``{label: result}`` dict
        of them.
      x: ``"epoch"``, ``"step"`` (epochs times the run's steps per epoch) or ``"time"``
        (seconds of training, compilation excluded, spread evenly over the epochs; needs a
        result, not a bare history).
      metric: ``"train_loss"``, ``"eval_loss"`` or ``"eval_accuracy"``.
      labels: one legend entry per line (default: the dict keys, or the configurations).
      log: log-scale y (default: for losses, when every value is positive).
      ax: a matplotlib axes to draw into (default: a new figure).
      title: the axes title.

    Returns:
      The matplotlib figure.

    >>> import gdopt, jax.numpy as jnp, matplotlib; matplotlib.use("Agg")
    >>> h = gdopt.History(jnp.array([4.0, 2.0, 1.0]), jnp.zeros(0), jnp.zeros(0), jnp.arange(1, 4))
    >>> fig = gdopt.plot.loss_curves(h)
    >>> fig.axes[0].lines[0].get_ydata().tolist()
    [4.0, 2.0, 1.0]
    """
    check_choice("x", x, _X_AXES)
    check_choice("metric", metric, _METRICS)
    curves = _runs(results, labels)
    fig, ax = axes(ax)
    positive = True
    for label, row, result in curves:
        epochs, values = _series(row, metric)
        xs = _x_values(epochs, x, result, row)
        ok = np.isfinite(values)
        positive &= bool(np.all(values[ok] > 0))
        ax.plot(xs[ok], values[ok], marker="." if len(xs) <= 50 else None, label=label or None)
    if log if log is not None else (positive and metric != "eval_accuracy"):
        ax.set_yscale("log")
    ax.set_xlabel(_LABELS[x])
    ax.set_ylabel(_LABELS[metric])
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if any(label for label, _, _ in curves) and len(curves) <= 12:
        ax.legend(fontsize="small")
    return fig


def _grid_of(result: Any, x: str, y: str, values: np.ndarray) -> tuple[list, list, np.ndarray]:
    """The heat map's image: ``values`` averaged over the runs in each (x, y) cell."""

    def coord(i: int, name: str) -> float:
        if name == "seed":
            seed = result.seeds[i]
            if seed is None:
                raise ValueError("y='seed' needs a sweep run with seeds=.")
            return float(seed)
        return float(result.configs[i][name])

    xs = sorted({coord(i, x) for i in range(len(result.configs))})
    ys = sorted({coord(i, y) for i in range(len(result.configs))})
    total = np.zeros((len(ys), len(xs)))
    count = np.zeros((len(ys), len(xs)))
    for i in range(len(result.configs)):
        r, c = ys.index(coord(i, y)), xs.index(coord(i, x))
        total[r, c] += values[i]
        count[r, c] += 1
    with np.errstate(invalid="ignore"):
        image = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return xs, ys, image


def sweep_heatmap(
    result: Any,
    x: str | None = None,
    y: str | None = None,
    *,
    metric: str | None = None,
    ax: Any = None,
    annotate: bool | None = None,
    title: str | None = None,
) -> Any:
    """A sweep's metric as a heat map over two hyperparameters, or one against the seeds.

    Cell ``(row j, column i)`` shows the metric of the runs with ``y``'s j-th and ``x``'s
    i-th value (their mean when several runs share a cell, e.g. seeds when ``y`` is another
    hyperparameter); diverged runs count as NaN (a blank cell). Values run along the axes in
    increasing order, labelled by value.

    Args:
      result: a :class:`~gdopt.SweepResult`.
      x: the hyperparameter along the columns (default: the first one swept).
      y: the hyperparameter along the rows, or ``"seed"`` (default: the second one swept,
        else ``"seed"``).
      metric: ``"train_loss"``, ``"eval_loss"`` or ``"eval_accuracy"`` (default: the
        result's ``metric``).
      ax: a matplotlib axes (default: a new figure).
      annotate: write each value in its cell (default: up to 12 x 12 cells).
      title: the axes title.

    Returns:
      The matplotlib figure (``fig.axes[0].images[0].get_array()`` holds the image).

    >>> import gdopt, jax.numpy as jnp, matplotlib; matplotlib.use("Agg")
    >>> x = jnp.linspace(-1.0, 1.0, 8)[:, None]; loss = lambda p, b: jnp.mean((b @ p) ** 2)
    >>> res = gdopt.sweep(loss, jnp.ones(1), gdopt.sgd(0.1), x, epochs=2, seeds=2,
    ...                   grid={"learning_rate": [0.1, 0.5, 1.0]})
    >>> gdopt.plot.sweep_heatmap(res).axes[0].images[0].get_array().shape
    (2, 3)
    """
    names = list(result.configs[0]) if result.configs else []
    if x is None:
        if not names:
            raise ValueError("the sweep swept no hyperparameter.")
        x = names[0]
    if y is None:
        y = next((n for n in names if n != x), "seed")
    assert x is not None and y is not None
    for arg, name in (("x", x), ("y", y)):
        if name != "seed" and name not in names:
            raise ValueError(
                f"{arg}={name!r} is not a swept hyperparameter; the sweep has {names}."
            )
    if x == y:
        raise ValueError(f"x and y must differ, both are {x!r}.")
    metric = str(result.metric if metric is None else metric)
    check_choice("metric", metric, _METRICS)
    raw = {
        "train_loss": result.final_train_loss,
        "eval_loss": result.eval_loss,
        "eval_accuracy": result.eval_accuracy,
    }[metric]
    if raw is None:
        raise ValueError(f"metric={metric!r} was not recorded (sweep with eval_data/accuracy_fn).")
    values = np.where(np.asarray(result.diverged), np.nan, np.asarray(raw, float))
    xs, ys, image = _grid_of(result, x, y, values)
    new = ax is None
    fig, ax = axes(ax, figsize=(max(4.0, 0.6 * len(xs) + 2.5), max(3.0, 0.45 * len(ys) + 2.0)))
    if new:  # room for the rotated tick labels and the colour bar
        fig.set_layout_engine("constrained")
    cmap = "viridis_r" if metric != "eval_accuracy" else "viridis"
    im = ax.imshow(np.ma.masked_invalid(image), origin="lower", aspect="auto", cmap=cmap)
    fig.colorbar(im, ax=ax, label=_LABELS[metric])

    def ticks(vals: list) -> list[str]:
        return [str(int(v)) if float(v).is_integer() and abs(v) < 1e4 else f"{v:.2g}" for v in vals]

    ax.set_xticks(range(len(xs)), ticks(xs), rotation=45 if len(xs) > 6 else 0)
    ax.set_yticks(range(len(ys)), ticks(ys))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if annotate if annotate is not None else (len(xs) <= 12 and len(ys) <= 12):
        finite = image[np.isfinite(image)]
        mid = float(np.median(finite)) if finite.size else 0.0
        for r in range(len(ys)):
            for c in range(len(xs)):
                v = image[r, c]
                text = "div." if math.isnan(v) else f"{v:.3g}"
                ax.text(
                    c,
                    r,
                    text,
                    ha="center",
                    va="center",
                    fontsize="x-small",
                    color="black" if math.isnan(v) or v < mid else "white",
                )
    ax.set_title(title or f"sweep: {_LABELS[metric]}")
    return fig


def lr_find_curve(
    result: Any, *, ax: Any = None, raw: bool = True, title: str | None = None
) -> Any:
    """The learning-rate finder's curve (loss against rate, log x) with its suggestions.

    Draws the smoothed loss (the first line), the raw losses faintly (the second line, with
    ``raw``), a vertical line at the chosen suggestion and a marker for each rule's
    suggestion (labelled in the legend).

    Args:
      result: an :class:`~gdopt.LRFindResult`.
      ax: a matplotlib axes (default: a new figure).
      raw: also draw the unsmoothed losses.
      title: the axes title.

    Returns:
      The matplotlib figure.

    >>> import gdopt, numpy as np, matplotlib; matplotlib.use("Agg")
    >>> lrs = np.geomspace(1e-4, 1.0, 5); loss = np.array([3.0, 2.0, 1.0, 2.0, 9.0])
    >>> res = gdopt.LRFindResult(lrs, loss, loss, 1e-2, {"valley": 1e-2})
    >>> gdopt.plot.lr_find_curve(res).axes[0].lines[0].get_ydata().tolist()
    [3.0, 2.0, 1.0, 2.0, 9.0]
    """
    fig, ax = axes(ax)
    lrs = np.asarray(result.learning_rates, float)
    smoothed = np.asarray(result.smoothed_losses, float)
    ok = np.isfinite(smoothed)
    ax.plot(lrs[ok], smoothed[ok], label="smoothed loss", color="C0")
    if raw:
        losses = np.asarray(result.losses, float)
        fine = np.isfinite(losses)
        ax.plot(lrs[fine], losses[fine], color="C0", alpha=0.25, linewidth=0.8, label="loss")
    for j, (rule, lr) in enumerate(sorted(result.suggestions.items())):
        if not math.isfinite(lr):
            continue
        at = float(np.interp(math.log(lr), np.log(lrs[ok]), smoothed[ok])) if ok.any() else 0.0
        ax.plot(
            [lr], [at], marker="o", linestyle="none", color=f"C{j + 1}", label=f"{rule}: {lr:.2g}"
        )
    if math.isfinite(result.suggestion):
        ax.axvline(result.suggestion, color="grey", linestyle="--", linewidth=1.0)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    if ok.any():  # the blow-up at the end would squash the curve
        lo, hi = float(np.min(smoothed[ok])), float(smoothed[ok][0])
        span = max(hi - lo, 1e-12)
        ax.set_ylim(lo - 0.1 * span, max(hi, lo) + 0.5 * span)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or f"learning-rate finder (suggestion: {result.suggestion:.2g})")
    return fig
