"""Single-purpose gradient transformations (the building blocks of every optimizer).

One module per family; each defines ``__all__`` and everything in it is re-exported here and
at the top level of :mod:`gdopt`.
"""

from gdopt.transforms import _adaptive, _clipping, _constraints, _core, _modern
from gdopt.transforms._adaptive import *
from gdopt.transforms._clipping import *
from gdopt.transforms._constraints import *
from gdopt.transforms._core import *
from gdopt.transforms._modern import *

__all__ = [
    *_core.__all__,
    *_adaptive.__all__,
    *_modern.__all__,
    *_clipping.__all__,
    *_constraints.__all__,
]
