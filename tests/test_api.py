"""gdopt's public API as a whole.

* ``import gdopt`` never imports optax, and no module of the package imports it.
* Every gdopt function that optax (or ``optax.contrib``, ``optax.projections``) also has takes
  the same argument names, in the same positions, with the same defaults (gdopt may add
  arguments that have a default after optax's), except the deliberate differences listed in
  ``ALLOWED`` with their reasons. State NamedTuples keep optax's field names.
* ``mask`` is the argument name wherever a mask exists (optax's own spellings kept).
* Every public callable has a docstring; every named optimizer's docstring has an update
  rule, a reference and an example; ``docs/`` lists every optimizer and building block.
* Errors point at the leaf or the argument; keyword extras nobody takes are ignored.

optax is imported here only as the reference for names and defaults. (``vmap`` over the
learning rate and ``get_hyperparams`` of every optimizer: ``tests/test_optimizers.py``.)
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import pathlib
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import optax.projections
import pytest

import gdopt
from gdopt.problems import ill_conditioned_quadratic
from tests.helpers import oracle
from tests.registry import NAMES, REGISTRY


def parabola(x: jax.Array) -> jax.Array:
    """``sum((x - 1)²)``, minimum 0 at ``(1, ..., 1)``."""
    return 2.0 * ill_conditioned_quadratic(jnp.ravel(x) - 1.0, 1.0)


# ----------------------------------------------------------------------------- isolation


def test_the_suite_runs_under_strict_dtype_promotion():
    # tests/conftest.py sets it, so an implicit promotion inside gdopt fails the suite
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    with pytest.raises(jax.dtypes.TypePromotionError, match="strict"):
        jnp.ones(2, jnp.bfloat16) + jnp.ones(2, jnp.float32)


def test_import_gdopt_does_not_import_optax():
    code = (
        "import sys, gdopt; "
        "bad = [m for m in sys.modules if m == 'optax' or m.startswith('optax.')]; "
        "assert not bad, bad; print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "clean" in out.stdout


def test_no_optax_in_package_source():
    root = pathlib.Path(gdopt.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] == "optax"]
    assert offenders == []


# ----------------------------------------------------------------------------- signatures

EMPTY = inspect.Parameter.empty
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)

_SAM_DIFFERS = (
    "gdopt.sam is Foret et al.'s rule as a wrapper (rho, adaptive for ASAM): the second "
    "gradient comes from the value_fn extra of fit/make_step; optax.contrib.sam's API (steps "
    "of an adversarial optimizer alternating with the real ones) is gdopt.contrib.sam"
)

# (gdopt name, argument) -> why gdopt deliberately differs from optax there.
ALLOWED: dict[tuple[str, str], str] = {
    ("lbfgs", "linesearch"): (
        "the default is gdopt's own scale_by_zoom_linesearch(max_linesearch_steps=20, "
        "initial_guess_strategy='one'), the configuration of optax's default object"
    ),
    ("sophia", "hessian_diagonal_fn"): (
        "None means hutchinson_estimator_diag_hessian() with seed 0, optax's default "
        "(documented in the docstring)"
    ),
    ("scale_by_factored_rms", "decay_rate_fn"): (
        "None means the paper's β_t = 1 - t^(-decay_rate), what optax's default function "
        "computes (documented)"
    ),
    ("MultiSteps", "accumulator_dtype"): (
        "None accumulates in each parameter's dtype promoted to at least float32 (documented "
        "in accumulate); optax's float32 would demote float64 parameters"
    ),
    ("masked", "mask_compatible_extra_args"): (
        "gdopt passes every keyword extra to the inner transformation unchanged; optax's "
        "option to mask extras shaped like the params is not implemented"
    ),
    ("partition", "mask_compatible_extra_args"): (
        "gdopt passes every keyword extra to every group unchanged (see masked)"
    ),
    ("multi_transform", "mask_compatible_extra_args"): (
        "gdopt passes every keyword extra to every group unchanged (see masked)"
    ),
    ("microbatch", "accumulator"): (
        "the default is gdopt.batching.AccumulationType.SUM, gdopt's enum of optax's names "
        "(optax's members are accepted too, by name)"
    ),
    ("sam", "adv_optimizer"): _SAM_DIFFERS,
    ("sam", "sync_period"): _SAM_DIFFERS,
    ("sam", "reset_state"): _SAM_DIFFERS,
    ("sam", "opaque_mode"): _SAM_DIFFERS,
    ("sam", "batch_axis_name"): _SAM_DIFFERS,
}

# State NamedTuple -> optax fields gdopt deliberately does not keep, and why.
ALLOWED_STATE_FIELDS: dict[tuple[str, str], str] = {
    ("MuonState", "ns_coeffs"): (
        "the Newton-Schulz coefficients are a hyperparameter: muon keeps them in its "
        "InjectHyperparamsState, scale_by_muon takes them as a (static) argument"
    ),
}

OPTIMIZERS = NAMES


def _public_callables() -> dict[str, Any]:
    """Every public function and (non-NamedTuple) class of gdopt and gdopt.linesearch."""
    out = {}
    spaces = [(n, getattr(gdopt, n)) for n in dir(gdopt) if not n.startswith("_")]
    spaces += [(n, getattr(gdopt.linesearch, n)) for n in gdopt.linesearch.__all__]
    for name, obj in spaces:
        if isinstance(obj, types.ModuleType) or not callable(obj):
            continue
        if not getattr(obj, "__module__", "").startswith("gdopt"):
            continue  # typing aliases (Params, Schedule...)
        if inspect.isclass(obj) and (hasattr(obj, "_fields") or issubclass(obj, Exception)):
            continue
        if inspect.isclass(obj) and getattr(obj, "_is_protocol", False):
            continue
        out[name] = obj
    return out


PUBLIC = _public_callables()


def _optax_counterpart(name: str) -> tuple[Any, str, bool] | None:
    """optax's function of the same meaning: (object, where, drop its first argument)."""
    if name.startswith("project_"):
        ref = "projection_" + name[len("project_") :]
        obj = getattr(optax.projections, ref, None)
        return (obj, f"optax.projections.{ref}", False) if obj is not None else None
    if name.startswith("projection_"):
        # gdopt's projection_* are transforms; optax's are the functions of a tree
        obj = getattr(optax.projections, name, None)
        return (obj, f"optax.projections.{name}", True) if obj is not None else None
    for label, module in (("optax", optax), ("optax.contrib", optax.contrib)):
        obj = getattr(module, name, None)
        if obj is not None and callable(obj) and not isinstance(obj, types.ModuleType):
            if inspect.isclass(obj) and hasattr(obj, "_fields"):
                return None
            return obj, f"{label}.{name}", False
    return None


