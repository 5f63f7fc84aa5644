"""Single-purpose gradient transformations (the building blocks of every optimizer)."""

from gdopt.transforms._core import *  # noqa: F403
from gdopt.transforms._core import __all__ as _core_all

__all__ = list(_core_all)
