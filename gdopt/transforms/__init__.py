"""Single-purpose gradient transformations, the building blocks of every optimizer.

One module per purpose; each defines ``__all__`` and everything in it is re-exported here
and at the top level of :mod:`gdopt`:

* :mod:`~gdopt.transforms.scaling`: identity, zero, constant, schedule and learning-rate scaling;
* :mod:`~gdopt.transforms.moments`: momentum, moving averages, the Adam/RMS/AdaGrad families;
* :mod:`~gdopt.transforms.factored`: memory-lean second moments (SM3, Adafactor);
* :mod:`~gdopt.transforms.lr_free`: learned step sizes (Prodigy, D-Adaptation, Polyak);
* :mod:`~gdopt.transforms.normalization`: sign methods, trust ratios, orthogonalisation;
* :mod:`~gdopt.transforms.clipping`: clipping by value, norm and unit;
* :mod:`~gdopt.transforms.constraints`: projections onto constraint sets;
* :mod:`~gdopt.transforms.regularization`: weight decay, gradient noise, centralisation;
* :mod:`~gdopt.transforms.second_order`: curvature estimates (Sophia, Hutchinson);
* :mod:`~gdopt.transforms.linesearch`: backtracking and strong-Wolfe line searches, L-BFGS;
* :mod:`~gdopt.transforms.monitoring`: measurements of the updates kept in the state.
"""

# optax.transforms also holds optax's combinators and wrappers: the same objects here (they
# live in gdopt.combinators and gdopt.wrappers and are not part of this package's __all__).
from gdopt.combinators import (  # noqa: E402
    ConditionallyMaskState,
    ConditionallyTransformState,
    MaskedState,
    PartitionState,
    chain,
    conditionally_mask,
    conditionally_transform,
    flatten,
    freeze,
    masked,
    named_chain,
    partition,
    selective_transform,
    skip_large_updates,
    skip_not_finite,
)
from gdopt.transforms import (
    clipping,
    constraints,
    factored,
    linesearch,
    lr_free,
    moments,
    monitoring,
    normalization,
    regularization,
    scaling,
    second_order,
)
from gdopt.transforms.clipping import *
from gdopt.transforms.constraints import *
from gdopt.transforms.factored import *
from gdopt.transforms.linesearch import *
from gdopt.transforms.lr_free import *
from gdopt.transforms.moments import *
from gdopt.transforms.monitoring import *
from gdopt.transforms.normalization import *
from gdopt.transforms.regularization import *
from gdopt.transforms.scaling import *
from gdopt.transforms.second_order import *
from gdopt.wrappers import (  # noqa: E402
    ApplyIfFiniteState,
    MultiSteps,
    MultiStepsState,
    apply_if_finite,
)

__all__: list[str] = []
__all__ += scaling.__all__
__all__ += moments.__all__
__all__ += factored.__all__
__all__ += lr_free.__all__
__all__ += normalization.__all__
__all__ += clipping.__all__
__all__ += constraints.__all__
__all__ += regularization.__all__
__all__ += second_order.__all__
__all__ += linesearch.__all__
__all__ += monitoring.__all__
