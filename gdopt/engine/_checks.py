"""Argument checks of the training engine (one function per argument kind)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gdopt._validation import check_int

DIVERGENCE_MODES = ("stop", "raise")


def check_tol(tol: float | None) -> None:
    """``tol`` must be ``None`` or a finite number > 0."""
    if tol is None:
        return
    if isinstance(tol, (bool, np.bool_)) or not np.isscalar(tol) or not np.isfinite(tol):
        raise ValueError(f"tol must be a finite number > 0 or None, got {tol!r}.")
    if not float(np.asarray(tol)) > 0:
        raise ValueError(f"tol must be a finite number > 0 or None, got {tol!r}.")


def check_epochs(name: str, value: Any) -> int:
    """An epoch count: an integer >= 1."""
    return check_int(name, value, 1)


def check_on_divergence(value: Any) -> None:
    """``on_divergence`` must be one of :data:`DIVERGENCE_MODES`."""
    if not isinstance(value, str) or value not in DIVERGENCE_MODES:
        raise ValueError(f"on_divergence must be 'stop' or 'raise', got {value!r}.")
