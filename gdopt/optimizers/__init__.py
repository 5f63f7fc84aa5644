"""The named optimizers, each a thin chain of transforms with its hyperparameters in state."""

from gdopt.optimizers import _adaptive, _core, _modern
from gdopt.optimizers._adaptive import *
from gdopt.optimizers._core import *
from gdopt.optimizers._modern import *

__all__ = [*_core.__all__, *_adaptive.__all__, *_modern.__all__]
