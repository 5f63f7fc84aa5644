"""The named optimizers: each a short chain of transforms with its hyperparameters in state.

One module per family:

* :mod:`~gdopt.optimizers.descent`: gradient descent, momentum, noisy SGD, Polyak step sizes;
* :mod:`~gdopt.optimizers.adam_family`: Adam, AdamW and their variants (NAdam, RAdam, AMSGrad,
  AdaMax, AdaBelief, Yogi, ADOPT, AdEMAMix);
* :mod:`~gdopt.optimizers.adaptive`: RMSprop, AdaGrad, AdaDelta, Rprop, SM3, Adafactor;
* :mod:`~gdopt.optimizers.sign`: signSGD, Signum, Lion;
* :mod:`~gdopt.optimizers.layerwise`: LAMB, LARS, NovoGrad, Fromage, Muon;
* :mod:`~gdopt.optimizers.schedule_free`: schedule-free SGD and AdamW;
* :mod:`~gdopt.optimizers.lr_free`: Prodigy, D-Adapt AdamW;
* :mod:`~gdopt.optimizers.second_order`: Sophia, L-BFGS.
"""

from gdopt.optimizers import (
    adam_family,
    adaptive,
    descent,
    layerwise,
    lr_free,
    schedule_free,
    second_order,
    sign,
)
from gdopt.optimizers.adam_family import *
from gdopt.optimizers.adaptive import *
from gdopt.optimizers.descent import *
from gdopt.optimizers.layerwise import *
from gdopt.optimizers.lr_free import *
from gdopt.optimizers.schedule_free import *
from gdopt.optimizers.second_order import *
from gdopt.optimizers.sign import *

__all__: list[str] = []
__all__ += descent.__all__
__all__ += adam_family.__all__
__all__ += adaptive.__all__
__all__ += sign.__all__
__all__ += layerwise.__all__
__all__ += schedule_free.__all__
__all__ += lr_free.__all__
__all__ += second_order.__all__