SHARED = sorted(n for n in PUBLIC if _optax_counterpart(n) is not None)


def _same_default(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if callable(a) and callable(b) and not inspect.isclass(a) and not inspect.isclass(b):
        if hasattr(a, "init") or hasattr(b, "init"):
            return False  # transformation objects: compared by the allow-list
        probes = [jnp.asarray(t, jnp.float32) for t in (1.0, 16.0, 81.0)]
        try:
            with oracle():  # optax's default functions are not held to strict promotion
                return all(np.allclose(a(t), b(t)) for t in probes)
        except Exception:
            return False
    try:
        return bool(np.all(np.asarray(a == b)))
    except Exception:
        return repr(a) == repr(b)


def _signature_differences(ours: Any, theirs: Any, drop_first: bool) -> list[tuple[str, str]]:
    """``(argument, message)`` for each way ``ours`` differs from ``theirs``."""
    mine = [p for p in inspect.signature(ours).parameters.values() if p.kind not in VARIADIC]
    ref = [p for p in inspect.signature(theirs).parameters.values() if p.kind not in VARIADIC]
    if drop_first:
        ref = ref[1:]
    by_name = {p.name: p for p in mine}
    shown = lambda d: "<required>" if d is EMPTY else repr(d)
    out = []
    for p in ref:
        q = by_name.get(p.name)
        if q is None:
            out.append((p.name, f"has no argument {p.name!r} (optax's default {shown(p.default)})"))
            continue
        if (p.default is EMPTY) != (q.default is EMPTY) or (
            p.default is not EMPTY and not _same_default(p.default, q.default)
        ):
            out.append(
                (
                    p.name,
                    f"default of {p.name!r}: gdopt {shown(q.default)}, optax {shown(p.default)}",
                )
            )
    positional = lambda ps: [p.name for p in ps if p.kind != inspect.Parameter.KEYWORD_ONLY]
    mine_pos, ref_pos = positional(mine), positional(ref)
    for i, name in enumerate(ref_pos):
        if i >= len(mine_pos) or mine_pos[i] != name:
            got = mine_pos[i] if i < len(mine_pos) else "nothing"
            out.append((name, f"positional argument {i} is {got!r} in gdopt, {name!r} in optax"))
            break
    ref_names = {p.name for p in ref}
    for q in mine:
        if q.name not in ref_names and q.default is EMPTY:
            out.append((q.name, f"extra argument {q.name!r} has no default (optax calls break)"))
    return out


def _differences(name: str) -> list[tuple[str, str]]:
    """How gdopt's ``name`` differs from its optax counterpart (classes: their ``__init__``)."""
    ref, _, drop_first = _optax_counterpart(name)
    ours = PUBLIC[name]
    if inspect.isclass(ours):
        diffs = _signature_differences(ours.__init__, ref.__init__, drop_first=False)
        return [d for d in diffs if d[0] != "self"]
    return _signature_differences(ours, ref, drop_first)


@pytest.mark.parametrize("name", SHARED)
def test_arguments_and_defaults_match_optax(name):
    where = _optax_counterpart(name)[1]
    unexplained = [msg for arg, msg in _differences(name) if (name, arg) not in ALLOWED]
    assert not unexplained, (
        f"gdopt.{name} differs from {where}: "
        + "; ".join(unexplained)
        + ". Match optax, or document the difference and add it to ALLOWED."
    )


def test_allow_list_is_not_stale():
    stale = [
        (name, arg)
        for name, arg in ALLOWED
        if name not in SHARED or arg not in {a for a, _ in _differences(name)}
    ]
    assert not stale, f"ALLOWED entries that no longer differ from optax: {stale}"


def test_shared_names_cover_the_optimizers():
    """The comparison above really sees the optimizers (a lookup bug would skip them)."""
    for name in ("adam", "adamw", "sgd", "lion", "muon", "prodigy", "sophia", "lbfgs"):
        assert name in SHARED, name
    assert len(SHARED) >= 100, len(SHARED)


def _shared_states() -> dict[str, tuple[type, type]]:
    """gdopt's NamedTuples (states, infos) that optax also has: name -> (gdopt's, optax's)."""
    out = {}
    for module in (gdopt, gdopt.linesearch):
        for name in dir(module):
            ours = getattr(module, name)
            ref = getattr(optax, name, None) or getattr(optax.contrib, name, None)
            if inspect.isclass(ours) and hasattr(ours, "_fields") and hasattr(ref, "_fields"):
                out[name] = (ours, ref)
    return out


SHARED_STATES = _shared_states()


def test_shared_states_are_found():
    for name in ("ScaleByAdamState", "TraceState", "ScaleByLBFGSState", "MultiStepsState"):
        assert name in SHARED_STATES, name


@pytest.mark.parametrize("name", sorted(SHARED_STATES))
def test_state_fields_keep_optax_names(name):
    ours, ref = SHARED_STATES[name]
    missing = [
        f for f in ref._fields if f not in ours._fields and (name, f) not in ALLOWED_STATE_FIELDS
    ]
    assert not missing, (
        f"gdopt.{name} lacks optax's field(s) {missing}: code that reads state.{missing[0]} "
        f"breaks (gdopt fields {ours._fields}, optax {ref._fields})."
    )


def test_state_allow_list_is_not_stale():
    stale = [
        (name, f)
        for name, f in ALLOWED_STATE_FIELDS
        if name not in SHARED_STATES or f in SHARED_STATES[name][0]._fields
    ]
    assert not stale, f"ALLOWED_STATE_FIELDS entries that no longer apply: {stale}"


# ----------------------------------------------------------------------------- masks


def test_mask_arguments_are_called_mask():
    wrong = []
    for name, obj in PUBLIC.items():
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        counterpart = _optax_counterpart(name)
        theirs = set()
        if counterpart is not None:
            ref = counterpart[0]
            theirs = set(
                inspect.signature(ref.__init__ if inspect.isclass(ref) else ref).parameters
            )
        for arg in params:
            if "mask" not in arg or arg == "mask":
                continue
            if arg in theirs:
                continue  # optax's own spelling (weight_decay_mask, freeze_mask...)
            wrong.append(f"{name}({arg})")
    assert not wrong, f"mask arguments not named 'mask' (nor optax's name): {wrong}"


def test_selective_transform_keeps_optax_freeze_mask():
    params = inspect.signature(gdopt.selective_transform).parameters
    assert "freeze_mask" in params
    assert params["freeze_mask"].kind is inspect.Parameter.KEYWORD_ONLY


# ----------------------------------------------------------------------------- docstrings


def _documented_modules() -> dict[str, types.ModuleType]:
    names = ["models", "losses", "data", "problems", "batching", "tree"]
    return {"gdopt.linesearch": gdopt.linesearch} | {f"gdopt.{m}": getattr(gdopt, m) for m in names}


def _own_doc(obj: Any) -> str:
    doc = obj.__doc__ or ""
    if inspect.isclass(obj) and hasattr(obj, "_fields") and doc.startswith(f"{obj.__name__}("):
        return ""  # the NamedTuple's generated docstring
    return doc.strip()


def test_every_public_callable_has_a_docstring():
    missing = []
    objs = {f"gdopt.{n}": getattr(gdopt, n) for n in dir(gdopt) if not n.startswith("_")}
    for mname, module in _documented_modules().items():
        objs |= {f"{mname}.{n}": getattr(module, n) for n in module.__all__}
    for qual, obj in sorted(objs.items()):
        if isinstance(obj, types.ModuleType) or not callable(obj):
            continue
        if not getattr(obj, "__module__", "").startswith("gdopt"):
            continue  # typing aliases
        if not _own_doc(obj):
            missing.append(qual)
    assert not missing, f"public callables without a docstring: {missing}"


_RULE = re.compile(r"(Update rule|::\n)")
_REFERENCE = re.compile(r"References?:[^>]*?((19|20)\d\d|arxiv\.org|https?://)")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_docstrings_have_rule_reference_and_example(name):
    doc = REGISTRY[name].factory.__doc__ or ""
    lacks = []
    if not _RULE.search(doc) or not re.search(r"[=←]", doc.split("Args:")[0]):
        lacks.append("an update rule (an 'Update rule' / '::' block with the formula)")
    if not _REFERENCE.search(doc):
        lacks.append("a 'References:' section with a paper (year or link)")
    if ">>>" not in doc:
        lacks.append("a '>>>' example")
    assert not lacks, f"gdopt.{name}'s docstring lacks {', '.join(lacks)}."


# ----------------------------------------------------------------------------- errors


def test_partition_label_structure_mismatch_names_the_key_path():
    params = {"w": jnp.zeros(2), "b": {"c": jnp.zeros(3)}}
    opt = gdopt.partition({"a": gdopt.sgd(0.1), "z": gdopt.adam(0.1)}, {"w": "a", "b": {"d": "z"}})
    with pytest.raises(ValueError, match=re.escape("['b']['d']")):
        opt.init(params)
    opt = gdopt.partition({"a": gdopt.sgd(0.1)}, {"w": "a", "b": {"c": "q"}})
    with pytest.raises(ValueError, match=re.escape("['b']['c']") + ".*'q'"):
        opt.init(params)


def test_missing_polyak_value_names_the_argument():
    opt = gdopt.polyak_sgd()
    x = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"value=loss"):
        opt.update(x, opt.init(x), x)


