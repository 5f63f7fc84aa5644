"""Plots of training and of the loss landscape (matplotlib, the ``plot`` extra).

matplotlib is imported only when a plot is drawn. Every function takes ``ax=`` (draw into
an existing axes) and returns the figure.
"""

from __future__ import annotations

from gdopt.plot.landscape import (
    basin_map,
    contours,
    interpolation_curve,
    sharpness_curve,
    slice_2d_contours,
    spectral_density,
)
from gdopt.plot.training import loss_curves, lr_find_curve, sweep_heatmap

__all__: list[str] = []
__all__ += ["loss_curves", "sweep_heatmap", "lr_find_curve"]
__all__ += [
    "contours",
    "basin_map",
    "interpolation_curve",
    "slice_2d_contours",
    "spectral_density",
    "sharpness_curve",
]
