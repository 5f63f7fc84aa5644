"""Public optax, Flax and Equinox example programs, run with optax and with gdopt.

Each program in ``tests/ported/`` is a public example (its header names the repository, the
path, the licence and what was changed to make it small and self-contained) that imports
optax. It runs twice: as written, and with its optax imports changed to gdopt's
(:func:`swap_imports`: ``import optax`` becomes ``import gdopt as optax``, ``from optax...``
becomes ``from gdopt...``), nothing else. Each run executes the source in a fresh module
namespace in this process (imports of JAX, Flax and Equinox are paid once) and the values
the program collects in its ``RESULTS`` dict are compared: bit for bit, except the entries a
program's row lists with a tolerance (its header says why).

Both runs are under ``tests.helpers.oracle()``, JAX's default (standard) dtype promotion: a
user's program runs under the default, and the examples' own code (``x * 0.5`` on an int
array, ...) relies on it; gdopt's own behaviour under strict promotion is the rest of the
suite's business.

A program that fails with gdopt because a name or a semantic is missing is a finding: its row
says what fails, and the test is ``xfail(strict=True)`` on that exception, so it turns into a
failure (to be promoted to a passing row) the day gdopt runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import pathlib
import re
import sys
import types
from typing import Any

import jax
import numpy as np
import pytest

import gdopt
from tests.helpers import oracle

pytest.importorskip("optax")
pytest.importorskip("flax")
pytest.importorskip("equinox")

PORTED = pathlib.Path(__file__).parent / "ported"


@dataclasses.dataclass(frozen=True)
class Program:
    """One program of the corpus: its file's stem, the tolerances of the results that are not
    bit-identical (``key -> (rtol, atol)``; every other entry must be equal bit for bit) and,
    for a program gdopt cannot run yet, the exception it raises (its type and a regular
    expression its message matches) and why."""

    name: str
    tolerance: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    fails: tuple[type[BaseException], str, str] | None = None


# The tolerances: gdopt's named optimizers (adam, adamw, ...) keep their hyperparameters in
# their state as float32 (optax.inject_hyperparams' layout), so ``1 - b2`` comes from float32
# ``b2`` and the first update differs from optax's by a relative ~6e-6 (docs/migration.md);
# a short training carries it.
_ADAM = (1e-4, 1e-5)

PROGRAMS = [
    Program("optax_quick_start_linear", tolerance={"adam_params": (1e-5, 1e-6)}),
    Program(
        "optax_quick_start_mlp",
        tolerance={
            "adam_loss": _ADAM,
            "adam_losses": _ADAM,
            "adam_params": _ADAM,
            "clip_adamw_loss": (1e-3, 1e-6),
            "clip_adamw_losses_warmup": _ADAM,
        },
    ),
    Program("optax_quick_start_inject_hyperparams"),
    Program("optax_quick_start_inject_clip_schedule"),
    Program("optax_gradient_accumulation"),
    Program(
        "optax_lookahead_mnist",
        fails=(
            AttributeError,
            r"module 'gdopt' has no attribute 'LookaheadParams'",
            "gdopt has no LookaheadParams: its lookahead keeps the slow weights in its state "
            "and takes plain parameters (a deliberate difference, docs/migration.md), so "
            "'optax.LookaheadParams.init_synced(params)' raises AttributeError",
        ),
    ),
    Program(
        "optax_reduce_on_plateau",
        tolerance={
            "train_losses": _ADAM,
            "test_losses": _ADAM,
            "train_accuracy": (0.0, 1.01 / 1408),  # one example of the 11 batches of 128
            "test_accuracy": (0.0, 1.01 / 256),  # one example of the 2 test batches
        },
    ),
    Program("optax_sam", tolerance={"adam_params": _ADAM, "adam_values": _ADAM}),
    Program(
        "optax_ademamix_rosenbrock",
        tolerance={
            k: _ADAM
            for k in (
                "adam_final",
                "adam_trajectory_start",
                "ademamix_final",
                "ademamix_trajectory_start",
            )
        },
    ),
    Program("flax_linen_mnist"),
    Program("flax_nnx_mnist"),
    Program("equinox_mnist", tolerance={"train_losses": _ADAM, "test_metrics": _ADAM}),
    Program("equinox_frozen_layer"),
    Program("optax_flax_example", tolerance={"loss_history": (1e-5, 0.0), "params": (1e-5, 1e-7)}),
    Program(
        "optax_meta_learning", tolerance={"learning_rates": (1e-5, 0.0), "thetas": (1e-5, 0.0)}
    ),
    Program(
        "optax_freezing_parameters",
        tolerance={
            f"{cell}_{what}": (1e-5, 5e-4)
            for cell in ("freeze", "selective", "swap", "masked", "partition")
            for what in ("loss", "param0", "param1")
            if what != "param1" or cell == "swap"  # the frozen ones stay bit-identical
        },
    ),
    Program(
        "optax_lbfgs",
        tolerance={"scale_by_lbfgs_w": (1e-5, 0.0)},
    ),
]

_IMPORT = re.compile(r"^(\s*)import optax\b(?!\.)", re.M)
_FROM = re.compile(r"^(\s*)from optax\b", re.M)
_ANY = re.compile(r"^\s*(import|from)\s+optax\b\S*", re.M)


def swap_imports(source: str) -> str:
    """The program with gdopt in place of optax: ``import optax`` becomes ``import gdopt as
    optax`` and ``from optax[.x] import y`` becomes ``from gdopt[.x] import y``; a program with
    any other form of optax import (``import optax.tree``, which rebinds ``optax`` to the
    real package) is refused.

    >>> swap_imports("import optax  # note\\nfrom optax import contrib\\n")
    'import gdopt as optax  # note\\nfrom gdopt import contrib\\n'
    """
    swapped = _FROM.sub(r"\1from gdopt", _IMPORT.sub(r"\1import gdopt as optax", source))
    left = [m.group(0).strip() for m in _ANY.finditer(swapped)]
    if left:
        raise ValueError(f"an optax import the swap does not handle is left: {left}")
    return swapped


def run_program(name: str, use_gdopt: bool) -> tuple[dict, str]:
    """Execute ``tests/ported/<name>.py`` (its imports swapped when ``use_gdopt``) in a fresh
    module namespace under standard dtype promotion; its namespace and what it printed."""
    path = PORTED / f"{name}.py"
    source = path.read_text()
    if use_gdopt:
        source = swap_imports(source)
    module = types.ModuleType(f"ported_{name}")
    module.__file__ = str(path)
    out = io.StringIO()
    # registered while it runs: dataclasses (Flax Linen modules) look their module up
    sys.modules[module.__name__] = module
    try:
        with oracle(), contextlib.redirect_stdout(out):
            exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102
    finally:
        del sys.modules[module.__name__]
    return module.__dict__, out.getvalue()


def _uses_optax(value: Any) -> bool:
    name = getattr(value, "__module__", None) if not isinstance(value, types.ModuleType) else None
    name = name or getattr(value, "__name__", "")
    return isinstance(name, str) and (name == "optax" or name.startswith("optax."))


def _compare(name: str, ours: dict, ref: dict, tolerance: dict) -> None:
    assert set(ours) == set(ref), f"{name}: RESULTS keys differ: {set(ours) ^ set(ref)}"
    assert set(tolerance) <= set(ref), f"{name}: tolerances for absent keys"
    for key in ref:
        a_leaves, a_def = jax.tree_util.tree_flatten_with_path(ours[key])
        b_leaves, b_def = jax.tree_util.tree_flatten_with_path(ref[key])
        assert a_def == b_def, f"{name}: RESULTS[{key!r}] structures differ"
        for (path, a), (_, b) in zip(a_leaves, b_leaves, strict=True):
            where = f"{name}: RESULTS[{key!r}]{jax.tree_util.keystr(path)}"
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
            if key in tolerance:
                rtol, atol = tolerance[key]
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=where)
            else:
                np.testing.assert_array_equal(a, b, err_msg=f"{where} (bit-identical)")


def _param(program: Program):
    marks = []
    if program.fails is not None:
        marks.append(
            pytest.mark.xfail(raises=program.fails[0], strict=True, reason=program.fails[2])
        )
    return pytest.param(program, id=program.name, marks=marks)


@pytest.mark.parametrize("program", [_param(p) for p in PROGRAMS])
def test_ported_program_gives_optax_results(program: Program):
    try:
        ours, _ = run_program(program.name, use_gdopt=True)  # first: a known failure is quick
    except Exception as error:
        if program.fails is not None and not re.search(program.fails[1], str(error)):
            # a failure other than the known one is not the expected failure
            raise AssertionError(f"{program.name}: unexpected {error!r}") from error
        raise
    assert ours["optax"] is gdopt
    ref, _ = run_program(program.name, use_gdopt=False)
    assert ref["optax"].__name__ == "optax"
    leaked = sorted(k for k, v in ours.items() if not k.startswith("__") and _uses_optax(v))
    assert not leaked, f"{program.name}: names bound to optax in the gdopt run: {leaked}"
    _compare(program.name, ours["RESULTS"], ref["RESULTS"], program.tolerance)


def test_every_program_is_listed():
    on_disk = {p.stem for p in PORTED.glob("*.py")} - {"conftest"}
    assert on_disk == {p.name for p in PROGRAMS}


def test_swap_refuses_an_import_it_cannot_redirect():
    with pytest.raises(ValueError, match="import optax.tree"):
        swap_imports("import optax\nimport optax.tree\n")
