"""optax.contrib's names: the newer optimizers, transforms and wrappers under one namespace.

``gdopt.contrib.<name>`` is the gdopt function of optax's ``optax.contrib.<name>`` (the same
object as ``gdopt.<name>``; ``gdopt.contrib.sam`` is :func:`gdopt.adversarial_sam`, optax's
API of alternating adversarial and outer steps, where ``gdopt.sam`` is the one-call form),
so a program written against ``optax.contrib`` runs with
``gdopt.contrib``. optax.contrib names that gdopt lacks are listed, with the reason, in
``docs/optax_coverage.md``.

>>> import gdopt
>>> gdopt.contrib.reduce_on_plateau is gdopt.reduce_on_plateau
True
"""

from __future__ import annotations

from gdopt.optimizers.adam_family import ademamix, adopt
from gdopt.optimizers.layerwise import muon
from gdopt.optimizers.lr_free import dadapt_adamw, prodigy
from gdopt.optimizers.schedule_free import schedule_free_adamw, schedule_free_sgd
from gdopt.optimizers.second_order import sophia
from gdopt.schedules import ReduceLROnPlateauState, reduce_on_plateau
from gdopt.transforms.lr_free import DAdaptAdamWState, ProdigyState
from gdopt.transforms.moments import ScaleByAdemamixState, scale_by_ademamix, scale_by_adopt
from gdopt.transforms.normalization import (
    MuonDimensionNumbers,
    MuonState,
    NormalizeState,
    normalize,
    scale_by_muon,
)
from gdopt.transforms.second_order import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
)
from gdopt.wrappers import SAMState, ScheduleFreeState, schedule_free, schedule_free_eval_params
from gdopt.wrappers import adversarial_sam as sam

__all__ = [
    "DAdaptAdamWState",
    "HutchinsonState",
    "MuonDimensionNumbers",
    "MuonState",
    "NormalizeState",
    "SAMState",
    "ProdigyState",
    "ReduceLROnPlateauState",
    "ScaleByAdemamixState",
    "ScheduleFreeState",
    "SophiaState",
    "ademamix",
    "adopt",
    "dadapt_adamw",
    "hutchinson_estimator_diag_hessian",
    "muon",
    "normalize",
    "prodigy",
    "reduce_on_plateau",
    "sam",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_muon",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "sophia",
]
