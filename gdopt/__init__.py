"""gdopt: gradient-based learning in pure JAX.

Optimizers are stateless ``(init, update)`` pairs written from the papers' update rules;
models and losses are pure functions of a parameter pytree; :func:`fit` compiles whole
training epochs. See README.md for a tour and docs/architecture.md for the layers.
"""

from gdopt import batching, data, losses, models, packing, problems, transforms, tree
from gdopt._numerics import (
    abs_sq,
    bias_correction,
    map_leaves,
    safe_increment,
    update_moment,
)
from gdopt._validation import (
    check_decay,
    check_learning_rate,
    check_nonnegative,
    check_scalar,
    is_concrete,
)
from gdopt.base import *
from gdopt.combinators import *
from gdopt.engine import *
from gdopt.hyperparams import *
from gdopt.optimizers import *
from gdopt.packing import *
from gdopt.schedules import *
from gdopt.transforms import *
from gdopt.transforms import linesearch
from gdopt.wrappers import *

__version__ = "0.1.0"
