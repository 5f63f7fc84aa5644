"""matplotlib, imported only when a plot is drawn (the ``plot`` extra)."""

from __future__ import annotations

from typing import Any

__all__ = ["pyplot", "axes"]


def pyplot() -> Any:
    """``matplotlib.pyplot``, or an ``ImportError`` that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "gdopt.plot needs matplotlib: pip install 'gdopt[plot]' (or pip install matplotlib)"
        ) from e
    return plt


def axes(ax: Any = None, figsize: tuple[float, float] = (6.0, 4.0)) -> tuple[Any, Any]:
    """``(figure, axes)``: those of ``ax`` when given, else a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = pyplot().subplots(figsize=figsize)
    return fig, ax
