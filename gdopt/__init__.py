"""gdopt: gradient-based learning in pure JAX.

Optimizers are stateless ``(init, update)`` pairs written from the papers' update rules;
models and losses are pure functions of a parameter pytree; :func:`fit` compiles whole
training epochs. See README.md for a tour.
"""

from gdopt import tree
from gdopt.base import *  # noqa: F403
from gdopt.combinators import *  # noqa: F403
from gdopt.optimizers import *  # noqa: F403
from gdopt.schedules import *  # noqa: F403
from gdopt.transforms import *  # noqa: F403
from gdopt.wrappers import *  # noqa: F403

__version__ = "0.1.0"
