"""gdopt: gradient-based learning in pure JAX.

Optimizers are stateless ``(init, update)`` pairs written from the papers' update rules;
models and losses are pure functions of a parameter pytree; :func:`fit` compiles whole
training epochs. See README.md for a tour and docs/architecture.md for the layers.
"""

from gdopt import (  # noqa: E402  (optax's namespaces)
    batching,
    checkpoint,  # noqa: E402  (orbax itself is imported only when saving or restoring)
    contrib,
    data,
    landscape,  # noqa: E402  (after the engine it builds on)
    losses,
    models,
    packing,
    plot,  # noqa: E402  (matplotlib itself is imported only when drawing)
    problems,
    projections,
    sharding,
    transforms,
    tree,
    tree_utils,
)
from gdopt._numerics import (
    abs_sq,
    bias_correction,
    map_leaves,
    safe_increment,
    update_moment,
)
from gdopt._numerics import safe_increment as safe_int32_increment  # noqa: E402
from gdopt._validation import (
    check_decay,
    check_learning_rate,
    check_nonnegative,
    check_scalar,
    is_concrete,
)
from gdopt.base import *
from gdopt.batching import microbatch  # noqa: E402  (optax's microbatch at its top level)
from gdopt.combinators import *
from gdopt.distributions import *  # noqa: E402  (optax's multi_normal)
from gdopt.engine import *
from gdopt.hyperparams import *
from gdopt.linear_algebra import *  # noqa: E402  (optax's top-level linear algebra)
from gdopt.losses import (  # noqa: E402  (optax's losses at its top level)
    convex_kl_divergence,
    cosine_distance,
    cosine_similarity,
    ctc_loss,
    ctc_loss_with_forward_probs,
    generalized_kl_divergence,
    hinge_loss,
    huber_loss,
    kl_divergence,
    l2_loss,
    log_cosh,
    ntxent,
    safe_softmax_cross_entropy,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
    smooth_labels,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
    squared_error,
)
from gdopt.multistart import *  # noqa: E402
from gdopt.numerics import *
from gdopt.optimizers import *
from gdopt.packing import *
from gdopt.schedules import *
from gdopt.transforms import *
from gdopt.transforms import linesearch
from gdopt.tree import update_infinity_moment, update_moment_per_elem_norm  # noqa: E402
from gdopt.tree_utils import tree_map_params  # noqa: E402  (optax's top-level name)
from gdopt.tuning import *  # noqa: E402
from gdopt.wrappers import *

__version__ = "0.1.0"