def test_missing_lbfgs_value_fn_names_the_argument():
    opt = gdopt.lbfgs()
    x = jnp.zeros(2)
    step = lambda x, s: opt.update(x, s, x, value=jnp.asarray(1.0), grad=x)
    with pytest.raises(ValueError, match=r"'value_fn'.*value_fn=loss_fn"):
        jax.eval_shape(step, x, opt.init(x))  # raised while tracing: nothing to compile


def test_missing_sophia_objective_names_the_argument():
    opt = gdopt.sophia(0.1)
    x = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"obj_fn"):
        jax.eval_shape(lambda x, s: opt.update(x, s, x), x, opt.init(x))


_PARAMS = {"a": jnp.zeros((2, 2)), "b": {"c": jnp.zeros(3)}}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_grads_params_mismatch_names_the_key_path(name):
    opt = REGISTRY[name].make()
    state = opt.init(_PARAMS)
    with pytest.raises(ValueError, match=re.escape("['b']['c']")):
        opt.update({"a": jnp.zeros((2, 2))}, state, _PARAMS)
    with pytest.raises(ValueError, match=re.escape("['b']['c']") + ".*shape"):
        opt.update({"a": jnp.zeros((2, 2)), "b": {"c": jnp.zeros(4)}}, state, _PARAMS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_unknown_extras_are_ignored(name):
    """``update`` accepts (and ignores) keyword extras it does not use."""
    spec = REGISTRY[name]
    opt = spec.make()
    x = jnp.zeros(spec.shape)

    def step(x, state):
        value, grad = jax.value_and_grad(parabola)(x)
        given = {"value": value, "grad": grad, "value_fn": parabola, "obj_fn": parabola}
        kw = {k: given[k] for k in spec.extras}
        return opt.update(grad, state, x, **kw, some_unknown_extra=jnp.ones(3), batch=None)

    jax.eval_shape(step, x, opt.init(x))


# The optimizers whose registry row does not already refuse a bad learning rate.
UNCHECKED_RATE = [
    n
    for n in OPTIMIZERS
    if "learning_rate" in inspect.signature(REGISTRY[n].factory).parameters
    and "learning_rate" not in {arg for arg, _ in REGISTRY[n].bad}
]


@pytest.mark.parametrize("name", UNCHECKED_RATE)
def test_bad_learning_rate_is_rejected_by_name(name):
    spec = REGISTRY[name]
    with pytest.raises(ValueError, match="learning_rate"):
        spec.make(learning_rate=-1.0)


# ----------------------------------------------------------------------------- docs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_optimizers_doc_has_a_row_for_every_optimizer():
    text = (DOCS / "optimizers.md").read_text()
    missing = [n for n in OPTIMIZERS if f"| `{n}` |" not in text]
    assert not missing, f"docs/optimizers.md has no table row for {missing}"


def test_optimizers_doc_mentions_every_building_block():
    text = (DOCS / "optimizers.md").read_text()
    mentioned = set(re.findall(r"`([A-Za-z_]\w*)", text))
    modules = (
        gdopt.optimizers,
        gdopt.transforms,
        gdopt.combinators,
        gdopt.wrappers,
        gdopt.schedules,
        gdopt.linesearch,
    )
    missing = []
    for module in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            is_state = inspect.isclass(obj) and hasattr(obj, "_fields")
            if not (is_state and name != "MuonDimensionNumbers") and name not in mentioned:
                missing.append(name)
    assert not missing, f"docs/optimizers.md does not mention {missing}"


def test_optax_coverage_doc_is_current():
    path = DOCS.parent / "scripts" / "optax_coverage.py"
    spec = importlib.util.spec_from_file_location("optax_coverage", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = script.OUT.read_text()
    if f"optax {optax.__version__}'s" not in text:
        pytest.skip("docs/optax_coverage.md was generated with another optax version")
    assert text == script.render(), (
        "docs/optax_coverage.md is out of date: run python scripts/optax_coverage.py"
    )


# ----------------------------------------------------------------------------- optax's namespaces


def _coverage_script() -> types.ModuleType:
    path = DOCS.parent / "scripts" / "optax_coverage.py"
    spec = importlib.util.spec_from_file_location("optax_coverage", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_every_absent_optax_name_has_a_reason():
    script = _coverage_script()
    assert script.unexplained() == [], "optax names gdopt lacks with no entry in REASONS"
    assert script.stale_reasons() == [], "REASONS entries for names gdopt now has"


def test_losses_tree_schedules_and_projections_are_all_present():
    """The issue's rule: every loss, tree utility, schedule and projection exists."""
    rows = _coverage_script().rows()
    absent = [
        f"{ns}.{name}"
        for ns, name, kind, path in rows
        if path is None
        and (
            ns in ("optax.losses", "optax.projections")
            or kind in ("loss", "schedule", "projection")
        )
    ]
    absent += [f"{ns}.{name}" for ns, name, _, path in rows if path is None and ns == "optax.tree"]
    assert absent == [], absent


_NAMESPACES = ("tree", "losses", "schedules", "transforms", "projections", "contrib", "tree_utils")


def _namespace_pairs() -> list[tuple[str, str]]:
    import importlib

    out = []
    for ns in _NAMESPACES:
        theirs = importlib.import_module(f"optax.{ns}")
        ours = getattr(gdopt, ns)
        for name in sorted(dir(theirs)):
            obj = getattr(theirs, name)
            if name.startswith("_") or not (inspect.isfunction(obj) or hasattr(obj, "func")):
                continue
            if isinstance(obj, types.ModuleType) or not hasattr(ours, name):
                continue
            out.append((ns, name))
    return out


# (namespace, name, argument) -> why gdopt differs there on purpose.
NAMESPACE_ALLOWED: dict[tuple[str, str, str], str] = {}


@pytest.mark.parametrize(("ns", "name"), _namespace_pairs(), ids=lambda v: v)
def test_namespace_arguments_and_defaults_match_optax(ns, name):
    import importlib

    theirs = getattr(importlib.import_module(f"optax.{ns}"), name)
    ours = getattr(getattr(gdopt, ns), name)
    if getattr(ours, "__wrapped__", None) is theirs:  # pragma: no cover - never an optax object
        pytest.fail(f"gdopt.{ns}.{name} is optax's object")
    if inspect.isclass(ours):
        return
    unexplained = [
        msg
        for arg, msg in _signature_differences(ours, theirs, drop_first=False)
        if (ns, name, arg) not in NAMESPACE_ALLOWED and (name, arg) not in ALLOWED
    ]
    assert not unexplained, f"gdopt.{ns}.{name} differs from optax.{ns}.{name}: {unexplained}"


def test_top_level_losses_are_the_namespace_functions():
    for name in ("softmax_cross_entropy_with_integer_labels", "l2_loss", "huber_loss"):
        assert getattr(gdopt, name) is getattr(gdopt.losses, name)
    assert float(gdopt.global_norm({"a": jnp.array([3.0, 4.0])})) == 5.0
