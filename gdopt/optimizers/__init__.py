"""The named optimizers, each a thin chain of transforms with its hyperparameters in state."""

from gdopt.optimizers._core import *  # noqa: F403
from gdopt.optimizers._core import __all__ as _core_all

__all__ = list(_core_all)
