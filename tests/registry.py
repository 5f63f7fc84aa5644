"""The one table of optimizer cases.

Every named optimizer of gdopt has one :class:`Spec` here; adding an optimizer is one module
in ``gdopt/optimizers`` and one row in :data:`REGISTRY`. ``tests/test_optimizers.py`` runs
every cross-cutting test from this table: parity with the oracles, convergence on the
parabola and on Rosenbrock (from :mod:`gdopt.problems`), dtypes, ``jit`` equal to eager,
``vmap`` over the learning rate, no recompilation, no compilation in eager steps, bad
hyperparameters, packability, optax's state layout, ``get_hyperparams``, keyword extras
ignored where not taken, and optax's argument kinds.

Oracles are other implementations of the same rule (optax, torch.optim, the authors'
packages), fed the same gradients. They receive only their own pieces: optax's schedules,
plain floats, pytree masks, plain functions (a schedule or a mask written here, given to both
sides); never a gdopt object. Every oracle computation runs under ``tests.helpers.oracle()``
(standard dtype promotion); gdopt's side runs under the suite's (strict). gdopt keeps
hyperparameters as float32 arrays, so where a difference of ``1 - β`` in float32 and in double
would show, the oracle is given the float32-rounded value (:func:`f32`): a difference of
inputs, not of rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gdopt

N = 10_000  # the default step budget of the convergence runs
MASK = {"dense": {"w": True, "b": False}, "layers": [True, True], "scale": False}


def f32(x: float) -> float:
    """``x`` rounded to float32 (the value gdopt stores), as a Python float."""
    return float(np.float32(x))


# ----------------------------------------------------------------------------- oracles


@dataclasses.dataclass(frozen=True)
class Oracle:
    """Another implementation of the same update rule.

    Attributes:
      library: ``"optax"``, ``"torch"`` (torch.optim) or the authors' package name.
      make: optax: ``make() -> GradientTransformation``; torch-based: ``make(params) ->
        torch.optim.Optimizer`` over a list of float32 tensors (one per leaf, flattening
        order).
      rtol, atol: how close the parameter trajectories must be (every step).
      steps: how many gradients of the sequence to compare (torch-based ones are slower).
      extras: keyword extras for optax's ``update`` given the step index and params.
    """

    library: str
    make: Callable[..., Any]
    rtol: float = 1e-5
    atol: float = 1e-6
    steps: int = 100
    extras: Callable[[int, Any], dict] | None = None

    @property
    def torch(self) -> bool:
        return self.library != "optax"


def optax_(name: str, **kwargs: Any) -> Callable[[], Any]:
    """``optax.<name>(**kwargs)`` (or optax.contrib's), built when the test runs."""

    def make():
        import optax
        import optax.contrib

        fn = getattr(optax, name, None) or getattr(optax.contrib, name)
        return fn(**kwargs)

    return make


def torch_(path: str, **kwargs: Any) -> Callable[[list], Any]:
    """``module.Class(params, **kwargs)`` for a torch-based oracle, e.g. ``"torch.optim.SGD"``."""

    def make(params: list):
        import importlib

        module, cls = path.rsplit(".", 1)
        return getattr(importlib.import_module(module), cls)(params, **kwargs)

    return make


def values(i: int, params: Any) -> dict:
    """The ``value=`` extra of loss-aware optimizers (Polyak): a fixed positive sequence."""
    del params
    return {"value": jnp.asarray(1.0 + 0.5 * np.sin(i), jnp.float32)}


# ----------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class Case:
    """One parity case: gdopt's arguments and the oracle of that configuration."""

    id: str
    kwargs: dict
    oracle: Oracle | None = None


@dataclasses.dataclass(frozen=True)
class Spec:
    """How one named optimizer is tested.

    Attributes:
      name: ``gdopt.<name>``.
      run: the arguments of the convergence, dtype, jit, vmap and compile tests.
      packable: the expected :func:`gdopt.is_packable` of ``factory(**run)``.
      layout: the optax function (name) whose ``init`` layout ``factory(**layout_kwargs)``'s
        state must have, or ``None`` when optax has no such optimizer.
      layout_kwargs: arguments for both sides of the layout test (default: ``run``'s
        learning rate only, constant).
      cases: parity cases.
      extras: the keyword extras ``update`` needs: ``value``, ``grad``, ``value_fn``,
        ``obj_fn``.
      steps, shape: the convergence runs' step budget and parameter shape.
      eval_fn: ``eval_fn(state, params)``: the point to judge (schedule-free: ``x``).
      rosenbrock_xfail: why the Rosenbrock run misses its tolerance (a strict xfail).
      bad: ``(argument, value)`` pairs that must raise, naming the argument.
      learning_rate: the name of the argument swept by the vmap test.
      difference_updates: the updates are differences of parameter-sized numbers (new
        averaged point minus the current one), so they carry the parameters' rounding and
        are compared with the parameters, not on their own scale.
    """

    name: str
    run: dict
    packable: bool
    layout: str | None = None
    layout_kwargs: dict | None = None
    cases: tuple[Case, ...] = ()
    extras: tuple[str, ...] = ()
    steps: int = N
    shape: tuple = (2,)
    eval_fn: Callable[[Any, Any], Any] | None = None
    rosenbrock_xfail: str | None = None
    bad: tuple[tuple[str, Any], ...] = ()
    learning_rate: str = "learning_rate"
    difference_updates: bool = False

    @property
    def factory(self) -> Callable[..., gdopt.GradientTransformation]:
        return getattr(gdopt, self.name)

    def make(self, **overrides: Any) -> gdopt.GradientTransformation:
        return self.factory(**{**self.run, **overrides})


def cos(peak: float, steps: int = N) -> gdopt.Schedule:
    """The convergence runs' learning-rate schedule: cosine decay from ``peak``."""
    return gdopt.cosine_decay_schedule(peak, steps)


def _paper_alpha_warmup(alpha: float, warmup: int) -> Callable:
    """AdEMAMix's α warm-up from the paper: ``min(t α / T, α)`` (written here, not gdopt's)."""
    return lambda t: alpha * jnp.minimum(jnp.asarray(t, jnp.float32) / warmup, 1.0)


def _paper_beta3_warmup(beta_start: float, beta_end: float, warmup: int) -> Callable:
    """AdEMAMix's β3 warm-up from the paper (log-space interpolation of the half-life)."""
    ls, le = float(np.log(beta_start)), float(np.log(beta_end))

    def schedule(t):
        x = jnp.asarray(t, jnp.float32) / warmup
        return jnp.minimum(jnp.exp(ls * le / ((1 - x) * le + x * ls)), beta_end)

    return schedule


_SIGN_SGD_XFAIL = (
    "signSGD moves every coordinate by exactly ±α per step, so in Rosenbrock's curved valley "
    "it zig-zags across the floor: in 10k steps with a cosine decay from 3e-4 it ends ~1.4e-2 "
    "from (1, 1); cosine or quadratic decays from peaks of 3e-4 to 6e-4, and a constant "
    "3e-4, all end between 8e-3 and 0.25 away, above the 5e-3 tolerance. Signum, its "
    "momentum version, meets it."
)

_COMMON_BAD = (
    ("learning_rate", -0.1),
    ("learning_rate", float("nan")),
    ("b1", 1.0),
    ("b2", -0.1),
    ("eps", -1e-8),
    ("eps_root", -1e-8),
    ("weight_decay", -0.1),
)

_DIMS_G = {
    "dense": {"w": gdopt.MuonDimensionNumbers(), "b": None},
    "layers": [None, gdopt.MuonDimensionNumbers(reduction_axis=1, output_axis=2)],
    "scale": None,
}


def _optax_muon_dims():
    import optax.contrib as oc

    return {
        "dense": {"w": oc.MuonDimensionNumbers(), "b": None},
        "layers": [None, oc.MuonDimensionNumbers(reduction_axis=1, output_axis=2)],
        "scale": None,
    }


def _optax_muon_nondefault():
    import optax.contrib as oc

    return oc.muon(
        0.02,
        ns_steps=4,
        beta=f32(0.9),
        weight_decay=f32(0.1),
        weight_decay_mask={"dense": True, "layers": False, "scale": False},
        nesterov=False,
        adaptive=True,
        preconditioning="spectral",
        adam_b1=f32(0.8),
        adam_b2=f32(0.99),
        adam_eps_root=f32(1e-8),
        adam_weight_decay=f32(0.01),
        adam_learning_rate=f32(0.003),
        consistent_rms=f32(0.2),
        muon_weight_dimension_numbers=_optax_muon_dims(),
    )


def _decaying(count):
    """``0.01 / (1 + 0.1 t)``: a plain function of the step (both sides get it; strict-safe)."""
    return 0.01 / (1.0 + 0.1 * jnp.asarray(count).astype(jnp.float32))


def _ndim_mask(params):
    """A callable mask (decay the matrices only): optax and gdopt both take the function."""
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def _paper_relative_step(count):
    return jnp.minimum(1e-2, jax.lax.rsqrt(count.astype(jnp.float32) + 1.0))


B2_F32 = f32(0.999)


def _spec(name: str, run: dict, packable: bool, more_bad: tuple = (), **kw: Any) -> Spec:
    """A :class:`Spec`; the bad values default to the common ones the optimizer takes, plus
    ``more_bad``."""
    if "bad" not in kw:
        import inspect

        taken = inspect.signature(getattr(gdopt, name)).parameters
        kw["bad"] = tuple((a, v) for a, v in _COMMON_BAD if a in taken) + tuple(more_bad)
    return Spec(name, run, packable, **kw)


REGISTRY: dict[str, Spec] = {
    s.name: s
    for s in [
        # ------------------------------------------------------------------ gradient descent
        # Plain gradient descent is stable on Rosenbrock only for α < 2/λ_max ≈ 2e-3.
        _spec(
            "sgd",
            dict(learning_rate=1.5e-3),
            True,
            layout="sgd",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.1),
                    Oracle("optax", optax_("sgd", learning_rate=0.1)),
                ),
                Case(
                    "momentum",
                    dict(learning_rate=0.05, momentum=0.9),
                    Oracle("optax", optax_("sgd", learning_rate=0.05, momentum=0.9)),
                ),
                Case(
                    "nesterov",
                    dict(learning_rate=0.05, momentum=0.9, nesterov=True),
                    Oracle("optax", optax_("sgd", learning_rate=0.05, momentum=0.9, nesterov=True)),
                ),
                Case(
                    "torch-nesterov",
                    dict(learning_rate=0.05, momentum=0.9, nesterov=True),
                    Oracle(
                        "torch",
                        torch_("torch.optim.SGD", lr=0.05, momentum=0.9, nesterov=True),
                        steps=40,
                    ),
                ),
            ),
            bad=(
                ("learning_rate", 0.0),
                ("learning_rate", -1.0),
                ("learning_rate", float("nan")),
                ("momentum", 1.0),
                ("momentum", -0.1),
            ),
        ),
        _spec("momentum", dict(learning_rate=1e-3, momentum=0.9), True, bad=(("momentum", 1.0),)),
        _spec(
            "noisy_sgd",
            dict(learning_rate=1.5e-3, eta=1e-4, key=0),
            False,
            layout="noisy_sgd",
            layout_kwargs=dict(learning_rate=0.1, key=0),
            cases=(
                Case(
                    "no-noise",
                    dict(learning_rate=0.05, eta=0.0, key=3),
                    Oracle("optax", optax_("noisy_sgd", learning_rate=0.05, eta=0.0, key=3)),
                ),
            ),
            bad=(("learning_rate", -0.1), ("eta", -1.0), ("gamma", -0.5)),
        ),
        _spec(
            "polyak_sgd",
            dict(),
            True,
            layout="polyak_sgd",
            layout_kwargs=dict(),
            extras=("value",),
            learning_rate="max_learning_rate",
            cases=(
                Case("default", dict(), Oracle("optax", optax_("polyak_sgd"), extras=values)),
                Case(
                    "nondefault",
                    dict(max_learning_rate=0.05, scaling=0.5, f_min=0.2, eps=1e-3, variant="sps+"),
                    Oracle(
                        "optax",
                        optax_(
                            "polyak_sgd",
                            max_learning_rate=f32(0.05),
                            scaling=0.5,
                            f_min=f32(0.2),
                            eps=f32(1e-3),
                            variant="sps+",
                        ),
                        extras=values,
                    ),
                ),
            ),
            bad=(
                ("max_learning_rate", -1.0),
                ("max_learning_rate", 0.0),
                ("scaling", -1.0),
                ("eps", -1.0),
                ("variant", "sps-"),
                ("variant", "sgd"),
            ),
        ),
        # ------------------------------------------------------------------ sign methods
        _spec(
            "sign_sgd",
            dict(learning_rate=cos(3e-4)),
            True,
            layout="sign_sgd",
            rosenbrock_xfail=_SIGN_SGD_XFAIL,
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("sign_sgd", learning_rate=0.01)),
                ),
            ),
            bad=(("learning_rate", -0.1),),
        ),
        _spec(
            "signum",
            dict(learning_rate=cos(1e-2)),
            True,
            layout="signum",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("signum", learning_rate=0.01)),
                ),
                Case(
                    "beta",
                    dict(learning_rate=0.02, beta=0.5),
                    Oracle("optax", optax_("signum", learning_rate=0.02, beta=0.5)),
                ),
            ),
            bad=(("learning_rate", -0.1), ("beta", 1.5)),
        ),
        _spec(
            "lion",
            dict(learning_rate=cos(3e-3), weight_decay=0.0),
            True,
            layout="lion",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("lion", learning_rate=0.01)),
                ),
                Case(
                    "mask",
                    dict(learning_rate=0.02, b1=0.8, b2=0.95, weight_decay=0.1, mask=MASK),
                    Oracle(
                        "optax",
                        optax_(
                            "lion", learning_rate=0.02, b1=0.8, b2=0.95, weight_decay=0.1, mask=MASK
                        ),
                    ),
                ),
                Case(
                    "lion-pytorch",
                    dict(learning_rate=0.01, b1=0.9, b2=0.99, weight_decay=0.1),
                    Oracle(
                        "lion_pytorch",
                        torch_("lion_pytorch.Lion", lr=0.01, betas=(0.9, 0.99), weight_decay=0.1),
                        steps=40,
                    ),
                ),
            ),
        ),
        # ------------------------------------------------------------------ the Adam family
        _spec(
            "adam",
            dict(learning_rate=cos(0.02)),
            True,
            layout="adam",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=1e-2),
                    Oracle("optax", optax_("adam", learning_rate=1e-2)),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=3e-3, b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-6),
                    Oracle(
                        "optax",
                        optax_("adam", learning_rate=3e-3, b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-6),
                    ),
                ),
                Case(
                    "nesterov",
                    dict(learning_rate=1e-2, nesterov=True),
                    Oracle("optax", optax_("adam", learning_rate=1e-2, nesterov=True)),
                ),
                Case(
                    "schedule",
                    dict(learning_rate=gdopt.exponential_decay(0.01, 10, 0.7)),
                    Oracle(
                        "optax",
                        lambda: __import__("optax").adam(
                            __import__("optax").exponential_decay(0.01, 10, 0.7)
                        ),
                    ),
                ),
                Case(
                    "warmup-cosine",
                    dict(learning_rate=gdopt.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 100)),
                    Oracle(
                        "optax",
                        lambda: __import__("optax").adam(
                            __import__("optax").warmup_cosine_decay_schedule(0.0, 1e-2, 10, 100)
                        ),
                    ),
                ),
                Case(
                    "torch",
                    dict(learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6),
                    Oracle(
                        "torch",
                        torch_("torch.optim.Adam", lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
                        steps=40,
                    ),
                ),
            ),
            more_bad=(
                ("learning_rate", float("inf")),
                ("learning_rate", jnp.asarray(-1e-3, jnp.float32)),  # an array is checked too
                ("b2", -0.5),
            ),
        ),
        _spec(
            "adamw",
            dict(learning_rate=cos(0.02), weight_decay=0.0),
            True,
            layout="adamw",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=1e-2),
                    Oracle("optax", optax_("adamw", learning_rate=1e-2)),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=1e-2, weight_decay=0.3, b1=0.8),
                    Oracle("optax", optax_("adamw", learning_rate=1e-2, weight_decay=0.3, b1=0.8)),
                ),
                Case(
                    "mask",
                    dict(learning_rate=1e-2, weight_decay=0.3, mask=MASK),
                    Oracle(
                        "optax", optax_("adamw", learning_rate=1e-2, weight_decay=0.3, mask=MASK)
                    ),
                ),
                Case(
                    "callable-mask",
                    dict(learning_rate=1e-2, weight_decay=0.5, mask=_ndim_mask),
                    Oracle(
                        "optax",
                        optax_("adamw", learning_rate=1e-2, weight_decay=0.5, mask=_ndim_mask),
                    ),
                ),
                Case(
                    "torch",
                    dict(learning_rate=1e-2, weight_decay=0.1),
                    Oracle(
                        "torch", torch_("torch.optim.AdamW", lr=1e-2, weight_decay=0.1), steps=40
                    ),
                ),
            ),
            more_bad=(("weight_decay", -1.0),),
        ),
        _spec(
            "nadam",
            dict(learning_rate=cos(0.02)),
            True,
            layout="nadam",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("nadam", learning_rate=0.01)),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
                    Oracle(
                        "optax",
                        optax_(
                            "nadam", learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8
                        ),
                    ),
                ),
            ),
        ),
        _spec(
            "nadamw",
            dict(learning_rate=cos(0.02), weight_decay=0.0),
            True,
            layout="nadamw",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("nadamw", learning_rate=0.01)),
                ),
                Case(
                    "mask",
                    dict(learning_rate=0.01, b1=0.85, weight_decay=0.1, mask=MASK),
                    Oracle(
                        "optax",
                        optax_("nadamw", learning_rate=0.01, b1=0.85, weight_decay=0.1, mask=MASK),
                    ),
                ),
            ),
        ),
        _spec(
            "radam",
            dict(learning_rate=cos(0.02)),
            True,
            layout="radam",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("radam", learning_rate=0.01, b2=B2_F32)),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=0.02, b1=0.8, b2=0.9921875, eps_root=1e-8, threshold=4.5),
                    Oracle(
                        "optax",
                        optax_(
                            "radam",
                            learning_rate=0.02,
                            b1=0.8,
                            b2=0.9921875,
                            eps_root=1e-8,
                            threshold=4.5,
                        ),
                    ),
                ),
                Case(
                    "nesterov",
                    dict(learning_rate=0.01, nesterov=True, b2=B2_F32),
                    Oracle("optax", optax_("radam", learning_rate=0.01, nesterov=True, b2=B2_F32)),
                ),
            ),
            more_bad=(("threshold", float("nan")), ("threshold", 3.0)),
        ),
        _spec(
            "amsgrad",
            dict(learning_rate=cos(0.02)),
            True,
            layout="amsgrad",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("amsgrad", learning_rate=0.01)),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
                    Oracle(
                        "optax",
                        optax_(
                            "amsgrad", learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8
                        ),
                    ),
                ),
                Case(
                    "paper",
                    dict(
                        learning_rate=0.01,
                        b2=B2_F32,
                        bias_correction_mu=False,
                        bias_correction_nu=False,
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "amsgrad",
                            learning_rate=0.01,
                            b2=B2_F32,
                            bias_correction_mu=False,
                            bias_correction_nu=False,
                        ),
                    ),
                ),
            ),
        ),
        _spec(
            "adamax",
            dict(learning_rate=cos(0.02)),
            True,
            layout="adamax",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("adamax", learning_rate=0.01)),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=0.02, b1=0.8, b2=0.95, eps=1e-4),
                    Oracle(
                        "optax", optax_("adamax", learning_rate=0.02, b1=0.8, b2=0.95, eps=1e-4)
                    ),
                ),
                Case(
                    "torch",
                    dict(learning_rate=0.02, b1=0.8, b2=0.95, eps=1e-4),
                    Oracle(
                        "torch",
                        torch_("torch.optim.Adamax", lr=0.02, betas=(0.8, 0.95), eps=1e-4),
                        steps=40,
                    ),
                ),
            ),
        ),
        _spec(
            "adamaxw",
            dict(learning_rate=cos(0.02), weight_decay=0.0),
            True,
            layout="adamaxw",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("adamaxw", learning_rate=0.01)),
                ),
                Case(
                    "mask",
                    dict(learning_rate=0.01, b1=0.8, weight_decay=0.1, mask=MASK),
                    Oracle(
                        "optax",
                        optax_("adamaxw", learning_rate=0.01, b1=0.8, weight_decay=0.1, mask=MASK),
                    ),
                ),
            ),
        ),
        _spec(
            "adabelief",
            dict(learning_rate=cos(0.02)),
            True,
            layout="adabelief",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("adabelief", learning_rate=0.01)),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10),
                    Oracle(
                        "optax",
                        optax_(
                            "adabelief",
                            learning_rate=0.02,
                            b1=0.8,
                            b2=0.99,
                            eps=1e-8,
                            eps_root=1e-10,
                        ),
                    ),
                ),
            ),
        ),
        _spec(
            "yogi",
            dict(learning_rate=cos(0.02)),
            True,
            layout="yogi",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("yogi", learning_rate=0.01)),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-4),
                    Oracle("optax", optax_("yogi", learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-4)),
                ),
            ),
        ),
        _spec(
            "adopt",
            dict(learning_rate=cos(0.02)),
            True,
            layout="adopt",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle(
                        "optax", optax_("adopt", learning_rate=0.01, b1=f32(0.9), b2=f32(0.9999))
                    ),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-4, nesterov=True),
                    Oracle(
                        "optax",
                        optax_(
                            "adopt",
                            learning_rate=0.02,
                            b1=f32(0.8),
                            b2=f32(0.99),
                            eps=f32(1e-4),
                            nesterov=True,
                        ),
                    ),
                ),
            ),
            more_bad=(("b2", 1.0), ("eps", -1.0)),
        ),
        _spec(
            "ademamix",
            dict(
                learning_rate=cos(0.02),
                b3=gdopt.ademamix_beta3_scheduler(0.9, 0.999, N // 2),
                alpha=gdopt.ademamix_alpha_scheduler(2.0, N // 2),
            ),
            True,
            layout="ademamix",
            layout_kwargs=dict(learning_rate=0.01),
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle(
                        "optax",
                        optax_(
                            "ademamix",
                            learning_rate=0.01,
                            b1=f32(0.9),
                            b2=f32(0.999),
                            b3=f32(0.9999),
                        ),
                    ),
                ),
                Case(
                    "schedulers",
                    dict(
                        learning_rate=0.02,
                        b1=0.8,
                        b2=0.99,
                        b3=gdopt.ademamix_beta3_scheduler(0.8, 0.999, 50),
                        alpha=gdopt.ademamix_alpha_scheduler(4.0, 30),
                        eps_root=1e-6,
                        weight_decay=0.1,
                        mask={"dense": True, "layers": False, "scale": False},
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "ademamix",
                            learning_rate=0.02,
                            b1=f32(0.8),
                            b2=f32(0.99),
                            b3=_paper_beta3_warmup(0.8, 0.999, 50),
                            alpha=_paper_alpha_warmup(4.0, 30),
                            eps_root=f32(1e-6),
                            weight_decay=f32(0.1),
                            mask={"dense": True, "layers": False, "scale": False},
                        ),
                    ),
                ),
            ),
            more_bad=(("b3", 1.2), ("alpha", -1.0)),
        ),
        # ------------------------------------------------------------------ RMS / AdaGrad family
        _spec(
            "rmsprop",
            dict(learning_rate=cos(1e-2)),
            True,
            layout="rmsprop",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=1e-2),
                    Oracle("optax", optax_("rmsprop", learning_rate=1e-2)),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=1e-2, decay=0.8, eps=1e-4, initial_scale=0.1),
                    Oracle(
                        "optax",
                        optax_(
                            "rmsprop", learning_rate=1e-2, decay=0.8, eps=1e-4, initial_scale=0.1
                        ),
                    ),
                ),
                Case(
                    "centered",
                    dict(learning_rate=1e-2, centered=True),
                    Oracle("optax", optax_("rmsprop", learning_rate=1e-2, centered=True)),
                ),
                Case(
                    "centered-nesterov",
                    dict(learning_rate=1e-2, centered=True, momentum=0.9, nesterov=True),
                    Oracle(
                        "optax",
                        optax_(
                            "rmsprop",
                            learning_rate=1e-2,
                            centered=True,
                            momentum=0.9,
                            nesterov=True,
                        ),
                    ),
                ),
                Case(
                    "eps-outside-bias-momentum",
                    dict(learning_rate=1e-2, eps_in_sqrt=False, bias_correction=True, momentum=0.5),
                    Oracle(
                        "optax",
                        optax_(
                            "rmsprop",
                            learning_rate=1e-2,
                            eps_in_sqrt=False,
                            bias_correction=True,
                            momentum=0.5,
                        ),
                    ),
                ),
                Case(
                    "torch",
                    dict(learning_rate=1e-2, decay=0.99, eps=1e-6, eps_in_sqrt=False),
                    Oracle(
                        "torch",
                        torch_("torch.optim.RMSprop", lr=1e-2, alpha=0.99, eps=1e-6),
                        steps=40,
                    ),
                ),
            ),
            bad=(("learning_rate", -0.1), ("decay", 1.5), ("momentum", 1.0), ("eps", -1e-8)),
        ),
        _spec(
            "adagrad",
            dict(learning_rate=0.5),
            True,
            layout="adagrad",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.1),
                    Oracle("optax", optax_("adagrad", learning_rate=0.1)),
                ),
                Case(
                    "nondefault",
                    dict(learning_rate=0.3, initial_accumulator_value=0.5, eps=1e-4),
                    Oracle(
                        "optax",
                        optax_(
                            "adagrad", learning_rate=0.3, initial_accumulator_value=0.5, eps=1e-4
                        ),
                    ),
                ),
                Case(
                    "torch",
                    dict(learning_rate=0.3, initial_accumulator_value=0.5, eps=0.0),
                    Oracle(
                        "torch",
                        torch_(
                            "torch.optim.Adagrad", lr=0.3, initial_accumulator_value=0.5, eps=0.0
                        ),
                        steps=40,
                    ),
                ),
            ),
            bad=(("learning_rate", -0.1), ("eps", -1.0), ("initial_accumulator_value", -1.0)),
        ),
        # AdaDelta's own step (α = 1) is unstable on Rosenbrock (optax's too); a decaying α is not.
        # optax 0.2.8's adadelta default ascends (learning_rate=None): it is given 1.0.
        _spec(
            "adadelta",
            dict(learning_rate=cos(0.3)),
            True,
            layout="adadelta",
            layout_kwargs=dict(learning_rate=1.0),
            cases=(
                Case("default", dict(), Oracle("optax", optax_("adadelta", learning_rate=1.0))),
                Case(
                    "nondefault",
                    dict(
                        learning_rate=0.5,
                        rho=0.8,
                        eps=1e-4,
                        weight_decay=0.01,
                        weight_decay_mask=MASK,
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "adadelta",
                            learning_rate=0.5,
                            rho=0.8,
                            eps=1e-4,
                            weight_decay=0.01,
                            weight_decay_mask=MASK,
                        ),
                    ),
                ),
                Case(
                    "torch",
                    dict(rho=0.8, eps=1e-4),
                    Oracle(
                        "torch", torch_("torch.optim.Adadelta", lr=1.0, rho=0.8, eps=1e-4), steps=40
                    ),
                ),
            ),
            bad=(("learning_rate", -0.1), ("rho", 1.0), ("eps", -1e-8), ("weight_decay", -0.1)),
        ),
        # optax 0.2.8 applies at step t the step computed at t-1; torch and the paper do not
        _spec(
            "rprop",
            dict(learning_rate=1e-3),
            True,
            layout="rprop",
            cases=(
                Case(
                    "torch",
                    dict(
                        learning_rate=0.01,
                        eta_minus=0.3,
                        eta_plus=1.5,
                        min_step_size=1e-3,
                        max_step_size=0.05,
                    ),
                    Oracle(
                        "torch",
                        torch_(
                            "torch.optim.Rprop", lr=0.01, etas=(0.3, 1.5), step_sizes=(1e-3, 0.05)
                        ),
                        steps=40,
                    ),
                ),
            ),
            bad=(
                ("learning_rate", -0.1),
                ("eta_minus", 0.0),
                ("eta_plus", 0.5),
                ("min_step_size", -1.0),
                ("max_step_size", 1e-9),  # below min_step_size
            ),
        ),
        # ------------------------------------------------------------------ layer-wise, memory-lean
        _spec(
            "lamb",
            dict(learning_rate=cos(0.01)),
            False,
            layout="lamb",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("lamb", learning_rate=0.01)),
                ),
                Case(
                    "mask",
                    dict(
                        learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-4, weight_decay=0.01, mask=MASK
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "lamb",
                            learning_rate=0.02,
                            b1=0.8,
                            b2=0.99,
                            eps=1e-4,
                            weight_decay=0.01,
                            mask=MASK,
                        ),
                    ),
                ),
            ),
        ),
        _spec(
            "lars",
            dict(learning_rate=cos(1.0), trust_coefficient=0.01),
            False,
            layout="lars",
            layout_kwargs=dict(learning_rate=0.1),
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.1),
                    Oracle("optax", optax_("lars", learning_rate=0.1)),
                ),
                Case(
                    "nondefault",
                    dict(
                        learning_rate=0.5,
                        weight_decay=0.01,
                        weight_decay_mask=MASK,
                        trust_coefficient=0.01,
                        eps=1e-6,
                        trust_ratio_mask=MASK,
                        momentum=0.5,
                        nesterov=True,
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "lars",
                            learning_rate=0.5,
                            weight_decay=0.01,
                            weight_decay_mask=MASK,
                            trust_coefficient=0.01,
                            eps=1e-6,
                            trust_ratio_mask=MASK,
                            momentum=0.5,
                            nesterov=True,
                        ),
                    ),
                ),
            ),
            bad=(
                ("learning_rate", -0.1),
                ("momentum", 1.0),
                ("eps", -1e-8),
                ("weight_decay", -0.1),
                ("trust_coefficient", -1.0),
            ),
        ),
        _spec(
            "novograd",
            dict(learning_rate=cos(0.01)),
            False,
            layout="novograd",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("novograd", learning_rate=0.01)),
                ),
                Case(
                    "nondefault",
                    dict(
                        learning_rate=0.02,
                        b1=0.8,
                        b2=0.5,
                        eps=1e-4,
                        eps_root=1e-6,
                        weight_decay=0.01,
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "novograd",
                            learning_rate=0.02,
                            b1=0.8,
                            b2=0.5,
                            eps=1e-4,
                            eps_root=1e-6,
                            weight_decay=0.01,
                        ),
                    ),
                ),
            ),
        ),
        _spec(
            "fromage",
            dict(learning_rate=cos(0.01)),
            False,
            layout="fromage",
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle("optax", optax_("fromage", learning_rate=0.01)),
                ),
                Case(
                    "min-norm",
                    dict(learning_rate=0.05, min_norm=1.0),
                    Oracle("optax", optax_("fromage", learning_rate=0.05, min_norm=1.0)),
                ),
                Case(
                    "schedule",
                    dict(learning_rate=_decaying),
                    Oracle("optax", optax_("fromage", learning_rate=_decaying)),
                ),
            ),
            bad=(("learning_rate", -0.1), ("min_norm", -1.0)),
        ),
        _spec(
            "sm3",
            dict(learning_rate=cos(0.2)),
            False,
            bad=(("learning_rate", -0.1), ("momentum", 1.0)),
        ),
        _spec(
            "adafactor",
            dict(learning_rate=cos(0.02), multiply_by_parameter_scale=False),
            False,
            layout="adafactor",
            layout_kwargs=dict(learning_rate=0.01),
            cases=(
                Case(
                    "default",
                    dict(),
                    Oracle("optax", optax_("adafactor", learning_rate=_paper_relative_step)),
                ),
                Case(
                    "nondefault",
                    dict(
                        learning_rate=0.05,
                        min_dim_size_to_factor=2,
                        decay_rate=0.7,
                        clipping_threshold=0.5,
                        momentum=0.9,
                        weight_decay_rate=0.01,
                        weight_decay_mask=MASK,
                        eps=1e-20,
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "adafactor",
                            learning_rate=0.05,
                            min_dim_size_to_factor=2,
                            decay_rate=0.7,
                            clipping_threshold=0.5,
                            momentum=0.9,
                            weight_decay_rate=0.01,
                            weight_decay_mask=MASK,
                            eps=1e-20,
                        ),
                    ),
                ),
                Case(
                    "unfactored-schedule",
                    dict(
                        learning_rate=_decaying,
                        min_dim_size_to_factor=3,
                        multiply_by_parameter_scale=False,
                        clipping_threshold=None,
                        factored=False,
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "adafactor",
                            learning_rate=_decaying,
                            min_dim_size_to_factor=3,
                            multiply_by_parameter_scale=False,
                            clipping_threshold=None,
                            factored=False,
                        ),
                    ),
                ),
            ),
            bad=(
                ("learning_rate", -0.1),
                ("momentum", 1.0),
                ("eps", -1e-8),
                ("decay_rate", -0.8),
                ("clipping_threshold", 0.0),
                ("weight_decay_rate", -0.1),
            ),
        ),
        # Muon's parameters are a 2 × 1 matrix, so the Newton-Schulz branch is exercised.
        _spec(
            "muon",
            dict(learning_rate=cos(0.01)),
            False,
            layout="muon",
            layout_kwargs=dict(learning_rate=0.01),
            shape=(2, 1),
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle(
                        "optax",
                        optax_(
                            "muon",
                            learning_rate=0.01,
                            beta=f32(0.95),
                            adam_b1=f32(0.9),
                            adam_b2=f32(0.999),
                        ),
                    ),
                ),
                Case(
                    "nondefault",
                    dict(
                        learning_rate=0.02,
                        ns_steps=4,
                        beta=0.9,
                        weight_decay=0.1,
                        weight_decay_mask={"dense": True, "layers": False, "scale": False},
                        nesterov=False,
                        adaptive=True,
                        preconditioning="spectral",
                        adam_b1=0.8,
                        adam_b2=0.99,
                        adam_eps_root=1e-8,
                        adam_weight_decay=0.01,
                        adam_learning_rate=0.003,
                        consistent_rms=0.2,
                        muon_weight_dimension_numbers=_DIMS_G,
                    ),
                    Oracle("optax", _optax_muon_nondefault),
                ),
            ),
            bad=(
                ("learning_rate", -0.1),
                ("beta", 1.5),
                ("ns_steps", 0),
                ("ns_coeffs", (1.0, 2.0)),
                ("ns_coeffs", "nope"),
                ("preconditioning", "qr"),
                ("adam_b2", 1.0),
            ),
        ),
        # ------------------------------------------------------------------ schedule-free
        # schedule-free averaging converges like 1/t; β = 0.5 keeps the averaged point close
        _spec(
            "schedule_free_sgd",
            dict(learning_rate=2e-3, b1=0.5),
            True,
            layout="schedule_free_sgd",
            layout_kwargs=dict(learning_rate=0.1),
            difference_updates=True,
            eval_fn=gdopt.schedule_free_eval_params,
            cases=(
                Case("default", dict(), Oracle("optax", optax_("schedule_free_sgd", b1=f32(0.9)))),
                # optax.contrib lags the warm-up by one step; the authors' package does not
                Case(
                    "nondefault",
                    dict(learning_rate=0.3, b1=0.8, weight_decay=0.01, weight_lr_power=1.0),
                    Oracle(
                        "optax",
                        optax_(
                            "schedule_free_sgd",
                            learning_rate=f32(0.3),
                            b1=f32(0.8),
                            weight_decay=f32(0.01),
                            weight_lr_power=1.0,
                        ),
                    ),
                ),
                Case(
                    "schedulefree-warmup",
                    dict(learning_rate=0.3, warmup_steps=10, b1=0.8, weight_decay=0.01),
                    Oracle(
                        "schedulefree",
                        torch_(
                            "schedulefree.SGDScheduleFree",
                            lr=0.3,
                            momentum=0.8,
                            weight_decay=0.01,
                            warmup_steps=10,
                            r=0.0,
                            weight_lr_power=2.0,
                        ),
                        steps=40,
                    ),
                ),
            ),
            bad=(("learning_rate", -1.0), ("b1", 1.0), ("warmup_steps", 0), ("weight_decay", -1.0)),
        ),
        _spec(
            "schedule_free_adamw",
            dict(learning_rate=0.01, warmup_steps=100),
            True,
            layout="schedule_free_adamw",
            layout_kwargs=dict(learning_rate=0.01),
            difference_updates=True,
            eval_fn=gdopt.schedule_free_eval_params,
            cases=(
                Case(
                    "default",
                    dict(),
                    Oracle(
                        "optax",
                        optax_(
                            "schedule_free_adamw",
                            learning_rate=f32(0.0025),
                            b1=f32(0.9),
                            b2=f32(0.999),
                        ),
                    ),
                ),
                Case(
                    "nondefault",
                    dict(
                        learning_rate=0.01,
                        b1=0.95,
                        b2=0.99,
                        eps=1e-6,
                        weight_decay=0.05,
                        weight_lr_power=1.5,
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "schedule_free_adamw",
                            learning_rate=f32(0.01),
                            b1=f32(0.95),
                            b2=f32(0.99),
                            eps=f32(1e-6),
                            weight_decay=f32(0.05),
                            weight_lr_power=1.5,
                        ),
                    ),
                ),
                Case(
                    "schedulefree-warmup",
                    dict(learning_rate=0.01, warmup_steps=20, b1=0.9, b2=0.99, weight_decay=0.05),
                    Oracle(
                        "schedulefree",
                        torch_(
                            "schedulefree.AdamWScheduleFree",
                            lr=0.01,
                            betas=(0.9, 0.99),
                            weight_decay=0.05,
                            warmup_steps=20,
                            r=0.0,
                            weight_lr_power=2.0,
                        ),
                        steps=40,
                    ),
                ),
            ),
            bad=(("learning_rate", -1.0), ("b1", 1.0), ("b2", 1.0), ("weight_decay", -1.0)),
        ),
        # ------------------------------------------------------------------ learning-rate-free
        _spec(
            "prodigy",
            dict(learning_rate=cos(1.0)),
            True,
            layout="prodigy",
            layout_kwargs=dict(),
            cases=(
                Case(
                    "default",
                    dict(),
                    Oracle("optax", optax_("prodigy", betas=(f32(0.9), f32(0.999)))),
                ),
                Case(
                    "nondefault",
                    dict(
                        learning_rate=0.5,
                        betas=(0.8, 0.99),
                        beta3=0.95,
                        eps=1e-6,
                        estim_lr0=1e-4,
                        estim_lr_coef=2.0,
                        weight_decay=0.01,
                        safeguard_warmup=True,
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "prodigy",
                            learning_rate=0.5,
                            betas=(f32(0.8), f32(0.99)),
                            beta3=f32(0.95),
                            eps=f32(1e-6),
                            estim_lr0=f32(1e-4),
                            estim_lr_coef=2.0,
                            weight_decay=f32(0.01),
                            safeguard_warmup=True,
                        ),
                    ),
                ),
                Case(
                    "prodigyopt",
                    dict(eps=1e-2),
                    Oracle(
                        "prodigyopt",
                        torch_(
                            "prodigyopt.Prodigy",
                            lr=1.0,
                            eps=1e-2,
                            weight_decay=0.0,
                            decouple=True,
                            use_bias_correction=True,
                        ),
                        rtol=1e-5,
                        atol=1e-6,
                        steps=30,
                    ),
                ),
            ),
            bad=(
                ("betas", (0.9,)),
                ("betas", (0.9, 1.5)),
                ("estim_lr0", 0.0),
                ("weight_decay", -1.0),
            ),
        ),
        _spec(
            "dadapt_adamw",
            dict(learning_rate=cos(1.0)),
            True,
            layout="dadapt_adamw",
            layout_kwargs=dict(),
            cases=(
                Case(
                    "default",
                    dict(),
                    Oracle("optax", optax_("dadapt_adamw", betas=(f32(0.9), f32(0.999)))),
                ),
                Case(
                    "nondefault",
                    dict(
                        learning_rate=0.5,
                        betas=(0.8, 0.99),
                        eps=1e-6,
                        estim_lr0=1e-4,
                        weight_decay=0.01,
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "dadapt_adamw",
                            learning_rate=0.5,
                            betas=(f32(0.8), f32(0.99)),
                            eps=f32(1e-6),
                            estim_lr0=f32(1e-4),
                            weight_decay=f32(0.01),
                        ),
                    ),
                ),
                Case(
                    "dadaptation",
                    dict(
                        learning_rate=0.5,
                        betas=(0.8, 0.99),
                        eps=1e-6,
                        estim_lr0=1e-4,
                        weight_decay=0.01,
                    ),
                    Oracle(
                        "dadaptation",
                        torch_(
                            "dadaptation.DAdaptAdam",
                            lr=0.5,
                            betas=(0.8, 0.99),
                            eps=1e-6,
                            d0=1e-4,
                            weight_decay=0.01,
                            decouple=True,
                            use_bias_correction=True,
                        ),
                        rtol=5e-6,
                        atol=1e-6,
                        steps=30,
                    ),
                ),
            ),
            bad=(("weight_decay", -1.0), ("betas", (0.9, 1.5))),
        ),
        # ------------------------------------------------------------------ second order
        _spec(
            "sophia",
            dict(learning_rate=cos(0.01), weight_decay=0.0),
            False,
            layout="sophia",
            extras=("obj_fn",),
            cases=(
                Case(
                    "default",
                    dict(learning_rate=0.01),
                    Oracle(
                        "optax",
                        optax_(
                            "sophia",
                            learning_rate=0.01,
                            b1=f32(0.965),
                            b2=f32(0.99),
                            weight_decay=f32(1e-4),
                        ),
                    ),
                ),
                Case(
                    "nondefault",
                    dict(
                        learning_rate=0.02,
                        b1=0.9,
                        b2=0.95,
                        eps=1e-6,
                        weight_decay=0.01,
                        gamma=0.05,
                        clip_threshold=0.5,
                        update_interval=3,
                    ),
                    Oracle(
                        "optax",
                        optax_(
                            "sophia",
                            learning_rate=0.02,
                            b1=f32(0.9),
                            b2=f32(0.95),
                            eps=f32(1e-6),
                            weight_decay=f32(0.01),
                            gamma=f32(0.05),
                            clip_threshold=0.5,
                            update_interval=3,
                        ),
                    ),
                ),
            ),
            bad=(
                ("learning_rate", -0.1),
                ("b1", 1.0),
                ("b2", -0.1),
                ("eps", -1e-8),
                ("weight_decay", -0.1),
                ("gamma", 0.0),
                ("clip_threshold", -1.0),
                ("update_interval", 0),
            ),
        ),
        _spec(
            "lbfgs",
            dict(),
            True,
            layout="lbfgs",
            layout_kwargs=dict(),
            extras=("value", "grad", "value_fn"),
            steps=100,
            bad=(("memory_size", 0), ("learning_rate", -1.0)),
        ),
    ]
}

NAMES = sorted(REGISTRY)
CASES = [(name, case) for name in NAMES for case in REGISTRY[name].cases]
