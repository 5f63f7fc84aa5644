"""gdopt: gradient-based learning in pure JAX.

Optimizers are stateless ``(init, update)`` pairs written from the papers' update rules;
models and losses are pure functions of a parameter pytree; :func:`fit` compiles whole
training epochs. See README.md for a tour.
"""

from gdopt import batching, data, linesearch, losses, models, packing, problems, tree
from gdopt.base import *
from gdopt.combinators import *
from gdopt.engine import *
from gdopt.linesearch import *
from gdopt.optimizers import *
from gdopt.packing import *
from gdopt.schedules import *
from gdopt.transforms import *
from gdopt.wrappers import *

__version__ = "0.1.0"
