"""Plots of the loss landscape: contours with trajectories, basin maps, slices, spectra.

Each function takes ``ax=`` (draw into an existing axes; default a new figure) and returns
the figure. matplotlib is imported only when a plot is drawn (:mod:`gdopt.plot._backend`).
The inputs are what :mod:`gdopt.landscape` and :mod:`gdopt.multistart` return.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdopt.plot._backend import axes, pyplot

__all__ = [
    "contours",
    "basin_map",
    "interpolation_curve",
    "slice_2d_contours",
    "spectral_density",
    "sharpness_curve",
]


def _grid_values(
    fn: Callable[[jax.Array], Any], xlim: tuple[float, float], ylim: tuple[float, float], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs = np.linspace(xlim[0], xlim[1], n, dtype=np.float32)
    ys = np.linspace(ylim[0], ylim[1], n, dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)
    points = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], axis=1))
    z = np.asarray(jax.jit(jax.vmap(fn))(points), np.float64).reshape(n, n)
    return xs, ys, z


def _contours(ax: Any, xs, ys, z, levels: int, log: bool) -> Any:
    if log:
        shifted = z - np.nanmin(z)
        positive = shifted[shifted > 0]
        floor = positive.min() if positive.size else 1.0
        return ax.contour(xs, ys, np.log10(shifted + floor), levels=levels, cmap="viridis")
    return ax.contour(xs, ys, z, levels=levels, cmap="viridis")


def _path(t: Any) -> np.ndarray:
    params = getattr(t, "params", t)
    path = np.asarray(params)
    if path.ndim != 2 or path.shape[1] != 2:
        raise ValueError(
            "a trajectory must be 2-D points of shape (steps, 2) (or a Trajectory of them), got "
            f"shape {path.shape}."
        )
    return path


def contours(
    fn: Callable[[jax.Array], Any],
    *,
    xlim: tuple[float, float] = (-5.0, 5.0),
    ylim: tuple[float, float] = (-5.0, 5.0),
    n: int = 200,
    levels: int = 30,
    log: bool = True,
    trajectories: Mapping[str, Any] | None = None,
    minima: Any = None,
    ax: Any = None,
) -> Any:
    """Contours of a 2-D function, optionally with optimizer trajectories and minima.

    Args:
      fn: ``fn(x) -> scalar`` for ``x`` of shape ``(2,)`` (e.g. ``gdopt.problems.himmelblau``).
      xlim, ylim: the plotted box.
      n: grid points per axis.
      levels: the number of contour levels.
      log: contour ``log10(f - min f)`` (shows the floor of valleys).
      trajectories: ``{label: path}``, each path an array of shape ``(steps, 2)`` or a
        :class:`gdopt.Trajectory` (from :func:`gdopt.record_trajectories`).
      minima: points to mark, an array of shape ``(k, 2)`` (e.g. the known minimisers).
      ax: draw into this axes.

    Returns:
      The matplotlib figure.
    """
    fig, ax = axes(ax, (6.0, 5.0))
    xs, ys, z = _grid_values(fn, xlim, ylim, n)
    _contours(ax, xs, ys, z, levels, log)
    for label, t in (trajectories or {}).items():
        path = _path(t)
        (line,) = ax.plot(path[:, 0], path[:, 1], ".-", ms=2, lw=1, label=str(label))
        ax.plot(path[-1, 0], path[-1, 1], "o", color=line.get_color(), ms=5)
    if minima is not None:
        pts = np.asarray(minima, np.float64).reshape(-1, 2)
        ax.plot(pts[:, 0], pts[:, 1], "k*", ms=10, label="minima")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    if trajectories or minima is not None:
        ax.legend(loc="best", fontsize="small")
    return fig


def basin_map(
    result: Any,
    *,
    fn: Callable[[jax.Array], Any] | None = None,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    ax: Any = None,
) -> Any:
    """A basin map: each start of a 2-D :func:`gdopt.multistart` coloured by the minimum it
    reached, the minima marked with stars (the legend gives each one's loss and count).

    Args:
      result: a :class:`gdopt.MultiStartResult` whose parameters are points of shape ``(2,)``.
      fn: the objective, drawn as contours behind the starts (optional).
      xlim, ylim: the plotted box (default: the starts' extent).
      ax: draw into this axes.

    Returns:
      The matplotlib figure.
    """
    starts = np.asarray(result.init_params, np.float64)
    if starts.ndim != 2 or starts.shape[1] != 2:
        raise ValueError(
            f"basin_map needs 2-D points (params of shape (2,)), got starts of shape "
            f"{starts.shape[1:]}."
        )
    fig, ax = axes(ax, (6.0, 5.0))
    pad = 0.05 * max(float(np.ptp(starts)), 1e-6)
    xlim = xlim or (starts[:, 0].min() - pad, starts[:, 0].max() + pad)
    ylim = ylim or (starts[:, 1].min() - pad, starts[:, 1].max() + pad)
    if fn is not None:
        xs, ys, z = _grid_values(fn, xlim, ylim, 150)
        c = _contours(ax, xs, ys, z, 20, True)
        c.set_alpha(0.4)
    k = len(result.minima)
    cmap = pyplot().get_cmap("tab10" if k <= 10 else "tab20", max(k, 1))
    for j, m in enumerate(result.minima):
        color = cmap(j)
        ax.scatter(starts[m.indices, 0], starts[m.indices, 1], s=14, color=color)
        p = np.asarray(m.params, np.float64).ravel()
        ax.plot(
            p[0], p[1], "*", ms=14, color=color, mec="k",
            label=f"({p[0]:.3g}, {p[1]:.3g}): loss {m.loss:.2g}, {m.count} starts",
        )  # fmt: skip
    bad = np.asarray(result.basin) < 0
    if bad.any():
        ax.scatter(starts[bad, 0], starts[bad, 1], s=14, marker="x", color="k", label="diverged")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("x[0] at the start")
    ax.set_ylabel("x[1] at the start")
    ax.legend(loc="best", fontsize="x-small")
    return fig


def interpolation_curve(
    slice_1d: Any, *, label: str | None = None, log: bool = False, ax: Any = None
) -> Any:
    """The loss along a line (:func:`gdopt.landscape.interpolate`), ``α = 0`` and ``1``
    marked.

    Args:
      slice_1d: a :class:`gdopt.landscape.LossSlice1D`.
      label: the legend entry of the curve.
      log: a logarithmic loss axis.
      ax: draw into this axes (several calls overlay several lines).

    Returns:
      The matplotlib figure.
    """
    fig, ax = axes(ax)
    ax.plot(slice_1d.alpha, slice_1d.loss, label=label)
    for a in (0.0, 1.0):
        ax.axvline(a, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("α  (0: params_a, 1: params_b)")
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    if label is not None:
        ax.legend(loc="best")
    return fig


def slice_2d_contours(slice_2d: Any, *, levels: int = 30, log: bool = False, ax: Any = None) -> Any:
    """Filled contours of the loss on a plane (:func:`gdopt.landscape.slice_2d`), the centre
    marked.

    Args:
      slice_2d: a :class:`gdopt.landscape.LossSlice2D`.
      levels: the number of contour levels.
      log: contour ``log10(loss)``.
      ax: draw into this axes.

    Returns:
      The matplotlib figure.
    """
    fig, ax = axes(ax, (6.0, 5.0))
    z = np.asarray(slice_2d.loss, np.float64)
    if log:
        z = np.log10(np.maximum(z, np.finfo(np.float64).tiny))
    c = ax.contourf(slice_2d.x, slice_2d.y, z, levels=levels, cmap="viridis")
    fig.colorbar(c, ax=ax, label="log10 loss" if log else "loss")
    ax.plot([0.0], [0.0], "w+", ms=10)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    return fig


def spectral_density(spectrum: Any, *, log: bool = True, ax: Any = None) -> Any:
    """The Hessian's spectral density (:func:`gdopt.landscape.hessian_spectrum`), on a
    logarithmic density axis by default (as Ghorbani et al. plot it: the outliers are tiny
    masses far from the bulk).

    Args:
      spectrum: a :class:`gdopt.landscape.SpectralDensity`.
      log: a logarithmic density axis.
      ax: draw into this axes.

    Returns:
      The matplotlib figure.
    """
    fig, ax = axes(ax)
    density = np.asarray(spectrum.density, np.float64)
    if log:
        floor = max(float(density.max()) * 1e-7, np.finfo(np.float64).tiny)
        ax.semilogy(spectrum.grid, np.maximum(density, floor))
    else:
        ax.plot(spectrum.grid, density)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    return fig


def sharpness_curve(history: Any, *, learning_rate: float | None = None, ax: Any = None) -> Any:
    """Sharpness (the top Hessian eigenvalue) against epochs, with the ``2 / learning_rate``
    line of gradient descent's stability limit (the edge of stability, Cohen et al. 2021).

    Args:
      history: a :class:`gdopt.landscape.SharpnessHistory` (from
        :func:`gdopt.landscape.track_sharpness`), or the :class:`~gdopt.History` of a
        :func:`gdopt.fit` run with ``sharpness_every`` (or its :class:`~gdopt.FitResult`):
        the measured epochs are drawn, the NaN of the others left out.
      learning_rate: draw the ``2 / learning_rate`` line (optional).
      ax: draw into this axes.

    Returns:
      The matplotlib figure.

    Raises:
      ValueError: a history without sharpness (a ``fit`` run without ``sharpness_every``).
    """
    history = getattr(history, "history", history)  # a FitResult: its History
    epochs = np.asarray(history.epochs)
    sharpness = np.asarray(history.sharpness, np.float64)
    if sharpness.size == 0 or sharpness.shape != epochs.shape:
        raise ValueError(
            "history holds no sharpness: pass the result of gdopt.landscape.track_sharpness, "
            "or of gdopt.fit with sharpness_every."
        )
    measured = ~np.isnan(sharpness)
    fig, ax = axes(ax)
    ax.plot(epochs[measured], sharpness[measured], ".-", label="sharpness λ_max")
    if learning_rate is not None:
        ax.axhline(2.0 / float(learning_rate), color="k", ls="--", lw=1, label="2 / lr")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top Hessian eigenvalue")
    ax.legend(loc="best")
    return fig
